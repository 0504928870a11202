"""Rate limits: atomic fixed-window counters in the shared cache.

A rate is ``<count>/<period>``: ``100/m``, ``10/s``, ``5000/h``, ``20000/d`` or
with an explicit length, ``300/15m`` (periods as in
:mod:`~django_apiauth.core.durations`). ``none`` means unlimited.

Counting is atomic and never a read-modify-write:

* on Django's ``RedisCache``, one command: a Lua script that runs ``INCR``
  and, on the first count (or if the key somehow has no expiry), ``EXPIRE``,
  atomically on the server;
* on any other backend, ``cache.add(key, 0, ttl)`` then ``cache.incr(key)``
  (both atomic in every backend Django ships: memcached ``add``/``incr``,
  local memory under its lock).

Keys are per window (``…:<window index>``) so a counter can never outlive its
window, whatever happens to its expiry, and a lost ``EXPIRE`` costs one stale
key, never a permanent limit. Window boundaries are offset per key (a hash of
the key), so all the counters of a busy API do not reset in the same second.
Fixed windows let a client send up to twice the rate across one boundary;
that is the documented price of one counter per key instead of a log.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

_RATE_RE = re.compile(r"^\s*(\d{1,9})\s*/\s*(\d{0,7})\s*([smhd])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
UNLIMITED = "none"


@dataclass(frozen=True, slots=True)
class Rate:
    limit: int
    window: int  # seconds

    def policy(self) -> str:
        """``RateLimit-Policy`` value (draft-ietf-httpapi-ratelimit-headers): ``100;w=60``."""
        return f"{self.limit};w={self.window}"


@lru_cache(maxsize=256)
def parse_rate(value: str) -> Rate | None:
    """``"100/m"`` → ``Rate(100, 60)``; blank or ``none`` → ``None``. Raises ``ValueError``."""
    text = (value or "").strip().lower()
    if not text or text == UNLIMITED:
        return None
    match = _RATE_RE.match(text)
    if not match:
        raise ValueError(
            f"Invalid rate {value!r}: use <count>/<period>, e.g. 100/m, 10/s, 5000/h or 300/15m."
        )
    count, amount, unit = match.groups()
    window = int(amount or 1) * _UNIT_SECONDS[unit]
    if int(count) < 1 or window < 1:
        raise ValueError(f"Invalid rate {value!r}: the count and the period must be at least 1.")
    return Rate(int(count), window)


def validate_rate(value: str) -> None:
    """Model-field validator of :attr:`AbstractCredential.rate_limit`."""
    try:
        parse_rate(value)
    except ValueError:
        raise ValidationError(
            _("Invalid rate %(value)r: use <count>/<period>, e.g. 100/m, 10/s, 5000/h or "
              "300/15m, or “none” for no limit."), params={"value": value},
        ) from None


@dataclass(frozen=True, slots=True)
class Hit:
    """One counted event: the count so far in this window and when it resets."""

    count: int
    limit: int
    reset: int  # whole seconds until the window ends (>= 1)

    @property
    def exceeded(self) -> bool:
        return self.count > self.limit

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.count)


def _offset(key: str, window: int) -> float:
    digest = hashlib.blake2b(key.encode(), digest_size=4).digest()
    return float(int.from_bytes(digest, "big") % window)


def hit(cache: Any, key: str, limit: int, window: int, now: float) -> Hit:
    """Count one event for ``key`` in its current window (``now``: epoch seconds).

    Raises whatever the cache raises: the caller turns that into 503.
    """
    shifted = now + _offset(key, window)
    index = int(shifted // window)
    reset = max(1, math.ceil((index + 1) * window - shifted))
    count = incr(cache, f"{key}:{index}", reset + 1)
    return Hit(count=count, limit=limit, reset=reset)


def incr(cache: Any, key: str, ttl: int) -> int:
    """Atomically add one to ``key`` (created with expiry ``ttl`` seconds) and return it."""
    client = _redis_client(cache, key)
    if client is not None:
        full_key, redis = client
        return int(_INCR_SCRIPT(keys=[full_key], args=[ttl], client=redis))
    cache.add(key, 0, timeout=ttl)
    try:
        return int(cache.incr(key))
    except ValueError:
        # Evicted between add and incr (a culling cache under pressure): start again.
        cache.add(key, 0, timeout=ttl)
        return int(cache.incr(key))


class _IncrScript:
    """``INCR`` and, on the first count, ``EXPIRE``, as one atomic Lua script
    (one command, one round trip; Redis runs a script without interleaving).
    Sent by SHA (``EVALSHA``), loaded again when the server forgot it."""

    LUA = (
        "local n = redis.call('INCR', KEYS[1]) "
        "if n == 1 or redis.call('TTL', KEYS[1]) < 0 then "
        "redis.call('EXPIRE', KEYS[1], ARGV[1]) end "
        "return n"
    )
    SHA = hashlib.sha1(LUA.encode()).hexdigest()  # noqa: S324 (Redis names scripts by SHA-1)

    def __call__(self, *, keys: list[str], args: list[Any], client: Any) -> Any:
        from redis.exceptions import NoScriptError

        try:
            return client.evalsha(self.SHA, len(keys), *keys, *args)
        except NoScriptError:
            return client.eval(self.LUA, len(keys), *keys, *args)


_INCR_SCRIPT = _IncrScript()


def _redis_client(cache: Any, key: str) -> tuple[str, Any] | None:
    """Django's RedisCache: its redis-py client and the full key, else ``None``."""
    from django.core.cache.backends.redis import RedisCache

    if not isinstance(cache, RedisCache):
        return None
    full_key = cache.make_and_validate_key(key)
    try:
        client = cache._cache.get_client(full_key, write=True)
    except AttributeError:  # pragma: no cover - other Django internals: the generic path
        return None
    return full_key, client
