"""Credential lookup: one indexed query per request, and last-used bookkeeping.

The ORM's per-query Python cost (queryset cloning, SQL compilation, model
iteration) is several times the cost of the database round trip for a
primary-key-like lookup. So the SELECT for ``Model.objects.select_related(
"owner").filter(<lookup_field>=…)`` is compiled by the ORM *once per database
connection*, then executed as a :class:`~django_apiauth.core.sql.Statement`;
rows are turned into model
instances with the ORM's own converters and ``Model.from_db``. The result is
exactly what the ORM would return, at a fraction of the cost. Nothing is
cached between requests except the SQL text, so a revocation takes effect on
the very next request.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from operator import itemgetter
from typing import Any, TypeVar

from django.conf import settings
from django.core.signals import setting_changed
from django.db import connections, router
from django.db.models import DEFERRED, Model, Q
from django.dispatch import receiver
from django.utils.dateparse import parse_datetime

from ..app_settings import app_settings
from .models import AbstractCredential
from .sql import Statement

C = TypeVar("C", bound=AbstractCredential)

_PLACEHOLDER = "__apiauth_lookup_value__"


class _CompiledLookup:
    __slots__ = (
        "converters",
        "cred_fields",
        "cred_model",
        "cred_positions",
        "cred_slice",
        "owner_fields",
        "owner_model",
        "owner_slice",
        "statement",
    )

    def __init__(self, model: type[AbstractCredential], field: str, alias: str) -> None:
        qs = model._default_manager.db_manager(alias).select_related("owner").filter(
            **{field: _PLACEHOLDER}
        )
        if model.lookup_defer:
            qs = qs.defer(*model.lookup_defer)
        compiler = qs.query.get_compiler(using=alias)
        sql, params = compiler.as_sql()
        if list(params) != [_PLACEHOLDER]:  # pragma: no cover - defensive
            raise RuntimeError(f"Cannot compile the lookup of {model.__name__}.{field}.")
        self.statement = Statement(connections[alias], sql)
        select = compiler.select
        klass_info = compiler.klass_info
        if klass_info is None:  # pragma: no cover - defensive
            raise RuntimeError(f"Cannot compile the lookup of {model.__name__}.{field}.")
        cred_idx = klass_info["select_fields"]
        owner_info = klass_info["related_klass_infos"][0]
        owner_idx = owner_info["select_fields"]
        self.cred_model = klass_info["model"]
        self.owner_model = owner_info["model"]
        self.cred_slice = slice(cred_idx[0], cred_idx[-1] + 1)
        self.owner_slice = slice(owner_idx[0], owner_idx[-1] + 1)
        self.cred_fields = [select[i][0].target.attname for i in cred_idx]
        # With deferred fields, Model.from_db() places the values it got with a
        # membership test per concrete field (quadratic, a large part of a
        # lookup): place them once here, DEFERRED where a field is not read.
        # The row gets one DEFERRED appended, at index len(select).
        concrete = [f.attname for f in self.cred_model._meta.concrete_fields]
        if concrete == self.cred_fields:
            self.cred_positions: Callable[[Any], tuple[Any, ...]] | None = None
        else:
            where = {name: cred_idx[n] for n, name in enumerate(self.cred_fields)}
            self.cred_positions = itemgetter(*[where.get(name, len(select)) for name in concrete])
        self.owner_fields = [select[i][0].target.attname for i in owner_idx]
        connection = connections[alias]
        slow_datetime = connection.ops.convert_datetimefield_value
        fast_datetime = _aware_datetime(connection.timezone) if (
            connection.vendor == "sqlite" and settings.USE_TZ) else slow_datetime
        self.converters = [
            (pos, [fast_datetime if conv == slow_datetime else conv for conv in convs], expr)
            for pos, (convs, expr) in compiler.get_converters([s[0] for s in select]).items()
        ]


def _aware_datetime(zone: Any) -> Callable[[Any, Any, Any], Any]:
    """SQLite's date-time converter, for ``USE_TZ = True``, without its per-call
    settings and time-zone lookups (read once here; compiled lookups are
    dropped when ``USE_TZ`` or ``TIME_ZONE`` changes). Same result: a naive
    value gets the connection's time zone."""

    def convert(value: Any, expression: Any, connection: Any) -> Any:
        if value is not None:
            if not isinstance(value, datetime):
                value = parse_datetime(value)
            if value.tzinfo is None or value.utcoffset() is None:
                value = value.replace(tzinfo=zone)
        return value

    return convert


@receiver(setting_changed)
def _forget_compiled(setting: str = "", **kwargs: Any) -> None:
    if setting in ("USE_TZ", "TIME_ZONE", "DATABASES"):
        for connection in connections.all(initialized_only=True):
            connection.__dict__.pop("_apiauth_lookups", None)


def _compiled(model: type[AbstractCredential], field: str, alias: str) -> _CompiledLookup:
    connection = connections[alias]
    cache: dict[tuple[type[Model], str], _CompiledLookup] = connection.__dict__.setdefault(
        "_apiauth_lookups", {}
    )
    compiled = cache.get((model, field))
    if compiled is None:
        compiled = cache[(model, field)] = _CompiledLookup(model, field, alias)
    return compiled


def lookup(model: type[C], value: str, field: str | None = None) -> C | None:
    """The credential whose ``field`` (default ``model.lookup_field``) equals
    ``value``, with its owner loaded, or ``None``.

    Returns the credential whatever its state: the caller verifies the proof
    first and then applies :func:`~django_apiauth.core.models.unusable_reason`,
    so that the audit row says *why* a credential was refused.
    """
    field = field or model.lookup_field
    # The primary, not a replica: a revocation must hold on the very next request.
    alias = router.db_for_write(model)
    compiled = _compiled(model, field, alias)
    connection = connections[alias]
    row: Any = compiled.statement.execute(connection, (value,), fetchone=True)
    if row is None:
        return None
    if compiled.converters:
        row = list(row)
        for pos, convs, expr in compiled.converters:
            item = row[pos]
            for conv in convs:
                item = conv(item, expr, connection)
            row[pos] = item
    positions = compiled.cred_positions
    values = row[compiled.cred_slice] if positions is None else positions([*row, DEFERRED])
    credential = compiled.cred_model.from_db(alias, compiled.cred_fields, values)
    owner = compiled.owner_model.from_db(alias, compiled.owner_fields, row[compiled.owner_slice])
    credential._state.fields_cache["owner"] = owner
    return credential  # type: ignore[no-any-return]


def touch_last_used(credential: AbstractCredential, now: datetime, ip: str | None) -> None:
    """Record use, writing at most once per credential per ``LAST_USED_INTERVAL``.

    The conditional UPDATE makes the rule hold across processes: whichever
    worker wins writes; the others match no row.
    """
    interval = app_settings.LAST_USED_INTERVAL
    last = credential.last_used_at
    if last is not None and now - last < interval:
        return
    threshold = now - interval
    type(credential)._default_manager.filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lte=threshold), pk=credential.pk
    ).update(last_used_at=now, last_used_ip=ip)
    credential.last_used_at = now
    credential.last_used_ip = ip
