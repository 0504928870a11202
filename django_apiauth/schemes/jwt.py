"""JWT bearer access tokens (RFC 9068) from configured external issuers.

``Authorization: Bearer <jwt>`` (RFC 6750 §2.1; the scheme word is
case-insensitive). A bearer token that is not shaped like a JWS (three
base64url segments) is not ours: ``None``, so that an opaque-token class later
in ``authentication_classes`` can claim it.

Checks, in order, each refusal audited with its stable reason:

1. size, before any decoding (``APIAUTH_JWT_MAX_TOKEN_BYTES``) → ``malformed``;
2. unverified header and payload must be JSON objects; a ``crit`` header is
   refused (we understand no extension) → ``malformed``;
3. ``iss`` must be a configured issuer (``APIAUTH_JWT_ISSUERS``) →
   ``untrusted_issuer``;
4. ``alg`` must be in that issuer's allow-list; ``none`` never is →
   ``disallowed_algorithm``;
5. ``typ`` must be the issuer's (``at+jwt``; ``application/at+jwt`` too) →
   ``malformed``;
6. the key comes from the issuer's JWKS by ``kid`` only: static ``keys`` or
   ``jwks_uri`` (cached; an unknown ``kid`` refetches at most once per
   ``APIAUTH_JWKS_REFETCH_COOLDOWN``). The header parameters ``jku``,
   ``x5u``, ``jwk`` and ``x5c`` are ignored: a token never chooses its own key.
   A fetch failure with nothing cached answers 503;
7. PyJWT verifies the signature with that key and only the header's
   algorithm, and the claims ``exp``, ``iat``, ``nbf``, ``iss``, ``aud``
   (with the issuer's leeway), requiring ``exp iat sub iss aud client_id jti``;
8. ``exp - iat`` must not exceed the issuer's ``max_lifetime`` →
   ``malformed``;
9. the user: :class:`~django_apiauth.models.ExternalIdentity` ``(iss, sub)``,
   else, for a client-credentials token (``sub == client_id``), the issuer's
   ``client_credentials_user``; else ``unknown_credential``. An inactive user
   → ``inactive_owner``.

Success sets ``request.auth`` to ``Principal(scheme="jwt", credential=None,
credential_id=<jti>, scopes=<scope or scp>, claims=<verified claims>)``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Any, ClassVar

import jwt
import requests
from django.contrib.auth import get_user_model
from django.core.cache import caches
from django.db import DatabaseError
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone
from rest_framework import exceptions

from ..app_settings import app_settings
from ..core import reasons
from ..core.authentication import (
    ApiAuthentication,
    DependencyUnavailable,
    Refused,
)
from ..core.principal import Principal
from ..models import ExternalIdentity

logger = logging.getLogger("django_apiauth")

DEFAULT_ALGORITHMS = ("RS256", "ES256", "EdDSA")
REQUIRED_CLAIMS = ["exp", "iat", "sub", "iss", "aud", "client_id", "jti"]
MAX_JWKS_BYTES = 512 * 1024
_JWS_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


@dataclass(frozen=True, slots=True)
class Issuer:
    """One entry of ``APIAUTH_JWT_ISSUERS``, with defaults applied."""

    issuer: str
    audience: tuple[str, ...]
    jwks_uri: str
    keys: tuple[dict[str, Any], ...]
    algorithms: frozenset[str]
    leeway: int
    max_lifetime: int
    typ: str
    client_credentials_user: str

    @classmethod
    def from_setting(cls, entry: dict[str, Any]) -> Issuer:
        audience = entry.get("audience") or ()
        return cls(
            issuer=str(entry["issuer"]),
            audience=(audience,) if isinstance(audience, str) else tuple(audience),
            jwks_uri=str(entry.get("jwks_uri") or ""),
            keys=tuple(entry.get("keys") or ()),
            # "none" is never a signature algorithm, whatever the setting says.
            algorithms=frozenset(
                a for a in entry.get("algorithms") or DEFAULT_ALGORITHMS if str(a).lower() != "none"
            ),
            leeway=int(entry.get("leeway", 30)),
            max_lifetime=int(entry.get("max_lifetime", 3600)),
            typ=_media_type(str(entry.get("typ", "at+jwt"))),
            client_credentials_user=str(entry.get("client_credentials_user") or ""),
        )


def configured_issuers() -> dict[str, Issuer]:
    """The usable issuers by ``iss``; an entry without audience or keys is skipped (logged)."""
    issuers: dict[str, Issuer] = {}
    for entry in app_settings.JWT_ISSUERS:
        try:
            issuer = Issuer.from_setting(entry)
        except (KeyError, TypeError, ValueError):
            logger.error("APIAUTH_JWT_ISSUERS entry without an 'issuer' is ignored")
            continue
        if not issuer.audience or not (issuer.jwks_uri or issuer.keys):
            logger.error("APIAUTH_JWT_ISSUERS entry %r needs 'audience' and 'jwks_uri' or 'keys'; "
                         "ignored", issuer.issuer)
            continue
        issuers[issuer.issuer] = issuer
    return issuers


def _media_type(value: str) -> str:
    value = value.strip().lower()
    return value.removeprefix("application/")


def _b64_json(segment: str) -> Any:
    padded = segment + "=" * (-len(segment) % 4)
    return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))


# -- key sets ----------------------------------------------------------------


def _cache_key(issuer: str, kind: str) -> str:
    return f"apiauth:jwks:{kind}:{hashlib.sha256(issuer.encode()).hexdigest()[:40]}"


def fetch_jwks(uri: str) -> list[dict[str, Any]]:
    """GET a JWKS document; raise :class:`DependencyUnavailable` on any failure."""
    try:
        response = requests.get(uri, timeout=app_settings.JWKS_TIMEOUT,
                                headers={"Accept": "application/json"}, allow_redirects=False)
        response.raise_for_status()
        if len(response.content) > MAX_JWKS_BYTES:
            raise ValueError("JWKS document too large")
        document = response.json()
        keys = document["keys"]
        if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
            raise ValueError("'keys' is not a list of objects")
    except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
        logger.warning("Fetching the JWKS at %s failed: %s", uri, exc)
        raise DependencyUnavailable("JWKS unavailable") from None
    return keys


def issuer_keys(issuer: Issuer, *, refresh: bool = False) -> list[dict[str, Any]]:
    """The issuer's JWKs: static, cached, or fetched (and cached).

    ``refresh`` forces a fetch, at most once per ``APIAUTH_JWKS_REFETCH_COOLDOWN``
    per issuer (shared cache, so across processes); when the refetch fails the
    cached set is kept.
    """
    if issuer.keys:
        return list(issuer.keys)
    try:
        cache = caches[app_settings.JWKS_CACHE]
        cached = cache.get(_cache_key(issuer.issuer, "set"))
        if refresh and cached is not None:
            if not cache.add(_cache_key(issuer.issuer, "cooldown"), 1,
                             app_settings.JWKS_REFETCH_COOLDOWN):
                return cached  # type: ignore[no-any-return]
        elif cached is not None:
            return cached  # type: ignore[no-any-return]
    except Exception:  # a cache outage must not become a 500
        logger.exception("The JWKS cache is unavailable")
        raise DependencyUnavailable("JWKS cache unavailable") from None
    try:
        keys = fetch_jwks(issuer.jwks_uri)
    except DependencyUnavailable:
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        raise
    try:
        cache.set(_cache_key(issuer.issuer, "set"), keys, app_settings.JWKS_CACHE_SECONDS)
    except Exception:
        logger.exception("The JWKS cache is unavailable")
    return keys


@lru_cache(maxsize=256)
def _pyjwk(jwk_json: str, algorithm: str) -> jwt.PyJWK:
    return jwt.PyJWK(json.loads(jwk_json), algorithm=algorithm)


def _select_key(keys: list[dict[str, Any]], kid: str | None) -> dict[str, Any] | None:
    signing = [k for k in keys if k.get("use", "sig") == "sig"]
    if kid is None:
        return signing[0] if len(signing) == 1 else None
    for key in signing:
        if key.get("kid") == kid:
            return key
    return None


# -- the scheme ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    """What :meth:`ApiAuthentication.refuse` needs to attribute a refusal to a user."""

    owner: Any
    public_id: str


class JWTAuthentication(ApiAuthentication):
    """``Authorization: Bearer <RFC 9068 JWT access token>``."""

    scheme: ClassVar[str] = "jwt"
    www_authenticate_scheme: ClassVar[str] = "Bearer"
    keyword: ClassVar[str] = "bearer"

    def challenge(self, request: HttpRequest) -> str:
        challenge = super().challenge(request)
        if getattr(request, "_apiauth_jwt_refused", False):
            challenge += ', error="invalid_token"'  # RFC 6750 §3.1
        return challenge

    def refuse(self, request: HttpRequest, refused: Refused, *, now: Any = None) -> None:
        try:
            request._apiauth_jwt_refused = True  # type: ignore[attr-defined]
        except AttributeError:  # pragma: no cover - exotic request objects
            pass
        super().refuse(request, refused, now=now)

    def get_token(self, request: HttpRequest) -> str | None:
        """The bearer JWT, or ``None`` when the request does not send one."""
        header = request.META.get("HTTP_AUTHORIZATION", "")
        word, _sep, rest = header.partition(" ")
        if word.lower() != self.keyword:
            return None
        token = rest.strip()
        if len(token) > app_settings.JWT_MAX_TOKEN_BYTES:
            # Bounded before any parsing, shape check included.
            raise Refused(reasons.MALFORMED, detail={"problem": "too long", "length": len(token)})
        if not _JWS_SHAPE.fullmatch(token):
            return None  # an opaque bearer token: another class's business
        return token

    def authenticate(self, request: Any) -> tuple[Any, Principal] | None:
        now = timezone.now()
        try:
            token = self.get_token(request)
        except Refused as refused:
            self.refuse(request, refused, now=now)
        if token is None:
            return None
        try:
            user, principal, identity = self.verify_token(token, now)
            self.touch_identity(identity, now)
        except Refused as refused:
            self.refuse(request, refused, now=now)
        except (DatabaseError, DependencyUnavailable):
            self.unavailable(request, now=now)
        except exceptions.APIException:
            raise
        except Exception:
            self.internal_error(request, now=now)
        self.succeed(request, user, principal, now)
        return user, principal

    # -- verification ----------------------------------------------------------

    def verify_token(self, token: str, now: Any) -> tuple[Any, Principal, ExternalIdentity | None]:
        header_b64, payload_b64, _signature = token.split(".")
        try:
            header = _b64_json(header_b64)
            unverified = _b64_json(payload_b64)
        except (ValueError, binascii.Error, RecursionError):
            raise Refused(reasons.MALFORMED, detail={"problem": "undecodable segment"}) from None
        if not isinstance(header, dict) or not isinstance(unverified, dict):
            raise Refused(reasons.MALFORMED, detail={"problem": "not a JSON object"})
        alg, kid, iss = header.get("alg"), header.get("kid"), unverified.get("iss")
        facts = {"alg": str(alg)[:20], "iss": str(iss)[:255]}
        if "crit" in header:
            raise Refused(reasons.MALFORMED, detail={**facts, "problem": "crit header"})
        if not isinstance(alg, str) or alg.lower() == "none":
            raise Refused(reasons.DISALLOWED_ALGORITHM, detail=facts)
        issuer = configured_issuers().get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise Refused(reasons.UNTRUSTED_ISSUER, detail=facts)
        if alg not in issuer.algorithms:
            raise Refused(reasons.DISALLOWED_ALGORITHM, detail=facts)
        typ = header.get("typ")
        if not isinstance(typ, str) or _media_type(typ) != issuer.typ:
            raise Refused(reasons.MALFORMED, detail={**facts, "problem": "typ", "typ": str(typ)[:40]})
        if kid is not None and not isinstance(kid, str):
            raise Refused(reasons.MALFORMED, detail={**facts, "problem": "kid"})
        if kid is not None:
            facts["kid"] = kid[:100]
        key = self.find_key(issuer, kid, alg, facts)
        claims = self.decode(token, key, alg, issuer, facts)
        for name in ("sub", "client_id", "jti"):
            if not isinstance(claims[name], str) or not claims[name]:
                raise Refused(reasons.MALFORMED, detail={**facts, "problem": f"{name} not a string"})
        if not all(isinstance(claims[n], int | float) and not isinstance(claims[n], bool)
                   for n in ("exp", "iat")):
            raise Refused(reasons.MALFORMED, detail={**facts, "problem": "exp/iat not numbers"})
        lifetime = claims["exp"] - claims["iat"]
        if lifetime > issuer.max_lifetime:
            raise Refused(reasons.MALFORMED, credential_id=claims["jti"], detail={
                **facts, "problem": "lifetime", "lifetime": lifetime, "max_lifetime": issuer.max_lifetime,
            })
        user, identity = self.resolve_user(issuer, claims, facts)
        if not user.is_active:
            raise Refused(reasons.INACTIVE_OWNER, credential=_Token(user, claims["jti"]),
                          detail={**facts, "sub": claims["sub"][:255]})
        principal = Principal(
            scheme=self.scheme, credential=None, credential_id=claims["jti"],
            scopes=self.get_scopes(claims), claims=dict(claims),
        )
        return user, principal, identity

    def find_key(self, issuer: Issuer, kid: str | None, alg: str, facts: dict[str, Any]) -> jwt.PyJWK:
        """The issuer's key for ``kid``: never a key named by the token itself
        (``jku``, ``x5u``, ``jwk``, ``x5c`` are ignored)."""
        jwk = _select_key(issuer_keys(issuer), kid)
        if jwk is None and issuer.jwks_uri and kid is not None:
            jwk = _select_key(issuer_keys(issuer, refresh=True), kid)  # key rotation
        if jwk is None:
            raise Refused(reasons.BAD_SIGNATURE, detail={**facts, "problem": "unknown kid"})
        if jwk.get("alg") not in (None, alg):
            # RFC 7517 §4.4: the key is meant for another algorithm.
            raise Refused(reasons.DISALLOWED_ALGORITHM, detail={**facts, "problem": "key alg"})
        try:
            return _pyjwk(json.dumps(jwk, sort_keys=True), alg)
        except jwt.PyJWTError:
            # E.g. an HMAC alg with an RSA key (key confusion), or a bad JWK.
            raise Refused(reasons.BAD_SIGNATURE, detail={**facts, "problem": "unusable key"}) from None

    def decode(self, token: str, key: jwt.PyJWK, alg: str, issuer: Issuer,
               facts: dict[str, Any]) -> dict[str, Any]:
        try:
            return jwt.decode(
                token, key=key, algorithms=[alg], audience=list(issuer.audience),
                issuer=issuer.issuer, leeway=issuer.leeway,
                options={"require": REQUIRED_CLAIMS, "verify_signature": True},
            )
        except jwt.ExpiredSignatureError:
            reason = reasons.EXPIRED
        except jwt.InvalidAudienceError:
            reason = reasons.BAD_AUDIENCE
        except jwt.InvalidIssuerError:
            reason = reasons.UNTRUSTED_ISSUER
        except jwt.ImmatureSignatureError:
            reason = reasons.NOT_YET_VALID
        except jwt.MissingRequiredClaimError as exc:
            raise Refused(reasons.MALFORMED, detail={**facts, "missing_claim": exc.claim}) from None
        except jwt.PyJWTError:  # InvalidSignatureError, DecodeError and the rest
            reason = reasons.BAD_SIGNATURE
        raise Refused(reason, detail=facts)

    def resolve_user(self, issuer: Issuer, claims: dict[str, Any],
                     facts: dict[str, Any]) -> tuple[Any, ExternalIdentity | None]:
        identity = (ExternalIdentity.objects.select_related("user")
                    .filter(issuer=issuer.issuer, subject=claims["sub"]).first())
        if identity is not None:
            return identity.user, identity
        if claims["sub"] == claims["client_id"] and issuer.client_credentials_user:
            user_model = get_user_model()
            user = user_model._default_manager.filter(
                **{user_model.USERNAME_FIELD: issuer.client_credentials_user}
            ).first()
            if user is not None:
                return user, None
            logger.error("client_credentials_user %r of issuer %r does not exist",
                         issuer.client_credentials_user, issuer.issuer)
        raise Refused(reasons.UNKNOWN_CREDENTIAL, credential_id=claims["jti"],
                      detail={**facts, "sub": claims["sub"][:255]})

    def get_scopes(self, claims: dict[str, Any]) -> frozenset[str]:
        """``scope`` (space-separated, RFC 9068 §2.2.3) or ``scp`` (list or string)."""
        value = claims.get("scope")
        if value is None:
            value = claims.get("scp")
        if isinstance(value, str):
            return frozenset(value.split())
        if isinstance(value, list):
            return frozenset(s for s in value if isinstance(s, str) and s)
        return frozenset()

    def touch_identity(self, identity: ExternalIdentity | None, now: Any) -> None:
        """``last_seen_at``, written at most once per ``APIAUTH_LAST_USED_INTERVAL``."""
        if identity is None:
            return
        interval: timedelta = app_settings.LAST_USED_INTERVAL
        if identity.last_seen_at is not None and identity.last_seen_at > now - interval:
            return
        ExternalIdentity.objects.filter(pk=identity.pk).filter(
            Q(last_seen_at__isnull=True) | Q(last_seen_at__lte=now - interval)
        ).update(last_seen_at=now)
