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

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cache, lru_cache
from typing import Any, ClassVar, NamedTuple
from urllib.parse import urlsplit

import http_sf
from cryptography.exceptions import InvalidSignature as InvalidSignatureError
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from django.core.exceptions import DisallowedHost
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest
from django.utils.encoding import iri_to_uri
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
_TARGET = frozenset(TARGET_COMPONENTS)
_SPLIT_TARGET = frozenset(SPLIT_TARGET_COMPONENTS)
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
        # The Django request itself: DRF's wrapper answers every attribute
        # through __getattr__, which costs on the hot path.
        django_request = getattr(request, "_request", request)
        meta = django_request.META
        signature_input = meta.get("HTTP_SIGNATURE_INPUT")
        signature = meta.get("HTTP_SIGNATURE")
        if signature_input is None and signature is None:
            return None
        if not signature_input or not signature:
            raise Refused(reasons.MALFORMED, client_message=(
                "Send both the Signature-Input and the Signature header (RFC 9421)."
            ))
        try:
            host = _validated_host(django_request)  # validated once, reused by the fast path
        except DisallowedHost:
            # The signed @target-uri / @authority cannot be rebuilt from a host
            # this site does not serve: a refusal, audited, not a bare 400.
            raise Refused(reasons.MALFORMED, client_message=(
                "The Host header names a host this server does not serve."
            )) from None
        policy = _policy()
        limit = policy.max_header
        if len(signature_input) > limit or len(signature) > limit:
            raise Refused(reasons.MALFORMED, detail={"length": max(len(signature_input), len(signature))})
        canonical = _canonical_signature_input(signature_input)
        if canonical is not None:
            label, components, params, signature_params = canonical
            plan = _canonical_plan(components)
            members: Any = plan.names
            covered = plan.covered
        else:
            signature_params = plan = None
            try:
                parsed = parse_dictionary(signature_input)
            except Exception:  # the parser raises several types on malformed input
                raise Refused(reasons.MALFORMED, client_message="Signature-Input is not a valid "
                              "structured-field dictionary (RFC 8941).") from None
            if len(parsed) != 1:
                raise Refused(reasons.AMBIGUOUS, detail={"labels": len(parsed)}, client_message=(
                    "Send exactly one signature per request."
                ))
            label, (members, params) = next(iter(parsed.items()))
            if not isinstance(members, list):
                raise Refused(reasons.MALFORMED,
                              client_message="Signature-Input must be an inner list.")
            covered = frozenset(name for name in map(_component_name, members) if name)
        key_id = params.get("keyid")
        if not isinstance(key_id, str) or not 0 < len(key_id) <= 64:
            raise Refused(reasons.MALFORMED, client_message="The signature needs a keyid parameter.")
        created = params.get("created")
        if type(created) is not int:
            raise Refused(reasons.MALFORMED, credential_id=key_id, client_message=(
                "The signature needs an integer created parameter."
            ))
        now = int(time.time())
        if abs(now - created) > policy.skew:
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
        if nonce is None and policy.require_nonce:
            raise Refused(reasons.MALFORMED, credential_id=key_id,
                          client_message="The signature needs a nonce parameter.")
        missing = [c for c in self.required_components if c not in covered]
        if not _TARGET <= covered and not _SPLIT_TARGET <= covered:
            missing.append("@target-uri")
        body = django_request.body or b""
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
            proof={"label": label, "nonce": nonce, "alg": alg, "body": body,
                   "members": members, "params": params, "host": host,
                   "signature_params": signature_params, "plan": plan},
            claims={"label": label, "created": created,
                    "covered": list(plan.sorted) if plan is not None else sorted(covered),
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
        fast = _fast_verify(request, proof, algorithm.algorithm_id, key)
        if fast is not None:
            ok, problem, signed = fast
            if not ok:
                if credential is not None and proof["alg"] not in (None, algorithm.algorithm_id):
                    raise Refused(reasons.DISALLOWED_ALGORITHM, detail={"alg": proof["alg"]})
                if credential is not None and problem == "digest":
                    raise Refused(reasons.BAD_DIGEST, client_message=(
                        "Content-Digest does not match the request body."
                    ))
                return False
            if credential is None:
                return False
            return self._first_use(presented, signed)
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
        signed = json.dumps(
            [sorted(result.covered_components.items()), sorted(result.parameters.items())],
            default=str,
        )
        return self._first_use(presented, signed)

    def _first_use(self, presented: Presented, signed: str) -> bool:
        window = _policy().replay_window
        key_id = presented.lookup_value
        nonce = presented.proof["nonce"]
        if nonce is not None:
            # The nonce is inside the signed parameters: a request with a fresh
            # nonce cannot repeat signed content, so one atomic check suffices.
            if not replay.first_use(f"nonce:{key_id}", nonce, window):
                raise Refused(reasons.REPLAYED, detail={"by": "nonce"})
            return True
        # Keyed on what was signed (the signature base: covered values and
        # parameters), not on the signature bytes or header: relabelling the
        # header or re-encoding a malleable (ECDSA) signature is still a replay.
        if not replay.first_use(f"signature:{key_id}", signed, window):
            raise Refused(reasons.REPLAYED, detail={"by": "signature"})
        return True


# -- fast path ---------------------------------------------------------------------
#
# The library resolves components generically (structured-field parameters,
# responses, binary wrapping); that generality costs most of a request. The
# common request — plain derived components and plain header fields — is
# verified here with the same rules (RFC 9421 §2.1, §2.2, §2.3, §2.5; RFC 9530),
# and anything else falls back to the library. tests/schemes/
# test_http_signature_fastpath.py checks both paths agree on signed, tampered
# and unusual requests.

_DERIVED = frozenset({"@method", "@target-uri", "@authority", "@scheme", "@path", "@query"})
_FIELD_NAME = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]+$")
_METADATA = frozenset({"alg", "created", "expires", "keyid", "nonce", "tag"})
_DEFAULT_PORTS = {"http": "80", "https": "443"}
_DIGESTS = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}


# Structured-field dictionaries (RFC 8941) in the shapes clients send: one
# member whose value is a byte sequence (Signature, Content-Digest) or an inner
# list of plain strings with integer / string parameters (Signature-Input).
# Anything else goes to the full parser, http_sf; both give the same result
# (tests/schemes/test_http_signature_fastpath.py compares them).
_KEY = r"[a-z*][a-z0-9_\-.*]*"
_SF_STRING = r'"[ !#-\[\]-~]*"'
_BYTES_MEMBER = re.compile(rf"^ *({_KEY})=:([A-Za-z0-9+/]*={{0,2}}): *$")
_LIST_MEMBER = re.compile(
    rf"^ *({_KEY})=\( *((?:{_SF_STRING})(?: +{_SF_STRING})*)? *\)"
    rf"((?:;{_KEY}=(?:-?[0-9]{{1,15}}|{_SF_STRING}))*) *$"
)
_PARAM = re.compile(rf";({_KEY})=(-?[0-9]{{1,15}}|{_SF_STRING})")
# Canonical integers: no leading zero, no "-0" (RFC 8941 §4.1.4 serializes neither).
_CANONICAL_INT = r"0|-?[1-9][0-9]{0,14}"
_CANONICAL_HEAD = re.compile(
    rf'({_KEY})=\(((?:"[!#-\[\]-~][ !#-\[\]-~]*")(?: "[!#-\[\]-~][ !#-\[\]-~]*")*)?\)'
)
_CANONICAL_PARAM = re.compile(rf';({_KEY})=(?:({_CANONICAL_INT})|"([ !#-\[\]-~]*)")')
# escape_uri_path() and iri_to_uri() leave these as they are (Django's
# build_absolute_uri() runs a path through both, a query through the second).
_SAFE_PATH = re.compile(r"[A-Za-z0-9/:@&+$,\-_.!~*'()]*")
_SAFE_QUERY = re.compile(r"[A-Za-z0-9/#%\[\]=:;$&()+,!?*@'~_.\-]*")
_ITEM = re.compile(_SF_STRING)


def parse_dictionary(value: str) -> dict[str, Any]:
    """``http_sf.parse(value, tltype="dictionary")``, fast for the common shapes."""
    match = _BYTES_MEMBER.match(value)
    if match:
        try:
            return {match[1]: (base64.b64decode(match[2], validate=True), {})}
        except ValueError:
            pass
    else:
        match = _LIST_MEMBER.match(value)
        if match:
            params: dict[str, Any] = {}
            for key, raw in _PARAM.findall(match[3]):
                if key in params:
                    break  # duplicate parameter: let the full parser decide
                params[key] = raw[1:-1] if raw.startswith('"') else int(raw)
            else:
                items = [(item[1:-1], {}) for item in _ITEM.findall(match[2] or "")]
                return {match[1]: (items, params)}
    return http_sf.parse(value.encode("latin-1"), tltype="dictionary")  # type: ignore[no-any-return]


def _sf_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _canonical_signature_input(value: str) -> tuple[str, str, dict[str, Any], str] | None:
    """``(label, components, parameters, serialized parameters)`` of a
    ``Signature-Input`` already in canonical form (RFC 8941 §4.1), else ``None``.

    Canonical: one member, single spaces between plain string components and
    no other whitespace, no component parameters, integers without leading
    zeros, no duplicate parameter. What clients send. Re-serializing such a
    member gives back its own text, so that text is the ``@signature-params``
    value (RFC 9421 §2.3) as is. ``components`` is the text inside the
    parentheses (``"@method" "@target-uri"``). Anything else is parsed in full.
    """
    close = value.find(")")
    head = _canonical_head(value[:close + 1]) if close > 0 else None
    if head is None:
        return None
    label, components = head
    # The parameters, matched one after the other from the ")" to the end.
    params: dict[str, Any] = {}
    end = close + 1
    for match in _CANONICAL_PARAM.finditer(value, end):
        if match.start() != end:
            return None
        key, number, text = match.groups()
        if key in params:
            return None
        params[key] = int(number) if number else text
        end = match.end()
    if end != len(value):
        return None
    return label, components, params, value[len(label) + 1:]


@lru_cache(maxsize=256)
def _canonical_head(head: str) -> tuple[str, str] | None:
    """``(label, components)`` of ``label=("…" "…")`` in canonical form, else ``None``.

    A client sends the same label and component list on every request: the
    answer is kept per distinct text (bounded: the text is the client's).
    """
    match = _CANONICAL_HEAD.fullmatch(head)
    return None if match is None else (match[1], match[2] or "")


def _validated_host(django_request: Any) -> str:
    """``django_request.get_host()``, remembering the hosts it accepted.

    ``get_host()`` checks the host against ``ALLOWED_HOSTS`` on every call; an
    accepted raw host is accepted again while the settings stay the same (the
    memo is emptied when they change). Refused hosts are never remembered.
    """
    raw_host = getattr(django_request, "_get_raw_host", None)  # Django's, private
    raw = raw_host() if raw_host is not None else None
    if raw is not None and raw in _ACCEPTED_HOSTS:
        return raw  # type: ignore[no-any-return]
    host: str = django_request.get_host()  # raises DisallowedHost
    if len(_ACCEPTED_HOSTS) < _ACCEPTED_HOSTS_MAX:
        _ACCEPTED_HOSTS[host] = True
    return host


_ACCEPTED_HOSTS: dict[str, bool] = {}
_ACCEPTED_HOSTS_MAX = 256
_HOST_SETTINGS = frozenset({"ALLOWED_HOSTS", "DEBUG", "USE_X_FORWARDED_HOST", "USE_X_FORWARDED_PORT"})


class _Policy(NamedTuple):
    max_header: int
    skew: int
    replay_window: int
    require_nonce: bool


_POLICY: list[_Policy] = []


def _policy() -> _Policy:
    """The ``APIAUTH_SIGNATURE_*`` settings, read once (until one changes)."""
    if not _POLICY:
        skew = app_settings.SIGNATURE_MAX_SKEW
        _POLICY.append(_Policy(app_settings.SIGNATURE_MAX_HEADER_LENGTH, skew, 2 * skew,
                               app_settings.SIGNATURE_REQUIRE_NONCE))
    return _POLICY[0]


@receiver(setting_changed)
def _forget_settings(setting: str = "", **kwargs: Any) -> None:
    if setting in _HOST_SETTINGS:
        _ACCEPTED_HOSTS.clear()
    elif setting.startswith("APIAUTH_"):
        _POLICY.clear()


class _Plan(NamedTuple):
    """What the fast path needs to know about one list of covered components."""

    names: tuple[str, ...]
    covered: frozenset[str]
    sorted: tuple[str, ...]
    #: ``(component, where to read it)``: a derived component's name, or the
    #: ``META`` key of a header field. ``None`` when the library must decide
    #: (a derived component the fast path does not build, a field name that is
    #: not a plain token, a duplicate).
    fields: tuple[tuple[str, str], ...] | None


def _plan(names: Sequence[str]) -> _Plan:
    fields: list[tuple[str, str]] | None = []
    for name in names:
        if name.startswith("@"):
            source = name if name in _DERIVED else None
        elif _FIELD_NAME.match(name) and name not in ("signature", "signature-input"):
            source = ("CONTENT_TYPE" if name == "content-type" else
                      "CONTENT_LENGTH" if name == "content-length" else
                      "HTTP_" + name.upper().replace("-", "_"))
        else:
            source = None
        if source is None or fields is None:
            fields = None
        else:
            fields.append((name, source))
    if len(set(names)) != len(names):
        fields = None
    return _Plan(tuple(names), frozenset(names), tuple(sorted(set(names))),
                 None if fields is None else tuple(fields))


@lru_cache(maxsize=256)
def _canonical_plan(components: str) -> _Plan:
    """The plan of a canonical component list, from its text (``"@method" "@path"``).

    Clients send the same few lists again and again, so plans are kept,
    keyed by the text (bounded: the text is the client's).
    """
    return _plan(components[1:-1].split('" "') if components else ())


def _fast_verify(request: Any, proof: dict[str, Any], algorithm_id: str,
                 key: Any) -> tuple[bool, str, str] | None:
    """``(valid, problem, signature base)``, or ``None`` when the library must decide."""
    inner = proof.get("signature_params")
    if inner is not None:  # canonical: its plan came with it, its text is the serialization
        plan = proof["plan"]
        if plan.fields is None or not _METADATA.issuperset(proof["params"]):
            return None
    else:
        names = []
        for item in proof["members"]:
            name, item_params = item
            if item_params or not isinstance(name, str):
                return None
            names.append(name)
        plan = _plan(names)
        if plan.fields is None:
            return None
        serialized_params = []
        for param, value in proof["params"].items():
            if param not in _METADATA:
                return None
            if type(value) is int:
                serialized_params.append(f";{param}={value}")
            elif isinstance(value, str) and value.isascii() and value.isprintable():
                serialized_params.append(f";{param}={_sf_string(value)}")
            else:
                return None
        inner = "(" + " ".join(f'"{n}"' for n in names) + ")" + "".join(serialized_params)
    django_request = getattr(request, "_request", request)
    meta = django_request.META
    signature = _signature_bytes(meta.get("HTTP_SIGNATURE", ""), proof["label"])
    if not signature:
        return None

    method = django_request.method or ""
    if method != method.upper():
        return None
    try:
        # extract() validated the host already (ALLOWED_HOSTS): reuse it.
        host = proof.get("host") or django_request.get_host()
        scheme = django_request.scheme or "http"
        url = _target_uri(django_request, scheme, host)
    except Exception:  # DisallowedHost and friends: the library path answers
        return None
    split = None
    lines = []
    for name, source in plan.fields:
        if name == "@method":
            value = method
        elif name == "@target-uri":
            value = url
        elif name == "@authority":
            hostname, sep, port = host.rpartition(":") if host.rfind(":") > host.rfind("]") else (
                host, "", "")
            value = host.lower() if not sep or _DEFAULT_PORTS.get(scheme) != port.lstrip("0") \
                else hostname.lower()
        elif name == "@scheme":
            value = scheme.lower()
        elif name == "@path":
            split = split or urlsplit(url)
            value = split.path or "/"
        elif name == "@query":
            split = split or urlsplit(url)
            value = "?" + split.query
        else:
            field = meta.get(source)
            if not field:
                return (False, "signature", "")
            if "\r" in field or "\n" in field or not field.replace("\t", " ").isprintable():
                return (False, "signature", "")
            value = field
        lines.append(f'"{name}": {value}')
    lines.append(f'"@signature-params": {inner}')
    base = "\n".join(lines)
    if not base.isascii():
        return (False, "signature", base)
    ok = _check_signature(algorithm_id, key, signature, base.encode())
    if proof["alg"] is not None and proof["alg"] != algorithm_id:
        ok = False
    if not ok:
        return (False, "signature", base)
    body = proof["body"]
    digest_header = meta.get("HTTP_CONTENT_DIGEST")
    if body or digest_header is not None:
        if digest_header is None or "content-digest" not in plan.covered:
            return (False, "digest", base)
        if not _digest_matches(digest_header, body):
            return (False, "digest", base)
    return (True, "", base)


def _signature_bytes(header: str, label: str) -> bytes | None:
    """The one signature in ``Signature`` under ``label``, or ``None`` (the library decides)."""
    if header.startswith(label) and header[len(label):len(label) + 2] == "=:" \
            and header.endswith(":"):
        try:  # the common shape: one member, canonical base64
            return binascii.a2b_base64(header[len(label) + 2:-1], strict_mode=True)
        except binascii.Error:
            pass
    try:
        signatures = parse_dictionary(header)
    except Exception:
        return None
    if list(signatures) != [label]:
        return None
    signature = signatures[label][0]
    return signature if isinstance(signature, bytes) else None


def _target_uri(django_request: Any, scheme: str, host: str) -> str:
    """``django_request.build_absolute_uri()``, from the host already validated.

    Django's own common case (a path with no ``.`` or ``..`` segment) built
    the same way — ``iri_to_uri(scheme://host + get_full_path())`` — without
    a second ``get_host()`` and ``urlsplit``; anything else is Django's.
    The differential tests compare the result with the library's view of
    the request, which uses ``build_absolute_uri``.
    """
    path = django_request.path
    query = django_request.META.get("QUERY_STRING", "")
    if path.startswith("/") and _SAFE_PATH.fullmatch(path) and "/./" not in path \
            and "/../" not in path and (not query or _SAFE_QUERY.fullmatch(query)):
        # Characters that escape_uri_path() and iri_to_uri() leave as they are.
        return f"{scheme}://{host}{path}?{query}" if query else f"{scheme}://{host}{path}"
    full_path = django_request.get_full_path()
    path = full_path.partition("?")[0]
    if path.startswith("/") and "/./" not in path and "/../" not in path:
        return iri_to_uri(f"{scheme}://{host}{full_path}")
    return str(django_request.build_absolute_uri())


def _check_signature(algorithm_id: str, key: Any, signature: bytes, base: bytes) -> bool:
    try:
        if algorithm_id == "hmac-sha256":
            inner, outer = _hmac_sha256_pads(key)
            inner = inner.copy()
            inner.update(base)
            outer = outer.copy()
            outer.update(inner.digest())
            return hmac.compare_digest(outer.digest(), signature)
        if algorithm_id == "ed25519":
            key.verify(signature, base)
            return True
        if algorithm_id == "ecdsa-p256-sha256":
            if len(signature) != 64:
                return False
            der = encode_dss_signature(int.from_bytes(signature[:32], "big"),
                                       int.from_bytes(signature[32:], "big"))
            key.verify(der, base, ec.ECDSA(hashes.SHA256()))
            return True
    except (InvalidSignatureError, ValueError, TypeError):
        return False
    return False


@lru_cache(maxsize=1024)
def _hmac_sha256_pads(key: bytes) -> tuple[Any, Any]:
    """HMAC-SHA256 (RFC 2104) with the key's inner and outer pads hashed once.

    Copying the two keyed SHA-256 states costs less than ``hmac.digest()``,
    which has OpenSSL look up the MAC and the digest on every call. The
    states stay in this process's memory, like the decrypted key itself.
    """
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    return (hashlib.sha256(key.translate(_IPAD)), hashlib.sha256(key.translate(_OPAD)))


_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


def _digest_matches(header: str, body: bytes) -> bool:
    """RFC 9530: every digest we know must match, and there must be at least one."""
    if header.startswith("sha-256=:") and header.endswith(":"):
        try:  # the common shape: one sha-256 member, canonical base64
            value = binascii.a2b_base64(header[9:-1], strict_mode=True)
        except binascii.Error:
            pass
        else:
            return hmac.compare_digest(hashlib.sha256(body).digest(), value)
    try:
        parsed = parse_dictionary(header)
    except Exception:
        return False
    if not parsed:
        return False
    for algorithm, (value, _params) in parsed.items():
        digest = _DIGESTS.get(algorithm)
        if digest is None or not isinstance(value, bytes):
            return False
        if not hmac.compare_digest(digest(body).digest(), value):
            return False
    return True


@cache
def _dummy_key(algorithm: str) -> Any:
    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.generate().public_key()
    if algorithm == "ecdsa-p256-sha256":
        return ec.generate_private_key(ec.SECP256R1()).public_key()
    return _DUMMY_KEY

