"""RFC 9421 HTTP message signatures (DESIGN §4): a real client against every §7 attack.

Requests are signed by the independent client ``requests-http-signature``, or,
where a test needs a parameter that client does not expose (an exact
``created``, a chosen ``nonce``, no digest), by the ``http-message-signatures``
signer it is built on. The signed ``requests`` request is then delivered to
Django header for header (``deliver``), or over real HTTP to a live server.
Mocks are used only for time (freezegun) and failure injection.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from django.core.cache import caches
from django.core.exceptions import ValidationError
from django.test import override_settings
from django.utils import timezone
from freezegun import freeze_time
from http_message_signatures import HTTPMessageSigner, MappingKeyResolver
from requests_http_signature import HTTPSignatureAuth, algorithms

from django_apiauth.core import lifecycle
from django_apiauth.core.principal import Principal
from django_apiauth.models import AuditEvent, HmacSecret

pytestmark = pytest.mark.django_db

WHOAMI = "/api/whoami/"
ECHO = "/api/echo/"
ORIGIN = "http://testserver"
COVER = ("@method", "@target-uri")
CHALLENGE = 'Signature realm="api"'
PAYLOAD = {"order": 42, "note": "naïve ✓"}
#: P-256 group order, to malleate an ECDSA signature (r, s) into (r, n - s).
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@pytest.fixture(autouse=True)
def fresh_replay_store() -> None:
    # The local-memory cache outlives a test; every test starts with no nonces.
    caches["default"].clear()


@pytest.fixture(scope="module")
def rsa_private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


# -- the client side -----------------------------------------------------------


def client_auth(key_id: str, key: Any, *, algorithm: Any = algorithms.HMAC_SHA256,
                covered: tuple[str, ...] = COVER, use_nonce: bool = True,
                **options: Any) -> HTTPSignatureAuth:
    """A requests-http-signature signer, configured as a client would."""
    return HTTPSignatureAuth(
        signature_algorithm=algorithm, key=key.encode() if isinstance(key, str) else key,
        key_id=key_id, covered_component_ids=covered, use_nonce=use_nonce, **options,
    )


def prepare(method: str, path: str, auth: Any = None, *, origin: str = ORIGIN,
            **kwargs: Any) -> requests.PreparedRequest:
    return requests.Request(method, origin + path, auth=auth, **kwargs).prepare()


def signed(credential: HmacSecret, secret: str, method: str = "GET", path: str = WHOAMI,
           **kwargs: Any) -> requests.PreparedRequest:
    options = {k: kwargs.pop(k) for k in ("covered", "use_nonce", "expires_in") if k in kwargs}
    return prepare(method, path, client_auth(credential.key_id, secret, **options), **kwargs)


def sign_raw(prepared: requests.PreparedRequest, key_id: str, key: Any, *,
             algorithm: Any = algorithms.HMAC_SHA256, covered: tuple[str, ...] = COVER,
             **params: Any) -> requests.PreparedRequest:
    """Sign with http-message-signatures directly: exact ``created``/``expires``/
    ``nonce``/``label``, and no Content-Digest unless ``body=`` is passed."""
    key = key.encode() if isinstance(key, str) else key
    signer = HTTPMessageSigner(
        signature_algorithm=algorithm,
        key_resolver=MappingKeyResolver(private_keys={key_id: key}, public_keys={}),
    )
    signer.sign(prepared, key_id=key_id, covered_component_ids=covered, **params)
    return prepared


def deliver(client: Any, prepared: requests.PreparedRequest, *, method: str | None = None,
            path: str | None = None, body: bytes | None = None, secure: bool = False,
            **meta: Any) -> Any:
    """Hand a signed request to Django with every header, as a WSGI server would.

    ``meta`` overrides or (value ``None``) removes request headers after signing.
    """
    url = urlsplit(prepared.url)
    environ: dict[str, Any] = {"HTTP_HOST": url.netloc}
    content_type = None
    for name, value in prepared.headers.items():
        if name.lower() == "content-type":
            content_type = value
        elif name.lower() != "content-length":  # the test client sets it from the body
            environ["HTTP_" + name.upper().replace("-", "_")] = value
    environ.update(meta)
    environ = {name: value for name, value in environ.items() if value is not None}
    target = path or url.path + (f"?{url.query}" if url.query else "")
    data = prepared.body if body is None else body
    return client.generic(method or prepared.method, target, data=data or b"",
                          content_type=content_type, secure=secure, **environ)


def public_pem(private_key: Any) -> str:
    """The SubjectPublicKeyInfo PEM an operator registers for a client's key."""
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def private_pem(private_key: Any) -> bytes:
    """The PKCS#8 PEM a client keeps (and hands to requests-http-signature)."""
    return private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def content_digest(body: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"


# -- the server side ------------------------------------------------------------


def last_audit_id() -> int:
    return AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0


def only_row(after: int = 0) -> AuditEvent:
    """The one ``authenticate`` row since ``after`` (lifecycle rows excluded)."""
    rows = list(AuditEvent.objects.filter(event="authenticate", id__gt=after))
    assert len(rows) == 1, [(row.outcome, row.reason) for row in rows]
    assert rows[0].scheme == "hmac"
    return rows[0]


def assert_refused(response: Any, code: str, reason: str, *, credential_id: str | None = None,
                   after: int = 0) -> AuditEvent:
    assert response.status_code == 401, (response.status_code, response.content)
    assert response["WWW-Authenticate"] == CHALLENGE  # the scheme that refused, not the first class
    body = response.json()
    assert set(body) == {"detail", "code"}, body
    assert body["code"] == code and body["detail"]
    row = only_row(after)
    assert (row.outcome, row.reason) == ("failure", reason), row.detail
    if credential_id is not None:
        assert row.credential_id == credential_id
    return row


def assert_ok(response: Any) -> None:
    assert response.status_code == 200, (response.status_code, response.content)


# -- success ---------------------------------------------------------------------


def test_signed_get_authenticates_with_principal(client, hmac_secret):
    credential, secret = hmac_secret
    response = deliver(client, signed(credential, secret))
    assert_ok(response)
    assert response.json() == {
        "user": "alice", "scheme": "hmac", "credential_id": credential.key_id,
        "scopes": ["echo:write"],
    }
    principal = response.renderer_context["request"].auth
    assert isinstance(principal, Principal)
    assert (principal.scheme, principal.credential, principal.credential_id) == (
        "hmac", credential, credential.key_id)
    assert principal.scopes == frozenset({"echo:write"})
    assert principal.claims["label"] == "pyhms" and principal.claims["nonce"] is True
    assert {"@method", "@target-uri", "content-digest"} <= set(principal.claims["covered"])
    row = only_row()
    assert (row.outcome, row.reason, row.credential_id, row.user_id) == (
        "success", "ok", credential.key_id, credential.owner_id)
    assert (row.method, row.path, row.ip) == ("GET", WHOAMI, "127.0.0.1")
    credential.refresh_from_db()
    assert credential.last_used_at is not None


def test_signed_post_with_content_digest(client, hmac_secret):
    credential, secret = hmac_secret
    prepared = signed(credential, secret, "POST", ECHO, json=PAYLOAD)
    # requests-http-signature computes the RFC 9530 digest and covers it.
    assert prepared.headers["Content-Digest"] == content_digest(prepared.body)
    assert '"content-digest"' in prepared.headers["Signature-Input"]
    response = deliver(client, prepared)
    assert_ok(response)
    assert response.json() == PAYLOAD
    row = only_row()
    assert (row.reason, row.method, row.path, row.credential_id) == ("ok", "POST", ECHO, credential.key_id)


@pytest.mark.parametrize("covered", [COVER, ("@method", "@authority", "@path", "@query")],
                         ids=["target-uri", "authority+path+query"])
def test_target_forms_with_an_encoded_query(client, hmac_secret, covered):
    credential, secret = hmac_secret
    prepared = signed(credential, secret, path=WHOAMI + "?q=a%20b&tilde=%7E&x=%C3%A9", covered=covered)
    assert_ok(deliver(client, prepared))


def test_no_signature_headers_is_not_this_scheme(client):
    response = client.get(WHOAMI)
    assert response.status_code == 401
    # A bare 401 offers every scheme the view accepts, Signature among them.
    assert CHALLENGE in response["WWW-Authenticate"]
    assert not AuditEvent.objects.filter(event="authenticate").exists()  # only the "missing" authorize row


# -- RFC 9421 §7: malformed input, refused before any lookup ---------------------------


def _edit_param(pattern: str, replacement: str) -> Callable[[str, str], tuple[str | None, str | None]]:
    return lambda sig_input, sig: (re.sub(pattern, replacement, sig_input), sig)


MALFORMED = {
    "signature-input-without-signature": lambda si, s: (si, None),
    "signature-without-signature-input": lambda si, s: (None, s),
    "empty-signature-input": lambda si, s: ("", s),
    "empty-signature": lambda si, s: (si, ""),
    "garbage-structured-field": lambda si, s: ('pyhms=((("@method";created=', s),
    "not-a-dictionary": lambda si, s: ('"@method" "@target-uri"', s),
    "not-an-inner-list": lambda si, s: (re.sub(r"^pyhms=\([^)]*\)", "pyhms=1", si), s),
    "non-latin-1": lambda si, s: (si.replace("pyhms", "pyhms€", 1), s),
    "no-keyid": _edit_param(r';keyid="[^"]*"', ""),
    "empty-keyid": _edit_param(r';keyid="[^"]*"', ';keyid=""'),
    "keyid-not-a-string": _edit_param(r';keyid="[^"]*"', ";keyid=7"),
    "no-created": _edit_param(r";created=\d+", ""),
    "created-not-an-integer": _edit_param(r";created=(\d+)", r";created=\1.5"),
    "created-a-string": _edit_param(r";created=(\d+)", r';created="\1"'),
    "nonce-not-a-string": _edit_param(r';nonce="[^"]*"', ";nonce=5"),
    "64KB-signature-input": lambda si, s: (si + ';pad="' + "a" * 64 * 1024 + '"', s),
    "64KB-signature": lambda si, s: (si, "pyhms=:" + "A" * 64 * 1024 + ":"),
}


@pytest.mark.parametrize("edit", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_signature_headers(client, hmac_secret, edit):
    credential, secret = hmac_secret
    prepared = signed(credential, secret)
    signature_input, signature = edit(prepared.headers["Signature-Input"], prepared.headers["Signature"])
    response = deliver(client, prepared, HTTP_SIGNATURE_INPUT=signature_input, HTTP_SIGNATURE=signature)
    row = assert_refused(response, "malformed_credentials", "malformed")
    assert row.user_id is None  # nothing was looked up
    assert "AAAAAAAA" not in str(row.detail)


def test_two_signatures_are_ambiguous(client, hmac_secret):
    credential, secret = hmac_secret
    prepared = signed(credential, secret)
    sign_raw(prepared, credential.key_id, secret, label="second", append_if_signature_exists=True,
             use_existing_digest=True)
    assert prepared.headers["Signature-Input"].count("keyid=") == 2
    response = deliver(client, prepared)
    assert_refused(response, "ambiguous_credentials", "ambiguous")


# -- required coverage ---------------------------------------------------------------


def _uncovered_digest(credential: HmacSecret, secret: str) -> requests.PreparedRequest:
    # A client that signs method and target but sends the body without Content-Digest.
    return sign_raw(prepare("POST", ECHO, json=PAYLOAD), credential.key_id, secret)


def _via_client(covered: tuple[str, ...]) -> Callable[[HmacSecret, str], requests.PreparedRequest]:
    return lambda credential, secret: signed(credential, secret, covered=covered)


COVERAGE = {
    "body-without-content-digest": (_uncovered_digest, ["content-digest"]),
    "method-not-covered": (_via_client(("@target-uri",)), ["@method"]),
    "target-not-covered": (_via_client(("@method",)), ["@target-uri"]),
    "split-target-without-query": (_via_client(("@method", "@authority", "@path")), ["@target-uri"]),
    "path-only": (_via_client(("@method", "@path")), ["@target-uri"]),
}


@pytest.mark.parametrize(("build", "missing"), COVERAGE.values(), ids=COVERAGE.keys())
def test_required_components(client, hmac_secret, build, missing):
    credential, secret = hmac_secret
    response = deliver(client, build(credential, secret))
    row = assert_refused(response, "missing_components", "missing_components",
                         credential_id=credential.key_id)
    assert row.detail == {"missing": missing}
    for component in missing:
        assert component in response.json()["detail"]
    if "content-digest" in missing:
        assert "Content-Digest" in response.json()["detail"]  # says what to add (RFC 9530)


# -- changed after signing -----------------------------------------------------------


TAMPERING = {
    "method": dict(method="PUT"),
    "path": dict(path=ECHO),
    "query-changed": dict(path=WHOAMI + "?page=2"),
    "query-added": dict(path=WHOAMI + "?page=1&admin=1"),
    "host": dict(HTTP_HOST="localhost"),
    "scheme": dict(secure=True),
    "covered-header": dict(HTTP_DATE="Thu, 01 Jan 2026 00:00:00 GMT"),
    "body-and-its-digest": dict(body=b'{"order": 43}', HTTP_CONTENT_DIGEST=content_digest(b'{"order": 43}')),
}


@pytest.mark.parametrize("change", TAMPERING.values(), ids=TAMPERING.keys())
def test_changed_after_signing(client, hmac_secret, change):
    credential, secret = hmac_secret
    prepared = signed(credential, secret, "POST", WHOAMI + "?page=1", json=PAYLOAD)
    response = deliver(client, prepared, **change)
    row = assert_refused(response, "invalid_credentials", "bad_signature", credential_id=credential.key_id)
    assert row.user_id == credential.owner_id


def test_signed_by_the_wrong_secret(client, make_hmac_secret):
    credential, _secret = make_hmac_secret()
    _other, other_secret = make_hmac_secret()
    response = deliver(client, signed(credential, other_secret))
    assert_refused(response, "invalid_credentials", "bad_signature", credential_id=credential.key_id)


def test_tampered_body_is_a_bad_digest(client, hmac_secret):
    credential, secret = hmac_secret
    prepared = signed(credential, secret, "POST", ECHO, json=PAYLOAD)
    forged = prepared.body.replace(b"42", b"43")
    response = deliver(client, prepared, body=forged)
    assert_refused(response, "bad_digest", "bad_digest", credential_id=credential.key_id)


@pytest.mark.parametrize("tamper_body", [False, True], ids=["intact", "tampered-body"])
def test_unknown_keyid(client, hmac_secret, tamper_body):
    _credential, secret = hmac_secret
    prepared = prepare("POST", ECHO, client_auth("hk_NoSuchKey00000", secret), json=PAYLOAD)
    response = deliver(client, prepared, body=b'{"order": 1}' if tamper_body else None)
    # Never bad_digest for a key id that does not exist: no oracle on key ids.
    row = assert_refused(response, "invalid_credentials", "unknown_credential",
                         credential_id="hk_NoSuchKey00000")
    assert row.user_id is None


# -- replay ------------------------------------------------------------------------------


@pytest.mark.parametrize("use_nonce", [True, False], ids=["with-nonce", "without-nonce"])
def test_identical_request_replayed(client, hmac_secret, use_nonce):
    credential, secret = hmac_secret
    prepared = signed(credential, secret, "POST", ECHO, json=PAYLOAD, use_nonce=use_nonce)
    assert_ok(deliver(client, prepared))
    mark = last_audit_id()
    response = deliver(client, prepared)
    row = assert_refused(response, "replayed", "replayed", credential_id=credential.key_id, after=mark)
    assert row.detail == {"by": "nonce" if use_nonce else "signature"}


def test_nonce_reused_with_a_different_signature(client, make_hmac_secret):
    credential, secret = make_hmac_secret()
    other, other_secret = make_hmac_secret()
    first = sign_raw(prepare("GET", WHOAMI + "?page=1"), credential.key_id, secret, nonce="n-0001")
    second = sign_raw(prepare("GET", WHOAMI + "?page=2"), credential.key_id, secret, nonce="n-0001")
    assert first.headers["Signature"] != second.headers["Signature"]
    assert_ok(deliver(client, first))
    mark = last_audit_id()
    row = assert_refused(deliver(client, second), "replayed", "replayed", after=mark)
    assert row.detail == {"by": "nonce"}
    # Nonces are per key: another client may pick the same one.
    third = sign_raw(prepare("GET", WHOAMI), other.key_id, other_secret, nonce="n-0001")
    assert_ok(deliver(client, third))


def test_replay_after_the_window_is_too_old(client, hmac_secret):
    credential, secret = hmac_secret
    now = timezone.now()
    with freeze_time(now):
        prepared = signed(credential, secret, use_nonce=False)
        assert_ok(deliver(client, prepared))
    mark = last_audit_id()
    with freeze_time(now + timedelta(seconds=301)):
        response = deliver(client, prepared)
    assert_refused(response, "clock_skew", "clock_skew", after=mark)


RESENT = {
    # The label is not signed (RFC 9421 §4.2), nor are parameters on the Signature member.
    "relabelled": lambda si, s: (si.replace("pyhms=", "again=", 1), s.replace("pyhms=", "again=", 1)),
    "signature-member-parameter": lambda si, s: (si, s + ";x=1"),
}


@pytest.mark.parametrize("rewrite", RESENT.values(), ids=RESENT.keys())
def test_replay_in_another_wrapping(client, hmac_secret, rewrite):
    credential, secret = hmac_secret
    prepared = signed(credential, secret, use_nonce=False)
    assert_ok(deliver(client, prepared))
    signature_input, signature = rewrite(prepared.headers["Signature-Input"], prepared.headers["Signature"])
    mark = last_audit_id()
    response = deliver(client, prepared, HTTP_SIGNATURE_INPUT=signature_input, HTTP_SIGNATURE=signature)
    row = assert_refused(response, "replayed", "replayed", after=mark)
    assert row.detail == {"by": "signature"}


def test_replay_with_a_malleated_ecdsa_signature(client, make_hmac_secret, p256_private_key):
    credential, _ = make_hmac_secret(algorithm="ecdsa-p256-sha256", public_key=public_pem(p256_private_key))
    auth = client_auth(credential.key_id, p256_private_key, algorithm=algorithms.ECDSA_P256_SHA256,
                       use_nonce=False)
    prepared = prepare("GET", WHOAMI, auth)
    assert_ok(deliver(client, prepared))
    raw = base64.b64decode(prepared.headers["Signature"].split(":")[1])
    s = int.from_bytes(raw[32:], "big")
    malleated = raw[:32] + (P256_ORDER - s).to_bytes(32, "big")
    mark = last_audit_id()
    response = deliver(client, prepared, HTTP_SIGNATURE=f"pyhms=:{base64.b64encode(malleated).decode()}:")
    assert_refused(response, "replayed", "replayed", after=mark)


# -- time ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("offset", "accepted"), [(-300, True), (300, True), (-301, False), (301, False)])
def test_created_within_the_allowed_skew(client, hmac_secret, offset, accepted):
    credential, secret = hmac_secret
    now = timezone.now().replace(microsecond=0)
    with freeze_time(now):
        prepared = sign_raw(prepare("GET", WHOAMI), credential.key_id, secret,
                            created=now + timedelta(seconds=offset))
        response = deliver(client, prepared)
    if accepted:
        assert_ok(response)
    else:
        row = assert_refused(response, "clock_skew", "clock_skew", credential_id=credential.key_id)
        assert row.detail["server_time"] - row.detail["created"] == -offset


@pytest.mark.parametrize("seconds", [-400, 400], ids=["in-the-past", "in-the-future"])
def test_client_clock_off(client, hmac_secret, seconds):
    credential, secret = hmac_secret
    with freeze_time(timezone.now() + timedelta(seconds=seconds)):
        prepared = signed(credential, secret)
    assert_refused(deliver(client, prepared), "clock_skew", "clock_skew")


@override_settings(APIAUTH_SIGNATURE_MAX_SKEW=30)
def test_skew_setting_is_honoured(client, hmac_secret):
    credential, secret = hmac_secret
    with freeze_time(timezone.now() - timedelta(seconds=60)):
        prepared = signed(credential, secret)
    assert_refused(deliver(client, prepared), "clock_skew", "clock_skew")


def test_signature_expired(client, hmac_secret):
    credential, secret = hmac_secret
    with freeze_time(timezone.now() - timedelta(seconds=60)):
        prepared = signed(credential, secret, expires_in=timedelta(seconds=30))
    assert ";expires=" in prepared.headers["Signature-Input"]
    row = assert_refused(deliver(client, prepared), "signature_expired", "signature_expired")
    assert row.detail["expires"] < int(timezone.now().timestamp())


@pytest.mark.parametrize(("expires_in", "accepted"), [(0, False), (1, True)])
def test_expires_boundary(client, hmac_secret, expires_in, accepted):
    credential, secret = hmac_secret
    now = timezone.now().replace(microsecond=0)
    with freeze_time(now):
        prepared = sign_raw(prepare("GET", WHOAMI), credential.key_id, secret, created=now,
                            expires=now + timedelta(seconds=expires_in))
        response = deliver(client, prepared)
    if accepted:
        assert_ok(response)
    else:
        assert_refused(response, "signature_expired", "signature_expired")


# -- algorithms ----------------------------------------------------------------------------


def test_alg_naming_another_algorithm_than_the_credentials(client, hmac_secret, ed25519_private_key):
    credential, _secret = hmac_secret
    auth = client_auth(credential.key_id, ed25519_private_key, algorithm=algorithms.ED25519)
    response = deliver(client, prepare("GET", WHOAMI, auth))
    row = assert_refused(response, "invalid_credentials", "disallowed_algorithm",
                         credential_id=credential.key_id)
    assert row.detail == {"alg": "ed25519"}


def test_unknown_alg_from_a_real_rsa_signer(client, hmac_secret, rsa_private_key):
    credential, _secret = hmac_secret
    auth = client_auth(credential.key_id, rsa_private_key, algorithm=algorithms.RSA_PSS_SHA512)
    response = deliver(client, prepare("GET", WHOAMI, auth))
    row = assert_refused(response, "invalid_credentials", "disallowed_algorithm",
                         credential_id=credential.key_id)
    assert row.detail == {"alg": "rsa-pss-sha512"}
    assert row.user_id is None  # refused before any lookup


@pytest.mark.parametrize("alg", ['"none"', '"hmac-sha1"', "1"])
def test_invented_alg(client, hmac_secret, alg):
    credential, secret = hmac_secret
    prepared = signed(credential, secret)
    signature_input = prepared.headers["Signature-Input"].replace('alg="hmac-sha256"', f"alg={alg}")
    response = deliver(client, prepared, HTTP_SIGNATURE_INPUT=signature_input)
    assert_refused(response, "invalid_credentials", "disallowed_algorithm")


def test_alg_mismatch_does_not_reveal_that_a_key_id_exists(client, hmac_secret, ed25519_private_key):
    credential, _secret = hmac_secret
    existing = deliver(client, prepare("GET", WHOAMI, client_auth(
        credential.key_id, ed25519_private_key, algorithm=algorithms.ED25519)))
    unknown = deliver(client, prepare("GET", WHOAMI, client_auth(
        "hk_NoSuchKey00000", ed25519_private_key, algorithm=algorithms.ED25519)))
    assert existing.status_code == unknown.status_code == 401
    assert existing.json() == unknown.json()


# -- asymmetric credentials (RFC 9421 §3.3.4, §3.3.6) ------------------------------------------


ASYMMETRIC = {
    "ed25519": ("ed25519", algorithms.ED25519, "ed25519_private_key"),
    "ecdsa-p256": ("ecdsa-p256-sha256", algorithms.ECDSA_P256_SHA256, "p256_private_key"),
}


@pytest.mark.parametrize(("algorithm", "client_algorithm", "key_fixture"), ASYMMETRIC.values(),
                         ids=ASYMMETRIC.keys())
@pytest.mark.parametrize("as_pem", [True, False], ids=["pem", "key-object"])
def test_asymmetric_credential(client, make_hmac_secret, request, algorithm, client_algorithm,
                               key_fixture, as_pem):
    private_key = request.getfixturevalue(key_fixture)
    credential, secret = make_hmac_secret(algorithm=algorithm, public_key=public_pem(private_key))
    assert secret == "" and credential.secret_encrypted == ""  # nothing secret on the server
    auth = client_auth(credential.key_id, private_pem(private_key) if as_pem else private_key,
                       algorithm=client_algorithm)
    response = deliver(client, prepare("GET", WHOAMI, auth))
    assert_ok(response)
    assert response.json()["credential_id"] == credential.key_id
    response = deliver(client, prepare("POST", ECHO, auth, json=PAYLOAD))
    assert_ok(response)
    assert response.json() == PAYLOAD


@pytest.mark.parametrize(("algorithm", "client_algorithm", "key_fixture"), ASYMMETRIC.values(),
                         ids=ASYMMETRIC.keys())
def test_asymmetric_signature_by_another_private_key(client, make_hmac_secret, request, algorithm,
                                                     client_algorithm, key_fixture):
    registered = request.getfixturevalue(key_fixture)
    other = (ed25519.Ed25519PrivateKey.generate() if algorithm == "ed25519"
             else ec.generate_private_key(ec.SECP256R1()))
    credential, _ = make_hmac_secret(algorithm=algorithm, public_key=public_pem(registered))
    auth = client_auth(credential.key_id, other, algorithm=client_algorithm)
    response = deliver(client, prepare("GET", WHOAMI, auth))
    assert_refused(response, "invalid_credentials", "bad_signature", credential_id=credential.key_id)


@pytest.mark.parametrize("include_alg", [True, False], ids=["alg-hmac-sha256", "no-alg"])
def test_hmac_keyed_with_the_public_key_against_an_ed25519_credential(
        client, make_hmac_secret, ed25519_private_key, include_alg):
    """The classic algorithm-confusion attack: HMAC keyed with the public key."""
    pem = public_pem(ed25519_private_key)
    credential, _ = make_hmac_secret(algorithm="ed25519", public_key=pem)
    auth = client_auth(credential.key_id, pem, include_alg=include_alg)
    response = deliver(client, prepare("GET", WHOAMI, auth))
    if include_alg:
        assert_refused(response, "invalid_credentials", "disallowed_algorithm",
                       credential_id=credential.key_id)
    else:
        assert_refused(response, "invalid_credentials", "bad_signature", credential_id=credential.key_id)


def _p384_pem() -> str:
    return public_pem(ec.generate_private_key(ec.SECP384R1()))


WRONG_KEYS = {
    "ed25519-given-p256": ("ed25519", lambda ed, p256: public_pem(p256)),
    "p256-given-ed25519": ("ecdsa-p256-sha256", lambda ed, p256: public_pem(ed)),
    "p256-given-p384": ("ecdsa-p256-sha256", lambda ed, p256: _p384_pem()),
    "private-key-pasted": ("ed25519", lambda ed, p256: private_pem(ed).decode()),
    "not-pem": ("ed25519", lambda ed, p256: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA"),
    "missing": ("ed25519", lambda ed, p256: ""),
    "hmac-given-a-public-key": ("hmac-sha256", lambda ed, p256: public_pem(ed)),
}


@pytest.mark.parametrize(("algorithm", "pem"), WRONG_KEYS.values(), ids=WRONG_KEYS.keys())
def test_wrong_key_for_the_algorithm_is_refused_at_issue(make_hmac_secret, ed25519_private_key,
                                                         p256_private_key, algorithm, pem):
    with pytest.raises(ValidationError) as excinfo:
        make_hmac_secret(algorithm=algorithm, public_key=pem(ed25519_private_key, p256_private_key))
    assert "public_key" in excinfo.value.message_dict
    assert not HmacSecret.objects.exists()
    assert not AuditEvent.objects.exists()


# -- credential state, with a correct signature ---------------------------------------------


def _revoke(credential: HmacSecret) -> None:
    lifecycle.revoke(credential, reason="leaked in a ticket")


def _expire(credential: HmacSecret) -> None:
    credential.expires_at = timezone.now() - timedelta(seconds=1)
    credential.save()


def _not_yet_valid(credential: HmacSecret) -> None:
    credential.not_before = timezone.now() + timedelta(minutes=5)
    credential.save()


def _deactivate_owner(credential: HmacSecret) -> None:
    credential.owner.is_active = False
    credential.owner.save()


def _restrict_ips(credential: HmacSecret) -> None:
    credential.allowed_ips = "10.0.0.0/8"
    credential.save()


STATES = {
    "revoked": (_revoke, "revoked"),
    "expired": (_expire, "expired"),
    "not-yet-valid": (_not_yet_valid, "not_yet_valid"),
    "inactive-owner": (_deactivate_owner, "inactive_owner"),
    "ip-not-allowed": (_restrict_ips, "ip_not_allowed"),
}


@pytest.mark.parametrize(("change", "reason"), STATES.values(), ids=STATES.keys())
def test_unusable_credential(client, hmac_secret, change, reason):
    credential, secret = hmac_secret
    change(credential)
    response = deliver(client, signed(credential, secret, "POST", ECHO, json=PAYLOAD))
    row = assert_refused(response, "invalid_credentials", reason, credential_id=credential.key_id)
    assert row.user_id == credential.owner_id


def test_insufficient_scope(client, make_hmac_secret):
    credential, secret = make_hmac_secret(scopes="orders:read")
    response = deliver(client, signed(credential, secret, "POST", ECHO, json=PAYLOAD))
    assert response.status_code == 403
    assert response.json()["code"] == "insufficient_scope"
    assert response.json()["required_scopes"] == ["echo:write"]
    assert only_row().reason == "ok"  # authenticated, then not authorised
    denied = AuditEvent.objects.get(event="authorize")
    assert (denied.scheme, denied.reason, denied.credential_id) == ("hmac", "insufficient_scope",
                                                                    credential.key_id)


# -- rotation -----------------------------------------------------------------------------------


def test_rotation_grace(client, hmac_secret):
    old, old_secret = hmac_secret
    new, new_secret = lifecycle.rotate(old, grace=timedelta(hours=1))
    assert new.key_id != old.key_id and new_secret != old_secret
    assert new.rotated_from_id == old.pk and new.scopes == old.scopes
    for credential, secret in ((old, old_secret), (new, new_secret)):
        response = deliver(client, signed(credential, secret))
        assert_ok(response)
        assert response.json()["credential_id"] == credential.key_id
    # The old secret does not sign for the new key id.
    mark = last_audit_id()
    assert_refused(deliver(client, signed(new, old_secret)), "invalid_credentials", "bad_signature",
                   after=mark)
    with freeze_time(timezone.now() + timedelta(hours=1, seconds=1)):
        mark = last_audit_id()
        response = deliver(client, signed(old, old_secret))
        assert_refused(response, "invalid_credentials", "expired", credential_id=old.key_id, after=mark)
        assert_ok(deliver(client, signed(new, new_secret)))


# -- fail closed -------------------------------------------------------------------------------


def assert_unavailable(response: Any, credential_id: str) -> None:
    assert response.status_code == 503, (response.status_code, response.content)
    assert response.json() == {
        "detail": "Authentication is temporarily unavailable. Try again later.",
        "code": "service_unavailable",
    }
    row = only_row()
    assert (row.outcome, row.reason, row.credential_id) == ("failure", "service_unavailable", credential_id)


def test_replay_store_down_is_503(client, hmac_secret, monkeypatch):
    credential, secret = hmac_secret

    def down(*args: Any, **kwargs: Any) -> bool:
        raise ConnectionError("redis: connection refused")

    monkeypatch.setattr(caches["default"], "add", down)
    response = deliver(client, signed(credential, secret, "POST", ECHO, json=PAYLOAD))
    assert_unavailable(response, credential.key_id)


def test_undecryptable_secret_is_503(client, hmac_secret):
    credential, secret = hmac_secret
    with override_settings(APIAUTH_ENCRYPTION_KEYS=["a-new-encryption-key-without-the-old-one-0123"]):
        response = deliver(client, signed(credential, secret))
    assert_unavailable(response, credential.key_id)
    # An operator error, not the client's: restoring the key restores service.
    assert_ok(deliver(client, signed(credential, secret)))


def test_corrupt_stored_ciphertext_is_503(client, hmac_secret):
    credential, secret = hmac_secret
    key_id = credential.secret_encrypted.split("$")[1]
    HmacSecret.objects.filter(pk=credential.pk).update(secret_encrypted=f"v1${key_id}$AAAA")
    client.raise_request_exception = False
    response = deliver(client, signed(credential, secret))
    assert_unavailable(response, credential.key_id)


# -- secrets never leave --------------------------------------------------------------------------


def test_secret_never_leaves(client, make_hmac_secret, caplog):
    caplog.set_level(logging.DEBUG)
    credential, secret = make_hmac_secret()
    encoded = base64.b64encode(secret.encode()).decode()
    stored = HmacSecret.objects.filter(pk=credential.pk).values().get()
    assert stored["secret_encrypted"].startswith("v1$")
    assert all(secret not in str(value) and encoded not in str(value) for value in stored.values())

    responses = [
        deliver(client, signed(credential, secret)),
        deliver(client, signed(credential, secret[::-1])),
        deliver(client, signed(credential, secret, "POST", ECHO, json=PAYLOAD), body=b"{}"),
        deliver(client, prepare("GET", WHOAMI, client_auth("hk_NoSuchKey00000", secret))),
    ]
    replayed = signed(credential, secret)
    responses += [deliver(client, replayed), deliver(client, replayed)]
    with override_settings(APIAUTH_ENCRYPTION_KEYS=["another-key-0123456789abcdef0123456789"]):
        responses.append(deliver(client, signed(credential, secret)))
    lifecycle.rotate(credential)
    lifecycle.revoke(credential, reason="test")
    assert [r.status_code for r in responses] == [200, 401, 401, 401, 200, 401, 503]

    for response in responses:
        assert secret not in response.content.decode() and encoded not in response.content.decode()
    rows = list(AuditEvent.objects.all())
    assert len(rows) >= 10
    for row in rows:
        dump = json.dumps([str(getattr(row, f.attname)) for f in AuditEvent._meta.concrete_fields])
        assert secret not in dump and encoded not in dump
    assert secret not in caplog.text and encoded not in caplog.text
    assert secret not in json.dumps(credential.to_public_dict()) and secret not in str(credential)


# -- equal work -----------------------------------------------------------------------------------


def test_unknown_keyid_runs_the_verifier_too(client, hmac_secret, monkeypatch):
    """Same signature check whether or not the key id exists (Django ticket #20760)."""
    from django_apiauth.schemes import http_signature

    credential, secret = hmac_secret
    calls: list[str] = []
    real = http_signature._check_signature

    def spy(algorithm_id: str, key: Any, signature: bytes, base: bytes) -> bool:
        calls.append(base.decode().split("\n")[0].split(": ")[1])  # the @method line
        return real(algorithm_id, key, signature, base)

    monkeypatch.setattr(http_signature, "_check_signature", spy)
    deliver(client, prepare("GET", WHOAMI, client_auth("hk_NoSuchKey00000", secret)))
    assert calls == ["GET"]
    deliver(client, signed(credential, secret[::-1], "POST", ECHO, json=PAYLOAD))
    assert calls == ["GET", "POST"]
    assert [row.reason for row in AuditEvent.objects.filter(event="authenticate").order_by("id")] == [
        "unknown_credential", "bad_signature"]


# -- over real HTTP ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_live_server_signed_post_and_get(live_server, make_hmac_secret):
    credential, secret = make_hmac_secret()
    auth = client_auth(credential.key_id, secret)
    response = requests.post(live_server.url + ECHO, json=PAYLOAD, auth=auth, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json() == PAYLOAD
    response = requests.get(live_server.url + WHOAMI, auth=auth, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["credential_id"] == credential.key_id
    rows = AuditEvent.objects.filter(event="authenticate").order_by("id")
    assert [(r.outcome, r.method, r.path) for r in rows] == [
        ("success", "POST", ECHO), ("success", "GET", WHOAMI)]


@pytest.mark.django_db(transaction=True)
def test_live_server_replay_and_tampering(live_server, make_hmac_secret):
    credential, secret = make_hmac_secret()
    auth = client_auth(credential.key_id, secret)
    with requests.Session() as session:
        prepared = session.prepare_request(requests.Request("POST", live_server.url + ECHO,
                                                            json=PAYLOAD, auth=auth))
        first = session.send(prepared, timeout=10)
        second = session.send(prepared, timeout=10)
        tampered = session.prepare_request(requests.Request("POST", live_server.url + ECHO,
                                                            json=PAYLOAD, auth=auth))
        tampered.body = tampered.body.replace(b"42", b"43")
        third = session.send(tampered, timeout=10)
    assert first.status_code == 200, first.text
    assert (second.status_code, second.json()["code"]) == (401, "replayed")
    assert (third.status_code, third.json()["code"]) == (401, "bad_digest")
    assert second.headers["WWW-Authenticate"] == third.headers["WWW-Authenticate"] == CHALLENGE
    rows = AuditEvent.objects.filter(event="authenticate").order_by("id")
    assert [r.reason for r in rows] == ["ok", "replayed", "bad_digest"]
