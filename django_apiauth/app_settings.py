"""Settings of django-apiauth.

Every setting is read from ``django.conf.settings`` with the ``APIAUTH_`` prefix,
and nothing is written into ``django.conf.settings`` at import time. Defaults
are documented on each property and in ``docs/settings.md``.

Reading a *missing* attribute of ``django.conf.settings`` costs an exception
(several microseconds), and the authentication path reads several settings per
request; so raw values are memoised, and the memo is emptied by Django's
``setting_changed`` signal, which ``override_settings`` sends: tests and
runtime overrides see new values at once, as if read on each access.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver


class AppSettings:
    prefix = "APIAUTH_"

    def _setting(self, name: str, default: Any) -> Any:
        key = self.prefix + name
        try:
            value = _MEMO[key]
        except KeyError:
            value = _MEMO[key] = getattr(settings, key, _MISSING)
        return default if value is _MISSING else value

    # -- secrets -----------------------------------------------------------

    @property
    def PEPPER_IS_SET(self) -> bool:
        return bool(self._setting("PEPPER", None))

    @property
    def PEPPER(self) -> bytes:
        """Server-side key under which API-key secrets are hashed (HMAC-SHA256).

        ``APIAUTH_PEPPER`` (str or bytes, at least 32 characters). When unset, a
        key is derived from ``SECRET_KEY``; check ``apiauth.W001`` warns about
        that in production because rotating ``SECRET_KEY`` would then
        invalidate every API key.
        """
        pepper = self._setting("PEPPER", None)
        if pepper:
            return pepper.encode() if isinstance(pepper, str) else bytes(pepper)
        return _derive_pepper(settings.SECRET_KEY)

    # -- API keys ----------------------------------------------------------

    @property
    def API_KEY_PREFIX(self) -> str:
        """Type prefix of every API key (``ak``), so secret scanners spot leaks."""
        return str(self._setting("API_KEY_PREFIX", "ak"))

    @property
    def API_KEY_HEADER(self) -> str:
        """Dedicated request header carrying a key (``X-API-Key``)."""
        return str(self._setting("API_KEY_HEADER", "X-API-Key"))

    @property
    def API_KEY_KEYWORD(self) -> str:
        """Keyword of the ``Authorization`` header (``Api-Key``)."""
        return str(self._setting("API_KEY_KEYWORD", "Api-Key"))

    @property
    def API_KEY_QUERY_PARAMS(self) -> tuple[str, ...]:
        """Query-string parameters that are refused when they carry a key."""
        return tuple(self._setting("API_KEY_QUERY_PARAMS", ("api_key", "apikey", "key")))

    # -- lifecycle ---------------------------------------------------------

    @property
    def ROTATION_GRACE(self) -> timedelta:
        """How long a rotated-out credential keeps working (default 24 hours)."""
        value = self._setting("ROTATION_GRACE", timedelta(hours=24))
        return value if isinstance(value, timedelta) else timedelta(seconds=int(value))

    @property
    def LAST_USED_INTERVAL(self) -> timedelta:
        """At most one ``last_used_at`` write per credential per interval (60 s)."""
        value = self._setting("LAST_USED_INTERVAL", timedelta(seconds=60))
        return value if isinstance(value, timedelta) else timedelta(seconds=int(value))

    # -- requests ----------------------------------------------------------

    @property
    def TRUSTED_PROXIES(self) -> tuple[str, ...]:
        """CIDRs of reverse proxies whose ``X-Forwarded-For`` is believed (none)."""
        return tuple(self._setting("TRUSTED_PROXIES", ()))

    @property
    def REQUEST_ID_HEADER(self) -> str:
        """Header whose value is recorded as the audit ``request_id``."""
        return str(self._setting("REQUEST_ID_HEADER", "X-Request-ID"))

    @property
    def WWW_AUTHENTICATE_REALM(self) -> str:
        return str(self._setting("WWW_AUTHENTICATE_REALM", "api"))

    # -- HTTP message signatures (RFC 9421) -------------------------------

    @property
    def SIGNATURE_MAX_SKEW(self) -> int:
        """Seconds a signature's ``created`` may differ from the server clock (300)."""
        return int(self._setting("SIGNATURE_MAX_SKEW", 300))

    @property
    def SIGNATURE_REQUIRE_NONCE(self) -> bool:
        """Require a ``nonce`` parameter in every signature (default ``False``; the
        signature value itself is never accepted twice within the window)."""
        return bool(self._setting("SIGNATURE_REQUIRE_NONCE", False))

    @property
    def SIGNATURE_MAX_HEADER_LENGTH(self) -> int:
        """Longest ``Signature`` / ``Signature-Input`` value accepted (8192 bytes)."""
        return int(self._setting("SIGNATURE_MAX_HEADER_LENGTH", 8192))

    @property
    def REPLAY_CACHE(self) -> str:
        """Cache alias of the replay store (``default``; Redis in production)."""
        return str(self._setting("REPLAY_CACHE", "default"))

    # -- client certificates (mTLS) ------------------------------------------

    @property
    def CLIENT_CERT_HEADERS(self) -> dict[str, str]:
        """Forwarded-certificate headers and their formats, accepted only from
        ``APIAUTH_TRUSTED_PROXIES``: ``{"X-SSL-Client-Cert": "nginx",
        "X-Forwarded-Client-Cert": "envoy", "Client-Cert": "rfc9440"}``."""
        return self._setting("CLIENT_CERT_HEADERS", _DEFAULT_CLIENT_CERT_HEADERS)  # type: ignore[no-any-return]

    @property
    def CLIENT_CERT_VERIFY_HEADER(self) -> str:
        """Header carrying the terminator's verification result (``SUCCESS``)."""
        return str(self._setting("CLIENT_CERT_VERIFY_HEADER", "X-SSL-Client-Verify"))

    @property
    def CLIENT_CERT_FROM_ENVIRON(self) -> bool:
        """Accept the WSGI ``SSL_CLIENT_CERT`` environ (set by the server, not a header)."""
        return bool(self._setting("CLIENT_CERT_FROM_ENVIRON", True))

    @property
    def CLIENT_CERT_CHAIN_CAS(self) -> tuple[str, ...]:
        """Slugs of CAs whose client certificates are accepted *without* prior
        registration (chain mode; default none: every certificate is pinned).
        The first use registers the certificate for the owner that
        ``ClientCertificateAuthentication.owner_for`` maps it to."""
        return tuple(self._setting("CLIENT_CERT_CHAIN_CAS", ()))

    @property
    def CRL_VALIDITY(self) -> timedelta:
        """``nextUpdate`` of generated CRLs (7 days): regenerate well before it."""
        value = self._setting("CRL_VALIDITY", timedelta(days=7))
        return value if isinstance(value, timedelta) else timedelta(seconds=int(value))

    # -- JWT bearer tokens (RFC 9068) ----------------------------------------

    @property
    def JWT_ISSUERS(self) -> list[dict[str, Any]]:
        """Trusted token issuers (default none: every bearer JWT is refused).

        A list of dicts, each with ``issuer`` (the exact ``iss``), ``audience``
        (str or list: this API's identifier), and ``jwks_uri`` (fetched over
        HTTPS and cached) or ``keys`` (a list of JWK dicts). Optional:
        ``algorithms`` (``["RS256", "ES256", "EdDSA"]``; ``none`` is never
        accepted, HMAC only when listed), ``leeway`` (30 s), ``max_lifetime``
        (3600 s, the longest ``exp - iat`` accepted), ``typ`` (``"at+jwt"``)
        and ``client_credentials_user`` (username that tokens without an end
        user, ``sub == client_id``, authenticate as; default none).
        """
        return list(self._setting("JWT_ISSUERS", ()) or ())

    @property
    def JWT_MAX_TOKEN_BYTES(self) -> int:
        """Longest bearer JWT accepted, checked before any decoding (8192 bytes)."""
        return int(self._setting("JWT_MAX_TOKEN_BYTES", 8192))

    @property
    def JWKS_CACHE_SECONDS(self) -> int:
        """How long a fetched JWKS is kept in the cache (300 s)."""
        return int(self._setting("JWKS_CACHE_SECONDS", 300))

    @property
    def JWKS_REFETCH_COOLDOWN(self) -> int:
        """Minimum seconds between refetches triggered by an unknown ``kid`` (60)."""
        return int(self._setting("JWKS_REFETCH_COOLDOWN", 60))

    @property
    def JWKS_TIMEOUT(self) -> float:
        """Timeout in seconds of a JWKS fetch (3.0)."""
        return float(self._setting("JWKS_TIMEOUT", 3.0))

    @property
    def JWKS_CACHE(self) -> str:
        """Cache alias where fetched key sets are kept (``default``)."""
        return str(self._setting("JWKS_CACHE", "default"))

    @property
    def JWT_DENYLIST_CACHE(self) -> str:
        """Shared cache alias of the revoked-``jti`` deny-list and the JWT user
        cache's invalidation stamps (default: ``APIAUTH_REPLAY_CACHE``). Must be
        shared by every process and must not evict (Redis ``noeviction``)."""
        return str(self._setting("JWT_DENYLIST_CACHE", self.REPLAY_CACHE))

    @property
    def JWT_USER_CACHE_SECONDS(self) -> int:
        """Longest time a process reuses a token subject's user without asking the
        database (60 s). Saving the user, its ``ExternalIdentity`` or its OAuth
        application invalidates the entry at once, in every process."""
        return int(self._setting("JWT_USER_CACHE_SECONDS", 60))

    @property
    def OAUTH2_JWT_AUDIENCE(self) -> tuple[str, ...]:
        """``aud`` of the JWT access tokens this project's django-oauth-toolkit
        mints (str or list; default: the issuer). RFC 8707 ``resource``
        parameters, when a client sends them, take precedence."""
        value = self._setting("OAUTH2_JWT_AUDIENCE", ())
        return (value,) if isinstance(value, str) else tuple(value or ())

    # -- audit -------------------------------------------------------------

    @property
    def AUDIT_DATABASE(self) -> str | None:
        """Database alias audit rows are written to (default: the router's choice).

        With ``ATOMIC_REQUESTS``, DRF rolls back the request's transaction when
        it answers an error, taking the failure's audit row with it. Point this
        at a second alias for the same database without ``ATOMIC_REQUESTS`` so
        audit rows commit on their own (check ``apiauth.W004``).
        """
        value = self._setting("AUDIT_DATABASE", None)
        return str(value) if value else None

    @property
    def AUDIT_SUCCESS(self) -> bool:
        """Record successful attempts too (default ``True``)."""
        return bool(self._setting("AUDIT_SUCCESS", True))

    # -- SSO ---------------------------------------------------------------

    @property
    def SSO_ADMIN_LOGIN_BUTTONS(self) -> bool:
        """Show "Sign in with <provider>" buttons on the admin login page (default ``True``).

        Only applies when the project has not set ``admin.site.login_template``
        itself; the buttons are then added by ``django_apiauth/admin/login.html``,
        which extends the stock admin login page.
        """
        return bool(self._setting("SSO_ADMIN_LOGIN_BUTTONS", True))

    # -- OpenID Connect relying party ------------------------------------------

    @property
    def OIDC_HTTP_TIMEOUT(self) -> float:
        """Timeout in seconds of each call to an OpenID Provider (discovery, token, userinfo; 5.0)."""
        return float(self._setting("OIDC_HTTP_TIMEOUT", 5.0))

    @property
    def OIDC_DISCOVERY_CACHE_SECONDS(self) -> int:
        """How long a provider's discovery document is cached (3600 s; cache ``APIAUTH_JWKS_CACHE``)."""
        return int(self._setting("OIDC_DISCOVERY_CACHE_SECONDS", 3600))

    @property
    def OIDC_STATE_MAX_AGE(self) -> int:
        """Seconds a sign-in may take between our redirect and the provider's callback (600)."""
        return int(self._setting("OIDC_STATE_MAX_AGE", 600))

    @property
    def OIDC_LEEWAY(self) -> int:
        """Clock skew in seconds allowed on ID-token ``exp`` / ``iat`` (60)."""
        return int(self._setting("OIDC_LEEWAY", 60))

    @property
    def OIDC_MAX_ID_TOKEN_AGE(self) -> int:
        """Oldest ``iat`` accepted, in seconds before now (600): a fresh login gets a fresh token."""
        return int(self._setting("OIDC_MAX_ID_TOKEN_AGE", 600))
    # -- SAML service provider -------------------------------------------------

    @property
    def SAML_CLOCK_SKEW(self) -> int:
        """Seconds of clock difference tolerated on an assertion's ``NotBefore`` /
        ``NotOnOrAfter`` and on ``IssueInstant`` (default 120)."""
        return int(self._setting("SAML_CLOCK_SKEW", 120))

    @property
    def SAML_MAX_RESPONSE_BYTES(self) -> int:
        """Largest ``SAMLResponse`` form value accepted, checked before any base64 or
        XML parsing (default 131072 bytes; a signed response is typically 5-20 KiB)."""
        return int(self._setting("SAML_MAX_RESPONSE_BYTES", 128 * 1024))

    @property
    def SAML_REQUEST_TTL(self) -> int:
        """Seconds an AuthnRequest may wait for its response (default 600)."""
        return int(self._setting("SAML_REQUEST_TTL", 600))

    @property
    def SAML_MAX_ASSERTION_AGE(self) -> int:
        """Oldest assertion ``IssueInstant`` accepted, in seconds (default 600); also
        the shortest time an assertion ID stays in the replay store."""
        return int(self._setting("SAML_MAX_ASSERTION_AGE", 600))


    # -- rate limits, lockout and alerts (docs/rate-limits.md) ---------------

    @property
    def RATE_LIMITS(self) -> dict[str, str]:
        """Default rate per scheme, e.g. ``{"api_key": "100/m", "jwt": "20/s"}``
        (default none). A credential's own ``rate_limit`` overrides its scheme's."""
        return dict(self._setting("RATE_LIMITS", None) or {})

    @property
    def RATE_LIMIT_CACHE(self) -> str:
        """Cache alias of rate-limit counters, lockouts and seen addresses
        (``default``; a shared Redis in production)."""
        return str(self._setting("RATE_LIMIT_CACHE", "default"))

    @property
    def LOCKOUT_ENABLED(self) -> bool:
        """Lock out sources of repeated failures (default ``True``)."""
        return bool(self._setting("LOCKOUT_ENABLED", True))

    @property
    def LOCKOUT_IP_FAILURES(self) -> int:
        """Failures from one IP address, any scheme, that lock it out (50)."""
        return int(self._setting("LOCKOUT_IP_FAILURES", 50))

    @property
    def LOCKOUT_IP_WINDOW(self) -> timedelta:
        """Window in which ``LOCKOUT_IP_FAILURES`` are counted (10 minutes)."""
        return _as_timedelta(self._setting("LOCKOUT_IP_WINDOW", timedelta(minutes=10)))

    @property
    def LOCKOUT_CREDENTIAL_FAILURES(self) -> int:
        """Failures against one credential id *from one IP address* that lock
        that pair out (10)."""
        return int(self._setting("LOCKOUT_CREDENTIAL_FAILURES", 10))

    @property
    def LOCKOUT_CREDENTIAL_WINDOW(self) -> timedelta:
        """Window in which ``LOCKOUT_CREDENTIAL_FAILURES`` are counted (10 minutes)."""
        return _as_timedelta(self._setting("LOCKOUT_CREDENTIAL_WINDOW", timedelta(minutes=10)))

    @property
    def LOCKOUT_DURATION(self) -> timedelta:
        """Cool-off of a lockout (15 minutes)."""
        return _as_timedelta(self._setting("LOCKOUT_DURATION", timedelta(minutes=15)))

    @property
    def LOCKOUT_EXEMPT_IPS(self) -> tuple[str, ...]:
        """CIDRs never locked out by address (health checkers; default none)."""
        return tuple(self._setting("LOCKOUT_EXEMPT_IPS", ()))

    @property
    def ALERT_CREDENTIAL_FAILURES(self) -> int:
        """Failures against one credential id from *any* address, within
        ``LOCKOUT_CREDENTIAL_WINDOW``, that raise a ``failure_burst`` alert (20;
        0 disables). Never a lockout: that would let anyone lock a holder out."""
        return int(self._setting("ALERT_CREDENTIAL_FAILURES", 20))

    @property
    def ALERT_NEW_IP(self) -> bool:
        """Alert on the first use of a stored credential from a new address (``True``)."""
        return bool(self._setting("ALERT_NEW_IP", True))

    @property
    def ALERT_NEW_IP_MEMORY(self) -> timedelta:
        """How long an address stays known for a credential (30 days)."""
        return _as_timedelta(self._setting("ALERT_NEW_IP_MEMORY", timedelta(days=30)))

    @property
    def ALERTS(self) -> dict[str, Any]:
        """The optional notifier of ``suspicious_activity`` (default off):
        ``{"email": ["sec@example.com"], "webhook": "https://…", "timeout": 3.0,
        "kinds": ["lockout", …]}``."""
        return dict(self._setting("ALERTS", None) or {})
    # -- audit integrity and buffering (docs/audit-integrity.md) ---------------

    @property
    def AUDIT_KEYS_ARE_SET(self) -> bool:
        return bool(self._setting("AUDIT_KEYS", None))

    @property
    def AUDIT_BUFFER_SIZE(self) -> int:
        """Buffer up to N successful-authentication audit rows per process and
        write them in one bulk INSERT (default 50; 0: every row written at once).
        A crash loses at most N rows / ``AUDIT_BUFFER_SECONDS`` of them; while
        the audit database refuses writes, rows are written at once (and the
        request refused if that fails too)."""
        return int(self._setting("AUDIT_BUFFER_SIZE", 50) or 0)

    @property
    def AUDIT_BUFFER_SECONDS(self) -> float:
        """Oldest age of a buffered row before the buffer is written (1.0 s)."""
        return float(self._setting("AUDIT_BUFFER_SECONDS", 1.0))

    @property
    def AUDIT_SEAL_INTERVAL(self) -> float:
        """Seconds between two sealing passes of one process, run after a
        request has finished (10; 0 turns automatic sealing off: run
        ``verify_audit`` from cron instead)."""
        return float(self._setting("AUDIT_SEAL_INTERVAL", 10.0) or 0)


def _derive_pepper(secret_key: str) -> bytes:
    # One HMAC per call is cheap next to a request; cached by secret_key so
    # the hot path pays a dict lookup.
    cached = _PEPPER_CACHE.get(secret_key)
    if cached is None:
        cached = hmac.new(
            secret_key.encode(), b"django_apiauth.api_key.pepper", hashlib.sha256
        ).digest()
        _PEPPER_CACHE.clear()
        _PEPPER_CACHE[secret_key] = cached
    return cached


def _as_timedelta(value: Any) -> timedelta:
    return value if isinstance(value, timedelta) else timedelta(seconds=int(value))


_PEPPER_CACHE: dict[str, bytes] = {}
_DEFAULT_CLIENT_CERT_HEADERS: dict[str, str] = {
    "X-SSL-Client-Cert": "nginx",
    "X-Forwarded-Client-Cert": "envoy",
    "Client-Cert": "rfc9440",
}
_MISSING = object()
_MEMO: dict[str, Any] = {}


@receiver(setting_changed)
def _forget(**kwargs: Any) -> None:
    _MEMO.clear()


app_settings = AppSettings()
