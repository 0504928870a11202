"""Opaque django-oauth-toolkit access tokens through our OAuth2Authentication.

Real DOT models (Application, AccessToken) in the test database, real DRF
views (tests/schemes/oauth2_urls.py), DOT's own validation underneath.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import DatabaseError
from django.utils import timezone
from oauth2_provider.models import AccessToken, Application
from rest_framework.test import APIRequestFactory

from django_apiauth.models import AuditEvent
from django_apiauth.schemes.oauth2 import OAuth2Authentication, OAuth2Principal

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.schemes.oauth2_urls")]

URL = "/oauth2/whoami/"
ECHO = "/oauth2/echo/"
INVALID_TOKEN = 'Bearer realm="api", error="invalid_token"'
INVALID_REQUEST = 'Bearer realm="api", error="invalid_request"'


@pytest.fixture
def alice(make_user: Callable[..., Any]) -> Any:
    return make_user("alice")


@pytest.fixture
def service_user(make_user: Callable[..., Any]) -> Any:
    return make_user("svc-billing")


@pytest.fixture
def application(service_user: Any) -> Application:
    return Application.objects.create(
        name="billing", user=service_user, client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
    )


@pytest.fixture
def make_token(application: Application) -> Callable[..., tuple[AccessToken, str]]:
    """An access token as DOT issues it (random string; the checksum is DOT's)."""

    def make(user: Any = None, scope: str = "read write", expires_in: int = 3600,
             token: str | None = None, app: Application | None = None, **fields: Any,
             ) -> tuple[AccessToken, str]:
        token = token or secrets.token_urlsafe(24)
        access_token = AccessToken.objects.create(
            user=user, application=app or application, token=token, scope=scope,
            expires=timezone.now() + timedelta(seconds=expires_in), **fields,
        )
        return access_token, token

    return make


def bearer(token: str, word: str = "Bearer") -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"{word} {token}"}


def assert_refused(response: Any, audit_rows: Callable[..., list[Any]], reason: str, *,
                   challenge: str = INVALID_TOKEN, code: str = "invalid_token",
                   credential_id: str = "") -> None:
    assert response.status_code == 401, response.content
    assert response["WWW-Authenticate"] == challenge
    assert response.json()["code"] == code
    rows = audit_rows()
    assert [(r.scheme, r.outcome, r.reason, r.credential_id) for r in rows] == [
        ("oauth2", "failure", reason, credential_id)]


def assert_no_token_in_audit(token: str) -> None:
    for row in AuditEvent.objects.all():
        assert token not in json.dumps([row.credential_id, row.detail, row.path, row.user_agent])


# -- success ---------------------------------------------------------------------------


def test_success(client: Any, alice: Any, make_token: Callable[..., Any],
                 audit_rows: Callable[..., list[Any]]) -> None:
    access_token, token = make_token(user=alice)
    response = client.get(URL, **bearer(token))
    assert response.status_code == 200, response.content
    assert response.json() == {"user": "alice", "scheme": "oauth2",
                               "credential_id": str(access_token.pk), "scopes": ["read", "write"]}
    [row] = audit_rows()
    assert (row.scheme, row.outcome, row.reason, row.user_id, row.credential_id) == (
        "oauth2", "success", "ok", alice.pk, str(access_token.pk))
    assert_no_token_in_audit(token)


def test_scheme_word_is_case_insensitive(client: Any, alice: Any,
                                         make_token: Callable[..., Any]) -> None:
    _, token = make_token(user=alice)
    assert client.get(URL, **bearer(token, "bearer")).status_code == 200
    assert client.get(URL, **bearer(token, "BEARER")).status_code == 200


def test_principal(alice: Any, make_token: Callable[..., Any], application: Application) -> None:
    access_token, token = make_token(user=alice, scope="read admin")
    request = APIRequestFactory().get(URL, **bearer(token))
    user, principal = OAuth2Authentication().authenticate(request)  # type: ignore[misc]
    assert user == alice
    assert isinstance(principal, OAuth2Principal)
    assert principal.credential == access_token
    assert principal.credential_id == str(access_token.pk)
    assert principal.scopes == frozenset({"read", "admin"})
    assert principal.claims["client_id"] == application.client_id
    assert principal.claims["end_user"] is True
    assert token not in json.dumps(principal.claims)
    # DOT's permission protocol
    assert principal.scope == "admin read"
    assert principal.is_valid(["read"]) and not principal.is_valid(["write"])


def test_client_credentials_token_is_the_applications_service_user(
        client: Any, service_user: Any, make_token: Callable[..., Any],
        audit_rows: Callable[..., list[Any]]) -> None:
    _, token = make_token(user=None)
    response = client.get(URL, **bearer(token))
    assert response.status_code == 200, response.content
    assert response.json()["user"] == "svc-billing"
    assert audit_rows()[0].user_id == service_user.pk


def test_jwt_shaped_dot_token_is_looked_up_in_dots_database(
        client: Any, alice: Any, make_token: Callable[..., Any]) -> None:
    """With a JWT access-token generator, DOT's tokens are JWT strings: still DB tokens here."""
    segment = base64.urlsafe_b64encode(b'{"alg":"RS256","typ":"at+jwt"}').rstrip(b"=").decode()
    jwt_like = f"{segment}.{segment}.{secrets.token_urlsafe(32)}"
    access_token, token = make_token(user=alice, token=jwt_like)
    for url in (URL, "/oauth2/then-jwt/"):
        response = client.get(url, **bearer(token))
        assert response.status_code == 200, response.content
        assert response.json()["credential_id"] == str(access_token.pk)


def test_form_body_without_token_still_reaches_the_view(client: Any, alice: Any,
                                                        make_token: Callable[..., Any]) -> None:
    _, token = make_token(user=alice)
    response = client.post(ECHO, {"note": "hello"}, **bearer(token))  # multipart
    assert response.status_code == 200, response.content
    assert response.json() == {"note": "hello"}
    response = client.post(ECHO, "note=hi", content_type="application/x-www-form-urlencoded",
                           **bearer(token))
    assert response.json() == {"note": "hi"}


def test_json_body_field_named_access_token_is_data(client: Any, alice: Any,
                                                    make_token: Callable[..., Any]) -> None:
    """Only a form-encoded body transports a token (RFC 6750 §2.2); JSON is application data."""
    _, token = make_token(user=alice)
    response = client.post(ECHO, {"access_token": "just data"}, format="json", **bearer(token))
    assert response.status_code == 200, response.content
    assert response.json() == {"access_token": "just data"}


# -- scopes ----------------------------------------------------------------------------


def test_insufficient_scope_is_403_naming_the_scope(client: Any, alice: Any,
                                                    make_token: Callable[..., Any]) -> None:
    access_token, token = make_token(user=alice, scope="write")
    response = client.get(URL, **bearer(token))
    assert response.status_code == 403
    assert response["WWW-Authenticate"] == (
        'Bearer realm="api", error="insufficient_scope", scope="read"')
    body = response.json()
    assert (body["code"], body["required_scopes"]) == ("insufficient_scope", ["read"])
    row = AuditEvent.objects.get(event="authorize")
    assert (row.scheme, row.reason, row.credential_id, row.user_id) == (
        "oauth2", "insufficient_scope", str(access_token.pk), alice.pk)
    assert row.detail["missing"] == ["read"]


@pytest.mark.parametrize("url", ["/oauth2/dot-permission/", "/oauth2/dot-authenticated-or-scope/"])
def test_dot_permission_classes_check_the_tokens_scopes(client: Any, alice: Any, url: str,
                                                        make_token: Callable[..., Any]) -> None:
    _, good = make_token(user=alice, scope="read")
    _, bad = make_token(user=alice, scope="write")
    assert client.get(url, **bearer(good)).status_code == 200
    assert client.get(url, **bearer(bad)).status_code == 403


# -- refusals --------------------------------------------------------------------------


def test_no_token_is_not_ours(client: Any, audit_rows: Callable[..., list[Any]]) -> None:
    response = client.get(URL)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'  # RFC 6750 §3.1: no error code
    assert audit_rows() == []


def test_other_scheme_is_not_ours(client: Any, audit_rows: Callable[..., list[Any]]) -> None:
    response = client.get(URL, HTTP_AUTHORIZATION="Basic YWxpY2U6cHc=")
    assert response.status_code == 401
    assert audit_rows() == []


def test_unknown_token(client: Any, audit_rows: Callable[..., list[Any]]) -> None:
    response = client.get(URL, **bearer("never-issued-token-0123456789"))
    assert_refused(response, audit_rows, "unknown_credential")
    assert response.json()["detail"] == "The access token is invalid, expired or revoked."


def test_revoked_token(client: Any, alice: Any, make_token: Callable[..., Any],
                       audit_rows: Callable[..., list[Any]]) -> None:
    access_token, token = make_token(user=alice)
    access_token.revoke()  # DOT deletes revoked access tokens
    assert_refused(client.get(URL, **bearer(token)), audit_rows, "unknown_credential")


def test_expired_token(client: Any, alice: Any, make_token: Callable[..., Any],
                       audit_rows: Callable[..., list[Any]]) -> None:
    access_token, token = make_token(user=alice, expires_in=-1)
    response = client.get(URL, **bearer(token))
    assert_refused(response, audit_rows, "expired", credential_id=str(access_token.pk))
    assert audit_rows()[0].user_id == alice.pk
    assert_no_token_in_audit(token)


def test_inactive_user(client: Any, make_user: Callable[..., Any], make_token: Callable[..., Any],
                       audit_rows: Callable[..., list[Any]]) -> None:
    bob = make_user("bob", is_active=False)
    access_token, token = make_token(user=bob)
    response = client.get(URL, **bearer(token))
    assert_refused(response, audit_rows, "inactive_owner", credential_id=str(access_token.pk))
    assert audit_rows()[0].user_id == bob.pk


def test_inactive_service_user(client: Any, service_user: Any, make_token: Callable[..., Any],
                               audit_rows: Callable[..., list[Any]]) -> None:
    service_user.is_active = False
    service_user.save()
    access_token, token = make_token(user=None)
    assert_refused(client.get(URL, **bearer(token)), audit_rows, "inactive_owner",
                   credential_id=str(access_token.pk))


def test_client_credentials_token_of_an_application_without_user(
        client: Any, make_token: Callable[..., Any], audit_rows: Callable[..., list[Any]]) -> None:
    orphan = Application.objects.create(
        name="orphan", user=None, client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
    )
    access_token, token = make_token(user=None, app=orphan)
    assert_refused(client.get(URL, **bearer(token)), audit_rows, "unknown_credential",
                   credential_id=str(access_token.pk))


def test_resource_restricted_token_used_elsewhere(settings: Any, client: Any, alice: Any,
                                                  make_token: Callable[..., Any],
                                                  audit_rows: Callable[..., list[Any]]) -> None:
    """RFC 8707: DOT refuses a token bound to another resource; we say why."""
    access_token, token = make_token(user=alice, resource=["https://other.example.test/api"])
    response = client.get(URL, **bearer(token))
    assert_refused(response, audit_rows, "bad_audience", credential_id=str(access_token.pk))


@pytest.mark.parametrize("with_header", [False, True])
def test_token_in_query_string_is_refused(client: Any, alice: Any, with_header: bool,
                                          make_token: Callable[..., Any],
                                          audit_rows: Callable[..., list[Any]]) -> None:
    _, token = make_token(user=alice)
    response = client.get(f"{URL}?access_token={token}", **(bearer(token) if with_header else {}))
    assert_refused(response, audit_rows, "credential_in_query", challenge=INVALID_REQUEST,
                   code="credential_in_query")
    assert_no_token_in_audit(token)


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
@pytest.mark.parametrize("with_header", [False, True])
def test_token_in_form_body_is_refused(client: Any, alice: Any, encoding: str, with_header: bool,
                                       make_token: Callable[..., Any],
                                       audit_rows: Callable[..., list[Any]]) -> None:
    _, token = make_token(user=alice)
    headers = bearer(token) if with_header else {}
    if encoding == "urlencoded":
        response = client.post(ECHO, f"access_token={token}",
                               content_type="application/x-www-form-urlencoded", **headers)
    else:
        response = client.post(ECHO, {"access_token": token}, **headers)
    assert_refused(response, audit_rows, "credential_in_body", challenge=INVALID_REQUEST,
                   code="credential_in_body")
    assert_no_token_in_audit(token)


@pytest.mark.parametrize("value", [
    "",  # "Bearer " with nothing after it
    "two words",
    "tok\u00e9n",
    "tok=en",  # "=" only as padding at the end
    "a" * 8193,  # longer than max_token_length: refused before hashing
    '"quoted"',
])
def test_malformed_token(client: Any, value: str, audit_rows: Callable[..., list[Any]]) -> None:
    response = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {value}")
    assert_refused(response, audit_rows, "malformed", code="malformed_token")


def test_unknown_jwt_is_left_to_a_later_jwt_class(client: Any,
                                                  audit_rows: Callable[..., list[Any]]) -> None:
    header = base64.urlsafe_b64encode(b'{"alg":"RS256","typ":"at+jwt"}').rstrip(b"=").decode()
    payload = base64.urlsafe_b64encode(b'{"iss":"https://unknown.example"}').rstrip(b"=").decode()
    token = f"{header}.{payload}.c2ln"
    response = client.get("/oauth2/then-jwt/", **bearer(token))
    assert response.status_code == 401
    assert [(r.scheme, r.reason) for r in audit_rows()] == [("jwt", "untrusted_issuer")]
    # Without a JWT class after it, our class refuses it itself.
    AuditEvent.objects.all().delete()
    assert_refused(client.get(URL, **bearer(token)), audit_rows, "unknown_credential")


def test_database_down_is_503(client: Any, alice: Any, make_token: Callable[..., Any],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    _, token = make_token(user=alice)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise DatabaseError("injected")

    monkeypatch.setattr(OAuth2Authentication, "validate", broken)
    response = client.get(URL, **bearer(token))
    assert response.status_code == 503


def test_validator_bug_is_a_401_not_a_500(client: Any, alice: Any, make_token: Callable[..., Any],
                                          monkeypatch: pytest.MonkeyPatch,
                                          audit_rows: Callable[..., list[Any]]) -> None:
    _, token = make_token(user=alice)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("injected")

    monkeypatch.setattr(OAuth2Authentication, "validate", broken)
    assert_refused(client.get(URL, **bearer(token)), audit_rows, "internal_error")


def test_openid_connect_id_token_is_not_an_access_token(
        client: Any, alice: Any, make_token: Callable[..., Any],
        audit_rows: Callable[..., list[Any]]) -> None:
    """With OIDC on, DOT's own class routes ``ey…`` tokens to its ID-token check and
    accepts an ID token (meant for the client) as an access token. Ours looks every
    bearer token up among DOT's access tokens only."""
    from jwcrypto import jwt as jwcrypto_jwt
    from oauth2_provider.models import IDToken

    app = Application.objects.create(
        name="web", user=alice, client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        algorithm=Application.RS256_ALGORITHM, redirect_uris="https://rp.example.test/cb",
    )
    id_token = IDToken.objects.create(user=alice, application=app, scope="openid read",
                                      expires=timezone.now() + timedelta(hours=1))
    key = app.jwk_key
    signed = jwcrypto_jwt.JWT(
        header={"alg": "RS256", "typ": "JWT", "kid": key.thumbprint()},
        claims={"aud": app.client_id, "jti": str(id_token.jti), "sub": str(alice.pk),
                "iss": "https://op.example.test", "exp": int(id_token.expires.timestamp())},
    )
    signed.make_signed_token(key)
    token = signed.serialize()
    assert client.get("/oauth2/dot-own-class/", **bearer(token)).status_code == 200  # DOT: accepted
    assert_refused(client.get(URL, **bearer(token)), audit_rows, "unknown_credential")


@pytest.mark.filterwarnings("ignore:Presenting an OAuth 2.0 access token:DeprecationWarning")
def test_dot_own_class_takes_tokens_from_the_url_and_the_body(client: Any, alice: Any, settings: Any,
                                                              make_token: Callable[..., Any]) -> None:
    """What our class refuses, DOT's accepts (defaults): the comparison in docs/oauth2.md."""
    # DOT's default; the example project turns this RFC 9700 gate on.
    settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER,
                                "COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT": False}
    _, token = make_token(user=alice, scope="read")
    assert client.get(f"/oauth2/dot-own-class/?access_token={token}").status_code == 200
    response = client.post("/oauth2/dot-own-class/", f"access_token={token}",
                           content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200
