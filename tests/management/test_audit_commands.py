"""verify_audit and prune_audit (docs/audit-integrity.md)."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_apiauth.core import audit
from django_apiauth.models import AuditChainHead, AuditEvent

pytestmark = pytest.mark.django_db


class FakeTerminal(StringIO):
    def isatty(self) -> bool:
        return True


def run(*args: str, stderr: StringIO | None = None) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=stderr or StringIO())
    return out.getvalue()


def run_json(*args: str) -> dict[str, Any]:
    output = run(*args, "--json")
    assert output.count("\n") == 1, "one JSON object on one line"
    return json.loads(output)  # type: ignore[no-any-return]


def write_aged(days: list[int]) -> list[AuditEvent]:
    now = timezone.now()
    for i, age in enumerate(days):
        audit.record(event="authenticate", scheme="api_key", outcome=audit.FAILURE,
                     reason="bad_secret", credential_id=f"a{i}", at=now - timedelta(days=age))
    return list(AuditEvent.objects.order_by("id"))


# -- verify_audit --------------------------------------------------------------------

def test_verify_intact_chain():
    write_aged([3, 2, 1])
    out = run("verify_audit")
    assert "Checked 3 sealed rows (chain positions 1 to 3); sealed 3 now; 0 not yet sealed" in out
    assert "The audit chain is intact. Head: position 3, hash " in out


def test_verify_json():
    write_aged([2, 1])
    data = run_json("verify_audit")
    assert data["ok"] is True and data["checked"] == 2 and data["problems"] == []
    assert data["first_break_id"] is None
    assert data["head_chain"] == AuditChainHead.objects.get().chain


def test_verify_empty_table():
    data = run_json("verify_audit")
    assert data["ok"] is True and data["checked"] == 0


def test_verify_reports_the_row_id_and_fails():
    rows = write_aged([3, 2, 1])
    audit.seal()
    AuditEvent.objects.filter(pk=rows[1].pk).update(reason="ok", outcome="success")
    out = StringIO()
    with pytest.raises(CommandError) as excinfo:
        call_command("verify_audit", stdout=out, stderr=StringIO())
    assert f"first at row id {rows[1].pk}" in str(excinfo.value)
    assert f"row id {rows[1].pk} (position 2): edited:" in out.getvalue()


def test_verify_json_still_prints_the_report_when_broken():
    rows = write_aged([3, 2, 1])
    audit.seal()
    AuditEvent.objects.filter(pk=rows[1].pk).delete()
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("verify_audit", "--json", stdout=out, stderr=StringIO())
    data = json.loads(out.getvalue())
    assert data["ok"] is False and data["first_break_id"] == rows[2].pk
    assert data["problems"][0]["problem"] == "missing"


def test_verify_no_seal_leaves_rows_unsealed():
    write_aged([1, 1])
    data = run_json("verify_audit", "--no-seal")
    assert (data["ok"], data["checked"], data["unsealed"], data["sealed_now"]) == (True, 0, 2, 0)
    assert not AuditEvent.objects.filter(seq__isnull=False).exists()


def test_verify_limit_lists_some_counts_all():
    rows = write_aged([1, 1, 1, 1])
    AuditEvent.objects.filter(pk__in=[r.pk for r in rows]).update(path="/x/")
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("verify_audit", "--json", "--limit", "2", stdout=out, stderr=StringIO())
    data = json.loads(out.getvalue())
    assert data["problems_total"] == 4 and len(data["problems"]) == 2


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_verify_bad_limit(limit):
    with pytest.raises(CommandError, match="--limit must be at least 1"):
        run("verify_audit", "--limit", limit)


def test_verify_unknown_database_alias():
    with pytest.raises(Exception):  # noqa: B017 (Django's ConnectionDoesNotExist)
        run("verify_audit", "--database", "nope")


# -- prune_audit ---------------------------------------------------------------------

def test_prune_deletes_old_rows_and_verify_passes():
    rows = write_aged([500, 450, 400, 30, 1])
    err = StringIO()
    out = run("prune_audit", "--older-than", "365d", "--batch-size", "2", stderr=err)
    assert out.startswith("Deleted 3 audit rows older than ")
    assert "in 2 batches. The chain now starts at position 4." in out
    kept = list(AuditEvent.objects.order_by("id"))
    assert [r.pk for r in kept[:2]] == [rows[3].pk, rows[4].pk]
    assert kept[2].event == "audit.pruned" and kept[2].detail["deleted"] == 3
    assert kept[2].detail["older_than"] == "365d" and kept[2].detail["via"] == "cli"
    assert err.getvalue().splitlines() == [
        "[" + "#" * 20 + "." * 10 + "] 2/3",
        "[" + "#" * 30 + "] 3/3",
    ]
    assert "intact" in run("verify_audit")


def test_prune_json():
    write_aged([400, 400, 2])
    data = run_json("prune_audit", "--older-than", "365d")
    assert (data["deleted"], data["batches"], data["cut_seq"], data["dry_run"]) == (2, 1, 2, False)
    assert data["older_rows_kept"] == 0
    assert data["cut_chain"] == AuditChainHead.objects.get().start_prev
    assert AuditEvent.objects.get(pk=data["event_id"]).event == "audit.pruned"


def test_prune_deletes_in_small_batches():
    write_aged([400] * 5)
    audit.seal()
    with CaptureQueriesContext(connection) as queries:
        run("prune_audit", "--older-than", "365d", "--batch-size", "2")
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 3  # 2 + 2 + 1, one transaction each
    assert all("WHERE" in sql for sql in deletes)


def test_prune_progress_in_place_on_a_terminal():
    write_aged([400, 400, 400])
    err = FakeTerminal()
    run("prune_audit", "--older-than", "365d", "--batch-size", "2", stderr=err)
    assert err.getvalue() == "\r[" + "#" * 20 + "." * 10 + "] 2/3" + "\r[" + "#" * 30 + "] 3/3\n"


def test_prune_dry_run():
    write_aged([400, 400, 1])
    out = run("prune_audit", "--older-than", "365d", "--dry-run")
    assert out.startswith("Would delete 2 audit rows") and "Dry run: nothing was deleted." in out
    assert AuditEvent.objects.count() == 3


def test_prune_nothing_to_do():
    write_aged([1])
    data = run_json("prune_audit", "--older-than", "365d")
    assert (data["deleted"], data["event_id"], data["cut_seq"]) == (0, None, None)
    assert AuditEvent.objects.count() == 1


def test_prune_reports_old_rows_kept_behind_a_young_one():
    write_aged([400, 1, 400])
    out = run("prune_audit", "--older-than", "365d")
    assert "Deleted 1 audit rows" in out and "1 old rows are kept behind a newer one" in out


def test_prune_stops_on_a_broken_chain_and_deletes_nothing():
    rows = write_aged([400, 400, 400])
    audit.seal()
    AuditEvent.objects.filter(pk=rows[0].pk).update(chain="x")
    with pytest.raises(CommandError, match=f"broken at row id {rows[0].pk}"):
        run("prune_audit", "--older-than", "365d")
    assert AuditEvent.objects.count() == 3


@pytest.mark.parametrize("value", ["", "365", "abc", "0d", "-5d", "365y", "1e9d", "%", "'", "\x00"])
def test_prune_bad_durations(value):
    write_aged([400])
    with pytest.raises(CommandError, match="--older-than"):
        run("prune_audit", "--older-than", value)
    assert AuditEvent.objects.count() == 1


@pytest.mark.parametrize("size", ["0", "-3"])
def test_prune_bad_batch_size(size):
    with pytest.raises(CommandError, match="--batch-size must be at least 1"):
        run("prune_audit", "--older-than", "365d", "--batch-size", size)


def test_prune_requires_older_than():
    with pytest.raises(CommandError, match="--older-than"):
        run("prune_audit")
