import math
import re

import pytest

from django_apiauth.core import crypto

PEPPER = b"p" * 32


def test_generated_key_format():
    key, lookup_id, secret_hash = crypto.generate_api_key("ak", PEPPER)
    assert re.fullmatch(r"ak_[0-9A-Za-z]{12}_[0-9A-Za-z]{38}", key)
    assert key.split("_")[1] == lookup_id
    assert crypto.parse_api_key(key, "ak") == (lookup_id, key)
    assert secret_hash == crypto.hash_secret(key, PEPPER)
    assert key not in secret_hash


def test_secret_has_at_least_160_bits():
    assert crypto.SECRET_LENGTH * math.log2(62) >= 160


def test_keys_are_unique():
    keys = {crypto.generate_api_key("ak", PEPPER).key for _ in range(200)}
    assert len(keys) == 200


def test_checksum_catches_any_single_character_change():
    key = crypto.generate_api_key("ak", PEPPER).key
    for i in range(len(key)):
        if key[i] == "_":
            continue
        replacement = "A" if key[i] != "A" else "B"
        assert crypto.parse_api_key(key[:i] + replacement + key[i + 1 :], "ak") is None


@pytest.mark.parametrize(
    "value",
    ["", "ak", "ak_", "ak__", "ak_x_y", "AK_" + "A" * 12 + "_" + "A" * 38, "ak_" + "A" * 12 + "A" + "A" * 38],
)
def test_parse_rejects_malformed(value):
    assert crypto.parse_api_key(value, "ak") is None


def test_parse_rejects_other_prefix():
    key = crypto.generate_api_key("zz", PEPPER).key
    assert crypto.parse_api_key(key, "ak") is None
    assert crypto.parse_api_key(key, "zz") is not None


def test_verify_secret_uses_pepper():
    key = crypto.generate_api_key("ak", PEPPER).key
    stored = crypto.hash_secret(key, PEPPER)
    assert crypto.verify_secret(key, stored, PEPPER)
    assert not crypto.verify_secret(key, stored, b"q" * 32)
    assert not crypto.verify_secret(key, crypto.DUMMY_HASH, PEPPER)


def test_base62_encode():
    assert crypto.base62_encode(0, 6) == "000000"
    assert crypto.base62_encode(61, 1) == "z"
    assert crypto.base62_encode(62, 2) == "10"
    assert len(crypto.base62_encode(2**32 - 1, 6)) == 6
