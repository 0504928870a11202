"""Abstract credential model shared by every credential type.

A concrete credential (``ApiKey``, later ``HmacSecret``, ``ClientCertificate``)
subclasses :class:`AbstractCredential`, sets ``credential_kind`` and
``lookup_field`` and adds what its scheme needs. Nothing else: usability,
lifecycle, last-used bookkeeping and audit live in :mod:`django_apiauth.core`.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from functools import lru_cache
from typing import Any, ClassVar

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from . import reasons
from .ratelimit import validate_rate


def validate_scopes(value: str) -> None:
    for scope in value.split():
        if not all(0x21 <= ord(c) <= 0x7E and c not in '"\\' for c in scope):
            # RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
            raise ValidationError(_("Invalid scope %(scope)r."), params={"scope": scope})


def validate_networks(value: str) -> None:
    for item in value.split():
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError as exc:
            raise ValidationError(
                _("%(item)r is not an IP address or CIDR network."), params={"item": item}
            ) from exc


class CredentialQuerySet(models.QuerySet):
    def usable(self, now: datetime | None = None) -> CredentialQuerySet:
        """Credentials usable at ``now`` (database side of :func:`unusable_reason`).

        The IP allow-list depends on the request and is checked only in Python.
        """
        now = now or timezone.now()
        return self.filter(
            Q(revoked_at__isnull=True) | Q(revoked_at__gt=now),
            Q(not_before__isnull=True) | Q(not_before__lte=now),
            Q(expires_at__isnull=True) | Q(expires_at__gt=now),
            owner__is_active=True,
        )

    def revoked(self) -> CredentialQuerySet:
        return self.filter(revoked_at__isnull=False)

    def expired(self, now: datetime | None = None) -> CredentialQuerySet:
        return self.filter(revoked_at__isnull=True, expires_at__lte=now or timezone.now())


class AbstractCredential(models.Model):
    """Fields and rules common to every credential.

    * ``owner``: the Django user a request authenticates as (machine clients
      are service-account users).
    * ``name``: human label.
    * ``scopes``: space-separated scope tokens (RFC 6749 §3.3 syntax).
    * ``allowed_ips``: space-separated IPs / CIDRs; empty allows every address.
    * ``not_before`` / ``expires_at``: validity window (``expires_at`` is
      exclusive: at that instant the credential is expired).
    * ``revoked_at`` / ``revoked_reason``: revocation is immediate and one-way.
    * ``last_used_at`` / ``last_used_ip``: coalesced, at most one write per
      ``APIAUTH_LAST_USED_INTERVAL``.
    * ``rotated_from``: the predecessor this credential replaced.
    * ``rate_limit``: this credential's rate (``100/m``, ``10/s``, ``none``);
      blank uses the scheme's default from ``APIAUTH_RATE_LIMITS``.
    """

    credential_kind: ClassVar[str] = ""
    lookup_field: ClassVar[str] = "id"
    #: Long columns the per-request lookup leaves unloaded (read on access).
    lookup_defer: ClassVar[tuple[str, ...]] = ()
    #: What the one-time secret is called in output (``"key"`` for API keys).
    secret_name: ClassVar[str] = "secret"  # noqa: S105 (a label, not a secret)

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="%(app_label)s_%(class)s_set",
        verbose_name=_("owner"),
    )
    name = models.CharField(_("name"), max_length=100)
    scopes = models.CharField(
        _("scopes"), max_length=1000, blank=True, default="", validators=[validate_scopes],
        help_text=_("Space-separated scopes, e.g. “echo:write orders:read”."),
    )
    allowed_ips = models.CharField(
        _("allowed IPs"), max_length=1000, blank=True, default="",
        validators=[validate_networks],
        help_text=_("Space-separated IP addresses or CIDR networks; empty allows any."),
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)
    not_before = models.DateTimeField(_("not before"), null=True, blank=True)
    expires_at = models.DateTimeField(_("expires at"), null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True, editable=False)
    revoked_reason = models.CharField(
        _("revocation reason"), max_length=200, blank=True, default="", editable=False
    )
    last_used_at = models.DateTimeField(_("last used at"), null=True, blank=True, editable=False)
    last_used_ip = models.GenericIPAddressField(
        _("last used from"), null=True, blank=True, editable=False
    )
    rate_limit = models.CharField(
        _("rate limit"), max_length=20, blank=True, default="", validators=[validate_rate],
        help_text=_("Requests per period, e.g. “100/m”, “10/s” or “5000/h”; “none” for no "
                    "limit; empty for the scheme's default (APIAUTH_RATE_LIMITS)."),
    )
    rotated_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="successors",
        editable=False, verbose_name=_("rotated from"),
    )

    objects = CredentialQuerySet.as_manager()

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.name} ({self.public_id})"

    @property
    def public_id(self) -> str:
        """The identifier shown to people and written to audit rows."""
        return str(getattr(self, self.lookup_field))

    @property
    def scope_set(self) -> frozenset[str]:
        return frozenset(self.scopes.split())

    def successor_fields(self) -> dict[str, Any]:
        """Extra fields a rotation copies to the successor (beyond the common ones)."""
        return {}

    def validate_successor(self, successor: AbstractCredential) -> None:
        """Raise ``ValidationError`` if ``successor`` is not a real rotation of this one."""

    def unusable_reason(self, now: datetime, ip: str | None, owner_active: bool) -> str | None:
        return unusable_reason(self, now, ip, owner_active)

    def state(self, now: datetime | None = None) -> str:
        now = now or timezone.now()
        return unusable_reason(self, now, None, True) or "active"

    def to_public_dict(self) -> dict[str, Any]:
        """Non-secret description, for ``--json`` output and signals."""
        return {
            "kind": self.credential_kind,
            "id": self.public_id,
            "pk": self.pk,
            "name": self.name,
            "owner": self.owner.get_username(),
            "scopes": sorted(self.scope_set),
            "allowed_ips": self.allowed_ips.split(),
            "rate_limit": self.rate_limit,
            "created_at": _iso(self.created_at),
            "not_before": _iso(self.not_before),
            "expires_at": _iso(self.expires_at),
            "revoked_at": _iso(self.revoked_at),
            "revoked_reason": self.revoked_reason,
            "last_used_at": _iso(self.last_used_at),
            "rotated_from": self.rotated_from.public_id if self.rotated_from_id else None,
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def unusable_reason(
    credential: AbstractCredential, now: datetime, ip: str | None, owner_active: bool
) -> str | None:
    """The one rule for "is this credential usable now": ``None`` or a reason code.

    Python side of :meth:`CredentialQuerySet.usable`; keep the two in step
    (``tests/core/test_usability.py`` checks they agree).
    """
    if credential.revoked_at is not None and credential.revoked_at <= now:
        return reasons.REVOKED
    if credential.not_before is not None and now < credential.not_before:
        return reasons.NOT_YET_VALID
    if credential.expires_at is not None and now >= credential.expires_at:
        return reasons.EXPIRED
    if not owner_active:
        return reasons.INACTIVE_OWNER
    if credential.allowed_ips and not ip_allowed(ip, credential.allowed_ips):
        return reasons.IP_NOT_ALLOWED
    return None


_NETWORK_CACHE: dict[str, tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]] = {}


def parse_networks(
    spec: str | tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    key = spec if isinstance(spec, str) else " ".join(spec)
    networks = _NETWORK_CACHE.get(key)
    if networks is None:
        items = key.split()
        parsed = []
        for item in items:
            try:
                parsed.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                continue  # invalid entries never allow anything (validated on save)
        networks = tuple(parsed)
        if len(_NETWORK_CACHE) > 1024:
            _NETWORK_CACHE.clear()
        _NETWORK_CACHE[key] = networks
    return networks


def ip_allowed(ip: str | None, spec: str | tuple[str, ...]) -> bool:
    if not ip:
        return False
    return _ip_allowed(ip, spec if isinstance(spec, str) else " ".join(spec))


@lru_cache(maxsize=4096)
def _ip_allowed(ip: str, spec: str) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in network for network in parse_networks(spec))
