"""Mutual TLS (DESIGN §4): forwarded client certificates against every attack the issue names.

Certificates come from the app's own CA (``create_ca`` + ``lifecycle.issue``)
or, for another CA and for certificates the CA would never issue
(serverAuth-only, no EKU, a CA certificate, odd validity windows), are built
with :mod:`cryptography` directly. They reach Django as a TLS terminator
forwards them: nginx ``$ssl_client_escaped_cert``, Envoy
``X-Forwarded-Client-Cert``, RFC 9440 ``Client-Cert``, or the WSGI
``SSL_CLIENT_CERT`` environ. The terminator connects from 127.0.0.2, the one
trusted proxy; mocks are used only for time (freezegun) and to count parses.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import cryptography.x509
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID
from django.core.exceptions import ValidationError
from django.test import override_settings
from freezegun import freeze_time

from django_apiauth.ca import x509 as ca_x509
from django_apiauth.ca.authority import create_ca
from django_apiauth.core import lifecycle
from django_apiauth.core.principal import Principal
from django_apiauth.models import AuditEvent, CertificateAuthority, ClientCertificate
from django_apiauth.schemes import client_cert

pytestmark = pytest.mark.django_db

WHOAMI = "/api/whoami/"
ECHO = "/api/echo/"
TERMINATOR = "127.0.0.2"
CHALLENGE = 'ClientCert realm="api"'
EVERY_CHALLENGE = 'Api-Key realm="api", Signature realm="api", Bearer realm="api", ClientCert realm="api"'


@pytest.fixture(autouse=True)
def trusted_terminator() -> Iterator[None]:
    with override_settings(APIAUTH_TRUSTED_PROXIES=[f"{TERMINATOR}/32"]):
        yield


# -- certificates ------------------------------------------------------------------


def pem_of(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def der_of(pem: str) -> bytes:
    """The bytes inside one PEM block, unparsed (so odd certificates survive)."""
    return base64.b64decode("".join(pem.strip().splitlines()[1:-1]))


def pem_wrap(der: bytes) -> str:
    """Any bytes in PEM armour (``-----BEGIN CERTIFICATE-----``, base64 lines of 64)."""
    body = base64.b64encode(der).decode()
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return "\n".join(["-----BEGIN CERTIFICATE-----", *lines, "-----END CERTIFICATE-----"]) + "\n"


def fingerprint(pem: str) -> str:
    return ca_x509.facts_from_der(der_of(pem)).fingerprint_sha256


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def cn(value: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, value)])


def forge(issuer: x509.Name, issuer_key: Any, *, subject: x509.Name | None = None, key: Any = None,
          not_before: datetime | None = None, not_after: datetime | None = None,
          eku: list[x509.ObjectIdentifier] | None = None, is_ca: bool = False,
          extra: list[x509.ExtensionType] = ()) -> str:
    """A certificate built with cryptography alone, as another CA (or an attacker) would."""
    now = datetime.now(UTC)
    key = key or new_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject or cn("forged client"))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - timedelta(minutes=5))
        .not_valid_after(not_after or now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if eku is None:
        eku = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    for extension in extra:
        builder = builder.add_extension(extension, critical=False)
    return pem_of(builder.sign(issuer_key, hashes.SHA256()))


@pytest.fixture(scope="module")
def foreign_ca() -> tuple[x509.Name, ec.EllipticCurvePrivateKey]:
    """Another CA, built with cryptography: never registered anywhere."""
    return cn("Foreign CA"), new_key()


@pytest.fixture
def ca() -> CertificateAuthority:
    return create_ca(name="Test CA", slug="test-ca")


@pytest.fixture
def make_cert(user: Any, ca: CertificateAuthority) -> Callable[..., ClientCertificate]:
    """Issue (or, with ``certificate_pem=``, register) a certificate through the lifecycle."""

    def make(owner: Any = None, **fields: Any) -> ClientCertificate:
        fields.setdefault("name", "mtls client")
        fields.setdefault("scopes", "echo:write")
        if not fields.get("certificate_pem"):
            fields.setdefault("ca", ca)
        credential, _private_key = lifecycle.issue(ClientCertificate, owner=owner or user, **fields)
        return credential

    return make


@pytest.fixture
def issued(make_cert: Callable[..., ClientCertificate]) -> ClientCertificate:
    return make_cert()


def pin_unchecked(owner: Any, pem: str, **fields: Any) -> ClientCertificate:
    """A row the lifecycle would refuse (no clientAuth, a CA): registered before the rule
    existed, or by a bulk import that skipped ``generate_secret``. Shows what the scheme
    itself checks, with no help from registration."""
    facts = ca_x509.facts_from_der(der_of(pem))
    return ClientCertificate.objects.create(
        owner=owner, name="legacy import", scopes="echo:write", certificate_pem=pem,
        fingerprint_sha256=facts.fingerprint_sha256, subject=facts.subject, issuer=facts.issuer,
        serial=facts.serial, not_before=facts.not_before, expires_at=facts.not_after, **fields,
    )


# -- the terminator side: one function per wire format ----------------------------------


def nginx(pem: str) -> dict[str, str]:
    """``proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert;``"""
    return {"HTTP_X_SSL_CLIENT_CERT": quote(pem)}


def xfcc(value: str) -> dict[str, str]:
    return {"HTTP_X_FORWARDED_CLIENT_CERT": value}


def envoy(pem: str, *, subject: str = "CN=mtls client") -> dict[str, str]:
    """Envoy ``forward_client_cert_details: SANITIZE_SET`` with Hash, Cert and Subject."""
    return xfcc(f'By=spiffe://cluster.local/ns/api/sa/api;Hash={fingerprint(pem)};'
                f'Cert="{quote(pem)}";Subject="{subject}";URI=')


def envoy_hash(pem: str) -> dict[str, str]:
    """Envoy with ``set_current_client_cert_details`` not asking for the certificate."""
    return xfcc(f'Hash={fingerprint(pem)};Subject="CN=mtls client"')


def rfc9440(pem: str) -> dict[str, str]:
    return {"HTTP_CLIENT_CERT": ":" + base64.b64encode(der_of(pem)).decode() + ":"}


def environ(pem: str) -> dict[str, str]:
    """What mod_ssl's ``SSLOptions +ExportCertData`` puts in the WSGI environ."""
    return {"SSL_CLIENT_CERT": pem}


HEADER_SOURCES = {"nginx": nginx, "envoy": envoy, "envoy-hash": envoy_hash, "rfc9440": rfc9440}
SOURCES = {**HEADER_SOURCES, "environ": environ}
SOURCE_NAME = {"nginx": "X-SSL-Client-Cert", "envoy": "X-Forwarded-Client-Cert",
               "envoy-hash": "X-Forwarded-Client-Cert", "rfc9440": "Client-Cert",
               "environ": "SSL_CLIENT_CERT"}


def get(client: Any, headers: dict[str, str], *, remote: str = TERMINATOR, **extra: Any) -> Any:
    return client.get(WHOAMI, REMOTE_ADDR=remote, **headers, **extra)


# -- the server side ---------------------------------------------------------------------


def only_row(**filters: Any) -> AuditEvent:
    """The one ``authenticate`` row of the request (lifecycle rows excluded)."""
    rows = list(AuditEvent.objects.filter(event="authenticate", **filters))
    assert len(rows) == 1, [(row.outcome, row.reason, row.detail) for row in rows]
    assert rows[0].scheme == "client_cert"
    return rows[0]


def assert_refused(response: Any, reason: str, code: str = "invalid_credentials", *,
                   credential_id: str | None = None) -> AuditEvent:
    assert response.status_code == 401, (response.status_code, response.content)
    assert response["WWW-Authenticate"] == CHALLENGE  # the scheme that refused, not the first class
    body = response.json()
    assert set(body) == {"detail", "code"}, body
    assert body["code"] == code and body["detail"]
    row = only_row()
    assert (row.outcome, row.reason) == ("failure", reason), row.detail
    if credential_id is not None:
        assert row.credential_id == credential_id
    return row


GENERIC_DETAIL = "Invalid credentials."


# -- success -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SOURCES)
def test_each_source_authenticates_with_principal(client, issued, name):
    source = SOURCES[name]
    # The environ is set by the WSGI server itself, so any peer address will do.
    remote = "127.0.0.1" if source is environ else TERMINATOR
    response = get(client, source(issued.certificate_pem), remote=remote)
    assert response.status_code == 200, response.content
    assert response.json() == {
        "user": "alice", "scheme": "client_cert", "credential_id": issued.fingerprint_sha256,
        "scopes": ["echo:write"],
    }
    principal = response.renderer_context["request"].auth
    assert isinstance(principal, Principal)
    assert (principal.scheme, principal.credential, principal.credential_id) == (
        "client_cert", issued, issued.fingerprint_sha256)
    assert principal.scopes == frozenset({"echo:write"})
    assert principal.claims["source"] == SOURCE_NAME[name]
    if source is not envoy_hash:  # Hash-only: the certificate itself was not sent
        assert principal.claims["subject"] == "CN=mtls client"
    row = only_row()
    assert (row.outcome, row.reason, row.credential_id, row.user_id) == (
        "success", "ok", issued.fingerprint_sha256, issued.owner_id)
    assert (row.method, row.path, row.ip) == ("GET", WHOAMI, remote)
    issued.refresh_from_db()
    assert issued.last_used_at is not None


@pytest.mark.parametrize("source", HEADER_SOURCES.values(), ids=HEADER_SOURCES.keys())
def test_post_with_scope(client, issued, source):
    response = client.post(ECHO, {"order": 42}, format="json", REMOTE_ADDR=TERMINATOR,
                           **source(issued.certificate_pem))
    assert response.status_code == 200, response.content
    assert response.json() == {"order": 42}


def test_verify_header_success_and_forwarded_client_address(client, issued):
    response = get(client, nginx(issued.certificate_pem), HTTP_X_SSL_CLIENT_VERIFY="SUCCESS",
                   HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert response.status_code == 200
    assert only_row().ip == "203.0.113.9"  # believed: the peer is the trusted terminator


def test_envoy_subject_with_separators_and_escaped_quote(client, issued):
    subject = r'CN=mtls client,O=Example\, Inc.;OU=a=b \"quoted\"'
    response = get(client, envoy(issued.certificate_pem, subject=subject))
    assert response.status_code == 200, response.content


def test_envoy_hash_in_upper_case(client, issued):
    value = f"Hash={issued.fingerprint_sha256.upper()};Cert=\"{quote(issued.certificate_pem)}\""
    assert get(client, xfcc(value)).status_code == 200


def test_certificate_registered_from_another_ca(client, make_cert, foreign_ca):
    pem = forge(*foreign_ca, subject=cn("partner"))
    credential = make_cert(certificate_pem=pem)
    assert credential.ca is None
    response = get(client, rfc9440(pem))
    assert response.status_code == 200
    assert response.json()["credential_id"] == credential.fingerprint_sha256


# -- nothing presented -------------------------------------------------------------------


def test_no_certificate_is_not_this_scheme(client):
    response = get(client, {})
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == EVERY_CHALLENGE  # every scheme the view accepts
    assert not AuditEvent.objects.filter(event="authenticate").exists()
    row = AuditEvent.objects.get(event="authorize")
    assert (row.outcome, row.reason) == ("failure", "missing")


@pytest.mark.parametrize("remote", [TERMINATOR, "198.51.100.7"])
def test_empty_nginx_header_is_absent(client, remote):
    # ssl_verify_client optional and no certificate: nginx sends "" and NONE.
    response = get(client, {"HTTP_X_SSL_CLIENT_CERT": ""}, remote=remote, HTTP_X_SSL_CLIENT_VERIFY="NONE")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == EVERY_CHALLENGE
    assert not AuditEvent.objects.filter(event="authenticate").exists()
    assert AuditEvent.objects.get(event="authorize").reason == "missing"


def test_empty_nginx_header_next_to_a_certificate_is_not_ambiguous(client, issued):
    response = get(client, {"HTTP_X_SSL_CLIENT_CERT": "", **rfc9440(issued.certificate_pem)})
    assert response.status_code == 200


@override_settings(APIAUTH_CLIENT_CERT_FROM_ENVIRON=False)
def test_environ_ignored_when_disabled(client, issued):
    response = get(client, environ(issued.certificate_pem))
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == EVERY_CHALLENGE
    assert not AuditEvent.objects.filter(event="authenticate").exists()


# -- spoofing: only the trusted terminator may forward a certificate ----------------------


SPOOFERS = {
    "loopback": dict(remote="127.0.0.1"),
    "internet": dict(remote="198.51.100.7"),
    "internet-claiming-the-terminator": dict(remote="198.51.100.7", HTTP_X_FORWARDED_FOR=TERMINATOR),
    "internet-with-forwarded-chain": dict(remote="198.51.100.7",
                                         HTTP_X_FORWARDED_FOR=f"203.0.113.9, {TERMINATOR}"),
}


@pytest.mark.parametrize("name", HEADER_SOURCES)
@pytest.mark.parametrize("spoofer", SPOOFERS.values(), ids=SPOOFERS.keys())
def test_header_from_untrusted_peer(client, issued, name, spoofer, monkeypatch):
    decoded = []
    monkeypatch.setattr(client_cert, "DECODERS", {
        fmt: (lambda value, fn=fn: decoded.append(value) or fn(value))
        for fmt, fn in client_cert.DECODERS.items()
    })
    spoofer = dict(spoofer)
    remote = spoofer.pop("remote")
    response = get(client, SOURCES[name](issued.certificate_pem), remote=remote, **spoofer)
    row = assert_refused(response, "untrusted_proxy")
    assert response.json()["detail"] == GENERIC_DETAIL
    assert (row.ip, row.user_id) == (remote, None)  # X-Forwarded-For not believed
    assert row.detail == {"headers": [SOURCE_NAME[name]]}
    assert decoded == []  # refused before parsing anything the client sent


def test_header_when_no_proxy_is_trusted(client, issued):
    with override_settings(APIAUTH_TRUSTED_PROXIES=[]):
        response = get(client, nginx(issued.certificate_pem))
    assert_refused(response, "untrusted_proxy")


def test_spoofed_header_next_to_a_real_environ_certificate(client, issued):
    headers = {**environ(issued.certificate_pem), **nginx(issued.certificate_pem)}
    assert_refused(get(client, headers, remote="198.51.100.7"), "untrusted_proxy")


# -- the terminator's verification result -----------------------------------------------


@pytest.mark.parametrize("verify", ["FAILED:certificate has expired", "FAILED:unable to verify", "NONE",
                                    "success", ""])
def test_verify_header_not_success(client, issued, verify):
    response = get(client, nginx(issued.certificate_pem), HTTP_X_SSL_CLIENT_VERIFY=verify)
    row = assert_refused(response, "certificate_not_verified")
    assert response.json()["detail"] == GENERIC_DETAIL
    assert row.detail == {"verify": verify}


# -- validity window ---------------------------------------------------------------------


@pytest.mark.parametrize("source", [nginx, envoy_hash], ids=["certificate", "hash-only"])
def test_expired(client, make_cert, source):
    credential = make_cert(expires_at=datetime.now(UTC) + timedelta(hours=1))
    headers = source(credential.certificate_pem)
    with freeze_time(credential.expires_at - timedelta(seconds=1)):
        assert get(client, headers).status_code == 200
    AuditEvent.objects.filter(event="authenticate").delete()
    with freeze_time(credential.expires_at + timedelta(seconds=1)):
        response = get(client, headers)
    assert_refused(response, "expired", credential_id=credential.fingerprint_sha256)
    assert response.json()["detail"] == GENERIC_DETAIL


@pytest.mark.parametrize("source", [nginx, envoy_hash], ids=["certificate", "hash-only"])
def test_not_yet_valid(client, issued, source):
    with freeze_time(issued.not_before - timedelta(minutes=1)):
        response = get(client, source(issued.certificate_pem))
    assert_refused(response, "not_yet_valid", credential_id=issued.fingerprint_sha256)


@pytest.mark.parametrize(("window", "reason"), [
    ((-30, -1), "expired"),
    ((1, 30), "not_yet_valid"),
], ids=["past", "future"])
def test_registered_certificate_outside_its_own_window(client, make_cert, foreign_ca, window, reason):
    now = datetime.now(UTC)
    pem = forge(*foreign_ca, not_before=now + timedelta(days=window[0]),
                not_after=now + timedelta(days=window[1]))
    credential = make_cert(certificate_pem=pem)
    response = get(client, nginx(pem))
    assert_refused(response, reason, credential_id=credential.fingerprint_sha256)
    assert response.json()["detail"] == GENERIC_DETAIL


@pytest.mark.parametrize("changes", [
    lambda c: {"expires_at": c.expires_at + timedelta(days=3650)},
    lambda c: {"expires_at": None},
    lambda c: {"not_before": c.not_before - timedelta(days=30)},
    lambda c: {"not_before": None},
], ids=["expiry-extended", "expiry-cleared", "start-earlier", "start-cleared"])
def test_edit_cannot_widen_the_certificate_window(make_cert, changes):
    """Hash-only XFCC carries no notAfter: the stored window must never exceed the certificate's."""
    credential = make_cert()
    with pytest.raises(ValidationError):
        lifecycle.update(credential, changes=changes(credential))


@pytest.mark.parametrize("source", [nginx, envoy_hash], ids=["certificate", "hash-only"])
def test_edit_may_end_the_window_earlier(client, make_cert, source):
    credential = make_cert()
    end = datetime.now(UTC) + timedelta(hours=1)
    lifecycle.update(credential, changes={"expires_at": end})
    with freeze_time(end + timedelta(seconds=1)):
        response = get(client, source(credential.certificate_pem))
    assert_refused(response, "expired", credential_id=credential.fingerprint_sha256)


def test_certificate_window_wins_over_a_row_edited_behind_the_lifecycle(client, make_cert):
    credential = make_cert(expires_at=datetime.now(UTC) + timedelta(days=1))
    ClientCertificate.objects.filter(pk=credential.pk).update(expires_at=None)
    with freeze_time(credential.expires_at + timedelta(days=1)):
        response = get(client, nginx(credential.certificate_pem))
    assert_refused(response, "expired", credential_id=credential.fingerprint_sha256)


# -- not ours: another CA, another key, not a client certificate -----------------------------


def test_certificate_of_another_ca(client, issued, foreign_ca):
    pem = forge(*foreign_ca, subject=cn("mtls client"))
    response = get(client, nginx(pem))
    row = assert_refused(response, "unknown_credential", credential_id=fingerprint(pem))
    assert row.user_id is None
    assert response.json()["detail"] == GENERIC_DETAIL


def test_twin_ca_same_name_other_key(client, issued, ca):
    """A CA with the same name (so the same issuer DN) but another key: nothing it signs is ours."""
    twin = create_ca(name="Test CA", slug="twin-ca")
    assert twin.certificate.subject == ca.certificate.subject
    pem = forge(twin.certificate.subject, twin.private_key(),
                subject=x509.load_pem_x509_certificate(issued.certificate_pem.encode()).subject)
    facts = ca_x509.facts_from_der(der_of(pem))
    assert (facts.subject, facts.issuer) == (issued.subject, issued.issuer)
    assert_refused(get(client, nginx(pem)), "unknown_credential", credential_id=facts.fingerprint_sha256)


@pytest.mark.parametrize("same_key", [False, True], ids=["another-key", "same-key-reissued"])
def test_pinning_same_ca_same_subject(client, user, ca, same_key):
    """Signed by our own CA, same subject, but not the certificate that was registered."""
    credential, private_key_pem = lifecycle.issue(ClientCertificate, owner=user, name="pinned", ca=ca)
    registered = x509.load_pem_x509_certificate(credential.certificate_pem.encode())
    key = ca_x509.load_private_key(private_key_pem.encode()) if same_key else None
    pem = forge(registered.issuer, ca.private_key(), subject=registered.subject, key=key,
                extra=[registered.extensions.get_extension_for_class(x509.SubjectAlternativeName).value])
    assert ca_x509.verify_issued_by(x509.load_pem_x509_certificate(pem.encode()), ca.certificate)
    row = assert_refused(get(client, nginx(pem)), "unknown_credential", credential_id=fingerprint(pem))
    assert row.user_id is None


NOT_CLIENT_CERTIFICATES: dict[str, dict[str, Any]] = {
    "serverAuth-only": dict(eku=[ExtendedKeyUsageOID.SERVER_AUTH]),
    "no-eku": dict(eku=[]),
    "ca-with-clientAuth": dict(is_ca=True),
}


@pytest.mark.parametrize("kind", NOT_CLIENT_CERTIFICATES.values(), ids=NOT_CLIENT_CERTIFICATES.keys())
def test_not_a_client_certificate_unregistered(client, ca, kind):
    # Registration refuses these, so they can only be presented unregistered. The scheme's
    # EKU / CA check runs, but with no stored credential the core records unknown_credential;
    # the client gets the one generic message either way.
    pem = forge(ca.certificate.subject, ca.private_key(), **kind)
    response = get(client, nginx(pem))
    assert_refused(response, "unknown_credential", credential_id=fingerprint(pem))
    assert response.json()["detail"] == GENERIC_DETAIL


def test_own_ca_certificate_presented(client, ca):
    response = get(client, nginx(ca.certificate_pem))
    assert_refused(response, "unknown_credential", credential_id=ca.fingerprint_sha256)


@pytest.mark.parametrize("kind", NOT_CLIENT_CERTIFICATES.values(), ids=NOT_CLIENT_CERTIFICATES.keys())
def test_not_a_client_certificate_registration_refused(user, ca, kind):
    pem = forge(ca.certificate.subject, ca.private_key(), **kind)
    with pytest.raises(ValidationError):
        lifecycle.issue(ClientCertificate, owner=user, name="refused", certificate_pem=pem)


@pytest.mark.parametrize("kind", NOT_CLIENT_CERTIFICATES.values(), ids=NOT_CLIENT_CERTIFICATES.keys())
def test_not_a_client_certificate_even_when_pinned(client, user, ca, kind):
    pem = forge(ca.certificate.subject, ca.private_key(), **kind)
    credential = pin_unchecked(user, pem)
    response = get(client, nginx(pem))
    row = assert_refused(response, "bad_certificate", credential_id=credential.fingerprint_sha256)
    assert response.json()["detail"] == GENERIC_DETAIL
    assert row.user_id == user.pk
    # Which rule failed (the "client_auth" key is not mistaken for a secret and redacted).
    assert row.detail == {"is_ca": kind.get("is_ca", False), "client_auth": "eku" not in kind}


def test_own_ca_certificate_even_when_pinned(client, user, ca):
    pin_unchecked(user, ca.certificate_pem)
    assert_refused(get(client, nginx(ca.certificate_pem)), "bad_certificate",
                   credential_id=ca.fingerprint_sha256)


# -- credential state -----------------------------------------------------------------------


@pytest.mark.parametrize("source", [nginx, envoy_hash, rfc9440], ids=["nginx", "envoy-hash", "rfc9440"])
def test_revoked(client, issued, source):
    assert get(client, source(issued.certificate_pem)).status_code == 200
    lifecycle.revoke(issued, reason="laptop stolen")
    AuditEvent.objects.filter(event="authenticate").delete()
    response = get(client, source(issued.certificate_pem))
    assert_refused(response, "revoked", credential_id=issued.fingerprint_sha256)
    assert response.json()["detail"] == GENERIC_DETAIL


def test_inactive_owner(client, issued):
    issued.owner.is_active = False
    issued.owner.save()
    assert_refused(get(client, nginx(issued.certificate_pem)), "inactive_owner",
                   credential_id=issued.fingerprint_sha256)


def test_insufficient_scope(client, make_cert):
    credential = make_cert(scopes="orders:read")
    response = client.post(ECHO, {"a": 1}, format="json", REMOTE_ADDR=TERMINATOR,
                           **nginx(credential.certificate_pem))
    assert response.status_code == 403
    assert response.json()["code"] == "insufficient_scope"
    assert response.json()["required_scopes"] == ["echo:write"]
    row = AuditEvent.objects.get(outcome="failure")
    assert (row.event, row.scheme, row.reason, row.credential_id) == (
        "authorize", "client_cert", "insufficient_scope", credential.fingerprint_sha256)


@pytest.mark.parametrize(("forwarded_for", "allowed"), [
    ("203.0.113.5", True),
    ("198.51.100.1, 203.0.113.5", True),  # only the right-most, untrusted hop counts
    ("203.0.113.5, 198.51.100.9", False),  # a client-supplied left-most value is not believed
    (None, False),  # the terminator's own address is not the client's
], ids=["client-allowed", "forged-left-hop", "allowed-then-other", "no-forwarded-for"])
def test_ip_allow_list_uses_forwarded_client_address(client, make_cert, forwarded_for, allowed):
    credential = make_cert(allowed_ips="203.0.113.0/24")
    extra = {"HTTP_X_FORWARDED_FOR": forwarded_for} if forwarded_for else {}
    response = get(client, nginx(credential.certificate_pem), **extra)
    if allowed:
        assert response.status_code == 200
        assert only_row().ip == "203.0.113.5"
    else:
        row = assert_refused(response, "ip_not_allowed", credential_id=credential.fingerprint_sha256)
        assert row.ip == (forwarded_for.split(", ")[-1] if forwarded_for else TERMINATOR)


# -- malformed: refused before any lookup, never a 500 ---------------------------------------


def _truncate_body(pem: str) -> str:
    lines = pem.strip().splitlines()
    return "\n".join([lines[0], *lines[1:-1][:-1], lines[-1]]) + "\n"


def _private_key_pem(_pem: str) -> str:
    return ca_x509.private_key_pem(new_key())


MALFORMED_PEM: dict[str, Callable[[str], str]] = {
    "truncated": lambda pem: pem[: len(pem) // 2],
    "truncated-body": _truncate_body,
    "no-end-line": lambda pem: pem.replace("-----END CERTIFICATE-----", ""),
    "junk-after-end": lambda pem: pem + "junk\n",
    "junk-before-begin": lambda pem: "subject=CN=x\n" + pem,
    "two-certificates": lambda pem: pem + pem,
    "private-key": _private_key_pem,
    "empty-block": lambda pem: "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
    "bad-base64": lambda pem: pem.replace("M", "*", 1),
    "non-ascii-in-body": lambda pem: pem.replace("M", "é", 1),
    "trailing-der-bytes": lambda pem: pem_wrap(der_of(pem) + b"\x00\x00"),
    "truncated-der": lambda pem: pem_wrap(der_of(pem)[:-10]),
}


@pytest.mark.parametrize("edit", MALFORMED_PEM.values(), ids=MALFORMED_PEM.keys())
@pytest.mark.parametrize("carrier", ["nginx", "environ"])
def test_malformed_pem(client, issued, edit, carrier):
    pem = edit(issued.certificate_pem)
    headers = nginx(pem) if carrier == "nginx" else environ(pem)
    row = assert_refused(get(client, headers), "malformed", "malformed_credentials")
    assert row.user_id is None and row.credential_id == ""


@pytest.mark.parametrize("value", [
    pytest.param(lambda pem: quote(quote(pem)), id="double-encoded"),
    pytest.param(lambda pem: quote(der_of(pem)), id="der-url-encoded"),
    pytest.param(lambda pem: base64.b64encode(der_of(pem)).decode(), id="bare-base64-der"),
    pytest.param(lambda pem: quote(pem).replace("%0A", "%0", 1) + "%zz%", id="broken-escapes"),
])
def test_malformed_nginx_value(client, issued, value):
    response = get(client, {"HTTP_X_SSL_CLIENT_CERT": value(issued.certificate_pem)})
    assert_refused(response, "malformed", "malformed_credentials")


def _b64(data: bytes) -> str:
    return ":" + base64.b64encode(data).decode() + ":"


MALFORMED_RFC9440: dict[str, Callable[[str], str]] = {
    "no-colons": lambda pem: base64.b64encode(der_of(pem)).decode(),
    "a-string": lambda pem: '"' + base64.b64encode(der_of(pem)).decode() + '"',
    "an-integer": lambda pem: "42",
    "a-list": lambda pem: _b64(der_of(pem)) + ", " + _b64(der_of(pem)),
    "bad-base64": lambda pem: ":not base64!:",
    "truncated-der": lambda pem: _b64(der_of(pem)[:-10]),
    "der-with-trailing-junk": lambda pem: _b64(der_of(pem) + b"\x00\x00"),
    "pem-inside": lambda pem: _b64(pem.encode()),
    "private-key-der": lambda pem: _b64(new_key().private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())),
    "empty-bytes": lambda pem: "::",
    "non-latin-1": lambda pem: ":€:",
}


@pytest.mark.parametrize("value", MALFORMED_RFC9440.values(), ids=MALFORMED_RFC9440.keys())
def test_malformed_client_cert_header(client, issued, value):
    response = get(client, {"HTTP_CLIENT_CERT": value(issued.certificate_pem)})
    row = assert_refused(response, "malformed", "malformed_credentials")
    assert row.detail["source"] == "Client-Cert"


@pytest.mark.parametrize("value", [
    "Hash=" + "0" * 63,
    "Hash=" + "g" * 64,
    "Subject=\"CN=x\"",
    "Cert=",
    "Hash",
    "=abc",
    "Cert=\"unterminated",
    "Subject=\"CN=x\"junk",
    "Subject=CN=\"x\"",
    "Hash=a;Hash=b",
    "Hash=" + "0" * 64 + ",",
], ids=["hash-63", "hash-not-hex", "no-cert-no-hash", "empty-cert", "no-equals", "no-key",
        "unterminated-quote", "junk-after-quote", "quote-in-unquoted", "repeated-key", "trailing-comma"])
def test_malformed_xfcc(client, value):
    row = assert_refused(get(client, xfcc(value)), "malformed", "malformed_credentials")
    assert row.detail["source"] == "X-Forwarded-Client-Cert"


def test_xfcc_two_elements(client, issued, make_cert):
    """With SANITIZE_SET Envoy sends one element; two mean one was appended."""
    other = make_cert(name="second")
    value = (envoy(issued.certificate_pem)["HTTP_X_FORWARDED_CLIENT_CERT"] + ","
             + envoy(other.certificate_pem)["HTTP_X_FORWARDED_CLIENT_CERT"])
    row = assert_refused(get(client, xfcc(value)), "malformed", "malformed_credentials")
    assert row.detail["problem"] == "expected exactly one XFCC element"


def test_xfcc_hash_not_matching_cert(client, issued, make_cert):
    other = make_cert(name="second")
    value = f'Hash={other.fingerprint_sha256};Cert="{quote(issued.certificate_pem)}"'
    row = assert_refused(get(client, xfcc(value)), "malformed", "malformed_credentials")
    assert row.detail["problem"] == "XFCC Hash does not match Cert"


def test_xfcc_malformed_cert(client, issued):
    value = f'Hash={issued.fingerprint_sha256};Cert="{quote(issued.certificate_pem + "junk")}"'
    assert_refused(get(client, xfcc(value)), "malformed", "malformed_credentials")


#: Each takes (attacker hash, attacker Cert, victim hash, victim Cert).
INJECTIONS: dict[str, Callable[[str, str, str, str], str]] = {
    "cert-in-subject": lambda a, a_cert, v, v_cert: f'Hash={a};Cert="{a_cert}";Subject="CN=x;Cert={v_cert}"',
    "cert-first-in-subject": lambda a, a_cert, v, v_cert: (
        f'Subject="CN=x;Hash={v};Cert={v_cert}";Hash={a};Cert="{a_cert}"'),
    "hash-in-subject": lambda a, a_cert, v, v_cert: f'Hash={a};Subject="CN=x;Hash={v}"',
    "element-in-subject": lambda a, a_cert, v, v_cert: f'Hash={a};Subject="CN=x,Hash={v}"',
    "escaped-quote-in-subject": lambda a, a_cert, v, v_cert: (
        f'Hash={a};Cert="{a_cert}";Subject="CN=x\\";Hash={v};Cert={v_cert};x=\\""'),
}


@pytest.mark.parametrize("template", INJECTIONS.values(), ids=INJECTIONS.keys())
def test_xfcc_injection_inside_a_quoted_value(client, issued, ca, template):
    """A client-chosen subject (a signed CSR keeps its CN) that carries ``;Cert=`` or ``;Hash=``
    must not be taken as the certificate: the attacker is who their own certificate says."""
    attacker_pem = forge(ca.certificate.subject, ca.private_key(), subject=cn("attacker"))
    value = template(fingerprint(attacker_pem), quote(attacker_pem),
                     issued.fingerprint_sha256, quote(issued.certificate_pem))
    parsed = client_cert.parse_xfcc(value)
    assert len(parsed) == 1 and parsed[0]["subject"].startswith("CN=x")
    response = get(client, xfcc(value))
    row = assert_refused(response, "unknown_credential", credential_id=fingerprint(attacker_pem))
    assert row.user_id is None


def test_xfcc_unquoted_injection_is_a_repeated_key(client, issued, ca):
    attacker_pem = forge(ca.certificate.subject, ca.private_key(), subject=cn("attacker"))
    value = (f'Hash={fingerprint(attacker_pem)};Cert="{quote(attacker_pem)}";'
             f'Subject=CN=x;Cert="{quote(issued.certificate_pem)}"')
    row = assert_refused(get(client, xfcc(value)), "malformed", "malformed_credentials")
    assert row.detail["problem"] == "repeated XFCC key"


@pytest.mark.parametrize("source", SOURCES.values(), ids=SOURCES.keys())
def test_64kb_value(client, issued, source):
    headers = source(issued.certificate_pem)
    [(name, value)] = headers.items()
    response = get(client, {name: value + " " * 64 * 1024})
    row = assert_refused(response, "malformed", "malformed_credentials")
    assert row.detail["length"] > 64 * 1024


def _odd_certificate_pem(ca: CertificateAuthority, kind: str) -> str:
    """Certificates that load but whose contents cryptography refuses when read.

    A TLS terminator with ``ssl_verify_client optional_no_ca`` forwards them; the
    signatures of the byte-edited ones no longer verify, which nothing here checks.
    """
    if kind == "unparsable-basic-constraints":
        now = datetime.now(UTC)
        key = new_key()
        cert = (
            x509.CertificateBuilder().subject_name(cn("odd")).issuer_name(ca.certificate.subject)
            .public_key(key.public_key()).serial_number(7)
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.UnrecognizedExtension(ExtensionOID.BASIC_CONSTRAINTS, b"\x01\x02xx"),
                           critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca.private_key(), hashes.SHA256())
        )
        return pem_of(cert)
    if kind == "duplicate-eku":
        # Built with a placeholder OID of the same length (2.5.29.99), renamed to EKU (2.5.29.37).
        pem = forge(ca.certificate.subject, ca.private_key(),
                    extra=[x509.UnrecognizedExtension(x509.ObjectIdentifier("2.5.29.99"), b"\x30\x00")])
        der = bytearray(der_of(pem))
        at = der.find(b"\x06\x03\x55\x1d\x63")
        der[at:at + 5] = b"\x06\x03\x55\x1d\x25"
        return pem_wrap(bytes(der))
    assert kind == "invalid-version"  # version [0] INTEGER 2 (v3) edited to 5
    der = bytearray(der_of(forge(ca.certificate.subject, ca.private_key())))
    at = der.find(b"\xa0\x03\x02\x01\x02")
    der[at + 4] = 5
    return pem_wrap(bytes(der))


ODD_CERTIFICATES = ["unparsable-basic-constraints", "duplicate-eku", "invalid-version"]


@pytest.mark.parametrize("source", [nginx, rfc9440], ids=["nginx", "rfc9440"])
@pytest.mark.parametrize("kind", ODD_CERTIFICATES)
def test_certificate_that_cryptography_cannot_read_is_malformed(client, ca, kind, source, caplog):
    response = get(client, source(_odd_certificate_pem(ca, kind)))
    assert_refused(response, "malformed", "malformed_credentials")
    assert "Unexpected error" not in caplog.text  # not internal_error with a traceback per request


@pytest.mark.parametrize("value", ["\x00", "%00", "\u202e", "-----BEGIN CERTIFICATE-----", ";;;", "\\"],
                         ids=repr)
@pytest.mark.parametrize("header", ["HTTP_X_SSL_CLIENT_CERT", "HTTP_X_FORWARDED_CLIENT_CERT",
                                    "HTTP_CLIENT_CERT", "SSL_CLIENT_CERT"])
def test_garbage_is_malformed_never_500(client, header, value):
    response = get(client, {header: value})
    assert_refused(response, "malformed", "malformed_credentials")


def test_certificate_never_copied_to_audit_or_logs(client, issued, caplog):
    caplog.set_level(logging.DEBUG)
    body = "".join(issued.certificate_pem.strip().splitlines()[1:-1])
    chunk = body[40:80]
    get(client, nginx(issued.certificate_pem))
    get(client, nginx(issued.certificate_pem + "junk"))
    get(client, rfc9440(issued.certificate_pem), remote="198.51.100.7")
    get(client, envoy(issued.certificate_pem), HTTP_X_SSL_CLIENT_VERIFY="FAILED:x")
    for row in AuditEvent.objects.filter(event="authenticate"):
        assert chunk not in str(row.detail) and quote(chunk) not in str(row.detail)
    assert chunk not in caplog.text


# -- more than one source -------------------------------------------------------------------


AMBIGUOUS = {
    "nginx+client-cert": (nginx, rfc9440),
    "nginx+environ": (nginx, environ),
    "envoy+client-cert": (envoy, rfc9440),
    "nginx+envoy-hash": (nginx, envoy_hash),
}


@pytest.mark.parametrize("sources", AMBIGUOUS.values(), ids=AMBIGUOUS.keys())
def test_two_sources_are_ambiguous(client, issued, sources):
    headers = {k: v for source in sources for k, v in source(issued.certificate_pem).items()}
    row = assert_refused(get(client, headers), "ambiguous", "ambiguous_credentials")
    assert len(row.detail["sources"]) == 2


# -- cost ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", [nginx, envoy, rfc9440, environ],
                         ids=["nginx", "envoy", "rfc9440", "environ"])
def test_decoding_is_cached(client, issued, source, monkeypatch):
    """A repeated header costs a dictionary lookup, not an ASN.1 parse (no timing here)."""
    for cached in (client_cert.decode_pem, client_cert.decode_nginx, client_cert.decode_envoy,
                   client_cert.decode_rfc9440, ca_x509._facts):
        cached.cache_clear()  # issuing the certificate parsed it already
    parsed: list[bytes] = []
    real = cryptography.x509.load_der_x509_certificate

    def spy(data: bytes, *args: Any, **kwargs: Any) -> Any:
        parsed.append(data)
        return real(data, *args, **kwargs)

    monkeypatch.setattr(cryptography.x509, "load_der_x509_certificate", spy)
    headers = source(issued.certificate_pem)
    assert get(client, headers).status_code == 200
    assert parsed == [der_of(issued.certificate_pem)]
    assert get(client, headers).status_code == 200
    assert get(client, headers).status_code == 200
    assert len(parsed) == 1
    if source is envoy:  # another header carrying the same certificate: still not parsed again
        assert get(client, envoy(issued.certificate_pem, subject="CN=other")).status_code == 200
        assert len(parsed) == 1


def test_revocation_not_cached(client, issued):
    """Only decoding is cached: the credential's state is read on every request."""
    headers = nginx(issued.certificate_pem)
    assert get(client, headers).status_code == 200
    lifecycle.revoke(issued, reason="rotated out")
    assert get(client, headers).status_code == 401


# -- Traefik (passTLSClientCert with pem: true), format "traefik" --------------------------
# Traefik 3 sends the base64 body of each PEM certificate without armour or line
# breaks, leaf first, comma-separated for a chain; Traefik 2 URL-escapes that value.

TRAEFIK_HEADER = "X-Forwarded-Tls-Client-Cert"
TRAEFIK_META = "HTTP_X_FORWARDED_TLS_CLIENT_CERT"


@pytest.fixture
def traefik_header() -> Iterator[None]:
    with override_settings(APIAUTH_CLIENT_CERT_HEADERS={TRAEFIK_HEADER: "traefik"}):
        yield


def traefik_body(pem: str) -> str:
    """What Traefik 3 puts in the header for one certificate."""
    return base64.b64encode(der_of(pem)).decode()


def traefik_get(client: Any, value: str, *, remote: str = TERMINATOR) -> Any:
    return client.get("/api/whoami/", REMOTE_ADDR=remote, **{TRAEFIK_META: value})


def traefik_refused_row(response: Any) -> AuditEvent:
    assert response.status_code == 401, response.content
    assert response["WWW-Authenticate"] == CHALLENGE
    rows = list(AuditEvent.objects.filter(event="authenticate"))
    assert len(rows) == 1 and rows[0].outcome == "failure"
    return rows[0]


@pytest.mark.parametrize("encode", [lambda v: v, lambda v: quote(v, safe="")], ids=["traefik3", "traefik2"])
def test_the_forwarded_certificate_authenticates(traefik_header, client, issued, encode):
    response = traefik_get(client, encode(traefik_body(issued.certificate_pem)))
    assert response.status_code == 200, response.content
    assert response.json()["credential_id"] == issued.fingerprint_sha256


def test_with_a_chain_the_leaf_is_the_client(traefik_header, client, issued, ca):
    chain = ",".join([traefik_body(issued.certificate_pem), traefik_body(ca.certificate_pem)])
    response = traefik_get(client, chain)
    assert response.status_code == 200, response.content
    assert response.json()["credential_id"] == issued.fingerprint_sha256


def test_a_chain_with_the_ca_first_is_the_ca_and_refused(traefik_header, client, issued, ca):
    chain = ",".join([traefik_body(ca.certificate_pem), traefik_body(issued.certificate_pem)])
    response = traefik_get(client, chain)
    # The CA's own certificate is never a registered client certificate.
    assert traefik_refused_row(response).reason == "unknown_credential"


def test_an_empty_traefik_header_is_no_certificate(traefik_header, client):
    response = traefik_get(client, "")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == EVERY_CHALLENGE  # nothing was attempted
    assert not AuditEvent.objects.filter(event="authenticate").exists()


@pytest.mark.parametrize("value", [
    ",", "not base64!", "QUJD", "@@@@", "====",
    "-----BEGIN CERTIFICATE-----MIIB-----END CERTIFICATE-----",
    "A" * 10_000,
], ids=["comma", "not-base64", "not-der", "symbols", "padding", "pem-armour", "junk"])
def test_malformed_values_are_refused(traefik_header, client, value):
    assert traefik_refused_row(traefik_get(client, value)).reason == "malformed"


def test_trailing_junk_after_the_certificate_is_refused(traefik_header, client, issued):
    value = traefik_body(issued.certificate_pem) + "AAAA"
    assert traefik_refused_row(traefik_get(client, value)).reason == "malformed"


def test_the_header_from_an_untrusted_peer_is_refused(traefik_header, client, issued):
    response = traefik_get(client, traefik_body(issued.certificate_pem), remote="198.51.100.7")
    row = traefik_refused_row(response)
    assert row.reason == "untrusted_proxy"


def test_the_traefik_format_is_known_to_the_system_check(traefik_header):
    from django.core import checks

    errors = [e for e in checks.run_checks() if e.id == "apiauth.E008"]
    assert errors == []
