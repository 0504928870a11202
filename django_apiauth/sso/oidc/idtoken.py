"""ID token validation (OpenID Connect Core 1.0 §3.1.3.7) with PyJWT.

Checks, each refusal with its stable audit reason (403):

1. size and shape before any decoding; a ``crit`` header is refused → ``malformed``;
2. ``alg`` in the provider's allow-list; ``none`` never is → ``disallowed_algorithm``;
3. the key: for ``HS*`` (only when listed) the client secret (§10.1); else the
   OP's JWK chosen by ``kid`` from the discovered ``jwks_uri`` only (``jku``,
   ``x5u``, ``jwk``, ``x5c`` header parameters are ignored) → ``bad_signature``;
4. PyJWT verifies the signature with exactly that algorithm and ``iss``
   (exact), ``aud`` (contains our ``client_id``), ``exp``, ``iat``, requiring
   ``iss sub aud exp iat`` → ``untrusted_issuer``, ``bad_audience``,
   ``expired``, ``not_yet_valid``, ``bad_signature``, ``malformed``;
5. several audiences need ``azp`` = our ``client_id``; an ``azp`` present
   must be our ``client_id`` → ``bad_audience``;
6. ``iat`` no older than ``APIAUTH_OIDC_MAX_ID_TOKEN_AGE`` → ``expired``;
7. ``nonce`` equals the one this browser's sign-in sent (constant time) →
   ``nonce_mismatch``;
8. ``at_hash``, when present, matches the access token (§3.1.3.8) → ``bad_signature``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from typing import Any

import jwt

from ...app_settings import app_settings
from ...core import reasons
from ..identity import SsoRefused
from . import client
from .models import HMAC_ALGORITHMS, OidcProvider

MAX_ID_TOKEN_BYTES = 16 * 1024
REQUIRED_CLAIMS = ["iss", "sub", "aud", "exp", "iat"]
_JWS_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_AT_HASH = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}


def _refused(reason: str, facts: dict[str, Any], **extra: Any) -> SsoRefused:
    return SsoRefused(reason, status=403, detail={**facts, **extra})


def _b64_json(segment: str) -> Any:
    return json.loads(base64.urlsafe_b64decode((segment + "=" * (-len(segment) % 4)).encode("ascii")))


def validate_id_token(
    provider: OidcProvider,
    metadata: dict[str, Any],
    id_token: Any,
    *,
    nonce: str,
    access_token: str | None = None,
) -> dict[str, Any]:
    """The verified claims of ``id_token``, or :class:`SsoRefused`.

    Raises :class:`~.client.ProviderUnreachable` when the JWKS cannot be fetched.
    """
    facts: dict[str, Any] = {"step": "id_token"}
    if not isinstance(id_token, str) or len(id_token) > MAX_ID_TOKEN_BYTES \
            or not _JWS_SHAPE.fullmatch(id_token):
        raise _refused(reasons.MALFORMED, facts, problem="not a compact JWS")
    try:
        header = _b64_json(id_token.split(".", 1)[0])
    except (ValueError, UnicodeError, RecursionError):
        raise _refused(reasons.MALFORMED, facts, problem="undecodable header") from None
    if not isinstance(header, dict):
        raise _refused(reasons.MALFORMED, facts, problem="header not an object")
    alg, kid = header.get("alg"), header.get("kid")
    facts["alg"] = str(alg)[:20]
    if "crit" in header:
        raise _refused(reasons.MALFORMED, facts, problem="crit header")
    if not isinstance(alg, str) or alg.lower() == "none" or alg not in provider.algorithm_list:
        raise _refused(reasons.DISALLOWED_ALGORITHM, facts)
    if kid is not None and not isinstance(kid, str):
        raise _refused(reasons.MALFORMED, facts, problem="kid")
    key: Any
    if alg in HMAC_ALGORITHMS:
        secret = provider.client_secret()
        if not secret:
            raise _refused(reasons.DISALLOWED_ALGORITHM, facts, problem="no client secret")
        key = secret.encode()
    else:
        jwk = client.signing_key(provider, metadata, kid)
        if jwk is None:
            raise _refused(reasons.BAD_SIGNATURE, facts, problem="unknown kid", kid=str(kid)[:100])
        if jwk.get("alg") not in (None, alg):
            raise _refused(reasons.DISALLOWED_ALGORITHM, facts, problem="key is for another alg")
        try:
            key = jwt.PyJWK(jwk, algorithm=alg)
        except jwt.PyJWTError:
            raise _refused(reasons.BAD_SIGNATURE, facts, problem="unusable key") from None
    try:
        claims = jwt.decode(
            id_token, key=key, algorithms=[alg], audience=provider.client_id, issuer=provider.issuer,
            leeway=app_settings.OIDC_LEEWAY,
            options={"require": REQUIRED_CLAIMS, "verify_signature": True, "strict_aud": False},
        )
    except jwt.ExpiredSignatureError:
        raise _refused(reasons.EXPIRED, facts) from None
    except jwt.InvalidAudienceError:
        raise _refused(reasons.BAD_AUDIENCE, facts) from None
    except jwt.InvalidIssuerError:
        raise _refused(reasons.UNTRUSTED_ISSUER, facts) from None
    except jwt.ImmatureSignatureError:
        raise _refused(reasons.NOT_YET_VALID, facts) from None
    except jwt.MissingRequiredClaimError as exc:
        raise _refused(reasons.MALFORMED, facts, missing_claim=exc.claim) from None
    except jwt.InvalidIssuedAtError:
        raise _refused(reasons.MALFORMED, facts, problem="iat") from None
    except jwt.exceptions.InvalidSubjectError:
        raise _refused(reasons.MALFORMED, facts, problem="sub") from None
    except jwt.PyJWTError:  # InvalidSignatureError, DecodeError, bad iat type, …
        raise _refused(reasons.BAD_SIGNATURE, facts) from None
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > 255:
        raise _refused(reasons.MALFORMED, facts, problem="sub")
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    azp = claims.get("azp")
    if (len(audiences) > 1 or azp is not None) and azp != provider.client_id:
        raise _refused(reasons.BAD_AUDIENCE, facts, problem="azp")
    iat = claims["iat"]
    if not isinstance(iat, int | float) or isinstance(iat, bool):
        raise _refused(reasons.MALFORMED, facts, problem="iat")
    if time.time() - iat > app_settings.OIDC_MAX_ID_TOKEN_AGE + app_settings.OIDC_LEEWAY:
        raise _refused(reasons.EXPIRED, facts, problem="iat too old")
    token_nonce = claims.get("nonce")
    if not isinstance(token_nonce, str) or not hmac.compare_digest(token_nonce.encode(), nonce.encode()):
        raise _refused(reasons.NONCE_MISMATCH, facts, problem="missing" if token_nonce is None else "wrong")
    at_hash = claims.get("at_hash")
    if at_hash is not None and access_token is not None:
        if not isinstance(at_hash, str) or not hmac.compare_digest(
            at_hash.encode(), _at_hash(alg, access_token).encode()
        ):
            raise _refused(reasons.BAD_SIGNATURE, facts, problem="at_hash")
    return claims


def _at_hash(alg: str, access_token: str) -> str:
    """Core 1.0 §3.1.3.6: left half of the hash of the access token, base64url."""
    digest_fn = hashlib.sha512 if alg == "EdDSA" else _AT_HASH.get(alg[-3:], hashlib.sha256)
    digest = digest_fn(access_token.encode("ascii", "replace")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).decode().rstrip("=")
