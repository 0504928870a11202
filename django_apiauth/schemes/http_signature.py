"""RFC 9421 HTTP Message Signatures, with RFC 9530 ``Content-Digest``.

The RFC mechanics (signature base, structured fields, algorithms, digest)
are the ``http-message-signatures`` library's. This module adds the policy
the RFC leaves to the verifier (§7 security considerations):

* exactly one signature per request, with a ``keyid`` and a ``created`` time
  within ``APIAUTH_SIGNATURE_MAX_SKEW`` seconds (default 300) of the server
  clock; ``expires`` honoured;
* required coverage: ``@method``; ``@target-uri`` or ``@authority`` +
  ``@path`` + ``@query``; ``content-digest`` whenever the request has a body,
  whose digest is checked against the exact body bytes;
* the algorithm is the credential's, never the one a client names (§7.3.6);
* replay protection in the shared cache: a ``nonce`` is accepted once per key
  within the window, and a signature value is never accepted twice.

Lookup, usability, last-used and audit are the core's.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from functools import cache
from typing import Any, ClassVar

import http_sf
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from django.http import HttpRequest
from http_message_signatures import HTTPMessageVerifier, HTTPSignatureKeyResolver, algorithms
from http_message_signatures.exceptions import HTTPMessageSignaturesException, InvalidSignature

from ..app_settings import app_settings
from ..core import reasons, replay
from ..core.authentication import (
    CredentialAuthentication,
    DependencyUnavailable,
    Presented,
    Refused,
)
from ..core.encryption import DecryptionError
from ..core.models import AbstractCredential
from ..models import HmacSecret

ALGORITHMS: dict[str, type[algorithms.HTTPSignatureAlgorithm]] = {
    "hmac-sha256": algorithms.HMAC_SHA256,
    "ed25519": algorithms.ED25519,
    "ecdsa-p256-sha256": algorithms.ECDSA_P256_SHA256,
}
TARGET_COMPONENTS = ("@target-uri",)
SPLIT_TARGET_COMPONENTS = ("@authority", "@path", "@query")
_DUMMY_KEY = b"\0" * 32


class _FixedKey(HTTPSignatureKeyResolver):
    """The key was already found by the core lookup; hand it to the verifier."""

    def __init__(self, key: Any) -> None:
        self.key = key

    def resolve_public_key(self, key_id: str) -> Any:
        return self.key

    def resolve_private_key(self, key_id: str) -> Any:  # pragma: no cover - never signs
        raise NotImplementedError


class _Message:
    """The request as the library sees it: method, absolute URL, header lines."""

    def __init__(self, request: HttpRequest) -> None:
        self.method = request.method
        self.url = request.build_absolute_uri()
        headers: dict[str, str] = {}
        for name, value in request.META.items():
            if name.startswith("HTTP_"):
                headers[name[5:].replace("_", "-").lower()] = value
        for name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if request.META.get(name):
                headers[name.replace("_", "-").lower()] = request.META[name]
        self.headers = headers


def _component_name(item: Any) -> str | None:
    value = item[0] if isinstance(item, tuple) else item
    return value if isinstance(value, str) else None


class HttpSignatureAuthentication(CredentialAuthentication):
    """DRF authentication class for RFC 9421 signed requests.

    Customise by subclassing: ``model`` (a subclass of ``AbstractHmacSecret``),
    ``required_components`` (always required, besides the target and digest).
    """

    scheme: ClassVar[str] = "hmac"
    www_authenticate_scheme: ClassVar[str] = "Signature"
    model: ClassVar[type[AbstractCredential]] = HmacSecret
    bad_proof_reason: ClassVar[str] = reasons.BAD_SIGNATURE
    required_components: ClassVar[tuple[str, ...]] = ("@method",)

    def extract(self, request: HttpRequest) -> Presented | None:
        meta = request.META
        signature_input = meta.get("HTTP_SIGNATURE_INPUT")
        signature = meta.get("HTTP_SIGNATURE")
        if signature_input is None and signature is None:
            return None
        if not signature_input or not signature:
            raise Refused(reasons.MALFORMED, client_message=(
                "Send both the Signature-Input and the Signature header (RFC 9421)."
            ))
        limit = app_settings.SIGNATURE_MAX_HEADER_LENGTH
        if len(signature_input) > limit or len(signature) > limit:
            raise Refused(reasons.MALFORMED, detail={"length": max(len(signature_input), len(signature))})
        try:
            parsed = http_sf.parse(signature_input.encode("latin-1"), tltype="dictionary")
        except Exception:  # the parser raises several types on malformed input
            raise Refused(reasons.MALFORMED, client_message="Signature-Input is not a valid "
                          "structured-field dictionary (RFC 8941).") from None
        if len(parsed) != 1:
            raise Refused(reasons.AMBIGUOUS, detail={"labels": len(parsed)}, client_message=(
                "Send exactly one signature per request."
            ))
        label, (members, params) = next(iter(parsed.items()))
        if not isinstance(members, list):
            raise Refused(reasons.MALFORMED, client_message="Signature-Input must be an inner list.")
        key_id = params.get("keyid")
        if not isinstance(key_id, str) or not 0 < len(key_id) <= 64:
            raise Refused(reasons.MALFORMED, client_message="The signature needs a keyid parameter.")
        created = params.get("created")
        if type(created) is not int:
            raise Refused(reasons.MALFORMED, credential_id=key_id, client_message=(
                "The signature needs an integer created parameter."
            ))
        now = int(time.time())
        skew = app_settings.SIGNATURE_MAX_SKEW
        if abs(now - created) > skew:
            raise Refused(reasons.CLOCK_SKEW, credential_id=key_id,
                          detail={"created": created, "server_time": now})
        expires = params.get("expires")
        if expires is not None and (type(expires) is not int or expires <= now):
            raise Refused(reasons.SIGNATURE_EXPIRED, credential_id=key_id,
                          detail={"expires": expires if type(expires) is int else None})
        alg = params.get("alg")
        if alg is not None and alg not in ALGORITHMS:
            raise Refused(reasons.DISALLOWED_ALGORITHM, credential_id=key_id,
                          detail={"alg": str(alg)[:32]})
        nonce = params.get("nonce")
        if nonce is not None and (not isinstance(nonce, str) or not 0 < len(nonce) <= 256):
            raise Refused(reasons.MALFORMED, credential_id=key_id,
                          client_message="The nonce parameter must be a short string.")
        if nonce is None and app_settings.SIGNATURE_REQUIRE_NONCE:
            raise Refused(reasons.MALFORMED, credential_id=key_id,
                          client_message="The signature needs a nonce parameter.")
        covered = {name for name in map(_component_name, members) if name}
        missing = [c for c in self.required_components if c not in covered]
        if not set(TARGET_COMPONENTS) <= covered and not set(SPLIT_TARGET_COMPONENTS) <= covered:
            missing.append("@target-uri")
        body = _body(request)
        if body and "content-digest" not in covered:
            missing.append("content-digest")
        if missing:
            raise Refused(reasons.MISSING_COMPONENTS, credential_id=key_id,
                          detail={"missing": missing}, client_message=(
                              "The signature must cover: " + ", ".join(missing) + "."
                              + (" Requests with a body need a Content-Digest header "
                                 "(RFC 9530) covered by the signature."
                                 if "content-digest" in missing else "")
                          ))
        return Presented(
            lookup_value=key_id,
            proof={"label": label, "nonce": nonce, "alg": alg, "body": body},
            claims={"label": label, "created": created, "covered": sorted(covered),
                    **({"nonce": True} if nonce else {})},
        )

    def verify(self, request: HttpRequest, presented: Presented,
               credential: AbstractCredential | None) -> bool:
        proof = presented.proof
        if credential is None:
            # Same library work with a throwaway key of the algorithm the client
            # names: no timing oracle on which key ids exist.
            name = proof["alg"] if proof["alg"] in ALGORITHMS else "hmac-sha256"
            algorithm, key = ALGORITHMS[name], _dummy_key(name)
        else:
            # The credential's algorithm, never the client's (§7.3.6). A client
            # naming another one fails verification like a wrong signature,
            # after the same work, so a mismatch does not reveal the key id.
            algorithm = ALGORITHMS[credential.algorithm]  # type: ignore[attr-defined]
            try:
                key = credential.verification_key()  # type: ignore[attr-defined]
            except DecryptionError:
                # The encryption key was removed before re-encryption: an
                # operator error, not the client's. Fail closed, loudly.
                raise DependencyUnavailable("undecryptable secret") from None
        verifier = HTTPMessageVerifier(signature_algorithm=algorithm, key_resolver=_FixedKey(key))
        verifier.max_clock_skew = timedelta(seconds=app_settings.SIGNATURE_MAX_SKEW)
        try:
            [result] = verifier.verify(_Message(request), max_age=None, body=proof["body"])
        except InvalidSignature as exc:
            if credential is not None and proof["alg"] not in (None, algorithm.algorithm_id):
                raise Refused(reasons.DISALLOWED_ALGORITHM, detail={"alg": proof["alg"]}) from None
            if credential is not None and "Content-Digest" in str(exc):
                raise Refused(reasons.BAD_DIGEST, client_message=(
                    "Content-Digest does not match the request body."
                )) from None
            return False
        except (HTTPMessageSignaturesException, ValueError, TypeError):
            return False
        if credential is None:
            return False
        window = 2 * app_settings.SIGNATURE_MAX_SKEW
        key_id = presented.lookup_value
        if proof["nonce"] is not None and not replay.first_use(f"nonce:{key_id}", proof["nonce"], window):
            raise Refused(reasons.REPLAYED, detail={"by": "nonce"})
        # Keyed on what was signed (the signature base: covered values and
        # parameters), not on the signature bytes or header: relabelling the
        # header or re-encoding a malleable (ECDSA) signature is still a replay.
        signed = json.dumps(
            [sorted(result.covered_components.items()), sorted(result.parameters.items())],
            default=str,
        )
        if not replay.first_use(f"signature:{key_id}", signed, window):
            raise Refused(reasons.REPLAYED, detail={"by": "signature"})
        return True


@cache
def _dummy_key(algorithm: str) -> Any:
    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.generate().public_key()
    if algorithm == "ecdsa-p256-sha256":
        return ec.generate_private_key(ec.SECP256R1()).public_key()
    return _DUMMY_KEY


def _body(request: Any) -> bytes:
    django_request = getattr(request, "_request", request)
    return django_request.body or b""
