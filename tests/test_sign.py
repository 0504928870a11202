"""The client tool ``python -m django_apiauth.sign`` (DESIGN §4).

Its signatures are checked by an independent verifier, the
``http-message-signatures`` ``HTTPMessageVerifier`` (the same library's
verifying half, with RFC 9530 digest checking), over a real HTTP round trip
to a small verifying server, and against the Django server through the live
test server.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import http_sf
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from django.core.cache import caches
from http_message_signatures import HTTPMessageVerifier, MappingKeyResolver, algorithms
from http_message_signatures.exceptions import InvalidSignature

from django_apiauth import sign
from django_apiauth.core import lifecycle
from django_apiauth.models import HmacSecret

SECRET = "s3cr3t-0123456789abcdefghijklmnopqrstuvwxyzABCDE"
URL = "https://api.example.com:8443/api/echo/?x=1"
BODY = b'{"hello": "world"}'
ROOT = Path(__file__).resolve().parent.parent


class Message:
    """A request as the verifier reads it."""

    def __init__(self, method: str, url: str, headers: dict[str, str]) -> None:
        self.method, self.url, self.headers = method, url, headers


def verify(method: str, url: str, headers: dict[str, str], body: bytes | None, key: Any,
           algorithm: type[algorithms.HTTPSignatureAlgorithm] = algorithms.HMAC_SHA256,
           key_id: str = "hk_test", require: tuple[str, ...] = ("@method", "@target-uri")) -> Any:
    verifier = HTTPMessageVerifier(
        signature_algorithm=algorithm,
        key_resolver=MappingKeyResolver(public_keys={key_id: key}, private_keys={}),
    )
    [result] = verifier.verify(Message(method, url, headers), require_components=require,
                               body=body if body is not None else b"")
    return result


def params(signed: dict[str, str]) -> tuple[list[str], dict[str, Any]]:
    [(label, (members, parameters))] = http_sf.parse(
        signed["Signature-Input"].encode(), tltype="dictionary").items()
    assert label == "sig1"
    return [member for member, _params in members], parameters


# -- sign_request -----------------------------------------------------------------


def test_hmac_signature_verifies_with_body_digest_and_content_type():
    headers = {"Content-Type": "application/json", "X-Trace": "abc"}
    signed = sign.sign_request("POST", URL, headers, BODY, "hk_test", SECRET, "hmac-sha256")
    assert list(signed) == ["Content-Digest", "Signature-Input", "Signature"]
    digest = base64.b64encode(hashlib.sha256(BODY).digest()).decode()
    assert signed["Content-Digest"] == f"sha-256=:{digest}:"
    result = verify("POST", URL, {**headers, **signed}, BODY, SECRET.encode(),
                    require=("@method", "@target-uri", "content-type", "content-digest"))
    assert result.body == BODY
    covered, parameters = params(signed)
    assert covered == ["@method", "@target-uri", "content-type", "content-digest"]
    assert parameters["keyid"] == "hk_test" and parameters["alg"] == "hmac-sha256"
    assert abs(parameters["created"] - time.time()) < 5
    assert len(parameters["nonce"]) >= 16


def test_nonce_is_random_and_created_can_be_given():
    first = sign.sign_request("GET", URL, {}, None, "hk_test", SECRET, "hmac-sha256")
    second = sign.sign_request("GET", URL, {}, None, "hk_test", SECRET, "hmac-sha256", created=1_900_000_000)
    assert params(first)[1]["nonce"] != params(second)[1]["nonce"]
    assert params(second)[1]["created"] == 1_900_000_000


def test_no_body_no_digest():
    signed = sign.sign_request("GET", URL, {}, None, "hk_test", SECRET, "hmac-sha256")
    assert set(signed) == {"Signature-Input", "Signature"}
    assert params(signed)[0] == ["@method", "@target-uri"]
    verify("GET", URL, signed, None, SECRET.encode())
    # An empty body is no body either.
    assert set(sign.sign_request("POST", URL, {}, b"", "hk_test", SECRET)) == {"Signature-Input", "Signature"}


@pytest.mark.parametrize("tamper", ["body", "method", "url", "content-type", "secret"])
def test_tampering_is_detected(tamper):
    headers = {"Content-Type": "application/json"}
    signed = sign.sign_request("PUT", URL, headers, BODY, "hk_test", SECRET, "hmac-sha256")
    method, url, body, key = "PUT", URL, BODY, SECRET.encode()
    sent = {**headers, **signed}
    if tamper == "body":
        body = b'{"hello": "mallory"}'
    elif tamper == "method":
        method = "DELETE"
    elif tamper == "url":
        url = URL.replace("x=1", "x=2")
    elif tamper == "content-type":
        sent["Content-Type"] = "text/plain"
    else:
        key = b"another secret"
    with pytest.raises(InvalidSignature):
        verify(method, url, sent, body, key)


def test_a_str_secret_is_its_utf8_bytes():
    secret = "naïve-secret-✓"
    signed = sign.sign_request("GET", URL, None, None, "hk_test", secret)
    verify("GET", URL, signed, None, secret.encode("utf-8"))


@pytest.mark.parametrize("as_pem", [False, True], ids=["object", "pem"])
def test_ed25519_signature_verifies(as_pem):
    private_key = ed25519.Ed25519PrivateKey.generate()
    key: Any = private_key
    if as_pem:
        key = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    signed = sign.sign_request("POST", URL, {"Content-Type": "application/json"}, BODY, "hk_ed",
                               key, "ed25519")
    result = verify("POST", URL, {"Content-Type": "application/json", **signed}, BODY,
                    private_key.public_key(), algorithms.ED25519, key_id="hk_ed")
    assert result.parameters["alg"] == "ed25519"
    with pytest.raises(InvalidSignature):
        verify("POST", URL, {"Content-Type": "application/json", **signed}, BODY,
               ed25519.Ed25519PrivateKey.generate().public_key(), algorithms.ED25519, key_id="hk_ed")


def test_ecdsa_p256_signature_verifies():
    private_key = ec.generate_private_key(ec.SECP256R1())
    signed = sign.sign_request("GET", URL, {}, None, "hk_ec", private_key, "ecdsa-p256-sha256")
    verify("GET", URL, signed, None, private_key.public_key(), algorithms.ECDSA_P256_SHA256,
           key_id="hk_ec")


def test_url_without_path_is_signed_as_slash():
    signed = sign.sign_request("GET", "http://127.0.0.1:8000", {}, None, "hk_test", SECRET)
    verify("GET", "http://127.0.0.1:8000/", signed, None, SECRET.encode())


@pytest.mark.parametrize(("args", "message"), [
    (("GET", "/api/whoami/", {}, None, "hk", SECRET, "hmac-sha256"), "Not an absolute http(s) URL"),
    (("GET", "ftp://example.com/", {}, None, "hk", SECRET, "hmac-sha256"), "Not an absolute http(s) URL"),
    (("GET", URL, {}, None, "hk", SECRET, "hmac-sha1"), "Unknown algorithm 'hmac-sha1'"),
    (("GET", URL, {}, None, "", SECRET, "hmac-sha256"), "key id is empty"),
    (("GET", URL, {}, None, "hk", "", "hmac-sha256"), "HMAC secret is empty"),
    (("GET", URL, {}, None, "hk", SECRET, "ed25519"), "Not a PEM private key"),
    (("GET", URL, {}, None, "hk", "ED_KEY", "ecdsa-p256-sha256"), "it is a key for ed25519"),
    (("GET", URL, {}, None, "hk", "ED_KEY", "hmac-sha256"), "not a private key"),
    (("GET", URL, {"Signature": "x"}, None, "hk", SECRET, "hmac-sha256"), "computed when signing"),
    (("GET", URL, {"Content-Digest": "x"}, None, "hk", SECRET, "hmac-sha256"), "computed when signing"),
    (("GET", URL, {"Bad Name": "x"}, None, "hk", SECRET, "hmac-sha256"), "Invalid header name"),
    (("GET", URL, {"Content-Type": "a\nb"}, None, "hk", SECRET, "hmac-sha256"), "Cannot sign this request"),
])
def test_sign_request_errors(args, message):
    args = tuple(ed25519.Ed25519PrivateKey.generate() if arg == "ED_KEY" else arg for arg in args)
    with pytest.raises(sign.SignError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sign.sign_request(*args)


# -- the command line -----------------------------------------------------------------


def write_private_key(tmp_path: Path, private_key: Any) -> str:
    path = tmp_path / "client.pem"
    path.write_bytes(private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return str(path)


def run_main(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        code = sign.main(list(argv), stdout=out, stderr=err)
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def test_curl_output_carries_the_signed_headers():
    code, out, _err = run_main("--key-id", "hk_test", "--secret", SECRET, "--curl", "-d", BODY.decode(),
                               "-H", "Content-Type: application/json", URL)
    assert code == 0
    comment, command = out.splitlines()
    assert comment.startswith("# Valid for 300 s (until ") and "single-use" in comment
    args = shlex.split(command)
    assert args[:3] == ["curl", "-sS", "-i"] and args[-1] == URL
    assert "-X" not in args  # POST is curl's default with a body
    headers = dict(args[i + 1].split(": ", 1) for i, arg in enumerate(args) if arg == "-H")
    assert set(headers) == {"Content-Type", "Content-Digest", "Signature-Input", "Signature"}
    assert args[args.index("--data-raw") + 1] == BODY.decode()
    assert SECRET not in out
    verify("POST", URL, headers, BODY, SECRET.encode(), require=("content-digest", "content-type"))


def test_curl_output_methods(tmp_path):
    _code, out, _err = run_main("--key-id", "k", "--secret", SECRET, "--curl", "-X", "delete", URL)
    assert " -X DELETE " in out and "--data" not in out
    _code, out, _err = run_main("--key-id", "k", "--secret", SECRET, "--curl", "-X", "HEAD", URL)
    assert " --head " in out
    _code, out, _err = run_main("--key-id", "k", "--secret", SECRET, "--curl", URL)
    assert " -X " not in out
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\x00\xff\x10")
    _code, out, _err = run_main("--key-id", "k", "--secret", SECRET, "--curl", "-d", f"@{binary}",
                                "-H", "Content-Type: application/octet-stream", URL)
    assert f"--data-binary @{binary}" in out


def test_default_content_type_with_data_is_curls():
    args = sign.build_parser().parse_args(["--key-id", "k", "--secret", "s", "-d", "a=1", URL])
    spec = sign.spec_from_args(args)
    assert (spec.method, spec.body, spec.headers) == (
        "POST", b"a=1", {"Content-Type": "application/x-www-form-urlencoded"})
    assert "content-type" in params(spec.sign())[0]


def test_data_from_file_and_stdin(tmp_path):
    path = tmp_path / "body.json"
    path.write_bytes(BODY + b"\n")
    parser = sign.build_parser()
    spec = sign.spec_from_args(parser.parse_args(["--key-id", "k", "--secret", "s", "-d", f"@{path}", URL]))
    assert spec.body == BODY + b"\n"
    stdin = io.TextIOWrapper(io.BytesIO(b"from stdin"))
    spec = sign.spec_from_args(parser.parse_args(["--key-id", "k", "--secret", "s", "-d", "@-", URL]),
                               stdin=stdin)
    assert spec.body == b"from stdin"


def test_secret_from_environment():
    args = sign.build_parser().parse_args(["--key-id", "k", "--secret-env", "MY_SECRET", URL])
    assert sign.spec_from_args(args, environ={"MY_SECRET": SECRET}).key == SECRET


def test_private_key_infers_the_algorithm(tmp_path):
    private_key = ec.generate_private_key(ec.SECP256R1())
    args = sign.build_parser().parse_args(
        ["--key-id", "k", "--private-key", write_private_key(tmp_path, private_key), URL])
    spec = sign.spec_from_args(args)
    assert spec.algorithm == "ecdsa-p256-sha256"
    verify("GET", URL, spec.sign(), None, private_key.public_key(), algorithms.ECDSA_P256_SHA256,
           key_id="k")


@pytest.mark.parametrize(("argv", "message"), [
    ((URL,), "the following arguments are required: --key-id"),
    (("--key-id", "k", URL), "one of the arguments --secret --secret-env --private-key is required"),
    (("--key-id", "k", "--secret", "s", "--private-key", "PEM", URL), "not allowed with argument"),
    (("--key-id", "k", "--secret", "s"), "the following arguments are required: URL"),
    (("--key-id", "k", "--secret", "s", "--algorithm", "rsa-v1_5-sha256", URL), "invalid choice"),
    (("--key-id", "k", "--secret", "s", "--algorithm", "ed25519", URL),
     "--algorithm ed25519 signs with a private key: pass --private-key"),
    (("--key-id", "k", "--private-key", "PEM", "--algorithm", "hmac-sha256", URL),
     "pass --secret-env VAR (or --secret) instead of --private-key"),
    (("--key-id", "k", "--private-key", "MISSING", URL), "--private-key: cannot read"),
    (("--key-id", "k", "--private-key", "PUBLIC", URL), "Not a PEM private key"),
    (("--key-id", "k", "--secret-env", "APIAUTH_TEST_UNSET_VARIABLE", URL),
     "the environment variable APIAUTH_TEST_UNSET_VARIABLE is not set"),
    (("--key-id", "k", "--secret", "s", "-H", "NoColon", URL), "write headers as 'Name: value'"),
    (("--key-id", "k", "--secret", "s", "-H", "Host: evil.example", URL), "put the host in the URL"),
    (("--key-id", "k", "--secret", "s", "-H", "Signature: x", URL), "computed when signing"),
    (("--key-id", "k", "--secret", "s", "-X", "GE T", URL), "is not an HTTP method"),
    (("--key-id", "k", "--secret", "s", "example.com/api/"), "Not an absolute http(s) URL"),
    (("--key-id", "k", "--secret", "s", "-d", "@/nonexistent/body", URL), "-d: cannot read"),
])
def test_cli_argument_errors(tmp_path, capsys, argv, message):
    private_key = ed25519.Ed25519PrivateKey.generate()
    files = {"PEM": write_private_key(tmp_path, private_key), "MISSING": str(tmp_path / "none.pem")}
    public = tmp_path / "public.pem"
    public.write_bytes(private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    files["PUBLIC"] = str(public)
    code, out, err = run_main(*(files.get(arg, arg) for arg in argv))
    assert code == 2
    assert out == ""
    assert message in err + capsys.readouterr().err


# -- sending ----------------------------------------------------------------------------


class VerifyingHandler(http.server.BaseHTTPRequestHandler):
    """A tiny server that checks RFC 9421 signatures with the library's verifier."""

    secret = SECRET.encode()

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        try:
            result = verify(self.command, f"http://{self.headers['Host']}{self.path}",
                            dict(self.headers.items()), body, self.secret)
        except InvalidSignature as exc:
            payload, code = json.dumps({"error": str(exc)}).encode(), 401
        else:
            payload, code = json.dumps({"ok": True, "keyid": result.parameters["keyid"],
                                        "body": body.decode()}).encode(), 200
        self.send_response(code)
        if code == 401:
            self.send_header("WWW-Authenticate", 'Signature realm="test"')
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def verifying_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), VerifyingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_sends_and_prints_status_and_body(verifying_server):
    code, out, err = run_main("--key-id", "hk_test", "--secret", SECRET, "-d", BODY.decode(),
                              "-H", "Content-Type: application/json", f"{verifying_server}/api/echo/?a=1")
    assert (code, err) == (0, "")
    status_line, body = out.splitlines()
    assert status_line == "HTTP 200 OK"
    assert json.loads(body) == {"ok": True, "keyid": "hk_test", "body": BODY.decode()}


def test_non_2xx_exits_1_and_shows_the_challenge(verifying_server):
    code, out, _err = run_main("--key-id", "hk_test", "--secret", "wrong", f"{verifying_server}/x")
    assert code == 1
    assert out.startswith("HTTP 401 Unauthorized\nWWW-Authenticate: Signature realm=\"test\"\n")


def test_include_prints_response_headers(verifying_server):
    code, out, _err = run_main("-i", "--key-id", "hk_test", "--secret", SECRET, f"{verifying_server}/")
    assert code == 0
    assert "Content-Type: application/json" in out


def test_redirects_are_not_followed(verifying_server):
    code, out, _err = run_main("--key-id", "hk_test", "--secret", SECRET, f"{verifying_server}/redirect")
    assert code == 1
    assert out.startswith("HTTP 302")


def test_unreachable_server_exits_1():
    code, out, err = run_main("--key-id", "k", "--secret", "s", "--timeout", "2", "http://127.0.0.1:9/")
    assert (code, out) == (1, "")
    assert "cannot reach http://127.0.0.1:9/" in err


@pytest.mark.django_db(transaction=True)
def test_against_the_django_live_server(live_server, user):
    caches["default"].clear()
    credential, secret = lifecycle.issue(HmacSecret, owner=user, name="cli", scopes="echo:write")
    base = ["--key-id", credential.key_id, "--secret", secret]
    code, out, _err = run_main(*base, f"{live_server.url}/api/whoami/")
    assert code == 0, out
    assert json.loads(out.splitlines()[1])["scheme"] == "hmac"
    code, out, _err = run_main(*base, "-d", BODY.decode(), "-H", "Content-Type: application/json",
                               f"{live_server.url}/api/echo/")
    assert (code, json.loads(out.splitlines()[1])) == (0, {"hello": "world"})
    code, out, _err = run_main("--key-id", credential.key_id, "--secret", secret + "x",
                               f"{live_server.url}/api/whoami/")
    assert code == 1 and out.startswith("HTTP 401")


# -- packaging -----------------------------------------------------------------------------


def test_importing_the_tool_does_not_import_django():
    code = ("import sys, django_apiauth.sign; "
            "loaded = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.')); "
            "assert not loaded, loaded")
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=env)  # noqa: S603


def test_runs_as_a_module():
    result = subprocess.run(
        [sys.executable, "-m", "django_apiauth.sign", "--help"], check=True, cwd=ROOT,
        capture_output=True, text=True,
    )
    assert "--key-id" in result.stdout and "--curl" in result.stdout
