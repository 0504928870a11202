"""JWT bearer access tokens (RFC 9068) from configured external issuers.

``Authorization: Bearer <jwt>`` (RFC 6750 §2.1; the scheme word is
case-insensitive). A bearer token that is not shaped like a JWS (three
base64url segments) is not ours: ``None``, so that an opaque-token class later
in ``authentication_classes`` can claim it.

Checks, in order, each refusal audited with its stable reason:

1. size, before any decoding (``APIAUTH_JWT_MAX_TOKEN_BYTES``) → ``malformed``;
2. unverified header and payload must be JSON objects without duplicate
   member names, ``kid`` a string of at most 256 characters; a ``crit``
   header is refused (we understand no extension) → ``malformed``;
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
8. ``aud`` must have one value unless the issuer allows ``multiple_audiences``
   → ``bad_audience``; ``exp - iat`` must not exceed the issuer's
   ``max_lifetime`` → ``malformed``;
9. a ``cnf`` claim binds the token to a client certificate (RFC 8705 §3):
   the request must carry the same certificate (``x5t#S256``), taken as mTLS
   authentication takes it → ``certificate_binding_mismatch``;
10. the deny-list (:mod:`django_apiauth.oauth2.denylist`): a revoked ``jti``
    → ``revoked``; the shared cache unreachable → 503;
11. the user: :class:`~django_apiauth.models.ExternalIdentity` ``(iss, sub)``,
    else, for a ``local`` issuer (this project's django-oauth-toolkit), the
    user whose primary key is ``sub``; for a client-credentials token
    (``sub == client_id``) the issuer's ``client_credentials_user``, or for a
    ``local`` issuer the OAuth application's owner; else
    ``unknown_credential``. An inactive user → ``inactive_owner``.

No database query in steady state: a token whose signature and claims were
verified is remembered in this process (by its exact string, until its
``exp`` and at most ``APIAUTH_JWKS_CACHE_SECONDS``; the expiry, the binding
and the deny-list are still checked on every request), and a subject's user is
remembered in this process for ``APIAUTH_JWT_USER_CACHE_SECONDS``. Saving or
deleting a user, an ``ExternalIdentity`` or an OAuth application writes a new
stamp into the shared cache; every request reads the stamps in the same
round trip as the deny-list (``get_many``), so a deactivated user is refused
at once in every process.

Success sets ``request.auth`` to ``Principal(scheme="jwt", credential=None,
credential_id=<jti>, scopes=<scope or scp>, claims=<verified claims>)``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Any, ClassVar

import jwt
import requests
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.signals import setting_changed
from django.db import DatabaseError, transaction
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone
from rest_framework import exceptions

from ..app_settings import app_settings
from ..core import cachestore, reasons
from ..core.authentication import (
    ApiAuthentication,
    DependencyUnavailable,
    Refused,
)
from ..core.principal import Principal
from ..models import ExternalIdentity
from ..oauth2 import denylist

logger = logging.getLogger("django_apiauth")

DEFAULT_ALGORITHMS = ("RS256", "ES256", "EdDSA")
REQUIRED_CLAIMS = ["exp", "iat", "sub", "iss", "aud", "client_id", "jti"]
MAX_JWKS_BYTES = 512 * 1024
MAX_KID_LENGTH = 256
#: Bounds of the process-local caches (cleared whole when full).
VERIFIED_CACHE_SIZE = 4096
SUBJECT_CACHE_SIZE = 10000
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
    local: bool = False
    multiple_audiences: bool = False

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
            local=bool(entry.get("local", False)),
            multiple_audiences=bool(entry.get("multiple_audiences", False)),
        )


_ISSUERS: dict[str, dict[str, Issuer]] = {}


def configured_issuers() -> dict[str, Issuer]:
    """The usable issuers by ``iss`` (parsed once per settings change)."""
    try:
        return _ISSUERS["issuers"]
    except KeyError:
        issuers = _ISSUERS["issuers"] = parse_issuers()
        return issuers


def parse_issuers() -> dict[str, Issuer]:
    """Parse ``APIAUTH_JWT_ISSUERS``; an entry without audience or keys is skipped (logged)."""
    issuers: dict[str, Issuer] = {}
    for entry in app_settings.JWT_ISSUERS:
        try:
            issuer = Issuer.from_setting(entry)
        except (KeyError, TypeError, ValueError):
            logger.error("APIAUTH_JWT_ISSUERS entry without an 'issuer' is ignored")
            continue
        if not issuer.audience or not (issuer.jwks_uri or issuer.keys or issuer.local):
            logger.error("APIAUTH_JWT_ISSUERS entry %r needs 'audience' and 'jwks_uri' or 'keys'; "
                         "ignored", issuer.issuer)
            continue
        issuers[issuer.issuer] = issuer
    return issuers


def _media_type(value: str) -> str:
    value = value.strip().lower()
    return value.removeprefix("application/")


class DuplicateMember(ValueError):
    """A JSON object repeats a member name (RFC 7515 §5.2, RFC 7519 §4: reject)."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise DuplicateMember("duplicate member")
    return obj


def _b64_json(segment: str) -> Any:
    padded = segment + "=" * (-len(segment) % 4)
    return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")), object_pairs_hook=_no_duplicates)


# -- key sets ----------------------------------------------------------------


def _cache_key(issuer: str, kind: str, jwks_uri: str = "") -> str:
    # The URI is part of the key: two users of one issuer (JWT bearer tokens,
    # OIDC sign-in) configured with different JWKS URIs never mix their sets.
    name = f"{issuer}\0{jwks_uri}" if jwks_uri else issuer
    return f"apiauth:jwks:{kind}:{hashlib.sha256(name.encode()).hexdigest()[:40]}"


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
    if issuer.local and not issuer.jwks_uri:
        return local_provider_keys()
    try:
        cache = cachestore.cache(app_settings.JWKS_CACHE)
        cached = cache.get(_cache_key(issuer.issuer, "set", issuer.jwks_uri))
        if refresh and cached is not None:
            if not cache.add(_cache_key(issuer.issuer, "cooldown", issuer.jwks_uri), 1,
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
        cache.set(_cache_key(issuer.issuer, "set", issuer.jwks_uri), keys,
                  app_settings.JWKS_CACHE_SECONDS)
    except Exception:
        logger.exception("The JWKS cache is unavailable")
    return keys


def local_provider_keys() -> list[dict[str, Any]]:
    """The public JWKs of this project's django-oauth-toolkit, read from its
    settings (active and inactive OIDC keys), exactly as its JWKS endpoint
    publishes them: a ``local`` issuer without ``jwks_uri`` needs no HTTP
    request to itself."""
    from oauth2_provider.settings import oauth2_settings

    pems = (oauth2_settings.OIDC_RSA_PRIVATE_KEY, *oauth2_settings.OIDC_RSA_PRIVATE_KEYS_INACTIVE)
    return list(_public_jwks(tuple(p for p in pems if p)))


@lru_cache(maxsize=8)
def _public_jwks(pems: tuple[str, ...]) -> tuple[dict[str, Any], ...]:
    from oauth2_provider.utils import jwk_from_pem

    keys = []
    for pem in pems:
        key = jwk_from_pem(pem)
        public = json.loads(key.export_public())
        keys.append({"alg": "RS256", "use": "sig", "kid": key.thumbprint(), **public})
    return tuple(keys)


@lru_cache(maxsize=256)
def _pyjwk(jwk_json: str, algorithm: str) -> jwt.PyJWK:
    return jwt.PyJWK(json.loads(jwk_json), algorithm=algorithm)


def select_key(keys: list[dict[str, Any]], kid: str | None) -> dict[str, Any] | None:
    """The signing JWK named ``kid`` (without a ``kid``: the only signing key, if one).

    Shared with OpenID Connect sign-in (:mod:`django_apiauth.sso.oidc.client`).
    """
    signing = [k for k in keys if isinstance(k, dict) and k.get("use", "sig") == "sig"]
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
            user, principal, identity = self.verify_token(token, now, request)
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

    def verify_token(self, token: str, now: Any,
                     request: HttpRequest | None = None) -> tuple[Any, Principal, ExternalIdentity | None]:
        """Verify ``token`` (or reuse this process's verification of it), then
        the binding, the deny-list and the user, which are checked every time."""
        timestamp = now.timestamp()
        verified = _VERIFIED.get(token)
        issuer = configured_issuers().get(verified.issuer.issuer) if verified is not None else None
        if verified is not None and issuer is verified.issuer and timestamp < verified.valid_until:
            claims, facts = verified.claims, verified.facts
            if timestamp >= claims["exp"] + issuer.leeway:  # as PyJWT decides it
                raise Refused(reasons.EXPIRED, credential_id=claims["jti"], detail=facts)
        else:
            issuer, claims, facts = self.verify_signature_and_claims(token)
            _remember_verified(token, _Verified(
                issuer=issuer, claims=claims, facts=facts,
                valid_until=min(float(claims["exp"]) + issuer.leeway,
                                time.time() + app_settings.JWKS_CACHE_SECONDS),
            ))
        if "cnf" in claims:
            self.check_binding(request, claims, facts)
        user, identity = self.cached_user(issuer, claims, facts)
        if not user.is_active:
            raise Refused(reasons.INACTIVE_OWNER, credential=_Token(user, claims["jti"]),
                          detail={**facts, "sub": claims["sub"][:255]})
        principal = Principal(
            scheme=self.scheme, credential=None, credential_id=claims["jti"],
            scopes=self.get_scopes(claims), claims=dict(claims),
        )
        return user, principal, identity

    def verify_signature_and_claims(self, token: str) -> tuple[Issuer, dict[str, Any], dict[str, Any]]:
        """Header, key, signature and RFC 9068 claims: everything that depends
        only on the token and the issuer's configuration and keys."""
        header_b64, payload_b64, _signature = token.split(".")
        try:
            header = _b64_json(header_b64)
            unverified = _b64_json(payload_b64)
        except DuplicateMember:
            raise Refused(reasons.MALFORMED, detail={"problem": "duplicate JSON member"}) from None
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
        if kid is not None and (not isinstance(kid, str) or len(kid) > MAX_KID_LENGTH):
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
        audience = claims["aud"]
        if isinstance(audience, list) and len(audience) != 1 and not issuer.multiple_audiences:
            # A token meant for several services is refused unless the issuer
            # entry allows it: a service it was also meant for could replay it here.
            raise Refused(reasons.BAD_AUDIENCE, credential_id=claims["jti"],
                          detail={**facts, "problem": "several audiences"})
        lifetime = claims["exp"] - claims["iat"]
        if lifetime > issuer.max_lifetime:
            raise Refused(reasons.MALFORMED, credential_id=claims["jti"], detail={
                **facts, "problem": "lifetime", "lifetime": lifetime, "max_lifetime": issuer.max_lifetime,
            })
        return issuer, claims, facts

    def check_binding(self, request: HttpRequest | None, claims: dict[str, Any],
                      facts: dict[str, Any]) -> None:
        """RFC 8705 §3: a ``cnf`` with ``x5t#S256`` requires that certificate on the request.

        The certificate is taken exactly as mTLS authentication takes it (a
        trusted TLS terminator's header or the server's environ). Any other
        confirmation method (``jkt`` of DPoP, ``jwk``) cannot be checked here:
        refused.
        """
        from .client_cert import ClientCertificateAuthentication

        cnf = claims["cnf"]
        expected = cnf.get("x5t#S256") if isinstance(cnf, dict) else None
        if not isinstance(expected, str) or set(cnf) != {"x5t#S256"}:
            raise Refused(reasons.MALFORMED, credential_id=claims["jti"],
                          detail={**facts, "problem": "unsupported cnf"})
        presented = ClientCertificateAuthentication().extract(request) if request is not None else None
        if presented is None:
            raise Refused(reasons.CERT_BINDING_MISMATCH, credential_id=claims["jti"],
                          detail={**facts, "problem": "no client certificate"})
        thumbprint = base64.urlsafe_b64encode(bytes.fromhex(presented.lookup_value)).rstrip(b"=")
        if not hmac.compare_digest(thumbprint, expected.encode("ascii", "replace")):
            raise Refused(reasons.CERT_BINDING_MISMATCH, credential_id=claims["jti"],
                          detail={**facts, "problem": "other certificate",
                                  "fingerprint_sha256": presented.lookup_value})

    def cached_user(self, issuer: Issuer, claims: dict[str, Any],
                    facts: dict[str, Any]) -> tuple[Any, ExternalIdentity | None]:
        """Deny-list check, then the user of ``(iss, sub)``: from this process's
        cache when its stamps are current, else from the database.

        One shared-cache round trip per request reads the deny-list entry and
        the stamps together.
        """
        jti = claims["jti"]
        cache_key = (issuer.issuer, claims["sub"], claims["client_id"])
        entry = _SUBJECTS.get(cache_key)
        deny_key = denylist.key(issuer.issuer, jti)
        keys = [deny_key, _SUBJECTS_STAMP]
        if entry is not None:
            keys.append(_user_stamp_key(entry.user.pk))
        try:
            shared = denylist.cache()
            values = shared.get_many(keys)
        except Exception as exc:
            logger.error("The JWT deny-list cache is unavailable: %s", type(exc).__name__)
            raise DependencyUnavailable("deny-list unavailable") from None
        if values.get(deny_key) is not None:
            raise Refused(reasons.REVOKED, credential_id=jti, detail=facts)
        if (entry is not None
                and entry.subjects_stamp == values.get(_SUBJECTS_STAMP)
                and entry.user_stamp == values.get(_user_stamp_key(entry.user.pk))
                and time.monotonic() < entry.until):
            return entry.user, entry.identity
        user, identity = self.resolve_user(issuer, claims, facts)
        # Read the user's stamp *before* the row we keep, so a change committed
        # in between leaves a stale stamp, not a stale user.
        try:
            user_stamp = shared.get(_user_stamp_key(user.pk))
        except Exception:
            raise DependencyUnavailable("deny-list unavailable") from None
        user = type(user)._default_manager.filter(pk=user.pk).first()
        if user is None:  # deleted in between
            raise Refused(reasons.UNKNOWN_CREDENTIAL, credential_id=jti,
                          detail={**facts, "sub": claims["sub"][:255]})
        if identity is not None:
            identity.user = user
        if len(_SUBJECTS) >= SUBJECT_CACHE_SIZE:
            _SUBJECTS.clear()
        _SUBJECTS[cache_key] = _Subject(
            user=user, identity=identity, subjects_stamp=values.get(_SUBJECTS_STAMP),
            user_stamp=user_stamp, until=time.monotonic() + app_settings.JWT_USER_CACHE_SECONDS,
        )
        return user, identity

    def find_key(self, issuer: Issuer, kid: str | None, alg: str, facts: dict[str, Any]) -> jwt.PyJWK:
        """The issuer's key for ``kid``: never a key named by the token itself
        (``jku``, ``x5u``, ``jwk``, ``x5c`` are ignored)."""
        jwk = select_key(issuer_keys(issuer), kid)
        if jwk is None and issuer.jwks_uri and kid is not None:
            jwk = select_key(issuer_keys(issuer, refresh=True), kid)  # key rotation
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
        """The user of ``(iss, sub)``, from the database (see :meth:`cached_user`)."""
        identity = (ExternalIdentity.objects.select_related("user")
                    .filter(issuer=issuer.issuer, subject=claims["sub"]).first())
        if identity is not None:
            return identity.user, identity
        user_model = get_user_model()
        client_credentials = claims["sub"] == claims["client_id"]
        user = None
        if client_credentials and issuer.local:
            user = self.application_user(claims["client_id"])
        elif client_credentials and issuer.client_credentials_user:
            user = user_model._default_manager.filter(
                **{user_model.USERNAME_FIELD: issuer.client_credentials_user}
            ).first()
            if user is None:
                logger.error("client_credentials_user %r of issuer %r does not exist",
                             issuer.client_credentials_user, issuer.issuer)
        elif issuer.local:
            try:
                user = user_model._default_manager.filter(pk=claims["sub"]).first()
            except (ValueError, TypeError, ValidationError):
                user = None  # not a primary key of this user model
        if user is not None:
            return user, None
        raise Refused(reasons.UNKNOWN_CREDENTIAL, credential_id=claims["jti"],
                      detail={**facts, "sub": claims["sub"][:255]})

    def application_user(self, client_id: str) -> Any:
        """The owner of the local django-oauth-toolkit application ``client_id`` (its service user)."""
        from oauth2_provider.models import get_application_model

        application = (get_application_model().objects.select_related("user")
                       .filter(client_id=client_id).first())
        return application.user if application is not None else None

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
        identity.last_seen_at = now  # the cached instance: no write for another interval


# -- process-local caches and their invalidation --------------------------------


@dataclass(frozen=True, slots=True)
class _Verified:
    """A token whose signature and claims this process verified."""

    issuer: Issuer
    claims: dict[str, Any]
    facts: dict[str, Any]
    valid_until: float


@dataclass(frozen=True, slots=True)
class _Subject:
    """A token subject's user, with the shared stamps current when it was read."""

    user: Any
    identity: ExternalIdentity | None
    subjects_stamp: Any
    user_stamp: Any
    until: float


_VERIFIED: dict[str, _Verified] = {}
_SUBJECTS: dict[tuple[str, str, str], _Subject] = {}
_SUBJECTS_STAMP = "apiauth:jwt:subjects-stamp"


def _user_stamp_key(pk: Any) -> str:
    return f"apiauth:jwt:user-stamp:{pk}"


def _remember_verified(token: str, verified: _Verified) -> None:
    if len(_VERIFIED) >= VERIFIED_CACHE_SIZE:
        _VERIFIED.clear()
    _VERIFIED[token] = verified


def clear_local_caches(**kwargs: Any) -> None:
    """Forget every verified token, parsed issuer and cached user of this process."""
    _VERIFIED.clear()
    _SUBJECTS.clear()
    _ISSUERS.clear()


setting_changed.connect(clear_local_caches, dispatch_uid="apiauth-jwt-settings")


def _stamp(key: str) -> None:
    def write() -> None:
        try:
            denylist.cache().set(key, secrets.token_hex(8), timeout=None)
        except Exception:
            logger.exception("Could not invalidate the JWT user caches (%s); processes may "
                             "reuse the old user for up to APIAUTH_JWT_USER_CACHE_SECONDS", key)

    write()  # now, for this transaction's readers and for tests
    transaction.on_commit(write)  # and after commit, for readers that saw the old row


def invalidate_user(pk: Any) -> None:
    """The user ``pk`` changed: every process re-reads it on its next token."""
    _SUBJECTS.clear()
    _stamp(_user_stamp_key(pk))


def invalidate_subjects() -> None:
    """A subject → user mapping changed (identity, OAuth application): re-resolve all."""
    _SUBJECTS.clear()
    _stamp(_SUBJECTS_STAMP)


def user_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    if instance.pk is not None:
        invalidate_user(instance.pk)


def identity_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    invalidate_subjects()


def connect_signals() -> None:
    """Called by the app's ``ready()``: user and identity changes invalidate the caches."""
    from django.db.models.signals import post_delete, post_save

    user_model = get_user_model()
    post_save.connect(user_changed, sender=user_model, dispatch_uid="apiauth-jwt-user-saved")
    post_delete.connect(user_changed, sender=user_model, dispatch_uid="apiauth-jwt-user-deleted")
    post_save.connect(identity_changed, sender=ExternalIdentity, dispatch_uid="apiauth-jwt-extid-saved")
    post_delete.connect(identity_changed, sender=ExternalIdentity, dispatch_uid="apiauth-jwt-extid-deleted")
