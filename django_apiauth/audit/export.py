"""Streamed exports of audit rows: CSV and JSON lines, for any filter.

The rows are read with ``QuerySet.iterator(chunk_size=…)`` (a server-side
cursor on PostgreSQL, ``fetchmany`` on SQLite) and written out one chunk at a
time through :class:`~django.http.StreamingHttpResponse`: memory stays
bounded by the chunk size whatever the range. Text cells are made inert
(:mod:`django_apiauth.audit.text`): control and bidi characters become
visible ``\\uXXXX`` escapes and, in CSV, no cell can start a spreadsheet
formula. JSON lines escape every non-ASCII character.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from django.db.models import QuerySet

from ..models import AuditEvent
from .text import csv_cell, inert

FIELDS = (
    "id", "at", "event", "scheme", "outcome", "reason", "username", "credential_id", "ip",
    "user_agent", "method", "path", "request_id", "detail",
)
#: Rows per database round trip and per chunk written to the client.
CHUNK_SIZE = 2_000
FORMATS = {
    "csv": ("text/csv; charset=utf-8", "csv"),
    "jsonl": ("application/x-ndjson; charset=utf-8", "jsonl"),
}


def _rows(queryset: QuerySet[AuditEvent]) -> Iterator[AuditEvent]:
    return queryset.only(*FIELDS).order_by("-at", "-id").iterator(chunk_size=CHUNK_SIZE)


def inert_detail(value: Any) -> Any:
    """Recursively inert copy of a ``detail`` value."""
    if isinstance(value, dict):
        return {inert(k): inert_detail(v) for k, v in value.items()}
    if isinstance(value, list):
        return [inert_detail(v) for v in value]
    if isinstance(value, str):
        return inert(value)
    return value


def as_dict(event: AuditEvent) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name in FIELDS:
        value = getattr(event, name)
        if name == "at":
            value = value.isoformat()
        elif name == "detail":
            value = inert_detail(value)
        elif isinstance(value, str):
            value = inert(value)
        data[name] = value
    return data


def csv_stream(queryset: QuerySet[AuditEvent]) -> Iterator[str]:
    """The header line, then one CSV chunk per :data:`CHUNK_SIZE` rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(FIELDS)
    pending = 0
    for event in _rows(queryset):
        row = []
        for name in FIELDS:
            value = getattr(event, name)
            if name == "at":
                value = value.isoformat()
            elif name == "detail":
                value = json.dumps(value, ensure_ascii=True, sort_keys=True, default=str)
            row.append(csv_cell(value))
        writer.writerow(row)
        pending += 1
        if pending >= CHUNK_SIZE:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    yield buffer.getvalue()


def jsonl_stream(queryset: QuerySet[AuditEvent]) -> Iterator[str]:
    """One JSON object per line, in chunks of :data:`CHUNK_SIZE` lines."""
    lines: list[str] = []
    for event in _rows(queryset):
        lines.append(json.dumps(as_dict(event), ensure_ascii=True, default=str))
        if len(lines) >= CHUNK_SIZE:
            yield "\n".join(lines) + "\n"
            lines = []
    if lines:
        yield "\n".join(lines) + "\n"
