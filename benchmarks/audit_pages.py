#!/usr/bin/env python
"""Audit console render time with 10 000 and 1 000 000 audit events (issue 7, item 8).

    .venv/bin/python benchmarks/audit_pages.py            # 10k and 1M events, about 2-3 minutes
    .venv/bin/python benchmarks/audit_pages.py --quick    # 1k and 20k events, seconds (smoke run)

One SQLite file per table size in a temporary directory (WAL, as the example
project), each migrated and seeded by :func:`benchmarks.seed_audit.seed_audit`
at the same rate (35 000 events a day, ending now: the 10k table holds about
7 hours, the 1M table about 4 weeks). Full requests go through Django's test
client (session login, middleware, templates, the admin's base template) as a
staff user; sizes are interleaved round after round so machine drift hits both
alike; each figure is the median of all requests of a page and size.

Pages timed:

* ``list``: ``/auth/audit/events/`` (default window, newest 50): **the target
  row**: 1M within 1.5x of 10k;
* ``list, failures by reason``, ``list, one credential``, ``list, page 2``
  (keyset cursor): the indexed filters and paging;
* ``overview 24h``: the charts. Its cost follows the rows inside the window
  (bounded by ``OVERVIEW_ROW_CAP``), not the table: reported for information.

Prints a table and writes JSON to ``benchmarks/results/``. The exit status is
0 whatever the verdict; non-zero only if a page does not answer 200.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import types
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS_DIR = ROOT / "benchmarks" / "results"
TARGET_RATIO = 1.5
PER_DAY = 35_000


class AliasRouter:
    """Every query of every model to one alias, switched between sizes."""

    alias = "default"

    def db_for_read(self, model: Any, **hints: Any) -> str:
        return self.alias

    def db_for_write(self, model: Any, **hints: Any) -> str:
        return self.alias

    def allow_relation(self, *args: Any, **hints: Any) -> bool:
        return True

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        return True


ROUTER = AliasRouter()


def configure(tmpdir: Path, aliases: list[str]) -> None:
    import django
    from django.conf import settings

    urls = types.ModuleType("benchmarks._audit_pages_urls")
    sys.modules[urls.__name__] = urls
    options = {"init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
               "transaction_mode": "IMMEDIATE"}
    settings.configure(
        DEBUG=False,
        SECRET_KEY="audit-pages-benchmark-" + os.urandom(16).hex(),
        APIAUTH_PEPPER="audit-pages-benchmark-pepper-" + os.urandom(16).hex(),
        ALLOWED_HOSTS=["testserver"],
        INSTALLED_APPS=[
            "django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
            "django.contrib.sessions", "django.contrib.messages", "rest_framework", "django_apiauth",
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
        ],
        TEMPLATES=[{
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "APP_DIRS": True,
            "OPTIONS": {"context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]},
        }],
        ROOT_URLCONF=urls.__name__,
        DATABASES={
            alias: {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmpdir / f"{alias}.sqlite3"),
                    "OPTIONS": dict(options), "CONN_MAX_AGE": None}
            for alias in ["default", *aliases]
        },
        DATABASE_ROUTERS=[ROUTER],
        STATIC_URL="/static/",
        USE_TZ=True, TIME_ZONE="UTC", USE_I18N=True,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
        CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
        SILENCED_SYSTEM_CHECKS=["apiauth.W002", "apiauth.W005"],
        LOGGING={"version": 1, "disable_existing_loggers": False,
                 "loggers": {"django.request": {"level": "ERROR"}}},
    )
    django.setup()
    from django.contrib import admin
    from django.urls import include, path

    urls.urlpatterns = [  # type: ignore[attr-defined]
        path("admin/", admin.site.urls),
        path("auth/", include("django_apiauth.urls")),
    ]


def prepare(alias: str, size: int) -> tuple[Any, float]:
    """Migrate, seed ``size`` events, log a staff user in; returns the client and seed time."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client

    from benchmarks.seed_audit import seed_audit

    ROUTER.alias = alias
    call_command("migrate", database=alias, verbosity=0, interactive=False)
    seconds = seed_audit(size, using=alias, per_day=PER_DAY)
    user = get_user_model()._default_manager.db_manager(alias).create_superuser(
        "bench", "bench@example.com", None)
    client = Client(raise_request_exception=True)
    client.force_login(user)
    with __import__("django").db.connections[alias].cursor() as cursor:
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return client, seconds


def pages(alias: str, client: Any) -> dict[str, str]:
    """URL of every timed page for this table (the cursor and credential come from its rows)."""
    from django_apiauth.audit.filters import Cursor
    from django_apiauth.models import AuditEvent

    ROUTER.alias = alias
    rows = list(AuditEvent.objects.order_by("-at", "-id")[50:51])
    credential = AuditEvent.objects.order_by("-id").values_list("credential_id", flat=True)[0]
    return {
        "list": "/auth/audit/events/",
        "list, failures by reason": "/auth/audit/events/?outcome=failure&reason=expired",
        "list, one credential": f"/auth/audit/events/?credential={credential}",
        "list, page 2": f"/auth/audit/events/?before={Cursor.of(rows[0]).encode()}",
        "overview 24h": "/auth/audit/",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="Audit console render time, 10k vs 1M events.")
    parser.add_argument("--quick", action="store_true", help="1k and 20k events, few rounds (smoke run).")
    parser.add_argument("--rounds", type=int, default=None, help="Rounds (default 30; --quick 5).")
    parser.add_argument("--batch", type=int, default=3, help="Requests per page, size and round.")
    args = parser.parse_args()
    sizes = (1_000, 20_000) if args.quick else (10_000, 1_000_000)
    rounds = args.rounds or (5 if args.quick else 30)
    small, large = sizes
    tmpdir = Path(tempfile.mkdtemp(prefix="apiauth-audit-bench-"))
    try:
        aliases = {size: f"events_{size}" for size in sizes}
        configure(tmpdir, list(aliases.values()))
        clients: dict[int, Any] = {}
        urls: dict[int, dict[str, str]] = {}
        seeded: dict[int, float] = {}
        for size in sizes:
            print(f"seeding {size:,} events ...", file=sys.stderr, flush=True)
            clients[size], seeded[size] = prepare(aliases[size], size)
            print(f"  {seeded[size]:.1f} s", file=sys.stderr, flush=True)
            urls[size] = pages(aliases[size], clients[size])
        names = list(urls[small])
        times: dict[tuple[str, int], list[float]] = {(n, s): [] for n in names for s in sizes}
        for size in sizes:  # warm-up: templates, statement caches, page cache
            ROUTER.alias = aliases[size]
            for name in names:
                for _ in range(2):
                    response = clients[size].get(urls[size][name])
                    if response.status_code != 200:
                        print(f"{name} ({size}) answered {response.status_code}", file=sys.stderr)
                        return 1
        for round_no in range(rounds):
            order = list(sizes) if round_no % 2 == 0 else list(reversed(sizes))
            for size in order:
                ROUTER.alias = aliases[size]
                for name in names:
                    for _ in range(args.batch):
                        started = time.perf_counter()
                        response = clients[size].get(urls[size][name])
                        times[(name, size)].append(time.perf_counter() - started)
                        assert response.status_code == 200
        result: dict[str, Any] = {
            "when": datetime.now(UTC).isoformat(), "sizes": list(sizes), "rounds": rounds,
            "batch": args.batch, "per_day": PER_DAY, "seed_seconds": {str(s): seeded[s] for s in sizes},
            "python": sys.version.split()[0], "pages": {},
        }
        print()
        print(f"Audit console, median ms per request ({rounds} rounds x {args.batch}; SQLite, WAL)")
        print(f"{'page':<28}{small:>12,}{large:>12,}{'ratio':>8}  target")
        for name in names:
            a = statistics.median(times[(name, small)]) * 1000
            b = statistics.median(times[(name, large)]) * 1000
            ratio = b / a
            verdict = ("PASS" if ratio <= TARGET_RATIO else "FAIL") if name == "list" else "(info)"
            print(f"{name:<28}{a:>12.2f}{b:>12.2f}{ratio:>8.2f}  {verdict}")
            result["pages"][name] = {"ms": {str(small): a, str(large): b}, "ratio": ratio}
        print(f"\nseeding: {small:,} events {seeded[small]:.1f} s, {large:,} events {seeded[large]:.1f} s")
        print(f"target: list page with {large:,} events within {TARGET_RATIO}x of {small:,}")
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        out = RESULTS_DIR / f"audit-pages-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
        out.write_text(json.dumps(result, indent=2))
        print(f"written: {out.relative_to(ROOT)}")
        return 0
    finally:
        from django.db import connections

        connections.close_all()
        shutil.rmtree(tmpdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
