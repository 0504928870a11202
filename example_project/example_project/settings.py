"""Settings of the django-apiauth example project (DESIGN §7).

The database comes from ``DATABASE_URL`` (SQLite file or PostgreSQL) when
set, else a SQLite file under ``var/``; the cache from ``CACHE_URL`` /
``REDIS_URL`` when set, else local memory. Secrets the demo needs (Django's
``SECRET_KEY``, the API-key pepper, the OIDC signing key) are generated into
``var/`` on first start and never committed.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("APIAUTH_EXAMPLE_VAR", BASE_DIR / "var"))


def _var_secret(name: str, make) -> str:  # type: ignore[no-untyped-def]
    """Read ``var/<name>``, creating it with ``make()`` on first use (mode 0600)."""
    path = VAR_DIR / name
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(make())
    return path.read_text()


def _rsa_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or _var_secret(
    "secret_key", lambda: secrets.token_urlsafe(50)
)
APIAUTH_PEPPER = os.environ.get("APIAUTH_PEPPER") or _var_secret(
    "pepper", lambda: secrets.token_urlsafe(48)
)
# The key of the audit trail's hash chain (docs/audit-integrity.md): outside the database.
APIAUTH_AUDIT_KEYS = [os.environ.get("APIAUTH_AUDIT_KEY") or _var_secret(
    "audit_key", lambda: secrets.token_urlsafe(48)
)]
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1 localhost testserver").split()

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "oauth2_provider",
    "django_apiauth",
    "django_apiauth.oauth2",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example_project.urls"
WSGI_APPLICATION = "example_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _database() -> dict:  # type: ignore[type-arg]
    url = os.environ.get("DATABASE_URL")
    if url:
        import dj_database_url

        return dj_database_url.parse(url, conn_max_age=60)
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": VAR_DIR / "db.sqlite3",
        "OPTIONS": {
            # WAL + synchronous=NORMAL: concurrent readers, no fsync per commit.
            "init_command": (
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=10000;"
            ),
            "transaction_mode": "IMMEDIATE",
        },
    }


def _cache() -> dict:  # type: ignore[type-arg]
    url = os.environ.get("CACHE_URL") or os.environ.get("REDIS_URL")
    if url and url.startswith(("redis://", "rediss://", "unix://")):
        return {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}
    return {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}


DATABASES = {"default": _database()}
CACHES = {"default": _cache()}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_REDIRECT_URL = "/admin/"  # where a sign-in without `next` lands (SSO included)
LOGIN_URL = "/accounts/login/"  # the OAuth provider's sign-in page (end users, not only staff)

# Only the TLS terminator may forward client certificates (and X-Forwarded-For).
# The shipped nginx config (deploy/nginx-mtls.conf) connects from 127.0.0.2.
APIAUTH_TRUSTED_PROXIES = os.environ.get("APIAUTH_TRUSTED_PROXIES", "").split()

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "django_apiauth.schemes.api_key.ApiKeyAuthentication",
        "django_apiauth.schemes.http_signature.HttpSignatureAuthentication",
        # Before mTLS: a certificate-bound JWT (RFC 8705) arrives with a certificate too.
        "django_apiauth.schemes.jwt.JWTAuthentication",
        # Opaque django-oauth-toolkit tokens (not shaped like a JWT) fall through to here.
        "django_apiauth.schemes.oauth2.OAuth2Authentication",
        "django_apiauth.schemes.client_cert.ClientCertificateAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["django_apiauth.permissions.HasScopes"],
}

# django-oauth-toolkit is the authorization server and OpenID provider at /o/.
# Access tokens are RFC 9068 JWTs signed with the OIDC key (verified offline by
# JWTAuthentication below); refresh tokens stay opaque. See docs/oauth2-provider.md.
OAUTH2_ISSUER = os.environ.get("OAUTH2_ISSUER", "http://127.0.0.1:8000/o")
OAUTH2_PROVIDER = {
    "OIDC_ENABLED": True,
    "OIDC_ISS_ENDPOINT": OAUTH2_ISSUER,
    "OIDC_RSA_PRIVATE_KEY": os.environ.get("OIDC_RSA_PRIVATE_KEY") or _var_secret(
        "oidc.pem", _rsa_pem
    ),
    # Rotation: the previous key, still published in the JWKS until its tokens expire.
    "OIDC_RSA_PRIVATE_KEYS_INACTIVE": [
        (VAR_DIR / name).read_text() for name in sorted(os.listdir(VAR_DIR))
        if name.startswith("oidc-inactive") and name.endswith(".pem")
    ] if VAR_DIR.is_dir() else [],
    "ACCESS_TOKEN_GENERATOR": "django_apiauth.oauth2.tokens.signed_access_token",
    "REFRESH_TOKEN_GENERATOR": "oauthlib.oauth2.rfc6749.tokens.random_token_generator",
    "OAUTH2_VALIDATOR_CLASS": "django_apiauth.oauth2.validators.OAuth2Validator",
    "ACCESS_TOKEN_EXPIRE_SECONDS": 15 * 60,
    "REFRESH_TOKEN_EXPIRE_SECONDS": 14 * 24 * 3600,
    "ROTATE_REFRESH_TOKEN": True,
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    "PKCE_REQUIRED": True,
    "DEVICE_FLOW_INTERVAL": 5,
    "OAUTH_DEVICE_VERIFICATION_URI": OAUTH2_ISSUER + "/device/",
    # RFC 9700 (OAuth 2.0 Security BCP) gates, all on.
    "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,
    "COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT": True,
    "COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS": True,
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,
    "COMPLIANT_BCP_RFC9700_REFRESH_TOKEN": True,
    "COMPLIANT_BCP_RFC9700_REDIRECT_URI_SCHEME": True,
    "COMPLIANT_BCP_RFC9700_REDIRECT_URI_MATCHING": True,
    "COMPLIANT_BCP_RFC9700_PKCE_REQUIRED": True,
    "SCOPES": {
        "openid": "OpenID Connect",
        "whoami:read": "See who you are",
        "echo:write": "Write to the echo endpoint",
    },
    "DEFAULT_SCOPES": ["whoami:read"],
}

# Our own provider is a trusted JWT issuer: sub is a local user's primary key,
# client-credentials tokens act as the OAuth application's owner.
APIAUTH_OAUTH2_JWT_AUDIENCE = os.environ.get("OAUTH2_AUDIENCE", "http://127.0.0.1:8000/api/")
APIAUTH_JWT_ISSUERS = [
    {
        "issuer": OAUTH2_ISSUER,
        "audience": APIAUTH_OAUTH2_JWT_AUDIENCE,
        # No jwks_uri: a local issuer's keys are read from OAUTH2_PROVIDER (the same
        # JWKS the provider serves at /o/.well-known/jwks.json), no HTTP call to itself.
        "algorithms": ["RS256"],
        "max_lifetime": 15 * 60,
        "local": True,
    },
]
