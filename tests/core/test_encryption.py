"""Encryption of secrets at rest (DESIGN §3): AES-256-GCM, bound to its row, rotatable keys."""

from __future__ import annotations

import base64
import os
import re

import pytest
from django.test import override_settings

from django_apiauth.core import encryption
from django_apiauth.core.encryption import DecryptionError
from django_apiauth.models import HmacSecret

pytestmark = pytest.mark.django_db

CONTEXT = "django_apiauth.hmac:hk_test:secret_encrypted"
OLD_KEY = "old-encryption-key-0123456789abcdef0123456789"
NEW_KEY = "new-encryption-key-fedcba9876543210fedcba9876"
OLD_SECRET_KEY = "old-django-secret-key-0123456789abcdef0123456789abcdef"
NEW_SECRET_KEY = "new-django-secret-key-fedcba9876543210fedcba9876543210"
SECRET = b"hmac-secret-9f8e7d6c5b4a39281706f5e4d3c2b1a0"


def keys(*sources: str | bytes) -> override_settings:
    return override_settings(APIAUTH_ENCRYPTION_KEYS=list(sources))


def secret_keys(current: str, *fallbacks: str) -> override_settings:
    """Django's own key rotation, with no dedicated encryption keys configured."""
    return override_settings(APIAUTH_ENCRYPTION_KEYS=None, SECRET_KEY=current,
                             SECRET_KEY_FALLBACKS=list(fallbacks))


def rewrite_payload(token: str, change) -> str:  # type: ignore[no-untyped-def]
    version, key_id, payload = token.split("$")
    raw = change(bytearray(base64.urlsafe_b64decode(payload)))
    return f"{version}${key_id}${base64.urlsafe_b64encode(bytes(raw)).decode()}"


def flip(index: int):  # type: ignore[no-untyped-def]
    def change(raw: bytearray) -> bytearray:
        raw[index] ^= 0x01
        return raw
    return change


@pytest.mark.parametrize("plaintext", [b"", b"x", SECRET, "päßwörd ✓".encode(), os.urandom(4096)],
                         ids=["empty", "one-byte", "secret", "utf-8", "4KB-binary"])
def test_round_trip(plaintext):
    token = encryption.encrypt(plaintext, CONTEXT)
    assert encryption.decrypt(token, CONTEXT) == plaintext


def test_stored_format_names_version_and_key_but_not_the_plaintext():
    token = encryption.encrypt(SECRET, CONTEXT)
    assert re.fullmatch(r"v1\$[0-9a-f]{8}\$[A-Za-z0-9_-]+=*", token)
    assert encryption.key_id_of(token) == encryption.current_key_id()
    assert SECRET.decode() not in token
    assert base64.b64encode(SECRET).decode().rstrip("=") not in token
    # nonce (12) + ciphertext (same length as the plaintext) + tag (16)
    assert len(base64.urlsafe_b64decode(token.split("$")[2])) == 12 + len(SECRET) + 16


def test_ciphertext_differs_each_time():
    tokens = {encryption.encrypt(SECRET, CONTEXT) for _ in range(20)}
    assert len(tokens) == 20
    nonces = {base64.urlsafe_b64decode(token.split("$")[2])[:12] for token in tokens}
    assert len(nonces) == 20
    assert {encryption.decrypt(token, CONTEXT) for token in tokens} == {SECRET}


@pytest.mark.parametrize("other", [
    "django_apiauth.hmac:hk_other:secret_encrypted",   # another row
    "django_apiauth.hmac:hk_test:other_field",          # another field
    "",
])
def test_ciphertext_is_bound_to_its_context(other):
    token = encryption.encrypt(SECRET, CONTEXT)
    with pytest.raises(DecryptionError, match="does not authenticate"):
        encryption.decrypt(token, other)


TAMPERING = {
    "nonce-bit": lambda t: rewrite_payload(t, flip(0)),
    "ciphertext-bit": lambda t: rewrite_payload(t, flip(12)),
    "tag-bit": lambda t: rewrite_payload(t, flip(-1)),
    "truncated-tag": lambda t: rewrite_payload(t, lambda raw: raw[:-1]),
    "appended-byte": lambda t: rewrite_payload(t, lambda raw: raw + b"\0"),
    "nonce-only": lambda t: rewrite_payload(t, lambda raw: raw[:12]),
    "shorter-than-a-nonce": lambda t: rewrite_payload(t, lambda raw: raw[:3]),
    "empty-payload": lambda t: t.rsplit("$", 1)[0] + "$",
    "bad-base64-padding": lambda t: t.rstrip("=") + "A",
    "other-version": lambda t: "v2" + t[2:],
    "extra-field": lambda t: t + "$x",
    "not-a-token": lambda t: "plaintext-secret",
    "empty": lambda t: "",
}


@pytest.mark.parametrize("tamper", TAMPERING.values(), ids=TAMPERING.keys())
def test_tampering_is_a_decryption_error(tamper):
    token = encryption.encrypt(SECRET, CONTEXT)
    with pytest.raises(DecryptionError):
        encryption.decrypt(tamper(token), CONTEXT)


def test_unknown_key_id_names_the_fix():
    token = encryption.encrypt(SECRET, CONTEXT)
    forged = "v1$00000000$" + token.split("$")[2]
    assert encryption.key_id_of(forged) not in encryption.configured_key_ids()
    with pytest.raises(DecryptionError, match="reencrypt_secrets"):
        encryption.decrypt(forged, CONTEXT)


def test_encryption_key_rotation():
    with keys(OLD_KEY):
        old_id = encryption.current_key_id()
        old_token = encryption.encrypt(SECRET, CONTEXT)
    with keys(NEW_KEY, OLD_KEY):
        new_id = encryption.current_key_id()
        assert new_id != old_id
        assert list(encryption.configured_key_ids()) == [new_id, old_id]
        # The first key encrypts; every configured key decrypts.
        new_token = encryption.encrypt(SECRET, CONTEXT)
        assert encryption.key_id_of(new_token) == new_id
        assert encryption.decrypt(old_token, CONTEXT) == SECRET
        assert encryption.needs_reencryption(old_token)
        assert not encryption.needs_reencryption(new_token)
        moved = encryption.reencrypt(old_token, CONTEXT)
        assert encryption.key_id_of(moved) == new_id
        assert not encryption.needs_reencryption(moved)
        assert encryption.decrypt(moved, CONTEXT) == SECRET
    with keys(NEW_KEY):
        assert encryption.decrypt(moved, CONTEXT) == SECRET
        with pytest.raises(DecryptionError) as excinfo:
            encryption.decrypt(old_token, CONTEXT)
    assert "reencrypt_secrets" in str(excinfo.value)
    assert "APIAUTH_ENCRYPTION_KEYS" in str(excinfo.value)


def test_key_ids_identify_keys():
    with keys(OLD_KEY):
        first = encryption.current_key_id()
    with keys(OLD_KEY.encode()):  # bytes or str: the same key
        assert encryption.current_key_id() == first
    with keys(NEW_KEY):
        assert encryption.current_key_id() != first
    assert first not in OLD_KEY


def test_default_keys_follow_secret_key_fallbacks():
    with secret_keys(OLD_SECRET_KEY):
        old_token = encryption.encrypt(SECRET, CONTEXT)
    with secret_keys(NEW_SECRET_KEY, OLD_SECRET_KEY):
        assert encryption.decrypt(old_token, CONTEXT) == SECRET
        assert encryption.needs_reencryption(old_token)
        moved = encryption.reencrypt(old_token, CONTEXT)
        assert not encryption.needs_reencryption(moved)
    with secret_keys(NEW_SECRET_KEY):
        assert encryption.decrypt(moved, CONTEXT) == SECRET
        with pytest.raises(DecryptionError, match="reencrypt_secrets"):
            encryption.decrypt(old_token, CONTEXT)


def test_dedicated_keys_take_precedence_over_secret_key():
    with secret_keys(OLD_SECRET_KEY):
        derived_token = encryption.encrypt(SECRET, CONTEXT)
    with keys(OLD_KEY), override_settings(SECRET_KEY=OLD_SECRET_KEY):
        dedicated_token = encryption.encrypt(SECRET, CONTEXT)
        with pytest.raises(DecryptionError):
            encryption.decrypt(derived_token, CONTEXT)
    # Rotating Django's SECRET_KEY (no fallback) leaves dedicated-key ciphertexts readable.
    with keys(OLD_KEY), override_settings(SECRET_KEY=NEW_SECRET_KEY, SECRET_KEY_FALLBACKS=[]):
        assert encryption.decrypt(dedicated_token, CONTEXT) == SECRET


# -- the model: HmacSecret.secret_encrypted ---------------------------------------------


def test_hmac_secret_is_stored_encrypted_and_bound_to_its_row(make_user):
    from django_apiauth.core import lifecycle

    owner = make_user()
    first, first_secret = lifecycle.issue(HmacSecret, owner=owner, name="first")
    second, _ = lifecycle.issue(HmacSecret, owner=owner, name="second")
    stored = HmacSecret.objects.get(pk=first.pk).secret_encrypted
    assert stored.startswith("v1$") and first_secret not in stored
    assert first.verification_key() == first_secret.encode()
    # A ciphertext copied into another row does not decrypt there.
    HmacSecret.objects.filter(pk=second.pk).update(secret_encrypted=stored)
    with pytest.raises(DecryptionError):
        HmacSecret.objects.get(pk=second.pk).verification_key()
