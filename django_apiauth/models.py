"""Concrete models of django-apiauth.

Credential models subclass :class:`~django_apiauth.core.models.AbstractCredential`;
extend them by subclassing (as djangorestframework-api-key does), never by
swapping.
"""

from __future__ import annotations

from typing import ClassVar

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .app_settings import app_settings
from .core import crypto, encryption, signing
from .core.models import AbstractCredential, CredentialQuerySet


class AbstractApiKey(AbstractCredential):
    """An API key (DESIGN §3).

    * ``lookup_id``: public part of the key, unique and indexed; the key's
      identifier in the admin, the CLI and audit rows.
    * ``secret_hash``: HMAC-SHA256 of the whole key under ``APIAUTH_PEPPER``
      (hex). The plaintext key is shown once at issue and never stored.
    """

    credential_kind: ClassVar[str] = "api_key"
    lookup_field: ClassVar[str] = "lookup_id"
    secret_name: ClassVar[str] = "key"  # noqa: S105 (a label, not a secret)

    lookup_id = models.CharField(_("lookup id"), max_length=12, unique=True, editable=False)
    secret_hash = models.CharField(_("secret hash"), max_length=64, editable=False)

    class Meta(AbstractCredential.Meta):
        abstract = True
        verbose_name = _("API key")
        verbose_name_plural = _("API keys")

    def generate_secret(self) -> str:
        """Fill ``lookup_id`` and ``secret_hash``; return the plaintext key (shown once)."""
        generated = crypto.generate_api_key(app_settings.API_KEY_PREFIX, app_settings.PEPPER)
        self.lookup_id = generated.lookup_id
        self.secret_hash = generated.secret_hash
        return generated.key


class ApiKey(AbstractApiKey):
    objects = CredentialQuerySet.as_manager()

    class Meta(AbstractApiKey.Meta):
        ordering = ("-created_at",)
        indexes = [models.Index(fields=["owner", "-created_at"], name="apiauth_apikey_owner")]


class AbstractHmacSecret(AbstractCredential):
    """A request-signing credential for RFC 9421 HTTP Message Signatures (DESIGN §3).

    * ``key_id``: public ``keyid`` clients put in ``Signature-Input``.
    * ``algorithm``: ``hmac-sha256`` (shared secret) or, so the server stores
      nothing secret at all, ``ed25519`` / ``ecdsa-p256-sha256`` (RFC 9421 §3.3).
    * ``secret_encrypted``: the HMAC key, AES-256-GCM encrypted at rest
      (:mod:`django_apiauth.core.encryption`), bound to this ``key_id``. The
      server must read it back to verify, so it cannot be hashed.
    * ``public_key``: PEM public key for the asymmetric algorithms.
    """

    HMAC_SHA256 = "hmac-sha256"
    ED25519 = "ed25519"
    ECDSA_P256_SHA256 = "ecdsa-p256-sha256"
    ALGORITHMS = (
        (HMAC_SHA256, _("HMAC-SHA256 (shared secret)")),
        (ED25519, _("Ed25519 (registered public key)")),
        (ECDSA_P256_SHA256, _("ECDSA P-256 SHA-256 (registered public key)")),
    )
    ASYMMETRIC = frozenset({ED25519, ECDSA_P256_SHA256})

    credential_kind: ClassVar[str] = "hmac"
    lookup_field: ClassVar[str] = "key_id"
    encrypted_fields: ClassVar[tuple[str, ...]] = ("secret_encrypted",)

    key_id = models.CharField(_("key id"), max_length=32, unique=True, editable=False)
    algorithm = models.CharField(
        _("algorithm"), max_length=32, choices=ALGORITHMS, default=HMAC_SHA256
    )
    secret_encrypted = models.TextField(_("encrypted secret"), blank=True, default="", editable=False)
    public_key = models.TextField(
        _("public key"), blank=True, default="",
        help_text=_("PEM public key, for the Ed25519 and ECDSA P-256 algorithms only."),
    )

    class Meta(AbstractCredential.Meta):
        abstract = True
        verbose_name = _("HTTP signature key")
        verbose_name_plural = _("HTTP signature keys")

    def encryption_context(self, field: str) -> str:
        return f"django_apiauth.hmac:{self.key_id}:{field}"

    def generate_secret(self) -> str:
        """Assign a ``key_id``; for HMAC, create and encrypt the secret and return it.

        The printed secret string, as UTF-8 bytes, is the HMAC key (DESIGN §6).
        Asymmetric credentials have no secret on the server: returns ``""``.
        """
        self.key_id = "hk_" + crypto.random_base62(16)
        if self.algorithm in self.ASYMMETRIC:
            self.secret_encrypted = ""
            return ""
        secret = crypto.random_base62(43)  # 256 bits
        self.secret_encrypted = encryption.encrypt(
            secret.encode(), self.encryption_context("secret_encrypted")
        )
        return secret

    def successor_fields(self) -> dict[str, object]:
        return {"algorithm": self.algorithm, "public_key": self.public_key}

    def to_public_dict(self) -> dict[str, object]:
        return {**super().to_public_dict(), "key_id": self.key_id, "algorithm": self.algorithm}

    def validate_successor(self, successor: AbstractCredential) -> None:
        if self.algorithm in self.ASYMMETRIC and (
            successor.public_key.strip() == self.public_key.strip()  # type: ignore[attr-defined]
        ):
            raise ValidationError({"public_key": _(
                "Rotating a public-key credential needs the client's new public key."
            )})

    def clean(self) -> None:
        super().clean()
        if self.algorithm in self.ASYMMETRIC:
            if not self.public_key.strip():
                raise ValidationError({"public_key": _("This algorithm needs the client's public key.")})
            try:
                signing.load_public_key(self.public_key, self.algorithm)
            except ValueError as exc:
                raise ValidationError({"public_key": str(exc)}) from None
        elif self.public_key.strip():
            raise ValidationError({"public_key": _("HMAC keys are shared secrets: leave this empty.")})

    def verification_key(self) -> object:
        """The key that verifies this credential's signatures (decrypted or loaded)."""
        if self.algorithm in self.ASYMMETRIC:
            return signing.load_public_key(self.public_key, self.algorithm)
        return encryption.decrypt(self.secret_encrypted, self.encryption_context("secret_encrypted"))


class HmacSecret(AbstractHmacSecret):
    objects = CredentialQuerySet.as_manager()

    class Meta(AbstractHmacSecret.Meta):
        ordering = ("-created_at",)
        indexes = [models.Index(fields=["owner", "-created_at"], name="apiauth_hmac_owner")]


class AuditEventQuerySet(models.QuerySet):
    def for_credential(self, credential_id: str) -> AuditEventQuerySet:
        return self.filter(credential_id=credential_id)


_FAILURE = models.Q(outcome="failure")


class AuditEvent(models.Model):
    """One authentication attempt or credential lifecycle event (DESIGN §5).

    Append-only: written only by :func:`django_apiauth.core.audit.record`,
    never edited or deleted through the admin.

    * ``event``: ``authenticate``, ``authorize``, ``credential.issued``,
      ``credential.rotated``, ``credential.revoked``, …
    * ``scheme``: the scheme or credential kind (``api_key``, …).
    * ``outcome``: ``success`` or ``failure``; ``reason``: a stable code from
      :mod:`django_apiauth.core.reasons`.
    * ``user`` / ``username``: the user concerned; the username is kept so
      rows stay readable after the user is deleted (no database constraint,
      so deleting a user never rewrites millions of audit rows).
    * ``credential_id``: public identifier, never a secret.
    * ``ip``, ``user_agent``, ``method``, ``path``, ``request_id``: from the
      request, sanitised and bounded. ``path`` never includes the query string.
    * ``detail``: JSON with extra facts; secret-looking keys are redacted.
    """

    SUCCESS = "success"
    FAILURE = "failure"
    OUTCOMES = ((SUCCESS, _("success")), (FAILURE, _("failure")))

    id = models.BigAutoField(primary_key=True)
    at = models.DateTimeField(_("at"), default=timezone.now)
    event = models.CharField(_("event"), max_length=40, default="authenticate")
    scheme = models.CharField(_("scheme"), max_length=32, blank=True, default="")
    outcome = models.CharField(_("outcome"), max_length=7, choices=OUTCOMES)
    reason = models.CharField(_("reason"), max_length=40)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.DO_NOTHING,
        db_constraint=False, related_name="+", verbose_name=_("user"),
        db_index=False,  # served by the (user, -at) index below: one B-tree less per row
    )
    username = models.CharField(_("username"), max_length=150, blank=True, default="")
    credential_id = models.CharField(_("credential id"), max_length=100, blank=True, default="")
    ip = models.GenericIPAddressField(_("IP address"), null=True, blank=True)
    user_agent = models.CharField(_("user agent"), max_length=256, blank=True, default="")
    method = models.CharField(_("method"), max_length=10, blank=True, default="")
    path = models.CharField(_("path"), max_length=512, blank=True, default="")
    request_id = models.CharField(_("request id"), max_length=128, blank=True, default="")
    detail = models.JSONField(_("detail"), default=dict, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        verbose_name = _("audit event")
        verbose_name_plural = _("audit events")
        ordering = ("-at", "-id")
        # Every index is paid for on every request (one more B-tree write per
        # audit row), so successes, the bulk of the rows, touch only three:
        # time, credential and user timelines. Failure-only filters (reason,
        # IP, scheme, "failures over time") use partial indexes that success
        # rows never touch.
        indexes = [
            models.Index(fields=["-at"], name="apiauth_audit_at"),
            models.Index(fields=["credential_id", "-at"], name="apiauth_audit_credential"),
            models.Index(fields=["user", "-at"], name="apiauth_audit_user"),
            models.Index(fields=["-at"], name="apiauth_audit_failures", condition=_FAILURE),
            models.Index(fields=["reason", "-at"], name="apiauth_audit_reason", condition=_FAILURE),
            models.Index(fields=["ip", "-at"], name="apiauth_audit_ip", condition=_FAILURE),
            models.Index(fields=["scheme", "-at"], name="apiauth_audit_scheme", condition=_FAILURE),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.scheme} {self.outcome} {self.reason}"
