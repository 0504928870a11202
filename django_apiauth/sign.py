"""Sign HTTP requests for django-apiauth with RFC 9421 HTTP Message Signatures.

A client tool, not part of the server: it imports no Django, only
``http-message-signatures`` (and ``cryptography``, which that requires), so it
runs on any machine where django-apiauth, or just this one file plus
``http-message-signatures``, is installed::

    python -m django_apiauth.sign --key-id hk_… --secret-env APIAUTH_SECRET \\
        https://api.example.com/api/whoami/
    python -m django_apiauth.sign --key-id hk_… --private-key client.pem \\
        -d '{"hello": "world"}' -H 'Content-Type: application/json' \\
        https://api.example.com/api/echo/
    python -m django_apiauth.sign … --curl URL   # print a curl command instead

The signature covers ``@method``, ``@target-uri``, ``content-type`` when the
request has one and, when it has a body, ``content-digest`` (RFC 9530,
SHA-256), with ``created`` = now and a random ``nonce``: what the server
requires (DESIGN §4). A signature is valid for the server's clock-skew window
(300 s by default) and only once (the server remembers nonces and signatures).

:func:`sign_request` is the programmatic entry point: it returns the headers
to add to a request.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import secrets
import shlex
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any, NoReturn, TextIO, TypeAlias
from urllib.parse import urlsplit, urlunsplit

from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from http_message_signatures import HTTPMessageSigner, MappingKeyResolver, algorithms
from http_message_signatures.exceptions import HTTPMessageSignaturesException

HMAC_SHA256 = "hmac-sha256"
ED25519 = "ed25519"
ECDSA_P256_SHA256 = "ecdsa-p256-sha256"
ALGORITHMS: dict[str, type[algorithms.HTTPSignatureAlgorithm]] = {
    HMAC_SHA256: algorithms.HMAC_SHA256,
    ED25519: algorithms.ED25519,
    ECDSA_P256_SHA256: algorithms.ECDSA_P256_SHA256,
}
#: The server's default ``APIAUTH_SIGNATURE_MAX_SKEW``: how long a signature is accepted.
DEFAULT_VALIDITY_SECONDS = 300
LABEL = "sig1"
USER_AGENT = "django-apiauth-sign"
#: Headers this tool computes; a caller must not supply them.
RESERVED_HEADERS = frozenset({"signature", "signature-input", "content-digest"})
_TOKEN_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 field-name

PrivateKey: TypeAlias = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
SigningKey: TypeAlias = str | bytes | PrivateKey


class SignError(ValueError):
    """The request cannot be signed as asked (bad key, URL, header, …)."""


# -- keys -----------------------------------------------------------------------


def load_private_key(pem: bytes | str) -> PrivateKey:
    """Parse an unencrypted PEM private key (Ed25519 or ECDSA P-256). Raises :class:`SignError`."""
    raw = pem.encode() if isinstance(pem, str) else pem
    if b"PRIVATE KEY" not in raw:
        raise SignError(
            "Not a PEM private key (expected -----BEGIN PRIVATE KEY-----). The server holds the "
            "public key; the client signs with the matching private key."
        )
    try:
        key = load_pem_private_key(raw, password=None)
    except TypeError:
        raise SignError(
            "The private key is encrypted; decrypt it first, e.g. "
            "`openssl pkey -in key.pem -out plain.pem`, and keep the result private."
        ) from None
    except ValueError as exc:
        raise SignError(f"Cannot read the private key: {exc}") from None
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise SignError("Unsupported private key type: use an Ed25519 or an ECDSA P-256 key.")


def algorithm_for_key(key: PrivateKey) -> str:
    """The RFC 9421 algorithm name that fits a private key."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return ED25519
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return ECDSA_P256_SHA256
    raise SignError("Unsupported private key type: use an Ed25519 or an ECDSA P-256 key.")


def _signing_key(key: SigningKey, algorithm: str) -> bytes | PrivateKey:
    if algorithm == HMAC_SHA256:
        if isinstance(key, str):
            key = key.encode()
        if not isinstance(key, bytes):
            raise SignError("hmac-sha256 signs with the shared secret, not a private key.")
        if not key:
            raise SignError("The HMAC secret is empty.")
        return key
    private = load_private_key(key) if isinstance(key, str | bytes) else key
    if algorithm_for_key(private) != algorithm:
        raise SignError(f"The private key does not fit the algorithm {algorithm}: "
                        f"it is a key for {algorithm_for_key(private)}.")
    return private


# -- signing --------------------------------------------------------------------


def normalize_url(url: str) -> str:
    """The absolute URL as the server rebuilds it: ``http(s)``, a host, ``/`` for an empty path."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SignError(f"Not an absolute http(s) URL: {url!r} (e.g. https://api.example.com/api/whoami/).")
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", parts.query, ""))


class _Message:
    """The request as the signer sees it: method, URL and a mutable header mapping."""

    def __init__(self, method: str, url: str, headers: dict[str, str]) -> None:
        self.method = method
        self.url = url
        self.headers = headers


def sign_request(
    method: str,
    url: str,
    headers: Mapping[str, str] | None,
    body: bytes | str | None,
    key_id: str,
    key: SigningKey,
    algorithm: str = HMAC_SHA256,
    *,
    created: int | None = None,
    nonce: str | None = None,
    label: str = LABEL,
) -> dict[str, str]:
    """Sign a request; return the headers to add to it.

    The result has ``Signature-Input`` and ``Signature`` and, when ``body`` is
    not empty, ``Content-Digest``. ``headers`` are the request's other headers
    (only ``Content-Type`` is covered, when present). ``key`` is the HMAC
    secret (a ``str`` is used as its UTF-8 bytes, as issued by
    ``issue_hmac_secret``) or, for ``ed25519`` / ``ecdsa-p256-sha256``, the
    private key (object or PEM). ``url`` must be the absolute URL the request
    is sent to, exactly as the server sees it (scheme, host, port).

    ``created`` (a Unix time, default now) and ``nonce`` (default random) are
    for tests. Raises :class:`SignError` for anything the caller can fix.
    """
    if algorithm not in ALGORITHMS:
        raise SignError(f"Unknown algorithm {algorithm!r}; choose one of: {', '.join(ALGORITHMS)}.")
    if not key_id:
        raise SignError("The key id is empty.")
    signing_key = _signing_key(key, algorithm)
    message_headers: dict[str, str] = {}
    for name, value in (headers or {}).items():
        if not _TOKEN_RE.match(name):
            raise SignError(f"Invalid header name {name!r}.")
        if name.lower() in RESERVED_HEADERS:
            raise SignError(f"Do not pass a {name} header: it is computed when signing.")
        message_headers[name] = value
    payload = body.encode() if isinstance(body, str) else body
    covered = ["@method", "@target-uri"]
    if any(name.lower() == "content-type" for name in message_headers):
        covered.append("content-type")
    message = _Message(method.upper(), normalize_url(url), message_headers)
    signer = HTTPMessageSigner(
        signature_algorithm=ALGORITHMS[algorithm],
        key_resolver=MappingKeyResolver(public_keys={}, private_keys={key_id: signing_key}),
    )
    when = datetime.datetime.fromtimestamp(
        int(time.time()) if created is None else created, tz=datetime.UTC
    )
    before = set(message_headers)
    try:
        signer.sign(
            message,
            key_id=key_id,
            created=when,
            nonce=secrets.token_urlsafe(16) if nonce is None else nonce,
            label=label,
            covered_component_ids=covered,
            # The signer adds Content-Digest (RFC 9530, sha-256) and covers it.
            body=payload or None,
        )
    except HTTPMessageSignaturesException as exc:
        raise SignError(f"Cannot sign this request: {exc}") from None
    return {name: value for name, value in message.headers.items() if name not in before}


# -- the command line -----------------------------------------------------------


@dataclass
class SignedRequestSpec:
    """A request described by command-line arguments, ready for :func:`sign_request`."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None
    key_id: str
    key: SigningKey = field(repr=False)
    algorithm: str
    body_file: str | None = None

    def sign(self, **options: Any) -> dict[str, str]:
        return sign_request(self.method, self.url, self.headers, self.body, self.key_id, self.key,
                            self.algorithm, **options)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m django_apiauth.sign",
        description=(
            "Sign an HTTP request with RFC 9421 HTTP Message Signatures (covering @method, "
            "@target-uri, content-type and the body's Content-Digest) and send it, or print a "
            "curl command. A signature is valid for 300 s and only once."
        ),
    )
    parser.add_argument("url", metavar="URL", help="Absolute http(s) URL, as the server sees it.")
    parser.add_argument("--key-id", required=True, help="The credential's key id (hk_…).")
    secret = parser.add_mutually_exclusive_group(required=True)
    secret.add_argument(
        "--secret", help="The HMAC secret. Visible to other local users and kept in shell history: "
                         "prefer --secret-env.",
    )
    secret.add_argument("--secret-env", metavar="VAR",
                        help="Read the HMAC secret from this environment variable.")
    secret.add_argument("--private-key", metavar="PEMFILE",
                        help="Unencrypted PEM private key (Ed25519 or ECDSA P-256).")
    parser.add_argument(
        "--algorithm", choices=list(ALGORITHMS),
        help="Signature algorithm (default: hmac-sha256 with a secret, else the private key's).",
    )
    parser.add_argument("-X", "--request", dest="method", metavar="METHOD",
                        help="HTTP method (default: GET, or POST with -d).")
    parser.add_argument(
        "-d", "--data", metavar="DATA",
        help="Request body, sent as is; @FILE reads a file, @- standard input. Without a "
             "Content-Type header, application/x-www-form-urlencoded is sent (as curl does).",
    )
    parser.add_argument("-H", "--header", dest="headers", action="append", default=[],
                        metavar="'Name: value'", help="Extra request header (repeatable).")
    parser.add_argument("--curl", action="store_true",
                        help="Print a copy-paste curl command instead of sending the request.")
    parser.add_argument("-i", "--include", action="store_true",
                        help="Print the response headers too.")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                        help="Network timeout (default: 30).")
    return parser


def spec_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None,
                   stdin: Any = None) -> SignedRequestSpec:
    """Turn parsed arguments into a request spec. Raises :class:`SignError`."""
    environ = os.environ if environ is None else environ
    key: SigningKey
    if args.private_key is not None:
        try:
            key = load_private_key(Path(args.private_key).read_bytes())
        except OSError as exc:
            raise SignError(f"--private-key: cannot read {args.private_key}: {exc.strerror}.") from None
        algorithm = args.algorithm or algorithm_for_key(key)
        if algorithm == HMAC_SHA256:
            raise SignError("--algorithm hmac-sha256 signs with a shared secret: "
                            "pass --secret-env VAR (or --secret) instead of --private-key.")
    else:
        algorithm = args.algorithm or HMAC_SHA256
        if algorithm != HMAC_SHA256:
            raise SignError(f"--algorithm {algorithm} signs with a private key: pass --private-key "
                            "PEMFILE (the server holds only the public key).")
        if args.secret_env is not None:
            value = environ.get(args.secret_env)
            if not value:
                raise SignError(f"--secret-env: the environment variable {args.secret_env} is not set "
                                "or empty; export it first.")
            key = value
        else:
            key = args.secret
        if not key:
            raise SignError("The secret is empty.")

    headers: dict[str, str] = {}
    for raw in args.headers:
        name, sep, value = raw.partition(":")
        name = name.strip()
        if not sep or not _TOKEN_RE.match(name):
            raise SignError(f"-H {raw!r}: write headers as 'Name: value'.")
        existing = next((n for n in headers if n.lower() == name.lower()), None)
        if existing is not None:
            headers[existing] = f"{headers[existing]}, {value.strip()}"
        else:
            headers[name] = value.strip()
    lowered = {name.lower() for name in headers}
    if "host" in lowered:
        raise SignError("Do not pass a Host header: put the host in the URL, which the signature covers.")
    for name in headers:
        if name.lower() in RESERVED_HEADERS:
            raise SignError(f"Do not pass a {name} header: it is computed when signing.")

    body: bytes | None = None
    body_file: str | None = None
    if args.data is not None:
        if args.data.startswith("@"):
            body_file = args.data[1:]
            try:
                if body_file == "-":
                    body = (stdin or sys.stdin).buffer.read()
                else:
                    body = Path(body_file).read_bytes()
            except OSError as exc:
                raise SignError(f"-d: cannot read {body_file}: {exc.strerror}.") from None
        else:
            body = args.data.encode()
        if "content-type" not in lowered:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
    method = (args.method or ("POST" if args.data is not None else "GET")).upper()
    if not _TOKEN_RE.match(method):
        raise SignError(f"-X {args.method!r} is not an HTTP method.")
    return SignedRequestSpec(
        method=method, url=normalize_url(args.url), headers=headers, body=body,
        key_id=args.key_id, key=key, algorithm=algorithm, body_file=body_file,
    )


def curl_command(spec: SignedRequestSpec, signed: Mapping[str, str],
                 validity: int = DEFAULT_VALIDITY_SECONDS) -> str:
    """A comment line and a copy-paste curl command carrying the signed request."""
    until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=validity)
    args = ["curl", "-sS", "-i"]
    if spec.method == "HEAD":
        args.append("--head")
    elif spec.method != ("POST" if spec.body else "GET"):
        args += ["-X", spec.method]
    for name, value in {**spec.headers, **signed}.items():
        args += ["-H", f"{name}: {value}"]
    if spec.body:
        try:
            text = spec.body.decode()
        except UnicodeDecodeError:
            text = None
        if text is not None and "\0" not in text:
            args += ["--data-raw", text]
        elif spec.body_file and spec.body_file != "-":
            args += ["--data-binary", "@" + spec.body_file]
        else:
            raise SignError("A binary body from standard input cannot go on a curl command line: "
                            "save it to a file and pass -d @FILE.")
    args.append(spec.url)
    comment = (
        f"# Valid for {validity} s (until {until:%H:%M:%S} UTC, with the server's default "
        "clock-skew window) and single-use: the server refuses a replayed nonce or signature."
    )
    return comment + "\n" + shlex.join(args)


@dataclass
class Response:
    status: int
    reason: str
    headers: Message
    body: bytes


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect gets a new URL the signature does not cover: report it, do not follow."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def send(spec: SignedRequestSpec, signed: Mapping[str, str], timeout: float = 30.0) -> Response:
    """Send the signed request with :mod:`urllib.request`. Raises :class:`OSError` on network errors."""
    request = urllib.request.Request(  # noqa: S310 (normalize_url allows only http and https)
        spec.url, data=spec.body or None, method=spec.method,
        headers={"User-Agent": USER_AGENT, **spec.headers, **signed},
    )
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=timeout) as response:
            return Response(response.status, response.reason, response.headers, response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return Response(exc.code, str(exc.reason), exc.headers, exc.read())


def _fail(message: str, stderr: TextIO, code: int = 2) -> NoReturn:
    stderr.write(f"python -m django_apiauth.sign: error: {message}\n")
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    """Run the command line; return the exit status (0 on a 2xx response or with --curl)."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        spec = spec_from_args(args)
        signed = spec.sign()
        if args.curl:
            stdout.write(curl_command(spec, signed) + "\n")
            return 0
    except SignError as exc:
        _fail(str(exc), stderr)
    try:
        response = send(spec, signed, timeout=args.timeout)
    except OSError as exc:
        reason = getattr(exc, "reason", exc)
        stderr.write(f"python -m django_apiauth.sign: cannot reach {spec.url}: {reason}\n")
        return 1
    stdout.write(f"HTTP {response.status} {response.reason}\n")
    if args.include:
        for name, value in response.headers.items():
            stdout.write(f"{name}: {value}\n")
        stdout.write("\n")
    elif response.status == 401 and response.headers.get("WWW-Authenticate"):
        stdout.write(f"WWW-Authenticate: {response.headers['WWW-Authenticate']}\n")
    text = response.body.decode("utf-8", errors="replace")
    stdout.write(text + ("" if not text or text.endswith("\n") else "\n"))
    return 0 if 200 <= response.status < 300 else 1


if __name__ == "__main__":
    sys.exit(main())
