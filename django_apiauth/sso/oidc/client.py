"""Talking to an OpenID Provider: discovery, JWKS, token and UserInfo endpoints.

Nothing here is specific to one OP. Every call has a timeout, follows no
redirect (a 3xx is an error: a redirect must not move us to another host),
bounds the response size and expects JSON. A provider that cannot be reached
or answers nonsense raises :class:`ProviderUnreachable` (the views answer
502, audited; there is no fallback).

* Discovery (OpenID Connect Discovery 1.0 §4): ``GET
  <issuer>/.well-known/openid-configuration``; the document's ``issuer`` must
  equal the configured issuer exactly (§4.3), else :class:`IssuerMismatch`.
  Cached in the Django cache ``APIAUTH_JWKS_CACHE`` for
  ``APIAUTH_OIDC_DISCOVERY_CACHE_SECONDS``.
* JWKS: :func:`django_apiauth.schemes.jwt.issuer_keys` (shared with JWT bearer
  authentication): cached, refetched on an unknown ``kid`` at most once per
  ``APIAUTH_JWKS_REFETCH_COOLDOWN``.
* Token endpoint (Core 1.0 §3.1.3.1): ``client_secret_basic`` or
  ``client_secret_post`` (RFC 6749 §2.3.1), PKCE ``code_verifier`` (RFC 7636 §4.5).
* UserInfo (Core 1.0 §5.3): ``GET`` with the access token as a bearer token.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

from ...app_settings import app_settings
from ...core import cachestore
from ...core.authentication import DependencyUnavailable
from ...schemes import jwt as jwt_scheme
from .models import OidcProvider, require_secure_url

logger = logging.getLogger("django_apiauth.sso")

MAX_DOCUMENT_BYTES = 256 * 1024
DISCOVERY_PATH = "/.well-known/openid-configuration"
_REQUIRED_METADATA = ("authorization_endpoint", "token_endpoint", "jwks_uri")
_URL_METADATA = (*_REQUIRED_METADATA, "userinfo_endpoint", "end_session_endpoint")


class ProviderUnreachable(Exception):
    """The OP could not be reached or answered something unusable (502)."""

    def __init__(self, step: str, problem: str) -> None:
        super().__init__(f"{step}: {problem}")
        self.step = step
        self.problem = problem


class IssuerMismatch(Exception):
    """The discovery document names another issuer than the one configured (403)."""

    def __init__(self, found: str) -> None:
        super().__init__("issuer mismatch")
        self.found = found


class TokenRejected(Exception):
    """The token endpoint refused the code (4xx with an OAuth error, RFC 6749 §5.2)."""

    def __init__(self, error: str, status: int) -> None:
        super().__init__(error)
        self.error = error
        self.status = status


def discovery_url(issuer: str) -> str:
    """Discovery 1.0 §4.1: the issuer without a trailing ``/``, plus the well-known path."""
    return issuer.rstrip("/") + DISCOVERY_PATH


@dataclass(frozen=True, slots=True)
class Answer:
    """An OP's HTTP answer, its body read up to :data:`MAX_DOCUMENT_BYTES`."""

    status: int
    content_type: str
    body: bytes

    def json(self, step: str) -> Any:
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError):
            raise ProviderUnreachable(step, "response is not JSON") from None


def _call(step: str, method: str, url: str, **kwargs: Any) -> Answer:
    """One request to the OP: timeout, no redirects, body size bounded while reading."""
    try:
        with requests.request(
            method, url, timeout=app_settings.OIDC_HTTP_TIMEOUT, allow_redirects=False, stream=True,
            **kwargs,
        ) as response:
            if 300 <= response.status_code < 400:
                raise ProviderUnreachable(step, f"redirect ({response.status_code})")
            chunks, size = [], 0
            for chunk in response.iter_content(64 * 1024):
                size += len(chunk)
                if size > MAX_DOCUMENT_BYTES:
                    raise ProviderUnreachable(step, "response too large")
                chunks.append(chunk)
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            return Answer(response.status_code, content_type, b"".join(chunks))
    except requests.RequestException as exc:
        logger.warning("OpenID Provider %s at %s failed: %s", step, url, type(exc).__name__)
        raise ProviderUnreachable(step, type(exc).__name__) from None


def fetch_metadata(issuer: str) -> dict[str, Any]:
    """Fetch and validate the discovery document (uncached)."""
    response = _call("discovery", "GET", discovery_url(issuer), headers={"Accept": "application/json"})
    if response.status != 200:
        raise ProviderUnreachable("discovery", f"HTTP {response.status}")
    document = response.json("discovery")
    if not isinstance(document, dict):
        raise ProviderUnreachable("discovery", "not a JSON object")
    found = document.get("issuer")
    # Exact comparison (Discovery 1.0 §4.3): no normalisation, no trailing-slash leniency.
    if not isinstance(found, str) or found != issuer:
        raise IssuerMismatch(str(found)[:255])
    for name in _URL_METADATA:
        value = document.get(name)
        if value is None and name not in _REQUIRED_METADATA:
            continue
        if not isinstance(value, str):
            raise ProviderUnreachable("discovery", f"{name} missing")
        try:
            require_secure_url(value, name)
        except ValueError:
            raise ProviderUnreachable("discovery", f"{name} is not an https URL") from None
    return document


def _metadata_key(issuer: str) -> str:
    return f"apiauth:oidc:metadata:{hashlib.sha256(issuer.encode()).hexdigest()[:40]}"


def provider_metadata(provider: OidcProvider) -> dict[str, Any]:
    """The provider's discovery document, from the cache or fetched (and cached).

    A cache outage is not fatal here (the document is refetched); an
    unreachable provider raises :class:`ProviderUnreachable`.
    """
    key = _metadata_key(provider.issuer)
    cache = cachestore.cache(app_settings.JWKS_CACHE)
    try:
        cached = cache.get(key)
    except Exception:
        logger.exception("The OIDC metadata cache is unavailable")
        cached = None
    if isinstance(cached, dict) and cached.get("issuer") == provider.issuer:
        return cached
    document = fetch_metadata(provider.issuer)
    try:
        cache.set(key, document, app_settings.OIDC_DISCOVERY_CACHE_SECONDS)
    except Exception:
        logger.exception("The OIDC metadata cache is unavailable")
    return document


def forget_metadata(provider: OidcProvider) -> None:
    try:
        cachestore.cache(app_settings.JWKS_CACHE).delete(_metadata_key(provider.issuer))
    except Exception:
        logger.exception("The OIDC metadata cache is unavailable")


def _jwt_issuer(provider: OidcProvider, metadata: dict[str, Any]) -> jwt_scheme.Issuer:
    # Only ``issuer`` and ``jwks_uri`` (together the cache key) are read by
    # issuer_keys(); JWT bearer authentication of the same issuer and JWKS URI
    # shares the cached set.
    return jwt_scheme.Issuer(
        issuer=provider.issuer, audience=(provider.client_id,), jwks_uri=metadata["jwks_uri"], keys=(),
        algorithms=provider.algorithm_list, leeway=app_settings.OIDC_LEEWAY, max_lifetime=0, typ="",
        client_credentials_user="",
    )


def signing_key(provider: OidcProvider, metadata: dict[str, Any], kid: str | None) -> dict[str, Any] | None:
    """The OP's JWK for ``kid`` from its JWKS (refetched once on an unknown ``kid``).

    Returns ``None`` when no key matches; raises :class:`ProviderUnreachable`
    when the JWKS cannot be fetched and nothing is cached.
    """
    issuer = _jwt_issuer(provider, metadata)
    try:
        jwk = jwt_scheme.select_key(jwt_scheme.issuer_keys(issuer), kid)
        if jwk is None and kid is not None:
            jwk = jwt_scheme.select_key(jwt_scheme.issuer_keys(issuer, refresh=True), kid)  # key rotation
    except DependencyUnavailable:
        raise ProviderUnreachable("jwks", "unavailable") from None
    return jwk


def token_auth_method(provider: OidcProvider, metadata: dict[str, Any]) -> str:
    if provider.token_endpoint_auth_method != OidcProvider.AUTH_AUTO:
        return provider.token_endpoint_auth_method
    supported = metadata.get("token_endpoint_auth_methods_supported")
    if isinstance(supported, list) and OidcProvider.AUTH_BASIC not in supported \
            and OidcProvider.AUTH_POST in supported:
        return OidcProvider.AUTH_POST
    # The default when the OP lists nothing (Discovery 1.0 §3).
    return OidcProvider.AUTH_BASIC


def exchange_code(
    provider: OidcProvider, metadata: dict[str, Any], *, code: str, redirect_uri: str, code_verifier: str
) -> dict[str, Any]:
    """Redeem the authorization code at the token endpoint; the JSON answer (RFC 6749 §5.1)."""
    secret = provider.client_secret()
    data = {
        "grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
        "code_verifier": code_verifier,
    }
    headers = {"Accept": "application/json"}
    if token_auth_method(provider, metadata) == OidcProvider.AUTH_POST:
        data.update(client_id=provider.client_id, client_secret=secret)
    else:
        # RFC 6749 §2.3.1: each part form-urlencoded before base64.
        pair = f"{quote(provider.client_id, safe='')}:{quote(secret, safe='')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    response = _call("token", "POST", metadata["token_endpoint"], data=data, headers=headers)
    if 400 <= response.status < 500:
        try:
            body = response.json("token")
            error = body.get("error") if isinstance(body, dict) else None
        except ProviderUnreachable:
            error = None
        raise TokenRejected(str(error or "invalid_request")[:64], response.status)
    if response.status != 200:
        raise ProviderUnreachable("token", f"HTTP {response.status}")
    body = response.json("token")
    if not isinstance(body, dict):
        raise ProviderUnreachable("token", "not a JSON object")
    return body


def fetch_userinfo(metadata: dict[str, Any], access_token: str) -> dict[str, Any]:
    """The UserInfo claims (JSON only; Core 1.0 §5.3.2)."""
    response = _call(
        "userinfo", "GET", metadata["userinfo_endpoint"],
        headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
    )
    if response.status != 200:
        raise ProviderUnreachable("userinfo", f"HTTP {response.status}")
    if response.content_type != "application/json":
        # A signed or encrypted UserInfo answer (application/jwt) is not supported.
        raise ProviderUnreachable("userinfo", f"unsupported content type {response.content_type[:40]!r}")
    body = response.json("userinfo")
    if not isinstance(body, dict):
        raise ProviderUnreachable("userinfo", "not a JSON object")
    return body
