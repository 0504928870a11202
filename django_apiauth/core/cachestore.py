"""The Django caches django-apiauth writes to, looked up once per thread.

``django.core.cache.caches[alias]`` goes through asgiref's context-local
storage on every call, which costs about as much as a local-memory cache
operation itself; the authentication path needs a cache two or three times
per request (lockout, replay, rate limit, JWT deny-list and JWKS), and every
django-apiauth module asks through here. :func:`cache` keeps the handle
Django returned for this thread, as Django itself does for a synchronous
thread, and asks Django again after ``CACHES`` changed (``override_settings``
replaces Django's storage, which is how a change is noticed). Handles are
thread-safe in every backend Django ships, and ``close()`` at the end of a
request leaves them usable (a no-op, or a reconnect on the next call).
"""

from __future__ import annotations

import threading

from django.core.cache import BaseCache, caches

_local = threading.local()


def cache(alias: str) -> BaseCache:
    """``caches[alias]``, memoised for this thread while ``CACHES`` stays the same."""
    connections = getattr(caches, "_connections", None)  # replaced when CACHES changes
    if connections is None:  # pragma: no cover - a Django without it: no memo
        return caches[alias]
    memo = getattr(_local, "memo", None)
    if memo is None or memo[0] is not connections:
        memo = _local.memo = (connections, {})
    handles: dict[str, BaseCache] = memo[1]
    try:
        return handles[alias]
    except KeyError:
        handle = handles[alias] = caches[alias]  # raises for an unknown alias
        return handle
