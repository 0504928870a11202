"""Mutual TLS end to end: Debian's nginx in front of the live Django app (issue #4).

Python ``requests`` clients present certificates issued by the app's CA to a
real nginx started from ``example_project/deploy/nginx-mtls.conf``
(``ssl_verify_client on``, the CA certificate and its CRL); nginx forwards the
verified certificate to the live server from 127.0.0.2, the only trusted
proxy. Clients that bypass nginx reach the app from 127.0.0.1.

Where nginx must be the one refusing, the test checks nginx's own 400 page
and that no authentication attempt reached the app's audit log; the app's
own checks (revoked, expired) would answer 401 instead.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import os
import subprocess
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import requests
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone

from django_apiauth.ca import x509 as ca_x509
from django_apiauth.ca.authority import create_ca
from django_apiauth.core import lifecycle, reasons
from django_apiauth.models import AuditEvent

from .conftest import NGINX, NGINX_MISSING, PROXY_ADDRESS, IssuedCert, Nginx

pytestmark = [
    pytest.mark.e2e,
    # In CI (CI=true) a missing nginx is a failure, not a skip: make test installs it.
    pytest.mark.skipif(NGINX is None and not os.environ.get("CI"), reason=NGINX_MISSING),
    pytest.mark.usefixtures("trusted_proxy"),
]

NO_CERTIFICATE = "No required SSL certificate was sent"
BAD_CERTIFICATE = "The SSL certificate error"
WHOAMI = "/api/whoami/"
ECHO = "/api/echo/"

Result = requests.Response | requests.RequestException


# -- helpers ----------------------------------------------------------------------


def via_nginx(nginx: Nginx, path: str, cert: IssuedCert | None = None, method: str = "GET",
              **kwargs: Any) -> Result:
    """A TLS request to nginx; a handshake refusal comes back as the exception."""
    try:
        return requests.request(
            method, nginx.url + path, cert=cert.pair if cert else None,
            verify=str(nginx.server_tls.ca_path), timeout=5, **kwargs,
        )
    except (requests.exceptions.SSLError, requests.exceptions.ConnectionError) as exc:
        return exc


def ok(result: Result, nginx: Nginx) -> dict[str, Any]:
    assert isinstance(result, requests.Response), f"{result!r}\n{nginx.log_tail()}"
    assert result.status_code == 200, f"{result.status_code} {result.text[:500]}\n{nginx.log_tail()}"
    return result.json()  # type: ignore[no-any-return]


def is_refused_by_nginx(result: Result, page: str) -> bool:
    """Refused in the TLS handshake, or nginx's own 400 page (never the app's 401).

    Not a connection refused or reset: nginx not running proves nothing.
    """
    if isinstance(result, requests.RequestException):
        return isinstance(result, requests.exceptions.SSLError)
    return result.status_code == 400 and page in result.text and "nginx" in result.text


def assert_refused_by_nginx(result: Result, page: str, nginx: Nginx) -> None:
    detail = (result if isinstance(result, Exception)
              else f"{result.status_code} {result.text[:300]}")
    assert is_refused_by_nginx(result, page), f"not refused by nginx: {detail}\n{nginx.log_tail()}"


def auth_rows(**filters: Any) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(event="authenticate", **filters).order_by("id"))


def escaped(pem: str) -> str:
    """What nginx's ``$ssl_client_escaped_cert`` looks like."""
    return quote(pem, safe="")


def forward_as_proxy(live_server: Any, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """A request to the app from the trusted proxy's address, as nginx would send it."""
    port = urlsplit(live_server.url).port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5, source_address=(PROXY_ADDRESS, 0))
    try:
        conn.request("GET", path, headers={"Host": f"127.0.0.1:{port}", **headers})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.fixture
def people(transactional_db: Any) -> Callable[[str], Any]:
    def make(username: str) -> Any:
        return get_user_model().objects.create_user(username=username, password=None)

    return make


# -- the happy path ---------------------------------------------------------------


def test_good_certificate_reaches_the_app_as_its_owner(
    nginx: Nginx, ca: Any, issue_cert: Callable[..., IssuedCert], people: Callable[[str], Any],
) -> None:
    alice = people("alice")
    cert = issue_cert(alice, ca)

    body = ok(via_nginx(nginx, WHOAMI, cert), nginx)

    assert body == {"user": "alice", "scheme": "client_cert",
                    "credential_id": cert.credential.public_id, "scopes": []}
    [row] = auth_rows()
    assert (row.outcome, row.reason, row.user_id) == ("success", "ok", alice.pk)
    # The app saw nginx (127.0.0.2, trusted) and took the client's address from
    # X-Forwarded-For: the audit names the client, not the proxy.
    assert row.ip == "127.0.0.1"


def test_scoped_certificate_can_post_to_echo(
    nginx: Nginx, ca: Any, issue_cert: Callable[..., IssuedCert], people: Callable[[str], Any],
) -> None:
    owner = people("svc-echo")
    scoped = issue_cert(owner, ca, scopes="echo:write")
    unscoped = issue_cert(owner, ca)
    payload = {"order": 42, "items": ["a", "b"], "note": "über"}

    assert ok(via_nginx(nginx, ECHO, scoped, "POST", json=payload), nginx) == payload

    refused = via_nginx(nginx, ECHO, unscoped, "POST", json=payload)
    assert isinstance(refused, requests.Response) and refused.status_code == 403, refused


# -- refused by nginx -------------------------------------------------------------


def test_no_certificate_is_refused_by_nginx(nginx: Nginx, ca: Any) -> None:
    result = via_nginx(nginx, WHOAMI)

    assert_refused_by_nginx(result, NO_CERTIFICATE, nginx)
    assert auth_rows() == []


def test_certificate_of_another_ca_is_refused_by_nginx(
    nginx: Nginx, ca: Any, issue_cert: Callable[..., IssuedCert], people: Callable[[str], Any],
    live_server: Any,
) -> None:
    other_ca = create_ca(name="Some other CA", slug="other-ca")
    # Registered in the app, so only nginx's CA check stands in its way.
    foreign = issue_cert(people("eve"), other_ca)

    assert_refused_by_nginx(via_nginx(nginx, WHOAMI, foreign), BAD_CERTIFICATE, nginx)
    assert auth_rows() == []

    # Control: had the proxy forwarded it, the app would have accepted it.
    status, body = forward_as_proxy(live_server, WHOAMI, {
        "X-SSL-Client-Cert": escaped(foreign.pem), "X-SSL-Client-Verify": "SUCCESS"})
    assert (status, json.loads(body)["user"]) == (200, "eve")


def test_expired_certificate_is_refused_by_nginx(
    nginx: Nginx, ca: Any, issue_cert: Callable[..., IssuedCert], people: Callable[[str], Any],
) -> None:
    key = ca_x509.new_private_key("ec")
    owner = people("late")
    # Signed by our CA, valid from 5 minutes ago until 1 minute ago.
    cert = ca_x509.build_client_certificate(
        ca_cert=ca.certificate, ca_key=ca.private_key(), public_key=key.public_key(),
        common_name="expired-client", not_after=timezone.now() - timedelta(minutes=1),
        owner_uri=f"urn:django-apiauth:user:{owner.pk}",
    )
    expired = issue_cert(owner, ca, certificate_pem=ca_x509.certificate_pem(cert),
                         key_pem=ca_x509.private_key_pem(key))
    assert expired.credential.expires_at < timezone.now()

    assert_refused_by_nginx(via_nginx(nginx, WHOAMI, expired), BAD_CERTIFICATE, nginx)
    assert auth_rows() == []


def test_revoked_certificate_is_refused_after_crl_export_and_reload(
    nginx: Nginx, ca: Any, issue_cert: Callable[..., IssuedCert], people: Callable[[str], Any],
) -> None:
    owner = people("bob")
    doomed = issue_cert(owner, ca)
    bystander = issue_cert(owner, ca)
    assert ok(via_nginx(nginx, WHOAMI, doomed), nginx)["user"] == "bob"

    lifecycle.revoke(doomed.credential, reason="laptop stolen")
    # Until nginx has the new CRL, the app itself refuses it (401, audited).
    before = via_nginx(nginx, WHOAMI, doomed)
    assert isinstance(before, requests.Response) and before.status_code == 401, before
    assert auth_rows()[-1].reason == reasons.REVOKED

    # The operator's step (nginx-mtls.conf): export the CRL, reload nginx.
    call_command("export_crl", "--ca", ca.slug, "--out", str(nginx.crl_path), stdout=io.StringIO())
    nginx.reload()
    deadline = time.monotonic() + 5
    result = via_nginx(nginx, WHOAMI, doomed)
    while not is_refused_by_nginx(result, BAD_CERTIFICATE) and time.monotonic() < deadline:
        time.sleep(0.05)  # old workers may still answer until the reload completes
        result = via_nginx(nginx, WHOAMI, doomed)

    assert_refused_by_nginx(result, BAD_CERTIFICATE, nginx)
    rows = len(auth_rows())
    assert_refused_by_nginx(via_nginx(nginx, WHOAMI, doomed), BAD_CERTIFICATE, nginx)
    assert len(auth_rows()) == rows  # no longer reaches the app
    # The new CRL refuses only what it lists.
    assert ok(via_nginx(nginx, WHOAMI, bystander), nginx)["user"] == "bob"


# -- spoofing ---------------------------------------------------------------------


def test_certificate_header_from_a_client_bypassing_nginx_is_refused(
    nginx: Nginx, ca: Any, issue_cert: Callable[..., IssuedCert], people: Callable[[str], Any],
    live_server: Any,
) -> None:
    victim = issue_cert(people("alice"), ca)
    # Certificates are public: anyone can copy one into the header nginx sets.
    # Straight to the app's port on 127.0.0.1, as any local process could.
    app = f"http://127.0.0.1:{urlsplit(live_server.url).port}"
    response = requests.get(app + WHOAMI, timeout=5, headers={
        "X-SSL-Client-Cert": escaped(victim.pem),
        "X-SSL-Client-Verify": "SUCCESS",
        "X-Forwarded-For": PROXY_ADDRESS,  # claiming to be the proxy changes nothing
    })

    assert response.status_code == 401, response.text
    assert "ClientCert" in response.headers.get("WWW-Authenticate", "")
    [row] = auth_rows()
    assert (row.outcome, row.reason, row.ip) == ("failure", reasons.UNTRUSTED_PROXY, "127.0.0.1")
    assert row.user_id is None


def test_certificate_headers_sent_through_nginx_are_overwritten(
    nginx: Nginx, ca: Any, issue_cert: Callable[..., IssuedCert], people: Callable[[str], Any],
) -> None:
    victim = issue_cert(people("alice"), ca)
    mallory = issue_cert(people("mallory"), ca)
    der = ca_x509.pem_to_der(victim.pem)

    result = via_nginx(nginx, WHOAMI, mallory, headers={
        # nginx's header, and the other formats the app reads from a trusted proxy.
        "X-SSL-Client-Cert": escaped(victim.pem),
        "X-SSL-Client-Verify": "SUCCESS",
        "Client-Cert": f":{base64.b64encode(der).decode()}:",
        "X-Forwarded-Client-Cert": f'Cert="{escaped(victim.pem)}"',
    })

    body = ok(result, nginx)
    assert (body["user"], body["credential_id"]) == ("mallory", mallory.credential.public_id)


# -- the operator's command -------------------------------------------------------


def test_issue_client_cert_command_output_works_through_nginx(
    nginx: Nginx, ca: Any, people: Callable[[str], Any], tmp_path: Path,
) -> None:
    people("billing")

    def issue(name: str, allowed_ip: str) -> dict[str, Any]:
        out = io.StringIO()
        call_command(
            "issue_client_cert", "--owner", "billing", "--name", name, "--common-name", name,
            "--ca", ca.slug, "--days", "30", "--scopes", "echo:write",
            "--allowed-ips", allowed_ip, "--out", str(tmp_path / name), "--json", stdout=out,
        )
        return json.loads(out.getvalue())  # type: ignore[no-any-return]

    here = issue("billing-cron", "127.0.0.1/32")
    cert = IssuedCert(None, Path(here["cert_path"]), Path(here["key_path"]))
    body = ok(via_nginx(nginx, ECHO, cert, "POST", json={"amount": 12}), nginx)
    assert body == {"amount": 12}
    [row] = auth_rows()
    assert (row.outcome, row.ip, row.credential_id) == ("success", "127.0.0.1", here["id"])
    assert here["fingerprint_sha256"] == hashlib.sha256(
        ca_x509.pem_to_der(cert.cert_path.read_text())).hexdigest()

    # Allowed only from the proxy's own address: the client's real address
    # (127.0.0.1, from X-Forwarded-For) does not match, so nginx's address is
    # never mistaken for the client's.
    proxy_only = issue("proxy-only", f"{PROXY_ADDRESS}/32")
    refused = via_nginx(nginx, ECHO, IssuedCert(None, Path(proxy_only["cert_path"]),
                                                Path(proxy_only["key_path"])),
                        "POST", json={"amount": 1})
    assert isinstance(refused, requests.Response) and refused.status_code == 401, refused
    assert auth_rows()[-1].reason == reasons.IP_NOT_ALLOWED


def test_shipped_config_is_what_nginx_runs(nginx: Nginx, ca: Any) -> None:
    """The running config is the template with only the placeholders filled in."""
    result = subprocess.run(  # noqa: S603 (fixed arguments)
        nginx.command("-t"), capture_output=True, text=True, timeout=10, check=False)
    assert result.returncode == 0, result.stderr
    conf = nginx.conf.read_text()
    for directive in ("ssl_verify_client on;", "ssl_crl ", "proxy_bind 127.0.0.2;",
                      "proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert;",
                      "proxy_set_header Host $http_host;"):
        assert directive in conf
