"""Models of the SAML 2.0 Service Provider (imported by :mod:`django_apiauth.models`).

* :class:`SamlIdentityProvider`: one trusted IdP (SAML 2.0 Metadata §2.4.3),
  managed in the admin or imported from its metadata (``import_saml_idp``).
* :class:`SamlServiceProviderKey`: the SP's own signing / decryption key pair.
  One per site (not per IdP): it is one credential to protect and rotate, every
  IdP's metadata lists the same certificates, and the key never leaves the
  server. Several rows exist during a rollover: the newest active one signs,
  every active one is published (SAML 2.0 Metadata §2.4.1.1 ``KeyDescriptor``).
* :class:`SamlAuthnRequest`: the AuthnRequests this SP sent and has not yet
  seen answered (SAML 2.0 Core §3.2.2 ``InResponseTo``), kept server-side, bound
  to the browser that started them, single-use, with an expiry.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, ClassVar

from django.core.exceptions import ValidationError
from django.db import models
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

__all__ = ["SamlAuthnRequest", "SamlIdentityProvider", "SamlServiceProviderKey"]

_PEM_BLOCK = re.compile(
    r"-----BEGIN CERTIFICATE-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END CERTIFICATE-----", re.S
)
MAX_CERTIFICATES = 5
NAMEID_UNSPECIFIED = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified"


@dataclass(frozen=True, slots=True)
class CertificateSummary:
    """What the admin and the checks show of a public certificate (never a key)."""

    fingerprint_sha256: str
    subject: str
    not_before: datetime
    not_after: datetime

    @property
    def fingerprint_display(self) -> str:
        return ":".join(self.fingerprint_sha256[i:i + 2] for i in range(0, 64, 2)).upper()


@lru_cache(maxsize=256)
def _summaries(text: str) -> tuple[CertificateSummary, ...]:
    return tuple(_summarise(block) for block in split_certificates(text))


def _summarise(pem: str) -> CertificateSummary:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(pem.encode())
    der = cert.public_bytes(serialization.Encoding.DER)
    return CertificateSummary(
        fingerprint_sha256=hashlib.sha256(der).hexdigest(),
        subject=cert.subject.rfc4514_string(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )


def split_certificates(text: str) -> list[str]:
    """The PEM certificates in ``text`` (PEM blocks, or bare base64 as in metadata).

    Raises :class:`ValueError` when a block is not a readable X.509 certificate.
    """
    from cryptography import x509

    text = (text or "").strip()
    if not text:
        return []
    bodies = _PEM_BLOCK.findall(text)
    if not bodies:
        if "-----" in text:
            raise ValueError("only PEM CERTIFICATE blocks are accepted (no private keys)")
        bodies = [text]  # one bare base64 certificate, as in <ds:X509Certificate>
    elif _PEM_BLOCK.sub("", text).strip():
        raise ValueError("text outside the PEM CERTIFICATE blocks (a private key?)")
    pems = []
    for body in bodies:
        b64 = "".join(body.split())
        lines = "\n".join(b64[i:i + 64] for i in range(0, len(b64), 64))
        pem = f"-----BEGIN CERTIFICATE-----\n{lines}\n-----END CERTIFICATE-----\n"
        try:
            x509.load_pem_x509_certificate(pem.encode())
        except Exception:  # ValueError and friends: not a certificate we can read
            raise ValueError("not a valid X.509 certificate") from None
        pems.append(pem)
    return pems


class SamlIdentityProvider(models.Model):
    """A SAML 2.0 identity provider this site trusts for browser sign-in.

    * ``slug``: public name in URLs (``/auth/saml/<slug>/acs/``).
    * ``name``: label of the "Sign in with <name>" button.
    * ``entity_id``: the IdP's ``entityID`` (SAML 2.0 Metadata §2.3.2); every
      ``<Issuer>`` of a response must equal it, and it is the issuer of the
      :class:`~django_apiauth.models.ExternalIdentity` rows this IdP creates.
    * ``sso_url`` / ``slo_url``: the IdP's SingleSignOnService and
      SingleLogoutService endpoints (HTTP-Redirect binding).
    * ``certificates``: the IdP's signing certificate(s), PEM; several during a
      rollover (a signature by any one of them is accepted).
    * ``want_response_signed``: require the ``<Response>`` to be signed too
      (the ``<Assertion>`` signature is always required).
    * ``want_assertions_encrypted``: publish the SP certificate for encryption
      and refuse plaintext assertions (SAML 2.0 Core §2.3.4).
    * ``sp_entity_id``: this SP's entity ID as registered at the IdP; empty:
      the absolute URL of this provider's SP metadata.
    * ``nameid_format``: the NameID format asked for in the AuthnRequest.
    * ``attribute_mapping``, ``jit_enabled``: see ``docs/sso.md``.
    * ``allow_idp_initiated``: accept responses no AuthnRequest of this
      browser asked for (off: such "unsolicited" responses are refused).
    * ``active``: inactive IdPs are hidden and refused.
    """

    scheme: ClassVar[str] = "saml"

    slug = models.SlugField(_("slug"), max_length=50, unique=True)
    name = models.CharField(_("name"), max_length=100, help_text=_('Shown as "Sign in with <name>".'))
    entity_id = models.CharField(_("IdP entity ID"), max_length=255, unique=True)
    sso_url = models.URLField(_("single sign-on URL"), max_length=500,
                              help_text=_("SingleSignOnService, HTTP-Redirect binding."))
    slo_url = models.URLField(_("single logout URL"), max_length=500, blank=True, default="",
                              help_text=_("SingleLogoutService, HTTP-Redirect binding (optional)."))
    certificates = models.TextField(
        _("signing certificates"),
        help_text=_("The IdP's signing certificate(s), PEM. Paste the new one next to the old one "
                    "during a rollover; remove the old one afterwards."),
    )
    want_response_signed = models.BooleanField(
        _("require signed responses"), default=False,
        help_text=_("Also require a signature on the <Response> (the assertion is always required "
                    "to be signed)."),
    )
    want_assertions_encrypted = models.BooleanField(
        _("require encrypted assertions"), default=False,
        help_text=_("Publish the SP key for encryption and refuse assertions that are not encrypted "
                    "to it."),
    )
    sp_entity_id = models.CharField(
        _("SP entity ID"), max_length=255, blank=True, default="",
        help_text=_("This site's entity ID as registered at the IdP. Empty: the URL of this "
                    "provider's SP metadata."),
    )
    nameid_format = models.CharField(_("NameID format"), max_length=255, default=NAMEID_UNSPECIFIED)
    attribute_mapping = models.JSONField(_("attribute mapping"), default=dict, blank=True)
    jit_enabled = models.BooleanField(_("create users just in time"), default=False)
    allow_idp_initiated = models.BooleanField(
        _("allow IdP-initiated sign-in"), default=False,
        help_text=_("Accept responses that no sign-in started here asked for. Off by default: "
                    "unsolicited responses are easier to replay and to inject (login CSRF)."),
    )
    active = models.BooleanField(_("active"), default=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("SAML identity provider")
        verbose_name_plural = _("SAML identity providers")
        ordering = ("name",)

    def __str__(self) -> str:
        return f"{self.name} ({self.slug})"

    @property
    def issuer_id(self) -> str:
        return self.entity_id

    def login_url(self) -> str:
        return reverse("django_apiauth:saml:login", args=[self.slug])

    def certificate_list(self) -> list[str]:
        return split_certificates(self.certificates)

    def certificate_summaries(self) -> tuple[CertificateSummary, ...]:
        return _summaries(self.certificates)

    def clean(self) -> None:
        super().clean()
        try:
            certs = self.certificate_list()
        except ValueError as exc:
            raise ValidationError({"certificates": str(exc)}) from None
        if not certs:
            raise ValidationError({"certificates": _("At least one signing certificate is needed.")})
        if len(certs) > MAX_CERTIFICATES:
            raise ValidationError(
                {"certificates": _("At most %(n)d certificates.") % {"n": MAX_CERTIFICATES}})
        self.certificates = "".join(certs)
        for field in ("sso_url", "slo_url"):
            value = getattr(self, field)
            if value and not value.lower().startswith(("https://", "http://")):
                raise ValidationError({field: _("Use an http(s) URL.")})
        if not isinstance(self.attribute_mapping, dict):
            raise ValidationError({"attribute_mapping": _("The mapping is a JSON object.")})


class SamlServiceProviderKey(models.Model):
    """This site's SAML SP key pair (signs AuthnRequests, decrypts assertions).

    * ``certificate_pem``: self-signed certificate (public; published in the SP
      metadata).
    * ``private_key_encrypted``: the RSA key, AES-256-GCM encrypted at rest
      (:mod:`django_apiauth.core.encryption`), bound to the fingerprint.
    * ``active``: active keys are published; the newest active one signs.
    """

    encrypted_fields: ClassVar[tuple[str, ...]] = ("private_key_encrypted",)

    name = models.CharField(_("name"), max_length=100)
    certificate_pem = models.TextField(_("certificate (PEM)"), editable=False)
    fingerprint_sha256 = models.CharField(_("SHA-256 fingerprint"), max_length=64, unique=True,
                                          editable=False)
    private_key_encrypted = models.TextField(_("encrypted private key"), editable=False)
    not_before = models.DateTimeField(_("valid from"), editable=False)
    not_after = models.DateTimeField(_("valid until"), editable=False)
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)
    active = models.BooleanField(
        _("active"), default=True,
        help_text=_("Active keys are published in the SP metadata; the newest one signs."),
    )

    class Meta:
        verbose_name = _("SAML SP key")
        verbose_name_plural = _("SAML SP keys")
        ordering = ("-created_at", "-id")

    def __str__(self) -> str:
        return f"{self.name} ({self.fingerprint_sha256[:16]}…)"

    def encryption_context(self, field: str) -> str:
        return f"django_apiauth.saml_sp:{self.fingerprint_sha256}:{field}"

    def private_key_pem(self) -> str:
        from ...core import encryption

        return encryption.decrypt_cached(
            self.private_key_encrypted, self.encryption_context("private_key_encrypted")
        ).decode()


MAX_PENDING_PER_BROWSER = 5


class SamlAuthnRequest(models.Model):
    """An AuthnRequest this SP sent and that is still awaiting its response.

    * ``request_id``: the AuthnRequest ``ID``; the response's ``InResponseTo``
      must name it (SAML 2.0 Core §3.2.2).
    * ``provider``: the IdP it was sent to (a response via another IdP's ACS
      finds nothing).
    * ``browser_hash``: SHA-256 of the random per-flow value in the browser's
      ``apiauth_saml`` cookie: only the browser that started the sign-in can
      finish it (a response captured elsewhere, or injected into another
      browser, finds nothing).
    * ``next_url``: where to go after sign-in (checked again when used).
    * ``expires_at``: the request is refused after this (``APIAUTH_SAML_REQUEST_TTL``).

    A row is deleted when its response arrives (single use), expired rows are
    swept at each new sign-in, and one browser keeps at most
    ``MAX_PENDING_PER_BROWSER`` (5) pending requests (its oldest are dropped).
    """

    request_id = models.CharField(_("request ID"), max_length=100, unique=True)
    provider = models.ForeignKey(SamlIdentityProvider, on_delete=models.CASCADE, related_name="+")
    browser_hash = models.CharField(_("browser binding"), max_length=64, db_index=True)
    next_url = models.CharField(_("next"), max_length=2048, blank=True, default="")
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    expires_at = models.DateTimeField(_("expires at"), db_index=True)

    class Meta:
        verbose_name = _("pending SAML request")
        verbose_name_plural = _("pending SAML requests")
        default_permissions = ()

    def __str__(self) -> str:
        return self.request_id

    @staticmethod
    def hash_binding(value: str) -> str:
        return hashlib.sha256(value.encode()).hexdigest()

    def is_expired(self, now: datetime | None = None) -> bool:
        return (now or timezone.now()) >= self.expires_at


def summaries_of(obj: Any) -> tuple[CertificateSummary, ...]:
    """Certificate summaries of a provider, or ``()`` when its text does not parse."""
    try:
        return obj.certificate_summaries()  # type: ignore[no-any-return]
    except ValueError:
        return ()
