"""Management commands for mutual TLS (issue #4 items 1 and 6, DESIGN §6).

``create_ca``, ``issue_client_cert`` (server key, ``--csr``, ``--certificate``),
``rotate_credential`` / ``revoke_credential`` with kind ``client_cert``,
``export_crl`` and ``reencrypt_secrets`` for the CA key. Every issued
certificate is parsed with :mod:`cryptography` and proven by authenticating
``/api/whoami/`` the way nginx forwards it (``$ssl_client_escaped_cert`` from a
trusted proxy).
"""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone
from freezegun import freeze_time

from django_apiauth.ca import x509 as ca_x509
from django_apiauth.core import encryption
from django_apiauth.management.commands import issue_client_cert
from django_apiauth.models import AuditEvent, CertificateAuthority, ClientCertificate

pytestmark = pytest.mark.django_db

WHOAMI = "/api/whoami/"
PROXY = "127.0.0.2"
OLD_KEY = "old-encryption-key-0123456789abcdef0123456789"
NEW_KEY = "new-encryption-key-fedcba9876543210fedcba9876"


# -- helpers ----------------------------------------------------------------------


def run(*args: str, stderr: Any = None) -> str:
    """Run a command; return its stdout (stderr must stay empty unless captured)."""
    out, err = StringIO(), stderr if stderr is not None else StringIO()
    call_command(*args, stdout=out, stderr=err)
    if stderr is None:
        assert err.getvalue() == ""
    return out.getvalue()


def run_json(*args: str, stderr: Any = None) -> dict[str, Any]:
    output = run(*args, "--json", stderr=stderr)
    assert output.count("\n") == 1, "one JSON object on one line"
    return json.loads(output)  # type: ignore[no-any-return]


def whoami(client: Any, cert_pem: str) -> Any:
    """The request nginx makes with ``proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert``."""
    with override_settings(APIAUTH_TRUSTED_PROXIES=[f"{PROXY}/32"]):
        return client.get(WHOAMI, REMOTE_ADDR=PROXY, HTTP_X_SSL_CLIENT_CERT=quote(cert_pem))


def status(client: Any, cert_pem: str) -> int:
    return whoami(client, cert_pem).status_code  # type: ignore[no-any-return]


def last_failure_reason() -> str:
    row = AuditEvent.objects.filter(event="authenticate", outcome="failure").order_by("-id").first()
    assert row is not None
    return row.reason


def load_cert(pem: str | bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem if isinstance(pem, bytes) else pem.encode())


def public_der(key: Any) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def pem_blocks(output: str, kind: str) -> list[str]:
    """The ``-----BEGIN kind-----`` blocks printed in ``output``."""
    blocks, current = [], None
    for line in output.splitlines():
        if line == f"-----BEGIN {kind}-----":
            current = [line]
        elif current is not None:
            current.append(line)
            if line == f"-----END {kind}-----":
                blocks.append("\n".join(current) + "\n")
                current = None
    return blocks


def mode(path: str | Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def make_csr(key: Any, common_name: str | None = "laptop") -> str:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else [])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def foreign_client_cert(common_name: str = "partner", *, client_auth: bool = True) -> tuple[str, Any]:
    """A client certificate of another CA (not in the database), and that CA's certificate."""
    other_key = ca_x509.new_private_key("ec")
    other_ca = ca_x509.build_ca("Partner CA", 365, other_key)
    client_key = ca_x509.new_private_key("ec")
    if client_auth:
        cert = ca_x509.build_client_certificate(
            ca_cert=other_ca, ca_key=other_key, public_key=client_key.public_key(),
            common_name=common_name, not_after=datetime.now(UTC) + timedelta(days=30),
            owner_uri="urn:partner:client",
        )
    else:  # a TLS server certificate: serverAuth only
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(other_ca.subject)
            .public_key(client_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(other_key, hashes.SHA256())
        )
    return ca_x509.certificate_pem(cert), other_ca


@pytest.fixture
def ca(db: Any) -> CertificateAuthority:
    data = run_json("create_ca", "--name", "Example API clients", "--slug", "clients")
    return CertificateAuthority.objects.get(slug=data["slug"])


def issue(*args: str, stderr: Any = None) -> dict[str, Any]:
    return run_json("issue_client_cert", "--owner", "alice", "--name", "ci", "--common-name",
                    "ci-runner", *args, stderr=stderr)


# -- create_ca --------------------------------------------------------------------


def test_create_ca_json_writes_the_public_certificate(db, tmp_path):
    data = run_json("create_ca", "--name", "Example API clients", "--slug", "clients",
                    "--days", "30", "--out", str(tmp_path / "pki"))
    ca = CertificateAuthority.objects.get(slug="clients")
    assert data["slug"] == "clients" and data["name"] == "Example API clients"
    assert data["fingerprint_sha256"] == ca.fingerprint_sha256
    assert data["not_after"] == ca.not_after.isoformat()
    assert data["cert_path"] == str(tmp_path / "pki" / "clients.ca.pem")
    assert "certificate_pem" not in data
    assert Path(data["cert_path"]).read_text() == ca.certificate_pem
    assert mode(data["cert_path"]) == 0o644
    cert = load_cert(ca.certificate_pem)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Example API clients"
    assert cert.fingerprint(hashes.SHA256()).hex() == ca.fingerprint_sha256
    assert timedelta(days=29) < ca.not_after - timezone.now() <= timedelta(days=30)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    # The key is stored encrypted and never shown.
    assert "PRIVATE" not in json.dumps(data) and "PRIVATE" not in ca.private_key_encrypted
    assert isinstance(ca.private_key(), ec.EllipticCurvePrivateKey)
    [row] = AuditEvent.objects.filter(event="ca.created")
    assert (row.credential_id, row.outcome) == ("clients", "success")


def test_create_ca_human_prints_the_certificate_only(db):
    output = run("create_ca", "--name", "Clients", "--slug", "clients", "--key-type", "rsa")
    ca = CertificateAuthority.objects.get(slug="clients")
    assert "Created certificate authority 'clients'" in output
    assert pem_blocks(output, "CERTIFICATE") == [ca.certificate_pem]
    assert "PRIVATE KEY" not in output
    assert "ssl_client_certificate" in output and "export_crl --ca clients" in output
    assert isinstance(ca.private_key(), rsa.RSAPrivateKey)


def test_create_ca_json_without_out_has_the_certificate(db):
    data = run_json("create_ca", "--name", "Clients", "--slug", "clients")
    assert data["cert_path"] is None
    assert data["certificate_pem"] == CertificateAuthority.objects.get().certificate_pem


@pytest.mark.parametrize(("args", "message"), [
    (("--slug", "clients"), "A certificate authority with slug 'clients' already exists"),
    (("--slug", "not a slug"), "--slug may contain only letters"),
    (("--slug", "x", "--days", "0"), "--days must be between 1"),
    (("--slug", "x", "--name", "n" * 65), "--name is 65 characters long"),
    (("--slug", "x", "--name", "  "), "--name must not be blank"),
    (("--slug", "x", "--out", "FILE"), "--out: cannot write to"),
    (("--slug", "x", "--key-type", "dsa"), "invalid choice"),
])
def test_create_ca_bad_input(ca, tmp_path, args, message):
    (tmp_path / "file").write_text("not a directory")
    args = tuple(str(tmp_path / "file" / "sub") if a == "FILE" else a for a in args)
    if "--name" not in args:
        args = ("--name", "Other", *args)
    with pytest.raises(CommandError) as excinfo:
        run("create_ca", *args)
    assert message in str(excinfo.value)
    assert CertificateAuthority.objects.count() == 1


# -- issue_client_cert: the server generates the key -----------------------------


def test_issue_out_writes_cert_and_key_files_that_authenticate(user, ca, client, tmp_path):
    data = issue("--scopes", "echo:write", "--days", "30", "--out", str(tmp_path))
    obj = ClientCertificate.objects.get(fingerprint_sha256=data["id"])
    stem = data["id"][:16]
    assert data["cert_path"] == str(tmp_path / f"{stem}.crt.pem")
    assert data["key_path"] == str(tmp_path / f"{stem}.key.pem")
    assert data["p12_path"] is None
    assert "private_key" not in data and "certificate_pem" not in data and "secret" not in data
    assert (mode(data["cert_path"]), mode(data["key_path"])) == (0o644, 0o600)
    assert {k: data[k] for k in ("kind", "name", "owner", "scopes", "ca", "common_name", "key_type")} == {
        "kind": "client_cert", "name": "ci", "owner": "alice", "scopes": ["echo:write"],
        "ca": "clients", "common_name": "ci-runner", "key_type": "ec",
    }

    cert_pem = Path(data["cert_path"]).read_text()
    cert = load_cert(cert_pem)
    key = serialization.load_pem_private_key(Path(data["key_path"]).read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert public_der(cert.public_key()) == public_der(key.public_key())
    assert cert.fingerprint(hashes.SHA256()).hex() == data["fingerprint_sha256"] == data["id"]
    assert ExtendedKeyUsageOID.CLIENT_AUTH in cert.extensions.get_extension_for_class(
        x509.ExtendedKeyUsage).value
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "ci-runner"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"urn:django-apiauth:user:{user.pk}"]
    cert.verify_directly_issued_by(ca.certificate)
    assert timedelta(days=29) < cert.not_valid_after_utc - timezone.now() <= timedelta(days=30)
    assert data["expires_at"] == obj.expires_at.isoformat() == cert.not_valid_after_utc.isoformat()
    # The key is not stored on the server.
    assert obj.certificate_pem == cert_pem
    assert key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode() not in str(
        ClientCertificate.objects.values().get(pk=obj.pk))

    response = whoami(client, cert_pem)
    assert response.status_code == 200, response.content
    assert response.json() == {"user": "alice", "scheme": "client_cert", "credential_id": data["id"],
                               "scopes": ["echo:write"]}
    [row] = AuditEvent.objects.filter(event="credential.issued")
    assert (row.scheme, row.credential_id, row.detail) == (
        "client_cert", data["id"], {"actor": None, "via": "cli"})


def test_issue_human_prints_cert_and_key_once(user, ca, client):
    output = run("issue_client_cert", "--owner", "alice", "--name", "ci", "--common-name", "ci-runner")
    [obj] = ClientCertificate.objects.all()
    [cert_pem] = pem_blocks(output, "CERTIFICATE")
    [key_pem] = pem_blocks(output, "PRIVATE KEY")
    assert output.count("BEGIN PRIVATE KEY") == 1
    assert f"Issued client certificate {obj.fingerprint_sha256[:16]}" in output
    assert "will not be shown again" in output
    assert "subject:" in output and "CN=ci-runner" in output
    assert cert_pem == obj.certificate_pem
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    assert public_der(key.public_key()) == public_der(load_cert(cert_pem).public_key())
    assert timedelta(days=364) < obj.expires_at - timezone.now() <= timedelta(days=365)  # default
    assert status(client, cert_pem) == 200


def test_issue_json_without_out_has_the_pems(user, ca, client):
    data = issue("--key-type", "rsa")
    assert (data["cert_path"], data["key_path"], data["p12_path"]) == (None, None, None)
    key = serialization.load_pem_private_key(data["private_key"].encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 3072
    assert data["key_type"] == "rsa"
    assert public_der(load_cert(data["certificate_pem"]).public_key()) == public_der(key.public_key())
    assert status(client, data["certificate_pem"]) == 200


def test_issue_pkcs12_with_password_from_env(user, ca, tmp_path, monkeypatch):
    monkeypatch.setenv("P12_PASSWORD", "correct horse")
    data = issue("--out", str(tmp_path), "--p12-password-env", "P12_PASSWORD")
    assert data["p12_path"] == str(tmp_path / f"{data['id'][:16]}.p12")
    assert mode(data["p12_path"]) == 0o600
    blob = Path(data["p12_path"]).read_bytes()
    key, cert, extra = pkcs12.load_key_and_certificates(blob, b"correct horse")
    assert cert is not None and cert.fingerprint(hashes.SHA256()).hex() == data["id"]
    assert public_der(key.public_key()) == public_der(cert.public_key())
    assert [c.fingerprint(hashes.SHA256()).hex() for c in extra] == [ca.fingerprint_sha256]
    with pytest.raises(ValueError):
        pkcs12.load_key_and_certificates(blob, b"wrong")
    assert "correct horse" not in json.dumps(data)


def test_issue_picks_the_only_active_ca_or_asks_for_ca(user, ca):
    CertificateAuthority.objects.create(
        name="Retired", slug="retired", certificate_pem="x", fingerprint_sha256="0" * 64,
        private_key_encrypted="x", not_before=timezone.now(), not_after=timezone.now(),
        is_active=False)
    assert issue()["ca"] == "clients"  # the inactive one does not count
    run("create_ca", "--name", "Second", "--slug", "second")
    with pytest.raises(CommandError, match=r"Several active certificate authorities \(clients, second\): "
                                           "choose one with --ca SLUG"):
        issue()
    assert issue("--ca", "second")["ca"] == "second"
    with pytest.raises(CommandError, match=r"'retired' is inactive.*--ca"):
        issue("--ca", "retired")
    with pytest.raises(CommandError, match=r"No certificate authority 'nope'\. Existing: clients, "
                                           r"retired, second"):
        issue("--ca", "nope")


def test_issue_without_any_ca_names_create_ca(user):
    with pytest.raises(CommandError, match=r"No active certificate authority\. Create one with "
                                           r"`manage\.py create_ca"):
        issue()


def test_issue_warns_when_the_ca_ends_first(user, client):
    run("create_ca", "--name", "Short", "--slug", "short", "--days", "10")
    err = StringIO()
    data = issue("--days", "365", stderr=err)
    assert "expires at" in err.getvalue() and "before the validity asked for" in err.getvalue()
    ca = CertificateAuthority.objects.get()
    assert datetime.fromisoformat(data["expires_at"]) <= ca.not_after


def test_out_write_failure_revokes_the_new_certificate(user, ca, tmp_path, monkeypatch):
    def fail(path: Path, data: bytes, mode: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(issue_client_cert, "write_exclusive", fail)
    with pytest.raises(CommandError, match=r"No space left on device.*was revoked"):
        issue("--out", str(tmp_path))
    [obj] = ClientCertificate.objects.all()
    assert obj.revoked_at is not None


# -- issue_client_cert --csr: the key never touches the server -------------------


def test_issue_from_csr(user, ca, client, tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    csr_path = tmp_path / "client.csr"
    csr_path.write_text(make_csr(key, "laptop"))
    out = tmp_path / "out"
    data = run_json("issue_client_cert", "--owner", "alice", "--name", "laptop", "--common-name",
                    "laptop", "--csr", str(csr_path), "--days", "90", "--out", str(out))
    assert data["key_path"] is None and data["p12_path"] is None
    assert sorted(p.name for p in out.iterdir()) == [f"{data['id'][:16]}.crt.pem"]
    cert_pem = Path(data["cert_path"]).read_text()
    cert = load_cert(cert_pem)
    assert public_der(cert.public_key()) == public_der(key.public_key())
    cert.verify_directly_issued_by(ca.certificate)
    assert ExtendedKeyUsageOID.CLIENT_AUTH in cert.extensions.get_extension_for_class(
        x509.ExtendedKeyUsage).value
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "laptop"
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.UniformResourceIdentifier) == [f"urn:django-apiauth:user:{user.pk}"]
    assert timedelta(days=89) < cert.not_valid_after_utc - timezone.now() <= timedelta(days=90)
    assert (data["ca"], data["common_name"], data["key_type"]) == ("clients", "laptop", "ec")
    assert status(client, cert_pem) == 200


def test_issue_from_csr_human_and_json_without_out(user, ca, client, tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr_path = tmp_path / "client.csr"
    csr_path.write_text(make_csr(key, "laptop"))
    output = run("issue_client_cert", "--owner", "alice", "--name", "laptop", "--common-name",
                 "laptop", "--csr", str(csr_path))
    assert "PRIVATE KEY" not in output and "will not be shown again" not in output
    assert "the private key stays with the client" in output
    [cert_pem] = pem_blocks(output, "CERTIFICATE")
    assert public_der(load_cert(cert_pem).public_key()) == public_der(key.public_key())
    assert ClientCertificate.objects.get().key_type == "rsa"
    assert status(client, cert_pem) == 200
    data = run_json("issue_client_cert", "--owner", "alice", "--name", "laptop 2", "--common-name",
                    "laptop", "--csr", str(csr_path))
    assert data["private_key"] is None and data["certificate_pem"].startswith("-----BEGIN CERTIFICATE")


# -- issue_client_cert --certificate: registered from another CA ----------------


def test_register_certificate_of_another_ca(user, client, tmp_path):
    cert_pem, other_ca = foreign_client_cert("partner")
    path = tmp_path / "partner.crt.pem"
    path.write_text(cert_pem)
    data = run_json("issue_client_cert", "--owner", "alice", "--name", "partner",
                    "--certificate", str(path), "--scopes", "echo:write")
    cert = load_cert(cert_pem)
    assert data["id"] == cert.fingerprint(hashes.SHA256()).hex()
    assert data["ca"] is None and data["common_name"] == "partner"
    assert data["issuer"] == other_ca.subject.rfc4514_string()
    assert data["expires_at"] == cert.not_valid_after_utc.isoformat()
    assert data["private_key"] is None and data["key_path"] is None
    response = whoami(client, cert_pem)
    assert response.status_code == 200, response.content
    assert response.json()["scheme"] == "client_cert"


def test_register_a_certificate_of_our_ca_links_it_for_the_crl(user, ca, tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    from django_apiauth.ca.authority import sign_csr

    pem = sign_csr(ca, make_csr(key, "ops"), owner=user, not_after=timezone.now() + timedelta(days=5))
    path = tmp_path / "ops.crt.pem"
    path.write_text(pem)
    data = run_json("issue_client_cert", "--owner", "alice", "--name", "ops", "--certificate", str(path))
    assert data["ca"] == "clients"


@pytest.mark.parametrize(("case", "message"), [
    ("server_cert", "--certificate: The certificate lacks the clientAuth extended key usage."),
    ("ca_cert", "--certificate: This is a CA certificate, not a client certificate."),
    ("garbage", "--certificate: expected exactly one PEM certificate"),
    ("private_key", "holds a PRIVATE key"),
    ("wrong_ca", "--certificate: This certificate was not issued by this CA."),
    ("cn_mismatch", "differs from the certificate's common name 'partner'"),
    ("with_key_type", "--key-type does not go with --certificate"),
])
def test_register_refusals(user, ca, tmp_path, case, message):
    cert_pem, other_ca = foreign_client_cert("partner", client_auth=case != "server_cert")
    contents = {
        "ca_cert": ca_x509.certificate_pem(other_ca),
        "garbage": "hello\n",
        "private_key": ca_x509.private_key_pem(ca_x509.new_private_key()),
    }
    path = tmp_path / "c.pem"
    path.write_text(contents.get(case, cert_pem))
    args = ["issue_client_cert", "--owner", "alice", "--name", "x", "--certificate", str(path)]
    args += {"wrong_ca": ["--ca", "clients"], "cn_mismatch": ["--common-name", "other"],
             "with_key_type": ["--key-type", "rsa"]}.get(case, [])
    before = AuditEvent.objects.count()
    with pytest.raises(CommandError) as excinfo:
        run(*args)
    assert message in str(excinfo.value)
    assert "BEGIN" not in str(excinfo.value)
    assert (ClientCertificate.objects.count(), AuditEvent.objects.count()) == (0, before)


# -- bad input ----------------------------------------------------------------------


ISSUE = ("issue_client_cert", "--owner", "alice", "--name", "ci", "--common-name", "ci-runner")


@pytest.mark.parametrize(("args", "message"), [
    (("issue_client_cert", "--owner", "alice", "--name", "ci"), "--common-name is required"),
    (("issue_client_cert", "--owner", "bob", "--name", "ci", "--common-name", "x"), "No user 'bob'"),
    ((*ISSUE[:-1], "c" * 65), "--common-name is 65 characters long"),
    ((*ISSUE, "--days", "0"), "--days must be at least 1"),
    ((*ISSUE, "--key-type", "dsa"), "invalid choice"),
    ((*ISSUE, "--scopes", 'bad"scope'), "--scopes: Invalid scope"),
    ((*ISSUE, "--allowed-ips", "10.0.0.0/33"), "--allowed-ips: '10.0.0.0/33' is not an IP"),
    ((*ISSUE, "--csr", "MISSING"), "--csr: cannot read"),
    ((*ISSUE, "--csr", "GARBAGE"), "--csr: GARBAGE: not a valid PEM certificate signing request"),
    ((*ISSUE, "--csr", "KEY"), "--csr: KEY holds a PRIVATE key"),
    ((*ISSUE, "--csr", "CSR_NO_CN"), "the CSR has no common name"),
    ((*ISSUE, "--csr", "CSR_WEAK"), "RSA key has 1024 bits"),
    (("issue_client_cert", "--owner", "alice", "--name", "ci", "--common-name", "desk", "--csr", "CSR"),
     "the CSR's common name is 'laptop' but --common-name is 'desk'"),
    ((*ISSUE, "--csr", "CSR", "--key-type", "ec"), "--key-type does not go with --csr"),
    ((*ISSUE, "--csr", "CSR", "--certificate", "CSR"), "not allowed with argument"),
    ((*ISSUE, "--p12-password-env", "P12_PASSWORD"), "--p12-password-env needs --out DIR"),
    ((*ISSUE, "--out", "DIR", "--p12-password-env", "UNSET_VARIABLE"), "UNSET_VARIABLE is not set"),
    ((*ISSUE, "--out", "DIR", "--csr", "CSR", "--p12-password-env", "P12_PASSWORD"),
     "--p12-password-env needs a key generated by the server"),
    ((*ISSUE, "--out", "UNWRITABLE"), "--out: cannot write to"),
    ((*ISSUE, "--ca", "nope"), "No certificate authority 'nope'"),
])
def test_bad_input_is_a_command_error(make_user, ca, tmp_path, monkeypatch, args, message):
    make_user("alice")
    monkeypatch.setenv("P12_PASSWORD", "pw")
    monkeypatch.delenv("UNSET_VARIABLE", raising=False)
    (tmp_path / "file").write_text("x")
    files = {
        "MISSING": tmp_path / "nope.csr",
        "GARBAGE": tmp_path / "garbage.csr",
        "KEY": tmp_path / "key.pem",
        "CSR": tmp_path / "laptop.csr",
        "CSR_NO_CN": tmp_path / "nocn.csr",
        "CSR_WEAK": tmp_path / "weak.csr",
        "DIR": tmp_path / "out",
        "UNWRITABLE": tmp_path / "file" / "sub",
    }
    files["GARBAGE"].write_text(
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")
    files["KEY"].write_text(ca_x509.private_key_pem(ca_x509.new_private_key()))
    files["CSR"].write_text(make_csr(ec.generate_private_key(ec.SECP256R1()), "laptop"))
    files["CSR_NO_CN"].write_text(make_csr(ec.generate_private_key(ec.SECP256R1()), None))
    files["CSR_WEAK"].write_text(make_csr(
        rsa.generate_private_key(public_exponent=65537, key_size=1024), "ci-runner"))  # noqa: S505
    args = tuple(str(files[a]) if a in files else a for a in args)
    message = message.replace("GARBAGE", str(files["GARBAGE"])).replace("KEY", str(files["KEY"]))
    before = AuditEvent.objects.count()
    with pytest.raises(CommandError) as excinfo:
        run(*args)
    assert message in str(excinfo.value)
    assert (ClientCertificate.objects.count(), AuditEvent.objects.count()) == (0, before)


# -- rotate_credential client_cert -------------------------------------------------


def test_rotate_client_cert_both_work_during_grace(user, ca, client, tmp_path):
    old = issue("--scopes", "echo:write", "--days", "30")
    data = run_json("rotate_credential", "client_cert", old["id"], "--grace", "1h")
    assert data["rotated_from"] == old["id"] and data["id"] != old["id"]
    assert data["scopes"] == ["echo:write"] and data["ca"] == "clients"
    assert data["common_name"] == "ci-runner"
    new_pem, new_key = data["certificate_pem"], data["private_key"]
    assert data["secret"] == new_key and new_key != old["private_key"]
    assert (data["cert_path"], data["key_path"]) == (None, None)
    new_cert = load_cert(new_pem)
    new_cert.verify_directly_issued_by(ca.certificate)
    key = serialization.load_pem_private_key(new_key.encode(), password=None)
    assert public_der(key.public_key()) == public_der(new_cert.public_key())
    assert public_der(new_cert.public_key()) != public_der(load_cert(old["certificate_pem"]).public_key())
    # Same lifetime as the predecessor's.
    assert timedelta(days=29) < new_cert.not_valid_after_utc - timezone.now() <= timedelta(days=30)
    assert status(client, old["certificate_pem"]) == 200
    assert status(client, new_pem) == 200
    grace_until = datetime.fromisoformat(data["grace_until"])
    with freeze_time(grace_until + timedelta(seconds=1)):
        assert status(client, old["certificate_pem"]) == 401
        assert last_failure_reason() == "expired"
        assert status(client, new_pem) == 200
    successor = ClientCertificate.objects.get(fingerprint_sha256=data["id"])
    assert successor.rotated_from.fingerprint_sha256 == old["id"]


def test_rotate_client_cert_out_and_human_output(user, ca, client, tmp_path, monkeypatch):
    old = issue()
    monkeypatch.setenv("P12_PASSWORD", "pw")
    output = run("rotate_credential", "client_cert", old["id"], "--out", str(tmp_path),
                 "--p12-password-env", "P12_PASSWORD")
    successor = ClientCertificate.objects.get(rotated_from__fingerprint_sha256=old["id"])
    stem = successor.fingerprint_sha256[:16]
    assert f"Rotated client_cert {old['id'][:16]}" in output
    assert "PRIVATE KEY" not in output and "BEGIN CERTIFICATE" not in output
    assert str(tmp_path / f"{stem}.key.pem") in output
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{stem}.crt.pem", f"{stem}.key.pem",
                                                          f"{stem}.p12"]
    assert mode(tmp_path / f"{stem}.key.pem") == 0o600
    _key, cert, _extra = pkcs12.load_key_and_certificates((tmp_path / f"{stem}.p12").read_bytes(), b"pw")
    assert cert.fingerprint(hashes.SHA256()).hex() == successor.fingerprint_sha256
    assert status(client, (tmp_path / f"{stem}.crt.pem").read_text()) == 200


def test_rotate_client_cert_with_csr(user, ca, client, tmp_path):
    old = issue()
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "new.csr").write_text(make_csr(key, "ci-runner-2"))
    data = run_json("rotate_credential", "client_cert", old["id"], "--csr", str(tmp_path / "new.csr"),
                    "--out", str(tmp_path / "out"))
    assert data["key_path"] is None and "private_key" not in data
    cert_pem = Path(data["cert_path"]).read_text()
    assert public_der(load_cert(cert_pem).public_key()) == public_der(key.public_key())
    assert data["common_name"] == "ci-runner-2" and data["ca"] == "clients"
    assert status(client, cert_pem) == 200


def test_rotate_registered_certificate_needs_the_new_certificate(user, client, tmp_path):
    old_pem, _ = foreign_client_cert("partner")
    (tmp_path / "old.pem").write_text(old_pem)
    old = run_json("issue_client_cert", "--owner", "alice", "--name", "partner",
                   "--certificate", str(tmp_path / "old.pem"))
    with pytest.raises(CommandError, match=r"registered from another CA.*--certificate FILE"):
        run("rotate_credential", "client_cert", old["id"])
    with pytest.raises(CommandError, match="--certificate: Client certificate with this SHA-256 "
                                           "fingerprint already exists"):
        run("rotate_credential", "client_cert", old["id"], "--certificate", str(tmp_path / "old.pem"))
    new_pem, _ = foreign_client_cert("partner-2")
    (tmp_path / "new.pem").write_text(new_pem)
    data = run_json("rotate_credential", "client_cert", old["id"], "--certificate",
                    str(tmp_path / "new.pem"), "--grace", "1h")
    assert data["private_key"] is None and data["common_name"] == "partner-2"
    assert status(client, old_pem) == 200
    assert status(client, new_pem) == 200


def test_rotate_options_of_other_kinds(user, ca, tmp_path):
    key = run_json("issue_api_key", "--owner", "alice", "--name", "k")
    with pytest.raises(CommandError, match="--out applies only to client_cert credentials"):
        run("rotate_credential", "api_key", key["id"], "--out", str(tmp_path))
    old = issue()
    CertificateAuthority.objects.filter(pk=ca.pk).update(is_active=False)
    with pytest.raises(CommandError, match="'clients' of this certificate is inactive"):
        run("rotate_credential", "client_cert", old["id"])
    assert ClientCertificate.objects.count() == 1


# -- revoke_credential client_cert and export_crl -----------------------------------


def test_revoke_refuses_the_next_request_and_lists_the_serial_in_the_crl(user, ca, client, tmp_path):
    data = issue()
    other = issue()
    assert status(client, data["certificate_pem"]) == 200
    revoked = run_json("revoke_credential", "client_cert", data["id"], "--reason", "laptop stolen")
    assert (revoked["id"], revoked["revoked_reason"]) == (data["id"], "laptop stolen")
    assert "private_key" not in revoked
    assert status(client, data["certificate_pem"]) == 401
    assert last_failure_reason() == "revoked"
    assert status(client, other["certificate_pem"]) == 200

    crl_path = tmp_path / "nginx" / "clients.crl.pem"
    crl_path.parent.mkdir()
    exported = run_json("export_crl", "--ca", "clients", "--out", str(crl_path))
    assert (exported["ca"], exported["path"], exported["revoked"]) == ("clients", str(crl_path), 1)
    assert "crl_pem" not in exported
    crl = x509.load_pem_x509_crl(crl_path.read_bytes())
    assert crl.is_signature_valid(ca.certificate.public_key())
    assert crl.issuer == ca.certificate.subject
    serial = load_cert(data["certificate_pem"]).serial_number
    entry = crl.get_revoked_certificate_by_serial_number(serial)
    assert entry is not None
    assert crl.get_revoked_certificate_by_serial_number(
        load_cert(other["certificate_pem"]).serial_number) is None
    assert exported["next_update"] == crl.next_update_utc.isoformat()
    assert timedelta(days=6) < crl.next_update_utc - timezone.now() <= timedelta(days=7)
    assert mode(crl_path) == 0o644
    assert [p.name for p in crl_path.parent.iterdir()] == ["clients.crl.pem"]  # no temp file left


def test_export_crl_human_replaces_the_file(user, ca, tmp_path):
    crl_path = tmp_path / "clients.crl.pem"
    crl_path.write_text("old")
    output = run("export_crl", "--ca", "clients", "--out", str(crl_path))
    assert f"Wrote the CRL of 'clients' to {crl_path}: 0 revoked certificate(s)" in output
    assert "nginx -s reload" in output
    assert len(x509.load_pem_x509_crl(crl_path.read_bytes())) == 0
    # Without --out the PEM goes to stdout (`export_crl --ca clients > file`).
    printed = run("export_crl", "--ca", "clients")
    assert printed.startswith("-----BEGIN X509 CRL-----") and printed.endswith("-----END X509 CRL-----\n")
    data = run_json("export_crl", "--ca", "clients")
    assert data["path"] is None and data["crl_pem"].startswith("-----BEGIN X509 CRL-----")


def test_export_crl_of_an_inactive_ca_still_works(user, ca):
    CertificateAuthority.objects.filter(pk=ca.pk).update(is_active=False)
    assert run_json("export_crl", "--ca", "clients")["revoked"] == 0


@pytest.mark.parametrize(("args", "message"), [
    (("--ca", "nope"), "No certificate authority 'nope'. Existing: clients"),
    (("--ca", "clients", "--out", "DIR"), "is a directory; give the CRL file's path"),
    (("--ca", "clients", "--out", "MISSING_DIR"), "--out: cannot write"),
    ((), "--ca"),
])
def test_export_crl_errors(ca, tmp_path, args, message):
    paths = {"DIR": str(tmp_path), "MISSING_DIR": str(tmp_path / "missing" / "crl.pem")}
    with pytest.raises(CommandError) as excinfo:
        run("export_crl", *(paths.get(a, a) for a in args))
    assert message in str(excinfo.value)


# -- reencrypt_secrets covers the CA key ---------------------------------------------


def test_reencrypt_moves_the_ca_key_to_the_new_encryption_key(user, client, tmp_path):
    with override_settings(APIAUTH_ENCRYPTION_KEYS=[OLD_KEY]):
        run("create_ca", "--name", "Clients", "--slug", "clients")
        old_id = encryption.current_key_id()
    ca = CertificateAuthority.objects.get()
    assert encryption.key_id_of(ca.private_key_encrypted) == old_id
    with override_settings(APIAUTH_ENCRYPTION_KEYS=[NEW_KEY, OLD_KEY]):
        new_id = encryption.current_key_id()
        data = run_json("reencrypt_secrets", stderr=StringIO())
    assert (data["total"], data["reencrypted"], data["failed"]) == (1, 1, 0)
    assert data["models"]["django_apiauth.certificateauthority"] == {
        "total": 1, "reencrypted": 1, "current": 0, "failed": 0}
    ca.refresh_from_db()
    assert encryption.key_id_of(ca.private_key_encrypted) == new_id
    # The old key is no longer needed: the CA still signs certificates and CRLs.
    with override_settings(APIAUTH_ENCRYPTION_KEYS=[NEW_KEY]):
        issued = issue()
        load_cert(issued["certificate_pem"]).verify_directly_issued_by(ca.certificate)
        assert status(client, issued["certificate_pem"]) == 200
        run("revoke_credential", "client_cert", issued["id"], "--reason", "test")
        assert run_json("export_crl", "--ca", "clients")["revoked"] == 1
        again = run_json("reencrypt_secrets", stderr=StringIO())
    assert (again["reencrypted"], again["already_current"]) == (0, 1)


def test_reencrypt_reports_an_undecryptable_ca_key_by_slug(user, ca):
    with override_settings(APIAUTH_ENCRYPTION_KEYS=[NEW_KEY]):
        out, err = StringIO(), StringIO()
        with pytest.raises(CommandError, match="1 stored secret"):
            call_command("reencrypt_secrets", "--json", stdout=out, stderr=err)
        [failure] = json.loads(out.getvalue())["failures"]
        assert (failure["model"], failure["id"], failure["field"]) == (
            "django_apiauth.certificateauthority", "clients", "private_key_encrypted")
        # Issuing from it says which key is missing instead of a traceback.
        with pytest.raises(CommandError, match=r"private key of certificate authority 'clients' "
                                               r"cannot be decrypted.*APIAUTH_ENCRYPTION_KEYS"):
            run("issue_client_cert", "--owner", "alice", "--name", "x", "--common-name", "x")
        with pytest.raises(CommandError, match="cannot be decrypted"):
            run("export_crl", "--ca", "clients")
