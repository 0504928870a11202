"""Hostile filter parameters and stored values: 400 or an empty result, never a 500;
CR/LF, ANSI and bidi characters render inert; exports stream."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.http import StreamingHttpResponse
from django.test import Client

from django_apiauth.audit import export
from django_apiauth.models import AuditEvent

pytestmark = pytest.mark.django_db

EVENTS = "/auth/audit/events/"


@pytest.fixture
def raising_client(staff: Any) -> Client:
    """A client that re-raises server errors, so a 500 fails loudly with its traceback."""
    client = Client(raise_request_exception=True)
    client.force_login(staff)
    return client


BAD_FILTERS = [
    # (parameter, value): each must be refused with 400
    ("since", "yesterday"), ("since", "2026-13-45T99:99"), ("since", "0000-01-01T00:00"),
    ("since", "9999-12-31T23:59:59+14:00"), ("since", "1" * 500), ("since", "2026-01-01\x00"),
    ("until", "-1"), ("range", "1000y"), ("range", "'"), ("outcome", "maybe"),
    ("outcome", "success' OR '1'='1"), ("scheme", "api_key' --"), ("scheme", "%"),
    ("scheme", "x" * 33), ("reason", "bad secret"), ("reason", "a\x00b"), ("event", "<script>"),
    ("ip", "999.1.1.1"), ("ip", "10.0.0.0/8"), ("ip", "'; DROP TABLE x; --"), ("ip", "1" * 1000),
    ("ip", "::g"), ("user", "bob\x00"), ("user", "u" * 151), ("credential", "c" * 101),
    ("credential", "abc\r\ndef"), ("q", "\x00"), ("q", "\x1b[31m"), ("q", "x" * 201),
    ("q", "\u202e"), ("before", "1"), ("before", "-5-5"), ("before", "9" * 18 + "-1"),
    ("before", "1-" + "9" * 20), ("before", "1763900000000000-99999999999999999999"),
    ("after", "abc-def"), ("after", "1.5-2"), ("before", "1" * 100),
]


@pytest.mark.parametrize(("url", "param", "value"), [
    (url, param, value)
    for url in (EVENTS, "/auth/audit/export/csv/", "/auth/audit/export/jsonl/",
                "/auth/audit/credential/abc/", "/auth/audit/user/1/")
    for param, value in BAD_FILTERS
    # the credential timeline takes its credential from the path, not the query
    if not (url.startswith("/auth/audit/credential/") and param == "credential")
])
def test_bad_filter_is_400(raising_client: Client, param: str, value: str, url: str) -> None:
    response = raising_client.get(url, {param: value})
    assert response.status_code == 400, (param, value, response.status_code)
    assert not isinstance(response, StreamingHttpResponse)


@pytest.mark.parametrize(("param", "value"), [
    ("q", "'"), ("q", "%"), ("q", "%%%"), ("q", "_"), ("q", "\\"), ("q", "' OR 1=1 --"),
    ("user", "' OR '1'='1"), ("user", "%"), ("credential", "' OR 1=1 --"), ("credential", "%"),
    ("reason", "x"), ("scheme", "nope"), ("ip", "::1"), ("ip", "0.0.0.0"),  # noqa: S104
    ("since", "2999-01-01T00:00"), ("since", "1970-01-01T00:00"), ("range", ""),
    ("before", "0-0"), ("before", "99999999999999999-9223372036854775807"),
    ("after", "99999999999999999-9223372036854775807"), ("unknown", "ignored"),
])
def test_odd_but_valid_filters_give_a_page(raising_client: Client, make_event: Callable[..., Any],
                                           param: str, value: str) -> None:
    make_event(path="/api/x/")
    response = raising_client.get(EVENTS, {param: value})
    assert response.status_code == 200
    for row in response.context["rows"]:  # nothing matched by accident of quoting
        if param == "q":
            assert value in row["request"]


def test_repeated_and_numerous_parameters(raising_client: Client) -> None:
    response = raising_client.get(EVENTS + "?outcome=failure&outcome=success&q=a&q=b")
    assert response.status_code == 200  # the last value wins (QueryDict), never an error
    many = "&".join(f"p{i}=1" for i in range(1500))
    # More fields than DATA_UPLOAD_MAX_NUMBER_FIELDS: Django's SuspiciousOperation → 400.
    response = Client().get(EVENTS + "?" + many)
    assert response.status_code in (302, 400)


@pytest.mark.parametrize("value", ["0", "-1", "99999999999", "abc", "1.5", "1e3", "\x00"])
@pytest.mark.parametrize("param", ["expiring_days", "unused_days", "grace_days"])
def test_credential_overview_bad_numbers(raising_client: Client, param: str, value: str) -> None:
    response = raising_client.get("/auth/audit/credentials/", {param: value})
    assert response.status_code == 400


@pytest.mark.parametrize("value", ["1y", "'", "\x00", "24h' --"])
def test_overview_bad_range(raising_client: Client, value: str) -> None:
    assert raising_client.get("/auth/audit/", {"range": value}).status_code == 400


@pytest.mark.parametrize("path", [
    "/auth/audit/credential/" + "x" * 101 + "/", "/auth/audit/credential/%00/",
    "/auth/audit/credential/%E2%80%AE/", "/auth/audit/credential/a%0D%0Ab/",
    "/auth/audit/events/abc/", "/auth/audit/user/-1/", "/auth/audit/export/xml/",
    "/auth/audit/export/../",
])
def test_bad_paths_are_404(raising_client: Client, path: str) -> None:
    assert raising_client.get(path).status_code == 404


# -- stored values render inert -------------------------------------------------------------

HOSTILE = {
    "user_agent": "Mozilla\r\nX-Forged: yes\x1b[2J\x1b[31mred\u202eevil\u2066",
    "path": "/api/\u202egnp.exe\r\n<script>alert(1)</script>",
    "username": "=HYPERLINK(\"http://evil\")",
    "credential_id": "+cmd|' /C calc'!A0",
    "request_id": "@SUM(1+1)\x07",
    "scheme": "-2+3",
    "reason": "bad_secret",
}


@pytest.fixture
def hostile_event(make_event: Callable[..., Any]) -> AuditEvent:
    # Written straight to the table: the audit writer would have sanitised it already.
    return make_event(**HOSTILE, ip="203.0.113.7",
                      detail={"note": "line1\r\nline2\x1b[0m\u202e", "\u202ekey": ["\x00"]})


@pytest.mark.parametrize("page", ["list", "detail", "credential", "overview"])
def test_hostile_values_render_inert(staff_client: Client, hostile_event: AuditEvent, page: str) -> None:
    url, params = {
        "list": (EVENTS, {}),
        "detail": (f"/auth/audit/events/{hostile_event.id}/", {}),
        "credential": (EVENTS, {"credential": HOSTILE["credential_id"]}),
        "overview": ("/auth/audit/", {}),
    }[page]
    response = staff_client.get(url, params)
    assert response.status_code == 200
    html = response.content.decode()
    for char in ("\r", "\x1b", "\u202e", "\u2066", "\x07", "\x00"):
        assert char not in html, (page, repr(char))
    assert "<script>alert(1)</script>" not in html
    if page in ("list", "detail", "credential"):
        assert "/api/\\u202Egnp.exe\\u000D\\u000A&lt;script&gt;" in html
    if page == "detail":
        assert "Mozilla\\u000D\\u000AX-Forged: yes\\u001B[2J" in html


def test_csv_export_is_inert_and_formula_free(staff_client: Client, hostile_event: AuditEvent) -> None:
    response = staff_client.get("/auth/audit/export/csv/")
    assert response.status_code == 200
    assert isinstance(response, StreamingHttpResponse)
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith('attachment; filename="audit-')
    body = b"".join(response.streaming_content).decode()
    for char in ("\x1b", "\u202e", "\u2066", "\x07", "\x00"):
        assert char not in body
    lines = body.split("\r\n")
    assert len([line for line in lines if line]) == 2  # the header and one row: no forged line
    rows = list(csv.DictReader(io.StringIO(body)))
    row = rows[0]
    for field in ("username", "credential_id", "request_id", "scheme"):
        assert row[field].startswith("'"), (field, row[field])
        assert row[field][1:].startswith(HOSTILE[field][0])
    assert row["user_agent"].startswith("Mozilla\\u000D\\u000AX-Forged")
    assert row["reason"] == "bad_secret"
    assert json.loads(row["detail"])["note"].startswith("line1")


def test_jsonl_export_is_inert(staff_client: Client, hostile_event: AuditEvent) -> None:
    response = staff_client.get("/auth/audit/export/jsonl/")
    assert isinstance(response, StreamingHttpResponse)
    body = b"".join(response.streaming_content).decode()
    assert body.isascii()
    lines = body.splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert "\u202e" not in json.dumps(obj, ensure_ascii=False)
    assert obj["path"].startswith("/api/\\u202Egnp.exe\\u000D\\u000A")
    assert obj["user_agent"].startswith("Mozilla\\u000D\\u000A")
    assert obj["ip"] == "203.0.113.7"
    assert "\\u202Ekey" in obj["detail"]


# -- exports stream ---------------------------------------------------------------------------


def test_export_of_a_huge_range_streams_in_chunks(staff_client: Client, make_event: Callable[..., Any],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The export reads with ``iterator(chunk_size)`` and yields one chunk per batch of rows:
    a huge range is never loaded into memory (nor into one string)."""
    AuditEvent.objects.bulk_create([
        AuditEvent(at=AuditEvent._meta.get_field("at").default() - timedelta(seconds=i),
                   event="authenticate", outcome="failure", reason="bad_secret", credential_id=f"k{i}")
        for i in range(25)
    ])
    monkeypatch.setattr(export, "CHUNK_SIZE", 10)
    calls: list[int] = []
    real_iterator = AuditEvent.objects.none().iterator.__func__  # type: ignore[attr-defined]

    def spy(self: Any, chunk_size: int | None = None) -> Any:
        calls.append(chunk_size or 0)
        return real_iterator(self, chunk_size=chunk_size)

    monkeypatch.setattr(type(AuditEvent.objects.all()), "iterator", spy)
    for fmt, expected_lines in (("csv", 26), ("jsonl", 25)):
        calls.clear()
        response = staff_client.get(f"/auth/audit/export/{fmt}/", {"range": "all"})
        assert isinstance(response, StreamingHttpResponse)
        assert calls == []  # nothing read before the body is consumed
        chunks = list(response.streaming_content)
        assert calls == [10]
        assert len(chunks) >= 3  # 25 rows in chunks of 10: streamed, not one blob
        body = b"".join(chunks).decode()
        assert len(body.strip().splitlines()) == expected_lines


def test_export_respects_the_filters(staff_client: Client, make_event: Callable[..., Any]) -> None:
    make_event(outcome="success", reason="ok", credential_id="a")
    make_event(reason="expired", credential_id="b")
    body = b"".join(staff_client.get("/auth/audit/export/jsonl/", {"outcome": "failure"})
                    .streaming_content).decode()
    assert [json.loads(line)["credential_id"] for line in body.splitlines()] == ["b"]
