"""Several processes writing and sealing audit rows at once (run by test_audit_chain.py).

Usage: python -m tests.core.audit_writers DB_PATH|postgresql://… PROCESSES ROWS
       python -m tests.core.audit_writers --exit DB_PATH ROWS


Each process runs two threads with their own connections: one writes failure
rows at once and seals every few rows, the other writes success rows through
the buffer (``APIAUTH_AUDIT_BUFFER_SIZE = 4``). Prints one JSON object: the
verify report.

With ``--exit``, one process buffers ROWS success rows (buffer far from
full) and simply ends: the atexit hook must write them. Prints nothing.
"""

from __future__ import annotations

import json
import os
import sys
import threading


def _failures(n: int, rows: int, errors: list[str]) -> None:
    from django.db import connections

    from django_apiauth.core import audit

    try:
        for i in range(rows):
            audit.record(event="authenticate", scheme="api_key", outcome=audit.FAILURE,
                         reason="bad_secret", credential_id=f"p{n}-{i}",
                         detail={"writer": n, "i": i})
            if i % 7 == 0:
                audit.seal(batch_size=5)
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        connections.close_all()


def _successes(n: int, rows: int, errors: list[str]) -> None:
    from django.db import connections

    from django_apiauth.core import audit

    try:
        for i in range(rows):
            audit.record(event="authenticate", scheme="api_key", outcome=audit.SUCCESS,
                         reason="ok", credential_id=f"s{n}-{i}")
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        connections.close_all()


def _child(n: int, rows: int) -> int:
    from django.db import connections

    from django_apiauth.core import audit

    errors: list[str] = []
    threads = [threading.Thread(target=work, args=(n, rows, errors))
               for work in (_failures, _successes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result = audit.flush()
    connections.close_all()
    for error in [*errors, *result.errors]:
        print(f"writer {n}: {error}", file=sys.stderr)
    return 1 if errors or result.kept else 0


def main() -> None:
    exit_mode = sys.argv[1] == "--exit"
    if exit_mode:
        db_path, processes, rows = sys.argv[2], 1, int(sys.argv[3])
    else:
        db_path, processes, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    from django.conf import settings

    if db_path.startswith("postgresql://"):  # postgresql://user@host:port/name (a fresh database)
        from urllib.parse import urlsplit

        url = urlsplit(db_path)
        settings.DATABASES = {"default": {
            "ENGINE": "django.db.backends.postgresql", "NAME": url.path.lstrip("/"),
            "USER": url.username or "", "HOST": url.hostname or "", "PORT": str(url.port or ""),
        }}
    else:
        settings.DATABASES = {"default": {
            "ENGINE": "django.db.backends.sqlite3", "NAME": db_path, "OPTIONS": {"timeout": 60},
        }}
    settings.APIAUTH_AUDIT_BUFFER_SIZE = 1000 if exit_mode else 4
    settings.APIAUTH_AUDIT_BUFFER_SECONDS = 3600
    import django

    django.setup()
    from django.db import connection, connections

    from django_apiauth.core import audit
    from django_apiauth.models import AuditChainHead, AuditEvent

    with connection.schema_editor() as editor:
        editor.create_model(AuditEvent)
        editor.create_model(AuditChainHead)
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode=WAL")  # readers do not wait for the writer
    connections.close_all()
    if exit_mode:
        for i in range(rows):
            audit.record(event="authenticate", scheme="api_key", outcome=audit.SUCCESS,
                         reason="ok", credential_id=f"x{i}")
        assert audit.buffered() == rows
        return  # no flush(): the atexit hook writes them

    children = []
    for n in range(processes):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _child(n, rows)
            finally:
                os._exit(code)
        children.append(pid)
    failed = 0
    for pid in children:
        _pid, status = os.waitpid(pid, 0)
        failed += status != 0
    report = audit.verify()
    print(json.dumps({**report.as_dict(), "failed_writers": failed,
                      "rows": AuditEvent.objects.count()}))


if __name__ == "__main__":
    main()
