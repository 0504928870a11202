"""System checks (``manage.py check``) for django-apiauth settings."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

from .app_settings import app_settings

_PREFIX_RE = re.compile(r"^[a-z0-9]{1,10}$")


@register(Tags.security)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    errors: list[Any] = []
    pepper = getattr(settings, "APIAUTH_PEPPER", None)
    if pepper and len(pepper) < 32:
        errors.append(Error(
            "APIAUTH_PEPPER is shorter than 32 characters.",
            hint="Generate one with: python -c \"import secrets; print(secrets.token_urlsafe(48))\"",
            id="apiauth.E001",
        ))
    if not pepper and not settings.DEBUG:
        errors.append(Warning(
            "APIAUTH_PEPPER is not set: API keys are hashed under a key derived from "
            "SECRET_KEY, so rotating SECRET_KEY would invalidate every API key.",
            hint="Set APIAUTH_PEPPER to a random string of at least 32 characters, kept "
            "outside the database (environment or secrets manager).",
            id="apiauth.W001",
        ))
    if not _PREFIX_RE.match(app_settings.API_KEY_PREFIX):
        errors.append(Error(
            f"APIAUTH_API_KEY_PREFIX {app_settings.API_KEY_PREFIX!r} is invalid.",
            hint="Use 1 to 10 lowercase letters or digits (no underscore), e.g. 'ak'.",
            id="apiauth.E002",
        ))
    for proxy in app_settings.TRUSTED_PROXIES:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            errors.append(Error(
                f"APIAUTH_TRUSTED_PROXIES contains {proxy!r}, which is not an IP or CIDR.",
                hint="List the addresses of your TLS terminators, e.g. ['10.0.0.0/24'].",
                id="apiauth.E003",
            ))
    if "rest_framework" not in settings.INSTALLED_APPS:
        errors.append(Error(
            "django_apiauth needs Django REST framework.",
            hint="Add 'rest_framework' to INSTALLED_APPS.",
            id="apiauth.E004",
        ))
    if app_settings.ROTATION_GRACE.total_seconds() < 0:
        errors.append(Error(
            "APIAUTH_ROTATION_GRACE is negative.",
            hint="Use a timedelta of zero or more (0 ends the old credential at once).",
            id="apiauth.E005",
        ))
    if not settings.DEBUG and not (
        getattr(settings, "SECURE_SSL_REDIRECT", False)
        or getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    ):
        errors.append(Warning(
            "Credentials may travel over plaintext HTTP: neither SECURE_SSL_REDIRECT nor "
            "SECURE_PROXY_SSL_HEADER is set.",
            hint="Serve the API over HTTPS only: set SECURE_SSL_REDIRECT = True (and "
            "SECURE_PROXY_SSL_HEADER behind a TLS-terminating proxy).",
            id="apiauth.W002",
        ))
    if "*" in getattr(settings, "ALLOWED_HOSTS", ()) and not settings.DEBUG:
        errors.append(Warning(
            "ALLOWED_HOSTS contains '*': signed requests and SSO callbacks rebuild URLs "
            "from the Host header.",
            hint="List your real host names in ALLOWED_HOSTS.",
            id="apiauth.W003",
        ))
    if app_settings.AUDIT_DATABASE and app_settings.AUDIT_DATABASE not in settings.DATABASES:
        errors.append(Error(
            f"APIAUTH_AUDIT_DATABASE is {app_settings.AUDIT_DATABASE!r}, which is not in DATABASES.",
            hint="Name an alias of DATABASES (every refusal would otherwise be a 503).",
            id="apiauth.E006",
        ))
    replay_backend = settings.CACHES.get(app_settings.REPLAY_CACHE, {}).get("BACKEND", "")
    if not replay_backend:
        errors.append(Error(
            f"APIAUTH_REPLAY_CACHE is {app_settings.REPLAY_CACHE!r}, which is not in CACHES.",
            hint="Name an alias of CACHES (Redis in production).", id="apiauth.E007",
        ))
    elif not settings.DEBUG and not replay_backend.endswith(("RedisCache", "PyMemcacheCache",
                                                              "PyLibMCCache")):
        errors.append(Warning(
            "The replay store (APIAUTH_REPLAY_CACHE) is a per-process or culling cache: with "
            "several workers a signed request can be replayed against another one.",
            hint="Use a shared cache such as django.core.cache.backends.redis.RedisCache "
            "(a dedicated alias with maxmemory-policy noeviction).",
            id="apiauth.W005",
        ))
    from .schemes.client_cert import DECODERS

    unknown = sorted({fmt for fmt in app_settings.CLIENT_CERT_HEADERS.values() if fmt not in DECODERS})
    if unknown:
        errors.append(Error(
            f"APIAUTH_CLIENT_CERT_HEADERS names unknown formats: {', '.join(unknown)}.",
            hint=f"Use one of: {', '.join(sorted(DECODERS))}.", id="apiauth.E008",
        ))
    audit_alias = app_settings.AUDIT_DATABASE or _audit_alias()
    if settings.DATABASES.get(audit_alias, {}).get("ATOMIC_REQUESTS"):  # unknown alias: {} (E006)
        errors.append(Warning(
            f"Database {audit_alias!r} has ATOMIC_REQUESTS = True: when DRF answers an error it "
            "rolls the request's transaction back, and the audit row of a refused "
            "authentication with it.",
            hint="Add a second alias for the same database without ATOMIC_REQUESTS and set "
            "APIAUTH_AUDIT_DATABASE to it (on PostgreSQL; SQLite allows one writer).",
            id="apiauth.W004",
        ))
    errors.extend(_check_abuse_settings())
    errors.extend(_check_audit_integrity())
    return errors


def _check_abuse_settings() -> list[Any]:
    """Rate limits, lockout and alerts (docs/rate-limits.md)."""
    from .core.ratelimit import parse_rate

    errors: list[Any] = []
    for scheme, rate in app_settings.RATE_LIMITS.items():
        try:
            parse_rate(str(rate))
        except ValueError:
            errors.append(Error(
                f"APIAUTH_RATE_LIMITS[{scheme!r}] is {rate!r}, which is not a rate.",
                hint="Use <count>/<period>, e.g. '100/m', '10/s', '5000/h' or '300/15m'.",
                id="apiauth.E050",
            ))
    for name in ("LOCKOUT_IP_FAILURES", "LOCKOUT_CREDENTIAL_FAILURES"):
        if getattr(app_settings, name) < 1:
            errors.append(Error(
                f"APIAUTH_{name} must be at least 1.",
                hint="Disable lockout with APIAUTH_LOCKOUT_ENABLED = False instead.",
                id="apiauth.E051",
            ))
    for name in ("LOCKOUT_IP_WINDOW", "LOCKOUT_CREDENTIAL_WINDOW", "LOCKOUT_DURATION"):
        if getattr(app_settings, name).total_seconds() < 1:
            errors.append(Error(
                f"APIAUTH_{name} must be at least one second.",
                hint="Use a timedelta, e.g. timedelta(minutes=15).", id="apiauth.E051",
            ))
    backend = settings.CACHES.get(app_settings.RATE_LIMIT_CACHE, {}).get("BACKEND", "")
    if not backend:
        errors.append(Error(
            f"APIAUTH_RATE_LIMIT_CACHE is {app_settings.RATE_LIMIT_CACHE!r}, which is not in "
            "CACHES.", hint="Name an alias of CACHES (Redis in production).", id="apiauth.E052",
        ))
    elif not settings.DEBUG and not backend.endswith(("RedisCache", "PyMemcacheCache",
                                                      "PyLibMCCache")):
        errors.append(Warning(
            "Rate-limit counters and lockouts (APIAUTH_RATE_LIMIT_CACHE) are in a per-process "
            "cache: each worker counts on its own, so limits and lockout thresholds are "
            "multiplied by the number of workers.",
            hint="Use a shared cache such as django.core.cache.backends.redis.RedisCache.",
            id="apiauth.W050",
        ))
    if not settings.DEBUG and app_settings.LOCKOUT_ENABLED and not app_settings.TRUSTED_PROXIES:
        errors.append(Warning(
            "Lockout is on and APIAUTH_TRUSTED_PROXIES is empty: behind a reverse proxy every "
            "client has the proxy's address, so one attacker's failures would lock every "
            "client out at once.",
            hint="List your reverse proxies in APIAUTH_TRUSTED_PROXIES (they must set "
            "X-Forwarded-For); silence apiauth.W021 only if clients reach Django directly.",
            id="apiauth.W051",
        ))
    webhook = app_settings.ALERTS.get("webhook")
    if webhook and not str(webhook).startswith(("https://", "http://")):
        errors.append(Error(
            "APIAUTH_ALERTS['webhook'] is not an http(s) URL.",
            hint="Use e.g. 'https://hooks.example.com/apiauth'.", id="apiauth.E053",
        ))
    return errors


def _check_audit_integrity() -> list[Any]:
    """Audit hash chain key and buffering (docs/audit-integrity.md)."""
    errors: list[Any] = []
    if not app_settings.AUDIT_KEYS_ARE_SET and not settings.DEBUG:
        errors.append(Warning(
            "APIAUTH_AUDIT_KEYS is not set: audit rows are authenticated under a key derived "
            "from SECRET_KEY, so rotating SECRET_KEY (and later dropping it from "
            "SECRET_KEY_FALLBACKS) makes older audit rows unverifiable.",
            hint="Set APIAUTH_AUDIT_KEYS = [\"<random string of 32+ characters>\"], kept outside "
            "the database (environment or secrets manager); add new keys in front, keep old ones.",
            id="apiauth.W060",
        ))
    try:
        size, seconds = app_settings.AUDIT_BUFFER_SIZE, app_settings.AUDIT_BUFFER_SECONDS
    except (TypeError, ValueError):
        size, seconds = -1, -1.0
    if size < 0 or seconds <= 0:
        errors.append(Error(
            "APIAUTH_AUDIT_BUFFER_SIZE must be 0 or more and APIAUTH_AUDIT_BUFFER_SECONDS more "
            "than 0.",
            hint="E.g. APIAUTH_AUDIT_BUFFER_SIZE = 100, APIAUTH_AUDIT_BUFFER_SECONDS = 2.0 (or "
            "size 0 to write every row at once).",
            id="apiauth.E060",
        ))
    return errors


def _audit_alias() -> str:
    from django.db import router

    from .models import AuditEvent

    return router.db_for_write(AuditEvent)


@register(Tags.database)
def check_certificate_authorities(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[Any]:
    """Expiry warnings for the in-app CAs (``manage.py check --database default``)."""
    if not databases:
        return []
    from datetime import timedelta

    from django.db import DatabaseError
    from django.utils import timezone

    from .models import CertificateAuthority

    now = timezone.now()
    warnings: list[Any] = []
    try:
        soon = now + timedelta(days=30)
        cas = list(CertificateAuthority.objects.filter(is_active=True, not_after__lte=soon))
    except DatabaseError:
        return []  # not migrated yet: migrate's own checks say so
    for ca in cas:
        expired = ca.not_after <= now
        warnings.append(Warning(
            f"Certificate authority {ca.slug!r} {'expired' if expired else 'expires'} on "
            f"{ca.not_after:%Y-%m-%d}: client certificates it issued stop working with it.",
            hint="Create a successor CA (create_ca), add its certificate to the TLS terminator's "
            "ssl_client_certificate bundle next to the old one, and re-issue client certificates.",
            id="apiauth.W006",
        ))
    return warnings


@register(Tags.security)
def check_oidc_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """OpenID Connect sign-in (:mod:`django_apiauth.sso.oidc`)."""
    errors: list[Any] = []
    for name in ("OIDC_STATE_MAX_AGE", "OIDC_HTTP_TIMEOUT", "OIDC_MAX_ID_TOKEN_AGE"):
        try:
            value = float(getattr(app_settings, name))
        except (TypeError, ValueError):
            value = -1.0
        if value <= 0:
            errors.append(Error(
                f"APIAUTH_{name} must be a positive number of seconds.",
                hint="Remove the setting to use the default, or set e.g. 600.", id="apiauth.E020",
            ))
    if str(getattr(settings, "SESSION_COOKIE_SAMESITE", "Lax")).lower() == "strict":
        errors.append(Warning(
            "SESSION_COOKIE_SAMESITE is 'Strict': the browser does not send the session cookie "
            "when the identity provider redirects back, so every OpenID Connect sign-in is refused "
            "(state_mismatch).",
            hint="Use SESSION_COOKIE_SAMESITE = 'Lax' (Django's default).", id="apiauth.W020",
        ))
    return errors
@register(Tags.database)
def check_saml(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[Any]:
    """SAML SP: a key exists when IdPs are active; certificates are not about to expire
    (``manage.py check --database default``)."""
    if not databases:
        return []
    from datetime import timedelta

    from django.db import DatabaseError
    from django.utils import timezone

    from .sso.saml.models import SamlIdentityProvider, SamlServiceProviderKey, summaries_of

    now = timezone.now()
    soon = now + timedelta(days=30)
    messages: list[Any] = []
    try:
        providers = list(SamlIdentityProvider.objects.filter(active=True))
        keys = list(SamlServiceProviderKey.objects.filter(active=True).order_by("-created_at", "-id"))
    except DatabaseError:
        return []  # not migrated yet
    if providers and not keys:
        messages.append(Error(
            "Active SAML identity providers exist but the SAML SP has no key: sign-in and metadata "
            "answer 503.",
            hint="Run: manage.py create_saml_sp_key", id="apiauth.E030",
        ))
    for provider in providers:
        summaries = summaries_of(provider)
        if summaries and max(s.not_after for s in summaries) <= soon:
            latest = max(s.not_after for s in summaries)
            messages.append(Warning(
                f"Every signing certificate of SAML IdP {provider.slug!r} "
                f"{'expired' if latest <= now else 'expires'} by {latest:%Y-%m-%d}.",
                hint="Ask the IdP for its new certificate and add it next to the old one "
                "(or run import_saml_idp --update with its fresh metadata).",
                id="apiauth.W030",
            ))
    if keys and keys[0].not_after <= soon:
        messages.append(Warning(
            f"The SAML SP key {keys[0].name!r} {'expired' if keys[0].not_after <= now else 'expires'} "
            f"on {keys[0].not_after:%Y-%m-%d}.",
            hint="Run manage.py create_saml_sp_key and give every IdP the new SP metadata.",
            id="apiauth.W031",
        ))
    return messages
# -- JWT bearer tokens and the OAuth 2.0 provider (issue 5) ------------------------------

_KNOWN_JWT_ALGORITHMS = frozenset({
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "ES256K",
    "EdDSA", "HS256", "HS384", "HS512",
})
_OUR_GENERATOR = "django_apiauth.oauth2.tokens.signed_access_token"


def _jwt_issuer_problems(entry: Any) -> list[str]:
    if not isinstance(entry, dict):
        return ["is not a dict"]
    problems = []
    if not isinstance(entry.get("issuer"), str) or not entry.get("issuer"):
        problems.append("has no 'issuer' string")
    audience = entry.get("audience")
    if not audience or not (isinstance(audience, str) or (
            isinstance(audience, list | tuple) and all(isinstance(a, str) and a for a in audience))):
        problems.append("needs 'audience': this API's identifier (a string or a list of strings)")
    jwks_uri, keys = entry.get("jwks_uri"), entry.get("keys")
    if not (jwks_uri or keys or entry.get("local")):
        problems.append("needs 'jwks_uri' or 'keys' (or 'local': True for this project's provider)")
    if jwks_uri and not (isinstance(jwks_uri, str) and jwks_uri.startswith(("https://", "http://"))):
        problems.append("has a 'jwks_uri' that is not an http(s) URL")
    if keys is not None and not (isinstance(keys, list | tuple) and all(isinstance(k, dict) for k in keys)):
        problems.append("has 'keys' that are not a list of JWK dicts")
    algorithms = entry.get("algorithms")
    if algorithms is not None:
        if isinstance(algorithms, str) or not isinstance(algorithms, list | tuple) or not algorithms:
            problems.append("has 'algorithms' that is not a non-empty list")
        else:
            unknown = [a for a in algorithms if a not in _KNOWN_JWT_ALGORITHMS]
            if unknown:
                problems.append(f"lists unknown or forbidden algorithms {unknown!r} ('none' never works)")
            if jwks_uri and any(str(a).startswith("HS") for a in algorithms):
                problems.append("lists an HMAC algorithm with a jwks_uri "
                                "(shared secrets are never published)")
    for name in ("leeway", "max_lifetime"):
        value = entry.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            problems.append(f"has a {name!r} that is not a number of seconds")
    return problems


@register(Tags.security)
def check_jwt_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    errors: list[Any] = []
    issuers = app_settings.JWT_ISSUERS
    seen: set[str] = set()
    for index, entry in enumerate(issuers):
        for problem in _jwt_issuer_problems(entry):
            errors.append(Error(
                f"APIAUTH_JWT_ISSUERS[{index}] {problem}.",
                hint="See docs/jwt.md: {'issuer': ..., 'audience': ..., 'jwks_uri': ...}.",
                id="apiauth.E041",
            ))
        if isinstance(entry, dict) and isinstance(entry.get("issuer"), str):
            if entry["issuer"] in seen:
                errors.append(Error(
                    f"APIAUTH_JWT_ISSUERS lists {entry['issuer']!r} twice.",
                    hint="Merge the entries: one issuer, one entry.", id="apiauth.E041",
                ))
            seen.add(entry["issuer"])
    if app_settings.JWT_DENYLIST_CACHE not in settings.CACHES:
        errors.append(Error(
            f"APIAUTH_JWT_DENYLIST_CACHE is {app_settings.JWT_DENYLIST_CACHE!r}, which is not in CACHES.",
            hint="Name an alias of CACHES (a shared Redis with maxmemory-policy noeviction).",
            id="apiauth.E042",
        ))
    provider = getattr(settings, "OAUTH2_PROVIDER", None) or {}
    generator = provider.get("ACCESS_TOKEN_GENERATOR")
    if generator == _OUR_GENERATOR or getattr(generator, "__name__", "") == "signed_access_token":
        if not provider.get("REFRESH_TOKEN_GENERATOR"):
            errors.append(Error(
                "OAUTH2_PROVIDER['ACCESS_TOKEN_GENERATOR'] mints JWTs and REFRESH_TOKEN_GENERATOR is "
                "not set: oauthlib would mint refresh tokens with the access-token generator, and a "
                "refresh token would work as an access token.",
                hint="Set OAUTH2_PROVIDER['REFRESH_TOKEN_GENERATOR'] = "
                "'oauthlib.oauth2.rfc6749.tokens.random_token_generator'.",
                id="apiauth.E040",
            ))
        if not provider.get("OIDC_RSA_PRIVATE_KEY"):
            errors.append(Error(
                "OAUTH2_PROVIDER['ACCESS_TOKEN_GENERATOR'] mints JWTs but OIDC_RSA_PRIVATE_KEY "
                "is empty.",
                hint="Set OIDC_RSA_PRIVATE_KEY to an RSA private key (PEM), kept out of the "
                "repository.",
                id="apiauth.E043",
            ))
        if not settings.DEBUG and not provider.get("OIDC_ISS_ENDPOINT"):
            errors.append(Warning(
                "OAUTH2_PROVIDER['OIDC_ISS_ENDPOINT'] is not set: the 'iss' of every token is "
                "built from the request's Host header.",
                hint="Set OIDC_ISS_ENDPOINT to the provider's public URL (e.g. https://auth.example.com/o).",
                id="apiauth.W040",
            ))
    return errors
