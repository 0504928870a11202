"""The OpenID Connect RP against a real HTTP OP whose answers each test edits.

Every bad input of issue 6 (OIDC) is here and must be refused: the right
status (400 broken flow, 403 failed validation, 502 provider unreachable), no
session, one audited failure with its reason code.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest
import requests
from django.contrib.auth import SESSION_KEY, get_user_model
from django.test import Client

from django_apiauth.models import AuditEvent, ExternalIdentity
from django_apiauth.sso.oidc.models import OidcProvider

from .conftest import CLIENT_ID, CLIENT_SECRET, TestOP, rsa_jwk

pytestmark = pytest.mark.django_db
User = get_user_model()


# -- driving the flow ------------------------------------------------------------------


def start(client: Client, provider: OidcProvider, next_url: str | None = None) -> str:
    """Our login view; returns the OP authorization URL it redirects to."""
    response = client.get(provider.login_url(), {"next": next_url} if next_url is not None else {})
    assert response.status_code == 302, response.content[:500]
    return response["Location"]


def through_op(authorize_url: str) -> str:
    """The browser at the OP (real HTTP): returns the callback path + query it is sent back to."""
    response = requests.get(authorize_url, allow_redirects=False, timeout=5)
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    return f"{location.path}?{location.query}"


def sign_in(client: Client, provider: OidcProvider, next_url: str | None = None) -> Any:
    return client.get(through_op(start(client, provider, next_url)))


def assert_refused(client: Client, response: Any, status: int, reason: str, *,
                   prior_successes: int = 0) -> AuditEvent:
    assert response.status_code == status, response.content[:500]
    assert SESSION_KEY not in client.session
    assert AuditEvent.objects.filter(event="sso_login", outcome="success").count() == prior_successes
    row = AuditEvent.objects.filter(event="sso_login").latest("id")
    assert (row.outcome, row.reason, row.scheme) == ("failure", reason, "oidc")
    assert row.user_id is None
    return row


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def with_param(path: str, **params: str) -> str:
    parts = urlsplit(path)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(params)
    return f"{parts.path}?{urlencode(query)}"


# -- the good path -----------------------------------------------------------------


def test_sign_in_creates_the_user_just_in_time_and_logs_in(client: Client, op: TestOP,
                                                            provider: OidcProvider) -> None:
    authorize = start(client, provider, "/admin/")
    query = {k: v[0] for k, v in parse_qs(urlsplit(authorize).query).items()}
    assert authorize.startswith(f"{op.issuer}/authorize?")
    assert query["response_type"] == "code"
    assert query["client_id"] == CLIENT_ID
    assert query["redirect_uri"] == "http://testserver/auth/oidc/acme/callback/"
    assert query["scope"].split() == ["openid", "email", "profile"]
    assert query["code_challenge_method"] == "S256"
    assert len(query["state"]) >= 43 and len(query["nonce"]) >= 43
    assert "code_verifier" not in query

    response = client.get(through_op(authorize))

    assert response.status_code == 302
    assert response["Location"] == "/admin/"
    user = User.objects.get(username="alice")
    assert int(client.session[SESSION_KEY]) == user.pk
    assert user.email == "alice@example.test"
    assert user.first_name == "Alice"  # from UserInfo
    assert not user.has_usable_password()
    assert ExternalIdentity.objects.get(issuer=op.issuer, subject="alice-sub").user == user
    row = AuditEvent.objects.get(event="sso_login")
    assert (row.outcome, row.reason, row.scheme, row.user_id) == ("success", "ok", "oidc", user.pk)
    # client_secret_basic, PKCE verified by the OP, the state consumed
    token_request = op.token_requests[-1]
    assert token_request["authorization"].startswith("Basic ")
    assert "client_secret" not in token_request["form"]
    assert not client.session.get("_apiauth_oidc_pending")


def test_client_secret_post_when_the_provider_supports_only_post(client: Client, op: TestOP,
                                                                 provider: OidcProvider) -> None:
    op.discovery_overrides["token_endpoint_auth_methods_supported"] = ["client_secret_post"]
    assert sign_in(client, provider).status_code == 302
    request = op.token_requests[-1]
    assert request["authorization"] is None
    assert request["form"]["client_secret"] == CLIENT_SECRET


def test_authorization_endpoint_query_is_kept(client: Client, op: TestOP, provider: OidcProvider) -> None:
    """Core 1.0 §3.1.2.1: an endpoint URL with a query (e.g. a B2C policy) keeps it."""
    op.discovery_overrides["authorization_endpoint"] = f"{op.issuer}/authorize?p=B2C_1_staff&state=bogus"
    authorize = start(client, provider)
    query = parse_qs(urlsplit(authorize).query)
    assert query["p"] == ["B2C_1_staff"]
    assert len(query["state"]) == 1 and query["state"] != ["bogus"]
    assert client.get(through_op(authorize)).status_code == 302


def test_hs256_is_accepted_only_when_configured(client: Client, op: TestOP,
                                                make_provider: Callable[..., OidcProvider]) -> None:
    provider = make_provider(algorithms="HS256")
    op.sign = lambda claims, header: jwt.encode(claims, CLIENT_SECRET, algorithm="HS256")
    assert sign_in(client, provider).status_code == 302
    assert SESSION_KEY in client.session


def test_existing_identity_signs_in_without_jit(client: Client, op: TestOP,
                                                make_provider: Callable[..., OidcProvider],
                                                make_user: Callable[..., Any]) -> None:
    provider = make_provider(jit_enabled=False, attribute_mapping={})
    staff = make_user("bob", is_staff=True)
    ExternalIdentity.objects.create(issuer=op.issuer, subject="alice-sub", user=staff)
    assert sign_in(client, provider).status_code == 302
    assert int(client.session[SESSION_KEY]) == staff.pk


def test_unknown_identity_without_jit_is_refused(client: Client, op: TestOP,
                                                 make_provider: Callable[..., OidcProvider]) -> None:
    provider = make_provider(jit_enabled=False)
    assert_refused(client, sign_in(client, provider), 403, "unknown_identity")
    assert not User.objects.exists()


# -- ID token manipulation ------------------------------------------------------------


def _at_hash_of(value: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(value.encode()).digest()[:16]).decode().rstrip("=")


def _unsigned(claims: dict[str, Any], header: dict[str, Any]) -> str:
    def b64(obj: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."


def _hs256_with_client_secret(claims: dict[str, Any], header: dict[str, Any]) -> str:
    return jwt.encode(claims, CLIENT_SECRET, algorithm="HS256", headers={"kid": "k1"})


def _edited_after_signing(key: Any) -> Callable[[dict[str, Any], dict[str, Any]], str]:
    def sign(claims: dict[str, Any], header: dict[str, Any]) -> str:
        token = jwt.encode(claims, key, algorithm="RS256", headers=header)
        head, _payload, signature = token.split(".")
        edited = base64.urlsafe_b64encode(
            json.dumps({**claims, "sub": "admin-sub"}).encode()).decode().rstrip("=")
        return f"{head}.{edited}.{signature}"

    return sign


NOW = int(time.time())

ID_TOKEN_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("wrong iss", {"claims": {"iss": "https://evil.example"}}, "untrusted_issuer"),
    ("iss with trailing slash", {"claims": {"iss": "{issuer}/"}}, "untrusted_issuer"),
    ("wrong aud", {"claims": {"aud": "someone-else"}}, "bad_audience"),
    ("several aud, no azp", {"claims": {"aud": [CLIENT_ID, "other"]}}, "bad_audience"),
    ("several aud, azp of another", {"claims": {"aud": [CLIENT_ID, "other"], "azp": "other"}},
     "bad_audience"),
    ("azp of another", {"claims": {"azp": "other"}}, "bad_audience"),
    ("missing sub", {"drop": ("sub",)}, "malformed"),
    ("empty sub", {"claims": {"sub": ""}}, "malformed"),
    ("sub not a string", {"claims": {"sub": 42}}, "malformed"),
    ("missing iat", {"drop": ("iat",)}, "malformed"),
    ("iat not a number", {"claims": {"iat": "yesterday"}}, "malformed"),
    ("missing exp", {"drop": ("exp",)}, "malformed"),
    ("missing aud", {"drop": ("aud",)}, "malformed"),
    ("missing iss", {"drop": ("iss",)}, "malformed"),
    ("expired", {"claims": {"exp": NOW - 3600, "iat": NOW - 4000}}, "expired"),
    ("iat in the future", {"claims": {"iat": NOW + 3600, "exp": NOW + 7200}}, "not_yet_valid"),
    ("iat too old", {"claims": {"iat": NOW - 86400, "exp": NOW + 3600}}, "expired"),
    ("wrong nonce", {"claims": {"nonce": "attacker-nonce"}}, "nonce_mismatch"),
    ("missing nonce", {"drop": ("nonce",)}, "nonce_mismatch"),
    ("signed by another key", {"sign": "attacker"}, "bad_signature"),
    ("edited after signing", {"sign": "edited"}, "bad_signature"),
    ("alg none", {"sign": "none"}, "disallowed_algorithm"),
    ("HS256 with the client secret", {"sign": "hs256"}, "disallowed_algorithm"),
    ("RS512 not in the allow-list", {"sign": "rs512"}, "disallowed_algorithm"),
    ("unknown kid", {"header": {"kid": "nope"}}, "bad_signature"),
    ("jku names the attacker's keys", {"sign": "jku"}, "bad_signature"),
    ("crit header", {"header": {"kid": "k1", "crit": ["exp"]}}, "malformed"),
    ("wrong at_hash", {"claims": {"at_hash": _at_hash_of("another token")}}, "bad_signature"),
    ("not a JWS", {"sign": "garbage"}, "malformed"),
]


@pytest.mark.parametrize(("case", "edit", "reason"), ID_TOKEN_CASES, ids=[c[0] for c in ID_TOKEN_CASES])
def test_bad_id_token_is_refused(client: Client, op: TestOP, provider: OidcProvider, op_key: Any,
                                 attacker_key: Any, case: str, edit: dict[str, Any], reason: str) -> None:
    op.claims = {k: (v.format(issuer=op.issuer) if isinstance(v, str) else v)
                 for k, v in edit.get("claims", {}).items()}
    op.drop = edit.get("drop", ())
    op.header = edit.get("header", op.header)
    signer = {
        "attacker": lambda c, h: jwt.encode(c, attacker_key, algorithm="RS256", headers=h),
        "edited": _edited_after_signing(op_key),
        "none": _unsigned,
        "hs256": _hs256_with_client_secret,
        "rs512": lambda c, h: jwt.encode(c, op_key, algorithm="RS512", headers=h),
        "jku": lambda c, h: jwt.encode(c, attacker_key, algorithm="RS256",
                                       headers={"kid": "k1", "jku": f"{op.issuer}/evil-jwks"}),
        "garbage": lambda c, h: "not-a-token",
    }
    if "sign" in edit:
        op.sign = signer[edit["sign"]]
    row = assert_refused(client, sign_in(client, provider), 403, reason)
    assert row.detail["provider"] == "acme"
    assert not User.objects.exists()
    assert op.hits.get("/evil-jwks", 0) == 0


def test_key_rotation_refetches_once_on_unknown_kid(client: Client, op: TestOP, provider: OidcProvider,
                                                    attacker_key: Any, settings: Any) -> None:
    settings.APIAUTH_JWKS_REFETCH_COOLDOWN = 3600
    assert sign_in(client, provider).status_code == 302  # JWKS k1 now cached
    assert op.hits["/jwks"] == 1
    client.logout()
    # The OP rotates to a new key: the first token with its kid triggers one refetch.
    op.jwks = [rsa_jwk(attacker_key, "k2")]
    op.header = {"kid": "k2"}
    op.sign = lambda c, h: jwt.encode(c, attacker_key, algorithm="RS256", headers=h)
    assert sign_in(client, provider).status_code == 302
    assert op.hits["/jwks"] == 2
    client.logout()
    # Another unknown kid within the cool-down: refused without hammering the OP.
    op.header = {"kid": "k3"}
    assert_refused(client, sign_in(client, provider), 403, "bad_signature", prior_successes=2)
    assert op.hits["/jwks"] == 2
    assert op.hits["/.well-known/openid-configuration"] == 1  # discovery cached too


# -- state, nonce and code binding --------------------------------------------------------


def test_state_missing_is_refused(client: Client, op: TestOP, provider: OidcProvider) -> None:
    callback = through_op(start(client, provider))
    parts = urlsplit(callback)
    code = parse_qs(parts.query)["code"][0]
    response = client.get(parts.path, {"code": code})
    assert_refused(client, response, 400, "state_mismatch")


def test_unknown_state_is_refused(client: Client, op: TestOP, provider: OidcProvider) -> None:
    callback = through_op(start(client, provider))
    response = client.get(with_param(callback, state="forged-state-value"))
    assert_refused(client, response, 400, "state_mismatch")


def test_state_of_another_browser_is_refused(client: Client, op: TestOP, provider: OidcProvider) -> None:
    """Login CSRF: a victim's browser given the attacker's callback URL."""
    callback = through_op(start(client, provider))
    victim = Client()
    assert_refused(victim, victim.get(callback), 400, "state_mismatch")


def test_replayed_callback_is_refused(client: Client, op: TestOP, provider: OidcProvider) -> None:
    callback = through_op(start(client, provider))
    assert client.get(callback).status_code == 302
    client.logout()
    assert_refused(client, client.get(callback), 400, "state_mismatch", prior_successes=1)


def test_replayed_state_with_a_restored_session_is_refused(client: Client, op: TestOP,
                                                           provider: OidcProvider) -> None:
    """A copy of the session (e.g. a cookie-based session) still cannot use a state twice."""
    callback = through_op(start(client, provider))
    pending = dict(client.session["_apiauth_oidc_pending"])
    assert client.get(callback).status_code == 302
    client.logout()
    session = client.session
    session["_apiauth_oidc_pending"] = pending
    session.save()
    assert_refused(client, client.get(callback), 400, "replayed", prior_successes=1)


def test_expired_state_is_refused(client: Client, op: TestOP, provider: OidcProvider, settings: Any) -> None:
    callback = through_op(start(client, provider))
    settings.APIAUTH_OIDC_STATE_MAX_AGE = -1
    assert_refused(client, client.get(callback), 400, "state_mismatch")


def test_state_of_provider_b_at_provider_a_is_refused(client: Client, op: TestOP,
                                                      make_provider: Callable[..., OidcProvider]) -> None:
    provider_a = make_provider("a")
    provider_b = make_provider("b")
    start(client, provider_a)  # this browser has a sign-in pending at A too
    callback_b = through_op(start(client, provider_b))
    query = urlsplit(callback_b).query
    response = client.get(f"/auth/oidc/a/callback/?{query}")
    row = assert_refused(client, response, 400, "state_mismatch")
    assert row.detail["problem"] == "another provider's state"
    assert row.detail["provider"] == "a"
    assert op.token_requests == []  # the code was never redeemed


def test_code_replay_is_refused(client: Client, op: TestOP, provider: OidcProvider) -> None:
    first = through_op(start(client, provider))
    assert client.get(first).status_code == 302
    client.logout()
    old_code = parse_qs(urlsplit(first).query)["code"][0]
    second = through_op(start(client, provider))
    response = client.get(with_param(second, code=old_code))
    row = assert_refused(client, response, 403, "code_rejected", prior_successes=1)
    assert row.detail["error"] == "invalid_grant"


def test_code_from_another_sign_in_fails_pkce(client: Client, op: TestOP, provider: OidcProvider) -> None:
    """A code stolen from another browser's flow is bound to that browser's code_verifier."""
    attacker = Client()
    stolen = parse_qs(urlsplit(through_op(start(attacker, provider))).query)["code"][0]
    mine = through_op(start(client, provider))
    response = client.get(with_param(mine, code=stolen))
    assert_refused(client, response, 403, "code_rejected")


def test_missing_code_is_refused(client: Client, op: TestOP, provider: OidcProvider) -> None:
    callback = through_op(start(client, provider))
    state = parse_qs(urlsplit(callback).query)["state"][0]
    assert_refused(client, client.get(f"/auth/oidc/acme/callback/?state={state}"), 400, "malformed")


# -- provider errors, RFC 9207 and UserInfo ---------------------------------------------


def test_error_description_is_shown_escaped(client: Client, op: TestOP, provider: OidcProvider) -> None:
    callback = through_op(start(client, provider))
    state = parse_qs(urlsplit(callback).query)["state"][0]
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    response = client.get("/auth/oidc/acme/callback/",
                          {"state": state, "error": "access_denied<b>", "error_description": evil})
    row = assert_refused(client, response, 403, "provider_error")
    body = response.content.decode()
    assert "<script>alert" not in body and "<img src=x" not in body and "<b>" not in body
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in body
    assert row.detail["error"] == "access_denied<b>"
    assert op.token_requests == []


def test_rfc9207_iss_parameter_of_another_issuer_is_refused(client: Client, op: TestOP,
                                                            provider: OidcProvider) -> None:
    op.send_iss_parameter = True
    op.iss_parameter = "https://evil.example"
    assert_refused(client, sign_in(client, provider), 403, "untrusted_issuer")
    assert op.token_requests == []


def test_rfc9207_iss_parameter_required_when_advertised(client: Client, op: TestOP,
                                                        provider: OidcProvider) -> None:
    op.discovery_overrides["authorization_response_iss_parameter_supported"] = True
    assert_refused(client, sign_in(client, provider), 403, "untrusted_issuer")
    op.send_iss_parameter = True
    assert sign_in(client, provider).status_code == 302


def test_userinfo_about_another_subject_is_refused(client: Client, op: TestOP,
                                                   provider: OidcProvider) -> None:
    op.userinfo = {"sub": "mallory-sub", "email": "mallory@example.test"}
    assert_refused(client, sign_in(client, provider), 403, "subject_mismatch")


def test_userinfo_without_sub_is_refused(client: Client, op: TestOP, provider: OidcProvider) -> None:
    op.userinfo = {"email": "alice@example.test"}
    assert_refused(client, sign_in(client, provider), 403, "subject_mismatch")


# -- discovery and an unreachable provider -------------------------------------------------


def test_discovery_issuer_mismatch_is_refused(client: Client, op: TestOP, provider: OidcProvider) -> None:
    op.discovery_overrides["issuer"] = op.issuer + "/"
    response = client.get(provider.login_url())
    row = assert_refused(client, response, 403, "untrusted_issuer")
    assert row.detail["step"] == "discovery"


@pytest.mark.parametrize("endpoint", ["authorization_endpoint", "token_endpoint", "jwks_uri"])
def test_discovery_with_a_plain_http_endpoint_elsewhere_is_refused(
    client: Client, op: TestOP, provider: OidcProvider, endpoint: str
) -> None:
    op.discovery_overrides[endpoint] = "http://op.example.com/x"
    assert_refused(client, client.get(provider.login_url()), 502, "provider_unreachable")


def test_discovery_unreachable_is_502(client: Client, db: Any,
                                      make_provider: Callable[..., OidcProvider]) -> None:
    provider = make_provider(issuer=f"http://127.0.0.1:{closed_port()}")
    row = assert_refused(client, client.get(provider.login_url()), 502, "provider_unreachable")
    assert row.detail["step"] == "discovery"


@pytest.mark.parametrize("answer", ["error status", "redirect", "oversized", "not JSON object"])
def test_unusable_discovery_answer_is_502(client: Client, op: TestOP, provider: OidcProvider,
                                          answer: str) -> None:
    if answer == "error status":
        op.discovery_status = 500
    elif answer == "redirect":
        op.discovery_status = 302  # never followed: a redirect could lead anywhere
    elif answer == "oversized":
        op.discovery_overrides["padding"] = "x" * 300_000
    else:
        op.discovery_overrides["jwks_uri"] = ["not", "a", "url"]
    row = assert_refused(client, client.get(provider.login_url()), 502, "provider_unreachable")
    assert row.detail["step"] == "discovery"


@pytest.mark.parametrize("how", ["error status", "connection refused"])
def test_jwks_unreachable_is_502_without_fallback(client: Client, op: TestOP, provider: OidcProvider,
                                                  how: str) -> None:
    if how == "error status":
        op.jwks_status = 500
    else:
        op.discovery_overrides["jwks_uri"] = f"http://127.0.0.1:{closed_port()}/jwks"
    row = assert_refused(client, sign_in(client, provider), 502, "provider_unreachable")
    assert row.detail["step"] == "jwks"
    assert not User.objects.exists()


def test_token_endpoint_unreachable_is_502(client: Client, op: TestOP, provider: OidcProvider) -> None:
    op.token_status = 503
    row = assert_refused(client, sign_in(client, provider), 502, "provider_unreachable")
    assert row.detail["step"] == "token"


def test_userinfo_unreachable_is_502(client: Client, op: TestOP, provider: OidcProvider) -> None:
    op.userinfo_status = 500
    assert_refused(client, sign_in(client, provider), 502, "provider_unreachable")


def test_inactive_provider_is_refused(client: Client, op: TestOP,
                                      make_provider: Callable[..., OidcProvider]) -> None:
    provider = make_provider(active=False)
    assert_refused(client, client.get(provider.login_url()), 403, "provider_inactive")


def test_unknown_provider_is_404(client: Client, db: Any) -> None:
    assert client.get("/auth/oidc/nope/login/").status_code == 404
    assert client.get("/auth/oidc/nope/callback/?state=x&code=y").status_code == 404


def test_callback_by_post_is_refused(client: Client, op: TestOP, provider: OidcProvider) -> None:
    assert client.post("/auth/oidc/acme/callback/", {"state": "x", "code": "y"}).status_code == 405


# -- next ------------------------------------------------------------------------------

OPEN_REDIRECTS = [
    "https://evil.example/",
    "http://evil.example",
    "//evil.example/",
    "///evil.example/",
    "/\\evil.example",
    "\\\\evil.example",
    "https:evil.example",
    "javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    " //evil.example",
    "/admin/\r\nLocation: https://evil.example",
    "http://testserver.evil.example/",
    "evil.example",
]


@pytest.mark.parametrize("next_url", OPEN_REDIRECTS)
def test_next_never_leaves_the_site(client: Client, op: TestOP, provider: OidcProvider, settings: Any,
                                    next_url: str) -> None:
    settings.LOGIN_REDIRECT_URL = "/landing/"
    response = sign_in(client, provider, next_url)
    assert response.status_code == 302
    assert response["Location"] == "/landing/"


def test_same_site_next_is_kept(client: Client, op: TestOP, provider: OidcProvider) -> None:
    response = sign_in(client, provider, "/admin/django_apiauth/auditevent/?outcome=failure")
    assert response["Location"] == "/admin/django_apiauth/auditevent/?outcome=failure"


# -- secrets and logout ------------------------------------------------------------------


def test_no_secret_or_token_in_audit_rows(client: Client, op: TestOP, provider: OidcProvider) -> None:
    callback = through_op(start(client, provider))
    code = parse_qs(urlsplit(callback).query)["code"][0]
    assert client.get(callback).status_code == 302
    client.logout()
    op.claims = {"aud": "other"}
    sign_in(client, provider)
    dumped = json.dumps([row.detail for row in AuditEvent.objects.all()])
    for secret in (CLIENT_SECRET, code, provider.client_secret_encrypted):
        assert secret not in dumped
    assert "eyJ" not in dumped  # no JWT of any kind
    assert CLIENT_SECRET not in provider.client_secret_encrypted
    assert hmac.compare_digest(OidcProvider.objects.get().client_secret(), CLIENT_SECRET)


def test_logout_ends_the_session_and_continues_at_the_provider(client: Client, op: TestOP,
                                                               provider: OidcProvider) -> None:
    assert sign_in(client, provider).status_code == 302
    assert client.get("/auth/oidc/acme/logout/").status_code == 405  # no logout by GET (CSRF)
    response = client.post("/auth/oidc/acme/logout/")
    assert response.status_code == 302
    location = urlsplit(response["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{op.issuer}/logout"
    query = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert query == {"client_id": CLIENT_ID, "post_logout_redirect_uri": "http://testserver/auth/login/"}
    assert SESSION_KEY not in client.session
    assert AuditEvent.objects.filter(event="sso_logout", scheme="oidc").exists()


def test_logout_of_a_local_session_stays_local(client: Client, op: TestOP, provider: OidcProvider,
                                               make_user: Callable[..., Any]) -> None:
    client.force_login(make_user("carol"))
    response = client.post("/auth/oidc/acme/logout/")
    assert response["Location"] == "/auth/login/"
    assert SESSION_KEY not in client.session


def test_undecryptable_client_secret_is_503_not_an_unauthenticated_exchange(
    client: Client, op: TestOP, provider: OidcProvider
) -> None:
    """The encryption key was removed before reencrypt_secrets ran: fail closed."""
    OidcProvider.objects.filter(pk=provider.pk).update(client_secret_encrypted="v1$00000000$AAAAAAAAAAAAAAAAAAAA")
    row = assert_refused(client, sign_in(client, provider), 503, "service_unavailable")
    assert row.detail["problem"] == "client secret undecryptable"
    assert op.token_requests == []
