"""Chain mode: certificates of a trusted (imported) CA are accepted without prior registration."""

import io
import json
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.test import override_settings

from django_apiauth.ca import x509 as ca_x509
from django_apiauth.ca.authority import import_ca
from django_apiauth.core import lifecycle
from django_apiauth.models import AuditEvent, ClientCertificate

pytestmark = pytest.mark.django_db

PROXY = {"REMOTE_ADDR": "127.0.0.2"}


def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@pytest.fixture
def partner_ca():
    """Another organisation's CA: we get its certificate, never its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = ca_x509.build_ca("Partner Inc CA", 365, key)
    return cert, key


def partner_cert(ca, cn, eku=(ExtendedKeyUsageOID.CLIENT_AUTH,)):
    ca_cert, ca_key = ca
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca_cert.subject)
        .public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    return ca_x509.certificate_pem(builder.sign(ca_key, hashes.SHA256()))


@pytest.fixture
def imported(partner_ca):
    return import_ca(name="Partner Inc CA", slug="partner",
                     certificate_pem=ca_x509.certificate_pem(partner_ca[0]))


def get(client, pem):
    return client.get("/api/whoami/", HTTP_X_SSL_CLIENT_CERT=quote(pem), **PROXY)


def last_reason():
    return AuditEvent.objects.filter(event="authenticate").order_by("-id").first().reason


def bind(user, slug="partner"):
    from django.contrib.auth.models import Group

    user.groups.add(Group.objects.get_or_create(name=f"apiauth-chain:{slug}")[0])
    return user


@override_settings(APIAUTH_TRUSTED_PROXIES=["127.0.0.2/32"], APIAUTH_CLIENT_CERT_CHAIN_CAS=["partner"])
def test_first_use_registers_and_authenticates(client, make_user, partner_ca, imported):
    bob = bind(make_user("bob"))
    pem = partner_cert(partner_ca, "bob")
    response = get(client, pem)
    assert response.status_code == 200, response.content
    assert response.json()["user"] == "bob"
    credential = ClientCertificate.objects.get()
    assert (credential.owner, credential.ca, credential.scopes) == (bob, imported, "")
    issued = AuditEvent.objects.get(event="credential.issued")
    assert issued.detail["via"] == "chain"
    # From now on it is pinned like any other: revocation applies.
    lifecycle.revoke(credential, reason="left the partner")
    assert get(client, pem).status_code == 401
    assert last_reason() == "revoked"
    # Deleting the revoked row does not let the certificate register again.
    credential.delete()
    assert get(client, pem).status_code == 401
    assert last_reason() == "unknown_credential"
    assert not ClientCertificate.objects.exists()


@override_settings(APIAUTH_TRUSTED_PROXIES=["127.0.0.2/32"], APIAUTH_CLIENT_CERT_CHAIN_CAS=["partner"])
def test_a_user_not_bound_to_the_ca_is_not_mapped(client, make_user, partner_ca, imported):
    bind(make_user("carol"), slug="another-partner")
    make_user("bob")
    for cn in ("bob", "carol"):
        assert get(client, partner_cert(partner_ca, cn)).status_code == 401
    assert not ClientCertificate.objects.exists()


@override_settings(APIAUTH_TRUSTED_PROXIES=["127.0.0.2/32"])
def test_without_chain_mode_the_certificate_is_unknown(client, make_user, partner_ca, imported):
    make_user("bob")
    assert get(client, partner_cert(partner_ca, "bob")).status_code == 401
    assert last_reason() == "unknown_credential"
    assert not ClientCertificate.objects.exists()


@override_settings(APIAUTH_TRUSTED_PROXIES=["127.0.0.2/32"], APIAUTH_CLIENT_CERT_CHAIN_CAS=["partner"])
@pytest.mark.parametrize("case", ["no-such-user", "inactive-user", "server-auth-only", "other-ca"])
def test_chain_mode_refusals(client, make_user, partner_ca, imported, case):
    bind(make_user("bob", is_active=case != "inactive-user"))
    if case == "no-such-user":
        pem = partner_cert(partner_ca, "mallory")
    elif case == "server-auth-only":
        pem = partner_cert(partner_ca, "bob", eku=(ExtendedKeyUsageOID.SERVER_AUTH,))
    elif case == "other-ca":
        rogue = (ca_x509.build_ca("Partner Inc CA", 365, key := ec.generate_private_key(ec.SECP256R1())), key)
        pem = partner_cert(rogue, "bob")  # same CA name, another key
    else:
        pem = partner_cert(partner_ca, "bob")
    response = get(client, pem)
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_credentials"
    assert last_reason() == "unknown_credential"
    assert not ClientCertificate.objects.exists()


@override_settings(APIAUTH_TRUSTED_PROXIES=["127.0.0.2/32"], APIAUTH_CLIENT_CERT_CHAIN_CAS=["partner"])
def test_hash_only_cannot_be_chained(client, make_user, partner_ca, imported):
    bind(make_user("bob"))
    pem = partner_cert(partner_ca, "bob")
    fingerprint = ca_x509.facts_from_der(ca_x509.pem_to_der(pem)).fingerprint_sha256
    response = client.get("/api/whoami/", HTTP_X_FORWARDED_CLIENT_CERT=f"Hash={fingerprint}", **PROXY)
    assert response.status_code == 401
    assert last_reason() == "unknown_credential"


def test_imported_ca_cannot_issue_and_has_no_crl_here(client, user, imported):
    assert not imported.can_issue
    with pytest.raises(ValidationError, match="imported without its key"):
        lifecycle.issue(ClientCertificate, owner=user, name="x", ca=imported)
    assert client.get("/auth/ca/partner/crl.pem").status_code == 404
    assert client.get("/auth/ca/partner/ca.pem").status_code == 200


def test_import_refuses_a_leaf_certificate(partner_ca):
    leaf = partner_cert(partner_ca, "bob")
    with pytest.raises(ValidationError, match="not a CA certificate"):
        import_ca(name="Leaf", slug="leaf", certificate_pem=leaf)


def test_create_ca_import_command(tmp_path, partner_ca):
    path = tmp_path / "partner.pem"
    path.write_text(ca_x509.certificate_pem(partner_ca[0]))
    out = io.StringIO()
    call_command("create_ca", "--name", "Partner Inc CA", "--slug", "partner",
                 "--import-certificate", str(path), "--json", stdout=out)
    assert json.loads(out.getvalue())["slug"] == "partner"
    assert AuditEvent.objects.get(event="ca.imported").detail["via"] == "cli"


@override_settings(APIAUTH_TRUSTED_PROXIES=["127.0.0.2/32"], APIAUTH_CLIENT_CERT_CHAIN_CAS=["partner"])
@pytest.mark.parametrize("role", ["is_staff", "is_superuser"])
def test_chain_mode_never_maps_to_staff(client, make_user, partner_ca, imported, role):
    bind(make_user("admin", **{role: True}))
    response = get(client, partner_cert(partner_ca, "admin"))
    assert response.status_code == 401
    assert not ClientCertificate.objects.exists()


def test_export_crl_refuses_an_imported_ca(imported):
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="imported without its key"):
        call_command("export_crl", "--ca", "partner", stdout=io.StringIO())
