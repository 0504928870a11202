"""`make demo`'s single sign-on: a staff user reaches /admin/ through SAML and through OpenID Connect.

Everything runs for real over HTTP on a live server, as a browser would drive it:
the demo's pysaml2 IdP signs the SAML response (xmlsec1), and the project's own
django-oauth-toolkit is the OpenID Provider (discovery, JWKS, token endpoint).
"""

from __future__ import annotations

import html
import io
import os
import re
import shutil
from typing import Any
from urllib.parse import urljoin

import pytest
import requests
from django.core.management import call_command

from django_apiauth.models import AuditEvent

pytestmark = pytest.mark.django_db(transaction=True)

_FORM_INPUT = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')
_CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


@pytest.fixture
def demo(live_server: Any, settings: Any) -> tuple[str, str]:
    base = live_server.url
    settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "OIDC_ISS_ENDPOINT": f"{base}/o"}
    out = io.StringIO()
    call_command("demo_setup", base_url=base, stdout=out)
    return base, out.getvalue()


def _follow(session: requests.Session, response: requests.Response, base: str) -> requests.Response:
    while response.status_code in (301, 302, 303):
        response = session.get(urljoin(response.url, response.headers["Location"]), allow_redirects=False,
                               timeout=10)
    return response


def _signed_in_admin(session: requests.Session, base: str) -> str:
    page = session.get(f"{base}/admin/", allow_redirects=False, timeout=10)
    assert page.status_code == 200, page.status_code
    return page.text


def test_admin_login_offers_both_providers(demo: tuple[str, str]) -> None:
    base, output = demo
    page = requests.get(f"{base}/admin/login/?next=/admin/", timeout=10).text
    assert "Sign in with the demo OpenID Provider" in page
    if shutil.which("xmlsec1"):
        assert "Sign in with the demo SAML IdP" in page
    assert "/auth/oidc/demo-oidc/login/?next=%2Fadmin%2F" in page
    assert "op-alice, password" in output


@pytest.mark.skipif(shutil.which("xmlsec1") is None and not os.environ.get("CI"),
                    reason="the demo SAML IdP needs xmlsec1 (make system-deps); CI fails instead")
def test_staff_signs_in_to_the_admin_through_the_demo_saml_idp(demo: tuple[str, str]) -> None:
    base, _ = demo
    with requests.Session() as browser:
        start = browser.get(f"{base}/auth/saml/demo-saml/login/?next=/admin/", allow_redirects=False,
                            timeout=10)
        assert start.status_code == 302
        assert start.headers["Location"].startswith(f"{base}/demo-idp/sso/?SAMLRequest=")
        idp_page = browser.get(start.headers["Location"], timeout=10)
        assert idp_page.status_code == 200, idp_page.text[:300]
        fields = {name: html.unescape(value) for name, value in _FORM_INPUT.findall(idp_page.text)}
        posted = browser.post(f"{base}/demo-idp/sso/", data={**fields, "user": "ada"}, timeout=10)
        assert posted.status_code == 200
        answer = {name: html.unescape(value) for name, value in _FORM_INPUT.findall(posted.text)}
        assert "SAMLResponse" in answer
        acs = browser.post(f"{base}/auth/saml/demo-saml/acs/", data=answer, allow_redirects=False, timeout=10)
        assert acs.status_code == 302, list(AuditEvent.objects.values_list("reason", "detail"))
        assert acs.headers["Location"] == "/admin/"
        assert "<strong>Ada</strong>" in _signed_in_admin(browser, base)  # the mapped givenName
    row = AuditEvent.objects.filter(event="sso_login").latest("id")
    assert (row.scheme, row.outcome, row.username) == ("saml", "success", "ada")


def test_staff_signs_in_to_the_admin_through_the_demo_openid_provider(demo: tuple[str, str]) -> None:
    base, output = demo
    op_password = re.search(r"user op-alice, password (\S+)", output).group(1)
    with requests.Session() as browser:
        start = browser.get(f"{base}/auth/oidc/demo-oidc/login/?next=/admin/", allow_redirects=False,
                            timeout=10)
        assert start.status_code == 302
        login_page = _follow(browser, start, base)  # → /o/authorize/ → the OP's sign-in page
        assert login_page.status_code == 200
        token = _CSRF.search(login_page.text).group(1)
        signed_in = browser.post(login_page.url, data={
            "csrfmiddlewaretoken": token, "username": "op-alice", "password": op_password,
            "next": re.search(r'name="next" value="([^"]+)"', login_page.text).group(1).replace("&amp;", "&"),
        }, headers={"Referer": login_page.url}, allow_redirects=False, timeout=10)
        assert signed_in.status_code == 302, signed_in.text[:300]
        done = _follow(browser, signed_in, base)  # → authorize (skip consent) → callback → /admin/
        assert done.url == f"{base}/admin/", done.url
        assert "alice" in done.text
    row = AuditEvent.objects.filter(event="sso_login").latest("id")
    assert (row.scheme, row.outcome, row.username) == ("oidc", "success", "alice")


@pytest.mark.parametrize("path", ["/demo-idp/sso/?SAMLRequest=x", "/demo-idp/metadata/"])
def test_the_demo_idp_answers_only_on_loopback(client: Any, path: str) -> None:
    """It signs anyone in without a password: a deployed example project must not offer it."""
    assert client.get(path, REMOTE_ADDR="203.0.113.9").status_code == 403
