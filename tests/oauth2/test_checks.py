"""System checks of the JWT issuers and the OAuth 2.0 provider settings."""

from __future__ import annotations

from typing import Any

import pytest

from django_apiauth.checks import check_jwt_settings


def ids(**_: Any) -> list[str]:
    return [m.id for m in check_jwt_settings()]


def test_example_settings_are_clean() -> None:
    assert ids() == []


@pytest.mark.parametrize("entry", [
    "https://idp.example.test",
    {"audience": "a", "jwks_uri": "https://idp/jwks"},
    {"issuer": "i", "jwks_uri": "https://idp/jwks"},
    {"issuer": "i", "audience": "a"},
    {"issuer": "i", "audience": "a", "jwks_uri": "ftp://idp/jwks"},
    {"issuer": "i", "audience": "a", "keys": "not-a-list"},
    {"issuer": "i", "audience": "a", "jwks_uri": "https://idp/jwks", "algorithms": ["none"]},
    {"issuer": "i", "audience": "a", "jwks_uri": "https://idp/jwks", "algorithms": "RS256"},
    {"issuer": "i", "audience": "a", "jwks_uri": "https://idp/jwks", "algorithms": ["HS256"]},
    {"issuer": "i", "audience": "a", "jwks_uri": "https://idp/jwks", "leeway": "30"},
    {"issuer": "i", "audience": [""], "jwks_uri": "https://idp/jwks"},
])
def test_malformed_issuer_entries(settings: Any, entry: Any) -> None:
    settings.APIAUTH_JWT_ISSUERS = [entry]
    assert "apiauth.E041" in ids()


def test_duplicate_issuer(settings: Any) -> None:
    entry = {"issuer": "i", "audience": "a", "jwks_uri": "https://idp/jwks"}
    settings.APIAUTH_JWT_ISSUERS = [entry, dict(entry)]
    assert ids() == ["apiauth.E041"]


def test_unknown_denylist_cache(settings: Any) -> None:
    settings.APIAUTH_JWT_DENYLIST_CACHE = "nope"
    assert ids() == ["apiauth.E042"]


def test_jwt_generator_needs_an_opaque_refresh_generator_and_a_key(settings: Any) -> None:
    provider = dict(settings.OAUTH2_PROVIDER)
    del provider["REFRESH_TOKEN_GENERATOR"]
    provider["OIDC_RSA_PRIVATE_KEY"] = ""
    settings.OAUTH2_PROVIDER = provider
    assert sorted(ids()) == ["apiauth.E040", "apiauth.E043"]


def test_issuer_from_host_header_warning(settings: Any) -> None:
    settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "OIDC_ISS_ENDPOINT": ""}
    assert ids() == ["apiauth.W040"]
