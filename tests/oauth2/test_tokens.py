"""JWT access tokens minted by django-oauth-toolkit, their revocation and audit (test client)."""

from __future__ import annotations

import base64
import secrets
import socket
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import jwt
import pytest
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone
from oauth2_provider.models import AccessToken, get_application_model

from django_apiauth.models import AuditEvent
from django_apiauth.oauth2 import denylist, tokens

pytestmark = pytest.mark.django_db

Application = get_application_model()
TOKEN_URL = "/o/token/"
WHOAMI = "/api/whoami/"


@pytest.fixture(autouse=True)
def fresh_cache() -> Any:
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def machine(make_user: Callable[..., Any]) -> tuple[Any, str]:
    secret = secrets.token_urlsafe(24)
    app = Application.objects.create(
        name="machine", user=make_user("svc-machine"), client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS, client_secret=secret,
    )
    return app, secret


def basic(app: Any, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{app.client_id}:{secret}".encode()).decode()


def issue(client: Any, machine: tuple[Any, str], **extra: Any) -> Any:
    app, secret = machine
    data = {"grant_type": "client_credentials", "scope": "whoami:read", **extra.pop("data", {})}
    return client.post(TOKEN_URL, data, HTTP_AUTHORIZATION=basic(app, secret), **extra)


def access_token(client: Any, machine: tuple[Any, str], **extra: Any) -> str:
    response = issue(client, machine, **extra)
    assert response.status_code == 200, response.content
    return response.json()["access_token"]  # type: ignore[no-any-return]


def test_kid_is_what_the_provider_publishes(client: Any, machine: tuple[Any, str], settings: Any) -> None:
    token = access_token(client, machine)
    header = jwt.get_unverified_header(token)
    jwks = client.get("/o/.well-known/jwks.json").json()
    [published] = jwks["keys"]
    assert header == {"alg": "RS256", "typ": "at+jwt", "kid": published["kid"]}
    verified = jwt.decode(token, jwt.PyJWK(published).key, algorithms=["RS256"],
                          audience=settings.APIAUTH_OAUTH2_JWT_AUDIENCE,
                          issuer=settings.OAUTH2_PROVIDER["OIDC_ISS_ENDPOINT"])
    assert verified["client_id"] == machine[0].client_id
    assert len(token) < 2048  # DOT keeps it in a text column and looks it up by its 64-char checksum


def test_whoami_with_the_local_issuer(client: Any, machine: tuple[Any, str]) -> None:
    token = access_token(client, machine)
    response = client.get(WHOAMI, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200, response.content
    assert response.json()["user"] == "svc-machine"
    assert response.json()["scheme"] == "jwt"


def test_resource_indicator_becomes_the_audience(client: Any, machine: tuple[Any, str]) -> None:
    token = access_token(client, machine, data={"resource": "https://reports.example.test/"})
    assert jwt.decode(token, options={"verify_signature": False})["aud"] == "https://reports.example.test/"
    # Meant for another service: refused here.
    assert client.get(WHOAMI, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401


def test_application_owner_change_is_seen_at_once(client: Any, machine: tuple[Any, str],
                                                  make_user: Callable[..., Any]) -> None:
    token = access_token(client, machine)
    assert client.get(WHOAMI, HTTP_AUTHORIZATION=f"Bearer {token}").json()["user"] == "svc-machine"
    app = machine[0]
    app.user = make_user("svc-new-owner")
    app.save()
    assert client.get(WHOAMI, HTTP_AUTHORIZATION=f"Bearer {token}").json()["user"] == "svc-new-owner"
    app.user.is_active = False
    app.user.save()
    assert client.get(WHOAMI, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401


@pytest.mark.parametrize("redacted", [True, False])
def test_deleting_the_row_denies_the_jti(client: Any, machine: tuple[Any, str], settings: Any,
                                         redacted: bool) -> None:
    settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": redacted}
    token = access_token(client, machine)
    claims = jwt.decode(token, options={"verify_signature": False})
    row = AccessToken.objects.get()
    assert (row.token == "") is redacted
    if not redacted:
        cache.delete(tokens.issued_key(token))  # the row itself is enough
    row.delete()
    assert denylist.is_denied(claims["iss"], claims["jti"])
    event = AuditEvent.objects.get(event="oauth2.token_revoked")
    assert (event.outcome, event.reason, event.credential_id, event.user.username) == (
        "success", "revoked", claims["jti"], "svc-machine")
    assert event.detail == {"client_id": machine[0].client_id, "iss": claims["iss"]}


def test_admin_revoke_action_denies_the_jti(client: Any, machine: tuple[Any, str]) -> None:
    """DOT's shared revoke path (admin action, AuthorizedTokenDeleteView, /revoke_token/)."""
    from oauth2_provider.models import revoke_access_token

    token = access_token(client, machine)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert client.get(WHOAMI, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    revoke_access_token(AccessToken.objects.get())
    assert denylist.is_denied(claims["iss"], claims["jti"])
    assert client.get(WHOAMI, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401


def test_opaque_row_deleted_with_the_cache_down(machine: tuple[Any, str], cache_down: Any) -> None:
    """A stored opaque token says what it is: deleting it needs no cache."""
    AccessToken.objects.create(application=machine[0], token="opaque-token-value",
                               expires=timezone.now() + timedelta(hours=1))
    AccessToken.objects.all().delete()
    assert not AccessToken.objects.exists()


def test_expired_or_opaque_rows_are_not_deny_listed(machine: tuple[Any, str]) -> None:
    app = machine[0]
    now = int(time.time())
    old = jwt.encode({"iss": "i", "jti": "old", "exp": now - 3600}, "k" * 32, algorithm="HS256")
    AccessToken.objects.create(application=app, token=old, expires=timezone.now() - timedelta(hours=1))
    AccessToken.objects.create(application=app, token="opaque-token-value",
                               expires=timezone.now() + timedelta(hours=1))
    AccessToken.objects.all().delete()
    assert not denylist.is_denied("i", "old")
    assert not AuditEvent.objects.filter(event="oauth2.token_revoked").exists()


@pytest.fixture
def cache_down(settings: Any) -> Any:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.CACHES = {**settings.CACHES, "down": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": f"redis://127.0.0.1:{port}/0",
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
    }}
    settings.APIAUTH_JWT_DENYLIST_CACHE = "down"
    return settings


def test_token_endpoint_with_the_shared_cache_down_is_503(client: Any, machine: tuple[Any, str],
                                                          cache_down: Any) -> None:
    response = issue(client, machine)
    assert response.status_code == 503
    assert response.json() == {"error": "temporarily_unavailable"}
    assert not AccessToken.objects.exists()
    event = AuditEvent.objects.get(event="oauth2.token")
    assert (event.outcome, event.reason) == ("failure", "service_unavailable")


def test_revocation_with_the_shared_cache_down_is_503(client: Any, machine: tuple[Any, str],
                                                      settings: Any) -> None:
    token = access_token(client, machine)
    app, secret = machine
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.CACHES = {**settings.CACHES, "down": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": f"redis://127.0.0.1:{port}/0",
    }}
    settings.APIAUTH_JWT_DENYLIST_CACHE = "down"
    with transaction.atomic():  # as autocommit would: the failed delete rolls back alone
        response = client.post("/o/revoke_token/", {"token": token}, HTTP_AUTHORIZATION=basic(app, secret))
    assert response.status_code == 503
    assert response.json() == {"error": "temporarily_unavailable"}
    assert AccessToken.objects.exists()  # rolled back: the token is not silently half-revoked


def test_certificate_from_an_untrusted_peer_binds_nothing(client: Any, machine: tuple[Any, str],
                                                          settings: Any) -> None:
    settings.APIAUTH_TRUSTED_PROXIES = ["10.9.9.9/32"]
    token = access_token(client, machine, HTTP_X_SSL_CLIENT_CERT="-----BEGIN%20CERTIFICATE-----")
    assert "cnf" not in jwt.decode(token, options={"verify_signature": False})


def test_refresh_generator_is_opaque(settings: Any) -> None:
    assert settings.OAUTH2_PROVIDER["REFRESH_TOKEN_GENERATOR"].endswith("random_token_generator")
