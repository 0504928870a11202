"""The audit writer: the only code that creates :class:`AuditEvent` rows.

Writing an audit row is on every request's path, so the INSERT statement is
compiled once per database connection and executed as a
:class:`~django_apiauth.core.sql.Statement` (no model instance, no signals):
the per-request cost is one ``execute``.
Request values are sanitised (control, bidi and line-separator characters
replaced) and bounded to their column's length; ``detail`` keys that look
like secrets are redacted before anything is written.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

from django.db import DatabaseError, connections, router
from django.http import HttpRequest
from django.utils import timezone
from django.utils.connection import ConnectionDoesNotExist

from ..app_settings import app_settings
from .net import client_ip
from .sql import Statement

SUCCESS = "success"
FAILURE = "failure"

_UNSAFE = {c: "\ufffd" for c in (*range(0x00, 0x20), *range(0x7F, 0xA0))}
_UNSAFE.update({c: "\ufffd" for c in (0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A))})
_SECRET_KEY_RE = re.compile(r"secret|key|token|pass|signature|credential|auth|cookie|pepper", re.I)
_SAFE_DETAIL_KEYS = frozenset({
    "key_id", "keyid", "credential_id", "authorization_scheme", "client_auth",
})
REDACTED = "********"


class AuditUnavailable(Exception):
    """The audit row could not be written (database down): refuse the request."""


def sanitise(value: object, limit: int) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    elif text.isascii() and text.isprintable():
        return text  # the common case: nothing to replace
    return text.translate(_UNSAFE)


def clean_detail(detail: Mapping[str, Any] | None, depth: int = 0) -> dict[str, Any]:
    """Copy of ``detail`` with secret-looking keys redacted and strings bounded."""
    if not detail:
        return {}
    out: dict[str, Any] = {}
    for key, value in list(detail.items())[:50]:
        key = sanitise(key, 64)
        if _SECRET_KEY_RE.search(key) and key not in _SAFE_DETAIL_KEYS:
            out[key] = REDACTED
        elif isinstance(value, Mapping) and depth < 3:
            out[key] = clean_detail(value, depth + 1)
        elif isinstance(value, bool | int | float) or value is None:
            out[key] = value
        elif isinstance(value, list | tuple | set | frozenset):
            out[key] = [sanitise(v, 200) for v in list(value)[:50]]
        else:
            out[key] = sanitise(value, 500)
    return out


@lru_cache(maxsize=4096)
def _valid_ip(ip: str | None) -> str | None:
    if not ip:
        return None
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return None


class _CompiledInsert:
    """The audit INSERT for one connection, with one value adapter per column.

    Strings and integers go to the driver as they are; the timestamp, IP and
    JSON columns use the backend's own adapters (what ``get_db_prep_save``
    would call), picked once here instead of on every row.
    """

    __slots__ = ("adapters", "fields", "statement")

    def __init__(self, connection: Any) -> None:
        from django.db import models

        from ..models import AuditEvent

        self.fields = [f for f in AuditEvent._meta.concrete_fields if not f.primary_key]
        qn = connection.ops.quote_name
        columns = ", ".join(qn(f.column) for f in self.fields)
        placeholders = ", ".join(["%s"] * len(self.fields))
        sql = f"INSERT INTO {qn(AuditEvent._meta.db_table)} ({columns}) VALUES ({placeholders})"  # noqa: S608
        self.statement = Statement(connection, sql)
        adapters: list[Any] = []
        for field in self.fields:
            if isinstance(field, models.DateTimeField):
                adapters.append(connection.ops.adapt_datetimefield_value)
            elif isinstance(field, models.GenericIPAddressField):
                adapters.append(connection.ops.adapt_ipaddressfield_value)
            elif isinstance(field, models.JSONField):
                adapters.append(lambda value, f=field: f.get_db_prep_save(value, connection))
            elif isinstance(field, models.CharField | models.ForeignKey):
                adapters.append(None)  # str / int / None: as is
            else:  # pragma: no cover - a field added later: the generic path
                adapters.append(lambda value, f=field: f.get_db_prep_save(value, connection))
        self.adapters = adapters


def _compiled(connection: Any) -> _CompiledInsert:
    compiled = connection.__dict__.get("_apiauth_audit_insert")
    if compiled is None:
        compiled = connection.__dict__["_apiauth_audit_insert"] = _CompiledInsert(connection)
    return compiled  # type: ignore[no-any-return]


def record(
    *,
    event: str,
    scheme: str,
    outcome: str,
    reason: str,
    request: HttpRequest | None = None,
    user: Any = None,
    credential_id: str = "",
    detail: Mapping[str, Any] | None = None,
    at: datetime | None = None,
    ip: str | None = None,
) -> None:
    """Write one audit row. Raises :class:`AuditUnavailable` if it cannot."""
    from ..models import AuditEvent

    if request is not None:
        meta = request.META
        ip = client_ip(request) if ip is None else ip
        user_agent = meta.get("HTTP_USER_AGENT", "")
        method = meta.get("REQUEST_METHOD", "")
        path = meta.get("PATH_INFO", "")
        request_id = meta.get(
            "HTTP_" + app_settings.REQUEST_ID_HEADER.upper().replace("-", "_"), ""
        )
    else:
        user_agent = method = path = request_id = ""
    if user is not None and getattr(user, "pk", None) is None:
        user = None  # AnonymousUser
    values = {
        "at": at or timezone.now(),
        "event": sanitise(event, 40),
        "scheme": sanitise(scheme, 32),
        "outcome": outcome,
        "reason": sanitise(reason, 40),
        "user_id": user.pk if user is not None else None,
        "username": sanitise(user.get_username(), 150) if user is not None else "",
        "credential_id": sanitise(credential_id, 100),
        "ip": _valid_ip(ip),
        "user_agent": sanitise(user_agent, 256),
        "method": sanitise(method, 10),
        "path": sanitise(path, 512),
        "request_id": sanitise(request_id, 128),
        "detail": clean_detail(detail),
    }
    alias = app_settings.AUDIT_DATABASE or router.db_for_write(AuditEvent)
    try:
        connection = connections[alias]
    except ConnectionDoesNotExist:  # a misspelt APIAUTH_AUDIT_DATABASE (check apiauth.E006)
        raise AuditUnavailable("ConnectionDoesNotExist") from None
    try:
        compiled = _compiled(connection)
        params = [
            values[f.attname] if adapt is None else adapt(values[f.attname])
            for f, adapt in zip(compiled.fields, compiled.adapters, strict=True)
        ]
        compiled.statement.execute(connection, params)
    except DatabaseError as exc:
        raise AuditUnavailable(str(type(exc).__name__)) from None
