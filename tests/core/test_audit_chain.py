"""The audit hash chain: every edit, deletion, reordering or forgery is reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import RequestFactory, override_settings
from django.utils import timezone

from django_apiauth.core import audit
from django_apiauth.models import AuditChainHead, AuditEvent

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


def write(n: int = 5, user: Any = None, **overrides: Any) -> list[AuditEvent]:
    request = RequestFactory().get("/api/whoami/", HTTP_USER_AGENT="curl/8", REMOTE_ADDR="192.0.2.7",
                                   HTTP_X_REQUEST_ID="req-1")
    for i in range(n):
        kwargs: dict[str, Any] = {
            "event": "authenticate", "scheme": "api_key", "outcome": audit.FAILURE,
            "reason": "bad_secret", "request": request, "user": user, "credential_id": f"k{i}",
            "detail": {"n": i, "nested": {"b": [1, "x"], "a": 0.5}, "flag": True},
        }
        kwargs.update(overrides)
        audit.record(**kwargs)
    return list(AuditEvent.objects.order_by("id"))


def problems(report: audit.Report) -> list[tuple[int | None, str]]:
    return [(p.id, p.problem) for p in report.problems]


def test_untouched_chain_verifies(user):
    rows = write(6, user=user)
    assert audit.seal() == 6
    report = audit.verify()
    assert report.ok, report.as_dict()
    assert (report.checked, report.unsealed, report.head_seq) == (6, 0, 6)
    assert [r.seq for r in AuditEvent.objects.order_by("id")] == [1, 2, 3, 4, 5, 6]
    assert all(r.mac for r in rows)


def test_unsealed_rows_are_checked_and_verify_seals_them():
    write(3)
    report = audit.verify(seal_first=False)
    assert report.ok and (report.checked, report.unsealed) == (0, 3)
    report = audit.verify()
    assert report.ok and (report.sealed_now, report.checked, report.unsealed) == (3, 3, 0)


def test_canonical_form_is_rebuilt_from_the_stored_row(user):
    row = write(1, user=user)[0]
    stored = AuditEvent.objects.filter(pk=row.pk).values(*audit.MAC_FIELDS).get()
    assert audit.mac_is_valid(stored, row.mac)
    _kid, nonce, _hex = row.mac.split("$")
    text = audit.canonical(stored, nonce).decode()
    assert text.startswith('["apiauth-audit-1","' + nonce + '","')
    assert '"nested":{"a":0.5,"b":["1","x"]}' in text  # keys sorted at every level
    assert '"192.0.2.7"' in text and '"req-1"' in text and f",{user.pk}," in text


EDITS = {
    "at": timezone.now() - timedelta(days=3),
    "event": "credential.issued",
    "scheme": "hmac",
    "outcome": "success",
    "reason": "ok",
    "user_id": 4242,
    "username": "mallory",
    "credential_id": "other",
    "ip": "198.51.100.1",
    "user_agent": "forged",
    "method": "POST",
    "path": "/elsewhere/",
    "request_id": "req-2",
    "detail": {"n": 2, "nested": {"b": [1, "x"], "a": 0.5}, "flag": False},
}


@pytest.mark.parametrize("sealed", [True, False], ids=["sealed", "unsealed"])
@pytest.mark.parametrize("field", sorted(EDITS))
def test_an_edit_of_any_field_is_reported_with_the_row_id(field, sealed):
    rows = write(4)
    if sealed:
        audit.seal()
    AuditEvent.objects.filter(pk=rows[2].pk).update(**{field: EDITS[field]})
    report = audit.verify(seal_first=False)
    assert not report.ok
    assert problems(report) == [(rows[2].pk, "edited")]
    assert report.first_break_id == rows[2].pk


@pytest.mark.parametrize("field,value", [
    ("mac", "x"), ("mac", ""), ("chain", "x"), ("chain", ""),
])
def test_an_edited_mac_or_chain_hash_is_reported(field, value):
    rows = write(3)
    audit.seal()
    AuditEvent.objects.filter(pk=rows[1].pk).update(**{field: value})
    report = audit.verify()
    assert not report.ok
    assert report.first_break_id == rows[1].pk
    # a changed chain hash also breaks the next row's link (it is that row's "prev")
    assert {pid for pid, _problem in problems(report)} <= {rows[1].pk, rows[2].pk}


def test_a_deleted_row_is_reported_where_the_chain_breaks():
    rows = write(5)
    audit.seal()
    AuditEvent.objects.filter(pk=rows[2].pk).delete()
    report = audit.verify()
    assert problems(report) == [(rows[3].pk, "missing")]
    assert "1 row(s) missing" in report.problems[0].message


def test_rows_deleted_from_the_end_are_reported():
    rows = write(5)
    audit.seal()
    AuditEvent.objects.filter(pk__in=[rows[3].pk, rows[4].pk]).delete()
    report = audit.verify()
    assert problems(report) == [(rows[2].pk, "truncated")]


def test_every_row_deleted_is_reported():
    write(3)
    audit.seal()
    AuditEvent.objects.all().delete()
    assert problems(audit.verify()) == [(None, "truncated")]


def test_reordered_rows_are_reported():
    rows = write(5)
    audit.seal()
    a, b = rows[1].pk, rows[3].pk
    AuditEvent.objects.filter(pk=a).update(seq=-1)
    AuditEvent.objects.filter(pk=b).update(seq=2)
    AuditEvent.objects.filter(pk=a).update(seq=4)
    report = audit.verify()
    assert not report.ok
    assert (b, "chain") in problems(report) and (a, "chain") in problems(report)
    assert report.first_break_id == b


def test_swapped_contents_are_reported():
    rows = write(4)
    audit.seal()
    one, two = AuditEvent.objects.get(pk=rows[0].pk), AuditEvent.objects.get(pk=rows[1].pk)
    AuditEvent.objects.filter(pk=one.pk).update(credential_id=two.credential_id, detail=two.detail)
    AuditEvent.objects.filter(pk=two.pk).update(credential_id=one.credential_id, detail=one.detail)
    assert problems(audit.verify()) == [(one.pk, "edited"), (two.pk, "edited")]


def test_a_forged_row_is_reported():
    write(3)
    audit.seal()
    forged = AuditEvent.objects.create(
        at=timezone.now(), event="authenticate", scheme="api_key", outcome="success",
        reason="ok", credential_id="k1",
        mac=AuditEvent.objects.first().mac.rsplit("$", 1)[0] + "$" + "0" * 64,
    )
    report = audit.verify()  # the sealer links it: only its MAC gives it away
    assert problems(report) == [(forged.pk, "edited")]


def test_a_forged_row_placed_in_the_chain_is_reported():
    write(3)
    audit.seal()
    head = AuditChainHead.objects.get()
    forged = AuditEvent.objects.create(
        at=timezone.now(), event="authenticate", scheme="api_key", outcome="success", reason="ok",
        seq=head.seq + 1, chain=head.chain, mac="00000000$x$00",
    )
    report = audit.verify(seal_first=False)
    assert {(forged.pk, "chain"), (forged.pk, "unknown_key"), (forged.pk, "truncated")} == set(
        problems(report))


def test_a_copied_row_is_reported():
    rows = write(3)
    values = AuditEvent.objects.filter(pk=rows[1].pk).values(*audit.MAC_FIELDS, "mac").get()
    copy = AuditEvent.objects.create(**values)
    report = audit.verify()
    assert problems(report) == [(copy.pk, "duplicate")]


def test_a_row_committed_late_joins_the_chain():
    """A transaction that commits after later ids were sealed: sealed next, in seq order."""
    rows = write(2)
    late_values = dict(AuditEvent.objects.filter(pk=rows[0].pk).values(*audit.MAC_FIELDS).get(),
                       credential_id="late")
    AuditEvent.objects.filter(pk=rows[0].pk).delete()  # frees a lower id, never sealed
    audit.seal()
    late = AuditEvent.objects.create(pk=rows[0].pk, **late_values, mac=audit.compute_mac(late_values))
    assert audit.seal() == 1
    assert AuditEvent.objects.get(pk=late.pk).seq == 2
    assert audit.verify().ok


def test_an_edited_head_is_reported_and_stops_sealing():
    write(3)
    audit.seal()
    AuditChainHead.objects.update(start_seq=2)  # hide the first row from verification
    report = audit.verify(seal_first=False)
    assert (None, "head_edited") in problems(report)
    write(1)
    with pytest.raises(audit.ChainError):
        audit.seal()


def test_a_deleted_head_is_reported_and_never_recreated():
    rows = write(2)
    audit.seal()
    AuditChainHead.objects.all().delete()
    assert problems(audit.verify(seal_first=False)) == [(None, "head_missing"),
                                                       (rows[1].pk, "truncated")]
    with pytest.raises(audit.ChainError):
        audit.seal()


def test_key_rotation_keeps_old_rows_verifiable():
    old_key, new_key = "old-audit-key-0123456789abcdef0123", "new-audit-key-0123456789abcdef0123"
    with override_settings(APIAUTH_AUDIT_KEYS=[old_key]):
        write(2)
        audit.seal()
    with override_settings(APIAUTH_AUDIT_KEYS=[new_key, old_key]):
        write(2)
        assert audit.verify().ok
        macs = list(AuditEvent.objects.order_by("id").values_list("mac", flat=True))
        assert macs[0].split("$")[0] != macs[3].split("$")[0]
    with override_settings(APIAUTH_AUDIT_KEYS=[new_key]):
        report = audit.verify()
        assert (None, "head_edited") not in problems(report)  # resealed under the new key
        assert {p for _id, p in problems(report)} >= {"unknown_key", "chain"}


def test_without_the_key_the_chain_cannot_be_recomputed():
    """Someone with database access but another key (e.g. a guessed SECRET_KEY)."""
    rows = write(2)
    audit.seal()
    with override_settings(APIAUTH_AUDIT_KEYS=["attacker-guess-0123456789abcdef0123"]):
        AuditEvent.objects.filter(pk=rows[0].pk).update(path="/forged/")
        values = AuditEvent.objects.filter(pk=rows[0].pk).values(*audit.MAC_FIELDS).get()
        forged_mac = audit.compute_mac(values)
    AuditEvent.objects.filter(pk=rows[0].pk).update(mac=forged_mac)
    report = audit.verify()
    assert (rows[0].pk, "unknown_key") in problems(report)


def test_key_derived_from_secret_key_when_unset():
    with override_settings(APIAUTH_AUDIT_KEYS=None, SECRET_KEY="s" * 50,
                           SECRET_KEY_FALLBACKS=["f" * 50]):
        ring = audit.keyring()
        assert len(ring) == 2 and all(len(key) == 32 for _kid, key in ring)
        assert b"s" * 50 not in ring[0][1]


# -- pruning ---------------------------------------------------------------------

def write_aged(days: list[int]) -> list[AuditEvent]:
    now = timezone.now()
    for i, age in enumerate(days):
        audit.record(event="authenticate", scheme="api_key", outcome=audit.FAILURE,
                     reason="bad_secret", credential_id=f"a{i}", at=now - timedelta(days=age))
    return list(AuditEvent.objects.order_by("id"))


def test_prune_then_verify():
    rows = write_aged([400, 399, 398, 10, 1])
    result = audit.prune(cutoff=timezone.now() - timedelta(days=365), batch_size=2,
                         older_than="365d")
    assert (result.deleted, result.batches, result.cut_seq) == (3, 2, 3)
    remaining = list(AuditEvent.objects.order_by("id"))
    assert [r.pk for r in remaining[:2]] == [rows[3].pk, rows[4].pk]
    checkpoint = remaining[2]
    assert (checkpoint.event, checkpoint.reason) == ("audit.pruned", "pruned")
    assert checkpoint.detail["cut_seq"] == 3 and checkpoint.detail["deleted"] == 3
    assert checkpoint.detail["cut_chain"] == result.cut_chain
    head = AuditChainHead.objects.get()
    assert (head.start_seq, head.start_prev) == (4, result.cut_chain)
    report = audit.verify()
    assert report.ok, report.as_dict()
    assert (report.start_seq, report.checked) == (4, 3)


def test_prune_stops_at_the_first_young_row_in_the_chain():
    write_aged([400, 1, 400])
    result = audit.prune(cutoff=timezone.now() - timedelta(days=365))
    assert result.deleted == 1
    assert audit.verify().ok


def test_after_prune_a_deleted_first_row_is_still_reported():
    write_aged([400, 400, 5, 4])
    audit.prune(cutoff=timezone.now() - timedelta(days=365))
    assert not AuditEvent.objects.filter(seq__isnull=True).exists()  # checkpoint sealed too
    first = AuditEvent.objects.filter(seq__isnull=False).order_by("seq").first()
    AuditEvent.objects.filter(pk=first.pk).delete()
    report = audit.verify()
    assert not report.ok and report.problems[0].problem == "missing"


def test_prune_refuses_to_erase_a_broken_chain():
    rows = write_aged([400, 400, 400])
    audit.seal()
    AuditEvent.objects.filter(pk=rows[1].pk).delete()
    with pytest.raises(audit.ChainError, match=f"row id {rows[2].pk}"):
        audit.prune(cutoff=timezone.now() - timedelta(days=365))
    assert AuditEvent.objects.count() == 2  # the first batch rolled back: evidence kept


def test_prune_dry_run_deletes_nothing():
    write_aged([400, 400, 1])
    audit.seal()
    result = audit.prune(cutoff=timezone.now() - timedelta(days=365), dry_run=True)
    assert result.deleted == 2
    assert AuditEvent.objects.count() == 3
    assert AuditChainHead.objects.get().start_seq == 1


def test_prune_with_nothing_old_writes_no_checkpoint():
    write_aged([3])
    result = audit.prune(cutoff=timezone.now() - timedelta(days=365))
    assert result.deleted == 0 and result.event_id is None
    assert AuditEvent.objects.count() == 1


# -- sealing after requests, and concurrent writers --------------------------------

def test_sealing_runs_after_a_request_when_due(client, api_key):
    _obj, key = api_key
    with override_settings(APIAUTH_AUDIT_SEAL_INTERVAL=1e-9):
        response = client.get("/api/whoami/", HTTP_AUTHORIZATION=f"Api-Key {key}")
    assert response.status_code == 200
    assert not AuditEvent.objects.filter(seq__isnull=True).exists()
    assert audit.verify(seal_first=False).ok


def test_sealing_is_off_when_the_interval_is_zero(client, api_key):
    _obj, key = api_key
    client.get("/api/whoami/", HTTP_AUTHORIZATION=f"Api-Key {key}")
    assert AuditEvent.objects.filter(seq__isnull=True).exists()


def test_a_failing_seal_after_a_request_is_logged_not_raised(client, api_key, caplog):
    _obj, key = api_key
    write(1)
    audit.seal()
    AuditChainHead.objects.update(seq=99)  # tampered: the sealer refuses to extend it
    with override_settings(APIAUTH_AUDIT_SEAL_INTERVAL=1e-9):
        response = client.get("/api/whoami/", HTTP_AUTHORIZATION=f"Api-Key {key}")
    assert response.status_code == 200
    assert "ChainError" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_concurrent_writer_processes_on_a_file_database(tmp_path):
    """Three processes, each with a thread writing failures and sealing and a thread
    writing buffered successes, all on one SQLite file: one intact chain."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'example_project'}"}
    done = subprocess.run(  # noqa: S603 (our own helper, fixed arguments)
        [sys.executable, "-m", "tests.core.audit_writers", str(tmp_path / "audit.sqlite3"), "3", "30"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["failed_writers"] == 0, done.stderr
    assert report["ok"], report
    assert report["rows"] == report["checked"] == report["head_seq"] == 3 * 2 * 30
    assert report["unsealed"] == 0


def test_verify_reads_the_audit_database_alias():
    write(1)
    assert audit.audit_alias() == connection.alias


@pytest.mark.django_db(transaction=True)
def test_the_migration_adopts_existing_rows():
    """Rows written before the upgrade get a MAC under the configured key."""
    from django.db.migrations.executor import MigrationExecutor

    before = [("django_apiauth", "0006_abuse")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        old_apps = executor.loader.project_state(before).apps
        OldEvent = old_apps.get_model("django_apiauth", "AuditEvent")
        OldEvent.objects.create(at=timezone.now(), event="authenticate", scheme="api_key",
                                outcome="failure", reason="bad_secret", credential_id="old",
                                detail={"n": 1})
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())  # back to the latest schema
    row = AuditEvent.objects.get(credential_id="old")
    assert row.mac and row.seq is None
    assert audit.verify().ok


@pytest.mark.parametrize("value", [1e20, 2.0, -0.0, 0.1, 1.5e-07, float("nan"), float("inf"),
                                   2**70, "é\u202e", True, None])
def test_detail_values_survive_the_round_trip(value):
    audit.record(event="authenticate", scheme="t", outcome=audit.FAILURE, reason="malformed",
                 detail={"v": value, "nested": {"v": value}})
    assert audit.verify().ok


def test_a_straggler_beyond_the_lookback_is_sealed_by_the_sweep(monkeypatch):
    rows = write(3)
    late_values = dict(AuditEvent.objects.filter(pk=rows[0].pk).values(*audit.MAC_FIELDS).get(),
                       credential_id="late")
    AuditEvent.objects.filter(pk=rows[0].pk).delete()
    audit.seal()
    AuditEvent.objects.create(pk=rows[0].pk, **late_values, mac=audit.compute_mac(late_values))
    monkeypatch.setattr(audit, "SEAL_LOOKBACK", 1)  # the ordinary pass looks above id 2 only
    assert audit.seal() == 0
    report = audit.verify()  # sweeps the whole table first
    assert report.ok and report.sealed_now == 1 and report.checked == 3
