"""The certificate authority's operations: create, sign a CSR, publish the CRL."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from ..app_settings import app_settings
from ..core import audit, encryption, reasons
from ..models import CertificateAuthority, ClientCertificate
from . import x509 as ca_x509


def create_ca(*, name: str, slug: str, days: int = 3650, key_type: str = "ec",
              actor: Any = None, via: str | None = None) -> CertificateAuthority:
    """Generate a CA key and self-signed certificate; store the key encrypted."""
    if not 0 < len(name) <= 64:
        raise ValidationError({"name": "A CA name is its certificate's common name: 1 to 64 characters."})
    key = ca_x509.new_private_key(key_type)
    cert = ca_x509.build_ca(name, days, key)
    facts = ca_x509.describe(cert)
    ca = CertificateAuthority(
        name=name, slug=slug, certificate_pem=ca_x509.certificate_pem(cert),
        fingerprint_sha256=facts.fingerprint_sha256,
        not_before=facts.not_before, not_after=facts.not_after,
    )
    ca.private_key_encrypted = encryption.encrypt(
        ca_x509.private_key_pem(key).encode(), ca.encryption_context("private_key_encrypted")
    )
    return _save(ca, "ca.created", actor, via)


def _save(ca: CertificateAuthority, event: str, actor: Any, via: str | None) -> CertificateAuthority:
    """Validate, save and audit a new CA in one transaction."""
    ca.full_clean()
    with transaction.atomic():
        ca.save()
        audit.record(
            event=event, scheme="client_cert", outcome=audit.SUCCESS, reason=reasons.ISSUED,
            credential_id=ca.slug,
            detail={"actor": actor.get_username() if actor is not None else None,
                    **({"via": via} if via else {}),
                    "fingerprint_sha256": ca.fingerprint_sha256},
        )
    return ca


def import_ca(*, name: str, slug: str, certificate_pem: str, actor: Any = None,
              via: str | None = None) -> CertificateAuthority:
    """Trust another organisation's CA certificate (no key: it never issues here).

    Used by chain mode (``APIAUTH_CLIENT_CERT_CHAIN_CAS``): certificates it
    signed are accepted without prior registration, owner mapped by
    :meth:`ClientCertificateAuthentication.owner_for`.
    """
    from cryptography import x509 as crypto_x509

    try:
        cert = crypto_x509.load_der_x509_certificate(ca_x509.pem_to_der(certificate_pem))
        facts = ca_x509.describe(cert)
    except Exception:
        raise ValidationError({"certificate_pem": "Not exactly one PEM certificate."}) from None
    if not facts.is_ca:
        raise ValidationError({"certificate_pem": "This is not a CA certificate (basicConstraints CA:TRUE)."})
    ca = CertificateAuthority(
        name=name, slug=slug, certificate_pem=ca_x509.certificate_pem(cert),
        fingerprint_sha256=facts.fingerprint_sha256,
        not_before=facts.not_before, not_after=facts.not_after,
    )
    return _save(ca, "ca.imported", actor, via)


def sign_csr(ca: CertificateAuthority, csr_pem: str, *, owner: Any, not_after: datetime) -> str:
    """Sign a client's CSR (its private key never reaches the server); return the PEM.

    Only the CSR's public key is used: subject and extensions are set by the CA
    (common name from the CSR, clientAuth EKU, owner URI SAN).
    """
    check_can_issue(ca)
    csr = ca_x509.load_csr(csr_pem)
    ca_x509.check_public_key(csr.public_key())
    from cryptography.x509.oid import NameOID

    cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = str(cns[0].value)[:64] if cns else f"user-{owner.pk}"
    cert = ca_x509.build_client_certificate(
        ca_cert=ca.certificate, ca_key=ca.private_key(), public_key=csr.public_key(),
        common_name=common_name, not_after=not_after,
        owner_uri=f"urn:django-apiauth:user:{owner.pk}",
    )
    return ca_x509.certificate_pem(cert)


def check_can_issue(ca: CertificateAuthority, now: datetime | None = None) -> None:
    now = now or timezone.now()
    if not ca.can_issue:
        raise ValidationError({"ca": "This CA was imported without its key: it cannot issue."})
    if not ca.is_active:
        raise ValidationError({"ca": "This certificate authority is inactive."})
    if ca.not_after <= now:
        raise ValidationError({"ca": "This certificate authority has expired: create a new one."})


def crl_pem(ca: CertificateAuthority, *, now: datetime | None = None) -> str:
    """A fresh CRL of ``ca``: every revoked certificate it issued that has not expired.

    The CRL number is the generation time in seconds, so it increases
    monotonically (RFC 5280 §5.2.3) without a database write per download.
    """
    now = now or timezone.now()
    # Listed until the *certificate's* notAfter: a rotation shortens the
    # credential's expires_at, but the TLS terminator would accept the
    # certificate until its own end.
    revoked = []
    for serial, revoked_at, pem in (
        ClientCertificate.objects.filter(ca=ca, revoked_at__isnull=False)
        .values_list("serial", "revoked_at", "certificate_pem").iterator()
    ):
        try:
            not_after = ca_x509.facts_from_der(ca_x509.pem_to_der(pem)).not_after
        except ca_x509.CertificateError:
            not_after = None  # unreadable: keep listing it
        if not_after is None or not_after > now - timedelta(days=1):
            revoked.append((serial, revoked_at))
    crl = ca_x509.build_crl(
        ca_cert=ca.certificate, ca_key=ca.private_key(), revoked=revoked,
        crl_number=int(now.timestamp()), next_update=app_settings.CRL_VALIDITY,
    )
    from cryptography.hazmat.primitives import serialization

    return crl.public_bytes(serialization.Encoding.PEM).decode()
