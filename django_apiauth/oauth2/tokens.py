"""RFC 9068 JWT access tokens for django-oauth-toolkit's ``ACCESS_TOKEN_GENERATOR``.

DOT issues opaque random strings that every API call must look up in the
database. With::

    OAUTH2_PROVIDER = {
        "ACCESS_TOKEN_GENERATOR": "django_apiauth.oauth2.tokens.signed_access_token",
        "REFRESH_TOKEN_GENERATOR": "oauthlib.oauth2.rfc6749.tokens.random_token_generator",
        ...
    }

the access token is a JWT (RFC 9068 §2) signed RS256 with DOT's OIDC key
(``OIDC_RSA_PRIVATE_KEY``) and its ``kid`` is the key's RFC 7638 thumbprint,
exactly what DOT publishes at ``/o/.well-known/jwks.json``; so this API
(:class:`~django_apiauth.schemes.jwt.JWTAuthentication`) and any other
service verify it offline. oauthlib uses the access-token generator for refresh
tokens too unless ``REFRESH_TOKEN_GENERATOR`` is set (check
``apiauth.E020``): a refresh token must stay opaque.

DOT still stores the token row (``AccessToken.token`` is a text column;
lookups go through its 64-character ``token_checksum``), so introspection
(RFC 7662), revocation (RFC 7009), refresh and the admin keep working.

Key rotation: make the new key ``OIDC_RSA_PRIVATE_KEY`` and move the old one
to ``OIDC_RSA_PRIVATE_KEYS_INACTIVE``; DOT keeps publishing it, so tokens it
signed verify until they expire.

Claims: ``iss`` (DOT's OIDC issuer), ``aud`` (RFC 8707 ``resource`` values
when sent, else ``APIAUTH_OAUTH2_JWT_AUDIENCE``, else the issuer), ``exp``,
``iat``, ``sub`` (the user's primary key, as in DOT's ID tokens; the
``client_id`` for a client-credentials token, RFC 9068 §2.2), ``client_id``,
``jti``, ``scope``, and ``cnf`` with ``x5t#S256`` (RFC 8705 §3.1) when the
token request arrived with a client certificate verified by a trusted TLS
terminator.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from functools import lru_cache
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest

from ..app_settings import app_settings
from ..core.authentication import Refused
from . import denylist

ALGORITHM = "RS256"  # DOT publishes its OIDC keys as RS256 (views/oidc.py JwksInfoView)
TYP = "at+jwt"  # RFC 9068 §2.1


@lru_cache(maxsize=8)
def signing_key(pem: str) -> tuple[Any, str]:
    """The private key and its ``kid`` (RFC 7638 SHA-256 thumbprint, as DOT's JWKS has it)."""
    from oauth2_provider.utils import jwk_from_pem

    key = serialization.load_pem_private_key(pem.encode(), password=None)
    return key, jwk_from_pem(pem).thumbprint()


def issued_key(token: str) -> str:
    """Cache key of the ``(iss, jti, exp)`` of an issued token, by DOT's ``token_checksum``."""
    return "apiauth:jwt:issued:" + checksum(token)


def checksum(token: str) -> str:
    """DOT's ``token_checksum`` of a raw token (SHA-256 hex)."""
    return hashlib.sha256(token.encode()).hexdigest()


def certificate_thumbprint(request: Any) -> str | None:
    """``x5t#S256`` of the client certificate of the token request, if any (RFC 8705 §3.1).

    The certificate is taken exactly as mTLS authentication takes it
    (:mod:`django_apiauth.schemes.client_cert`): from a trusted TLS
    terminator's header or the server's environ; anything else binds nothing.
    """
    from ..schemes.client_cert import ClientCertificateAuthentication

    headers = getattr(request, "headers", None) or {}
    http = HttpRequest()
    http.META = dict(headers)
    try:
        presented = ClientCertificateAuthentication().extract(http)
    except Refused:
        return None
    if presented is None:
        return None
    return base64.urlsafe_b64encode(bytes.fromhex(presented.lookup_value)).rstrip(b"=").decode()


def audience(request: Any, issuer: str) -> str | list[str]:
    # RFC 8707 ``resource``: oauthlib hands over a string, or a list once DOT normalised it.
    resource = getattr(request, "resource", None) or ()
    resources = [resource] if isinstance(resource, str) else [r for r in resource if isinstance(r, str)]
    values = resources or list(app_settings.OAUTH2_JWT_AUDIENCE) or [issuer]
    return values[0] if len(values) == 1 else values


def claims_for(request: Any, *, now: int | None = None) -> dict[str, Any]:
    """The RFC 9068 claims of the access token oauthlib is issuing for ``request``."""
    from oauth2_provider.settings import oauth2_settings

    now = int(time.time()) if now is None else now
    lifetime = int(getattr(request, "expires_in", None) or oauth2_settings.ACCESS_TOKEN_EXPIRE_SECONDS)
    issuer = oauth2_settings.OAUTH2_VALIDATOR_CLASS().get_oidc_issuer_endpoint(request)
    client = request.client
    client_id = str(getattr(client, "client_id", None) or request.client_id)
    user = getattr(request, "user", None)
    subject = str(user.pk) if user is not None and getattr(user, "pk", None) is not None else client_id
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience(request, issuer),
        "exp": now + lifetime,
        "iat": now,
        "sub": subject,
        "client_id": client_id,
        "jti": secrets.token_urlsafe(18),
        "scope": " ".join(request.scopes or ()),
    }
    thumbprint = certificate_thumbprint(request)
    if thumbprint:
        claims["cnf"] = {"x5t#S256": thumbprint}
    return claims


def signed_access_token(request: Any) -> str:
    """DOT ``ACCESS_TOKEN_GENERATOR``: an RS256 JWT access token for the oauthlib ``request``."""
    from oauth2_provider.settings import oauth2_settings

    pem = oauth2_settings.OIDC_RSA_PRIVATE_KEY
    if not pem:
        raise ImproperlyConfigured(
            "signed_access_token needs OAUTH2_PROVIDER['OIDC_RSA_PRIVATE_KEY'] (an RSA private key, PEM)."
        )
    key, kid = signing_key(pem)
    claims = claims_for(request)
    token = jwt.encode(claims, key, algorithm=ALGORITHM, headers={"typ": TYP, "kid": kid})
    # So that deleting the row can deny-list the jti even when DOT stores only
    # the checksum (COMPLIANT_BCP_RFC9700_TOKEN_STORAGE).
    try:
        denylist.cache().set(issued_key(token), (claims["iss"], claims["jti"], claims["exp"]),
                             timeout=max(1, claims["exp"] - claims["iat"] + denylist.LEEWAY_MARGIN))
    except Exception as exc:
        # Without the record a revocation could not reach this token: issue nothing.
        from ..core.authentication import DependencyUnavailable

        raise DependencyUnavailable(type(exc).__name__) from None
    return token


def unverified_claims(token: str) -> dict[str, Any] | None:
    """Claims of a token read from DOT's own table (trusted storage): no signature check."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    return claims if isinstance(claims, dict) else None
