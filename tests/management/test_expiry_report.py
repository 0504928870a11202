"""``credential_expiry_report`` (issue 7 item 5): every kind, the window, JSON lines."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from freezegun import freeze_time

from django_apiauth.ca.authority import create_ca
from django_apiauth.core import lifecycle
from django_apiauth.models import ApiKey, ClientCertificate, HmacSecret

pytestmark = pytest.mark.django_db

#: Close to the real clock: certificates are signed outside freezegun
#: (cryptography refuses its fake datetimes).
T0 = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=1)
NOW = T0 + timedelta(minutes=5)  # "expired" has expired, the rest not


def run(*args: str) -> str:
    out, err = StringIO(), StringIO()
    call_command("credential_expiry_report", *args, stdout=out, stderr=err)
    assert err.getvalue() == ""
    return out.getvalue()


def run_json(*args: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in run(*args, "--json").splitlines()]


@pytest.fixture
def fleet(user: Any) -> dict[str, Any]:
    """Credentials of every kind at interesting distances from T0."""
    ca = create_ca(name="Report CA", slug="report-ca")
    made: dict[str, Any] = {}
    made["cert_13d"], _ = lifecycle.issue(ClientCertificate, owner=user, ca=ca,
                                          name="cert 13d", expires_at=T0 + timedelta(days=13))
    with freeze_time(T0):
        made["key_3d"], secret = lifecycle.issue(ApiKey, owner=user, name="key 3d",
                                                 expires_at=T0 + timedelta(days=3))
        made["secret"] = secret
        made["hmac_10d"], _ = lifecycle.issue(HmacSecret, owner=user, name="hmac 10d",
                                              expires_at=T0 + timedelta(days=10))
        made["key_20d"], _ = lifecycle.issue(ApiKey, owner=user, name="key 20d",
                                             expires_at=T0 + timedelta(days=20))
        made["key_never"], _ = lifecycle.issue(ApiKey, owner=user, name="key never")
        revoked, _ = lifecycle.issue(ApiKey, owner=user, name="revoked 2d",
                                     expires_at=T0 + timedelta(days=2))
        lifecycle.revoke(revoked, reason="test")
        lifecycle.issue(ApiKey, owner=user, name="expired",
                                     expires_at=T0 + timedelta(minutes=1))
        rotating, _ = lifecycle.issue(HmacSecret, owner=user, name="rotating")
        lifecycle.rotate(rotating, grace=timedelta(hours=6))
        made["rotating"] = rotating
    return made


def test_json_lists_every_kind_soonest_first(fleet: dict[str, Any]) -> None:
    with freeze_time(NOW):
        listed = run_json()
    assert [(item["kind"], item["name"]) for item in listed] == [
        ("hmac", "rotating"), ("api_key", "key 3d"), ("hmac", "hmac 10d"),
        ("client_cert", "cert 13d"),
    ]
    assert listed[0]["rotated_out"] is True
    assert listed[1]["rotated_out"] is False
    assert listed[1]["id"] == fleet["key_3d"].public_id
    assert listed[1]["expires_in_seconds"] == 3 * 86400 - 300
    assert fleet["secret"] not in json.dumps(listed)


def test_window_and_kind_filter(fleet: dict[str, Any]) -> None:
    with freeze_time(NOW):
        assert [i["name"] for i in run_json("--within", "30d", "--kind", "api_key")] == [
            "key 3d", "key 20d",
        ]
        assert run_json("--within", "1h") == []


def test_table(fleet: dict[str, Any]) -> None:
    with freeze_time(NOW):
        text = run("--within", "4d")
    lines = text.splitlines()
    assert lines[0].startswith("EXPIRES (UTC)")
    assert "rotated out" in lines[1] and "    5h  hmac" in lines[1]
    assert fleet["key_3d"].public_id in lines[2] and "    2d  api_key" in lines[2]
    assert len(lines) == 3
    with freeze_time(NOW):
        assert run("--within", "1m").strip() == "No credential expires within 1m."


def test_fail_if_any(fleet: dict[str, Any]) -> None:
    with freeze_time(NOW), pytest.raises(SystemExit) as excinfo:
        run("--fail-if-any")
    assert excinfo.value.code == 1
    with freeze_time(NOW):
        run("--fail-if-any", "--within", "1m")  # nothing listed: exit 0


def test_names_are_rendered_inert(user: Any) -> None:
    with freeze_time(NOW):
        lifecycle.issue(ApiKey, owner=user, name="evil\x1b[2J\u202ename",
                        expires_at=T0 + timedelta(days=1))
        text = run()
    assert "\x1b" not in text and "\u202e" not in text


@pytest.mark.parametrize("args", [("--within", "soon"), ("--within", "0d"),
                                  ("--within", "14d'; --"), ("--kind", "password")])
def test_bad_options(args: tuple[str, ...]) -> None:
    with pytest.raises(CommandError):
        run(*args)
