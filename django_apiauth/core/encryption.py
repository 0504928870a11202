"""Encryption of secrets the server must be able to read back (HMAC keys, CA keys).

AES-256-GCM from :mod:`cryptography`. Keys come from ``APIAUTH_ENCRYPTION_KEYS``
(newest first: the first encrypts, every one decrypts) or, when that setting
is unset, are derived with HKDF-SHA256 from ``SECRET_KEY`` and then
``SECRET_KEY_FALLBACKS``, so rotating Django's secret key the documented way
keeps old ciphertexts readable until ``reencrypt_secrets`` has run.

Stored format: ``v1$<key id>$<base64url(nonce ‖ ciphertext ‖ tag)>``. The key
id (8 hex characters of SHA-256 of the derived key, not secret) picks the
decryption key without trial decryption. Each ciphertext is bound to its row
and field by associated data (``context``), so a ciphertext copied into another
row does not decrypt.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Sequence
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from ..app_settings import app_settings

VERSION = "v1"
_INFO = b"django_apiauth.encryption.v1"


class DecryptionError(Exception):
    """The value cannot be decrypted with any configured key (or was tampered with)."""


def _derive(material: str | bytes) -> bytes:
    raw = material.encode() if isinstance(material, str) else bytes(material)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(raw)


def _key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


_KEYRING_CACHE: dict[tuple[str | bytes, ...], list[tuple[str, AESGCM]]] = {}


def _sources() -> tuple[str | bytes, ...]:
    # Memoised (signed requests ask on every request) until one of the
    # settings it reads changes.
    global _SOURCES
    if _SOURCES is None:
        configured = app_settings._setting("ENCRYPTION_KEYS", None)
        if configured:
            _SOURCES = tuple(configured)
        else:
            _SOURCES = (settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", ()))
    return _SOURCES


_SOURCES: tuple[str | bytes, ...] | None = None
_SOURCE_SETTINGS = frozenset({"SECRET_KEY", "SECRET_KEY_FALLBACKS", "APIAUTH_ENCRYPTION_KEYS"})


@receiver(setting_changed)
def _forget_sources(setting: str = "", **kwargs: object) -> None:
    global _SOURCES
    if setting in _SOURCE_SETTINGS:
        _SOURCES = None


def keyring() -> list[tuple[str, AESGCM]]:
    """``[(key id, cipher), …]``, current key first. Cached per configuration."""
    sources = _sources()
    ring = _KEYRING_CACHE.get(sources)
    if ring is None:
        ring = []
        for source in sources:
            key = _derive(source)
            ring.append((_key_id(key), AESGCM(key)))
        if len(_KEYRING_CACHE) > 8:
            _KEYRING_CACHE.clear()
        _KEYRING_CACHE[sources] = ring
    return ring


def current_key_id() -> str:
    return keyring()[0][0]


def encrypt(plaintext: bytes, context: str) -> str:
    key_id, cipher = keyring()[0]
    nonce = os.urandom(12)
    sealed = cipher.encrypt(nonce, plaintext, context.encode())
    return f"{VERSION}${key_id}${base64.urlsafe_b64encode(nonce + sealed).decode()}"


def key_id_of(token: str) -> str | None:
    parts = token.split("$")
    return parts[1] if len(parts) == 3 and parts[0] == VERSION else None


def decrypt(token: str, context: str) -> bytes:
    parts = token.split("$")
    if len(parts) != 3 or parts[0] != VERSION:
        raise DecryptionError("Unknown ciphertext format.")
    _version, key_id, payload = parts
    try:
        raw = base64.urlsafe_b64decode(payload.encode())
    except ValueError:
        raise DecryptionError("Corrupt ciphertext.") from None
    for candidate_id, cipher in keyring():
        if candidate_id == key_id:
            try:
                return cipher.decrypt(raw[:12], raw[12:], context.encode())
            except (InvalidTag, ValueError):  # ValueError: too short for nonce + tag
                raise DecryptionError("Ciphertext does not authenticate.") from None
    raise DecryptionError(
        "No configured key can decrypt this value: was its key removed from "
        "APIAUTH_ENCRYPTION_KEYS (or SECRET_KEY_FALLBACKS) before reencrypt_secrets ran?"
    )


def needs_reencryption(token: str) -> bool:
    return key_id_of(token) != current_key_id()


def reencrypt(token: str, context: str) -> str:
    return encrypt(decrypt(token, context), context)


def configured_key_ids() -> Sequence[str]:
    return [key_id for key_id, _cipher in keyring()]


def decrypt_cached(token: str, context: str) -> bytes:
    """:func:`decrypt`, memoised per process for hot verification keys.

    The key stays in this process's memory (where verification needs it
    anyway); the memo is keyed by the ciphertext, its context and the
    configured keys, so re-encryption or a key change misses it. Revocation
    is unaffected: the credential row is read on every request.
    """
    return _decrypt_memo(token, context, _sources())


@lru_cache(maxsize=1024)
def _decrypt_memo(token: str, context: str, sources: tuple[str | bytes, ...]) -> bytes:
    return decrypt(token, context)
