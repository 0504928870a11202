"""The RP signs in against the example project's own OpenID Provider (django-oauth-toolkit).

Everything is real HTTP on pytest-django's live server: the browser is a
``requests.Session``, the OP's login page is the example project's
``/admin/login/`` (DOT's authorize view sends anonymous users to
``LOGIN_URL``), and our RP's views run in the same server. Discovery, JWKS,
token endpoint and UserInfo are DOT's. The OP is addressed as ``localhost``
and the RP as ``127.0.0.1``, so the two keep separate cookies (sessions), as
two sites would.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from django.conf import settings
from django.contrib.auth import SESSION_KEY, get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.shortcuts import resolve_url
from oauth2_provider.models import get_application_model

from django_apiauth.models import AuditEvent, ExternalIdentity
from django_apiauth.sso.oidc.models import OidcProvider

pytestmark = pytest.mark.django_db(transaction=True)
User = get_user_model()
Application = get_application_model()

OP_PASSWORD = "correct horse battery staple"
CLIENT_SECRET = "dot-client-secret-0123456789abcdefghij"
_CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


@dataclass
class Setup:
    op_base: str  # http://localhost:PORT
    rp_base: str  # http://127.0.0.1:PORT
    issuer: str
    provider: OidcProvider
    application: Any
    op_user: Any


@pytest.fixture
def dot(live_server: Any, settings: Any) -> Iterator[Setup]:
    cache.clear()
    port = urlsplit(live_server.url).port
    op_base, rp_base = f"http://localhost:{port}", f"http://127.0.0.1:{port}"
    issuer = f"{op_base}/o"
    # The peer's own configuration for this test: its issuer is this live server's
    # (whatever a deployment pins), http redirect URIs on loopback, logout endpoint on.
    settings.OAUTH2_PROVIDER = {
        **settings.OAUTH2_PROVIDER, "OIDC_ISS_ENDPOINT": issuer, "OIDC_RP_INITIATED_LOGOUT_ENABLED": True,
        "ALLOWED_REDIRECT_URI_SCHEMES": ["http", "https"],
    }
    op_user = User.objects.create_user("olivia", password=OP_PASSWORD, is_staff=True)
    application = Application.objects.create(
        name="django-apiauth RP", client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris=f"{rp_base}/auth/oidc/dot/callback/", algorithm=Application.RS256_ALGORITHM,
        client_secret=CLIENT_SECRET, skip_authorization=True,
        post_logout_redirect_uris=f"{rp_base}/auth/login/",
    )
    provider = OidcProvider(slug="dot", name="Example OP", issuer=issuer, client_id=application.client_id,
                            scopes="openid", jit_enabled=False)
    provider.set_client_secret(CLIENT_SECRET)
    provider.full_clean()
    provider.save()
    yield Setup(op_base, rp_base, issuer, provider, application, op_user)
    cache.clear()


def op_login(browser: requests.Session, login_url: str) -> requests.Response:
    """Fill in the OP's login form (the example project's admin login page)."""
    page = browser.get(login_url, timeout=10)
    assert page.status_code == 200
    token = _CSRF.search(page.text)
    assert token is not None
    next_url = parse_qs(urlsplit(login_url).query)["next"][0]
    response = browser.post(login_url, data={
        "csrfmiddlewaretoken": token.group(1), "username": "olivia", "password": OP_PASSWORD,
        "next": next_url,
    }, allow_redirects=False, timeout=10)
    assert response.status_code == 302, response.text[:300]
    return response


def to_callback(browser: requests.Session, setup: Setup, next_url: str | None = None) -> str:
    """RP login → OP authorize (→ OP login when needed) → the callback URL the OP sends us to."""
    query = f"?{urlencode({'next': next_url})}" if next_url else ""
    start = browser.get(f"{setup.rp_base}{setup.provider.login_url()}{query}", allow_redirects=False,
                        timeout=10)
    assert start.status_code == 302, start.text[:300]
    authorize = start.headers["Location"]
    assert authorize.startswith(f"{setup.issuer}/authorize/?")
    response = browser.get(authorize, allow_redirects=False, timeout=10)
    # The OP sends an anonymous browser to its sign-in page (settings.LOGIN_URL).
    login_path = resolve_url(settings.LOGIN_URL)
    if response.headers["Location"].startswith((f"{setup.op_base}{login_path}", login_path)):
        login_url = response.headers["Location"]
        if login_url.startswith("/"):
            login_url = setup.op_base + login_url
        after_login = op_login(browser, login_url)
        again = after_login.headers["Location"]
        response = browser.get(again if again.startswith("http") else setup.op_base + again,
                               allow_redirects=False, timeout=10)
    assert response.status_code == 302
    callback = response.headers["Location"]
    assert callback.startswith(f"{setup.rp_base}/auth/oidc/dot/callback/?"), callback
    return callback


def rp_session_user(browser: requests.Session) -> Any:
    key = browser.cookies.get("sessionid", domain="127.0.0.1")
    if key is None:
        return None
    return SessionStore(session_key=key).get(SESSION_KEY)


def test_staff_user_signs_in_to_the_admin_through_the_example_op(dot: Setup,
                                                                 make_user: Callable[..., Any]) -> None:
    staff = make_user("sam", is_staff=True, is_superuser=False)
    ExternalIdentity.objects.create(issuer=dot.issuer, subject=str(dot.op_user.pk), user=staff)
    with requests.Session() as browser:
        callback = to_callback(browser, dot, next_url="/admin/")
        done = browser.get(callback, allow_redirects=False, timeout=10)
        assert done.status_code == 302, done.text[:500]
        assert done.headers["Location"] == "/admin/"
        assert str(rp_session_user(browser)) == str(staff.pk)
        admin = browser.get(f"{dot.rp_base}/admin/", allow_redirects=False, timeout=10)
        assert admin.status_code == 200
        assert "sam" in admin.text
        row = AuditEvent.objects.get(event="sso_login")
        assert (row.outcome, row.scheme, row.user_id) == ("success", "oidc", staff.pk)
        assert row.credential_id == "dot"

        # RP-initiated logout: local session gone, browser sent to DOT's end_session_endpoint.
        page = browser.get(f"{dot.rp_base}/auth/login/", timeout=10)
        csrf = browser.cookies.get("csrftoken", domain="127.0.0.1")
        assert page.status_code == 200 and csrf
        out = browser.post(f"{dot.rp_base}/auth/oidc/dot/logout/", data={"csrfmiddlewaretoken": csrf},
                           allow_redirects=False, timeout=10)
        assert out.status_code == 302
        assert out.headers["Location"].startswith(f"{dot.issuer}/logout/?")
        assert rp_session_user(browser) is None
        assert browser.get(f"{dot.op_base}/o/logout/", params=parse_qs(urlsplit(
            out.headers["Location"]).query), allow_redirects=False, timeout=10).status_code in (200, 302)


def test_jit_user_from_the_example_op(dot: Setup) -> None:
    OidcProvider.objects.filter(pk=dot.provider.pk).update(jit_enabled=True)
    with requests.Session() as browser:
        done = browser.get(to_callback(browser, dot), allow_redirects=False, timeout=10)
        assert done.status_code == 302
        identity = ExternalIdentity.objects.get(issuer=dot.issuer, subject=str(dot.op_user.pk))
        assert identity.user != dot.op_user
        assert not identity.user.is_staff and not identity.user.has_usable_password()
        assert str(rp_session_user(browser)) == str(identity.user.pk)


def test_rfc9207_iss_parameter_from_the_example_op(dot: Setup, settings: Any) -> None:
    settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS": True}
    OidcProvider.objects.filter(pk=dot.provider.pk).update(jit_enabled=True)
    with requests.Session() as browser:
        callback = to_callback(browser, dot)
        assert parse_qs(urlsplit(callback).query)["iss"] == [dot.issuer]
        # A mix-up attacker cannot strip it: the OP advertises it, so it is required.
        stripped = {k: v for k, v in parse_qs(urlsplit(callback).query).items() if k != "iss"}
        refused = browser.get(f"{dot.rp_base}/auth/oidc/dot/callback/", params=stripped,
                              allow_redirects=False, timeout=10)
        assert refused.status_code == 403
        assert rp_session_user(browser) is None
        assert AuditEvent.objects.get(event="sso_login").reason == "untrusted_issuer"


def test_code_replay_against_the_example_op_is_refused(dot: Setup) -> None:
    OidcProvider.objects.filter(pk=dot.provider.pk).update(jit_enabled=True)
    with requests.Session() as browser:
        first = to_callback(browser, dot)
        assert browser.get(first, allow_redirects=False, timeout=10).status_code == 302
        browser.cookies.clear(domain="127.0.0.1")  # a fresh RP session, still signed in at the OP
        second = to_callback(browser, dot)
        old_code = parse_qs(urlsplit(first).query)["code"][0]
        query = {k: v[0] for k, v in parse_qs(urlsplit(second).query).items()}
        query["code"] = old_code
        replay = browser.get(f"{dot.rp_base}/auth/oidc/dot/callback/", params=query,
                             allow_redirects=False, timeout=10)
        assert replay.status_code == 403
        assert rp_session_user(browser) is None
        row = AuditEvent.objects.filter(event="sso_login").latest("id")
        assert (row.outcome, row.reason) == ("failure", "code_rejected")


def test_op_error_redirect_is_refused(dot: Setup) -> None:
    """The OP refuses a scope it does not know and redirects back with an error.

    The example OP advertises ``authorization_response_iss_parameter_supported``
    (its RFC 9700 gate is on) but leaves ``iss`` out of error redirects, which
    RFC 9207 §2 requires in error responses too: the RP cannot tell which
    provider sent the error and refuses it as ``untrusted_issuer`` (no session).
    """
    OidcProvider.objects.filter(pk=dot.provider.pk).update(scopes="openid no-such-scope")
    with requests.Session() as browser:
        callback = to_callback(browser, dot)
        query = parse_qs(urlsplit(callback).query)
        assert query["error"] == ["invalid_scope"]
        assert "iss" not in query
        refused = browser.get(callback, allow_redirects=False, timeout=10)
        assert refused.status_code == 403
        assert rp_session_user(browser) is None
    row = AuditEvent.objects.get(event="sso_login")
    assert (row.outcome, row.reason, row.detail["problem"]) == ("failure", "untrusted_issuer", "iss missing")


def test_discovery_issuer_mismatch_at_the_example_op(dot: Setup) -> None:
    OidcProvider.objects.filter(pk=dot.provider.pk).update(issuer=dot.issuer + "/")
    with requests.Session() as browser:
        response = browser.get(f"{dot.rp_base}{dot.provider.login_url()}", allow_redirects=False, timeout=10)
        assert response.status_code == 403
        assert rp_session_user(browser) is None
    row = AuditEvent.objects.get(event="sso_login")
    assert (row.outcome, row.reason) == ("failure", "untrusted_issuer")


def test_add_oidc_provider_discovers_the_example_op(dot: Setup, capsys: Any) -> None:
    import json

    call_command("add_oidc_provider", "--slug", "dot2", "--issuer", dot.issuer, "--client-id", "abc",
                 "--client-secret", "s3cret-value", "--name", "Example OP", "--json")
    out = json.loads(capsys.readouterr().out)
    assert out["authorization_endpoint"] == f"{dot.issuer}/authorize/"
    assert out["jwks_uri"] == f"{dot.issuer}/.well-known/jwks.json"
    assert out["redirect_uri_path"] == "/auth/oidc/dot2/callback/"
    assert "s3cret-value" not in json.dumps(out)
    assert any("profile" in w or "email" in w for w in out["warnings"])  # DOT lists openid only
    created = OidcProvider.objects.get(slug="dot2")
    assert created.client_secret() == "s3cret-value"
    assert "s3cret-value" not in created.client_secret_encrypted

    with pytest.raises(CommandError, match="names the issuer"):
        call_command("add_oidc_provider", "--slug", "dot3", "--issuer", dot.issuer + "/",
                     "--client-id", "abc", "--client-secret", "x")
    assert not OidcProvider.objects.filter(slug="dot3").exists()
