"""Plain cryptographic helpers: no database, no settings, no Django models.

API key format (DESIGN §3)::

    ak_4GpFq2ZxKw7M_0123456789abcdefghijABCDEFGHIJkl3a9Zb2
    └┘ └──────────┘ └──────────────────────────────┘└────┘
    prefix  lookup id (12)       secret (32)          CRC32 (6, base62)

* ``lookup_id``: 12 base62 characters (71 bits), public, unique, indexed.
* secret: 32 base62 characters (190 bits) from :mod:`secrets`.
* checksum: CRC32 of everything before it, base62, zero-padded to 6 characters,
  so that a secret scanner or this module refuses a mistyped or truncated key
  without a database query.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import zlib
from typing import NamedTuple

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BASE62_SET = frozenset(BASE62)

LOOKUP_ID_LENGTH = 12
SECRET_LENGTH = 32
CHECKSUM_LENGTH = 6
MAX_KEY_LENGTH = 64  # generous bound: prefix (≤ 10) + 2 + 12 + 32 + 6 = 62


def random_base62(length: int) -> str:
    return "".join(secrets.choice(BASE62) for _ in range(length))


def base62_encode(number: int, width: int) -> str:
    chars = []
    while number:
        number, rem = divmod(number, 62)
        chars.append(BASE62[rem])
    return "".join(reversed(chars)).rjust(width, "0")


def checksum(body: str) -> str:
    return base62_encode(zlib.crc32(body.encode("ascii")), CHECKSUM_LENGTH)


def is_base62(value: str) -> bool:
    return _BASE62_SET.issuperset(value)


class ParsedKey(NamedTuple):
    lookup_id: str
    key: str


class GeneratedKey(NamedTuple):
    key: str
    lookup_id: str
    secret_hash: str


def generate_api_key(prefix: str, pepper: bytes) -> GeneratedKey:
    lookup_id = random_base62(LOOKUP_ID_LENGTH)
    body = f"{prefix}_{lookup_id}_{random_base62(SECRET_LENGTH)}"
    key = body + checksum(body)
    return GeneratedKey(key, lookup_id, hash_secret(key, pepper))


def parse_api_key(key: str, prefix: str) -> ParsedKey | None:
    """Return the parts of a well-formed key, or ``None`` (no database involved)."""
    if len(key) > MAX_KEY_LENGTH:
        return None
    head, sep, rest = key.partition("_")
    if not sep or head != prefix:
        return None
    lookup_id, sep, tail = rest.partition("_")
    if (
        not sep
        or len(lookup_id) != LOOKUP_ID_LENGTH
        or len(tail) != SECRET_LENGTH + CHECKSUM_LENGTH
        or not is_base62(lookup_id)
        or not is_base62(tail)
    ):
        return None
    body = key[: -CHECKSUM_LENGTH]
    if not hmac.compare_digest(checksum(body), key[-CHECKSUM_LENGTH:]):
        return None
    return ParsedKey(lookup_id, key)


def hash_secret(secret: str, pepper: bytes) -> str:
    """HMAC-SHA256 of a high-entropy secret under the server-side pepper (hex).

    A slow password hash is not needed: the secret has 190 bits of entropy,
    so the pepper keyed hash protects leaked database rows on its own.
    """
    return hmac.new(pepper, secret.encode("ascii"), hashlib.sha256).hexdigest()


def verify_secret(secret: str, stored_hash: str, pepper: bytes) -> bool:
    return hmac.compare_digest(hash_secret(secret, pepper), stored_hash)


# A stored hash that matches nothing: compared against when the lookup id is
# unknown, so that a miss costs the same HMAC and comparison as a hit.
DUMMY_HASH = "0" * 64
