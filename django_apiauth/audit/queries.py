"""Queries of the audit pages, built for tables with millions of rows.

* :func:`keyset_page` pages newest-first on ``(at, id)`` with a ``LIMIT``:
  never ``OFFSET``, never ``COUNT(*)``. A page is one index range scan
  whatever the table's size.
* :func:`overview` aggregates a bounded time window (default 24 h). If the
  window holds more than :data:`OVERVIEW_ROW_CAP` rows, it is narrowed to the
  newest ``OVERVIEW_ROW_CAP`` rows (found with one ``LIMIT 1 OFFSET cap``
  probe on the ``at`` index) and the page says so: the cost of the overview is
  bounded by the cap, not by the table. Bucket counts are index-only range
  counts on the ``at`` index and on the partial failures index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from ..models import AuditEvent
from .filters import Cursor

#: Most rows an overview aggregates; a busier window is narrowed to its newest rows.
OVERVIEW_ROW_CAP = 100_000
#: Bars in the "top …" charts.
TOP_N = 10

#: Overview presets: (window, bucket size).
OVERVIEW_RANGES: dict[str, tuple[timedelta, timedelta]] = {
    "1h": (timedelta(hours=1), timedelta(minutes=5)),
    "24h": (timedelta(hours=24), timedelta(hours=1)),
    "7d": (timedelta(days=7), timedelta(hours=6)),
    "30d": (timedelta(days=30), timedelta(days=1)),
}
DEFAULT_OVERVIEW_RANGE = "24h"


@dataclass
class Page:
    rows: list[AuditEvent]
    older: Cursor | None  # pass as ``before`` for the next (older) page
    newer: Cursor | None  # pass as ``after`` for the previous (newer) page


def keyset_page(queryset: QuerySet[AuditEvent], *, before: Cursor | None, after: Cursor | None,
                per_page: int) -> Page:
    """One page of ``queryset``, newest first, after/before a keyset position."""
    if after is not None:
        # Rows newer than ``after``: read oldest-first from ``after`` upwards, then flip.
        newer_qs = queryset.filter(at__gte=after.at).exclude(at=after.at, id__lte=after.id)
        rows = list(newer_qs.order_by("at", "id")[: per_page + 1])
        more_newer = len(rows) > per_page
        rows = list(reversed(rows[:per_page]))
        return Page(
            rows=rows,
            older=Cursor.of(rows[-1]) if rows else after,
            newer=Cursor.of(rows[0]) if rows and more_newer else None,
        )
    if before is not None:
        queryset = queryset.filter(at__lte=before.at).exclude(at=before.at, id__gte=before.id)
    rows = list(queryset.order_by("-at", "-id")[: per_page + 1])
    more_older = len(rows) > per_page
    rows = rows[:per_page]
    return Page(
        rows=rows,
        older=Cursor.of(rows[-1]) if rows and more_older else None,
        newer=(Cursor.of(rows[0]) if rows else before) if before is not None else None,
    )


@dataclass
class Bucket:
    start: datetime
    end: datetime
    success: int = 0
    failure: int = 0


@dataclass
class Overview:
    range_key: str
    since: datetime
    until: datetime
    bucket_size: timedelta
    capped_since: datetime | None  # rows older than this were left out (cap reached)
    buckets: list[Bucket] = field(default_factory=list)
    reasons: list[tuple[str, int]] = field(default_factory=list)
    ips: list[tuple[str, int]] = field(default_factory=list)
    credentials: list[tuple[str, int, int]] = field(default_factory=list)  # id, total, failures

    @property
    def total(self) -> int:
        return sum(b.success + b.failure for b in self.buckets)

    @property
    def failures(self) -> int:
        return sum(b.failure for b in self.buckets)


def overview(range_key: str, now: datetime | None = None, *,
             row_cap: int = OVERVIEW_ROW_CAP) -> Overview:
    """Aggregates of the overview page for one of :data:`OVERVIEW_RANGES`."""
    now = now or timezone.now()
    window, bucket_size = OVERVIEW_RANGES[range_key]
    since = now - window
    base = AuditEvent.objects.filter(at__gte=since, at__lte=now)
    # Bounded cost: probe the at index for the cap-th newest row of the window.
    edge = list(base.order_by("-at").values_list("at", flat=True)[row_cap: row_cap + 1])
    capped_since = edge[0] if edge else None
    if capped_since is not None:
        base = base.filter(at__gt=capped_since)
    result = Overview(range_key=range_key, since=since, until=now, bucket_size=bucket_size,
                      capped_since=capped_since)

    count = int(window / bucket_size)
    result.buckets = [
        Bucket(start=since + i * bucket_size, end=since + (i + 1) * bucket_size) for i in range(count)
    ]
    # One COUNT per bucket and outcome: each an index-only range scan (the at
    # index; the partial failures index), cheaper than one pass evaluating a
    # CASE per bucket on every row.
    # Exactly one lower and one upper bound per query, so that the planner's
    # range is the bucket's (not the whole window's).
    events = AuditEvent.objects.order_by()
    for i, bucket in enumerate(result.buckets):
        if capped_since is not None and bucket.end <= capped_since:
            continue  # older than the rows the cap kept
        lower = (Q(at__gt=capped_since) if capped_since is not None and capped_since >= bucket.start
                 else Q(at__gte=bucket.start))
        upper = Q(at__lt=bucket.end) if i < count - 1 else Q(at__lte=now)
        total = events.filter(lower, upper).count()
        bucket.failure = (
            events.filter(lower, upper, outcome=AuditEvent.FAILURE).count() if total else 0
        )
        bucket.success = max(total - bucket.failure, 0)

    failed = base.filter(outcome=AuditEvent.FAILURE)
    result.reasons = [
        (row["reason"], row["n"])
        for row in failed.values("reason").annotate(n=Count("id")).order_by("-n", "reason")[:TOP_N]
    ]
    result.ips = [
        (row["ip"], row["n"])
        for row in failed.exclude(ip__isnull=True).values("ip").annotate(n=Count("id"))
        .order_by("-n", "ip")[:TOP_N]
    ]
    result.credentials = [
        (row["credential_id"], row["n"], row["failed"])
        for row in base.filter(event="authenticate").exclude(credential_id="")
        .values("credential_id")
        .annotate(n=Count("id"), failed=Count("id", filter=Q(outcome=AuditEvent.FAILURE)))
        .order_by("-n", "credential_id")[:TOP_N]
    ]
    return result

