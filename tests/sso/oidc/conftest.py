"""A tiny but real OpenID Provider over HTTP, for the ID-token manipulation cases.

:class:`TestOP` serves discovery, JWKS, an authorization endpoint that
redirects straight back with a code, a token endpoint (client_secret_basic or
post, PKCE S256 checked, single-use codes) and UserInfo. The ID token it
returns is built by the test: claims and header can be edited, dropped or
signed with another key, so each bad-input case is a real HTTP exchange.
The example project's own django-oauth-toolkit OP is the peer of the
conformance flow (``test_dot_provider.py``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from django.core.cache import cache
from jwt.algorithms import RSAAlgorithm

from django_apiauth.models import AuditEvent
from django_apiauth.sso.oidc.models import OidcProvider

CLIENT_ID = "rp-client"
CLIENT_SECRET = "rp-client-secret-0123456789abcdef0123456789"


def rsa_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    return {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, "alg": "RS256", "use": "sig"}


class TestOP:
    """The OP's state: what it publishes and how it answers. Reset for every test."""

    __test__ = False  # not a test class

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self.key = key
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.handle(self, "GET")

            def do_POST(self) -> None:
                server.handle(self, "POST")

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.reset()

    def reset(self) -> None:
        self.discovery_overrides: dict[str, Any] = {}
        self.discovery_status = 200
        self.jwks: list[dict[str, Any]] = [rsa_jwk(self.key, "k1")]
        self.jwks_status = 200
        self.token_status = 200
        self.send_iss_parameter = False
        self.iss_parameter: str | None = None
        self.claims: dict[str, Any] = {}
        self.drop: tuple[str, ...] = ()
        self.header: dict[str, Any] = {"kid": "k1"}
        self.sign: Callable[[dict[str, Any], dict[str, Any]], str] | None = None
        self.userinfo: dict[str, Any] | None = None
        self.userinfo_status = 200
        self.codes: dict[str, dict[str, Any]] = {}
        self.hits: dict[str, int] = {}
        self.token_requests: list[dict[str, Any]] = []

    # -- documents -----------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "userinfo_endpoint": f"{self.issuer}/userinfo",
            "end_session_endpoint": f"{self.issuer}/logout",
            "response_types_supported": ["code"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            **self.discovery_overrides,
        }

    def id_token(self, grant: dict[str, Any]) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer, "aud": CLIENT_ID, "sub": "alice-sub", "iat": now, "exp": now + 300,
            "nonce": grant["nonce"], "email": "alice@example.test", "email_verified": True,
            "preferred_username": "alice", **self.claims,
        }
        for name in self.drop:
            claims.pop(name, None)
        header = dict(self.header)
        if self.sign is not None:
            return self.sign(claims, header)
        return jwt.encode(claims, self.key, algorithm="RS256", headers=header)

    # -- HTTP --------------------------------------------------------------------------

    def handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(request.path)
        self.hits[url.path] = self.hits.get(url.path, 0) + 1
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if method == "GET" and url.path == "/.well-known/openid-configuration":
            self.reply(request, self.discovery_status, self.metadata())
        elif method == "GET" and url.path == "/jwks":
            self.reply(request, self.jwks_status, {"keys": self.jwks})
        elif method == "GET" and url.path == "/authorize":
            code = secrets.token_urlsafe(16)
            self.codes[code] = {**query, "used": False}
            back = {"code": code, "state": query.get("state", "")}
            if self.send_iss_parameter:
                back["iss"] = self.iss_parameter if self.iss_parameter is not None else self.issuer
            request.send_response(302)
            request.send_header("Location", f"{query['redirect_uri']}?{urlencode(back)}")
            request.send_header("Content-Length", "0")
            request.end_headers()
        elif method == "POST" and url.path == "/token":
            length = int(request.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(request.rfile.read(length).decode()).items()}
            self.token_requests.append({"form": form, "authorization": request.headers.get("Authorization")})
            self.reply(request, *self.token(form, request.headers.get("Authorization")))
        elif method == "GET" and url.path == "/userinfo":
            if self.userinfo_status != 200:
                self.reply(request, self.userinfo_status, {"error": "server_error"})
                return
            self.reply(request, 200, self.userinfo if self.userinfo is not None else {
                "sub": "alice-sub", "email": "alice@example.test", "email_verified": True,
                "given_name": "Alice",
            })
        else:
            self.reply(request, 404, {"error": "not_found"})

    def token(self, form: dict[str, str], authorization: str | None) -> tuple[int, dict[str, Any]]:
        if self.token_status != 200:
            return self.token_status, {"error": "server_error"}
        if authorization and authorization.startswith("Basic "):
            client_id, _sep, secret = base64.b64decode(authorization[6:]).decode().partition(":")
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        if (client_id, secret) != (CLIENT_ID, CLIENT_SECRET):
            return 401, {"error": "invalid_client"}
        grant = self.codes.get(form.get("code", ""))
        if grant is None or grant["used"] or form.get("redirect_uri") != grant["redirect_uri"]:
            return 400, {"error": "invalid_grant"}
        grant["used"] = True
        verifier = form.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        if grant.get("code_challenge_method") != "S256" or challenge != grant.get("code_challenge"):
            return 400, {"error": "invalid_grant", "error_description": "PKCE"}
        return 200, {"access_token": secrets.token_urlsafe(24), "token_type": "Bearer", "expires_in": 300,
                     "id_token": self.id_token(grant)}

    @staticmethod
    def reply(request: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)


@pytest.fixture(scope="session")
def op_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def attacker_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def op_server(op_key: rsa.RSAPrivateKey) -> Iterator[TestOP]:
    server = TestOP(op_key)
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture
def op(op_server: TestOP) -> Iterator[TestOP]:
    op_server.reset()
    cache.clear()
    yield op_server
    cache.clear()


@pytest.fixture
def make_provider(db: Any, op: TestOP) -> Callable[..., OidcProvider]:
    def make(slug: str = "acme", **fields: Any) -> OidcProvider:
        fields.setdefault("issuer", op.issuer)
        fields.setdefault("client_id", CLIENT_ID)
        fields.setdefault("name", slug.upper())
        fields.setdefault("jit_enabled", True)
        fields.setdefault("attribute_mapping", {"username": "preferred_username", "email": "email",
                                                "first_name": "given_name"})
        provider = OidcProvider(slug=slug, **fields)
        provider.set_client_secret(CLIENT_SECRET)
        provider.full_clean()
        provider.save()
        return provider

    return make


@pytest.fixture
def provider(make_provider: Callable[..., OidcProvider]) -> OidcProvider:
    return make_provider()


@pytest.fixture
def sso_rows() -> Callable[..., list[AuditEvent]]:
    def rows(**filters: Any) -> list[AuditEvent]:
        return list(AuditEvent.objects.filter(event="sso_login", **filters).order_by("id"))

    return rows
