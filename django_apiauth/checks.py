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
    errors.extend(_check_audit_integrity())
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
            id="apiauth.W020",
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
            id="apiauth.E020",
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
