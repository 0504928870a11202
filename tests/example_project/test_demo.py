"""`make demo` prints curl lines; each must behave as its comment says."""

import io
import itertools
import re
import shlex
from urllib.parse import urlsplit

import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def demo_output() -> str:
    out = io.StringIO()
    call_command("demo_setup", stdout=out)
    return out.getvalue()


def run_curl(client, line: str):
    args = shlex.split(line)[1:]
    headers, data, url = {}, None, None
    it = iter(args)
    for arg in it:
        if arg == "-H":
            name, _, value = next(it).partition(": ")
            headers["HTTP_" + name.upper().replace("-", "_")] = value
        elif arg == "-d":
            data = next(it)
        elif not arg.startswith("-"):
            url = arg
    path = urlsplit(url).path
    content_type = headers.pop("HTTP_CONTENT_TYPE", None)
    if data is not None:
        return client.post(path, data=data, content_type=content_type, **headers)
    return client.get(path, **headers)


def test_printed_curl_lines_behave_as_printed(client):
    output = demo_output()
    lines = output.splitlines()
    checked = 0
    for comment, line in itertools.pairwise(lines):
        if line.startswith("curl "):
            expected = int(re.match(r"# (\d{3})", comment).group(1))
            response = run_curl(client, line)
            assert response.status_code == expected, (comment, response.content)
            if expected == 401:
                assert response["WWW-Authenticate"]
            checked += 1
    assert checked >= 5


def test_demo_is_rerunnable(client):
    demo_output()
    second = demo_output()
    assert "Demo API key" in second
