"""The driver-cursor fast path and its fallback to Django's cursor."""

import pytest
from django.db import DatabaseError, connection
from django.test.utils import CaptureQueriesContext

from django_apiauth.core.sql import Statement

pytestmark = pytest.mark.django_db


def test_fast_path_returns_rows_and_converts_placeholders():
    statement = Statement(connection, "SELECT %s, '100%%'")
    assert not connection.queries_logged
    assert statement.execute(connection, ["x"], fetchone=True) == ("x", "100%")


def test_watched_connection_uses_djangos_cursor():
    statement = Statement(connection, "SELECT %s")
    with CaptureQueriesContext(connection) as queries:
        assert statement.execute(connection, [1], fetchone=True) == (1,)
    assert len(queries.captured_queries) == 1


def test_execute_wrappers_see_the_statement():
    seen = []

    def wrapper(execute, sql, params, many, context):
        seen.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        Statement(connection, "SELECT %s").execute(connection, [1], fetchone=True)
    assert seen == ["SELECT %s"]


def test_driver_errors_become_django_database_errors():
    with pytest.raises(DatabaseError):
        Statement(connection, "SELECT * FROM no_such_table WHERE x = %s").execute(connection, [1])


def test_database_error_on_fast_path_is_503(client, api_key, monkeypatch):
    """Fail closed on the path the production server takes (no query logging)."""
    _obj, key = api_key
    monkeypatch.setattr(Statement, "execute", lambda *a, **k: (_ for _ in ()).throw(DatabaseError("down")))
    response = client.get("/api/whoami/", HTTP_AUTHORIZATION=f"Api-Key {key}")
    assert response.status_code == 503
