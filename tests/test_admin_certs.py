"""The admin for certificate authorities and client certificates (mTLS).

Certificates reach Django as nginx forwards them: the URL-encoded PEM in
``X-SSL-Client-Cert``, from the TLS terminator's address only.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID
from django.contrib.messages import ERROR, SUCCESS, WARNING
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone
from freezegun import freeze_time
from rest_framework.test import APIClient

from django_apiauth.ca import authority
from django_apiauth.ca import x509 as ca_x509
from django_apiauth.core import lifecycle
from django_apiauth.models import AuditEvent, CertificateAuthority, ClientCertificate

pytestmark = pytest.mark.django_db

KEY_RE = re.compile(r"<pre[^>]*>(-----BEGIN PRIVATE KEY-----\n.*?\n-----END PRIVATE KEY-----)</pre>",
                    re.DOTALL)
CHANGELIST = "admin:django_apiauth_clientcertificate_changelist"
ADD = "admin:django_apiauth_clientcertificate_add"
CA_CHANGELIST = "admin:django_apiauth_certificateauthority_changelist"
CA_ADD = "admin:django_apiauth_certificateauthority_add"
WHOAMI = "/api/whoami/"
PROXY = "127.0.0.2"

MakeCert = Callable[..., tuple[ClientCertificate, str]]


# -- helpers ----------------------------------------------------------------------


@override_settings(APIAUTH_TRUSTED_PROXIES=[f"{PROXY}/32"])
def whoami(pem: str) -> Any:
    """GET /api/whoami/ as nginx forwards a verified client certificate."""
    return APIClient().get(WHOAMI, REMOTE_ADDR=PROXY, HTTP_X_SSL_CLIENT_CERT=urllib.parse.quote(pem))


def status(pem: str) -> int:
    return whoami(pem).status_code


def change_url(obj: Any) -> str:
    return reverse(f"admin:django_apiauth_{obj._meta.model_name}_change", args=(obj.pk,))


def messages_of(response: Any, level: int = WARNING) -> list[str]:
    return [str(m) for m in response.context["messages"] if m.level == level]


def keys_in(response: Any) -> list[str]:
    return KEY_RE.findall(" ".join(messages_of(response)))


def content(response: Any) -> str:
    return response.content.decode()


def key_body(pem: str) -> str:
    """A line from the middle of a PEM block: found in a page however it is wrapped."""
    lines = pem.strip().splitlines()
    return lines[len(lines) // 2]


def add_form(user: Any, mode: str = "issue", **fields: Any) -> dict[str, Any]:
    return {
        "mode": mode, "owner": user.pk, "name": "billing client", "scopes": "echo:write",
        "allowed_ips": "", "expires_at_0": "", "expires_at_1": "", "ca": "", "common_name": "",
        "key_type": "ec", "csr_pem": "", "certificate_pem": "", **fields,
    }


def run_action(client: Client, action: str, objs: list[Any], **form: str) -> Any:
    """Post an action from the change list, then its confirmation page with ``form``."""
    url = reverse(CHANGELIST)
    pks = [str(obj.pk) for obj in objs]
    first = client.post(url, {"action": action, "index": "0", "_selected_action": pks})
    assert first.status_code == 200, first
    return client.post(
        url, {"action": action, "_selected_action": pks, "confirm": "yes", **form}, follow=True,
    )


def private_pem(key: Any) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption(),
    ).decode()


def public_der(key: Any) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def make_csr(key: Any, common_name: str = "laptop-42") -> str:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def tampered_csr(key: Any) -> str:
    """A well-formed CSR whose signature does not verify (one signature byte flipped)."""
    der = bytearray(x509.load_pem_x509_csr(make_csr(key).encode()).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01
    csr = x509.load_der_x509_csr(bytes(der))
    assert not csr.is_signature_valid
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def foreign_certificate(*, client_auth: bool = True, is_ca: bool = False, days: int = 30,
                        garbled: bool = False) -> tuple[x509.Certificate, Any]:
    """A certificate of another CA (not one of the app's), and its private key."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = ca_x509.build_ca("Partner Root", 365, ca_key)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "partner-service")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=max(1, -days) + 1))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(
            x509.UnrecognizedExtension(ExtensionOID.BASIC_CONSTRAINTS, b"\x01\x02") if garbled
            else x509.BasicConstraints(ca=is_ca, path_length=None),
            critical=True,
        )
    )
    if client_auth:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256()), key


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def ca_secrets(ca: CertificateAuthority) -> list[str]:
    """What of a CA must never reach a page: its private key (a line of it) and its ciphertext."""
    return [key_body(ca_x509.private_key_pem(ca.private_key())), ca.private_key_encrypted]


# -- fixtures ---------------------------------------------------------------------


@pytest.fixture
def ca() -> CertificateAuthority:
    return authority.create_ca(name="Corp clients", slug="corp", days=365)


@pytest.fixture
def make_cert(user: Any, ca: CertificateAuthority) -> MakeCert:
    """Issue a certificate through the lifecycle: from ``ca`` unless ``certificate_pem`` is given."""

    def make(owner: Any = None, **fields: Any) -> tuple[ClientCertificate, str]:
        fields.setdefault("name", "billing client")
        fields.setdefault("scopes", "echo:write")
        if not fields.get("certificate_pem"):
            fields.setdefault("ca", ca)
        return lifecycle.issue(ClientCertificate, owner=owner or user, **fields)

    return make


# -- certificate authorities ---------------------------------------------------------


def test_create_a_ca_in_the_admin(admin_client: Client) -> None:
    form = admin_client.get(reverse(CA_ADD)).context["adminform"].form
    assert list(form.fields) == ["name", "slug", "days", "key_type"]

    response = admin_client.post(reverse(CA_ADD), {
        "name": "Partner clients", "slug": "partners", "days": "730", "key_type": "ec",
    }, follow=True)
    assert response.status_code == 200
    assert messages_of(response) == []  # nothing secret, nothing to warn about
    ca = CertificateAuthority.objects.get()
    assert (ca.name, ca.slug, ca.is_active) == ("Partner clients", "partners", True)
    assert timedelta(days=729) < ca.not_after - timezone.now() <= timedelta(days=730)
    assert ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    created = AuditEvent.objects.get(event="ca.created")
    assert (created.credential_id, created.detail["actor"]) == ("partners", "admin")

    page = content(admin_client.get(reverse(CA_CHANGELIST)))
    for shown in ("Partner clients", "partners", ca.fingerprint_sha256[:16] + "…",
                  'href="/auth/ca/partners/ca.pem"', 'href="/auth/ca/partners/crl.pem"'):
        assert shown in page, shown
    for secret in ca_secrets(ca):
        assert secret not in page
    assert admin_client.get("/auth/ca/partners/ca.pem").content.decode() == ca.certificate_pem
    crl = x509.load_pem_x509_crl(admin_client.get("/auth/ca/partners/crl.pem").content)
    assert crl.is_signature_valid(ca.certificate.public_key())  # type: ignore[arg-type]
    assert len(crl) == 0


def test_create_a_ca_with_an_rsa_key(admin_client: Client) -> None:
    admin_client.post(reverse(CA_ADD), {"name": "RSA", "slug": "rsa", "days": "30", "key_type": "rsa"})
    ca = CertificateAuthority.objects.get()
    assert ca.certificate.public_key().key_size == 3072  # type: ignore[union-attr]


@pytest.mark.parametrize(("fields", "errors"), [
    ({"slug": "corp"}, {"slug"}),  # taken by the ``ca`` fixture
    ({"slug": "not a slug"}, {"slug"}),
    ({"days": "0"}, {"days"}),
    ({"key_type": "dsa"}, {"key_type"}),
])
def test_create_a_ca_validates(admin_client: Client, ca: CertificateAuthority, fields: dict[str, str],
                               errors: set[str]) -> None:
    response = admin_client.post(reverse(CA_ADD), {
        "name": "Second", "slug": "second", "days": "365", "key_type": "ec", **fields,
    })
    assert response.status_code == 200
    assert set(response.context["adminform"].form.errors) == errors
    assert CertificateAuthority.objects.count() == 1


def test_ca_change_page_edits_only_name_and_active(admin_client: Client, ca: CertificateAuthority,
                                                   make_cert: MakeCert) -> None:
    make_cert()
    response = admin_client.get(change_url(ca))
    assert list(response.context["adminform"].form.fields) == ["name", "is_active"]
    page = content(response)
    assert ca.fingerprint_sha256 in page
    assert "BEGIN CERTIFICATE" in page  # the CA certificate is public
    assert "PRIVATE KEY" not in page
    for secret in ca_secrets(ca):
        assert secret not in page
    assert response.context["adminform"].form.instance._certificate_count == 1

    original = (ca.slug, ca.fingerprint_sha256, ca.certificate_pem, ca.private_key_encrypted)
    response = admin_client.post(change_url(ca), {
        "name": "Corp (retired)", "is_active": "", "slug": "forged",
        "certificate_pem": "forged", "private_key_encrypted": "forged", "fingerprint_sha256": "0" * 64,
    })
    assert response.status_code == 302
    ca.refresh_from_db()
    assert (ca.name, ca.is_active) == ("Corp (retired)", False)
    assert (ca.slug, ca.fingerprint_sha256, ca.certificate_pem, ca.private_key_encrypted) == original
    changed = AuditEvent.objects.get(event="ca.changed")
    assert changed.detail["changed"] == {"name": "Corp (retired)", "is_active": False}


def test_a_ca_with_certificates_is_not_deleted_and_says_why(
    admin_client: Client, ca: CertificateAuthority, make_cert: MakeCert,
) -> None:
    cert, _key = make_cert()
    lifecycle.revoke(cert, reason="lost")  # revoked certificates still need their CA (the CRL)
    delete_url = reverse("admin:django_apiauth_certificateauthority_delete", args=(ca.pk,))
    for response in (admin_client.get(delete_url, follow=True),
                     admin_client.post(delete_url, {"post": "yes"}, follow=True)):
        assert response.status_code == 200
        assert response.redirect_chain[-1][0] == change_url(ca)
        [error] = messages_of(response, ERROR)
        assert "cannot be deleted" in error
        assert "1 client certificate" in error
    assert CertificateAuthority.objects.filter(pk=ca.pk).exists()
    assert not AuditEvent.objects.filter(event="ca.deleted").exists()

    # No bulk delete on the list either.
    response = admin_client.get(reverse(CA_CHANGELIST))
    assert "delete_selected" not in content(response)


def test_a_ca_without_certificates_can_be_deleted(admin_client: Client, ca: CertificateAuthority) -> None:
    delete_url = reverse("admin:django_apiauth_certificateauthority_delete", args=(ca.pk,))
    assert admin_client.get(delete_url).status_code == 200
    response = admin_client.post(delete_url, {"post": "yes"})
    assert response.status_code == 302
    assert not CertificateAuthority.objects.exists()
    deleted = AuditEvent.objects.get(event="ca.deleted")
    assert (deleted.credential_id, deleted.detail["via"]) == ("corp", "admin")


# -- issue from a CA ------------------------------------------------------------------


def test_add_form_fields(admin_client: Client, ca: CertificateAuthority) -> None:
    response = admin_client.get(reverse(ADD))
    assert list(response.context["adminform"].form.fields) == [
        "mode", "owner", "name", "scopes", "allowed_ips", "expires_at",
        "ca", "common_name", "key_type", "csr_pem", "certificate_pem", "certificate_file",
    ]
    assert 'enctype="multipart/form-data"' in content(response)


def test_issue_shows_the_private_key_once_and_the_certificate_authenticates(
    admin_client: Client, user: Any, ca: CertificateAuthority,
) -> None:
    response = admin_client.post(reverse(ADD), add_form(user, ca=ca.pk, common_name="billing-01"),
                                 follow=True)
    assert response.status_code == 200
    [key_pem] = keys_in(response)
    assert content(response).count(key_body(key_pem)) == 1
    obj = ClientCertificate.objects.get()
    assert (obj.owner, obj.name, obj.ca, obj.common_name, obj.key_type) == (
        user, "billing client", ca, "billing-01", "ec")
    assert obj.serial and obj.subject == "CN=billing-01"
    assert obj.sans == [f"URI:urn:django-apiauth:user:{user.pk}"]
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    cert = x509.load_pem_x509_certificate(obj.certificate_pem.encode())
    assert public_der(key.public_key()) == public_der(cert.public_key())
    assert ca_x509.verify_issued_by(cert, ca.certificate)
    assert timedelta(days=364) < obj.expires_at - timezone.now() <= timedelta(days=365)

    response = whoami(obj.certificate_pem)
    assert response.status_code == 200, response.content
    assert response.json()["credential_id"] == obj.fingerprint_sha256

    download = admin_client.get(reverse("admin:django_apiauth_clientcertificate_certificate",
                                        args=(obj.pk,)))
    assert download.status_code == 200
    assert download.content.decode() == obj.certificate_pem
    assert "attachment" in download["Content-Disposition"]

    changelist = content(admin_client.get(reverse(CHANGELIST)))
    assert obj.fingerprint_sha256[:16] + "…" in changelist  # shortened in the list
    for url in (reverse(CHANGELIST), reverse(CHANGELIST) + f"?q={obj.fingerprint_sha256[:12]}",
                change_url(obj), reverse("admin:django_apiauth_clientcertificate_history", args=(obj.pk,))):
        page = content(admin_client.get(url))
        assert obj.fingerprint_sha256[:16] in page, url
        assert key_body(key_pem) not in page, url
        assert "PRIVATE KEY" not in page, url
        for secret in ca_secrets(ca):
            assert secret not in page, url
    issued = AuditEvent.objects.get(event="credential.issued")
    assert (issued.credential_id, issued.scheme, issued.detail["via"]) == (
        obj.fingerprint_sha256, "client_cert", "admin")
    assert key_body(key_pem) not in str(issued.detail)


def test_issue_with_an_rsa_key_and_an_expiry(admin_client: Client, user: Any,
                                             ca: CertificateAuthority) -> None:
    expires = timezone.localtime(timezone.now() + timedelta(days=30)).replace(microsecond=0)
    response = admin_client.post(reverse(ADD), add_form(
        user, ca=ca.pk, key_type="rsa",
        expires_at_0=expires.strftime("%Y-%m-%d"), expires_at_1=expires.strftime("%H:%M:%S"),
    ), follow=True)
    [key_pem] = keys_in(response)
    obj = ClientCertificate.objects.get()
    assert obj.common_name == "billing client"  # the name, by default
    assert obj.expires_at == expires
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    assert key.key_size == 3072  # type: ignore[union-attr]
    assert status(obj.certificate_pem) == 200


# -- sign a CSR ------------------------------------------------------------------------------


def test_sign_a_csr_shows_no_secret_and_the_certificate_authenticates(
    admin_client: Client, user: Any, ca: CertificateAuthority,
) -> None:
    client_key = ec.generate_private_key(ec.SECP256R1())
    response = admin_client.post(reverse(ADD), add_form(
        user, "csr", ca=ca.pk, csr_pem=make_csr(client_key), common_name="ignored",
    ), follow=True)
    assert response.status_code == 200
    assert messages_of(response) == []  # the private key never was on the server
    assert keys_in(response) == []
    assert messages_of(response, SUCCESS)
    obj = ClientCertificate.objects.get()
    cert = x509.load_pem_x509_certificate(obj.certificate_pem.encode())
    assert public_der(cert.public_key()) == public_der(client_key.public_key())
    assert (obj.ca, obj.common_name, obj.subject) == (ca, "laptop-42", "CN=laptop-42")
    assert ca_x509.verify_issued_by(cert, ca.certificate)
    assert status(obj.certificate_pem) == 200
    assert "PRIVATE KEY" not in content(admin_client.get(change_url(obj)))


# -- register a certificate of another CA ----------------------------------------------------


@pytest.mark.parametrize("how", ["pasted", "uploaded PEM", "uploaded DER"])
def test_register_a_foreign_certificate(admin_client: Client, user: Any, how: str) -> None:
    cert, _key = foreign_certificate()
    fields: dict[str, Any] = {"certificate_pem": cert_pem(cert)}
    if how == "uploaded PEM":
        fields = {"certificate_file": SimpleUploadedFile("client.pem", cert_pem(cert).encode())}
    elif how == "uploaded DER":
        fields = {"certificate_file": SimpleUploadedFile(
            "client.der", cert.public_bytes(serialization.Encoding.DER))}
    response = admin_client.post(reverse(ADD), add_form(user, "register", **fields), follow=True)
    assert response.status_code == 200
    assert messages_of(response) == []
    assert messages_of(response, SUCCESS)
    obj = ClientCertificate.objects.get()
    assert obj.ca is None
    assert obj.certificate_pem.strip() == cert_pem(cert).strip()
    assert (obj.common_name, obj.issuer) == ("partner-service", "O=django-apiauth CA,CN=Partner Root")
    assert obj.expires_at == cert.not_valid_after_utc
    assert status(cert_pem(cert)) == 200


# -- invalid input ------------------------------------------------------------------------


def _bad_input(case: str, ca: CertificateAuthority,
               other_ca: CertificateAuthority) -> tuple[str, dict[str, Any]]:
    key = ec.generate_private_key(ec.SECP256R1())
    ours = ca_x509.certificate_pem(ca_x509.build_client_certificate(
        ca_cert=other_ca.certificate, ca_key=other_ca.private_key(), public_key=key.public_key(),
        common_name="other", not_after=timezone.now() + timedelta(days=30),
    ))
    return {
        "issue without a CA": ("issue", {}),
        "issue from an inactive CA": ("issue", {"ca": "inactive"}),
        "csr without a CA": ("csr", {"csr_pem": make_csr(key)}),
        "csr missing": ("csr", {"ca": ca.pk}),
        "csr garbage": ("csr", {"ca": ca.pk, "csr_pem": "-----BEGIN CERTIFICATE REQUEST-----\nxx\n"
                                                      "-----END CERTIFICATE REQUEST-----"}),
        "csr bad signature": ("csr", {"ca": ca.pk, "csr_pem": tampered_csr(key)}),
        "csr is a private key": ("csr", {"ca": ca.pk, "csr_pem": private_pem(key)}),
        "register nothing": ("register", {}),
        "register garbage": ("register", {"certificate_pem": "-----BEGIN CERTIFICATE-----\nnot base64!\n"
                                                              "-----END CERTIFICATE-----"}),
        "register two certificates": ("register", {
            "certificate_pem": cert_pem(foreign_certificate()[0]) + cert_pem(foreign_certificate()[0])}),
        "register a CA certificate": ("register", {"certificate_pem": ca.certificate_pem}),
        "register without clientAuth": ("register", {
            "certificate_pem": cert_pem(foreign_certificate(client_auth=False)[0])}),
        "register an expired certificate": ("register", {
            "certificate_pem": cert_pem(foreign_certificate(days=-1)[0])}),
        "register a private key": ("register", {"certificate_pem": private_pem(key)}),
        "register unparsable extensions": ("register", {
            "certificate_pem": cert_pem(foreign_certificate(garbled=True)[0])}),
        "register with the wrong CA": ("register", {"certificate_pem": ours, "ca": ca.pk}),
        "register a bad file": ("register", {
            "certificate_file": SimpleUploadedFile("client.der", b"\x30\x03\x02\x01\x00")}),
        "register pasted and uploaded": ("register", {
            "certificate_pem": ours, "certificate_file": SimpleUploadedFile("c.pem", ours.encode())}),
    }[case]


@pytest.mark.parametrize(("case", "field", "message"), [
    ("issue without a CA", "ca", "Choose the certificate authority"),
    ("issue from an inactive CA", "ca", "Select a valid choice"),
    ("csr without a CA", "ca", "Choose the certificate authority"),
    ("csr missing", "csr_pem", "Paste the client's certificate signing request"),
    ("csr garbage", "csr_pem", "not a valid PEM certificate signing request"),
    ("csr bad signature", "csr_pem", "signature does not verify"),
    ("csr is a private key", "csr_pem", "This is a private key"),
    ("register nothing", "certificate_pem", "Paste the certificate"),
    ("register garbage", "certificate_pem", "bad base64"),
    ("register two certificates", "certificate_pem", "exactly one PEM certificate"),
    ("register a CA certificate", "certificate_pem", "This is a CA certificate"),
    ("register without clientAuth", "certificate_pem", "lacks the clientAuth extended key usage"),
    ("register an expired certificate", "certificate_pem", "has expired"),
    ("register a private key", "certificate_pem", "This is a private key"),
    ("register unparsable extensions", "certificate_pem", "extensions could not be parsed"),
    ("register with the wrong CA", "certificate_pem", "not issued by this CA"),
    ("register a bad file", "certificate_file", "neither a PEM nor a DER certificate"),
    ("register pasted and uploaded", "certificate_file", "not both"),
])
def test_invalid_input_is_a_form_error(admin_client: Client, user: Any, ca: CertificateAuthority,
                                       case: str, field: str, message: str) -> None:
    other_ca = authority.create_ca(name="Other", slug="other", days=30)
    inactive = authority.create_ca(name="Inactive", slug="inactive", days=30)
    inactive.is_active = False
    inactive.save()
    mode, fields = _bad_input(case, ca, other_ca)
    if fields.get("ca") == "inactive":
        fields["ca"] = inactive.pk
    response = admin_client.post(reverse(ADD), add_form(user, mode, **fields))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert set(errors) == {field}, errors
    assert message in " ".join(errors[field]), errors
    assert not ClientCertificate.objects.exists()
    assert not AuditEvent.objects.filter(event="credential.issued").exists()
    if "private key" in case:  # a pasted private key is not echoed back into the page
        assert key_body(fields.get("csr_pem") or fields["certificate_pem"]) not in content(response)


def test_a_certificate_is_registered_once(admin_client: Client, user: Any, make_cert: MakeCert) -> None:
    cert, _key = foreign_certificate()
    existing, _ = make_cert(name="first", certificate_pem=cert_pem(cert))
    response = admin_client.post(reverse(ADD), add_form(user, "register", certificate_pem=cert_pem(cert)))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert set(errors) == {"certificate_pem"}
    assert "already registered" in errors["certificate_pem"][0]
    assert ClientCertificate.objects.get() == existing


# -- change page -----------------------------------------------------------------------------


def test_change_page_shows_the_certificate_read_only(admin_client: Client, make_cert: MakeCert,
                                                     ca: CertificateAuthority) -> None:
    obj, key_pem = make_cert(common_name="billing-01")
    response = admin_client.get(change_url(obj))
    assert list(response.context["adminform"].form.fields) == ["name", "scopes", "allowed_ips",
                                                                 "rate_limit"]
    page = content(response)
    for shown in (obj.fingerprint_sha256, obj.subject, obj.issuer, obj.serial, obj.sans[0],
                  key_body(obj.certificate_pem), "Corp clients"):
        assert shown in page, shown
    assert 'name="certificate_pem"' not in page
    assert key_body(key_pem) not in page

    original = (obj.certificate_pem, obj.fingerprint_sha256, obj.expires_at, obj.ca_id)
    other = authority.create_ca(name="Other", slug="other", days=30)
    response = admin_client.post(change_url(obj), {
        "name": "renamed", "scopes": "echo:write orders:read", "allowed_ips": "10.0.0.0/8 127.0.0.0/8",
        "certificate_pem": cert_pem(foreign_certificate()[0]), "ca": other.pk,
        "expires_at_0": "2099-01-01", "expires_at_1": "00:00:00", "fingerprint_sha256": "0" * 64,
    })
    assert response.status_code == 302
    obj.refresh_from_db()
    assert (obj.name, obj.scopes, obj.allowed_ips) == (
        "renamed", "echo:write orders:read", "10.0.0.0/8 127.0.0.0/8")
    assert (obj.certificate_pem, obj.fingerprint_sha256, obj.expires_at, obj.ca_id) == original
    changed = AuditEvent.objects.get(event="credential.changed")
    assert set(changed.detail["changed"]) == {"name", "scopes", "allowed_ips"}


# -- rotate -------------------------------------------------------------------------------------


def test_rotate_issues_a_new_key_and_skips_registered_certificates(
    admin_client: Client, make_cert: MakeCert, ca: CertificateAuthority,
) -> None:
    issued, old_key = make_cert(common_name="billing-01")
    foreign, _ = foreign_certificate()
    registered, secret = make_cert(name="partner", certificate_pem=cert_pem(foreign))
    assert secret == ""

    first = admin_client.post(reverse(CHANGELIST), {
        "action": "rotate_selected", "index": "0", "_selected_action": [str(registered.pk)],
    })
    assert "--certificate NEW.pem" in content(first)  # the confirmation page says so up front

    response = run_action(admin_client, "rotate_selected", [issued, registered], grace="1h")
    assert response.status_code == 200
    [new_key] = keys_in(response)
    assert content(response).count(key_body(new_key)) == 1
    [skipped] = [m for m in messages_of(response) if "Skipped" in m]
    assert str(registered) in skipped
    assert (f"<code>manage.py rotate_credential client_cert {registered.fingerprint_sha256} "
            "--certificate NEW.pem</code>") in skipped
    assert not ClientCertificate.objects.filter(rotated_from=registered).exists()
    registered.refresh_from_db()
    assert registered.expires_at == foreign.not_valid_after_utc  # no grace period started

    successor = ClientCertificate.objects.get(rotated_from=issued)
    assert (successor.ca, successor.common_name, successor.owner) == (ca, "billing-01", issued.owner)
    assert successor.fingerprint_sha256 != issued.fingerprint_sha256
    key = serialization.load_pem_private_key(new_key.encode(), password=None)
    cert = x509.load_pem_x509_certificate(successor.certificate_pem.encode())
    assert public_der(key.public_key()) == public_der(cert.public_key())
    issued.refresh_from_db()
    assert timedelta(minutes=59) < issued.expires_at - timezone.now() <= timedelta(hours=1)
    assert status(successor.certificate_pem) == 200
    assert status(issued.certificate_pem) == 200  # during the grace period
    with freeze_time(timezone.now() + timedelta(hours=1, seconds=1)):
        assert status(issued.certificate_pem) == 401
        assert status(successor.certificate_pem) == 200

    for obj in (issued, successor):
        page = content(admin_client.get(change_url(obj)))
        assert key_body(new_key) not in page
        assert key_body(old_key) not in page


# -- bulk revoke ----------------------------------------------------------------------------------


def test_bulk_revoke_refuses_the_certificates_and_the_crl_lists_them(
    admin_client: Client, make_cert: MakeCert, ca: CertificateAuthority,
) -> None:
    first, _ = make_cert(name="one")
    second, _ = make_cert(name="two")
    kept, _ = make_cert(name="kept")
    foreign, _ = foreign_certificate()
    registered, _ = make_cert(name="partner", certificate_pem=cert_pem(foreign))
    for obj in (first, second, kept, registered):
        assert status(obj.certificate_pem) == 200

    response = run_action(admin_client, "revoke_selected", [first, second, registered],
                          reason="laptop stolen")
    assert response.status_code == 200
    assert "Revoked 3 client certificates." in messages_of(response, SUCCESS)
    for obj in (first, second, registered):
        obj.refresh_from_db()
        assert obj.revoked_reason == "laptop stolen"
        assert status(obj.certificate_pem) == 401
    assert status(kept.certificate_pem) == 200

    crl_url = reverse("django_apiauth:ca_crl", args=[ca.slug])
    assert crl_url == "/auth/ca/corp/crl.pem"
    crl = x509.load_pem_x509_crl(Client().get(crl_url).content)
    assert crl.is_signature_valid(ca.certificate.public_key())  # type: ignore[arg-type]
    assert {format(r.serial_number, "x") for r in crl} == {first.serial, second.serial}
    revoked = AuditEvent.objects.filter(event="credential.revoked")
    assert {row.credential_id for row in revoked} == {
        first.fingerprint_sha256, second.fingerprint_sha256, registered.fingerprint_sha256}


# -- the CA's private key ------------------------------------------------------------------------


def test_the_ca_private_key_is_never_in_admin_html(admin_client: Client, user: Any,
                                                   ca: CertificateAuthority, make_cert: MakeCert) -> None:
    obj, _ = make_cert()
    issued = admin_client.post(reverse(ADD), add_form(user, ca=ca.pk, name="via admin"), follow=True)
    rotated = run_action(admin_client, "rotate_selected", [obj], grace="1h")
    revoked = run_action(admin_client, "revoke_selected", [obj], reason="done")
    pages = [issued, rotated, revoked, *(admin_client.get(url, follow=True) for url in (
        reverse("admin:index"), reverse(CA_CHANGELIST), reverse(CA_ADD), change_url(ca),
        reverse("admin:django_apiauth_certificateauthority_history", args=(ca.pk,)),
        reverse("admin:django_apiauth_certificateauthority_delete", args=(ca.pk,)),  # -> change page
        reverse(CHANGELIST), reverse(ADD), change_url(obj),
        reverse("admin:django_apiauth_auditevent_changelist"),
    ))]
    assert all(page.status_code == 200 for page in pages)
    for page in pages:
        html = content(page)
        for secret in ca_secrets(ca):
            assert secret not in html
