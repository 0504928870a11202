"""Replay store: remember a value once for a window, in the shared cache.

``cache.add`` is atomic in every Django backend that matters here (Redis
``SET NX``, local memory under a lock), so two concurrent requests carrying
the same nonce cannot both win. The cache being unreachable raises
:class:`~django_apiauth.core.authentication.DependencyUnavailable`: the
request is refused with 503, never accepted unchecked.
"""

from __future__ import annotations

import hashlib

from ..app_settings import app_settings
from .authentication import DependencyUnavailable
from .cachestore import cache


def _key(namespace: str, value: str | bytes) -> str:
    raw = value.encode() if isinstance(value, str) else value
    # 128 bits: a collision would refuse an honest request, not accept a replay;
    # short keys are cheaper to validate and to store.
    return "apiauth:replay:" + hashlib.blake2b(namespace.encode() + b"\0" + raw,
                                               digest_size=16).hexdigest()


def first_use(namespace: str, value: str | bytes, ttl_seconds: int) -> bool:
    """True the first time ``value`` is seen in ``namespace`` within ``ttl_seconds``."""
    try:
        store = cache(app_settings.REPLAY_CACHE)
        return bool(store.add(_key(namespace, value), 1, timeout=max(1, ttl_seconds)))
    except Exception as exc:  # any backend error: fail closed
        raise DependencyUnavailable(type(exc).__name__) from None


def seen(namespace: str, value: str | bytes) -> bool:
    """Whether ``value`` is remembered in ``namespace`` (read only, records nothing).

    For explaining a refusal that is decided anyway: raises
    :class:`DependencyUnavailable` when the store cannot be read.
    """
    try:
        return cache(app_settings.REPLAY_CACHE).get(_key(namespace, value)) is not None
    except Exception as exc:
        raise DependencyUnavailable(type(exc).__name__) from None
