"""Mutual TLS: the client certificate a trusted TLS terminator verified and forwarded.

Where the certificate comes from (DESIGN §4):

* a header set by the TLS terminator, **only** when the peer address is in
  ``APIAUTH_TRUSTED_PROXIES`` (from anyone else it is a spoofing attempt:
  refused and audited ``untrusted_proxy``): nginx ``$ssl_client_escaped_cert``
  (URL-encoded PEM), Envoy ``X-Forwarded-Client-Cert`` (``Cert=`` or, without
  it, ``Hash=``), RFC 9440 ``Client-Cert`` (``:base64 DER:``);
* the WSGI ``SSL_CLIENT_CERT`` environ, which only the server can set.

When the terminator also sends its verification result
(``X-SSL-Client-Verify``), anything but ``SUCCESS`` is refused. The
certificate must have the clientAuth EKU, must not be a CA, must be inside
its validity window, and its SHA-256 fingerprint must be registered and usable
(pinning: the same subject with another key is another certificate).

Decoding and parsing are cached per header value, so a request costs a hash
and a dictionary lookup, not a base64 decode and an ASN.1 parse.
"""

from __future__ import annotations

import base64
import binascii
import re
from functools import lru_cache
from typing import Any, ClassVar
from urllib.parse import unquote

import http_sf
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.utils import timezone

from ..app_settings import app_settings
from ..ca import x509 as ca_x509
from ..core import reasons
from ..core.authentication import CredentialAuthentication, Presented, Refused
from ..core.lookup import lookup
from ..core.models import AbstractCredential
from ..core.net import peer_is_trusted_proxy
from ..models import CertificateAuthority, ClientCertificate

MAX_HEADER_LENGTH = 16 * 1024
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@lru_cache(maxsize=64)
def _meta_name(header: str) -> str:
    return "HTTP_" + header.upper().replace("-", "_")


class _Certificate:
    """A decoded certificate: fingerprint, and facts and DER when the certificate itself was sent."""

    __slots__ = ("der", "facts", "fingerprint")

    def __init__(self, fingerprint: str, facts: ca_x509.CertificateFacts | None,
                 der: bytes | None = None) -> None:
        self.fingerprint = fingerprint
        self.facts = facts
        self.der = der


@lru_cache(maxsize=4096)
def decode_pem(value: str) -> _Certificate:
    der = ca_x509.pem_to_der(value)
    facts = ca_x509.facts_from_der(der)
    return _Certificate(facts.fingerprint_sha256, facts, der)


@lru_cache(maxsize=4096)
def decode_nginx(value: str) -> _Certificate:
    return decode_pem(unquote(value))


@lru_cache(maxsize=4096)
def decode_rfc9440(value: str) -> _Certificate:
    try:
        item, _params = http_sf.parse(value.encode("latin-1"), tltype="item")
    except Exception:  # the parser raises several types on malformed input
        raise ca_x509.CertificateError("Client-Cert is not a structured-field byte sequence") from None
    if not isinstance(item, bytes):
        raise ca_x509.CertificateError("Client-Cert is not a byte sequence")
    facts = ca_x509.facts_from_der(item)
    return _Certificate(facts.fingerprint_sha256, facts, item)


def parse_xfcc(value: str) -> list[dict[str, str]]:
    """Envoy's ``X-Forwarded-Client-Cert``: elements of ``key=value`` pairs.

    Quoted values may contain ``,``, ``;`` and ``=`` and escape ``"`` with a
    backslash; outside quotes those characters are separators. Anything that
    does not follow the grammar raises ``CertificateError``.
    """
    elements: list[dict[str, str]] = []
    pairs: dict[str, str] = {}
    i, n = 0, len(value)
    while i < n:
        eq = value.find("=", i)
        if eq < 0:
            raise ca_x509.CertificateError("XFCC pair without '='")
        key = value[i:eq].strip()
        if not key or any(c in key for c in ',;" '):
            raise ca_x509.CertificateError("bad XFCC key")
        i = eq + 1
        if i < n and value[i] == '"':
            i += 1
            chars = []
            while True:
                if i >= n:
                    raise ca_x509.CertificateError("unterminated XFCC quoted value")
                c = value[i]
                if c == "\\" and i + 1 < n:
                    chars.append(value[i + 1])
                    i += 2
                    continue
                if c == '"':
                    i += 1
                    break
                chars.append(c)
                i += 1
            item = "".join(chars)
        else:
            start = i
            while i < n and value[i] not in ",;":
                if value[i] == '"':
                    raise ca_x509.CertificateError("quote inside an unquoted XFCC value")
                i += 1
            item = value[start:i]
        if key.lower() in pairs:
            raise ca_x509.CertificateError("repeated XFCC key")
        pairs[key.lower()] = item
        if i < n:
            if value[i] == ";":
                i += 1
            elif value[i] == ",":
                elements.append(pairs)
                pairs = {}
                i += 1
            else:
                raise ca_x509.CertificateError("junk after an XFCC value")
    elements.append(pairs)
    return elements


@lru_cache(maxsize=4096)
def decode_envoy(value: str) -> _Certificate:
    elements = parse_xfcc(value)
    if len(elements) != 1:
        # With forward_client_cert_details: SANITIZE_SET the terminator sends
        # exactly one element; several mean a client-supplied one got appended.
        raise ca_x509.CertificateError("expected exactly one XFCC element")
    [pairs] = elements
    cert, hash_value = pairs.get("cert"), pairs.get("hash")
    if cert:
        decoded = decode_pem(unquote(cert))
        if hash_value is not None and hash_value.lower() != decoded.fingerprint:
            raise ca_x509.CertificateError("XFCC Hash does not match Cert")
        return decoded
    if hash_value is not None and _HEX64.fullmatch(hash_value.lower()):
        return _Certificate(hash_value.lower(), None)
    raise ca_x509.CertificateError("XFCC element without Cert or Hash")


_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")


@lru_cache(maxsize=4096)
def decode_traefik(value: str) -> _Certificate:
    """Traefik's ``X-Forwarded-Tls-Client-Cert`` (``passTLSClientCert`` with ``pem: true``).

    The base64 body of each PEM certificate without its armour and line breaks,
    leaf first, comma-separated when the client sent a chain; Traefik 2
    URL-escapes the value, Traefik 3 does not. Only the leaf (the first) is
    the client's certificate.
    """
    leaf = unquote(value).split(",", 1)[0].strip()
    if not leaf or not _BASE64.fullmatch(leaf):
        raise ca_x509.CertificateError("X-Forwarded-Tls-Client-Cert is not base64")
    try:
        der = base64.b64decode(leaf, validate=True)
    except (binascii.Error, ValueError):
        raise ca_x509.CertificateError("X-Forwarded-Tls-Client-Cert is not base64") from None
    facts = ca_x509.facts_from_der(der)
    return _Certificate(facts.fingerprint_sha256, facts, der)


DECODERS = {"nginx": decode_nginx, "envoy": decode_envoy, "rfc9440": decode_rfc9440, "pem": decode_pem,
            "traefik": decode_traefik}


class ClientCertificateAuthentication(CredentialAuthentication):
    """DRF authentication class for :class:`~django_apiauth.models.ClientCertificate`."""

    scheme: ClassVar[str] = "client_cert"
    www_authenticate_scheme: ClassVar[str] = "ClientCert"
    model: ClassVar[type[AbstractCredential]] = ClientCertificate

    def extract(self, request: HttpRequest) -> Presented | None:
        # The Django request's META directly: DRF's wrapper answers attributes
        # through __getattr__, which costs on the hot path.
        django_request = getattr(request, "_request", request)
        meta = django_request.META
        found = []
        for header, fmt in app_settings.CLIENT_CERT_HEADERS.items():
            value = meta.get(_meta_name(header))
            if value:
                found.append((header, fmt, value))
        if found and not peer_is_trusted_proxy(django_request):
            raise Refused(reasons.UNTRUSTED_PROXY, detail={"headers": [h for h, _f, _v in found]})
        if app_settings.CLIENT_CERT_FROM_ENVIRON and meta.get("SSL_CLIENT_CERT"):
            found.append(("SSL_CLIENT_CERT", "pem", meta["SSL_CLIENT_CERT"]))
        if not found:
            return None
        if len(found) > 1:
            raise Refused(reasons.AMBIGUOUS, detail={"sources": [h for h, _f, _v in found]})
        header, fmt, value = found[0]
        verify = meta.get(_meta_name(app_settings.CLIENT_CERT_VERIFY_HEADER))
        if verify is not None and verify != "SUCCESS":
            raise Refused(reasons.CERT_NOT_VERIFIED, detail={"verify": verify[:64]})
        if len(value) > MAX_HEADER_LENGTH:
            raise Refused(reasons.MALFORMED, detail={"source": header, "length": len(value)})
        try:
            certificate = DECODERS[fmt](value)
        except ca_x509.CertificateError as exc:
            raise Refused(reasons.MALFORMED, detail={"source": header, "problem": str(exc)}) from None
        return Presented(
            lookup_value=certificate.fingerprint,
            proof=certificate,
            claims={"source": header, **(
                {"subject": certificate.facts.subject} if certificate.facts else {}
            )},
        )

    def resolve_unknown(self, request: HttpRequest, presented: Presented) -> AbstractCredential | None:
        """Chain mode: register a certificate signed by a CA in APIAUTH_CLIENT_CERT_CHAIN_CAS.

        Only when the certificate itself was forwarded (a Hash-only XFCC cannot
        be checked), it chains directly to one of those CAs (signature checked),
        it passes the same EKU / CA-flag / validity rules, and :meth:`owner_for`
        maps it to an active user. Anything else stays unknown.
        """
        slugs = app_settings.CLIENT_CERT_CHAIN_CAS
        facts = presented.proof.facts
        if not slugs or facts is None or facts.is_ca or not facts.client_auth:
            return None
        der = presented.proof.der
        if der is None:
            return None
        from cryptography import x509 as crypto_x509

        cert = crypto_x509.load_der_x509_certificate(der)
        for ca in CertificateAuthority.objects.filter(slug__in=slugs, is_active=True):
            if ca_x509.verify_issued_by(cert, ca.certificate):
                break
        else:
            return None
        from ..models import AuditEvent

        if AuditEvent.objects.filter(credential_id=facts.fingerprint_sha256,
                                     event="credential.revoked").exists():
            return None  # revoked once (row since deleted): revocation is one-way
        owner = self.owner_for(facts, ca)
        if owner is None or not owner.is_active:
            return None
        from ..core import lifecycle

        pem = ca_x509.certificate_pem(cert)
        try:
            credential, _secret = lifecycle.issue(
                self.model, owner=owner, name=(facts.common_name or facts.subject)[:100],
                certificate_pem=pem, ca=ca, scopes=" ".join(self.chain_scopes(facts, ca)),
                via="chain",
            )
        except ValidationError:
            # A concurrent first use registered it (unique fingerprint): use that row.
            return lookup(self.model, presented.lookup_value)
        return credential

    def owner_for(self, facts: ca_x509.CertificateFacts, ca: Any) -> Any:
        """Map a chained certificate to a user. Override for your directory.

        Default: the user whose username equals the certificate's CN, and only
        if an operator bound that user to this CA by putting them in the group
        ``apiauth-chain:<ca slug>`` — another organisation's CA must not be
        able to act as any local account it names. Never a staff member or
        superuser.
        """
        from django.contrib.auth import get_user_model

        User = get_user_model()
        if not facts.common_name:
            return None
        user = User._default_manager.filter(
            **{User.USERNAME_FIELD: facts.common_name, "groups__name": f"apiauth-chain:{ca.slug}"}
        ).first()
        if user is None or getattr(user, "is_staff", False) or getattr(user, "is_superuser", False):
            return None
        return user

    def chain_scopes(self, facts: ca_x509.CertificateFacts, ca: Any) -> list[str]:
        """Scopes of an auto-registered certificate (default: none). Override to grant some."""
        return []

    def verify(self, request: HttpRequest, presented: Presented,
               credential: AbstractCredential | None) -> bool:
        # The TLS terminator proved possession of the key; the fingerprint lookup
        # pins the exact certificate. Check what the certificate itself says.
        facts = presented.proof.facts
        if facts is not None:
            if facts.is_ca or not facts.client_auth:
                raise Refused(reasons.BAD_CERTIFICATE, detail={
                    "is_ca": facts.is_ca, "client_auth": facts.client_auth})
            now = timezone.now()
            if now < facts.not_before:
                raise Refused(reasons.NOT_YET_VALID)
            if now > facts.not_after:
                raise Refused(reasons.EXPIRED)
        return credential is not None



__all__ = ["ClientCertificateAuthentication", "parse_xfcc"]
