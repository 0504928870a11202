"""Certificate-bound access tokens (RFC 8705) through a real nginx terminating mutual TLS.

The client gets its token from django-oauth-toolkit through nginx with its
client certificate: the JWT carries ``cnf.x5t#S256``. The API then accepts the
token only over a connection presenting the same certificate (forwarded by
nginx from 127.0.0.2, the only trusted proxy); the token alone, sent straight
to the app, or with another certificate, is refused.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable
from typing import Any

import jwt
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from django_apiauth.models import AuditEvent

from .conftest import NGINX, NGINX_MISSING, IssuedCert, Nginx
from .test_oauth_flows import provider, service_client  # noqa: F401 (fixtures)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(NGINX is None and not os.environ.get("CI"), reason=NGINX_MISSING),
    pytest.mark.usefixtures("trusted_proxy"),
]


def thumbprint(pem: str) -> str:
    der = x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def via_nginx(nginx: Nginx, method: str, path: str, cert: IssuedCert, **kwargs: Any) -> requests.Response:
    return requests.request(method, nginx.url + path, cert=cert.pair, timeout=10,
                            verify=str(nginx.server_tls.ca_path), **kwargs)


def test_certificate_bound_token_through_nginx(nginx: Nginx, ca: Any, live_server: Any, provider: str,  # noqa: F811
                                               service_client: tuple[Any, str],  # noqa: F811
                                               issue_cert: Callable[..., IssuedCert],
                                               make_user: Callable[..., Any]) -> None:
    app, secret = service_client
    owner = make_user("machine-owner")
    mine = issue_cert(owner, ca, common_name="reports-machine")
    other = issue_cert(owner, ca, common_name="another-machine")
    response = via_nginx(nginx, "POST", "/o/token/", mine, auth=(app.client_id, secret),
                         data={"grant_type": "client_credentials", "scope": "whoami:read"})
    assert response.status_code == 200, f"{response.text}\n{nginx.log_tail()}"
    token = response.json()["access_token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["cnf"] == {"x5t#S256": thumbprint(mine.pem)}

    bearer = {"Authorization": f"Bearer {token}"}
    ok = via_nginx(nginx, "GET", "/api/whoami/", mine, headers=bearer)
    assert ok.status_code == 200, ok.text
    assert ok.json()["user"] == "svc-reports"  # the token decides, not the certificate's owner
    assert ok.json()["scheme"] == "jwt"

    stolen = requests.get(live_server.url + "/api/whoami/", headers=bearer, timeout=10)
    assert stolen.status_code == 401
    wrong = via_nginx(nginx, "GET", "/api/whoami/", other, headers=bearer)
    assert wrong.status_code == 401
    assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
    failures = AuditEvent.objects.filter(event="authenticate", outcome="failure").order_by("id")
    assert [(r.scheme, r.reason) for r in failures] == [
        ("jwt", "certificate_binding_mismatch"), ("jwt", "certificate_binding_mismatch")]
    assert failures.last().detail["fingerprint_sha256"] == other.credential.fingerprint_sha256  # type: ignore[union-attr]
