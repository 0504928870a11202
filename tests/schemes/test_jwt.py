"""JWT bearer access tokens (RFC 9068) against a real JWKS served over HTTP."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.core.cache import cache
from django.utils import timezone
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from rest_framework.test import APIRequestFactory

from django_apiauth.core.principal import Principal
from django_apiauth.models import ExternalIdentity
from django_apiauth.schemes.jwt import JWTAuthentication

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.schemes.jwt_urls")]

ISS = "https://idp.example.test"
AUD = "https://api.example.test"
URL = "/jwt/whoami/"


# -- keys and a real JWKS endpoint ---------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_key2() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def attacker_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def rsa_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


def ec_jwk(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "alg": "ES256", "use": "sig"}


class JWKSServer:
    """``GET /<name>`` answers ``{"keys": documents[name]}`` and counts hits."""

    def __init__(self) -> None:
        self.documents: dict[str, list[dict[str, Any]]] = {}
        self.hits: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.strip("/")
                server.hits[name] = server.hits.get(name, 0) + 1
                if name not in server.documents:
                    self.send_error(404)
                    return
                body = json.dumps({"keys": server.documents[name]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[JWKSServer]:
    server = JWKSServer()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture
def jwks(jwks_server: JWKSServer, rsa_key: Any, ec_key: Any, attacker_key: Any) -> JWKSServer:
    cache.clear()
    jwks_server.hits.clear()
    jwks_server.documents.clear()
    jwks_server.documents["jwks"] = [rsa_jwk(rsa_key, "rsa-1"), ec_jwk(ec_key, "ec-1")]
    jwks_server.documents["evil"] = [rsa_jwk(attacker_key, "rsa-1")]
    return jwks_server


def issuer_setting(jwks: JWKSServer, **overrides: Any) -> dict[str, Any]:
    return {"issuer": ISS, "audience": AUD, "jwks_uri": jwks.url("jwks"),
            "client_credentials_user": "svc-reporting", **overrides}


@pytest.fixture(autouse=True)
def jwt_settings(settings: Any, jwks: JWKSServer) -> Any:
    settings.APIAUTH_JWT_ISSUERS = [issuer_setting(jwks)]
    settings.APIAUTH_JWKS_TIMEOUT = 2.0
    yield settings
    cache.clear()


@pytest.fixture
def alice(make_user: Callable[..., Any]) -> Any:
    user = make_user("alice")
    ExternalIdentity.objects.create(issuer=ISS, subject="alice-sub", user=user)
    return user


@pytest.fixture
def mint(rsa_key: Any) -> Callable[..., str]:
    def mint(key: Any = None, alg: str = "RS256", kid: str | None = "rsa-1", typ: str | None = "at+jwt",
             headers: dict[str, Any] | None = None, drop: tuple[str, ...] = (), **claims: Any) -> str:
        now = int(time.time())
        payload = {
            "iss": ISS, "aud": AUD, "sub": "alice-sub", "client_id": "web-app",
            "jti": uuid.uuid4().hex, "iat": now, "exp": now + 300, "scope": "read write",
            **claims,
        }
        for name in drop:
            payload.pop(name)
        header = {"typ": typ, **({"kid": kid} if kid else {}), **(headers or {})}
        return jwt.encode(payload, rsa_key if key is None else key, algorithm=alg, headers=header)

    return mint


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def get(client: Any, token: str, scheme: str = "Bearer") -> Any:
    return client.get(URL, HTTP_AUTHORIZATION=f"{scheme} {token}")


def assert_refused(response: Any, audit_rows: Callable[..., list[Any]], reason: str) -> None:
    assert response.status_code == 401, response.content
    assert response["WWW-Authenticate"] == 'Bearer realm="api", error="invalid_token"'
    rows = audit_rows()
    assert [(r.scheme, r.outcome, r.reason) for r in rows] == [("jwt", "failure", reason)]


# -- success -------------------------------------------------------------------------


@pytest.mark.parametrize(("key_fixture", "alg", "kid"), [("rsa_key", "RS256", "rsa-1"),
                                                         ("ec_key", "ES256", "ec-1")])
def test_success(request: Any, client: Any, alice: Any, mint: Callable[..., str],
                 audit_rows: Callable[..., list[Any]], key_fixture: str, alg: str, kid: str) -> None:
    token = mint(key=request.getfixturevalue(key_fixture), alg=alg, kid=kid, jti="tok-1")
    response = get(client, token)
    assert response.status_code == 200, response.content
    assert response.json() == {"user": "alice", "scheme": "jwt", "credential_id": "tok-1",
                               "scopes": ["read", "write"]}
    [row] = audit_rows()
    assert (row.scheme, row.outcome, row.reason, row.user_id, row.credential_id) == (
        "jwt", "success", "ok", alice.pk, "tok-1")
    assert ExternalIdentity.objects.get().last_seen_at is not None


def test_principal(alice: Any, mint: Callable[..., str]) -> None:
    token = mint(jti="tok-2", scope=None, scp=["read", "admin"])
    request = APIRequestFactory().get(URL, HTTP_AUTHORIZATION=f"bearer {token}")  # case-insensitive
    user, principal = JWTAuthentication().authenticate(request)  # type: ignore[misc]
    assert user == alice
    assert isinstance(principal, Principal)
    assert principal.scheme == "jwt"
    assert principal.credential is None
    assert principal.credential_id == "tok-2"
    assert principal.scopes == frozenset({"read", "admin"})
    assert principal.claims["sub"] == "alice-sub"
    assert principal.claims["client_id"] == "web-app"


def test_static_keys_and_media_type_typ(settings: Any, client: Any, alice: Any, jwks: JWKSServer,
                                        rsa_key: Any, mint: Callable[..., str]) -> None:
    settings.APIAUTH_JWT_ISSUERS = [{"issuer": ISS, "audience": [AUD, "other"],
                                     "keys": [rsa_jwk(rsa_key, "rsa-1")]}]
    assert get(client, mint(typ="application/AT+JWT")).status_code == 200
    assert jwks.hits == {}


def test_last_seen_written_at_most_once_a_minute(client: Any, alice: Any,
                                                 mint: Callable[..., str]) -> None:
    identity = ExternalIdentity.objects.get()
    recent = timezone.now() - timedelta(seconds=10)
    ExternalIdentity.objects.filter(pk=identity.pk).update(last_seen_at=recent)
    assert get(client, mint()).status_code == 200
    identity.refresh_from_db()
    assert identity.last_seen_at == recent


def test_client_credentials_token_maps_to_service_user(
        client: Any, make_user: Callable[..., Any], mint: Callable[..., str]) -> None:
    make_user("svc-reporting")
    response = get(client, mint(sub="reporting-client", client_id="reporting-client", scope="read"))
    assert response.status_code == 200, response.content
    assert response.json()["user"] == "svc-reporting"


# -- not ours: None --------------------------------------------------------------------


@pytest.mark.parametrize("authorization", ["Api-Key ak_abc", "Basic dXNlcjpwYXNz",
                                           "Bearer opaque-token-123", "Bearer a.b"])
def test_not_ours(client: Any, authorization: str, audit_rows: Callable[..., list[Any]]) -> None:
    response = client.get(URL, HTTP_AUTHORIZATION=authorization)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert audit_rows() == []  # HasScopes audits "missing" as an authorize event


# -- refusals ----------------------------------------------------------------------------


def test_alg_none(client: Any, alice: Any, mint: Callable[..., str],
                  audit_rows: Callable[..., list[Any]]) -> None:
    token = mint(key="", alg="none")
    assert token.endswith(".")
    assert_refused(get(client, token), audit_rows, "disallowed_algorithm")


@pytest.mark.parametrize("alg", ["None", "NONE", "nOnE"])
def test_alg_none_any_case_even_when_listed(settings: Any, client: Any, alice: Any, jwks: JWKSServer,
                                            mint: Callable[..., str], audit_rows: Callable[..., list[Any]],
                                            alg: str) -> None:
    settings.APIAUTH_JWT_ISSUERS = [issuer_setting(jwks, algorithms=["RS256", alg])]
    _header, payload, _sig = mint().split(".")
    token = f'{b64({"alg": alg, "typ": "at+jwt", "kid": "rsa-1"})}.{payload}.'
    assert_refused(get(client, token), audit_rows, "disallowed_algorithm")


def hs256_with_public_pem(rsa_key: Any, **claims: Any) -> str:
    pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    now = int(time.time())
    payload = {"iss": ISS, "aud": AUD, "sub": "alice-sub", "client_id": "web-app", "jti": "x",
               "iat": now, "exp": now + 300, "scope": "read", **claims}
    signing_input = f'{b64({"alg": "HS256", "typ": "at+jwt", "kid": "rsa-1"})}.{b64(payload)}'
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


@pytest.mark.parametrize("algorithms", [None, ["RS256", "HS256"]])
def test_key_confusion_hs256_signed_with_public_key(
        settings: Any, client: Any, alice: Any, jwks: JWKSServer, rsa_key: Any,
        audit_rows: Callable[..., list[Any]], algorithms: list[str] | None) -> None:
    if algorithms:  # even an operator who lists HS256 is not fooled by an RSA key
        settings.APIAUTH_JWT_ISSUERS = [issuer_setting(jwks, algorithms=algorithms)]
    assert_refused(get(client, hs256_with_public_pem(rsa_key)), audit_rows, "disallowed_algorithm")


def test_key_confusion_with_jwk_without_alg(settings: Any, client: Any, alice: Any, rsa_key: Any,
                                            audit_rows: Callable[..., list[Any]]) -> None:
    jwk = rsa_jwk(rsa_key, "rsa-1")
    del jwk["alg"]
    settings.APIAUTH_JWT_ISSUERS = [{"issuer": ISS, "audience": AUD, "keys": [jwk],
                                     "algorithms": ["RS256", "HS256"]}]
    assert_refused(get(client, hs256_with_public_pem(rsa_key)), audit_rows, "bad_signature")


def test_alg_not_in_allow_list(settings: Any, client: Any, alice: Any, jwks: JWKSServer,
                               ec_key: Any, mint: Callable[..., str],
                               audit_rows: Callable[..., list[Any]]) -> None:
    settings.APIAUTH_JWT_ISSUERS = [issuer_setting(jwks, algorithms=["RS256"])]
    assert_refused(get(client, mint(key=ec_key, alg="ES256", kid="ec-1")), audit_rows,
                   "disallowed_algorithm")


@pytest.mark.parametrize("kid", ["rsa-1", "attacker", None])
def test_embedded_jwk_and_jku_are_ignored(client: Any, alice: Any, jwks: JWKSServer, attacker_key: Any,
                                          mint: Callable[..., str], audit_rows: Callable[..., list[Any]],
                                          kid: str | None) -> None:
    embedded = rsa_jwk(attacker_key, kid or "attacker")
    # The token would verify with its own embedded key or the key at jku.
    assert jwt.decode(mint(key=attacker_key), key=jwt.PyJWK(embedded), algorithms=["RS256"],
                      audience=AUD)["sub"] == "alice-sub"
    token = mint(key=attacker_key, kid=kid, headers={"jwk": embedded, "jku": jwks.url("evil"),
                                                     "x5u": jwks.url("evil")})
    assert_refused(get(client, token), audit_rows, "bad_signature")
    assert "evil" not in jwks.hits


def test_wrong_issuer(client: Any, alice: Any, mint: Callable[..., str],
                      audit_rows: Callable[..., list[Any]]) -> None:
    assert_refused(get(client, mint(iss="https://evil.example.test")), audit_rows, "untrusted_issuer")


def test_wrong_audience(client: Any, alice: Any, mint: Callable[..., str],
                        audit_rows: Callable[..., list[Any]]) -> None:
    assert_refused(get(client, mint(aud="https://other-api.example.test")), audit_rows, "bad_audience")


def test_expired_respects_leeway(client: Any, alice: Any, mint: Callable[..., str],
                                 audit_rows: Callable[..., list[Any]]) -> None:
    now = int(time.time())
    assert get(client, mint(iat=now - 300, exp=now - 10)).status_code == 200  # within the 30 s leeway
    cache.clear()
    response = get(client, mint(iat=now - 300, exp=now - 60))
    assert response.status_code == 401
    assert audit_rows()[-1].reason == "expired"


def test_not_yet_valid(client: Any, alice: Any, mint: Callable[..., str],
                       audit_rows: Callable[..., list[Any]]) -> None:
    assert_refused(get(client, mint(nbf=int(time.time()) + 120)), audit_rows, "not_yet_valid")


@pytest.mark.parametrize("claim", ["exp", "iat", "sub", "aud", "client_id", "jti"])
def test_missing_required_claim(client: Any, alice: Any, mint: Callable[..., str],
                                audit_rows: Callable[..., list[Any]], claim: str) -> None:
    assert_refused(get(client, mint(drop=(claim,))), audit_rows, "malformed")
    assert audit_rows()[0].detail["missing_claim"] == claim


@pytest.mark.parametrize("typ", ["JWT", "jwt", None, "application/jwt"])
def test_wrong_typ(client: Any, alice: Any, mint: Callable[..., str],
                   audit_rows: Callable[..., list[Any]], typ: str | None) -> None:
    assert_refused(get(client, mint(typ=typ)), audit_rows, "malformed")


def test_lifetime_over_max(client: Any, alice: Any, mint: Callable[..., str],
                           audit_rows: Callable[..., list[Any]]) -> None:
    now = int(time.time())
    assert_refused(get(client, mint(iat=now, exp=now + 7200)), audit_rows, "malformed")
    assert audit_rows()[0].detail["problem"] == "lifetime"


def test_crit_header_refused(client: Any, alice: Any, mint: Callable[..., str],
                             audit_rows: Callable[..., list[Any]]) -> None:
    token = mint(headers={"crit": ["exp"]})
    assert_refused(get(client, token), audit_rows, "malformed")


def test_unknown_kid_refetches_once_per_cooldown(client: Any, alice: Any, jwks: JWKSServer, rsa_key: Any,
                                                 rsa_key2: Any, mint: Callable[..., str],
                                                 audit_rows: Callable[..., list[Any]]) -> None:
    assert get(client, mint()).status_code == 200
    assert get(client, mint()).status_code == 200
    assert jwks.hits == {"jwks": 1}  # cached
    # The issuer rotates its keys: a token signed with the new key triggers one refetch.
    jwks.documents["jwks"] = [rsa_jwk(rsa_key2, "rsa-2"), rsa_jwk(rsa_key, "rsa-1")]
    assert get(client, mint(key=rsa_key2, kid="rsa-2")).status_code == 200
    assert jwks.hits == {"jwks": 2}
    # Another unknown kid within the cooldown does not refetch.
    response = get(client, mint(key=rsa_key2, kid="rsa-3"))
    assert response.status_code == 401
    assert audit_rows()[-1].reason == "bad_signature"
    assert jwks.hits == {"jwks": 2}


def test_jwks_down_with_empty_cache_is_503(settings: Any, client: Any, alice: Any,
                                           mint: Callable[..., str],
                                           audit_rows: Callable[..., list[Any]]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.APIAUTH_JWT_ISSUERS = [{"issuer": ISS, "audience": AUD,
                                     "jwks_uri": f"http://127.0.0.1:{port}/jwks"}]
    response = get(client, mint())
    assert response.status_code == 503
    assert response.json()["code"] == "service_unavailable"
    assert [r.reason for r in audit_rows()] == ["service_unavailable"]


def test_jwks_http_error_with_empty_cache_is_503(settings: Any, client: Any, alice: Any, jwks: JWKSServer,
                                                 mint: Callable[..., str]) -> None:
    settings.APIAUTH_JWT_ISSUERS = [issuer_setting(jwks, jwks_uri=jwks.url("missing"))]
    assert get(client, mint()).status_code == 503


def test_tampered_payload(client: Any, alice: Any, mint: Callable[..., str],
                          audit_rows: Callable[..., list[Any]]) -> None:
    header, payload, signature = mint(scope="read").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["scope"] = "read admin"
    assert_refused(get(client, f"{header}.{b64(claims)}.{signature}"), audit_rows, "bad_signature")


def test_oversized_token(client: Any, alice: Any, mint: Callable[..., str],
                         audit_rows: Callable[..., list[Any]]) -> None:
    token = mint(padding="x" * 64 * 1024)
    assert len(token) > 64 * 1024
    assert_refused(get(client, token), audit_rows, "malformed")


@pytest.mark.parametrize("token", ["e30.e30.", "bm90anNvbg.e30.", "W10.e30.", "e30.W10."])
def test_undecodable_or_non_object_segments(client: Any, token: str,
                                            audit_rows: Callable[..., list[Any]]) -> None:
    response = get(client, token)
    assert response.status_code == 401
    assert audit_rows()[0].reason in {"malformed", "disallowed_algorithm"}


def test_inactive_user(client: Any, alice: Any, mint: Callable[..., str],
                       audit_rows: Callable[..., list[Any]]) -> None:
    alice.is_active = False
    alice.save()
    assert_refused(get(client, mint()), audit_rows, "inactive_owner")
    assert audit_rows()[0].user_id == alice.pk


def test_unknown_subject(client: Any, alice: Any, mint: Callable[..., str],
                         audit_rows: Callable[..., list[Any]]) -> None:
    assert_refused(get(client, mint(sub="bob-sub")), audit_rows, "unknown_credential")


def test_client_credentials_without_configured_user(
        settings: Any, client: Any, jwks: JWKSServer, mint: Callable[..., str],
        audit_rows: Callable[..., list[Any]]) -> None:
    settings.APIAUTH_JWT_ISSUERS = [issuer_setting(jwks, client_credentials_user=None)]
    token = mint(sub="reporting-client", client_id="reporting-client")
    assert_refused(get(client, token), audit_rows, "unknown_credential")


def test_insufficient_scope(client: Any, alice: Any, mint: Callable[..., str]) -> None:
    response = get(client, mint(scope="write"))
    assert response.status_code == 403
    assert response.json()["code"] == "insufficient_scope"


# -- more bad input (issue 5) ------------------------------------------------------------------


@pytest.mark.parametrize("kid", [123, ["rsa-1"], {"k": 1}, "k" * 257, "k" * 100_000])
def test_kid_not_a_string_or_huge(client: Any, alice: Any, mint: Callable[..., str], jwks: JWKSServer,
                                  audit_rows: Callable[..., list[Any]], kid: Any) -> None:
    _header, payload, signature = mint().split(".")
    token = f'{b64({"alg": "RS256", "typ": "at+jwt", "kid": kid})}.{payload}.{signature}'
    assert_refused(get(client, token), audit_rows, "malformed")
    # A huge kid makes the whole token too long: refused before decoding.
    assert audit_rows()[0].detail["problem"] == ("too long" if len(token) > 8192 else "kid")
    assert jwks.hits == {}  # refused before any key lookup


def test_x5c_header_is_ignored(client: Any, alice: Any, jwks: JWKSServer, attacker_key: Any,
                               mint: Callable[..., str], audit_rows: Callable[..., list[Any]]) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "evil")])
    now = timezone.now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(attacker_key.public_key()).serial_number(1)
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
            .sign(attacker_key, hashes.SHA256()))
    x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
    token = mint(key=attacker_key, headers={"x5c": [x5c], "x5u": jwks.url("evil")})
    assert_refused(get(client, token), audit_rows, "bad_signature")
    assert "evil" not in jwks.hits


def test_iat_in_the_future(client: Any, alice: Any, mint: Callable[..., str],
                           audit_rows: Callable[..., list[Any]]) -> None:
    now = int(time.time())
    assert_refused(get(client, mint(iat=now + 600, exp=now + 900)), audit_rows, "not_yet_valid")


def test_missing_exp_with_nbf(client: Any, alice: Any, mint: Callable[..., str],
                              audit_rows: Callable[..., list[Any]]) -> None:
    assert_refused(get(client, mint(drop=("exp",), nbf=int(time.time()))), audit_rows, "malformed")


@pytest.mark.parametrize("aud", [[AUD, "https://other.example.test"], ["https://other.example.test", AUD],
                                 [], None, "", [AUD, AUD]])
def test_multi_valued_or_empty_audience(client: Any, alice: Any, mint: Callable[..., str],
                                        audit_rows: Callable[..., list[Any]], aud: Any) -> None:
    response = get(client, mint(aud=aud))
    assert response.status_code == 401
    assert audit_rows()[0].reason in {"bad_audience", "malformed"}


def test_multi_valued_audience_allowed_by_issuer_entry(settings: Any, client: Any, alice: Any,
                                                       jwks: JWKSServer, mint: Callable[..., str]) -> None:
    settings.APIAUTH_JWT_ISSUERS = [issuer_setting(jwks, multiple_audiences=True)]
    assert get(client, mint(aud=[AUD, "https://other.example.test"])).status_code == 200
    assert get(client, mint(aud=["https://x.example.test", "https://y.example.test"])).status_code == 401


def test_single_valued_audience_list(client: Any, alice: Any, mint: Callable[..., str]) -> None:
    assert get(client, mint(aud=[AUD])).status_code == 200


def test_id_token_used_as_access_token(client: Any, alice: Any, mint: Callable[..., str],
                                       audit_rows: Callable[..., list[Any]]) -> None:
    """An OpenID Connect ID token: typ JWT, aud the client, nonce and auth_time."""
    token = mint(typ="JWT", aud="web-app", nonce="n", auth_time=int(time.time()))
    assert_refused(get(client, token), audit_rows, "malformed")


def raw_json_token(rsa_key: Any, header_json: str, payload_json: str) -> str:
    """Sign exactly these JSON texts (duplicate members survive)."""
    from cryptography.hazmat.primitives.asymmetric import padding

    def enc(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()

    signing_input = f"{enc(header_json)}.{enc(payload_json)}"
    signature = rsa_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes_sha256())
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def hashes_sha256() -> Any:
    from cryptography.hazmat.primitives import hashes

    return hashes.SHA256()


def payload_json(**claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISS, "aud": AUD, "sub": "alice-sub", "client_id": "web-app", "jti": uuid.uuid4().hex,
            "iat": now, "exp": now + 300, "scope": "read", **claims}
    return json.dumps(body)


@pytest.mark.parametrize(("header", "payload"), [
    ('{"alg": "RS256", "typ": "at+jwt", "kid": "rsa-1", "alg": "HS256"}', None),
    ('{"alg": "RS256", "typ": "at+jwt", "kid": "rsa-1", "kid": "other"}', None),
    (None, "sub"),
    (None, "scope"),
])
def test_duplicate_json_members(client: Any, alice: Any, rsa_key: Any, audit_rows: Callable[..., list[Any]],
                                header: str | None, payload: str | None) -> None:
    header = header or '{"alg": "RS256", "typ": "at+jwt", "kid": "rsa-1"}'
    body = payload_json()
    if payload == "sub":
        body = body[:-1] + ', "sub": "admin-sub"}'
    elif payload == "scope":
        body = body[:-1] + ', "scope": "read admin"}'
    assert_refused(get(client, raw_json_token(rsa_key, header, body)), audit_rows, "malformed")
    assert audit_rows()[0].detail["problem"] == "duplicate JSON member"


def test_well_formed_raw_token_passes(client: Any, alice: Any, rsa_key: Any) -> None:
    """The raw signer above makes acceptable tokens: the refusals are the duplicates' doing."""
    token = raw_json_token(rsa_key, '{"alg": "RS256", "typ": "at+jwt", "kid": "rsa-1"}', payload_json())
    assert get(client, token).status_code == 200


@pytest.mark.parametrize("token", [
    "e30x1.e30.abc",  # header length 5: not base64
    "e30.e30x1.abc",
    "eyJhbGciOiJSUzI1NiJ9.%%%.abc",
    "eyJhbGciOiJSUzI1NiJ9.e30",
    "eyJhbGciOiJSUzI1NiJ9..abc",
    "..",
    "a.b.c.d",
    "gA.e30.abc",  # \x80: not UTF-8
])
def test_malformed_segments(client: Any, token: str, audit_rows: Callable[..., list[Any]]) -> None:
    response = get(client, token)
    assert response.status_code == 401
    rows = audit_rows()
    assert rows == [] or [r.reason for r in rows] in (["malformed"], ["disallowed_algorithm"])


def test_one_megabyte_token_refused_before_decoding(client: Any, alice: Any, jwks: JWKSServer,
                                                    audit_rows: Callable[..., list[Any]]) -> None:
    token = "eyJ" + "A" * (1024 * 1024) + ".e30.sig"
    assert_refused(get(client, token), audit_rows, "malformed")
    assert audit_rows()[0].detail == {"problem": "too long", "length": len(token)}
    assert jwks.hits == {}


# -- revocation deny-list -------------------------------------------------------------------


def test_revoked_jti(client: Any, alice: Any, mint: Callable[..., str],
                     audit_rows: Callable[..., list[Any]]) -> None:
    from django_apiauth.oauth2 import denylist

    token = mint(jti="tok-revoked")
    assert get(client, token).status_code == 200
    assert denylist.deny(ISS, "tok-revoked", time.time() + 300)
    response = get(client, token)
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_credentials"
    assert [(r.outcome, r.reason, r.credential_id) for r in audit_rows()] == [
        ("success", "ok", "tok-revoked"), ("failure", "revoked", "tok-revoked")]
    # Same jti at another issuer is another token.
    assert not denylist.is_denied("https://other.example.test", "tok-revoked")


def test_deny_list_entry_lives_until_exp(alice: Any) -> None:
    from django_apiauth.oauth2 import denylist

    assert not denylist.deny(ISS, "old", time.time() - 3600)  # long expired: nothing to deny
    assert not denylist.is_denied(ISS, "old")


def malleate_es256(token: str) -> str:
    """The ``(r, n - s)`` twin of an ES256 signature: another string, equally valid."""
    n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    signing_input, _dot, signature = token.rpartition(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    r, s = raw[:32], int.from_bytes(raw[32:], "big")
    twin = r + (n - s).to_bytes(32, "big")
    return f"{signing_input}.{base64.urlsafe_b64encode(twin).rstrip(b'=').decode()}"


def test_es256_twin_signature_of_a_revoked_token(client: Any, alice: Any, ec_key: Any,
                                                 mint: Callable[..., str],
                                                 audit_rows: Callable[..., list[Any]]) -> None:
    from django_apiauth.oauth2 import denylist

    token = mint(key=ec_key, alg="ES256", kid="ec-1", jti="es-1")
    twin = malleate_es256(token)
    assert twin != token
    assert get(client, twin).status_code == 200  # the twin verifies: a string deny-list would miss it
    denylist.deny(ISS, "es-1", time.time() + 300)
    for candidate in (token, twin):
        assert get(client, candidate).status_code == 401
    assert [r.reason for r in audit_rows()] == ["ok", "revoked", "revoked"]


@pytest.fixture
def cache_down(settings: Any) -> Any:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.CACHES = {**settings.CACHES, "down": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": f"redis://127.0.0.1:{port}/0",
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
    }}
    settings.APIAUTH_JWT_DENYLIST_CACHE = "down"
    return settings


def test_deny_list_unreachable_is_503(client: Any, alice: Any, mint: Callable[..., str], cache_down: Any,
                                      audit_rows: Callable[..., list[Any]]) -> None:
    response = get(client, mint())
    assert response.status_code == 503
    assert response.json()["code"] == "service_unavailable"
    assert [r.reason for r in audit_rows()] == ["service_unavailable"]


def test_deny_raises_when_the_cache_is_down(cache_down: Any) -> None:
    from django_apiauth.core.authentication import DependencyUnavailable
    from django_apiauth.oauth2 import denylist

    with pytest.raises(DependencyUnavailable):
        denylist.deny(ISS, "x", time.time() + 60)
    with pytest.raises(DependencyUnavailable):
        denylist.is_denied(ISS, "x")


# -- no database query in steady state ----------------------------------------------------------


def test_repeated_token_makes_no_query_but_the_audit_insert(
        alice: Any, mint: Callable[..., str], jwks: JWKSServer) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    token = mint()
    request = APIRequestFactory().get(URL, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert JWTAuthentication().authenticate(request)[0] == alice  # type: ignore[index]
    for _ in range(3):
        request = APIRequestFactory().get(URL, HTTP_AUTHORIZATION=f"Bearer {token}")
        with CaptureQueriesContext(connection) as queries:
            user, _principal = JWTAuthentication().authenticate(request)  # type: ignore[misc]
        assert user == alice
        [query] = queries.captured_queries  # only the audit row
        assert query["sql"].startswith('INSERT INTO "django_apiauth_auditevent"')
    # Another token of the same subject: the signature is verified, the user still cached.
    request = APIRequestFactory().get(URL, HTTP_AUTHORIZATION=f"Bearer {mint()}")
    with CaptureQueriesContext(connection) as queries:
        assert JWTAuthentication().authenticate(request)[0] == alice  # type: ignore[index]
    assert [q["sql"].split()[0] for q in queries.captured_queries] == ["INSERT"]
    assert jwks.hits == {"jwks": 1}


def test_deactivated_user_refused_at_once_despite_the_cache(
        client: Any, alice: Any, mint: Callable[..., str], audit_rows: Callable[..., list[Any]]) -> None:
    token = mint()
    assert get(client, token).status_code == 200
    assert get(client, token).status_code == 200  # cached now
    alice.is_active = False
    alice.save()
    response = get(client, token)
    assert response.status_code == 401
    assert audit_rows()[-1].reason == "inactive_owner"


def test_identity_moved_to_another_user_is_seen_at_once(
        client: Any, alice: Any, make_user: Callable[..., Any], mint: Callable[..., str]) -> None:
    bob = make_user("bob")
    token = mint()
    assert get(client, token).json()["user"] == "alice"
    ExternalIdentity.objects.filter(subject="alice-sub").update(user=bob)  # no signal: a queryset update
    assert get(client, token).json()["user"] == "alice"  # documented: only saves and deletes invalidate
    identity = ExternalIdentity.objects.get(subject="alice-sub")
    identity.save()
    assert get(client, token).json()["user"] == "bob"
    identity.delete()
    assert get(client, token).status_code == 401


def test_stamp_written_by_another_process_invalidates(client: Any, alice: Any,
                                                      mint: Callable[..., str]) -> None:
    """Another process saved the user: only the shared stamp tells this one."""
    from django.contrib.auth import get_user_model

    from django_apiauth.oauth2 import denylist

    token = mint()
    assert get(client, token).status_code == 200
    get_user_model().objects.filter(pk=alice.pk).update(is_active=False)  # no signal here
    denylist.cache().set(f"apiauth:jwt:user-stamp:{alice.pk}", "from-elsewhere", None)
    assert get(client, token).status_code == 401


def test_verified_token_cache_still_checks_expiry(client: Any, alice: Any, mint: Callable[..., str],
                                                  audit_rows: Callable[..., list[Any]]) -> None:
    from freezegun import freeze_time

    now = int(time.time())
    token = mint(iat=now, exp=now + 60)
    assert get(client, token).status_code == 200
    with freeze_time(timezone.now() + timedelta(seconds=60 + 31)):
        response = get(client, token)
    assert response.status_code == 401
    assert audit_rows()[-1].reason == "expired"


def test_one_issuer_with_two_jwks_uris_never_mixes_their_key_sets(jwks: JWKSServer, rsa_key: Any,
                                                                  attacker_key: Any) -> None:
    """JWT bearer auth and OIDC sign-in may name one issuer with different JWKS URIs:
    each URI has its own cache entry (the attacker's set is never served for the other)."""
    from django_apiauth.schemes.jwt import Issuer, issuer_keys

    good = Issuer.from_setting(issuer_setting(jwks))
    other = Issuer.from_setting(issuer_setting(jwks, jwks_uri=jwks.url("evil")))
    good_keys = issuer_keys(good)
    other_keys = issuer_keys(other)
    assert {k["n"] for k in good_keys if k.get("kty") == "RSA"} == {rsa_jwk(rsa_key, "x")["n"]}
    assert {k["n"] for k in other_keys} == {rsa_jwk(attacker_key, "x")["n"]}
    assert issuer_keys(good) == good_keys  # still its own set, from the cache
    assert jwks.hits == {"jwks": 1, "evil": 1}
