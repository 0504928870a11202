"""Factory fixtures for the request-signing scheme tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from django_apiauth.core import lifecycle
from django_apiauth.models import HmacSecret


@pytest.fixture
def make_hmac_secret(user: Any) -> Callable[..., tuple[HmacSecret, str]]:
    """Issue a signing credential through the lifecycle, as the admin and CLI do."""

    def make(owner: Any = None, **fields: Any) -> tuple[HmacSecret, str]:
        fields.setdefault("name", "signing client")
        fields.setdefault("scopes", "echo:write")
        return lifecycle.issue(HmacSecret, owner=owner or user, **fields)

    return make


@pytest.fixture
def hmac_secret(make_hmac_secret: Callable[..., tuple[HmacSecret, str]]) -> tuple[HmacSecret, str]:
    return make_hmac_secret()


@pytest.fixture(scope="session")
def ed25519_private_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(scope="session")
def p256_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())
