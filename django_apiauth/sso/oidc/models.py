"""Models of this provider kind (imported by :mod:`django_apiauth.models`)."""

from __future__ import annotations

import ipaddress
import uuid
from typing import Any, ClassVar
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.db import models
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from ...core import encryption

__all__ = ["OidcProvider", "is_loopback_host", "require_secure_url"]

#: ID-token signature algorithms PyJWT verifies. ``none`` is never one.
ASYMMETRIC_ALGORITHMS = frozenset({
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
})
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
DEFAULT_ALGORITHMS = "RS256 ES256"
DEFAULT_SCOPES = "openid email profile"


def is_loopback_host(host: str | None) -> bool:
    """``localhost`` or a loopback IP address (RFC 8252 §8.3 treats them alike)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def require_secure_url(url: str, what: str) -> None:
    """Raise :class:`ValueError` unless ``url`` is ``https://`` (or ``http://`` on loopback).

    OpenID Connect Discovery 1.0 §3 and Core 1.0 §16.17 require TLS to the
    provider; plain HTTP is accepted only for a provider on this machine.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        raise ValueError(f"The {what} {url!r} is not a URL.") from None
    if not host or parts.scheme not in ("https", "http"):
        raise ValueError(f"The {what} must be an absolute https:// URL.")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"The {what} must not contain credentials.")
    if parts.scheme != "https" and not is_loopback_host(host):
        raise ValueError(
            f"The {what} must use https:// (plain http:// is accepted only for localhost / 127.0.0.1)."
        )


class OidcProvider(models.Model):
    """An OpenID Provider this site signs staff in through (OpenID Connect Core 1.0).

    * ``slug``: the provider's name in URLs (``/auth/oidc/<slug>/login/``).
    * ``name``: the label of the "Sign in with …" button.
    * ``issuer``: the OP's Issuer Identifier, exactly as the discovery
      document's ``issuer`` and the ID token's ``iss`` (Discovery 1.0 §4.3,
      Core 1.0 §3.1.3.7 step 2). Metadata is discovered from
      ``<issuer>/.well-known/openid-configuration``.
    * ``client_id``: this site's client identifier at the OP; the ID token's
      ``aud`` must contain it.
    * ``client_secret_encrypted``: the client secret, AES-256-GCM encrypted at
      rest (:mod:`django_apiauth.core.encryption`), bound to this row's
      ``uid``. Write-only in the admin.
    * ``scopes``: space-separated scopes requested (``openid`` is always sent).
    * ``algorithms``: ID-token signature algorithms accepted (``RS256 ES256``).
      ``none`` is never accepted; ``HS256``/``HS384``/``HS512`` (keyed with the
      client secret, Core 1.0 §10.1) only when listed here.
    * ``token_endpoint_auth_method``: ``client_secret_basic`` or
      ``client_secret_post`` (RFC 6749 §2.3.1); ``auto`` picks basic unless the
      discovery document lists only post.
    * ``use_userinfo``: also read the UserInfo endpoint (Core 1.0 §5.3); its
      ``sub`` must equal the ID token's.
    * ``attribute_mapping``, ``jit_enabled``, ``active``: see :doc:`sso`
      (claims are passed as attributes).
    """

    AUTH_AUTO = "auto"
    AUTH_BASIC = "client_secret_basic"
    AUTH_POST = "client_secret_post"
    AUTH_METHODS = (
        (AUTH_AUTO, _("automatic (basic unless the provider supports only post)")),
        (AUTH_BASIC, "client_secret_basic"),
        (AUTH_POST, "client_secret_post"),
    )

    scheme: ClassVar[str] = "oidc"
    encrypted_fields: ClassVar[tuple[str, ...]] = ("client_secret_encrypted",)

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    slug = models.SlugField(_("slug"), max_length=50, unique=True)
    name = models.CharField(_("name"), max_length=100, help_text=_("Shown on the sign-in button."))
    issuer = models.CharField(
        _("issuer"), max_length=255,
        help_text=_("The provider's Issuer Identifier, exactly as in its discovery document "
                    "(e.g. https://login.example.com/realms/staff)."),
    )
    client_id = models.CharField(_("client ID"), max_length=255)
    client_secret_encrypted = models.TextField(_("encrypted client secret"), blank=True, default="",
                                               editable=False)
    scopes = models.CharField(_("scopes"), max_length=500, default=DEFAULT_SCOPES,
                              help_text=_("Space-separated; 'openid' is always requested."))
    algorithms = models.CharField(
        _("ID token algorithms"), max_length=200, default=DEFAULT_ALGORITHMS,
        help_text=_("Space-separated allow-list, e.g. 'RS256 ES256'. 'none' is never accepted; "
                    "HS256 (signed with the client secret) only when listed."),
    )
    token_endpoint_auth_method = models.CharField(
        _("token endpoint authentication"), max_length=32, choices=AUTH_METHODS, default=AUTH_AUTO,
    )
    use_userinfo = models.BooleanField(
        _("read userinfo"), default=True,
        help_text=_("Also read the UserInfo endpoint (its 'sub' must equal the ID token's)."),
    )
    attribute_mapping = models.JSONField(_("claim mapping"), default=dict, blank=True)
    jit_enabled = models.BooleanField(
        _("create users just in time"), default=False,
        help_text=_("Create a user at the first sign-in of an unknown identity."),
    )
    active = models.BooleanField(_("active"), default=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("OpenID Provider")
        verbose_name_plural = _("OpenID Providers")
        ordering = ("name",)

    def __str__(self) -> str:
        return f"{self.name} ({self.slug})"

    # -- the shared SSO contract (django_apiauth.sso.identity.SsoProvider) -----

    @property
    def issuer_id(self) -> str:
        return self.issuer

    def login_url(self) -> str:
        return reverse("django_apiauth:oidc:login", args=[self.slug])

    # -- configuration ---------------------------------------------------------

    @property
    def scope_list(self) -> list[str]:
        scopes = [s for s in self.scopes.split() if s]
        return scopes if "openid" in scopes else ["openid", *scopes]

    @property
    def algorithm_list(self) -> frozenset[str]:
        """The allow-list; ``none`` and unknown names are dropped whatever is stored."""
        return frozenset(
            a for a in self.algorithms.split() if a in ASYMMETRIC_ALGORITHMS | HMAC_ALGORITHMS
        )

    def clean(self) -> None:
        super().clean()
        errors: dict[str, Any] = {}
        try:
            require_secure_url(self.issuer, "issuer")
        except ValueError as exc:
            errors["issuer"] = str(exc)
        else:
            if urlsplit(self.issuer).query or urlsplit(self.issuer).fragment:
                errors["issuer"] = _("An issuer has no query or fragment (Discovery 1.0 §2).")
        names = self.algorithms.split()
        unknown = [a for a in names if a not in ASYMMETRIC_ALGORITHMS | HMAC_ALGORITHMS]
        if not names:
            errors["algorithms"] = _("List at least one algorithm, e.g. RS256.")
        elif unknown:
            errors["algorithms"] = _("Unsupported algorithm(s): %(names)s. Choose from %(known)s.") % {
                "names": ", ".join(unknown),
                "known": " ".join(sorted(ASYMMETRIC_ALGORITHMS | HMAC_ALGORITHMS)),
            }
        if not self.client_id.strip():
            errors["client_id"] = _("This field is required.")
        if errors:
            raise ValidationError(errors)

    # -- the client secret (write-only) --------------------------------------

    def encryption_context(self, field: str) -> str:
        return f"django_apiauth.oidc:{self.uid}:{field}"

    def set_client_secret(self, secret: str) -> None:
        self.client_secret_encrypted = encryption.encrypt(
            secret.encode(), self.encryption_context("client_secret_encrypted")
        ) if secret else ""

    def client_secret(self) -> str:
        """The decrypted client secret ("" when none is set).

        Raises :class:`~django_apiauth.core.encryption.DecryptionError` when no
        configured key can read it.
        """
        if not self.client_secret_encrypted:
            return ""
        return encryption.decrypt_cached(
            self.client_secret_encrypted, self.encryption_context("client_secret_encrypted")
        ).decode()

    @property
    def has_client_secret(self) -> bool:
        return bool(self.client_secret_encrypted)
