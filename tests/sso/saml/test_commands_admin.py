"""create_saml_sp_key, import_saml_idp, the admin pages and the system checks."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from django_apiauth.checks import check_saml
from django_apiauth.models import SamlIdentityProvider, SamlServiceProviderKey

from .conftest import (
    IDP_ENTITY_ID,
    IDP_SLO_URL,
    IDP_SSO_URL,
    Keys,
    _key_and_cert,
    authn_response,
    post_acs,
    start,
)

pytestmark = pytest.mark.django_db


def _json(*args: str) -> dict[str, Any]:
    out = StringIO()
    call_command(*args, "--json", stdout=out)
    return json.loads(out.getvalue())  # type: ignore[no-any-return]


def test_create_saml_sp_key_stores_the_key_encrypted_and_never_prints_it() -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    result = _json("create_saml_sp_key", "--name", "SP 2026", "--days", "30")
    key = SamlServiceProviderKey.objects.get()
    assert result["fingerprint_sha256"] == key.fingerprint_sha256
    assert "PRIVATE" not in json.dumps(result)
    assert key.private_key_encrypted.startswith("v1$") and "PRIVATE" not in key.private_key_encrypted
    private = serialization.load_pem_private_key(key.private_key_pem().encode(), None)
    cert = x509.load_pem_x509_certificate(key.certificate_pem.encode())
    assert private.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]
    assert private.key_size == 3072  # type: ignore[union-attr]


def test_create_saml_sp_key_rollover_keeps_the_previous_key_published_unless_retired(
    sp_key: SamlServiceProviderKey,
) -> None:
    from django_apiauth.sso.saml import sp

    new = sp.create_sp_key(name="next", private_key=_key_and_cert("next")[0])
    assert [k.pk for k in sp.current_sp_keys()] == [new.pk, sp_key.pk]
    result = _json("create_saml_sp_key", "--name", "third", "--retire-others")
    assert result["retired"] == 2
    assert [k.fingerprint_sha256 for k in sp.current_sp_keys()] == [result["fingerprint_sha256"]]


def test_create_saml_sp_key_refuses_bad_days() -> None:
    with pytest.raises(CommandError, match="--days"):
        call_command("create_saml_sp_key", "--days", "0")


@pytest.fixture
def idp_metadata(idp: Any, tmp_path: Path) -> Path:
    from saml2.metadata import entity_descriptor

    path = tmp_path / "idp.xml"
    path.write_text(str(entity_descriptor(idp.config)))
    return path


def test_import_saml_idp_from_a_file_then_sign_in_through_it(
    idp: Any, idp_metadata: Path, sp_key: Any, saml_keys: Keys
) -> None:
    result = _json("import_saml_idp", "--slug", "acme", "--metadata", str(idp_metadata), "--name", "ACME",
                   "--jit")
    assert (result["entity_id"], result["sso_url"]) == (IDP_ENTITY_ID, IDP_SSO_URL)
    assert result["slo_url"] == IDP_SLO_URL
    assert result["created"] is True and len(result["certificates"]) == 1
    provider = SamlIdentityProvider.objects.get()
    assert provider.certificate_list()[0].split() == saml_keys.idp_cert_pem.split()
    started = start(Client(), idp, "/admin/")
    assert post_acs(started.client, authn_response(idp, started.args)).status_code == 302


def test_import_saml_idp_refuses_an_existing_slug_without_update(idp_metadata: Path, provider: Any) -> None:
    with pytest.raises(CommandError, match="--update"):
        call_command("import_saml_idp", "--slug", "acme", "--metadata", str(idp_metadata))
    provider.certificates = _key_and_cert("old")[2]
    provider.save()
    result = _json("import_saml_idp", "--slug", "acme", "--metadata", str(idp_metadata), "--update")
    assert result["created"] is False
    assert SamlIdentityProvider.objects.get().certificate_summaries()[0].fingerprint_sha256 == \
        result["certificates"][0]["fingerprint_sha256"]


@pytest.mark.parametrize(("text", "message"), [
    ('<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>', "could not be read"),
    ("<md:EntityDescriptor xmlns:md='urn:oasis:names:tc:SAML:2.0:metadata' entityID='x'/>",
     "IDPSSODescriptor"),
    ("not xml", "could not be read"),
])
def test_import_saml_idp_refuses_bad_metadata(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.xml"
    path.write_text(text)
    with pytest.raises(CommandError, match=message):
        call_command("import_saml_idp", "--slug", "bad", "--metadata", str(path))
    assert not SamlIdentityProvider.objects.exists()


@pytest.fixture
def metadata_server(idp_metadata: Path) -> Iterator[str]:
    body = idp_metadata.read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "/metadata")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/samlmetadata+xml")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_import_saml_idp_from_a_loopback_url(metadata_server: str) -> None:
    result = _json("import_saml_idp", "--slug", "acme", "--metadata", metadata_server + "/metadata")
    assert result["entity_id"] == IDP_ENTITY_ID


def test_import_saml_idp_refuses_redirects_and_plain_http_elsewhere(metadata_server: str) -> None:
    with pytest.raises(CommandError, match="redirected"):
        call_command("import_saml_idp", "--slug", "acme", "--metadata", metadata_server + "/redirect")
    with pytest.raises(CommandError, match="https"):
        call_command("import_saml_idp", "--slug", "acme", "--metadata", "http://idp.example.test/metadata")
    assert not SamlIdentityProvider.objects.exists()


@pytest.fixture
def admin_client(make_user: Any) -> Client:
    admin = make_user("root", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(admin)
    return client


def test_admin_shows_fingerprints_and_expiry_never_a_private_key(
    admin_client: Client, provider: SamlIdentityProvider, sp_key: SamlServiceProviderKey
) -> None:
    page = admin_client.get(f"/admin/django_apiauth/samlidentityprovider/{provider.pk}/change/")
    assert page.status_code == 200
    fingerprint = provider.certificate_summaries()[0].fingerprint_display
    assert fingerprint in page.content.decode()
    assert "/auth/saml/acme/metadata/" in page.content.decode()
    assert admin_client.get("/admin/django_apiauth/samlidentityprovider/").status_code == 200
    key_page = admin_client.get(f"/admin/django_apiauth/samlserviceproviderkey/{sp_key.pk}/change/")
    body = key_page.content.decode()
    assert key_page.status_code == 200
    assert "PRIVATE KEY" not in body and sp_key.private_key_encrypted not in body
    assert admin_client.get("/admin/django_apiauth/samlserviceproviderkey/add/").status_code == 403


def test_admin_refuses_a_private_key_pasted_as_certificate(admin_client: Client, saml_keys: Keys) -> None:
    response = admin_client.post("/admin/django_apiauth/samlidentityprovider/add/", {
        "name": "X", "slug": "x", "active": "on", "entity_id": "https://x.example/idp",
        "sso_url": "https://x.example/sso", "certificates": saml_keys.idp_key_pem,
        "nameid_format": "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified", "attribute_mapping": "{}",
    })
    assert response.status_code == 200  # the form again, with the error
    assert not SamlIdentityProvider.objects.exists()


def test_checks_report_a_missing_sp_key_and_expiring_certificates(db: Any, saml_keys: Keys) -> None:
    from .conftest import _provider_fields

    provider = SamlIdentityProvider.objects.create(**_provider_fields(saml_keys))
    assert [m.id for m in check_saml(databases=["default"])] == ["apiauth.E030"]
    from datetime import timedelta

    from django.utils import timezone

    from django_apiauth.sso.saml import sp

    key = sp.create_sp_key(name="k", days=10, private_key=saml_keys.sp_key)
    assert [m.id for m in check_saml(databases=["default"])] == ["apiauth.W031"]
    key.not_after = timezone.now() + timedelta(days=400)
    key.save()
    provider.certificates = _expiring_cert()
    provider.save()
    assert [m.id for m in check_saml(databases=["default"])] == ["apiauth.W030"]
    assert check_saml(databases=None) == []


def _expiring_cert() -> str:
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "soon")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=5))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_reencrypt_secrets_covers_the_sp_key(sp_key: SamlServiceProviderKey, settings: Any) -> None:
    before = sp_key.private_key_pem()
    settings.APIAUTH_ENCRYPTION_KEYS = ["a-brand-new-encryption-key-0123456789abcdef", settings.SECRET_KEY]
    call_command("reencrypt_secrets", stdout=StringIO())
    sp_key.refresh_from_db()
    settings.APIAUTH_ENCRYPTION_KEYS = ["a-brand-new-encryption-key-0123456789abcdef"]
    assert sp_key.private_key_pem() == before
