#!/usr/bin/env python
"""``seed_audit``: bulk-insert N synthetic audit events, fast (benchmark helper).

Used by ``benchmarks/audit_pages.py``; importable from any benchmark::

    from benchmarks.seed_audit import seed_audit
    seconds = seed_audit(1_000_000, using="large", per_day=35_000)

The rows look like a busy API's: about 9 in 10 successes, failures spread
over the common reason codes, four schemes, a few thousand credentials, users
and client addresses, increasing ``at`` (and ``id``) ending now. They are
written with one ``executemany`` per batch of plain tuples inside one
transaction (``COPY`` on PostgreSQL), bypassing the model layer: one million
rows take seconds, not minutes. Values are adapted with the backend's own
adapters, so the rows read back exactly like ones written by
:func:`django_apiauth.core.audit.record`.

Standalone (a throw-away SQLite file)::

    python benchmarks/seed_audit.py 1000000 --db /tmp/audit.sqlite3
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SCHEMES = ("api_key", "api_key", "api_key", "hmac", "client_cert", "jwt")
FAILURE_REASONS = (
    "bad_secret", "unknown_credential", "malformed", "expired", "revoked", "bad_signature",
    "replayed", "clock_skew", "ip_not_allowed", "insufficient_scope",
)
PATHS = ("/api/whoami/", "/api/echo/", "/api/orders/", "/api/orders/42/", "/api/invoices/")
AGENTS = ("python-requests/2.32", "curl/8.5.0", "Go-http-client/1.1", "billing-cron/3.1")
BATCH = 20_000


def seed_audit(count: int, *, using: str = "default", per_day: int = 35_000,
               now: datetime | None = None, seed: int = 7, credentials: int = 5_000,
               users: int = 1_000, addresses: int = 2_000) -> float:
    """Insert ``count`` events at ``per_day`` events a day, the newest at ``now``.

    Returns the seconds taken. Django must be set up and the audit table migrated.
    """
    from django.db import connections, transaction
    from django.utils import timezone

    from django_apiauth.models import AuditEvent

    started = time.perf_counter()
    rng = random.Random(seed)
    now = now or timezone.now()
    connection = connections[using]
    qn = connection.ops.quote_name
    fields = [f for f in AuditEvent._meta.concrete_fields if not f.primary_key]
    names = [f.attname for f in fields]
    columns = ", ".join(qn(f.column) for f in fields)
    table = qn(AuditEvent._meta.db_table)
    placeholders = ", ".join(["%s"] * len(fields))
    sql = f"INSERT INTO {table} ({columns}) VALUES ({placeholders})"
    empty_detail = AuditEvent._meta.get_field("detail").get_db_prep_save({}, connection)
    if connection.vendor == "sqlite":
        # What the SQLite adapter writes (naive UTC, str()), without its per-row time-zone work.
        def adapt_at(value: datetime) -> Any:
            return str(value.astimezone(UTC).replace(tzinfo=None))
    else:
        adapt_at = connection.ops.adapt_datetimefield_value
    credential_ids = [f"{rng.getrandbits(60):012x}"[:12] for _ in range(credentials)]
    ips = [f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}" for _ in range(addresses)]
    bad_ips = [f"203.0.113.{i}" for i in range(1, 255)] + [f"198.51.100.{i}" for i in range(1, 100)]
    step = timedelta(days=1) / per_day
    oldest = now - step * (count - 1)
    order = {name: i for i, name in enumerate(names)}
    template: list[Any] = [None] * len(names)
    template[order["event"]] = "authenticate"
    template[order["method"]] = "GET"
    template[order["request_id"]] = ""
    template[order["detail"]] = empty_detail
    # Integrity columns (docs/audit-integrity.md): synthetic rows carry no MAC
    # and are never sealed (verify_audit would report them; nothing here runs it).
    for name, value in (("mac", ""), ("seq", None), ("chain", "")):
        if name in order:
            template[order[name]] = value

    with transaction.atomic(using=using), connection.cursor() as cursor:
        indexes: list[str] = []
        if connection.vendor == "sqlite":
            cursor.execute("PRAGMA cache_size = -262144")
            # Building an index once over the loaded table is much faster than
            # random-order inserts into it row by row: drop and recreate the
            # table's own indexes (not the primary key).
            cursor.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = %s "
                "AND sql IS NOT NULL", [AuditEvent._meta.db_table],
            )
            indexes = [sql for _name, sql in cursor.fetchall()]
            for name in [row for row in _index_names(cursor, AuditEvent._meta.db_table)]:
                cursor.execute(f"DROP INDEX {qn(name)}")
        done = 0
        while done < count:
            n = min(BATCH, count - done)
            rows = []
            for i in range(done, done + n):
                row = template.copy()
                credential = rng.randrange(credentials)
                failed = rng.random() < 0.1
                row[order["at"]] = adapt_at(oldest + step * i)
                row[order["scheme"]] = SCHEMES[credential % len(SCHEMES)]
                if failed:
                    row[order["outcome"]] = "failure"
                    row[order["reason"]] = FAILURE_REASONS[rng.randrange(len(FAILURE_REASONS))]
                    row[order["user_id"]] = None
                    row[order["username"]] = ""
                    row[order["ip"]] = bad_ips[rng.randrange(len(bad_ips))] if rng.random() < 0.7 \
                        else ips[rng.randrange(addresses)]
                else:
                    user = credential % users + 1
                    row[order["outcome"]] = "success"
                    row[order["reason"]] = "ok"
                    row[order["user_id"]] = user
                    row[order["username"]] = f"svc{user}"
                    row[order["ip"]] = ips[(credential * 7) % addresses]
                row[order["credential_id"]] = credential_ids[credential]
                row[order["user_agent"]] = AGENTS[credential % len(AGENTS)]
                row[order["path"]] = PATHS[rng.randrange(len(PATHS))]
                rows.append(row)
            if connection.vendor == "postgresql":
                with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            else:
                cursor.executemany(sql, rows)
            done += n
        for statement in indexes:
            cursor.execute(statement)
        if connection.vendor == "sqlite":
            cursor.execute("PRAGMA cache_size = -2000")
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {table}")
    return time.perf_counter() - started


def _index_names(cursor: Any, table: str) -> list[str]:
    cursor.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = %s "
                   "AND sql IS NOT NULL", [table])
    return [name for (name,) in cursor.fetchall()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("count", type=int, help="Events to insert, e.g. 1000000.")
    parser.add_argument("--db", required=True, help="SQLite file (created and migrated if needed).")
    parser.add_argument("--per-day", type=int, default=35_000, help="Events per day (default 35 000).")
    args = parser.parse_args()

    import django
    from django.conf import settings
    from django.core.management import call_command

    settings.configure(
        INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes", "django_apiauth"],
        DATABASES={"default": {
            "ENGINE": "django.db.backends.sqlite3", "NAME": args.db,
            "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"},
        }},
        USE_TZ=True, SECRET_KEY=os.urandom(32).hex(), APIAUTH_PEPPER=os.urandom(32).hex(),
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
    )
    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    seconds = seed_audit(args.count, per_day=args.per_day)
    print(f"seeded {args.count} audit events in {seconds:.1f} s ({args.count / seconds:,.0f} rows/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
