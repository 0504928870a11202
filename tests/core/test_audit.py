import pytest
from django.test import RequestFactory

from django_apiauth.core import audit
from django_apiauth.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_sanitise_control_bidi_and_length():
    assert audit.sanitise("a\r\nb\x00c\x1b[31m", 100) == "a\ufffd\ufffdb\ufffdc\ufffd[31m"
    assert audit.sanitise("\u202eevil", 100) == "\ufffdevil"
    assert audit.sanitise("x" * 50, 10) == "x" * 9 + "…"
    assert audit.sanitise(None, 5) == ""


def test_clean_detail_redacts_secret_looking_keys():
    cleaned = audit.clean_detail({
        "secret": "s3cr3t", "api_key": "ak_x", "Authorization": "Api-Key x", "password": "p",
        "key_id": "public", "nested": {"token": "t", "ok": 1}, "list": ["a\nb"], "n": None,
    })
    assert cleaned == {
        "secret": "********", "api_key": "********", "Authorization": "********",
        "password": "********", "key_id": "public", "nested": {"token": "********", "ok": 1},
        "list": ["a\ufffdb"], "n": None,
    }


def test_request_values_are_sanitised_and_bounded():
    request = RequestFactory().get(
        "/api/\u202e" + "p" * 600,
        HTTP_USER_AGENT="evil\r\nX-Injected: 1" + "u" * 400,
        HTTP_X_REQUEST_ID="id\n" + "r" * 300,
    )
    audit.record(event="authenticate", scheme="t", outcome="failure", reason="missing", request=request)
    row = AuditEvent.objects.get()
    assert "\u202e" not in row.path
    assert "\n" not in row.user_agent and "\r" not in row.user_agent
    assert len(row.user_agent) <= 256 and len(row.path) <= 512 and len(row.request_id) <= 128


def test_invalid_ip_is_stored_as_null():
    audit.record(event="authenticate", scheme="t", outcome="failure", reason="missing", ip="not an ip")
    assert AuditEvent.objects.get().ip is None


def test_query_string_is_never_recorded(client):
    client.get("/api/whoami/?token=abc&x=1")
    row = AuditEvent.objects.get()
    assert row.path == "/api/whoami/"
    assert "abc" not in str(row.detail)


def test_record_outside_a_request(user):
    audit.record(event="credential.issued", scheme="api_key", outcome="success", reason="issued",
                 user=user, credential_id="abc", detail={"actor": None})
    row = AuditEvent.objects.get()
    assert (row.username, row.user_id, row.method, row.path) == ("alice", user.pk, "", "")


def test_rows_survive_user_deletion(user):
    audit.record(event="authenticate", scheme="api_key", outcome="success", reason="ok", user=user)
    user.delete()
    row = AuditEvent.objects.get()
    assert row.username == "alice"
