"""``manage.py audit_log``: the newest audit events, filtered (DESIGN §5, §6).

Built for tables with millions of rows: every filter matches the leading
columns of an :class:`~django_apiauth.models.AuditEvent` index, results are
read newest first with a ``LIMIT`` and streamed, and nothing is counted.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from itertools import islice
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db.models import QuerySet
from django.utils import timezone

from ...core import audit
from ...core.durations import parse_duration
from ...models import AuditEvent
from ._base import ApiAuthCommand

FIELDS = (
    "id", "at", "event", "scheme", "outcome", "reason", "username", "credential_id", "ip",
    "user_agent", "method", "path", "request_id", "detail",
)
# Human table: (heading, field, width); the last column takes the rest of the line.
COLUMNS = (
    ("AT (UTC)", "at", 20), ("OUTCOME", "outcome", 7), ("SCHEME", "scheme", 11),
    ("EVENT", "event", 18), ("REASON", "reason", 19), ("USER", "username", 16),
    ("CREDENTIAL", "credential_id", 14), ("IP", "ip", 15), ("REQUEST", "request", 0),
)


class Command(ApiAuthCommand):
    help = (
        "Show audit events, newest first: authentication attempts and credential lifecycle "
        "events. --json prints one JSON object per line."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", metavar="DURATION",
                            help="Only events from the last 90s / 15m / 12h / 30d, or since an "
                                 "ISO 8601 time such as 2025-01-31T08:00:00Z.")
        parser.add_argument("--outcome", choices=(AuditEvent.SUCCESS, AuditEvent.FAILURE))
        parser.add_argument("--scheme", metavar="S", help="Scheme or credential kind, e.g. api_key.")
        parser.add_argument("--reason", metavar="R", help="Reason code, e.g. bad_secret or expired.")
        parser.add_argument("--credential", metavar="ID",
                            help="Public id of one credential, e.g. an API key's lookup id.")
        parser.add_argument("--limit", type=int, default=100, metavar="N",
                            help="At most N events (default 100).")
        super().add_arguments(parser)

    def run(self, *args: Any, **options: Any) -> None:
        limit = options["limit"]
        if limit < 1:
            raise CommandError("--limit must be at least 1, e.g. --limit 100.")
        events = self.select(options, limit)
        if options["json"]:
            for event in events:
                self.write_json(as_json(event))
            return
        self.write_table(events)

    def select(self, options: dict[str, Any], limit: int) -> Iterator[AuditEvent]:
        qs: QuerySet[AuditEvent] = AuditEvent.objects.only(*FIELDS)
        if options["since"]:
            qs = qs.filter(at__gte=since(options["since"]))
        if options["scheme"]:
            qs = qs.filter(scheme=options["scheme"])
        if options["credential"]:
            qs = qs.filter(credential_id=options["credential"])
        reason = options["reason"]
        if options["outcome"]:
            qs = qs.filter(outcome=options["outcome"])
        elif reason:
            # The (outcome, reason, -at) index needs the outcome: read each
            # outcome's newest matches from the index and merge them, instead
            # of scanning the whole table for a rare reason code.
            per_outcome = [
                _newest(qs.filter(outcome=outcome, reason=reason), limit)
                for outcome, _label in AuditEvent.OUTCOMES
            ]
            return islice(heapq.merge(*per_outcome, key=_sort_key, reverse=True), limit)
        if reason:
            qs = qs.filter(reason=reason)
        return _newest(qs, limit)

    def write_table(self, events: Iterable[AuditEvent]) -> None:
        header = _row(heading for heading, _field, _width in COLUMNS)
        shown = False
        for event in events:
            if not shown:
                self.stdout.write(header)
                shown = True
            cells = {
                "at": event.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                "request": f"{event.method} {event.path}".strip(),
            }
            values = (cells.get(field, getattr(event, field, None)) for _h, field, _w in COLUMNS)
            line = _row(values)
            if event.outcome == AuditEvent.FAILURE:
                line = self.style.ERROR(line)
            self.stdout.write(line)
        if not shown:
            self.stdout.write("No audit events match.")


def since(value: str) -> datetime:
    """``--since``: a duration back from now, or an ISO 8601 time (UTC if naive)."""
    try:
        return timezone.now() - parse_duration(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(
            f"--since: {value!r} is neither a duration (90s, 15m, 12h, 30d) "
            "nor an ISO 8601 time (2025-01-31T08:00:00Z)."
        ) from None
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment, UTC)
    return moment


def as_json(event: AuditEvent) -> dict[str, Any]:
    data: dict[str, Any] = {field: getattr(event, field) for field in FIELDS}
    data["at"] = event.at.isoformat()
    return data


def _newest(qs: QuerySet[AuditEvent], limit: int) -> Iterator[AuditEvent]:
    return qs.order_by("-at", "-id")[:limit].iterator(chunk_size=min(limit, 2000))


def _sort_key(event: AuditEvent) -> tuple[datetime, int]:
    return (event.at, event.id)


def _row(values: Iterable[Any]) -> str:
    cells = []
    for (_heading, _field, width), value in zip(COLUMNS, values, strict=True):
        # Stored values are already sanitised by the audit writer; do it again
        # so that no row can ever move the terminal's cursor.
        text = audit.sanitise("" if value is None else value, width or 200)
        cells.append(f"{text:<{width}}" if width else text)
    return "  ".join(cells).rstrip()
