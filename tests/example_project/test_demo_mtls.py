"""`make demo`'s mTLS part: the demo CA and client certificate it writes work."""

import io
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import override_settings

pytestmark = pytest.mark.django_db


@override_settings(APIAUTH_TRUSTED_PROXIES=["127.0.0.2/32"])
def test_demo_mtls_files_authenticate(client):
    call_command("demo_setup", stdout=io.StringIO())
    out = io.StringIO()
    call_command("demo_mtls", "--no-nginx", stdout=out)
    base = Path(settings.VAR_DIR) / "demo-mtls"
    assert "nginx is not installed" in out.getvalue()
    assert (base / "client.key.pem").stat().st_mode & 0o777 == 0o600
    conf = (base / "nginx" / "nginx.conf").read_text()
    assert "{{" not in "\n".join(line for line in conf.splitlines() if not line.lstrip().startswith("#"))
    pem = (base / "client.crt.pem").read_text()
    response = client.get("/api/whoami/", REMOTE_ADDR="127.0.0.2", HTTP_X_SSL_CLIENT_CERT=quote(pem),
                          HTTP_X_SSL_CLIENT_VERIFY="SUCCESS")
    assert response.status_code == 200
    assert response.json()["user"] == "demo"
    # Running it again (make demo twice) issues a new certificate and keeps the CA.
    call_command("demo_mtls", "--no-nginx", stdout=io.StringIO())
    assert (base / "client.crt.pem").read_text() != pem
