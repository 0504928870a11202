"""Coalesced last-used bookkeeping: at most one write per credential per minute."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from freezegun import freeze_time

pytestmark = pytest.mark.django_db


def updates(queries):
    return [q for q in queries.captured_queries if q["sql"].startswith("UPDATE") and "apikey" in q["sql"]]


def test_one_write_per_minute(client, api_key):
    obj, key = api_key
    headers = {"HTTP_AUTHORIZATION": f"Api-Key {key}"}
    start = timezone.now()
    with freeze_time(start), CaptureQueriesContext(connection) as first:
        assert client.get("/api/whoami/", **headers).status_code == 200
    assert len(updates(first)) == 1
    with freeze_time(start + timedelta(seconds=59)), CaptureQueriesContext(connection) as again:
        for _ in range(3):
            assert client.get("/api/whoami/", **headers).status_code == 200
    assert updates(again) == []
    with freeze_time(start + timedelta(seconds=61)), CaptureQueriesContext(connection) as later:
        client.get("/api/whoami/", **headers)
    assert len(updates(later)) == 1
    obj.refresh_from_db()
    assert obj.last_used_at == start + timedelta(seconds=61)
    assert obj.last_used_ip == "127.0.0.1"


def test_failed_attempt_does_not_touch_last_used(client, api_key):
    obj, key = api_key
    obj.revoked_at = timezone.now()
    obj.save()
    client.get("/api/whoami/", HTTP_AUTHORIZATION=f"Api-Key {key}")
    obj.refresh_from_db()
    assert obj.last_used_at is None


def test_successful_request_costs_two_queries_after_first_touch(client, api_key):
    """Lookup + audit insert: the per-request database work stays bounded."""
    _obj, key = api_key
    headers = {"HTTP_AUTHORIZATION": f"Api-Key {key}"}
    client.get("/api/whoami/", **headers)
    with CaptureQueriesContext(connection) as queries:
        client.get("/api/whoami/", **headers)
    assert len(queries.captured_queries) == 2, queries.captured_queries
