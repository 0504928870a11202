"""Lockout of sources of repeated failures, across every scheme.

Two things are locked, each for ``APIAUTH_LOCKOUT_DURATION``:

* an **address**: ``LOCKOUT_IP_FAILURES`` refused attempts from one IP, any
  scheme, any credential, within ``LOCKOUT_IP_WINDOW``;
* a **(credential id, address) pair**: ``LOCKOUT_CREDENTIAL_FAILURES`` refused
  attempts naming one credential id (API-key lookup id, HMAC key id,
  certificate fingerprint, token id) from one IP within
  ``LOCKOUT_CREDENTIAL_WINDOW``.

A credential id is never locked for *every* address: the id is public (it is
in every request and in logs), so an attacker guessing secrets against it
from their own address would otherwise lock its legitimate holder out
everywhere (OWASP Authentication Cheat Sheet, "account lockout" as a denial
of service). Secrets are 160+ bits, so guessing is hopeless anyway; what a
distributed attack against one id gets instead is a ``failure_burst`` alert
(``ALERT_CREDENTIAL_FAILURES`` from any address), for a person to act on
(revoke, rotate, block the network upstream).

Per request, the state is read with **one** ``get_many`` of two keys: the
address lock, and the (credential, address) key, which holds the pair's lock
or else the "address already seen for this credential" marker of the
new-address alert. Counters are incremented only on failure; the lock
markers are written only when a lockout starts, together with a
:class:`~django_apiauth.models.Lockout` row that staff see and lift in the
admin. Every cache key is a hash: no request value ever reaches the cache
key space.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import DatabaseError, router

from ..app_settings import app_settings
from . import alerts, audit, cachestore, ratelimit, reasons
from .models import ip_allowed

logger = logging.getLogger("django_apiauth")

SCOPE_IP = "ip"
SCOPE_CREDENTIAL = "credential"
UNKNOWN_IP = "unknown"

#: Refusals that do not count as failures: the answers of this module
#: themselves, and refusals that are the server's fault, not the client's.
NOT_COUNTED = frozenset({
    reasons.RATE_LIMITED, reasons.LOCKED_OUT, reasons.SERVICE_UNAVAILABLE,
    reasons.INTERNAL_ERROR,
})


class StoreUnavailable(Exception):
    """The cache holding counters and lockouts cannot be reached."""


def cache() -> Any:
    return cachestore.cache(app_settings.RATE_LIMIT_CACHE)


def _h(*parts: str) -> str:
    # 96 bits: ample against collisions, and short keys are cheaper to validate.
    return hashlib.blake2b("\0".join(parts).encode(), digest_size=12).hexdigest()


def ip_lock_key(ip: str | None) -> str:
    return f"apiauth:lock:ip:{_h(ip or UNKNOWN_IP)}"


def pair_key(scheme: str, credential_id: str, ip: str | None) -> str:
    """One key per (credential, address): the lock of the pair while it is
    locked out (the lock's end, epoch seconds), else the "seen" marker of the
    new-address alert (``1``). One key, so one read serves both."""
    return f"apiauth:src:{_h(scheme, credential_id, ip or UNKNOWN_IP)}"


pair_lock_key = seen_key = pair_key


def rate_key(scheme: str, credential_id: str) -> str:
    return f"apiauth:rate:{_h(scheme, credential_id)}"


def _exempt(ip: str | None) -> bool:
    exempt = app_settings.LOCKOUT_EXEMPT_IPS
    return bool(exempt and ip and ip_allowed(ip, exempt))


@dataclass(slots=True)
class Guard:
    """What one ``get_many`` said about a request's source."""

    locked_until: float | None = None
    scope: str = ""
    #: The address was seen before for this credential (``None``: not asked).
    seen: bool | None = None
    #: The credential had been used before this request (new-address alert).
    previously_used: bool = False

    def retry_after(self, now: float) -> int:
        return max(1, math.ceil((self.locked_until or now) - now))


def check(scheme: str, credential_id: str, ip: str | None, now: float, *,
          want_seen: bool) -> Guard:
    """Read the locks (and the seen marker) of this source in one round trip."""
    lockout = app_settings.LOCKOUT_ENABLED
    keys: list[str] = []
    ip_key = source = ""
    if lockout and not _exempt(ip):
        ip_key = ip_lock_key(ip)
        keys.append(ip_key)
    if credential_id and (lockout or want_seen):
        source = pair_key(scheme, credential_id, ip)
        keys.append(source)
    guard = Guard()
    if not keys:
        return guard
    try:
        found = cache().get_many(keys)
    except Exception as exc:  # any backend error: fail closed
        raise StoreUnavailable(type(exc).__name__) from None
    if not found:
        if want_seen and source:
            guard.seen = False
        return guard  # nothing locked, address not seen before
    for key, scope in ((ip_key, SCOPE_IP), (source if lockout else "", SCOPE_CREDENTIAL)):
        until = found.get(key) if key else None
        # The end is in the value too: a lock ends on time even if the cache
        # keeps the key a little longer. The seen marker (1) is never a lock.
        if isinstance(until, int | float) and until > now and (
            guard.locked_until is None or until > guard.locked_until
        ):
            guard.locked_until, guard.scope = float(until), scope
    if want_seen and source:
        guard.seen = source in found
    return guard


def remember_ip(scheme: str, credential_id: str, ip: str | None) -> None:
    ttl = int(app_settings.ALERT_NEW_IP_MEMORY.total_seconds())
    try:
        # add, not set: never overwrite a lock of the pair.
        cache().add(pair_key(scheme, credential_id, ip), 1, timeout=max(1, ttl))
    except Exception as exc:
        raise StoreUnavailable(type(exc).__name__) from None


def register_failure(*, scheme: str, credential_id: str, ip: str | None, now: float,
                     request: Any = None, sender: Any = None) -> None:
    """Count one refused attempt; start lockouts and raise alerts at the thresholds.

    A threshold is crossed by exactly one request (``incr`` is atomic), so a
    lockout starts, and its row is written, once.
    """
    store = cache()
    try:
        if app_settings.LOCKOUT_ENABLED and not _exempt(ip):
            window = _seconds(app_settings.LOCKOUT_IP_WINDOW)
            base = f"apiauth:fail:ip:{_h(ip or UNKNOWN_IP)}"
            counted = ratelimit.hit(store, base, app_settings.LOCKOUT_IP_FAILURES, window, now)
            if counted.count == app_settings.LOCKOUT_IP_FAILURES:
                _start(SCOPE_IP, scheme, "", ip, counted.count, ip_lock_key(ip),
                       _counter_key(base, window, now), now, request, sender)
        if not credential_id:
            return
        window = _seconds(app_settings.LOCKOUT_CREDENTIAL_WINDOW)
        if app_settings.LOCKOUT_ENABLED:
            base = f"apiauth:fail:cred:{_h(scheme, credential_id, ip or UNKNOWN_IP)}"
            limit = app_settings.LOCKOUT_CREDENTIAL_FAILURES
            counted = ratelimit.hit(store, base, limit, window, now)
            if counted.count == limit:
                _start(SCOPE_CREDENTIAL, scheme, credential_id, ip, counted.count,
                       pair_lock_key(scheme, credential_id, ip),
                       _counter_key(base, window, now), now, request, sender)
        burst = app_settings.ALERT_CREDENTIAL_FAILURES
        if burst > 0:
            base = f"apiauth:fail:any:{_h(scheme, credential_id)}"
            counted = ratelimit.hit(store, base, burst, window, now)
            if counted.count == burst:
                alerts.emit("failure_burst", request=request, scheme=scheme,
                            credential_id=credential_id, ip=ip, sender=sender,
                            detail={"failures": counted.count, "window_seconds": window})
    except StoreUnavailable:
        raise
    except Exception as exc:  # any backend error: fail closed
        raise StoreUnavailable(type(exc).__name__) from None


def _seconds(delta: timedelta) -> int:
    return max(1, int(delta.total_seconds()))


def _counter_key(base: str, window: int, now: float) -> str:
    shifted = now + ratelimit._offset(base, window)
    return f"{base}:{int(shifted // window)}"


def _start(scope: str, scheme: str, credential_id: str, ip: str | None, failures: int,
           lock_key: str, counter_key: str, now: float, request: Any, sender: Any) -> None:
    from ..models import Lockout

    duration = app_settings.LOCKOUT_DURATION.total_seconds()
    until = now + duration
    cache().set(lock_key, until, timeout=math.ceil(duration) + 1)
    started = _aware(now)
    detail = {"scope": scope, "failures": failures,
              "until": _aware(until).isoformat(), "duration_seconds": int(duration)}
    try:
        alias = app_settings.AUDIT_DATABASE or router.db_for_write(Lockout)
        Lockout.objects.using(alias).create(
            scope=scope, scheme=scheme, credential_id=credential_id[:100],
            ip=audit._valid_ip(ip), failures=failures, started_at=started,
            expires_at=_aware(until), cache_key=lock_key, counter_key=counter_key,
        )
    except DatabaseError:
        logger.exception("Could not record a lockout row (the lockout itself is active)")
    try:
        audit.record(event="lockout", scheme=scheme, outcome=audit.FAILURE,
                     reason=reasons.LOCKED_OUT, request=request, ip=ip,
                     credential_id=credential_id, detail=detail, at=started)
    except audit.AuditUnavailable:
        logger.error("Could not audit the start of a lockout (the lockout itself is active)")
    alerts.emit("lockout", request=request, scheme=scheme, credential_id=credential_id,
                ip=ip, sender=sender, detail=detail)


def _aware(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


def lift(lockout: Any, actor: Any = None) -> None:
    """End a lockout now: clear its cache marker and failure counter, delete its row, audit."""
    cache().delete_many([lockout.cache_key, lockout.counter_key])
    lockout.delete()
    audit.record(
        event="lockout.lifted", scheme=lockout.scheme, outcome=audit.SUCCESS,
        reason=reasons.LIFTED, user=actor, credential_id=lockout.credential_id,
        ip=lockout.ip, detail={"scope": lockout.scope, "actor": getattr(actor, "pk", None)},
    )
