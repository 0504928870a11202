"""Concrete models of django-apiauth.

Credential models subclass :class:`~django_apiauth.core.models.AbstractCredential`;
extend them by subclassing (as djangorestframework-api-key does), never by
swapping.
"""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from typing import Any, ClassVar

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
        return encryption.decrypt_cached(
            self.secret_encrypted, self.encryption_context("secret_encrypted")
        )


class HmacSecret(AbstractHmacSecret):
    objects = CredentialQuerySet.as_manager()

    class Meta(AbstractHmacSecret.Meta):
        ordering = ("-created_at",)
        indexes = [models.Index(fields=["owner", "-created_at"], name="apiauth_hmac_owner")]


class AuditEventQuerySet(models.QuerySet):
    def for_credential(self, credential_id: str) -> AuditEventQuerySet:
        return self.filter(credential_id=credential_id)


class CertificateAuthority(models.Model):
    """The app's own certificate authority for client certificates (issue #4).

    * ``slug``: public name in URLs (``/auth/ca/<slug>/crl.pem``).
    * ``certificate_pem``: the CA certificate (public: give it to the TLS
      terminator as ``ssl_client_certificate``).
    * ``private_key_encrypted``: the CA key, AES-256-GCM encrypted at rest
      like HMAC secrets, bound to the CA's fingerprint.
    """

    encrypted_fields: ClassVar[tuple[str, ...]] = ("private_key_encrypted",)

    name = models.CharField(_("name"), max_length=100)
    slug = models.SlugField(_("slug"), max_length=50, unique=True)
    certificate_pem = models.TextField(_("certificate (PEM)"), editable=False)
    fingerprint_sha256 = models.CharField(_("SHA-256 fingerprint"), max_length=64, unique=True,
                                          editable=False)
    private_key_encrypted = models.TextField(
        _("encrypted private key"), blank=True, default="", editable=False,
        help_text=_("Empty for an imported CA of another organisation: trusted, never issues."),
    )
    not_before = models.DateTimeField(_("valid from"), editable=False)
    not_after = models.DateTimeField(_("valid until"), editable=False)
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)
    is_active = models.BooleanField(_("active"), default=True,
                                    help_text=_("Inactive CAs issue nothing new."))

    class Meta:
        verbose_name = _("certificate authority")
        verbose_name_plural = _("certificate authorities")
        ordering = ("name",)

    def __str__(self) -> str:
        return f"{self.name} ({self.slug})"

    def encryption_context(self, field: str) -> str:
        return f"django_apiauth.ca:{self.fingerprint_sha256}:{field}"

    @property
    def certificate(self) -> Any:
        return _load_certificate(self.certificate_pem)

    @property
    def can_issue(self) -> bool:
        return bool(self.private_key_encrypted)

    def private_key(self) -> Any:
        from .ca import x509 as ca_x509

        if not self.private_key_encrypted:
            raise ValueError(f"The CA {self.slug!r} was imported without its key: it cannot sign.")
        return ca_x509.load_private_key(encryption.decrypt(
            self.private_key_encrypted, self.encryption_context("private_key_encrypted")
        ))


@lru_cache(maxsize=64)
def _load_certificate(pem: str) -> Any:
    from cryptography import x509 as crypto_x509

    return crypto_x509.load_pem_x509_certificate(pem.encode())


class AbstractClientCertificate(AbstractCredential):
    """A client certificate pinned by its SHA-256 fingerprint (DESIGN §3).

    Issued by the app's own CA (``ca`` set; the private key is generated on
    the server and shown once, or the client's CSR is signed and the key never
    touches the server), or registered from an uploaded PEM of another CA.
    ``not_before`` / ``expires_at`` are the certificate's validity window, so
    the core usability rule enforces it.
    """

    credential_kind: ClassVar[str] = "client_cert"
    lookup_field: ClassVar[str] = "fingerprint_sha256"
    # The certificate itself is not needed to authenticate (the fingerprint
    # pins it and the forwarded copy was parsed): keep the lookup row short.
    lookup_defer: ClassVar[tuple[str, ...]] = ("certificate_pem", "sans", "subject", "issuer",
                                               "common_name", "serial", "key_type")
    secret_name: ClassVar[str] = "private_key"  # noqa: S105 (a label, not a secret)

    KEY_TYPES = (("ec", _("EC P-256")), ("rsa", _("RSA 3072")))

    fingerprint_sha256 = models.CharField(_("SHA-256 fingerprint"), max_length=64, unique=True,
                                          editable=False)
    ca = models.ForeignKey(
        CertificateAuthority, null=True, blank=True, on_delete=models.PROTECT,
        related_name="%(app_label)s_%(class)s_set", verbose_name=_("certificate authority"),
    )
    common_name = models.CharField(_("common name"), max_length=64, blank=True, default="")
    key_type = models.CharField(_("key type"), max_length=8, choices=KEY_TYPES, default="ec")
    certificate_pem = models.TextField(
        _("certificate (PEM)"), blank=True, default="",
        help_text=_("To register a certificate of another CA (or a signed CSR); leave empty "
                    "to issue a new key and certificate from the CA."),
    )
    subject = models.CharField(_("subject"), max_length=1000, blank=True, default="", editable=False)
    issuer = models.CharField(_("issuer"), max_length=1000, blank=True, default="", editable=False)
    serial = models.CharField(_("serial (hex)"), max_length=64, blank=True, default="", editable=False)
    sans = models.JSONField(_("subject alternative names"), default=list, blank=True, editable=False)

    class Meta(AbstractCredential.Meta):
        abstract = True
        verbose_name = _("client certificate")
        verbose_name_plural = _("client certificates")

    def generate_secret(self) -> str:
        """Register ``certificate_pem``, or issue a key and certificate from ``ca``.

        Returns the new private key (PEM, shown once) when the server made it,
        else ``""``.
        """
        from .ca import x509 as ca_x509

        secret = ""
        if not self.certificate_pem.strip():
            if self.ca is None:
                raise ValidationError({"certificate_pem": _(
                    "Paste the certificate to register, or choose a certificate authority to issue one."
                )})
            from .ca.authority import check_can_issue

            check_can_issue(self.ca)
            common_name = self.common_name or self.name
            if len(common_name) > 64:
                raise ValidationError({"common_name": _("A common name has at most 64 characters.")})
            key = ca_x509.new_private_key(self.key_type)
            not_after = self.expires_at or (timezone.now() + timedelta(days=365))
            cert = ca_x509.build_client_certificate(
                ca_cert=self.ca.certificate, ca_key=self.ca.private_key(),
                public_key=key.public_key(), common_name=common_name, not_after=not_after,
                owner_uri=f"urn:django-apiauth:user:{self.owner.pk}",
            )
            self.certificate_pem = ca_x509.certificate_pem(cert)
            self.common_name = common_name
            secret = ca_x509.private_key_pem(key)
        try:
            der = ca_x509.pem_to_der(self.certificate_pem)
            facts = ca_x509.facts_from_der(der)
        except ca_x509.CertificateError as exc:
            raise ValidationError({"certificate_pem": str(exc)}) from None
        if facts.is_ca:
            raise ValidationError({"certificate_pem": _(
                "This is a CA certificate, not a client certificate."
            )})
        if not facts.client_auth:
            raise ValidationError({"certificate_pem": _(
                "The certificate lacks the clientAuth extended key usage."
            )})
        if self.ca is not None and not ca_x509.verify_issued_by(
            _load_certificate(self.certificate_pem.strip()), self.ca.certificate
        ):
            raise ValidationError({"certificate_pem": _("This certificate was not issued by this CA.")})
        self.fingerprint_sha256 = facts.fingerprint_sha256
        self.subject, self.issuer, self.serial = facts.subject, facts.issuer, facts.serial
        self.sans = list(facts.sans)
        self.common_name = self.common_name or facts.common_name
        self.not_before = facts.not_before
        self.expires_at = min(facts.not_after, self.expires_at) if self.expires_at else facts.not_after
        return secret

    def clean(self) -> None:
        super().clean()
        if not self.certificate_pem.strip() or not self.fingerprint_sha256:
            return  # not issued yet: generate_secret() sets the window from the certificate
        from .ca import x509 as ca_x509

        try:
            facts = ca_x509.facts_from_der(ca_x509.pem_to_der(self.certificate_pem))
        except ca_x509.CertificateError as exc:
            raise ValidationError({"certificate_pem": str(exc)}) from None
        # The certificate's own window bounds the credential's: an operator may
        # end it earlier, never extend it (Hash-only XFCC requests carry no
        # notAfter, so the stored window is all that is checked for them).
        if self.expires_at is None or self.expires_at > facts.not_after:
            raise ValidationError({"expires_at": _(
                "A client certificate credential cannot outlive its certificate (%(end)s)."
            ) % {"end": facts.not_after.isoformat()}})
        if self.not_before is None or self.not_before < facts.not_before:
            raise ValidationError({"not_before": _(
                "A client certificate credential cannot start before its certificate."
            )})

    def successor_fields(self) -> dict[str, object]:
        # A CA-issued certificate rotates to a fresh key and certificate from the
        # same CA; a registered one needs the new certificate (certificate_pem=…).
        return {"ca": self.ca, "common_name": self.common_name, "key_type": self.key_type,
                "certificate_pem": ""}

    def to_public_dict(self) -> dict[str, object]:
        return {
            **super().to_public_dict(),
            "fingerprint_sha256": self.fingerprint_sha256, "subject": self.subject,
            "issuer": self.issuer, "serial": self.serial, "sans": list(self.sans),
            "ca": self.ca.slug if self.ca_id else None,
        }


class ClientCertificate(AbstractClientCertificate):
    objects = CredentialQuerySet.as_manager()

    class Meta(AbstractClientCertificate.Meta):
        ordering = ("-created_at",)
        indexes = [models.Index(fields=["owner", "-created_at"], name="apiauth_cert_owner"),
                   models.Index(fields=["ca", "revoked_at"], name="apiauth_cert_ca_revoked")]


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
    * ``mac``: ``<key id>$<nonce>$<tag>``, HMAC-SHA256 (128 bits) of the row's canonical
      serialisation (every field above) under the audit key, computed by the
      writer: an edited or forged row no longer matches it
      (:mod:`django_apiauth.core.audit`, ``docs/audit-integrity.md``).
    * ``seq`` / ``chain``: the row's position in the hash chain and
      ``HMAC(previous chain ‖ seq ‖ id ‖ mac)``, set when the row is sealed
      (after it commits, in ``seq`` order, under the :class:`AuditChainHead`
      lock); empty until then.
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
    mac = models.CharField(_("MAC"), max_length=100, blank=True, default="", editable=False)
    seq = models.BigIntegerField(_("chain position"), null=True, blank=True, editable=False)
    chain = models.CharField(_("chain hash"), max_length=80, blank=True, default="",
                             editable=False)

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
        # The hash chain: sealed rows are walked by ``seq``, through a partial
        # unique index that unsealed rows, i.e. every INSERT, never touch. The
        # sealer finds unsealed rows by a primary-key range (no index of its
        # own: that would be one more B-tree write per request).
        constraints = [
            models.UniqueConstraint(fields=["seq"], name="apiauth_audit_seq",
                                    condition=models.Q(seq__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.scheme} {self.outcome} {self.reason}"


class AuditChainHead(models.Model):
    """The one row that orders the audit hash chain (``docs/audit-integrity.md``).

    Sealing locks it (``UPDATE`` first: a row lock on PostgreSQL, the write
    lock on SQLite), so sealers in several processes take turns.

    * ``seq`` / ``chain``: the last sealed row's position and chain hash.
    * ``start_seq`` / ``start_prev``: where the chain begins: 1 and the
      genesis value, or the first row kept by ``prune_audit`` and the chain
      hash of the last row it deleted.
    * ``mac``: HMAC of the four values under the audit key, so the start
      cannot be moved by someone with database access alone.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    seq = models.BigIntegerField(default=0)
    chain = models.CharField(max_length=80, blank=True, default="")
    start_seq = models.BigIntegerField(default=1)
    start_prev = models.CharField(max_length=80, blank=True, default="")
    mac = models.CharField(max_length=80, blank=True, default="")
    sealed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("audit chain head")
        verbose_name_plural = _("audit chain head")

    def __str__(self) -> str:
        return f"audit chain at {self.seq}"


class ExternalIdentity(models.Model):
    """A user's identity at an external issuer: ``(issuer, subject)`` → user.

    JWT bearer authentication (:mod:`django_apiauth.schemes.jwt`) maps a
    token's ``iss`` and ``sub`` claims (RFC 9068 §2.2, RFC 7519 §4.1.1 and 4.1.2)
    to a Django user through this table. The SSO login flows (SAML, OIDC)
    will share it later, so that one person has one user whichever way they
    arrive.

    * ``issuer``: the issuer identifier exactly as in the ``iss`` claim.
    * ``subject``: the ``sub`` claim, unique only within its issuer.
    * ``user``: the Django user the identity belongs to.
    * ``created_at``: when the mapping was created.
    * ``last_seen_at``: last successful authentication (written at most once a
      minute per identity), or empty when never seen.
    """

    issuer = models.CharField(_("issuer"), max_length=255)
    subject = models.CharField(_("subject"), max_length=255)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="apiauth_external_identities",
        verbose_name=_("user"),
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)
    last_seen_at = models.DateTimeField(_("last seen at"), null=True, blank=True, editable=False)

    class Meta:
        verbose_name = _("external identity")
        verbose_name_plural = _("external identities")
        constraints = [
            models.UniqueConstraint(fields=["issuer", "subject"], name="apiauth_extid_issuer_subject"),
        ]

    def __str__(self) -> str:
        return f"{self.subject} @ {self.issuer}"


# Models that live with their feature (imported here so Django registers them).
from .sso.oidc.models import *  # noqa: E402,F403
from .sso.saml.models import *  # noqa: E402,F403


class Lockout(models.Model):
    """A lockout of a source of repeated failures (docs/rate-limits.md).

    Written once, when a lockout starts; the live state is a marker in the
    rate-limit cache that expires on its own. Lifting a lockout in the admin
    clears the marker and the failure counter and deletes the row.

    * ``scope``: ``ip`` (one address, any credential) or ``credential`` (one
      credential id from one address).
    * ``scheme`` / ``credential_id``: what was attacked (public id, never a secret).
    * ``ip``: the source address (empty when unknown).
    * ``failures``: failures counted when the lockout started.
    * ``started_at`` / ``expires_at``: the cool-off period.
    * ``cache_key`` / ``counter_key``: the cache entries a lift clears.
    """

    SCOPE_IP = "ip"
    SCOPE_CREDENTIAL = "credential"
    SCOPES = ((SCOPE_IP, _("address")), (SCOPE_CREDENTIAL, _("credential from address")))

    scope = models.CharField(_("scope"), max_length=16, choices=SCOPES)
    scheme = models.CharField(_("scheme"), max_length=32, blank=True, default="")
    credential_id = models.CharField(_("credential id"), max_length=100, blank=True, default="")
    ip = models.GenericIPAddressField(_("IP address"), null=True, blank=True)
    failures = models.PositiveIntegerField(_("failures"), default=0)
    started_at = models.DateTimeField(_("started at"), default=timezone.now)
    expires_at = models.DateTimeField(_("expires at"))
    cache_key = models.CharField(_("cache key"), max_length=200, editable=False)
    counter_key = models.CharField(_("counter key"), max_length=200, editable=False, default="")

    class Meta:
        verbose_name = _("lockout")
        verbose_name_plural = _("lockouts")
        ordering = ("-started_at",)
        indexes = [models.Index(fields=["-expires_at"], name="apiauth_lockout_expires")]

    def __str__(self) -> str:
        target = f"{self.credential_id} from {self.ip or 'unknown'}" if self.credential_id else (
            str(self.ip or "unknown"))
        return f"{self.get_scope_display()}: {target}"

    @property
    def is_active(self) -> bool:
        return self.expires_at > timezone.now()
