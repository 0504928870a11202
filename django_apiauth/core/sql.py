"""Statements compiled once per connection and run on the driver's cursor.

Two statements run on every authenticated request: the credential lookup and
the audit INSERT. Through Django's cursor wrapper each execution re-converts
the SQL text (a regular expression over the whole statement on SQLite) and
passes through the query logger and wrappers, which costs more than the
database round trip itself. So:

* the SQL is converted to the driver's placeholder style once, when the
  statement is compiled for a connection;
* it runs on the DB-API cursor of Django's own connection (same connection,
  same transaction), inside ``connection.wrap_database_errors`` so a driver
  error still surfaces as :class:`django.db.DatabaseError`;
* whenever somebody is watching — ``DEBUG`` query logging, a test's
  ``CaptureQueriesContext``/``assertNumQueries``, or an ``execute_wrapper``
  installed by an APM / tracing library — it runs through Django's cursor
  instead, so nothing becomes invisible.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db.backends.sqlite3.base import FORMAT_QMARK_REGEX


class Statement:
    __slots__ = ("driver_sql", "sql")

    def __init__(self, connection: Any, sql: str) -> None:
        self.sql = sql
        if connection.vendor == "sqlite":
            self.driver_sql = FORMAT_QMARK_REGEX.sub("?", sql).replace("%%", "%")
        else:
            self.driver_sql = sql  # psycopg, mysqlclient, oracledb take Django's %s style

    def execute(self, connection: Any, params: Sequence[Any], *, fetchone: bool = False) -> Any:
        if connection.queries_logged or connection.execute_wrappers:
            with connection.cursor() as cursor:
                cursor.execute(self.sql, params)
                return cursor.fetchone() if fetchone else None
        connection.ensure_connection()
        with connection.wrap_database_errors:
            cursor = connection.connection.cursor()
            try:
                cursor.execute(self.driver_sql, params)
                return cursor.fetchone() if fetchone else None
            finally:
                cursor.close()
