"""Management commands (DESIGN §6): issue_api_key, rotate_credential, revoke_credential, audit_log."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from freezegun import freeze_time

from django_apiauth.core import audit
from django_apiauth.management.commands import revoke_credential
from django_apiauth.models import ApiKey, AuditEvent

pytestmark = pytest.mark.django_db

WHOAMI = "/api/whoami/"
T0 = datetime(2030, 1, 15, 12, 0, tzinfo=UTC)


def run(*args: str) -> str:
    """Run a command; return its stdout (stderr must stay empty on success)."""
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    assert err.getvalue() == ""
    return out.getvalue()


def run_json(*args: str) -> dict[str, Any]:
    output = run(*args, "--json")
    assert output.count("\n") == 1, "one JSON object on one line"
    return json.loads(output)  # type: ignore[no-any-return]


def status(client: Any, key: str, **extra: str) -> int:
    return client.get(WHOAMI, HTTP_AUTHORIZATION=f"Api-Key {key}", **extra).status_code  # type: ignore[no-any-return]


# -- issue_api_key ------------------------------------------------------------


def test_issue_json_key_authenticates(user, client):
    with freeze_time(T0):
        data = run_json("issue_api_key", "--owner", "alice", "--name", "ci", "--scopes",
                        "echo:write", "orders:read", "--expires-in", "30d")
        response = client.get(WHOAMI, HTTP_AUTHORIZATION=f"Api-Key {data['key']}")
    assert response.status_code == 200, response.content
    assert response.json() == {"user": "alice", "scheme": "api_key", "credential_id": data["id"],
                               "scopes": ["echo:write", "orders:read"]}
    assert data["key"].startswith(f"ak_{data['id']}_")
    assert data["expires_at"] == (T0 + timedelta(days=30)).isoformat()
    assert {k: data[k] for k in ("kind", "name", "owner", "scopes", "allowed_ips", "revoked_at")} == {
        "kind": "api_key", "name": "ci", "owner": "alice",
        "scopes": ["echo:write", "orders:read"], "allowed_ips": [], "revoked_at": None,
    }
    obj = ApiKey.objects.get(lookup_id=data["id"])
    assert obj.owner == user and obj.scopes == "echo:write orders:read"


def test_issue_human_prints_key_once_with_warning(user, client):
    output = run("issue_api_key", "--owner", "alice", "--name", "ci")
    [obj] = ApiKey.objects.all()
    [key_line] = [line for line in output.splitlines() if line.startswith("Key: ")]
    key = key_line.removeprefix("Key: ")
    assert output.count(key) == 1
    assert obj.lookup_id in output
    assert "will not be shown again" in output
    assert "expires:     never" in output
    assert status(client, key) == 200


def test_issue_defaults_never_expire_and_no_scopes(user):
    data = run_json("issue_api_key", "--owner", "alice", "--name", "ci")
    assert (data["expires_at"], data["scopes"], data["allowed_ips"]) == (None, [], [])


def test_issue_expires_in_takes_effect(user, client):
    with freeze_time(T0) as frozen:
        key = run_json("issue_api_key", "--owner", "alice", "--name", "ci",
                       "--expires-in", "15m")["key"]
        frozen.move_to(T0 + timedelta(minutes=15) - timedelta(seconds=1))
        assert status(client, key) == 200
        frozen.move_to(T0 + timedelta(minutes=15))
        assert status(client, key) == 401
    assert AuditEvent.objects.filter(event="authenticate").first().reason == "expired"


def test_issue_allowed_ips(user, client):
    data = run_json("issue_api_key", "--owner", "alice", "--name", "ci",
                    "--allowed-ips", "10.0.0.0/8", "192.0.2.7")
    assert data["allowed_ips"] == ["10.0.0.0/8", "192.0.2.7"]
    assert status(client, data["key"], REMOTE_ADDR="10.1.2.3") == 200
    assert status(client, data["key"], REMOTE_ADDR="192.0.2.7") == 200
    assert status(client, data["key"], REMOTE_ADDR="192.0.2.8") == 401


def test_issue_is_audited_with_null_actor(user):
    data = run_json("issue_api_key", "--owner", "alice", "--name", "ci")
    [row] = AuditEvent.objects.filter(event="credential.issued")
    assert (row.credential_id, row.username, row.outcome, row.reason) == (
        data["id"], "alice", "success", "issued")
    assert row.detail == {"actor": None, "via": "cli"}


# -- rotate_credential --------------------------------------------------------


def test_rotate_keeps_old_key_for_grace_then_refuses_it(client, make_api_key):
    with freeze_time(T0) as frozen:
        old, old_key = make_api_key(scopes="echo:write", allowed_ips="127.0.0.1")
        data = run_json("rotate_credential", "api_key", old.lookup_id, "--grace", "1h")
        assert data["rotated_from"] == old.lookup_id
        assert data["grace_until"] == (T0 + timedelta(hours=1)).isoformat()
        assert data["key"] == data["secret"]
        assert data["id"] != old.lookup_id
        assert (data["scopes"], data["allowed_ips"], data["owner"]) == (
            ["echo:write"], ["127.0.0.1"], "alice")
        new_key = data["key"]
        assert status(client, old_key) == 200
        assert status(client, new_key) == 200
        frozen.move_to(T0 + timedelta(minutes=59))
        assert status(client, old_key) == 200
        frozen.move_to(T0 + timedelta(hours=1))
        assert status(client, old_key) == 401
        assert status(client, new_key) == 200
    refused = AuditEvent.objects.filter(event="authenticate", outcome="failure").get()
    assert (refused.credential_id, refused.reason) == (old.lookup_id, "expired")


def test_rotate_grace_defaults_to_setting(settings, api_key):
    settings.APIAUTH_ROTATION_GRACE = timedelta(minutes=5)
    old, _key = api_key
    with freeze_time(T0):
        data = run_json("rotate_credential", "api_key", old.lookup_id)
    assert data["grace_until"] == (T0 + timedelta(minutes=5)).isoformat()


def test_rotate_zero_grace_cuts_over_at_once(client, api_key):
    old, old_key = api_key
    new_key = run_json("rotate_credential", "api_key", old.lookup_id, "--grace", "0s")["key"]
    assert status(client, old_key) == 401
    assert status(client, new_key) == 200


def test_rotate_human_output(client, api_key):
    old, _key = api_key
    output = run("rotate_credential", "api_key", old.lookup_id, "--grace", "2h")
    successor = ApiKey.objects.get(rotated_from=old)
    [key_line] = [line for line in output.splitlines() if line.startswith("Key: ")]
    key = key_line.removeprefix("Key: ")
    assert output.count(key) == 1
    assert f"Rotated api_key {old.lookup_id}" in output
    assert successor.lookup_id in output
    assert "will not be shown again" in output
    assert status(client, key) == 200


def test_rotate_by_primary_key(api_key):
    old, _key = api_key
    data = run_json("rotate_credential", "api_key", str(old.pk))
    assert data["rotated_from"] == old.lookup_id


# -- revoke_credential --------------------------------------------------------


def test_revoke_refuses_the_next_request(client, api_key):
    obj, key = api_key
    assert status(client, key) == 200
    data = run_json("revoke_credential", "api_key", obj.lookup_id, "--reason", "leaked in CI logs")
    assert data["id"] == obj.lookup_id
    assert data["revoked_reason"] == "leaked in CI logs"
    assert data["revoked_at"] is not None
    assert "key" not in data and "secret" not in data
    assert status(client, key) == 401
    refused = AuditEvent.objects.filter(event="authenticate", outcome="failure").get()
    assert refused.reason == "revoked"
    [row] = AuditEvent.objects.filter(event="credential.revoked")
    assert row.detail == {"actor": None, "via": "cli", "reason": "leaked in CI logs"}


def test_revoke_human_output(client, api_key):
    obj, key = api_key
    output = run("revoke_credential", "api_key", obj.lookup_id, "--reason", "offboarding")
    assert f"Revoked api_key {obj.lookup_id}" in output
    assert "offboarding" in output
    assert key not in output
    assert status(client, key) == 401


# -- secrets never leak --------------------------------------------------------


def test_keys_never_in_audit_rows_or_logs(user, client, caplog):
    caplog.set_level(logging.DEBUG)
    issued = run_json("issue_api_key", "--owner", "alice", "--name", "ci", "--scopes", "echo:write")
    human = run("issue_api_key", "--owner", "alice", "--name", "human")
    human_key = next(line for line in human.splitlines() if line.startswith("Key: "))[5:]
    rotated = run_json("rotate_credential", "api_key", issued["id"], "--grace", "1h")
    run("rotate_credential", "api_key", ApiKey.objects.get(name="human").lookup_id)
    run("revoke_credential", "api_key", issued["id"], "--reason", "test")
    for key in (issued["key"], rotated["key"], human_key):
        client.get(WHOAMI, HTTP_AUTHORIZATION=f"Api-Key {key}")
        client.get(WHOAMI, HTTP_X_API_KEY=key + "x")
    run("audit_log", "--json")
    run("audit_log")

    keys = [issued["key"], rotated["key"], human_key]
    secrets = [key.split("_")[2] for key in keys]  # the secret part alone
    rows = list(AuditEvent.objects.all())
    assert len(rows) > 10
    for row in rows:
        dumped = " ".join(
            json.dumps(getattr(row, f.attname), default=str) for f in AuditEvent._meta.concrete_fields
        ) + str(row) + json.dumps(row.detail)
        for secret in secrets:
            assert secret not in dumped
    for obj in ApiKey.objects.all():
        stored = " ".join(str(getattr(obj, f.attname)) for f in ApiKey._meta.concrete_fields)
        for secret in secrets:
            assert secret not in stored
    for secret in secrets:
        assert secret not in caplog.text


# -- errors -------------------------------------------------------------------

ISSUE = ("issue_api_key", "--owner", "alice", "--name", "ci")


@pytest.mark.parametrize(("args", "message"), [
    (("issue_api_key", "--owner", "bob", "--name", "ci"), "No user 'bob'"),
    (("issue_api_key", "--owner", "carol", "--name", "ci"), "inactive"),
    (("issue_api_key", "--name", "ci"), "--owner"),
    (("issue_api_key", "--owner", "alice"), "--name"),
    ((*ISSUE, "--expires-in", "10x"), "--expires-in: Invalid duration '10x'"),
    ((*ISSUE, "--expires-in", "0s"), "--expires-in must be longer than zero"),
    ((*ISSUE, "--expires-in", "-1d"), "--expires-in"),
    ((*ISSUE, "--allowed-ips", "10.0.0.0/33"), "--allowed-ips: '10.0.0.0/33' is not an IP"),
    ((*ISSUE, "--scopes", 'bad"scope'), "--scopes: Invalid scope"),
    (("issue_api_key", "--owner", "alice", "--name", "x" * 101), "--name: Ensure this value"),
    (("rotate_credential", "nope", "abc"), "Unknown credential kind 'nope'. Choose one of: api_key"),
    (("rotate_credential", "api_key", "doesNotExist"), "No api_key credential with id 'doesNotExist'"),
    (("rotate_credential", "api_key", "999999"), "No api_key credential with id '999999'"),
    (("rotate_credential", "api_key", "KEY", "--grace", "soon"), "--grace: Invalid duration"),
    (("revoke_credential", "api_key", "KEY"), "--reason"),
    (("revoke_credential", "api_key", "KEY", "--reason", "  "), "--reason must not be blank"),
    (("revoke_credential", "nope", "KEY", "--reason", "x"), "Unknown credential kind 'nope'"),
    (("revoke_credential", "api_key", "nope", "--reason", "x"), "No api_key credential"),
    (("audit_log", "--since", "yesterday"), "--since: 'yesterday' is neither a duration"),
    (("audit_log", "--outcome", "maybe"), "invalid choice"),
    (("audit_log", "--limit", "0"), "--limit must be at least 1"),
    (("audit_log", "--limit", "many"), "invalid int value"),
])
def test_bad_input_is_a_command_error(make_user, api_key, args, message):
    make_user("carol", is_active=False)
    obj, _key = api_key
    args = tuple(obj.lookup_id if arg == "KEY" else arg for arg in args)
    before = (ApiKey.objects.count(), AuditEvent.objects.count(), obj.revoked_at)
    with pytest.raises(CommandError) as excinfo:
        run(*args)
    assert message in str(excinfo.value)
    obj.refresh_from_db()
    assert (ApiKey.objects.count(), AuditEvent.objects.count(), obj.revoked_at) == before


def test_revoke_twice(api_key):
    obj, _key = api_key
    run("revoke_credential", "api_key", obj.lookup_id, "--reason", "first")
    with pytest.raises(CommandError, match=r"already revoked .*first.*nothing to do"):
        run("revoke_credential", "api_key", obj.lookup_id, "--reason", "second")
    obj.refresh_from_db()
    assert obj.revoked_reason == "first"
    assert AuditEvent.objects.filter(event="credential.revoked").count() == 1


def test_rotate_revoked(api_key):
    obj, _key = api_key
    run("revoke_credential", "api_key", obj.lookup_id, "--reason", "gone")
    with pytest.raises(CommandError, match=r"revoked credential cannot be rotated\. Issue a new"):
        run("rotate_credential", "api_key", obj.lookup_id)
    assert not ApiKey.objects.filter(rotated_from=obj).exists()


def test_rotate_expired(make_api_key):
    obj, _key = make_api_key(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(CommandError, match="expired credential cannot be rotated"):
        run("rotate_credential", "api_key", obj.lookup_id)


def test_a_pasted_key_is_not_echoed_in_the_error(api_key):
    _obj, key = api_key
    with pytest.raises(CommandError) as excinfo:
        run("revoke_credential", "api_key", key, "--reason", "leaked")
    assert key not in str(excinfo.value)
    assert key.split("_")[2] not in str(excinfo.value)


def test_cli_error_exits_non_zero_without_traceback_even_with_json(db):
    out, err = StringIO(), StringIO()
    command = revoke_credential.Command(stdout=out, stderr=err)
    with pytest.raises(SystemExit) as excinfo:
        command.run_from_argv(["manage.py", "revoke_credential", "api_key", "nope",
                               "--reason", "x", "--json", "--skip-checks"])
    assert excinfo.value.code == 1
    assert out.getvalue() == ""
    assert err.getvalue().startswith("CommandError: No api_key credential with id 'nope'.")
    assert "Traceback" not in err.getvalue()


# -- audit_log ----------------------------------------------------------------


@pytest.fixture
def events(user) -> dict[str, datetime]:
    """Five audit rows at known times, oldest first."""
    now = timezone.now()
    rows = [
        ("old", now - timedelta(hours=3), "api_key", audit.SUCCESS, "ok"),
        ("expired", now - timedelta(minutes=50), "api_key", audit.FAILURE, "expired"),
        ("hmac", now - timedelta(minutes=40), "hmac", audit.FAILURE, "bad_signature"),
        ("revoked_op", now - timedelta(minutes=30), "api_key", audit.SUCCESS, "revoked"),
        ("revoked_auth", now - timedelta(minutes=20), "api_key", audit.FAILURE, "revoked"),
        ("recent", now - timedelta(minutes=10), "api_key", audit.SUCCESS, "ok"),
    ]
    for label, at, scheme, outcome, reason in rows:
        audit.record(event="authenticate", scheme=scheme, outcome=outcome, reason=reason, user=user,
                     credential_id=label, at=at, ip="192.0.2.1", detail={"label": label})
    return {label: at for label, at, *_rest in rows}


def labels(*args: str) -> list[str]:
    return [json.loads(line)["credential_id"] for line in run("audit_log", "--json", *args).splitlines()]


def test_audit_log_json_lines(events):
    lines = run("audit_log", "--json").splitlines()
    assert len(lines) == 6
    first = json.loads(lines[0])
    assert set(first) == {
        "id", "at", "event", "scheme", "outcome", "reason", "username", "credential_id", "ip",
        "user_agent", "method", "path", "request_id", "detail",
    }
    assert (first["credential_id"], first["at"], first["username"], first["ip"], first["detail"]) == (
        "recent", events["recent"].isoformat(), "alice", "192.0.2.1", {"label": "recent"})
    assert [json.loads(line)["credential_id"] for line in lines] == [
        "recent", "revoked_auth", "revoked_op", "hmac", "expired", "old"]


@pytest.mark.parametrize(("args", "expected"), [
    ((), ["recent", "revoked_auth", "revoked_op", "hmac", "expired", "old"]),
    (("--since", "1h"), ["recent", "revoked_auth", "revoked_op", "hmac", "expired"]),
    (("--since", "35m"), ["recent", "revoked_auth", "revoked_op"]),
    (("--outcome", "failure"), ["revoked_auth", "hmac", "expired"]),
    (("--outcome", "success", "--since", "1h"), ["recent", "revoked_op"]),
    (("--scheme", "hmac"), ["hmac"]),
    (("--scheme", "api_key", "--outcome", "failure"), ["revoked_auth", "expired"]),
    (("--reason", "revoked"), ["revoked_auth", "revoked_op"]),
    (("--reason", "revoked", "--limit", "1"), ["revoked_auth"]),
    (("--reason", "revoked", "--outcome", "success"), ["revoked_op"]),
    (("--reason", "ok", "--since", "1h"), ["recent"]),
    (("--credential", "hmac"), ["hmac"]),
    (("--limit", "2"), ["recent", "revoked_auth"]),
    (("--scheme", "jwt"), []),
])
def test_audit_log_filters(events, args, expected):
    assert labels(*args) == expected


def test_audit_log_since_iso_time(events):
    since = (events["hmac"] - timedelta(seconds=1)).astimezone(UTC).replace(tzinfo=None).isoformat()
    assert labels("--since", since) == ["recent", "revoked_auth", "revoked_op", "hmac"]
    assert labels("--since", events["hmac"].isoformat()) == ["recent", "revoked_auth", "revoked_op", "hmac"]


def test_audit_log_human_table(events):
    lines = run("audit_log", "--since", "1h").splitlines()
    assert lines[0].split() == ["AT", "(UTC)", "OUTCOME", "SCHEME", "EVENT", "REASON", "USER",
                                "CREDENTIAL", "IP", "REQUEST"]
    assert len(lines) == 6
    assert lines[1].split()[2:9] == ["success", "api_key", "authenticate", "ok", "alice", "recent",
                                     "192.0.2.1"]


def test_audit_log_human_empty(events):
    assert run("audit_log", "--scheme", "jwt") == "No audit events match.\n"


def test_audit_log_shows_the_request(user, client):
    client.get(WHOAMI, HTTP_AUTHORIZATION="Api-Key nope", HTTP_X_REQUEST_ID="req-1")
    output = run("audit_log")
    assert output.splitlines()[1].endswith("GET /api/whoami/")
    [line] = run("audit_log", "--json").splitlines()
    data = json.loads(line)
    assert (data["method"], data["path"], data["request_id"], data["reason"]) == (
        "GET", "/api/whoami/", "req-1", "malformed")


def test_audit_log_table_cannot_drive_the_terminal(user):
    # Rows are sanitised by the audit writer; the table does it again, in
    # case a row was written some other way.
    AuditEvent.objects.create(outcome="failure", reason="x\x1b[2Jy", path="/\u202eevil",
                              username="\x07bell")
    output = run("audit_log")
    assert "\x1b" not in output and "\u202e" not in output and "\x07" not in output
    assert "x\ufffd[2Jy" in output


@pytest.mark.parametrize("args", [(), ("--outcome", "failure", "--since", "1h"), ("--scheme", "x"),
                                  ("--reason", "expired"), ("--json",)])
def test_audit_log_reads_with_limit_and_never_counts(events, args):
    with CaptureQueriesContext(connection) as queries:
        run("audit_log", *args)
    sqls = [q["sql"] for q in queries.captured_queries]
    assert 1 <= len(sqls) <= 2  # --reason alone: one query per outcome, merged
    for sql in sqls:
        assert "COUNT(" not in sql.upper()
        assert "LIMIT 100" in sql
