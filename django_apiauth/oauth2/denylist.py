"""Deny-list of revoked JWT access tokens, by ``(iss, jti)``, in the shared cache.

A JWT is verified offline, so revoking one (RFC 7009 endpoint, admin, model
delete) cannot remove it from anywhere: instead its ``jti`` goes on this list
until the token's ``exp`` (plus the verifiers' leeway), and
:class:`~django_apiauth.schemes.jwt.JWTAuthentication` looks every token up
here. The entry is keyed by issuer and ``jti``, never by the token string:
an ES256 signature ``(r, s)`` has an equally valid twin ``(r, n - s)``, a
different string for the same token (RFC 7515 §10.13 does not forbid it).

The cache must be shared by every process and must not evict (Redis with
``maxmemory-policy noeviction``): an evicted entry is a revocation forgotten.
A cache that cannot be reached raises
:class:`~django_apiauth.core.authentication.DependencyUnavailable` (503).
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any

from ..app_settings import app_settings
from ..core import cachestore
from ..core.authentication import DependencyUnavailable

#: Added to every entry's lifetime: verifiers accept tokens up to their
#: leeway after ``exp``.
LEEWAY_MARGIN = 300


def key(issuer: str, jti: str) -> str:
    """The cache key of ``(issuer, jti)`` (hashed: both are attacker-chosen strings)."""
    digest = hashlib.sha256(issuer.encode() + b"\0" + jti.encode()).hexdigest()[:48]
    return f"apiauth:jwt:deny:{digest}"


def cache() -> Any:
    return cachestore.cache(app_settings.JWT_DENYLIST_CACHE)


def deny(issuer: str, jti: str, exp: float, *, now: float | None = None) -> bool:
    """Put ``(issuer, jti)`` on the deny-list until ``exp``; False when already expired."""
    now = time.time() if now is None else now
    ttl = math.ceil(float(exp) - now) + LEEWAY_MARGIN
    if float(exp) + LEEWAY_MARGIN <= now:
        return False
    try:
        cache().set(key(issuer, jti), 1, timeout=max(1, ttl))
    except Exception as exc:  # a revocation that did not happen must be loud
        raise DependencyUnavailable(type(exc).__name__) from None
    return True


def is_denied(issuer: str, jti: str) -> bool:
    """True when ``(issuer, jti)`` is revoked. Raises DependencyUnavailable when the cache is down."""
    try:
        return cache().get(key(issuer, jti)) is not None
    except Exception as exc:
        raise DependencyUnavailable(type(exc).__name__) from None
