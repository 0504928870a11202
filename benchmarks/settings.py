"""Django settings of the benchmark, built in-process (no settings module on disk).

* Databases: fresh SQLite *files* in a temporary directory with the example
  project's OPTIONS (WAL, ``synchronous=NORMAL``, ``transaction_mode``
  IMMEDIATE); or PostgreSQL when ``DATABASE_URL`` says so, in throw-away
  databases created (and dropped) for the run. ``default`` serves the request
  benchmark; one more alias per table size serves the lookup benchmark
  (``benchmarks.routers.SwitchRouter`` picks the alias).
* Cache: ``default`` is a ``LocMemCache`` (local memory of the process). It
  is the replay store of the RFC 9421 rows (``APIAUTH_REPLAY_CACHE``), with
  room for every nonce and signature of a run.
* ``APIAUTH_TRUSTED_PROXIES``: ``TRUSTED_PROXY`` (127.0.0.2), the TLS
  terminator of the mTLS rows; every other row comes from 127.0.0.1, which is
  not a trusted proxy.
* Bearer tokens: one RSA (RS256) and one EC P-256 (ES256) key pair, made
  for the run (:data:`JWT_KEYS`). Our ``JWTAuthentication`` trusts
  :data:`JWT_ISSUER` with both public keys as static JWKs
  (``APIAUTH_JWT_ISSUERS``); djangorestframework-simplejwt signs and verifies
  RS256 with the same RSA key (``SIMPLE_JWT``); django-oauth-toolkit keeps its
  defaults (opaque tokens in the database, OIDC off).
* Persistent connection (``CONN_MAX_AGE=None``): the benchmark measures
  authentication, not connection set-up.
* ``DEBUG=False`` (no query log), no middleware, JSON renderer only: every
  variant pays the same, minimal, fixed cost, so the differences are the
  authentication and permission classes.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

# Same as example_project/example_project/settings.py (kept in step by hand:
# importing that module would create the example project's var/ secrets).
SQLITE_OPTIONS = {
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=10000;",
    "transaction_mode": "IMMEDIATE",
}

# One replay-store entry per signed request (its nonce), kept for
# 2 x APIAUTH_SIGNATURE_MAX_SKEW = 600 s, longer than a run.
REPLAY_CACHE_ENTRIES = 2_000_000

# The TLS terminator that forwards client certificates (mTLS rows). Its
# headers are believed only from APIAUTH_TRUSTED_PROXIES.
TRUSTED_PROXY = "127.0.0.2"


# Bearer-token rows: our JWTAuthentication's issuer and audience.
JWT_ISSUER = "https://issuer.bench.test"
JWT_AUDIENCE = "https://api.bench.test"
# Tokens outlive the run (simplejwt's default of 5 minutes would expire mid-run).
JWT_LIFETIME_SECONDS = 6 * 3600


class _JWTKeys:
    """The run's signing keys, made on first use (RSA 2048 and EC P-256)."""

    def __init__(self) -> None:
        self._keys: dict[str, Any] = {}

    def private(self, alg: str) -> Any:
        if alg not in self._keys:
            from cryptography.hazmat.primitives.asymmetric import ec, rsa

            self._keys[alg] = (rsa.generate_private_key(public_exponent=65537, key_size=2048)
                               if alg == "RS256" else ec.generate_private_key(ec.SECP256R1()))
        return self._keys[alg]

    def private_pem(self, alg: str) -> str:
        from cryptography.hazmat.primitives import serialization

        return self.private(alg).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()).decode()

    def public_pem(self, alg: str) -> str:
        from cryptography.hazmat.primitives import serialization

        return self.private(alg).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def jwk(self, alg: str) -> dict[str, Any]:
        from jwt.algorithms import ECAlgorithm, RSAAlgorithm

        algorithm = RSAAlgorithm if alg == "RS256" else ECAlgorithm
        jwk = algorithm.to_jwk(self.private(alg).public_key(), as_dict=True)
        return {**jwk, "kid": f"bench-{alg.lower()}", "alg": alg, "use": "sig"}


JWT_KEYS = _JWTKeys()


def databases(tmpdir: Path, extra_aliases: list[str]) -> tuple[dict[str, Any], str]:
    """``default`` plus ``extra_aliases`` (same kind, separate databases) and a description."""
    url = os.environ.get("DATABASE_URL", "").strip()
    aliases = ["default", *extra_aliases]
    if url and not url.startswith("sqlite"):
        import dj_database_url

        base = dict(dj_database_url.parse(url))
        base["CONN_MAX_AGE"] = None
        kind = base["ENGINE"].rsplit(".", 1)[-1]
        # Databases of our own, created and dropped by the run: never the one
        # DATABASE_URL names, never pytest-django's test_<name>.
        return (
            {alias: {**base, "TEST": {"NAME": f"apiauth_bench_{os.getpid()}_{alias}"}}
             for alias in aliases},
            f"{kind} (DATABASE_URL; throw-away databases apiauth_bench_{os.getpid()}_*)",
        )
    note = " (DATABASE_URL ignored: SQLite always uses fresh temporary files)" if url else ""
    return (
        {
            alias: {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": str(tmpdir / f"{alias}.sqlite3"),
                "OPTIONS": dict(SQLITE_OPTIONS),
                "CONN_MAX_AGE": None,
            }
            for alias in aliases
        },
        f"sqlite3 files in {tmpdir} (WAL, synchronous=NORMAL, IMMEDIATE){note}",
    )


def build(tmpdir: Path, extra_aliases: list[str]) -> tuple[dict[str, Any], str]:
    """Keyword arguments for ``settings.configure()`` and the database description."""
    dbs, db_description = databases(tmpdir, extra_aliases)
    return (
        {
            "DEBUG": False,
            "SECRET_KEY": secrets.token_urlsafe(50),
            "APIAUTH_PEPPER": secrets.token_urlsafe(48),
            "ALLOWED_HOSTS": ["testserver", "localhost", "127.0.0.1"],
            "INSTALLED_APPS": [
                "django.contrib.auth",
                "django.contrib.contenttypes",
                "rest_framework",
                "rest_framework.authtoken",
                "rest_framework_api_key",
                "knox",
                "oauth2_provider",
                "django_apiauth",
            ],
            "MIDDLEWARE": [],
            "ROOT_URLCONF": "benchmarks.urls",
            "DATABASES": dbs,
            "DATABASE_ROUTERS": ["benchmarks.routers.SwitchRouter"],
            # The replay store of the RFC 9421 rows (APIAUTH_REPLAY_CACHE, "default"):
            # local memory, big enough that no nonce or signature is culled
            # during a run (LocMemCache's default, 300 entries, would forget them).
            "CACHES": {"default": {
                "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                "OPTIONS": {"MAX_ENTRIES": REPLAY_CACHE_ENTRIES},
            }},
            "APIAUTH_TRUSTED_PROXIES": [f"{TRUSTED_PROXY}/32"],
            # Our JWTAuthentication: a static-key issuer (no JWKS fetch).
            "APIAUTH_JWT_ISSUERS": [{
                "issuer": JWT_ISSUER,
                "audience": JWT_AUDIENCE,
                "keys": [JWT_KEYS.jwk("RS256"), JWT_KEYS.jwk("ES256")],
                "algorithms": ["RS256", "ES256"],
                "max_lifetime": JWT_LIFETIME_SECONDS,
            }],
            # djangorestframework-simplejwt, RS256 with the same RSA key.
            "SIMPLE_JWT": {
                "ALGORITHM": "RS256",
                "SIGNING_KEY": JWT_KEYS.private_pem("RS256"),
                "VERIFYING_KEY": JWT_KEYS.public_pem("RS256"),
                "ACCESS_TOKEN_LIFETIME": timedelta(seconds=JWT_LIFETIME_SECONDS),
                "UPDATE_LAST_LOGIN": False,
            },
            "DEFAULT_AUTO_FIELD": "django.db.models.BigAutoField",
            "USE_TZ": True,
            "TIME_ZONE": "UTC",
            "USE_I18N": True,
            "PASSWORD_HASHERS": ["django.contrib.auth.hashers.MD5PasswordHasher"],
            "REST_FRAMEWORK": {
                "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
                "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
                "DEFAULT_AUTHENTICATION_CLASSES": [],
                "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
                "DEFAULT_THROTTLE_CLASSES": [],
            },
            # 4xx answers of the verification step would otherwise be logged.
            "LOGGING": {
                "version": 1,
                "disable_existing_loggers": False,
                "loggers": {"django.request": {"level": "ERROR"}},
            },
        },
        db_description,
    )
