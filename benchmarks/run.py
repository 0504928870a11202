#!/usr/bin/env python
"""django-apiauth benchmark (``make bench``; smoke run: ``python benchmarks/run.py --quick``).

Part 1, per-request overhead: full Django + DRF requests driven in-process
through Django's WSGI handler with a prebuilt environ, one process, variants
interleaved (every round runs a batch of requests per variant, in shuffled
order). Overhead = variant median - no-auth median.

RFC 9421 HTTP message signatures (``HttpSignatureAuthentication`` +
``HasScopes``), in the same rounds: GET with an hmac-sha256 and an ed25519
credential (information), and a signed POST with a 1 KiB JSON body
(``Content-Digest`` covered; issue #3 target against our API-key row), next to
"the floor", a bare hand-written HMAC check of the same POST (information). A
signature is accepted once (replay protection), so every request carries its
own signature, made (client work, not timed) before its round is timed.

Every request of every variant gets its own environ, new strings included, as
a WSGI server builds one per request; a round's environs are all built (and
the signed ones signed) before any batch of the round is timed, so the work of
building them falls before the round's first batch, whichever variant the
shuffle puts first. (Signing each batch just before timing it, as this script
did before, charged the signed rows for a CPU cache full of the client's
signing code: about 0.15-0.3 of the issue #3 ratio.)

Forwarded client certificates (``ClientCertificateAuthentication`` +
``HasScopes``, nginx header format, from a trusted proxy), in the same rounds:
with the decode caches warm (issue #4 target against our API-key row) and
emptied before every request, untimed (information).

Part 2, lookup cost: ``ApiKeyAuthentication().authenticate()`` for the same
key with 1, 10 000 and 1 000 000 API keys in the table (one database per
size, sizes interleaved the same way).

Prints a table and writes JSON to ``benchmarks/results/``. PASS/FAIL against
the targets is information: the exit status is 0 whatever the verdicts. It is
non-zero only when the benchmark cannot run at all (set-up broken, a variant
not answering 200), which is what makes ``--quick`` a smoke test.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import math
import os
import platform
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS_DIR = ROOT / "benchmarks" / "results"

TARGET_OVERHEAD_RATIO = 0.75
TARGET_LOOKUP_RATIO = 1.2
TARGET_SIG_POST_RATIO = 1.2  # issue #3: sig_hmac_post_overhead / ours_overhead
TARGET_MTLS_RATIO = 1.0  # issue #4: mtls_cached_overhead / ours_overhead
TARGET_JWT_SIMPLEJWT_RATIO = 0.5  # issue #5: jwt_rs256_overhead / simplejwt_overhead
TARGET_JWT_DOT_RATIO = 0.35  # issue #5: jwt_rs256_overhead / dot_overhead
BODY_BYTES = 1024  # the signed POST's JSON body
BODY_CONTENT_TYPE = "application/json"
LOOKUP_SIZES = (1, 10_000, 1_000_000)

BASELINE = "none"
OURS = "ours"
# name -> (label, URL slug). "ours_no_audit" is informational (not a target):
# the same view with APIAUTH_AUDIT_SUCCESS=False for its batches, to show what
# the success audit row costs.
VARIANTS: dict[str, tuple[str, str]] = {
    "none": ("no auth (AllowAny, no authentication) [baseline]", "none"),
    "ours": ("django-apiauth ApiKey + HasScopes, audit row INCLUDED", "ours"),
    "drf_api_key": ("djangorestframework-api-key HasAPIKey", "drf-api-key"),
    "drf_token": ("DRF authtoken TokenAuthentication", "drf-token"),
    "knox": ("django-rest-knox TokenAuthentication", "knox"),
    "ours_no_audit": ("django-apiauth, AUDIT_SUCCESS=False (info)", "ours"),
    "sig_hmac": ("django-apiauth RFC 9421 hmac-sha256 GET, audit (info)", "http-sig"),
    "sig_ed25519": ("django-apiauth RFC 9421 ed25519 GET, audit (info)", "http-sig"),
    "sig_hmac_post": ("django-apiauth RFC 9421 hmac POST 1 KiB, audit", "http-sig"),
    "sig_floor": ("floor: hand-written HMAC POST 1 KiB, no DB (info)", "sig-floor"),
    "mtls_cached": ("django-apiauth mTLS nginx header, audit", "mtls"),
    "mtls_uncached": ("django-apiauth mTLS, decode caches emptied (info)", "mtls"),
    "none_post": ("no auth, POST 1 KiB [POST baseline]", "none"),
    "ours_post": ("django-apiauth ApiKey POST 1 KiB, audit", "ours"),
    "jwt_rs256": ("django-apiauth JWT RS256 + HasScopes, audit", "jwt"),
    "jwt_es256": ("django-apiauth JWT ES256 + HasScopes, audit", "jwt"),
    "jwt_rs256_no_audit": ("django-apiauth JWT RS256, AUDIT_SUCCESS=False (info)", "jwt"),
    "simplejwt": ("djangorestframework-simplejwt JWTAuthentication RS256", "simplejwt"),
    "dot": ("django-oauth-toolkit OAuth2Authentication (DB)", "dot"),
    "oauth2": ("django-apiauth OAuth2Authentication (DOT token), audit", "oauth2"),
    "jwt_floor": ("floor: bare PyJWT RS256 decode, no DB (info)", "jwt-floor"),
}
# The RFC 9421 rows: variant -> the credential's algorithm. Each request is
# signed anew. No package in the comparison set implements RFC 9421: the GET
# rows are information; sig_hmac_post has the issue #3 target against our own
# API-key row; sig_floor (benchmarks/floor.py) is the bare minimum, for scale.
SIGNED: dict[str, str] = {"sig_hmac": "hmac-sha256", "sig_ed25519": "ed25519",
                          "sig_hmac_post": "hmac-sha256", "sig_floor": "hmac-sha256"}
# Signed POSTs with the BODY_BYTES JSON body (the others are GETs without a body).
POSTED = ("sig_hmac_post", "sig_floor")
FLOOR = "sig_floor"
# Forwarded client certificates (issue #4): mtls_cached has the target against
# our API-key row; mtls_uncached empties the decode caches before each request.
MTLS = ("mtls_cached", "mtls_uncached")
# Unsigned POSTs of the same BODY_BYTES JSON body. The POST rows (these and the
# signed POSTs) are measured against none_post, so that receiving the body is
# not counted as authentication overhead; ours_post is the API key on the same
# POST, the like-for-like peer of sig_hmac_post (issue #3).
POST_BASELINE = "none_post"
PLAIN_POSTED = ("none_post", "ours_post")
POST_ROWS = (*POSTED, *PLAIN_POSTED)
# Bearer tokens (issue #5): our JWTAuthentication (RS256, ES256), the peers
# simplejwt and django-oauth-toolkit, our OAuth2Authentication over DOT, and
# a bare PyJWT decode (the floor).
BEARER = ("jwt_rs256", "jwt_es256", "jwt_rs256_no_audit", "simplejwt", "dot", "oauth2",
          "jwt_floor")
NO_AUDIT = ("ours_no_audit", "jwt_rs256_no_audit")


def _flush_audit() -> None:
    from django_apiauth.core import audit

    audit.flush()


def baseline_for(name: str, names: Iterable[str]) -> str:
    """The baseline a variant's overhead is measured against: none_post for POSTs."""
    return POST_BASELINE if name in POST_ROWS and POST_BASELINE in names else BASELINE


# -- small helpers ------------------------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(sorted_values: list[int], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])


def summarise(samples_ns: list[int]) -> dict[str, float]:
    values = sorted(samples_ns)
    return {
        "n": len(values),
        "median_us": statistics.median(values) / 1000,
        "p99_us": percentile(values, 99) / 1000,
        "mean_us": statistics.fmean(values) / 1000,
        "min_us": values[0] / 1000,
    }


def ratio(numerator: float, denominator: float) -> float | None:
    if denominator <= 0:
        return None
    return numerator / denominator


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def verdict(value: float | None, target: float) -> str:
    if value is None:
        return "FAIL (undefined: peer overhead <= 0)"
    return "PASS" if value <= target else "FAIL"


# -- Django set-up ------------------------------------------------------------------


def lookup_alias(size: int) -> str:
    return f"lookup_{size}"


class Environment:
    """Django configured on fresh databases, with one credential per library.

    ``default`` holds the request benchmark's credentials (one per library);
    each ``lookup_<size>`` database holds the same django-apiauth key (and its
    owner) for the lookup benchmark, to be filled up to ``size`` keys.
    """

    def __init__(self, tmpdir: Path, lookup_sizes: list[int]) -> None:
        import django
        from django.conf import settings

        from benchmarks import settings as bench_settings

        self.lookup_aliases = {size: lookup_alias(size) for size in lookup_sizes}
        config, self.db_description = bench_settings.build(tmpdir, list(self.lookup_aliases.values()))
        settings.configure(**config)
        django.setup()

        from django.core.management import call_command
        from django.db import connections

        self.created: dict[str, str] = {}
        for alias in ("default", *self.lookup_aliases.values()):
            connection = connections[alias]
            if connection.vendor == "sqlite":
                call_command("migrate", database=alias, verbosity=0, interactive=False)
            else:
                self.created[alias] = connection.creation.create_test_db(
                    verbosity=0, autoclobber=True, serialize=False
                )
        self.vendor = connections["default"].vendor
        self._make_credentials()

    def close(self) -> None:
        from django.db import connections

        for alias, old_name in self.created.items():
            connections[alias].creation.destroy_test_db(old_name, verbosity=0)
        connections.close_all()

    def db_version(self) -> str:
        from django.db import connection

        with connection.cursor() as cursor:
            if connection.vendor == "sqlite":
                cursor.execute("SELECT sqlite_version()")
            else:
                cursor.execute("SELECT version()")
            return str(cursor.fetchone()[0])

    def _make_credentials(self) -> None:
        from django.contrib.auth import get_user_model
        from knox.models import AuthToken
        from rest_framework.authtoken.models import Token
        from rest_framework_api_key.models import APIKey

        from benchmarks.floor import FloorHmacAuthentication
        from benchmarks.views import BENCH_SCOPE
        from django_apiauth.ca import x509 as ca_x509
        from django_apiauth.ca.authority import create_ca
        from django_apiauth.core import lifecycle
        from django_apiauth.models import ApiKey, ClientCertificate, HmacSecret
        from django_apiauth.schemes import client_cert

        user_model = get_user_model()
        user = user_model.objects.create_user(username="bench", password=None)
        self.user = user
        self.ours_key_obj, ours_key = lifecycle.issue(
            ApiKey, owner=user, name="bench", scopes=BENCH_SCOPE
        )
        for alias in self.lookup_aliases.values():  # same owner, same key
            owner = user_model.objects.db_manager(alias).create_user(username="bench", password=None)
            ApiKey.objects.using(alias).create(
                owner_id=owner.pk, name="bench", scopes=BENCH_SCOPE,
                lookup_id=self.ours_key_obj.lookup_id, secret_hash=self.ours_key_obj.secret_hash,
            )
        _, drf_api_key = APIKey.objects.create_key(name="bench")
        drf_token = Token.objects.create(user=user).key
        _, knox_token = AuthToken.objects.create(user)
        self.ours_key = ours_key
        self.headers = {
            "none": None,
            "ours": f"Api-Key {ours_key}",
            "drf_api_key": f"Api-Key {drf_api_key}",
            "drf_token": f"Token {drf_token}",
            "knox": f"Token {knox_token}",
            "ours_no_audit": f"Api-Key {ours_key}",
        }
        self.wrong_headers = {
            "ours": f"Api-Key {_wrong_ours_key(ours_key)}",
            "drf_api_key": f"Api-Key {drf_api_key[:-4]}XXXX",
            "drf_token": f"Token {'0' * 40}",
            "knox": f"Token {_flip_last(knox_token)}",
            "ours_no_audit": f"Api-Key {_wrong_ours_key(ours_key)}",
        }
        # RFC 9421: the signers hold the client's key; the wrong ones sign with
        # the right key id and another key of the same algorithm.
        self.body = json_body(BODY_BYTES)
        self.signers: dict[str, Signer] = {}
        self.wrong_signers: dict[str, Signer] = {}
        for name, algorithm in SIGNED.items():
            body = self.body if name in POSTED else None
            if name == FLOOR:  # no credential row: the floor holds its one key in memory
                floor_key_id, floor_secret = "floor-bench", secrets.token_urlsafe(32)
                FloorHmacAuthentication.keys = {floor_key_id: floor_secret.encode()}
                FloorHmacAuthentication.user = user
                self.signers[name] = Signer(floor_key_id, floor_secret, algorithm, body)
                self.wrong_signers[name] = Signer(floor_key_id, _flip_last(floor_secret), algorithm, body)
                self.headers[name] = None
                continue
            if algorithm == HmacSecret.HMAC_SHA256:
                credential, secret = lifecycle.issue(
                    HmacSecret, owner=user, name=name, scopes=BENCH_SCOPE, algorithm=algorithm,
                )
                key: Any = secret
                wrong_key: Any = _flip_last(secret)
            else:
                key, wrong_key = _new_private_key(algorithm), _new_private_key(algorithm)
                credential, _ = lifecycle.issue(
                    HmacSecret, owner=user, name=name, scopes=BENCH_SCOPE, algorithm=algorithm,
                    public_key=_public_pem(key),
                )
            self.signers[name] = Signer(credential.key_id, key, algorithm, body)
            self.wrong_signers[name] = Signer(credential.key_id, wrong_key, algorithm, body)
            self.headers[name] = None  # no Authorization header: Signature(-Input) instead
        # mTLS: a CA of our own, one client certificate issued by it, forwarded by
        # the TLS terminator (a trusted proxy) as nginx does ($ssl_client_escaped_cert).
        self.ca = create_ca(name="bench CA", slug="bench-ca")
        self.client_cert, _private_key = lifecycle.issue(
            ClientCertificate, owner=user, name="bench", ca=self.ca, scopes=BENCH_SCOPE,
        )
        self.cert_header = urllib.parse.quote(self.client_cert.certificate_pem)
        self.cert_headers = {"X-SSL-Client-Cert": self.cert_header, "X-SSL-Client-Verify": "SUCCESS"}
        for name in MTLS:
            self.headers[name] = None  # no Authorization header: the forwarded certificate instead
        for name in PLAIN_POSTED:
            self.headers[name] = self.headers["ours" if name == "ours_post" else "none"]
        self.wrong_headers["ours_post"] = self.wrong_headers["ours"]
        self._make_bearer_tokens(user)
        # The functools.lru_caches a forwarded nginx certificate goes through.
        self.decode_caches = [client_cert.decode_nginx, client_cert.decode_pem, ca_x509._facts]

    def _make_bearer_tokens(self, user: Any) -> None:
        """One token per bearer row, and a wrong one (same shape, bad signature or unknown)."""
        import jwt
        from oauth2_provider.models import AccessToken, Application
        from rest_framework_simplejwt.tokens import AccessToken as SimpleJWTAccessToken

        from benchmarks import settings as bench
        from benchmarks.floor import FloorJWTAuthentication
        from benchmarks.views import BENCH_SCOPE
        from django_apiauth.models import ExternalIdentity

        ExternalIdentity.objects.create(issuer=bench.JWT_ISSUER, subject="bench-user", user=user)
        now = int(time.time())

        def mint(alg: str, key: Any = None) -> str:
            claims = {"iss": bench.JWT_ISSUER, "aud": bench.JWT_AUDIENCE, "sub": "bench-user",
                      "client_id": "bench-client", "jti": secrets.token_hex(8), "iat": now,
                      "exp": now + bench.JWT_LIFETIME_SECONDS, "scope": BENCH_SCOPE}
            return jwt.encode(claims, key or bench.JWT_KEYS.private(alg), algorithm=alg,
                              headers={"typ": "at+jwt", "kid": f"bench-{alg.lower()}"})

        other_rsa = _new_private_key("RS256")
        for name, alg in (("jwt_rs256", "RS256"), ("jwt_es256", "ES256"),
                          ("jwt_rs256_no_audit", "RS256")):
            self.headers[name] = f"Bearer {mint(alg)}"
            self.wrong_headers[name] = f"Bearer {mint(alg, _new_private_key(alg))}"
        self.headers["jwt_floor"] = f"Bearer {mint('RS256')}"
        self.wrong_headers["jwt_floor"] = f"Bearer {mint('RS256', other_rsa)}"
        FloorJWTAuthentication.public_key = bench.JWT_KEYS.private("RS256").public_key()
        FloorJWTAuthentication.issuer = bench.JWT_ISSUER
        FloorJWTAuthentication.audience = bench.JWT_AUDIENCE
        FloorJWTAuthentication.user = user
        simple = str(SimpleJWTAccessToken.for_user(user))
        self.headers["simplejwt"] = f"Bearer {simple}"
        forged = jwt.encode(jwt.decode(simple, options={"verify_signature": False}), other_rsa,
                            algorithm="RS256")
        self.wrong_headers["simplejwt"] = f"Bearer {forged}"
        application = Application.objects.create(
            name="bench", user=user, client_type=Application.CLIENT_CONFIDENTIAL,
            authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
        )
        dot_token = secrets.token_urlsafe(22)  # like oauthlib's 30-character tokens
        AccessToken.objects.create(
            user=user, application=application, token=dot_token, scope=BENCH_SCOPE,
            expires=datetime.now(UTC) + timedelta(seconds=bench.JWT_LIFETIME_SECONDS),
        )
        for name in ("dot", "oauth2"):
            self.headers[name] = f"Bearer {dot_token}"
            self.wrong_headers[name] = f"Bearer {_flip_last(dot_token)}"

    def clear_decode_caches(self) -> None:
        """Forget every decoded certificate (the mtls_uncached row, between requests)."""
        for cached in self.decode_caches:
            cached.cache_clear()

    def warm_decode_caches(self) -> None:
        """Decode our certificate's header once, filling all three caches."""
        self.decode_caches[0](self.cert_header)


def json_body(size: int) -> bytes:
    """A JSON document of exactly ``size`` bytes: a small order, padded with a note."""
    doc: dict[str, Any] = {
        "order": "bench-0001",
        "items": [{"sku": f"SKU-{i:04d}", "qty": i % 7 + 1, "price": "19.90"} for i in range(8)],
        "note": "",
    }
    doc["note"] = "x" * (size - len(json.dumps(doc, separators=(",", ":"))))
    raw = json.dumps(doc, separators=(",", ":")).encode()
    if len(raw) != size:
        raise ValueError(f"cannot make a {size}-byte JSON body")
    return raw


def _flip_last(value: str) -> str:
    return value[:-1] + ("A" if value[-1] != "A" else "B")


def _new_private_key(algorithm: str) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm != "ed25519":
        raise ValueError(f"no key generator for {algorithm}")
    return ed25519.Ed25519PrivateKey.generate()


def _public_pem(private_key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    return str(private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo,
    ).decode())


class Signer:
    """The client of one RFC 9421 credential: ``django_apiauth.sign.sign_request``."""

    def __init__(self, key_id: str, key: Any, algorithm: str, body: bytes | None = None) -> None:
        self.key_id, self.key, self.algorithm, self.body = key_id, key, algorithm, body

    def headers(self, url: str) -> dict[str, str]:
        """Signature-Input and Signature, created = now, a fresh random nonce.

        Without a body: a GET of ``url``, ``@method`` and ``@target-uri`` covered.
        With a body: a POST, plus ``Content-Digest`` (sha-256), and ``content-type``
        and ``content-digest`` covered.
        """
        from django_apiauth.sign import sign_request

        if self.body is None:
            return sign_request("GET", url, None, None, self.key_id, self.key, self.algorithm)
        return sign_request("POST", url, {"Content-Type": BODY_CONTENT_TYPE}, self.body,
                            self.key_id, self.key, self.algorithm)


def _wrong_ours_key(key: str) -> str:
    """Same prefix and lookup id, other secret, valid checksum: reaches the hash check."""
    from django_apiauth.core import crypto

    prefix, lookup_id, _rest = key.split("_", 2)
    body = f"{prefix}_{lookup_id}_{'x' * crypto.SECRET_LENGTH}"
    return body + crypto.checksum(body)


# -- part 1: requests through the WSGI handler ------------------------------------------


class Driver:
    """Calls Django's WSGI handler with a prebuilt environ, the same way for every variant."""

    def __init__(self) -> None:
        from django.core.handlers.wsgi import WSGIHandler

        self.handler = WSGIHandler()
        self.errors = io.StringIO()

    def url(self, slug: str) -> str:
        """The absolute URL the server rebuilds from :meth:`environ` (what a signature covers)."""
        return f"http://testserver/bench/{slug}/"

    def environ(self, slug: str, authorization: str | None,
                headers: dict[str, str] | None = None, *, body: bytes | None = None,
                remote_addr: str = "127.0.0.1") -> dict[str, Any]:
        """A GET, or with ``body`` a POST of ``BODY_CONTENT_TYPE`` (the body itself is
        given to :meth:`request` / :meth:`batch_each`, as ``wsgi.input``)."""
        environ: dict[str, Any] = {
            "REQUEST_METHOD": "GET" if body is None else "POST",
            "SCRIPT_NAME": "",
            "PATH_INFO": f"/bench/{slug}/",
            "QUERY_STRING": "",
            "SERVER_NAME": "testserver",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": "testserver",
            "HTTP_ACCEPT": "application/json",
            "HTTP_USER_AGENT": "django-apiauth-bench/1",
            "REMOTE_ADDR": remote_addr,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.errors": self.errors,
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        if body is not None:
            environ["CONTENT_TYPE"] = BODY_CONTENT_TYPE
            environ["CONTENT_LENGTH"] = str(len(body))
        if authorization is not None:
            environ["HTTP_AUTHORIZATION"] = authorization
        for name, value in (headers or {}).items():
            environ["HTTP_" + name.upper().replace("-", "_")] = value
        return environ

    def signed_environs(self, slug: str, signer: Signer, n: int) -> list[dict[str, Any]]:
        """``n`` environs, each with its own signature (created = now, fresh nonce)."""
        url = self.url(slug)
        return [self.environ(slug, None, signer.headers(url), body=signer.body) for _ in range(n)]

    def request(self, environ: dict[str, Any], body: bytes = b"") -> tuple[int, bytes]:
        env = environ.copy()
        env["wsgi.input"] = io.BytesIO(body)
        response = self.handler(env, _start_response)
        try:
            body = b"".join(response)
        finally:
            response.close()
        return response.status_code, body

    def batch(self, environ: dict[str, Any], n: int, out: list[int],
              before: Callable[[], None] | None = None, body: bytes = b"") -> int:
        """Time ``n`` requests (one sample each) and return how many were not 200.

        ``before``, if given, is called before each request, outside the timed region;
        ``body`` is every request's ``wsgi.input``.
        """
        handler = self.handler
        clock = time.perf_counter_ns
        new_input = io.BytesIO
        failures = 0
        for _ in range(n):
            if before is not None:
                before()
            start = clock()
            env = environ.copy()
            env["wsgi.input"] = new_input(body)
            response = handler(env, _start_response)
            for _chunk in response:
                pass
            response.close()
            out.append(clock() - start)
            if response.status_code != 200:
                failures += 1
        return failures

    def batch_each(self, environs: list[dict[str, Any]], out: list[int], body: bytes = b"",
                   before: Callable[[], None] | None = None) -> int:
        """As :meth:`batch`, one request per prebuilt environ, each with ``body``
        as its ``wsgi.input``."""
        handler = self.handler
        clock = time.perf_counter_ns
        new_input = io.BytesIO
        failures = 0
        for environ in environs:
            if before is not None:
                before()
            start = clock()
            env = environ.copy()
            env["wsgi.input"] = new_input(body)
            response = handler(env, _start_response)
            for _chunk in response:
                pass
            response.close()
            out.append(clock() - start)
            if response.status_code != 200:
                failures += 1
        return failures

    def prepare(self, env: Environment, name: str, environ: dict[str, Any],
                n: int) -> list[dict[str, Any]]:
        """``n`` environs of variant ``name``, one per request, built before any is timed.

        A WSGI server builds a new environ, with new strings, for every request:
        so does this, for every variant alike. The signed variants are signed
        here (client work, not timed). ``bench_requests`` prepares a whole round
        before timing any of it, so the work of preparing (signing above all,
        which fills the CPU caches with the client library) precedes the
        round's first batch, whichever variant the shuffle puts first, and not
        always the signed variant's own batch.
        """
        sources = (self.signed_environs(VARIANTS[name][1], env.signers[name], n)
                   if name in SIGNED else [environ] * n)
        # Copied in one go for every variant alike: the signer's own allocations
        # do not leave the signed environs scattered through memory.
        return [{k: _fresh(v) for k, v in source.items()} for source in sources]

    def timed_batch(self, env: Environment, name: str, environs: list[dict[str, Any]],
                    out: list[int]) -> int:
        """One timed request per environ of variant ``name`` (from :meth:`prepare`).

        ``mtls_uncached`` empties the decode caches before each request, untimed;
        ``mtls_cached`` fills them first, untimed (the other row empties them).
        """
        if name == "mtls_uncached":
            return self.batch_each(environs, out, before=env.clear_decode_caches)
        if name == "mtls_cached":
            env.warm_decode_caches()
        return self.batch_each(environs, out, env.body if name in POST_ROWS else b"")


def _fresh(value: Any) -> Any:
    """A new string object equal to ``value`` (other values as they are)."""
    return (value + "\0")[:-1] if isinstance(value, str) else value


def base_environ(env: Environment, driver: Driver, name: str) -> dict[str, Any]:
    """The prebuilt environ of an unsigned variant (a signed one gets a new environ per request)."""
    from benchmarks.settings import TRUSTED_PROXY

    slug = VARIANTS[name][1]
    if name in MTLS:
        return driver.environ(slug, None, env.cert_headers, remote_addr=TRUSTED_PROXY)
    return driver.environ(slug, env.headers[name], body=env.body if name in PLAIN_POSTED else None)



def _start_response(status: str, headers: Any, exc_info: Any = None) -> Callable[[bytes], None]:
    return _write


def _write(data: bytes) -> None:  # pragma: no cover - WSGI legacy write()
    pass


class _AuditSuccess:
    """APIAUTH_AUDIT_SUCCESS for the batches of one variant, via ``override_settings``
    (which sends ``setting_changed``, so memoised settings are refreshed too)."""

    def __init__(self, value: bool | None) -> None:
        self.override: Any = None
        if value is not None:
            from django.test.utils import override_settings

            self.override = override_settings(APIAUTH_AUDIT_SUCCESS=value)

    def __enter__(self) -> None:
        if self.override is not None:
            self.override.enable()

    def __exit__(self, *exc: object) -> None:
        if self.override is not None:
            self.override.disable()


def _audit_setting(name: str) -> bool | None:
    return False if name in NO_AUDIT else None


def verify_variants(env: Environment, driver: Driver, names: Iterable[str]) -> None:
    """Refuse to time anything that does not answer 200 with a key and 401/403 without."""
    from django_apiauth.models import AuditEvent

    problems = []
    for name in names:
        slug = VARIANTS[name][1]
        if name in SIGNED:
            problems += _verify_signed(env, driver, name)
            continue
        if name in MTLS:
            problems += _verify_mtls(env, driver, name)
            continue
        payload = env.body if name in PLAIN_POSTED else None
        with _AuditSuccess(_audit_setting(name)):
            before = AuditEvent.objects.filter(outcome="success").count()
            status, body = driver.request(driver.environ(slug, env.headers[name], body=payload),
                                          payload or b"")
            _flush_audit()  # buffered success rows (the default) into the table
            after = AuditEvent.objects.filter(outcome="success").count()
            if status != 200:
                problems.append(f"{name}: expected 200 with a valid credential, got {status} {body[:200]!r}")
            # Only the API-key rows insist on the row being in the table now: the
            # bearer rows stay valid if audit writes become buffered (written later).
            if name in ("ours", "ours_post") and after != before + 1:
                problems.append(f"{name}: the success audit row was not written")
            if name in NO_AUDIT and after != before:
                problems.append(f"{name}: a success audit row was written")
            if name in (BASELINE, POST_BASELINE):
                continue
            for label, header in (("wrong", env.wrong_headers[name]), ("missing", None)):
                status, body = driver.request(driver.environ(slug, header, body=payload),
                                              payload or b"")
                if status not in (401, 403):
                    problems.append(f"{name}: expected 401/403 with a {label} credential, got {status}")
    if problems:
        raise SystemExit("benchmark set-up is broken, nothing was timed:\n  " + "\n  ".join(problems))


def _verify_signed(env: Environment, driver: Driver, name: str) -> list[str]:
    """A fresh signature: 200 and an audit row; the same request again: 401 (replay);
    another key's signature or none: 401/403; a POST with another body of the same
    length: 401/403. The floor has no audit and no replay store: those two are not checked."""
    from django_apiauth.models import AuditEvent

    slug = VARIANTS[name][1]
    signer = env.signers[name]
    payload = signer.body or b""
    problems = []
    [signed] = driver.signed_environs(slug, signer, 1)
    before = AuditEvent.objects.filter(outcome="success").count()
    status, body = driver.request(signed, payload)
    _flush_audit()  # buffered success rows (the default) into the table
    after = AuditEvent.objects.filter(outcome="success").count()
    if status != 200:
        problems.append(f"{name}: expected 200 with a fresh signature, got {status} {body[:200]!r}")
    if name != FLOOR and after != before + 1:
        problems.append(f"{name}: the success audit row was not written")
    if name == FLOOR and after != before:
        problems.append(f"{name}: an audit row was written")
    if name != FLOOR:
        status, body = driver.request(signed, payload)
        if status != 401:
            problems.append(f"{name}: expected 401 for a replayed signed request,"
                            f" got {status} {body[:200]!r}")
    [wrong] = driver.signed_environs(slug, env.wrong_signers[name], 1)
    cases = [("wrong", wrong, payload), ("missing", driver.environ(slug, None, body=signer.body), payload)]
    if signer.body:
        [tampered] = driver.signed_environs(slug, signer, 1)
        cases.append(("tampered-body", tampered, payload.replace(b"x", b"y", 1)))
    for label, environ, data in cases:
        status, body = driver.request(environ, data)
        if status not in (401, 403):
            problems.append(f"{name}: expected 401/403 with a {label} signature, got {status}")
    return problems


def _verify_mtls(env: Environment, driver: Driver, name: str) -> list[str]:
    """The certificate from the trusted proxy: 200 and an audit row (and, uncached, a
    miss in each decode cache); the same headers from an untrusted peer: 401; a failed
    verification or no certificate: 401/403."""
    from django_apiauth.models import AuditEvent

    slug = VARIANTS[name][1]
    environ = base_environ(env, driver, name)
    problems = []
    if name == "mtls_uncached":
        env.clear_decode_caches()
    else:
        env.warm_decode_caches()
    hits = [cached.cache_info().hits for cached in env.decode_caches]
    before = AuditEvent.objects.filter(outcome="success").count()
    status, body = driver.request(environ)
    _flush_audit()  # buffered success rows (the default) into the table
    after = AuditEvent.objects.filter(outcome="success").count()
    if status != 200:
        problems.append(f"{name}: expected 200 with the certificate, got {status} {body[:200]!r}")
    if after != before + 1:
        problems.append(f"{name}: the success audit row was not written")
    infos = [cached.cache_info() for cached in env.decode_caches]
    if name == "mtls_uncached" and [(i.misses, i.currsize) for i in infos] != [(1, 1)] * len(infos):
        problems.append(f"{name}: expected one miss in each emptied decode cache, got {infos}")
    if name == "mtls_cached" and infos[0].hits != hits[0] + 1:
        problems.append(f"{name}: expected a decode_nginx cache hit, got {infos[0]}")
    from benchmarks.settings import TRUSTED_PROXY

    untrusted = driver.environ(slug, None, env.cert_headers)
    if untrusted["REMOTE_ADDR"] == TRUSTED_PROXY:
        problems.append(f"{name}: the untrusted peer is the trusted proxy")
    status, body = driver.request(untrusted)
    if status != 401:
        problems.append(f"{name}: expected 401 from an untrusted peer, got {status} {body[:200]!r}")
    failed = driver.environ(slug, None, {**env.cert_headers, "X-SSL-Client-Verify": "FAILED:bench"},
                            remote_addr=TRUSTED_PROXY)
    missing = driver.environ(slug, None, remote_addr=TRUSTED_PROXY)
    for label, other in (("failed verification", failed), ("missing certificate", missing)):
        status, body = driver.request(other)
        if status not in (401, 403):
            problems.append(f"{name}: expected 401/403 with a {label}, got {status}")
    return problems


def replay_store() -> str:
    """Which cache the RFC 9421 replay protection writes to, in words."""
    from django.conf import settings

    from django_apiauth.app_settings import app_settings

    alias = app_settings.REPLAY_CACHE
    config = settings.CACHES[alias]
    backend = config["BACKEND"]
    text = f"Django cache {alias!r} ({backend.rsplit('.', 1)[-1]}"
    if backend.endswith("locmem.LocMemCache"):
        entries = config.get("OPTIONS", {}).get("MAX_ENTRIES", 300)
        text += f": local memory of this process, MAX_ENTRIES={entries:,}, nothing culled during the run"
    return text + ")"


BLOCKS = 5


def block_ratios(samples: dict[str, list[int]], per_block: int, peer: str,
                 subject: str = OURS) -> list[float | None]:
    """The overhead ratio subject/peer in each of BLOCKS consecutive slices of the run
    (each over its own baseline: none_post for the POST rows)."""
    out = []
    base_s, base_p = baseline_for(subject, samples), baseline_for(peer, samples)
    for b in range(BLOCKS):
        lo, hi = b * per_block, (b + 1) * per_block
        med = {name: statistics.median(samples[name][lo:hi])
               for name in {base_s, base_p, subject, peer}}
        out.append(ratio(med[subject] - med[base_s], med[peer] - med[base_p]))
    return out


def count_queries(env: Environment, driver: Driver, names: Iterable[str]) -> dict[str, int]:
    """Database queries of one accepted request per variant in steady state
    (untimed, before the run): one warm-up request fills the caches a process
    keeps (decoded certificates, token users), then one request is counted.

    Audit rows written later by the buffering writer are not counted: the
    column shows what the request itself waits for.
    """
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    out = {}
    for name in names:
        environs = (driver.signed_environs(VARIANTS[name][1], env.signers[name], 2)
                    if name in SIGNED else [base_environ(env, driver, name)] * 2)
        payload = env.body if name in POST_ROWS else b""
        with _AuditSuccess(_audit_setting(name)):  # one settings change: caches survive
            driver.request(environs[0], payload)  # warm-up
            _flush_audit()
            if name == "mtls_uncached":
                env.clear_decode_caches()
            elif name == "mtls_cached":
                env.warm_decode_caches()
            with CaptureQueriesContext(connection) as queries:
                status, _body = driver.request(environs[1], payload)
        if status != 200:
            raise SystemExit(f"{name}: expected 200 while counting queries, got {status}")
        out[name] = len(queries.captured_queries)
    return out


def bench_requests(env: Environment, names: list[str], rounds: int, batch: int,
                   warmup: int, seed: int) -> dict[str, Any]:
    driver = Driver()
    verify_variants(env, driver, names)
    queries = count_queries(env, driver, names)
    environs = {name: base_environ(env, driver, name) for name in names}
    samples: dict[str, list[int]] = {name: [] for name in names}
    failures = dict.fromkeys(names, 0)
    rng = random.Random(seed)

    for name in names:  # warm-up: caches, compiled SQL, first-use imports
        with _AuditSuccess(_audit_setting(name)):
            failures[name] += driver.timed_batch(
                env, name, driver.prepare(env, name, environs[name], warmup), [])

    started = time.perf_counter()
    quiet_gc()
    try:
        for index in range(rounds):
            order = list(names)
            rng.shuffle(order)
            # The whole round is prepared (and signed) before any of it is timed.
            prepared = {name: driver.prepare(env, name, environs[name], batch) for name in names}
            for name in order:
                with _AuditSuccess(_audit_setting(name)):
                    failures[name] += driver.timed_batch(env, name, prepared.pop(name),
                                                         samples[name])
            if (index + 1) % max(1, rounds // 10) == 0:
                log(f"  requests: round {index + 1}/{rounds} ({time.perf_counter() - started:.0f} s)")
    finally:
        gc.unfreeze()
    if any(failures.values()):
        raise SystemExit(f"non-200 answers while timing, results discarded: {failures}")

    stats = {name: summarise(samples[name]) for name in names}
    for name in names:
        baseline = baseline_for(name, names)
        base = stats[baseline]["median_us"]
        stats[name]["baseline"] = baseline
        stats[name]["overhead_us"] = stats[name]["median_us"] - base
        stats[name]["x_baseline"] = stats[name]["median_us"] / base
        stats[name]["label"] = VARIANTS[name][0]
        stats[name]["queries"] = queries[name]

    # The same ratio in each fifth of the run: how much the figure moves with
    # the machine's mood (this one's CPU speed changes by ~2x within seconds).
    per_block = rounds // BLOCKS * batch
    blocks = {}
    if OURS in names and per_block:
        blocks = {peer: block_ratios(samples, per_block, peer)
                  for peer in ("drf_api_key", "drf_token", "knox") if peer in names}
    signed = [name for name in names if name in SIGNED]
    certs = [name for name in names if name in MTLS]
    bearer = [name for name in names if name in BEARER]

    def over(subject: str, peer: str) -> dict[str, Any]:
        """subject_overhead / peer_overhead, for the whole run and each fifth of it."""
        if subject not in names or peer not in names:
            return {"overhead_ratio": None, "by_fifth_of_run": []}
        return {
            "overhead_ratio": ratio(stats[subject]["overhead_us"], stats[peer]["overhead_us"]),
            "by_fifth_of_run": (block_ratios(samples, per_block, peer, subject=subject)
                                if per_block else []),
        }

    result = {
        "rounds": rounds,
        "batch": batch,
        "warmup": warmup,
        "seconds": time.perf_counter() - started,
        "variants": stats,
        "ratio_by_fifth_of_run": blocks,
    }
    if signed:
        result["signatures"] = {
            "replay_store": replay_store(),
            "body_bytes": BODY_BYTES,
            "over_ours": {name: {"algorithm": SIGNED[name], **over(name, OURS)} for name in signed},
        }
        if "sig_hmac_post" in names and FLOOR in names:
            result["signatures"]["post_over_floor"] = over("sig_hmac_post", FLOOR)
        if "sig_hmac_post" in names and "ours_post" in names:
            result["signatures"]["post_over_ours_post"] = over("sig_hmac_post", "ours_post")
    if bearer:
        result["bearer"] = {
            "over_simplejwt": {name: over(name, "simplejwt") for name in bearer if name != "simplejwt"},
            "over_dot": {name: over(name, "dot") for name in bearer if name != "dot"},
        }
    if certs:
        result["client_certificates"] = {
            "over_ours": {name: over(name, OURS) for name in certs},
            "uncached_minus_cached_us": (
                stats["mtls_uncached"]["median_us"] - stats["mtls_cached"]["median_us"]
                if set(MTLS) <= set(names) else None
            ),
        }
    return result


def quiet_gc() -> None:
    """Collect now and freeze what exists: the collector's pauses stay, but small."""
    gc.collect()
    gc.freeze()


# -- part 2: lookup cost against table size ---------------------------------------------

_BASE62_TABLE = bytes(
    ord("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"[b % 62]) for b in range(256)
)


def fill_api_keys(alias: str, count: int, owner_id: int, taken: set[str],
                  chunk: int = 50_000) -> float:
    """Insert ``count`` well-formed API-key rows into ``alias`` (raw SQL); returns seconds.

    Lookup ids are 12 random base62 characters (unique), hashes 64 random hex
    characters; every other column gets its model default, prepared by the
    field itself, so the rows are what the ORM would have written.
    """
    from django.db import connections, transaction
    from django.utils import timezone

    from django_apiauth.core import crypto
    from django_apiauth.models import ApiKey

    started = time.perf_counter()
    connection = connections[alias]
    qn = connection.ops.quote_name
    fields = [f for f in ApiKey._meta.concrete_fields if not f.primary_key]
    varying = ("lookup_id", "secret_hash")
    fixed_fields = [f for f in fields if f.attname not in varying]
    overrides: dict[str, Any] = {"owner_id": owner_id, "name": "bench filler",
                                 "created_at": timezone.now()}
    fixed = tuple(
        f.get_db_prep_save(overrides[f.attname] if f.attname in overrides else f.get_default(),
                           connection)
        for f in fixed_fields
    )
    columns = ", ".join(
        [qn(ApiKey._meta.get_field(a).column) for a in varying] + [qn(f.column) for f in fixed_fields]
    )
    table = qn(ApiKey._meta.db_table)
    id_len, hash_len = crypto.LOOKUP_ID_LENGTH, 64
    done = 0
    with transaction.atomic(using=alias), connection.cursor() as cursor:
        if connection.vendor == "sqlite":  # room for the random-order index inserts
            cursor.execute("PRAGMA cache_size = -262144")
        while done < count:
            n = min(chunk, count - done)
            ids_blob = os.urandom(id_len * n).translate(_BASE62_TABLE).decode("ascii")
            hashes = os.urandom(hash_len // 2 * n).hex()
            rows = []
            for i in range(n):
                lookup_id = ids_blob[i * id_len:(i + 1) * id_len]
                if lookup_id in taken:
                    continue  # ~1e-10 chance per row; the next chunk makes up for it
                taken.add(lookup_id)
                rows.append((lookup_id, hashes[i * hash_len:(i + 1) * hash_len], *fixed))
            if connection.vendor == "postgresql":
                with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            else:
                placeholders = ", ".join(["%s"] * len(fixed) + ["%s", "%s"])
                cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({placeholders})", rows)
            done += len(rows)
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA cache_size = -2000")  # back to SQLite's default
    return time.perf_counter() - started


def settle_database(alias: str) -> None:
    """Fresh planner statistics and, on SQLite, an empty WAL."""
    from django.db import connections

    from django_apiauth.models import ApiKey

    connection = connections[alias]
    table = connection.ops.quote_name(ApiKey._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {table}")
        if connection.vendor == "sqlite":
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def bench_lookup(env: Environment, rounds: int, batch: int, seed: int) -> dict[str, Any]:
    """The same key, authenticated against tables of each size, sizes interleaved."""
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    from benchmarks.routers import using
    from django_apiauth.core.lookup import lookup
    from django_apiauth.models import ApiKey
    from django_apiauth.schemes.api_key import ApiKeyAuthentication

    factory = APIRequestFactory()
    header = env.headers[OURS]
    lookup_id = env.ours_key_obj.lookup_id
    auth = ApiKeyAuthentication()
    rng = random.Random(seed)
    clock = time.perf_counter_ns

    def time_authenticate(n: int, out: list[int]) -> None:
        prepared = [  # built before the clock starts
            Request(factory.get("/bench/ours/", HTTP_AUTHORIZATION=header, REMOTE_ADDR="127.0.0.1"))
            for _ in range(n)
        ]
        for request in prepared:
            start = clock()
            result = auth.authenticate(request)
            out.append(clock() - start)
            if result is None or result[1].credential_id != lookup_id:
                raise SystemExit("lookup benchmark: authenticate() did not accept the key")

    def time_lookup(n: int, out: list[int]) -> None:
        for _ in range(n):
            start = clock()
            credential = lookup(ApiKey, lookup_id)
            out.append(clock() - start)
            if credential is None:
                raise SystemExit("lookup benchmark: lookup() did not find the key")

    kinds = {"authenticate": time_authenticate, "lookup": time_lookup}
    taken = {lookup_id}
    fill_seconds: dict[int, float] = {}
    for size, alias in env.lookup_aliases.items():
        current = ApiKey.objects.using(alias).count()
        fill_seconds[size] = 0.0
        if size > current:
            log(f"  lookup: inserting {size - current:,} keys into {alias} ...")
            owner_id = ApiKey.objects.using(alias).get(lookup_id=lookup_id).owner_id
            fill_seconds[size] = fill_api_keys(alias, size - current, owner_id, taken)
            log(f"  lookup: inserted in {fill_seconds[size]:.1f} s")
        if ApiKey.objects.using(alias).count() != size:
            raise SystemExit(f"lookup benchmark: expected {size} keys in {alias}")
        settle_database(alias)
        with using(alias):
            for fn in kinds.values():  # warm-up: compiled SQL, page cache
                fn(200, [])

    samples: dict[tuple[int, str], list[int]] = {
        (size, kind): [] for size in env.lookup_aliases for kind in kinds
    }
    started = time.perf_counter()
    quiet_gc()
    try:
        for index in range(rounds):
            order = list(samples)
            rng.shuffle(order)
            for size, kind in order:
                with using(env.lookup_aliases[size]):
                    kinds[kind](batch, samples[(size, kind)])
            if (index + 1) % max(1, rounds // 5) == 0:
                log(f"  lookup: round {index + 1}/{rounds} ({time.perf_counter() - started:.0f} s)")
    finally:
        gc.unfreeze()
    results = {
        str(size): {
            "keys": size,
            "fill_seconds": fill_seconds[size],
            **{kind: summarise(samples[(size, kind)]) for kind in kinds},
        }
        for size in env.lookup_aliases
    }
    return {"rounds": rounds, "batch": batch, "seconds": time.perf_counter() - started,
            "sizes": results}


# -- report -------------------------------------------------------------------------------


def run_info(env: Environment, args: argparse.Namespace) -> dict[str, Any]:
    from importlib.metadata import version

    def pkg(name: str) -> str:
        try:
            return version(name)
        except Exception:
            return "?"

    commit = ""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,  # noqa: S607
            timeout=5, check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,  # noqa: S607
            capture_output=True, text=True, timeout=5, check=False,
        ).stdout.strip()
        if commit and dirty:
            commit += "-dirty"
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "git": commit,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "database": env.db_description,
        "database_version": env.db_version(),
        "packages": {name: pkg(name) for name in (
            "Django", "djangorestframework", "djangorestframework-api-key",
            "django-rest-knox", "djangorestframework-simplejwt", "django-oauth-toolkit", "PyJWT",
            "cryptography", "django-apiauth",
        )},
        "options": {k: v for k, v in vars(args).items() if k != "json"},
    }


def targets(result: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    variants = result.get("requests", {}).get("variants", {})
    if OURS in variants:
        ours = variants[OURS]["overhead_us"]
        for peer, key in (("drf_api_key", "ours_overhead / drf_api_key_overhead"),
                          ("drf_token", "ours_overhead / drf_token_overhead")):
            if peer in variants:
                value = ratio(ours, variants[peer]["overhead_us"])
                out[key] = {"value": value, "target": TARGET_OVERHEAD_RATIO,
                            "verdict": verdict(value, TARGET_OVERHEAD_RATIO)}
        # Issues #3 and #4: against our own API-key row (no peer implements them).
        # The signed POST against the API key on the same POST when both are measured.
        for name, peer, target in (
                ("sig_hmac_post", "ours_post" if "ours_post" in variants else OURS,
                 TARGET_SIG_POST_RATIO),
                ("mtls_cached", OURS, TARGET_MTLS_RATIO)):
            if name in variants:
                value = ratio(variants[name]["overhead_us"], variants[peer]["overhead_us"])
                out[f"{name}_overhead / {peer}_overhead"] = {
                    "value": value, "target": target, "verdict": verdict(value, target)}
    # Issue #5: our JWT RS256 against simplejwt and django-oauth-toolkit.
    if "jwt_rs256" in variants:
        for peer, target in (("simplejwt", TARGET_JWT_SIMPLEJWT_RATIO),
                             ("dot", TARGET_JWT_DOT_RATIO)):
            if peer in variants:
                value = ratio(variants["jwt_rs256"]["overhead_us"], variants[peer]["overhead_us"])
                out[f"jwt_rs256_overhead / {peer}_overhead"] = {
                    "value": value, "target": target, "verdict": verdict(value, target)}
    sizes = result.get("lookup", {}).get("sizes", {})
    if "1" in sizes:
        largest = max(sizes, key=int)
        if largest != "1":
            value = sizes[largest]["authenticate"]["median_us"] / sizes["1"]["authenticate"]["median_us"]
            name = "lookup_1M / lookup_1" if largest == "1000000" else f"lookup_{int(largest):,} / lookup_1"
            entry = {"value": value, "target": TARGET_LOOKUP_RATIO,
                     "verdict": verdict(value, TARGET_LOOKUP_RATIO)}
            if largest != "1000000":
                entry["verdict"] = "n/a (1M keys skipped: " + entry["verdict"] + " at this size)"
            out[name] = entry
    return out


def info_ratios(result: dict[str, Any]) -> dict[str, float | None]:
    """Ratios reported next to the targets, for information only."""
    variants = result.get("requests", {}).get("variants", {})
    out: dict[str, float | None] = {}
    for subject, peer in (("sig_hmac_post", OURS), ("sig_hmac_post", FLOOR), ("mtls_uncached", OURS),
                          ("jwt_rs256_no_audit", "simplejwt"), ("jwt_rs256_no_audit", "dot"),
                          ("oauth2", "dot"), ("jwt_rs256", "jwt_floor")):
        if subject in variants and peer in variants:
            out[f"{subject}_overhead / {peer}_overhead"] = ratio(
                variants[subject]["overhead_us"], variants[peer]["overhead_us"])
    return out


def render(result: dict[str, Any]) -> str:
    info = result["info"]
    lines = [
        "",
        "django-apiauth benchmark",
        f"  {info['database']}; {info['database_version']}",
        f"  Python {info['python']}, " + ", ".join(f"{k} {v}" for k, v in info["packages"].items()),
        f"  {info['platform']}, {info['cpus']} CPUs, git {info['git'] or '?'}",
    ]
    req = result.get("requests")
    if req:
        lines += [
            "",
            f"1. Per-request cost, full Django/DRF stack in one process (WSGI handler, no middleware,"
            f" DEBUG=False): {req['rounds']} rounds x {req['batch']} requests per variant, variants"
            f" interleaved in shuffled order; {req['rounds'] * req['batch']:,} timed requests per"
            f" variant, {req['seconds']:.0f} s.",
            "   The django-apiauth figure INCLUDES writing its audit row (success rows buffered and"
            " written in bulk INSERTs of 50 inside the timed requests: APIAUTH_AUDIT_BUFFER_SIZE=50,"
            " the default); the peers write nothing.",
            "",
            "   Overhead = median - the baseline's median; the POST rows (marked *) over the POST"
            " baseline (no auth, same 1 KiB POST), all others over the GET baseline.",
            "   queries = database queries one accepted request waits for in steady state (counted"
            " once after a warm-up request, untimed).",
            "",
            f"   {'variant':<56} {'median µs':>10} {'p99 µs':>10} {'overhead µs':>12} {'x base':>7}"
            f" {'queries':>8}",
        ]
        for s in req["variants"].values():
            mark = "*" if s.get("baseline", BASELINE) != BASELINE else " "
            lines.append(
                f"   {s['label']:<55}{mark} {s['median_us']:>10.1f} {s['p99_us']:>10.1f}"
                f" {s['overhead_us']:>12.1f} {s['x_baseline']:>7.2f} {s.get('queries', '?'):>8}"
            )
        variants = req["variants"]
        if OURS in variants:
            lines.append("")
            for peer in ("drf_api_key", "drf_token", "knox", "ours_no_audit"):
                if peer not in variants:
                    continue
                value = ratio(variants[OURS]["overhead_us"], variants[peer]["overhead_us"])
                fifths = [r for r in req["ratio_by_fifth_of_run"].get(peer, []) if r is not None]
                spread = (f"   (each fifth of the run: {min(fifths):.2f} to {max(fifths):.2f})"
                          if fifths else "")
                lines.append(f"   ours_overhead / {peer}_overhead = {fmt_ratio(value)}{spread}")
        lines += render_signatures(req)
        lines += render_client_certificates(req)
        lines += render_bearer(req)
    look = result.get("lookup")
    if look:
        lines += [
            "",
            f"2. Lookup cost against table size: one database per size, {look['rounds']} rounds x"
            f" {look['batch']} calls per size and kind, interleaved in shuffled order, same key"
            f" each time (hot cache); {look['seconds']:.0f} s.",
            "   authenticate = ApiKeyAuthentication().authenticate(DRF Request), audit row included;"
            " lookup = core.lookup.lookup() alone.",
            "",
            f"   {'keys in table':>14} {'authenticate median':>20} {'p99':>9} {'lookup median':>14}"
            f" {'p99':>9} {'fill s':>7}   authenticate vs 1 key",
        ]
        base = None
        for entry in look["sizes"].values():
            a, lk = entry["authenticate"], entry["lookup"]
            base = base or a["median_us"]
            lines.append(
                f"   {entry['keys']:>14,} {a['median_us']:>17.1f} µs {a['p99_us']:>6.1f} µs"
                f" {lk['median_us']:>11.1f} µs {lk['p99_us']:>6.1f} µs {entry['fill_seconds']:>7.1f}"
                f"   {a['median_us'] / base:.3f}"
            )
    lines += ["", "Targets (\"done when\"):"]
    for name, entry in result["targets"].items():
        lines.append(f"   {name:<44} = {fmt_ratio(entry['value']):>6}   target <= {entry['target']:<4}"
                     f"   {entry['verdict']}")
    if not result["targets"]:
        lines.append("   (nothing measured)")
    if result.get("info_ratios"):
        lines.append("   for information (no target):")
        for name, value in result["info_ratios"].items():
            lines.append(f"   {name:<44} = {fmt_ratio(value):>6}")
    return "\n".join(lines)


def _spread(entry: dict[str, Any]) -> str:
    fifths = [r for r in entry["by_fifth_of_run"] if r is not None]
    return f"   (each fifth of the run: {min(fifths):.2f} to {max(fifths):.2f})" if fifths else ""


def render_signatures(req: dict[str, Any]) -> list[str]:
    """The RFC 9421 rows: overhead and its ratio to our API-key row (and to the floor)."""
    sig = req.get("signatures")
    if not sig:
        return []
    variants = req["variants"]
    lines = [
        "",
        "   RFC 9421 rows (no package in the comparison set implements RFC 9421, so no peer row):"
        " HttpSignatureAuthentication + HasScopes, audit row INCLUDED.",
        "   sig_hmac, sig_ed25519 (information): GET without a body, signature over @method and"
        " @target-uri, created = now, a fresh nonce.",
        f"   sig_hmac_post (issue #3 target vs ours): POST, {sig['body_bytes']:,}-byte JSON body,"
        " Content-Digest sha-256; covered @method, @target-uri, content-type, content-digest.",
        "   sig_floor (information): the same POST through a hand-written DRF authentication class"
        " (benchmarks/floor.py): http_sf parse,",
        "   signature base built by hand, sha-256 digest and HMAC compared; key in memory, no"
        " database, no audit row, no replay store.",
        "   Every request carries its own signature (a repeat is refused as a replay): each round"
        " is signed before any of it is timed, signing NOT timed.",
        "   Checked before timing: a signed request gets 200 (audit row written), the same request"
        " again 401 (not the floor); another key, no signature, another body: 401/403.",
        f"   Replay store (one cache.add per request, on the signed nonce): {sig['replay_store']};"
        " a shared cache (e.g. Redis) would add its round trips.",
    ]
    for name, entry in sig["over_ours"].items():
        lines.append(
            f"   {name + '_overhead':<24} = {variants[name]['overhead_us']:7.1f} µs over baseline;"
            f" / ours_overhead (ApiKey) = {fmt_ratio(entry['overhead_ratio'])}{_spread(entry)}"
        )
    if "post_over_floor" in sig:
        entry = sig["post_over_floor"]
        lines.append(f"   sig_hmac_post_overhead / sig_floor_overhead = {fmt_ratio(entry['overhead_ratio'])}"
                     f"{_spread(entry)}")
    return lines


def render_client_certificates(req: dict[str, Any]) -> list[str]:
    """The mTLS rows: overhead and its ratio to our API-key row."""
    certs = req.get("client_certificates")
    if not certs:
        return []
    variants = req["variants"]
    lines = [
        "",
        "   mTLS rows: ClientCertificateAuthentication + HasScopes, audit row INCLUDED; certificate"
        " from the app's CA (create_ca, lifecycle.issue),",
        "   forwarded as nginx does (X-SSL-Client-Cert: URL-encoded PEM, X-SSL-Client-Verify:"
        " SUCCESS) by a trusted proxy (REMOTE_ADDR in APIAUTH_TRUSTED_PROXIES).",
        "   mtls_cached (issue #4 target vs ours): the same header every request, decode caches"
        " hit. mtls_uncached (information): decode_nginx, decode_pem",
        "   and ca.x509._facts emptied before every request, NOT timed: URL-decode, base64 and"
        " ASN.1 parse in every request.",
        "   Checked before timing: 200 (audit row written; uncached: one miss per cache), the same"
        " headers from an untrusted peer 401, failed verify / none 401/403.",
    ]
    for name, entry in certs["over_ours"].items():
        lines.append(
            f"   {name + '_overhead':<24} = {variants[name]['overhead_us']:7.1f} µs over baseline;"
            f" / ours_overhead (ApiKey) = {fmt_ratio(entry['overhead_ratio'])}{_spread(entry)}"
        )
    if certs["uncached_minus_cached_us"] is not None:
        lines.append(f"   mtls_uncached - mtls_cached (medians) = {certs['uncached_minus_cached_us']:.1f} µs")
    return lines


def render_bearer(req: dict[str, Any]) -> list[str]:
    """The bearer-token rows (issue #5): overheads and their ratios to simplejwt and DOT."""
    bearer = req.get("bearer")
    if not bearer:
        return []
    variants = req["variants"]
    lines = [
        "",
        "   Bearer-token rows (issue #5): Authorization: Bearer, tokens minted once before the run"
        " (valid for the whole run).",
        "   jwt_rs256 / jwt_es256: our JWTAuthentication + HasScopes, static-key issuer"
        " (APIAUTH_JWT_ISSUERS keys, no JWKS fetch), sub -> user",
        "   through ExternalIdentity, audit row INCLUDED (jwt_rs256_no_audit: without it)."
        " simplejwt: its JWTAuthentication + IsAuthenticated, RS256,",
        "   user loaded by id. dot: django-oauth-toolkit's OAuth2Authentication + TokenHasScope,"
        " opaque token looked up in its database.",
        "   oauth2: our OAuth2Authentication (DOT's validation) + HasScopes, audit row INCLUDED."
        " jwt_floor: bare PyJWT RS256 decode, no DB, no audit.",
    ]
    for name in bearer["over_simplejwt"]:
        simple = bearer["over_simplejwt"][name]
        dot = bearer["over_dot"].get(name, {"overhead_ratio": None, "by_fifth_of_run": []})
        lines.append(
            f"   {name + '_overhead':<27} = {variants[name]['overhead_us']:7.1f} µs;"
            f" / simplejwt = {fmt_ratio(simple['overhead_ratio'])}{_spread(simple)};"
            f" / dot = {fmt_ratio(dot['overhead_ratio'])}"
        )
    return lines


# -- profile ---------------------------------------------------------------------------


def profile(env: Environment, name: str, n: int, out: str | None = None) -> None:
    """cProfile ``n`` requests of one variant and print where the time goes."""
    import cProfile
    import pstats

    driver = Driver()
    verify_variants(env, driver, [name])
    environ = base_environ(env, driver, name)
    with _AuditSuccess(_audit_setting(name)):
        driver.timed_batch(env, name, driver.prepare(env, name, environ, 200), [])
        if name in SIGNED:  # signed before profiling: only the server's work is profiled
            prepared = driver.signed_environs(VARIANTS[name][1], env.signers[name], n)
        if name == "mtls_cached":
            env.warm_decode_caches()
        profiler = cProfile.Profile()
        profiler.enable()
        if name in SIGNED:
            driver.batch_each(prepared, [], env.signers[name].body or b"")
        else:  # mtls_uncached: the cache_clear calls are profiled too (negligible)
            driver.batch(environ, n, [],
                         before=env.clear_decode_caches if name == "mtls_uncached" else None,
                         body=env.body if name in PLAIN_POSTED else b"")
        profiler.disable()
    if out:
        profiler.dump_stats(out)
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.strip_dirs().sort_stats("cumulative").print_stats(45)
    stats.sort_stats("tottime").print_stats(30)


# -- main ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds of the request benchmark (default 1000, --quick 40)")
    parser.add_argument("--batch", type=int, default=20,
                        help="requests per variant per round (default 20)")
    parser.add_argument("--lookup-rounds", type=int, default=None,
                        help="rounds of the lookup benchmark (default 200, --quick 20)")
    parser.add_argument("--lookup-batch", type=int, default=20,
                        help="calls per table size and kind per round (default 20)")
    parser.add_argument("--quick", action="store_true",
                        help="small run for smoke-testing (< 30 s); implies --skip-1m")
    parser.add_argument("--skip-1m", action="store_true",
                        help="lookup benchmark with 1 and 10 000 keys only")
    parser.add_argument("--skip-requests", action="store_true", help="lookup benchmark only")
    parser.add_argument("--skip-lookup", action="store_true", help="request benchmark only")
    parser.add_argument("--no-info-variant", action="store_true",
                        help="leave out the informational ours_no_audit variant")
    parser.add_argument("--no-signatures", action="store_true",
                        help="leave out the RFC 9421 variants (sig_hmac, sig_ed25519, sig_hmac_post,"
                             " sig_floor)")
    parser.add_argument("--no-mtls", action="store_true",
                        help="leave out the client-certificate variants (mtls_cached, mtls_uncached)")
    parser.add_argument("--no-bearer", action="store_true",
                        help="leave out the bearer-token variants (jwt_*, simplejwt, dot, oauth2,"
                             " jwt_floor)")
    parser.add_argument("--no-post-baseline", action="store_true",
                        help="leave out none_post and ours_post (POST rows then measured against"
                             " the GET baseline, as before)")
    parser.add_argument("--variants", default=None,
                        help="comma-separated variant names to run (the baselines are always"
                             " added); for quick comparisons while optimising")
    parser.add_argument("--seed", type=int, default=None, help="shuffle seed (default: random)")
    parser.add_argument("--json", type=Path, default=None,
                        help="results file (default benchmarks/results/bench-<time>.json)")
    parser.add_argument("--profile", choices=[n for n in VARIANTS if n != BASELINE], default=None,
                        help="instead of benchmarking, cProfile one variant and print the top functions")
    parser.add_argument("--profile-requests", type=int, default=5000)
    parser.add_argument("--profile-out", default=None, metavar="FILE",
                        help="also write the raw cProfile stats to FILE (for pstats / snakeviz)")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (40 if args.quick else 1000)
    args.lookup_rounds = args.lookup_rounds or (20 if args.quick else 200)
    args.skip_1m = args.skip_1m or args.quick
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**32)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tmpdir = Path(tempfile.mkdtemp(prefix="apiauth-bench-"))
    sizes = [] if (args.skip_lookup or args.profile) else [
        s for s in LOOKUP_SIZES if not (args.skip_1m and s >= 1_000_000)
    ]
    env = None
    try:
        log(f"setting up Django on fresh databases in {tmpdir} ...")
        env = Environment(tmpdir, sizes)
        if args.profile:
            profile(env, args.profile, args.profile_requests, args.profile_out)
            return 0
        result: dict[str, Any] = {"info": run_info(env, args)}
        if not args.skip_requests:
            names = [n for n in VARIANTS if not (args.no_info_variant and n in NO_AUDIT)
                     and not (args.no_signatures and n in SIGNED)
                     and not (args.no_mtls and n in MTLS)
                     and not (args.no_bearer and n in BEARER)
                     and not (args.no_post_baseline and n in PLAIN_POSTED)]
            if args.variants:
                wanted = {v.strip() for v in args.variants.split(",")} | {BASELINE}
                unknown = wanted - set(VARIANTS)
                if unknown:
                    raise SystemExit(f"unknown variants: {sorted(unknown)}")
                if wanted & set(POST_ROWS) and not args.no_post_baseline:
                    wanted.add(POST_BASELINE)
                names = [n for n in names if n in wanted]
            log(f"requests: {args.rounds} rounds x {args.batch} per variant, {len(names)} variants")
            result["requests"] = bench_requests(env, names, args.rounds, args.batch,
                                                warmup=200, seed=args.seed)
        if sizes:
            log(f"lookup: sizes {sizes}, {args.lookup_rounds} rounds")
            result["lookup"] = bench_lookup(env, args.lookup_rounds, args.lookup_batch,
                                            seed=args.seed)
        result["targets"] = targets(result)
        result["info_ratios"] = info_ratios(result)
        print(render(result), flush=True)
        path = args.json or RESULTS_DIR / f"bench-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"\nresults: {path}")
        print("(verdicts never fail the build: exit status 0 whatever they say)")
    finally:
        if env is not None:
            try:
                env.close()
            except Exception as exc:
                log(f"warning: could not drop the benchmark databases: {exc}")
        shutil.rmtree(tmpdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
