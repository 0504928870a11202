"""Floors: the least a correct check can do, for comparison only.

Issue #3: a bare, hand-written RFC 9421 hmac-sha256 check (FloorHmacAuthentication).
Issue #5: a bare PyJWT RS256 decode (FloorJWTAuthentication, at the end).

The HMAC floor verifies exactly the request shape of the ``sig_hmac_post`` row (one
signature covering ``@method``, ``@target-uri``, ``content-type`` and
``content-digest``) and nothing else: the key is held in memory, there is no
database, no audit row and no replay store. Not a usable authenticator.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any, ClassVar

import http_sf
import jwt
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

COMPONENTS = ["@method", "@target-uri", "content-type", "content-digest"]
MAX_SKEW = 300


def _sf(value: str, kind: str = "dictionary") -> Any:
    return http_sf.parse(value.encode("latin-1"), tltype=kind)


class FloorHmacAuthentication(BaseAuthentication):
    keys: ClassVar[dict[str, bytes]] = {}  # key id -> HMAC secret, filled by run.py
    user: ClassVar[Any] = None  # the user every valid signature stands for (no database)

    def authenticate(self, request: Request) -> tuple[Any, str] | None:
        meta = request.META
        if "HTTP_SIGNATURE_INPUT" not in meta:
            return None
        try:
            [(label, (members, params))] = _sf(meta["HTTP_SIGNATURE_INPUT"]).items()
            signature = _sf(meta["HTTP_SIGNATURE"])[label][0]
            digest = _sf(meta["HTTP_CONTENT_DIGEST"])["sha-256"][0]
            key = self.keys[params["keyid"]]
            ok = (
                [name for name, component_params in members if not component_params] == COMPONENTS
                and abs(int(time.time()) - params["created"]) <= MAX_SKEW
                and hmac.compare_digest(hashlib.sha256(request._request.body).digest(), digest)
            )
            base = "\n".join([
                f'"@method": {request.method}',
                f'"@target-uri": {request.build_absolute_uri()}',
                f'"content-type": {meta["CONTENT_TYPE"]}',
                f'"content-digest": {meta["HTTP_CONTENT_DIGEST"]}',
                f'"@signature-params": {http_sf.ser({label: (members, params)})[len(label) + 1:]}',
            ])
            expected = hmac.new(key, base.encode("ascii"), hashlib.sha256).digest()
            ok = ok and hmac.compare_digest(expected, signature)
        except Exception:  # any malformed or missing part: refused
            ok = False
        if not ok:
            raise AuthenticationFailed("bad signature")
        return self.user, params["keyid"]

    def authenticate_header(self, request: Request) -> str:
        return "Signature"


class FloorJWTAuthentication(BaseAuthentication):
    """The bearer-token floor: a bare PyJWT RS256 decode, for comparison only.

    ``Authorization: Bearer <jwt>`` decoded with the one RSA public key held in
    memory, checking the signature, ``exp``, ``iss`` and ``aud``, and nothing
    else: no key selection by ``kid``, no ``typ``, no user lookup (every valid
    token stands for :attr:`user`), no audit row, no scopes.
    """

    public_key: ClassVar[Any] = None  # filled by run.py
    issuer: ClassVar[str] = ""
    audience: ClassVar[str] = ""
    user: ClassVar[Any] = None

    def authenticate(self, request: Request) -> tuple[Any, dict[str, Any]] | None:
        word, _sep, token = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if word != "Bearer":
            return None
        try:
            claims = jwt.decode(token, self.public_key, algorithms=["RS256"],
                                audience=self.audience, issuer=self.issuer)
        except jwt.PyJWTError:
            raise AuthenticationFailed("bad token") from None
        return self.user, claims

    def authenticate_header(self, request: Request) -> str:
        return "Bearer"
