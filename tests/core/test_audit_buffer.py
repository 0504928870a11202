"""Buffered successful-authentication audit rows (APIAUTH_AUDIT_BUFFER_SIZE)."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from django.db import OperationalError
from django.test import override_settings
from freezegun import freeze_time

from django_apiauth.core import audit, lifecycle
from django_apiauth.models import ApiKey, AuditEvent

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
WHOAMI = "/api/whoami/"


@pytest.fixture(autouse=True)
def empty_buffer() -> Iterator[None]:
    audit._buffer.clear()
    yield
    audit._buffer.clear()


@pytest.fixture
def buffering() -> Iterator[None]:
    with override_settings(APIAUTH_AUDIT_BUFFER_SIZE=3, APIAUTH_AUDIT_BUFFER_SECONDS=3600):
        yield


def success(i: int = 0) -> None:
    audit.record(event="authenticate", scheme="api_key", outcome=audit.SUCCESS, reason="ok",
                 credential_id=f"k{i}")


def auth(key: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Api-Key {key}"}


def test_buffering_is_on_by_default(settings):
    from django.core.signals import setting_changed

    del settings.APIAUTH_AUDIT_BUFFER_SIZE
    del settings.APIAUTH_AUDIT_BUFFER_SECONDS
    # Deleting a setting sends no setting_changed: empty the settings memo by hand.
    setting_changed.send(sender=None, setting="APIAUTH_AUDIT_BUFFER_SIZE", value=None, enter=True)
    assert (audit.app_settings.AUDIT_BUFFER_SIZE, audit.app_settings.AUDIT_BUFFER_SECONDS) == (50, 1.0)


def test_off_every_row_written_at_once():
    with override_settings(APIAUTH_AUDIT_BUFFER_SIZE=0):
        success()
    assert audit.buffered() == 0
    assert AuditEvent.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_flushed_in_one_bulk_insert_when_the_buffer_is_full(buffering):
    success(0)
    success(1)
    assert (audit.buffered(), AuditEvent.objects.count()) == (2, 0)
    success(2)
    assert (audit.buffered(), AuditEvent.objects.count()) == (0, 3)
    assert list(AuditEvent.objects.order_by("id").values_list("credential_id", flat=True)) == [
        "k0", "k1", "k2"]


@pytest.mark.django_db(transaction=True)
def test_flushed_when_the_oldest_row_is_too_old():
    with override_settings(APIAUTH_AUDIT_BUFFER_SIZE=100, APIAUTH_AUDIT_BUFFER_SECONDS=2), \
            freeze_time("2026-01-01 12:00:00") as frozen:
        success(0)
        frozen.tick(1)
        success(1)
        assert AuditEvent.objects.count() == 0
        frozen.tick(1.5)
        success(2)
        assert (audit.buffered(), AuditEvent.objects.count()) == (0, 3)


def test_not_flushed_inside_a_transaction_until_the_request_finished(buffering):
    """A full buffer never writes inside the request's transaction (its rollback
    would take other requests' rows with it)."""
    for i in range(5):
        success(i)
    assert (audit.buffered(), AuditEvent.objects.count()) == (5, 0)
    audit._on_request_finished()  # the request_finished receiver
    assert (audit.buffered(), AuditEvent.objects.count()) == (0, 5)


def test_request_finished_flushes_when_due(client, api_key):
    _obj, key = api_key
    with override_settings(APIAUTH_AUDIT_BUFFER_SIZE=100, APIAUTH_AUDIT_BUFFER_SECONDS=5), \
            freeze_time("2026-01-01 12:00:00") as frozen:
        assert client.get(WHOAMI, **auth(key)).status_code == 200
        assert audit.buffered() == 1
        assert not AuditEvent.objects.filter(event="authenticate").exists()
        frozen.tick(6)
        assert client.get(WHOAMI, **auth(key)).status_code == 200
        assert audit.buffered() == 0
    assert AuditEvent.objects.filter(event="authenticate", outcome="success").count() == 2


def test_failures_and_lifecycle_rows_are_written_at_once(client, api_key, buffering):
    obj, key = api_key
    assert client.get(WHOAMI, **auth(key[:-1] + ("A" if key[-1] != "A" else "B"))).status_code == 401
    assert client.get(WHOAMI, **auth(key)).status_code == 200
    lifecycle.revoke(obj, reason="test")
    rows = list(AuditEvent.objects.order_by("id").values_list("event", "outcome"))
    assert ("authenticate", "failure") in rows and ("credential.revoked", "success") in rows
    assert ("authenticate", "success") not in rows
    assert audit.buffered() == 1
    audit.flush()
    assert AuditEvent.objects.filter(event="authenticate", outcome="success").count() == 1


def test_buffered_rows_join_the_chain(buffering):
    for i in range(2):
        success(i)
    audit.record(event="authenticate", scheme="api_key", outcome=audit.FAILURE,
                 reason="bad_secret")
    assert audit.flush().written == 2
    report = audit.verify()
    assert report.ok and report.checked == 3


def test_flush_with_nothing_buffered():
    result = audit.flush()
    assert (result.written, result.kept, result.errors) == (0, 0, [])


def _down(*args: Any, **kwargs: Any) -> None:
    raise OperationalError("connection refused")


def test_database_down_while_flushing_keeps_the_rows(buffering, caplog):
    success(0)
    success(1)
    with mock.patch.object(audit._CompiledInsert, "execute_many", _down), \
            caplog.at_level(logging.WARNING, logger="django_apiauth"):
        result = audit.flush()
    assert (result.written, result.kept, result.errors) == (0, 2, ["OperationalError"])
    assert audit.buffered() == 2 and AuditEvent.objects.count() == 0
    assert "Could not write 2 buffered audit rows" in caplog.text
    assert "k0" not in caplog.text  # no row values in the log
    assert audit.flush().written == 2
    assert AuditEvent.objects.count() == 2 and audit.verify().ok


def test_database_down_on_the_request_path_is_never_a_500(client, api_key):
    _obj, key = api_key
    with override_settings(APIAUTH_AUDIT_BUFFER_SIZE=1, APIAUTH_AUDIT_BUFFER_SECONDS=3600), \
            mock.patch.object(audit._CompiledInsert, "execute_many", _down):
        response = client.get(WHOAMI, **auth(key))  # full at once: flushed after the response
    assert response.status_code == 200
    assert audit.buffered() == 1
    audit.flush()
    assert AuditEvent.objects.filter(event="authenticate", outcome="success").count() == 1


class _RefusingInsert:
    """The audit INSERT of a database that refuses every write (failure injection)."""

    def __init__(self, real: Any) -> None:
        self.params = real.params
        self.statement = self

    def execute(self, *args: Any, **kwargs: Any) -> None:
        _down()

    execute_many = execute


@pytest.fixture
def audit_database_down(monkeypatch: pytest.MonkeyPatch) -> None:
    real = audit._compiled
    monkeypatch.setattr(audit, "_compiled", lambda connection: _RefusingInsert(real(connection)))


@pytest.mark.django_db(transaction=True)
def test_after_a_failed_write_successes_are_written_at_once_and_refused_if_that_fails(caplog, monkeypatch):
    """Back-pressure: while the audit database refuses writes, the buffer stops
    taking rows, so nothing piles up in memory and no success goes unrecorded:
    the synchronous INSERT raises (the request becomes a 503)."""
    real = audit._compiled
    with override_settings(APIAUTH_AUDIT_BUFFER_SIZE=10, APIAUTH_AUDIT_BUFFER_SECONDS=3600):
        monkeypatch.setattr(audit, "_compiled", lambda connection: _RefusingInsert(real(connection)))
        for i in range(10):
            success(i)  # the tenth fills the buffer; its flush fails
        assert audit.buffered() == 10
        for i in range(10, 15):
            with pytest.raises(audit.AuditUnavailable):
                success(i)
        assert audit.buffered() == 10  # never more than one batch
        monkeypatch.setattr(audit, "_compiled", real)
    assert audit._buffer.dropped == 0
    success(15)  # the database is back, the retry pause not over: written at once
    assert set(AuditEvent.objects.values_list("credential_id", flat=True)) == {"k15"}
    audit.flush()
    ids = set(AuditEvent.objects.values_list("credential_id", flat=True))
    assert ids == {f"k{i}" for i in [*range(10), 15]}


def test_success_on_the_request_path_is_a_503_while_the_audit_database_is_down(client, api_key,
                                                                               audit_database_down):
    _obj, key = api_key
    with override_settings(APIAUTH_AUDIT_BUFFER_SIZE=1, APIAUTH_AUDIT_BUFFER_SECONDS=3600):
        assert client.get(WHOAMI, **auth(key)).status_code == 200  # buffered; its flush fails
        assert client.get(WHOAMI, **auth(key)).status_code == 503  # back-pressure: fail closed
    assert audit.buffered() == 1


def test_appending_from_many_threads_loses_nothing():
    with override_settings(APIAUTH_AUDIT_BUFFER_SIZE=100_000, APIAUTH_AUDIT_BUFFER_SECONDS=3600):
        def writer(n: int) -> None:
            for i in range(250):
                success(n * 1000 + i)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert audit.buffered() == 2000
        assert audit.flush().written == 2000
    assert AuditEvent.objects.values("credential_id").distinct().count() == 2000
    assert AuditEvent.objects.values("mac").distinct().count() == 2000  # nonces never repeat


@pytest.mark.django_db(transaction=True)
def test_an_idle_process_still_writes_within_the_age_limit():
    """The timer thread flushes when no further request comes."""
    with override_settings(APIAUTH_AUDIT_BUFFER_SIZE=100, APIAUTH_AUDIT_BUFFER_SECONDS=0.05):
        success(0)
        timer = audit._buffer.timer
        assert timer is not None
        timer.join(timeout=30)
    assert audit.buffered() == 0
    assert AuditEvent.objects.count() == 1


def test_no_loss_on_normal_exit(tmp_path):
    db = tmp_path / "exit.sqlite3"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'example_project'}"}
    done = subprocess.run(  # noqa: S603 (our own helper, fixed arguments)
        [sys.executable, "-m", "tests.core.audit_writers", "--exit", str(db), "25"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(db) as conn:
        count, = conn.execute(
            "SELECT COUNT(*) FROM django_apiauth_auditevent WHERE outcome = 'success'").fetchone()
    assert count == 25


def test_issue_is_unbuffered_even_when_on(user, buffering):
    lifecycle.issue(ApiKey, owner=user, name="k")
    assert AuditEvent.objects.filter(event="credential.issued").count() == 1
    assert audit.buffered() == 0


@pytest.mark.django_db(transaction=True)
def test_a_failing_flush_when_full_never_raises_into_record(buffering, caplog):
    with mock.patch.object(audit._CompiledInsert, "execute_many", _down):
        for i in range(4):
            success(i)  # the third fills the buffer: the flush fails, record() does not
    # The fourth came after the failed flush: written at once (back-pressure).
    assert audit.buffered() == 3
    assert AuditEvent.objects.count() == 1
    assert "OperationalError" in caplog.text
    audit.flush()
    assert AuditEvent.objects.count() == 4


@pytest.mark.django_db(transaction=True)
def test_a_misspelt_audit_database_never_raises_into_a_buffered_success(caplog):
    with override_settings(APIAUTH_AUDIT_BUFFER_SIZE=1, APIAUTH_AUDIT_BUFFER_SECONDS=3600,
                           APIAUTH_AUDIT_DATABASE="nope"):
        success(0)  # full at once: the flush fails and is logged
        assert audit.buffered() == 1
    assert "ConnectionDoesNotExist" in caplog.text
