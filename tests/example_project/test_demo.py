"""`make demo` prints curl and signed-request lines; each must behave as its comment says."""

from __future__ import annotations

import io
import itertools
import re
import shlex
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.core.cache import caches
from django.core.management import call_command

from django_apiauth import sign
from django_apiauth.models import AuditEvent

pytestmark = pytest.mark.django_db

SIGN_PREFIX = ".venv/bin/python -m django_apiauth.sign "


@pytest.fixture(autouse=True)
def fresh_replay_store() -> None:
    caches["default"].clear()


def demo_output() -> str:
    out = io.StringIO()
    call_command("demo_setup", stdout=out)
    return out.getvalue()


def run_curl(client: Any, line: str) -> Any:
    """Deliver a printed curl line through the test client, Host header included."""
    args = shlex.split(line)[1:]
    headers: dict[str, str] = {}
    data, url, method = None, None, None
    it = iter(args)
    for arg in it:
        if arg == "-H":
            name, _, value = next(it).partition(": ")
            headers["HTTP_" + name.upper().replace("-", "_")] = value
        elif arg in ("-d", "--data-raw"):
            data = next(it)
        elif arg == "-X":
            method = next(it)
        elif not arg.startswith("-"):
            url = arg
    assert url is not None, line
    parts = urlsplit(url)
    content_type = headers.pop("HTTP_CONTENT_TYPE", None)
    method = method or ("POST" if data is not None else "GET")
    return client.generic(
        method, parts.path + (f"?{parts.query}" if parts.query else ""),
        data=(data or "").encode(), content_type=content_type, HTTP_HOST=parts.netloc,
        SERVER_NAME=parts.hostname, SERVER_PORT=str(parts.port or 80), **headers,
    )


def run_sign(client: Any, line: str) -> Any:
    """Do what a printed `python -m django_apiauth.sign` line does, over the test client.

    The line is parsed by the tool's own argument parser; ``sign_request`` signs
    it, and the request goes to Django with every signed header and the host
    the URL names, so the target URI the server rebuilds is the signed one.
    With ``--curl`` the printed curl command is run instead.
    """
    assert line.startswith(SIGN_PREFIX), line
    argv = shlex.split(line.removeprefix(SIGN_PREFIX))
    args = sign.build_parser().parse_args(argv)
    spec = sign.spec_from_args(args, environ={})
    if args.curl:
        out = io.StringIO()
        assert sign.main(argv, stdout=out) == 0
        comment, curl_line = out.getvalue().splitlines()
        assert comment.startswith("# Valid for 300 s") and "single-use" in comment
        return run_curl(client, curl_line)
    signed = sign.sign_request(spec.method, spec.url, spec.headers, spec.body, spec.key_id, spec.key,
                               spec.algorithm)
    parts = urlsplit(spec.url)
    meta: dict[str, str] = {}
    content_type = None
    for name, value in {**spec.headers, **signed}.items():
        if name.lower() == "content-type":
            content_type = value
        else:
            meta["HTTP_" + name.upper().replace("-", "_")] = value
    return client.generic(
        spec.method, parts.path + (f"?{parts.query}" if parts.query else ""),
        data=spec.body or b"", content_type=content_type, HTTP_HOST=parts.netloc,
        SERVER_NAME=parts.hostname, SERVER_PORT=str(parts.port or 80), **meta,
    )


def printed_commands(output: str) -> list[tuple[int, str]]:
    commands = []
    for comment, line in itertools.pairwise(output.splitlines()):
        if line.startswith(("curl ", SIGN_PREFIX)):
            match = re.match(r"# (\d{3})", comment)
            assert match, f"no expected status above {line!r}"
            commands.append((int(match.group(1)), line))
    return commands


def test_printed_lines_behave_as_printed(client):
    commands = printed_commands(demo_output())
    for expected, line in commands:
        response = run_sign(client, line) if line.startswith(SIGN_PREFIX) else run_curl(client, line)
        assert response.status_code == expected, (line, response.content)
        if expected == 401:
            assert response["WWW-Authenticate"]
    assert sum(line.startswith("curl ") for _status, line in commands) >= 5
    assert sum(line.startswith(SIGN_PREFIX) for _status, line in commands) >= 3
    # The 401 is the wrong secret's doing, not a host or digest mismatch.
    refused = AuditEvent.objects.filter(event="authenticate", scheme="hmac", outcome="failure")
    assert [row.reason for row in refused] == ["bad_signature"]


def test_signed_lines_authenticate_as_the_demo_user(client):
    output = demo_output()
    signed = [(status, line) for status, line in printed_commands(output) if line.startswith(SIGN_PREFIX)]
    whoami = next(line for status, line in signed if status == 200 and "whoami" in line
                  and "--curl" not in line)
    response = run_sign(client, whoami)
    assert response.json()["user"] == "demo"
    assert response.json()["scheme"] == "hmac"
    echo = next(line for _status, line in signed if "/api/echo/" in line)
    assert run_sign(client, echo).json() == {"hello": "world"}
    assert {line.split()[0] for _status, line in signed} == {".venv/bin/python"}
    assert "# 200: a signed request (RFC 9421 HTTP Message Signatures)" in output


def test_demo_is_rerunnable(client):
    demo_output()
    second = demo_output()
    assert "Demo API key" in second
    assert "Demo HMAC signing key" in second
