"""django-oauth-toolkit as the authorization server, end to end over real HTTP.

The example project runs in pytest-django's live server: DOT at ``/o/`` mints
RFC 9068 JWT access tokens (``django_apiauth.oauth2.tokens``), serves its JWKS,
introspects and revokes; ``/api/whoami/`` verifies the tokens with
``JWTAuthentication``, which fetches that JWKS over HTTP. Every client here is
a scripted ``requests`` session: log in, consent, code, token.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.core.cache import cache
from django.core.management import call_command
from oauth2_provider.models import AccessToken, RefreshToken, get_application_model

from django_apiauth.models import AuditEvent
from django_apiauth.schemes import jwt as jwt_scheme

pytestmark = pytest.mark.django_db(transaction=True)

Application = get_application_model()
AUD = "https://api.example.test/"
REDIRECT_URI = "http://127.0.0.1:9/callback"
PASSWORD = "correct horse battery staple"
TIMEOUT = 10


@pytest.fixture
def provider(live_server: Any, settings: Any) -> Iterator[str]:
    """The live server as issuer: DOT's settings and the API's trusted issuer point at it."""
    issuer = live_server.url + "/o"
    settings.OAUTH2_PROVIDER = {
        **settings.OAUTH2_PROVIDER,
        "OIDC_ISS_ENDPOINT": issuer,
        "OAUTH_DEVICE_VERIFICATION_URI": issuer + "/device/",
        "ALWAYS_RELOAD_OAUTHLIB_CORE": True,
    }
    settings.APIAUTH_OAUTH2_JWT_AUDIENCE = AUD
    settings.APIAUTH_JWT_ISSUERS = [{
        "issuer": issuer, "audience": AUD, "jwks_uri": issuer + "/.well-known/jwks.json",
        "algorithms": ["RS256"], "max_lifetime": 900, "local": True,
    }]
    cache.clear()
    yield issuer
    cache.clear()


@pytest.fixture
def service_client(make_user: Callable[..., Any]) -> tuple[Any, str]:
    """A confidential client-credentials client owned by the service user ``svc-reports``."""
    secret = secrets.token_urlsafe(24)
    app = Application.objects.create(
        name="reports", user=make_user("svc-reports"), client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS, client_secret=secret,
    )
    return app, secret


@pytest.fixture
def web_client(make_user: Callable[..., Any]) -> Any:
    """A public authorization-code client (PKCE is its only proof)."""
    return Application.objects.create(
        name="web", user=make_user("web-owner"), client_type=Application.CLIENT_PUBLIC,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE, redirect_uris=REDIRECT_URI,
        client_secret="", algorithm=Application.RS256_ALGORITHM,
    )


@pytest.fixture
def carol(make_user: Callable[..., Any]) -> Any:
    user = make_user("carol")
    user.set_password(PASSWORD)
    user.save()
    return user


def token_request(provider: str, data: dict[str, str], auth: Any = None) -> requests.Response:
    return requests.post(provider + "/token/", data=data, auth=auth, timeout=TIMEOUT)


def client_credentials(provider: str, client: tuple[Any, str], scope: str = "whoami:read") -> dict[str, Any]:
    app, secret = client
    response = token_request(provider, {"grant_type": "client_credentials", "scope": scope},
                             auth=(app.client_id, secret))
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def whoami(live_server: Any, token: str, **headers: str) -> requests.Response:
    return requests.get(live_server.url + "/api/whoami/", timeout=TIMEOUT,
                        headers={"Authorization": f"Bearer {token}", **headers})


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def form_fields(page: str) -> dict[str, str]:
    """``name → value`` of the ``<input>`` elements of an HTML page."""
    fields = {}
    for tag in re.findall(r"<input[^>]*>", page):
        attrs = dict(re.findall(r'(\w+)="([^"]*)"', tag))
        if "name" in attrs and attrs.get("type") != "submit":
            fields[attrs["name"]] = html.unescape(attrs.get("value", ""))
    return fields


def log_in(session: requests.Session, live_server: Any, response: requests.Response,
           username: str = "carol") -> requests.Response:
    """Follow a redirect to the sign-in page and sign in; returns the page ``next`` leads to."""
    assert response.status_code == 302, response.text
    login_url = live_server.url + response.headers["Location"]
    assert urlsplit(login_url).path == "/accounts/login/"
    page = session.get(login_url, timeout=TIMEOUT)
    fields = form_fields(page.text)
    fields.update(username=username, password=PASSWORD)
    signed_in = session.post(live_server.url + "/accounts/login/", data=fields, timeout=TIMEOUT,
                             headers={"Referer": login_url}, allow_redirects=False)
    assert signed_in.status_code == 302, signed_in.text
    return session.get(live_server.url + signed_in.headers["Location"], timeout=TIMEOUT,
                       allow_redirects=False)


def authorization_code(live_server: Any, provider: str, app: Any, challenge: str,
                       scope: str = "openid whoami:read") -> str:
    """Drive the browser part of the code flow: authorize → sign in → consent → code."""
    session = requests.Session()
    state = secrets.token_urlsafe(12)
    query = urlencode({"response_type": "code", "client_id": app.client_id, "redirect_uri": REDIRECT_URI,
                       "scope": scope, "state": state, "code_challenge": challenge,
                       "code_challenge_method": "S256"})
    first = session.get(f"{provider}/authorize/?{query}", timeout=TIMEOUT, allow_redirects=False)
    consent = log_in(session, live_server, first)
    assert consent.status_code == 200, consent.text
    assert 'name="allow"' in consent.text
    fields = form_fields(consent.text)
    fields["allow"] = "Authorize"
    answer = session.post(consent.url, data=fields, timeout=TIMEOUT, allow_redirects=False,
                          headers={"Referer": consent.url})
    assert answer.status_code == 302, answer.text
    location = urlsplit(answer.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT_URI
    params = parse_qs(location.query)
    assert params["state"] == [state]
    assert params["iss"] == [provider]  # RFC 9207, the RFC 9700 gate
    return params["code"][0]


def jwks_kids(provider: str) -> list[str]:
    document = requests.get(provider + "/.well-known/jwks.json", timeout=TIMEOUT).json()
    return [key["kid"] for key in document["keys"]]


def token_events(**filters: Any) -> list[tuple[str, str]]:
    rows = AuditEvent.objects.filter(event="oauth2.token", **filters).order_by("id")
    return [(e.outcome, e.reason) for e in rows]


# -- client credentials ---------------------------------------------------------------------


def test_client_credentials_jwt_calls_whoami(live_server: Any, provider: str,
                                             service_client: tuple[Any, str]) -> None:
    answer = client_credentials(provider, service_client)
    token = answer["access_token"]
    assert answer["token_type"] == "Bearer"
    assert answer["expires_in"] == 900  # 15 minutes
    assert "refresh_token" not in answer
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "RS256"
    assert header["kid"] in jwks_kids(provider)
    claims = jwt.decode(token, options={"verify_signature": False})
    app = service_client[0]
    assert claims["iss"] == provider
    assert claims["aud"] == AUD
    assert claims["sub"] == claims["client_id"] == app.client_id
    assert claims["scope"] == "whoami:read"
    assert claims["exp"] - claims["iat"] == 900
    assert set(claims) == {"iss", "aud", "exp", "iat", "sub", "client_id", "jti", "scope"}
    # Any service verifies it offline with the published JWKS.
    keys = jwt.PyJWKClient(provider + "/.well-known/jwks.json")
    verified = jwt.decode(token, keys.get_signing_key_from_jwt(token).key, algorithms=["RS256"],
                          audience=AUD, issuer=provider)
    assert verified["jti"] == claims["jti"]

    response = whoami(live_server, token)
    assert response.status_code == 200, response.text
    assert response.json() == {"user": "svc-reports", "scheme": "jwt", "credential_id": claims["jti"],
                               "scopes": ["whoami:read"]}
    # The API fetched the provider's JWKS over HTTP and cached it.
    assert cache.get(jwt_scheme._cache_key(provider, "set", provider + "/.well-known/jwks.json"))
    # DOT stores the row (text column) but only its checksum (RFC 9700 token storage).
    row = AccessToken.objects.get()
    assert row.token == ""
    assert row.token_checksum == hashlib.sha256(token.encode()).hexdigest()
    assert token_events() == [("success", "issued")]
    issued = AuditEvent.objects.get(event="oauth2.token")
    assert issued.credential_id == claims["jti"]
    assert issued.user.username == "svc-reports"
    assert issued.detail["grant_type"] == "client_credentials"
    assert secrets_absent(issued.detail, service_client[1], token)


def secrets_absent(detail: dict[str, Any], *values: str) -> bool:
    text = repr(detail)
    return not any(value in text for value in values)


@pytest.mark.parametrize(("data", "auth", "reason", "status"), [
    ({"grant_type": "client_credentials"}, ("wrong", "secret"), "invalid_client", 401),
    ({"grant_type": "client_credentials"}, "bad-secret", "invalid_client", 401),
    ({"grant_type": "client_credentials", "scope": "admin"}, "ok", "invalid_scope", 400),
    ({"grant_type": "nonsense"}, "ok", "unsupported_grant_type", 400),
])
def test_token_endpoint_failures_are_audited(provider: str, service_client: tuple[Any, str],
                                             data: dict[str, str], auth: Any, reason: str,
                                             status: int) -> None:
    app, secret = service_client
    if auth == "ok":
        auth = (app.client_id, secret)
    elif auth == "bad-secret":
        auth = (app.client_id, secret + "x")
    response = token_request(provider, data, auth=auth)
    assert response.status_code == status, response.text
    assert response.json()["error"] == reason
    assert token_events() == [("failure", reason)]
    row = AuditEvent.objects.get(event="oauth2.token")
    assert row.scheme == "oauth2"
    assert secrets_absent(row.detail, secret, PASSWORD)


def test_password_grant_is_off(provider: str, make_user: Callable[..., Any], carol: Any) -> None:
    """RFC 9700 §2.4: even a client registered for it cannot use the password grant."""
    secret = secrets.token_urlsafe(24)
    app = Application.objects.create(
        name="legacy", user=make_user("legacy-owner"), client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_PASSWORD, client_secret=secret,
    )
    response = token_request(provider, {"grant_type": "password", "username": "carol", "password": PASSWORD},
                             auth=(app.client_id, secret))
    assert response.status_code in (400, 401), response.text
    assert response.json()["error"] == "unauthorized_client"
    assert token_events() == [("failure", "unauthorized_client")]
    assert secrets_absent(AuditEvent.objects.get(event="oauth2.token").detail, PASSWORD, secret)


# -- authorization code + PKCE ---------------------------------------------------------------


def test_authorization_code_with_pkce(live_server: Any, provider: str, web_client: Any, carol: Any) -> None:
    verifier, challenge = pkce_pair()
    code = authorization_code(live_server, provider, web_client, challenge)
    # The code alone (no verifier) is refused.
    stolen = token_request(provider, {"grant_type": "authorization_code", "code": code,
                                      "redirect_uri": REDIRECT_URI, "client_id": web_client.client_id})
    assert stolen.status_code == 400
    assert stolen.json()["error"] == "invalid_request"
    code = authorization_code(live_server, provider, web_client, challenge)
    response = token_request(provider, {"grant_type": "authorization_code", "code": code,
                                        "redirect_uri": REDIRECT_URI, "client_id": web_client.client_id,
                                        "code_verifier": verifier})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["refresh_token"].count(".") == 0  # refresh tokens stay opaque
    id_token = jwt.decode(answer["id_token"], options={"verify_signature": False})
    claims = jwt.decode(answer["access_token"], options={"verify_signature": False})
    assert claims["sub"] == id_token["sub"] == str(carol.pk)
    assert claims["client_id"] == web_client.client_id
    me = whoami(live_server, answer["access_token"])
    assert me.status_code == 200, me.text
    assert me.json()["user"] == "carol"
    assert me.json()["scopes"] == ["openid", "whoami:read"]
    # An ID token is not an access token (typ JWT, aud the client).
    refused = whoami(live_server, answer["id_token"])
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]
    assert token_events() == [("failure", "invalid_request"), ("success", "issued")]


@pytest.mark.parametrize("params", [
    {},  # no code_challenge: PKCE is required
    {"code_challenge": "x" * 43, "code_challenge_method": "plain"},  # RFC 9700: S256 only
])
def test_authorization_without_s256_pkce_is_refused(live_server: Any, provider: str, web_client: Any,
                                                    carol: Any, params: dict[str, str]) -> None:
    session = requests.Session()
    query = urlencode({"response_type": "code", "client_id": web_client.client_id,
                       "redirect_uri": REDIRECT_URI, "scope": "whoami:read", "state": "s", **params})
    first = session.get(f"{provider}/authorize/?{query}", timeout=TIMEOUT, allow_redirects=False)
    answer = log_in(session, live_server, first)
    if answer.status_code == 200:  # refused when the code would be created, after consent
        fields = {**form_fields(answer.text), "allow": "Authorize"}
        answer = session.post(answer.url, data=fields, timeout=TIMEOUT, allow_redirects=False,
                              headers={"Referer": answer.url})
    assert answer.status_code in (302, 400), answer.text
    if answer.status_code == 302:
        location = urlsplit(answer.headers["Location"])
        assert parse_qs(location.query)["error"] == ["invalid_request"]
        assert "code" not in parse_qs(location.query)


# -- refresh rotation and reuse detection ------------------------------------------------------


def test_refresh_rotation_and_reuse_detection(live_server: Any, provider: str, web_client: Any,
                                              carol: Any) -> None:
    verifier, challenge = pkce_pair()
    code = authorization_code(live_server, provider, web_client, challenge, scope="whoami:read")
    first = token_request(provider, {"grant_type": "authorization_code", "code": code,
                                     "redirect_uri": REDIRECT_URI, "client_id": web_client.client_id,
                                     "code_verifier": verifier}).json()
    refreshed = token_request(provider, {"grant_type": "refresh_token", "client_id": web_client.client_id,
                                         "refresh_token": first["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    second = refreshed.json()
    assert second["refresh_token"] != first["refresh_token"]  # rotated
    # The access token the old refresh token came with was revoked by the rotation.
    assert whoami(live_server, first["access_token"]).status_code == 401
    assert whoami(live_server, second["access_token"]).status_code == 200
    # Reuse of the rotated refresh token: refused, and the whole family is revoked.
    reuse = token_request(provider, {"grant_type": "refresh_token", "client_id": web_client.client_id,
                                     "refresh_token": first["refresh_token"]})
    assert reuse.status_code == 400
    assert reuse.json()["error"] == "invalid_grant"
    assert whoami(live_server, second["access_token"]).status_code == 401
    after = token_request(provider, {"grant_type": "refresh_token", "client_id": web_client.client_id,
                                     "refresh_token": second["refresh_token"]})
    assert after.status_code == 400
    refusals = AuditEvent.objects.filter(event="authenticate", scheme="jwt", outcome="failure")
    assert [r.reason for r in refusals.order_by("id")] == ["revoked", "revoked"]
    assert not AccessToken.objects.exists()
    assert RefreshToken.objects.filter(revoked__isnull=True).count() == 0


# -- device authorization grant (RFC 8628) ----------------------------------------------------


def test_device_flow(live_server: Any, provider: str, make_user: Callable[..., Any], carol: Any) -> None:
    device_app = Application.objects.create(
        name="tv", user=make_user("tv-owner"), client_type=Application.CLIENT_PUBLIC,
        authorization_grant_type=Application.GRANT_DEVICE_CODE, client_secret="",
    )
    started = requests.post(provider + "/device-authorization/", timeout=TIMEOUT,
                            data={"client_id": device_app.client_id})
    assert started.status_code == 200, started.text
    grant = started.json()
    assert grant["verification_uri"] == provider + "/device/"
    poll = {"grant_type": "urn:ietf:params:oauth:grant-type:device_code",
            "device_code": grant["device_code"], "client_id": device_app.client_id}
    pending = token_request(provider, poll)
    assert pending.status_code == 400
    assert pending.json()["error"] == "authorization_pending"
    # The user, on another device: sign in, enter the code, accept.
    session = requests.Session()
    page = log_in(session, live_server, session.get(grant["verification_uri"], timeout=TIMEOUT,
                                                    allow_redirects=False))
    fields = form_fields(page.text)
    fields["user_code"] = grant["user_code"]
    entered = session.post(grant["verification_uri"], data=fields, timeout=TIMEOUT, allow_redirects=False,
                           headers={"Referer": grant["verification_uri"]})
    assert entered.status_code == 302, entered.text
    confirm_url = live_server.url + entered.headers["Location"]
    confirm = session.get(confirm_url, timeout=TIMEOUT)
    fields = {**form_fields(confirm.text), "action": "accept"}
    accepted = session.post(confirm_url, data=fields, timeout=TIMEOUT, allow_redirects=False,
                            headers={"Referer": confirm_url})
    assert accepted.status_code == 302, accepted.text
    issued = token_request(provider, poll)
    assert issued.status_code == 200, issued.text
    me = whoami(live_server, issued.json()["access_token"])
    assert me.status_code == 200, me.text
    assert me.json()["user"] == "carol"
    assert ("failure", "authorization_pending") in token_events()
    assert token_events()[-1] == ("success", "issued")


# -- introspection and revocation ----------------------------------------------------------------


def test_introspection_and_revocation(live_server: Any, provider: str,
                                      service_client: tuple[Any, str]) -> None:
    app, secret = service_client
    token = client_credentials(provider, service_client)["access_token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert whoami(live_server, token).status_code == 200
    introspected = requests.post(provider + "/introspect/", data={"token": token},
                                 auth=(app.client_id, secret), timeout=TIMEOUT)
    assert introspected.status_code == 200, introspected.text
    body = introspected.json()
    assert body["active"] is True
    assert body["client_id"] == app.client_id
    assert body["scope"] == "whoami:read"
    assert body["exp"] == claims["exp"]

    revoked = requests.post(provider + "/revoke_token/", data={"token": token},
                            auth=(app.client_id, secret), timeout=TIMEOUT)
    assert revoked.status_code == 200, revoked.text
    refused = whoami(live_server, token)
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == 'Bearer realm="api", error="invalid_token"'
    assert refused.json()["code"] == "invalid_credentials"  # no hint that it was revoked
    failure = AuditEvent.objects.filter(event="authenticate", outcome="failure").get()
    assert (failure.scheme, failure.reason, failure.credential_id) == ("jwt", "revoked", claims["jti"])
    revocation = AuditEvent.objects.get(event="oauth2.token_revoked")
    assert (revocation.credential_id, revocation.user.username) == (claims["jti"], "svc-reports")
    gone = requests.post(provider + "/introspect/", data={"token": token},
                         auth=(app.client_id, secret), timeout=TIMEOUT)
    assert gone.json() == {"active": False}


def test_admin_delete_revokes(live_server: Any, provider: str, service_client: tuple[Any, str]) -> None:
    token = client_credentials(provider, service_client)["access_token"]
    assert whoami(live_server, token).status_code == 200
    AccessToken.objects.get().delete()  # what the admin's delete does
    assert whoami(live_server, token).status_code == 401
    assert AuditEvent.objects.filter(event="authenticate", outcome="failure").get().reason == "revoked"


# -- signing-key rotation ---------------------------------------------------------------------


def new_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def test_signing_key_rotation(live_server: Any, provider: str, settings: Any,
                              service_client: tuple[Any, str]) -> None:
    old_token = client_credentials(provider, service_client)["access_token"]
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    assert whoami(live_server, old_token).status_code == 200
    old_pem = settings.OAUTH2_PROVIDER["OIDC_RSA_PRIVATE_KEY"]
    settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "OIDC_RSA_PRIVATE_KEY": new_pem(),
                                "OIDC_RSA_PRIVATE_KEYS_INACTIVE": [old_pem]}
    assert jwks_kids(provider)[1] == old_kid
    new_token = client_credentials(provider, service_client)["access_token"]
    new_kid = jwt.get_unverified_header(new_token)["kid"]
    assert new_kid != old_kid
    assert jwks_kids(provider) == [new_kid, old_kid]
    # The API still has the old JWKS cached: the unknown kid makes it refetch once.
    assert whoami(live_server, new_token).status_code == 200
    assert whoami(live_server, old_token).status_code == 200  # inactive key: valid until exp
    # The old key retired for good: its tokens fail once the API's JWKS is refreshed.
    settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "OIDC_RSA_PRIVATE_KEYS_INACTIVE": []}
    cache.clear()
    assert whoami(live_server, new_token).status_code == 200
    refused = whoami(live_server, old_token)
    assert refused.status_code == 401
    assert AuditEvent.objects.filter(event="authenticate", outcome="failure").get().reason == "bad_signature"


# -- certificate-bound tokens (RFC 8705) --------------------------------------------------------


def test_certificate_bound_token(live_server: Any, provider: str, settings: Any,
                                 service_client: tuple[Any, str], client_pems: tuple[str, str]) -> None:
    """The TLS terminator (here the test, from a trusted address) forwards the verified certificate."""
    settings.APIAUTH_TRUSTED_PROXIES = ["127.0.0.1/32"]
    mine, other = client_pems
    app, secret = service_client
    response = requests.post(provider + "/token/", timeout=TIMEOUT, auth=(app.client_id, secret),
                             data={"grant_type": "client_credentials", "scope": "whoami:read"},
                             headers={"X-SSL-Client-Cert": nginx_escape(mine),
                                      "X-SSL-Client-Verify": "SUCCESS"})
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["cnf"] == {"x5t#S256": x5t_s256(mine)}
    assert AuditEvent.objects.get(event="oauth2.token").detail["certificate_bound"] is True

    forwarded = {"X-SSL-Client-Cert": nginx_escape(mine), "X-SSL-Client-Verify": "SUCCESS"}
    ok = whoami(live_server, token, **forwarded)
    assert ok.status_code == 200, ok.text
    assert ok.json()["user"] == "svc-reports"
    assert ok.json()["scheme"] == "jwt"
    for headers in ({}, {"X-SSL-Client-Cert": nginx_escape(other), "X-SSL-Client-Verify": "SUCCESS"}):
        refused = whoami(live_server, token, **headers)
        assert refused.status_code == 401, refused.text
    failures = AuditEvent.objects.filter(event="authenticate", outcome="failure").order_by("id")
    reasons = [r.reason for r in failures]
    assert reasons == ["certificate_binding_mismatch", "certificate_binding_mismatch"]
    # From an untrusted address the certificate header is a spoofing attempt.
    settings.APIAUTH_TRUSTED_PROXIES = ["10.9.9.9/32"]
    spoofed = whoami(live_server, token, **{"X-SSL-Client-Cert": nginx_escape(mine)})
    assert spoofed.status_code == 401
    last = AuditEvent.objects.filter(event="authenticate").latest("id")
    assert last.reason == "untrusted_proxy"


def nginx_escape(pem: str) -> str:
    from urllib.parse import quote

    return quote(pem, safe="")


def x5t_s256(pem: str) -> str:
    from cryptography import x509

    der = x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def client_pems() -> tuple[str, str]:
    """Two self-signed clientAuth certificates (what the terminator verified is not our concern here)."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    pems = []
    for name in ("machine-a", "machine-b"):
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.now(UTC)
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        pems.append(cert.public_bytes(serialization.Encoding.PEM).decode())
    return pems[0], pems[1]


# -- the demo's printed command lines, run by a real shell and curl ------------------------------------


BASH = shutil.which("bash") or "/bin/bash"


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_demo_prints_working_client_credentials_curl(live_server: Any, provider: str) -> None:
    from io import StringIO

    out = StringIO()
    call_command("demo_setup", base_url=live_server.url, stdout=out)
    lines = out.getvalue().splitlines()
    get_token = next(i for i, line in enumerate(lines) if line.startswith("curl ") and "/o/token/" in line)
    assert lines[get_token - 1].startswith("# 200: an access token")
    combined = next(line for line in lines if line.startswith("TOKEN=$(curl "))
    result = subprocess.run([BASH, "-c", combined], capture_output=True, text=True,  # noqa: S603 (our own output)
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    import json

    assert json.loads(result.stdout)["user"] == "demo-service"
    assert json.loads(result.stdout)["scheme"] == "jwt"
