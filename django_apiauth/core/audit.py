"""The audit writer: the only code that creates :class:`AuditEvent` rows.

Writing an audit row is on every request's path, so the INSERT statement is
compiled once per database connection and executed as a
:class:`~django_apiauth.core.sql.Statement` (no model instance, no signals):
the per-request cost is one ``execute``.
Request values are sanitised (control, bidi and line-separator characters
replaced) and bounded to their column's length; ``detail`` keys that look
like secrets are redacted before anything is written.

Integrity (``docs/audit-integrity.md``):

* every row carries ``mac``, an HMAC-SHA256 of its canonical serialisation
  (:func:`canonical`) under the audit key (:func:`keyring`), computed here
  before the INSERT: no lock and no extra query on the request path, and an
  edited or forged row no longer matches;
* :func:`seal` then links committed rows into one hash chain, in batches,
  under the lock of the one :class:`~django_apiauth.models.AuditChainHead`
  row: ``chain = HMAC(previous chain ‖ seq ‖ id ‖ mac)``, so a deleted,
  reordered or moved row breaks it. Sealing runs after a request has
  finished (at most every ``APIAUTH_AUDIT_SEAL_INTERVAL`` seconds per
  process), in ``verify_audit`` and ``prune_audit``, and from :func:`seal`;
* :func:`verify` walks the chain from its start (genesis, or the cut of the
  last ``prune_audit``) and reports the id of every row where it breaks.

Buffering (``APIAUTH_AUDIT_BUFFER_SIZE``): successful ``authenticate`` rows
may be kept in memory and written by one bulk INSERT (:func:`flush`) when
the buffer holds N rows, when its oldest row is T seconds old, after a
request has finished when one of those holds, and at process exit; every
other row is written at once.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import hmac
import ipaddress
import itertools
import json
import logging
import math
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.signals import request_finished, setting_changed
from django.db import (
    DEFAULT_DB_ALIAS,
    DatabaseError,
    IntegrityError,
    connections,
    router,
    transaction,
)
from django.http import HttpRequest
from django.utils import timezone
from django.utils.connection import ConnectionDoesNotExist

from ..app_settings import app_settings
from .net import client_ip
from .sql import Statement

logger = logging.getLogger("django_apiauth")

SUCCESS = "success"
FAILURE = "failure"

_UNSAFE = {c: "\ufffd" for c in (*range(0x00, 0x20), *range(0x7F, 0xA0))}
_UNSAFE.update({c: "\ufffd" for c in (0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A))})
_SECRET_KEY_RE = re.compile(r"secret|key|token|pass|signature|credential|auth|cookie|pepper", re.I)
_SAFE_DETAIL_KEYS = frozenset({
    "key_id", "keyid", "credential_id", "authorization_scheme", "client_auth",
})
REDACTED = "********"

#: First element of every canonical serialisation: bump it if the format changes.
CANONICAL_VERSION = "apiauth-audit-1"
#: ``prev`` of the first row of a chain that was never pruned.
GENESIS = "genesis"
#: Columns covered by ``mac``, in canonical order (``id`` is not known before
#: the INSERT: the chain link covers it).
MAC_FIELDS = (
    "at", "event", "scheme", "outcome", "reason", "user_id", "username", "credential_id",
    "ip", "user_agent", "method", "path", "request_id", "detail",
)


class AuditUnavailable(Exception):
    """The audit row could not be written (database down): refuse the request."""


class ChainError(Exception):
    """The chain cannot be extended or pruned safely (head missing or tampered with)."""


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
        elif isinstance(value, float) and not math.isfinite(value):
            out[key] = str(value)  # NaN / Infinity are not JSON (PostgreSQL refuses them)
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


# -- the audit key -------------------------------------------------------------

_KEY_INFO = b"django_apiauth.audit.v1"
_RING: list[tuple[str, bytes]] | None = None
_RING_BY_ID: dict[str, bytes] = {}
_PADS: dict[str, tuple[Any, Any]] = {}


def _key_sources() -> tuple[str | bytes, ...]:
    configured = getattr(settings, "APIAUTH_AUDIT_KEYS", None)
    if configured:
        return (configured,) if isinstance(configured, str | bytes) else tuple(configured)
    return (settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", ()))


def keyring() -> list[tuple[str, bytes]]:
    """``[(key id, key), …]``, the current key first.

    Each key is HKDF-SHA256 of one entry of ``APIAUTH_AUDIT_KEYS`` or, when that
    setting is unset, of ``SECRET_KEY`` and then ``SECRET_KEY_FALLBACKS`` (with
    its own ``info``, so it is unrelated to the encryption keys and the
    pepper). The key id, 8 hex characters of SHA-256 of the key, is stored in
    front of every MAC and chain hash so that old rows stay verifiable after
    a rotation as long as their key is still listed.
    """
    global _RING, _RING_BY_ID
    ring = _RING
    if ring is None:
        ring = []
        for source in _key_sources():
            raw = source.encode() if isinstance(source, str) else bytes(source)
            key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KEY_INFO).derive(raw)
            ring.append((hashlib.sha256(key).hexdigest()[:8], key))
        _RING_BY_ID = dict(reversed(ring))
        _PADS.clear()
        for key_id, key in ring:
            # HMAC (RFC 2104) with the inner and outer pads hashed once per key:
            # per row, two copies of a SHA-256 state instead of a key schedule.
            padded = key.ljust(64, b"\0")
            _PADS[key_id] = (hashlib.sha256(bytes(b ^ 0x36 for b in padded)),
                             hashlib.sha256(bytes(b ^ 0x5C for b in padded)))
        _RING = ring
    return ring


def _key_id(key_id: str | None) -> str:
    """``key_id``, or the current key's id; the keyring loaded either way."""
    ring = _RING or keyring()
    return ring[0][0] if key_id is None else key_id


def _known_key(tagged: str) -> bool:
    keyring()
    return tagged.partition("$")[0] in _RING_BY_ID


def _forget_keys(*, setting: str, **kwargs: Any) -> None:
    global _RING
    if setting in ("APIAUTH_AUDIT_KEYS", "SECRET_KEY", "SECRET_KEY_FALLBACKS"):
        _RING = None


setting_changed.connect(_forget_keys, dispatch_uid="django_apiauth.audit.keys")


# -- canonical serialisation, MAC and chain links -------------------------------

def _at_text(at: datetime) -> str:
    if at.utcoffset():  # an aware time outside UTC (Django gives UTC back)
        at = at.astimezone(UTC)
    return at.isoformat(timespec="microseconds")


# One encoder for every row: json.dumps() with options builds a new one per call,
# and JSONEncoder.encode() a new C encoder per call; build the C one once.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                            allow_nan=False)


def _not_json(value: object) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


if c_make_encoder is not None:  # CPython
    _C_ENCODE = c_make_encoder(None, _not_json, encode_basestring_ascii, None, ":", ",",
                               True, False, False)

    def _encode(value: Any) -> str:
        return "".join(_C_ENCODE(value, 0))
else:  # pragma: no cover - Python without the C accelerator
    _encode = _ENCODER.encode


def canonical(values: Mapping[str, Any], nonce: str = "") -> bytes:
    """The bytes a row's ``mac`` is computed over.

    A JSON array (no whitespace, ASCII only, object keys sorted at every level):
    ``[CANONICAL_VERSION, nonce, at, event, scheme, outcome, reason, user_id,
    username, credential_id, ip, user_agent, method, path, request_id, detail]``,
    where ``at`` is ISO 8601 in UTC with microseconds
    (``2025-01-31T08:00:00.000000+00:00``; no offset when ``USE_TZ`` is off),
    ``ip`` the address's canonical text or null and ``user_id`` an integer or
    null. These are exactly the values the database gives back, so the same
    bytes are rebuilt from a stored row (integral floats in ``detail`` are
    written as integers, as ``jsonb`` returns them). ``nonce`` is unique per row written
    (a random per-process prefix and a counter), so two rows never share a MAC
    and a copied row is found.
    """
    detail = values["detail"]
    return _encode([
        CANONICAL_VERSION, nonce, _at_text(values["at"]), *[values[f] for f in MAC_FIELDS[1:-1]],
        _json_numbers(detail) if detail else detail,
    ]).encode()


def _json_numbers(value: Any) -> Any:
    """Integral floats as integers: PostgreSQL's ``jsonb`` gives ``1e20`` back as
    ``100000000000000000000``, so both must serialise alike."""
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        return {k: _json_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_numbers(v) for v in value]
    return value


class _Nonces:
    def __init__(self) -> None:
        self.prefix = secrets.token_urlsafe(6)  # 48 random bits, 8 characters
        self.counter = itertools.count()

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter):x}"


_nonces = _Nonces()


def _tag(key_id: str, message: bytes) -> str:
    """HMAC-SHA256 under the key ``key_id``, truncated to 128 bits (RFC 2104 §5),
    base64url without padding: 22 characters."""
    inner, outer = _PADS[key_id]
    inner = inner.copy()
    inner.update(message)
    outer = outer.copy()
    outer.update(inner.digest())
    return base64.urlsafe_b64encode(outer.digest()[:16]).decode()[:22]


def compute_mac(values: Mapping[str, Any], key_id: str | None = None,
                nonce: str | None = None) -> str:
    """``<key id>$<nonce>$<tag>``, the tag being HMAC-SHA256 of ``canonical(values, nonce)``.

    Without ``key_id`` and ``nonce``: the current key and a fresh nonce (the writer).
    """
    key_id = _key_id(key_id)
    if nonce is None:
        nonce = _nonces.next()
    return f"{key_id}${nonce}${_tag(key_id, canonical(values, nonce))}"


def link(prev: str, seq: int, row_id: int, mac: str, key_id: str | None = None) -> str:
    """The chain hash of a row: ``<key id>$<tag of prev ‖ seq ‖ id ‖ mac>``."""
    key_id = _key_id(key_id)
    message = f"{prev}\n{seq}\n{row_id}\n{mac}".encode()
    return f"{key_id}${_tag(key_id, message)}"


def _head_mac(seq: int, chain: str, start_seq: int, start_prev: str, key_id: str | None = None) -> str:
    key_id = _key_id(key_id)
    message = f"head\n{seq}\n{chain}\n{start_seq}\n{start_prev}".encode()
    return f"{key_id}${_tag(key_id, message)}"


def _matches(expected_tagged: str, stored: str) -> bool:
    return hmac.compare_digest(expected_tagged.encode(), stored.encode())


def mac_is_valid(values: Mapping[str, Any], stored: str) -> bool:
    parts = stored.split("$")
    if len(parts) != 3 or not _known_key(stored):
        return False
    return _matches(compute_mac(values, parts[0], parts[1]), stored)


def link_is_valid(prev: str, seq: int, row_id: int, mac: str, stored: str) -> bool:
    if not _known_key(stored):
        return False
    return _matches(link(prev, seq, row_id, mac, stored.partition("$")[0]), stored)


def head_is_valid(head: Any) -> bool:
    if not _known_key(head.mac):
        return False
    expected = _head_mac(head.seq, head.chain, head.start_seq, head.start_prev,
                         head.mac.partition("$")[0])
    return _matches(expected, head.mac)


# -- the INSERT ------------------------------------------------------------------

class _CompiledInsert:
    """The audit INSERT for one connection, with one value adapter per column.

    Strings and integers go to the driver as they are; the timestamp, IP and
    JSON columns use the backend's own adapters (what ``get_db_prep_save``
    would call), picked once here instead of on every row.
    """

    __slots__ = ("adapters", "adapters_no_detail", "fields", "statement")

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
        for field_ in self.fields:
            if isinstance(field_, models.DateTimeField):
                adapters.append(connection.ops.adapt_datetimefield_value)
            elif isinstance(field_, models.GenericIPAddressField):
                adapters.append(connection.ops.adapt_ipaddressfield_value)
            elif isinstance(field_, models.JSONField):
                adapters.append(lambda value, f=field_: f.get_db_prep_save(value, connection))
            elif isinstance(field_, models.CharField | models.ForeignKey | models.BigIntegerField):
                adapters.append(None)  # str / int / None: as is
            else:  # pragma: no cover - a field added later: the generic path
                adapters.append(lambda value, f=field_: f.get_db_prep_save(value, connection))
        self.adapters = adapters
        # Most rows have no detail: adapt ``{}`` once (the backend's JSON adapter
        # builds an encoder on every call).
        empty = next(adapt for f, adapt in zip(self.fields, adapters, strict=True)
                     if f.attname == "detail")({})
        self.adapters_no_detail = [
            (lambda _value, empty=empty: empty) if f.attname == "detail" else adapt
            for f, adapt in zip(self.fields, adapters, strict=True)
        ]

    def params(self, values: Mapping[str, Any]) -> list[Any]:
        adapters = self.adapters if values["detail"] else self.adapters_no_detail
        return [
            values[f.attname] if adapt is None else adapt(values[f.attname])
            for f, adapt in zip(self.fields, adapters, strict=True)
        ]

    def execute_many(self, connection: Any, rows: Sequence[list[Any]]) -> None:
        """One ``executemany`` (one round trip pipeline on psycopg 3)."""
        statement = self.statement
        if connection.queries_logged or connection.execute_wrappers:
            with connection.cursor() as cursor:
                cursor.executemany(statement.sql, rows)
            return
        connection.ensure_connection()
        with connection.wrap_database_errors:
            cursor = connection.connection.cursor()
            try:
                cursor.executemany(statement.driver_sql, rows)
            finally:
                cursor.close()


def _compiled(connection: Any) -> _CompiledInsert:
    compiled = connection.__dict__.get("_apiauth_audit_insert")
    if compiled is None:
        compiled = connection.__dict__["_apiauth_audit_insert"] = _CompiledInsert(connection)
    return compiled  # type: ignore[no-any-return]


def audit_alias() -> str:
    """The database alias audit rows are written to."""
    alias = app_settings.AUDIT_DATABASE
    if alias:
        return alias
    if not router.routers:  # no DATABASE_ROUTERS: what db_for_write() would answer
        return DEFAULT_DB_ALIAS
    from ..models import AuditEvent

    return router.db_for_write(AuditEvent)


@lru_cache(maxsize=8)
def _meta_key(header: str) -> str:
    return "HTTP_" + header.upper().replace("-", "_")


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
    """Write one audit row. Raises :class:`AuditUnavailable` if it cannot.

    With ``APIAUTH_AUDIT_BUFFER_SIZE`` set, a successful ``authenticate`` row
    is buffered instead (see :func:`flush`), unless the buffer's last write
    failed: then it is written at once like every other row.
    """
    if request is not None:
        meta = request.META
        ip = client_ip(request) if ip is None else ip
        user_agent = meta.get("HTTP_USER_AGENT", "")
        method = meta.get("REQUEST_METHOD", "")
        path = meta.get("PATH_INFO", "")
        request_id = meta.get(_meta_key(app_settings.REQUEST_ID_HEADER), "")
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
        "seq": None,
        "chain": "",
    }
    values["mac"] = compute_mac(values)
    alias = audit_alias()
    if outcome == SUCCESS and event == "authenticate" and app_settings.AUDIT_BUFFER_SIZE > 0 \
            and _buffer.add(alias, values):
        return
    # Written at once: every row but a success, or a success the buffer refused
    # because its last write failed (fail closed: no success goes unrecorded
    # while the audit database is down; the INSERT below raises instead).
    try:
        connection = connections[alias]
    except ConnectionDoesNotExist:  # a misspelt APIAUTH_AUDIT_DATABASE (check apiauth.E006)
        raise AuditUnavailable("ConnectionDoesNotExist") from None
    try:
        compiled = _compiled(connection)
        compiled.statement.execute(connection, compiled.params(values))
    except DatabaseError as exc:
        raise AuditUnavailable(str(type(exc).__name__)) from None
    _state.written += 1


# -- buffered success rows -------------------------------------------------------

class _Buffer:
    """Successful-authentication rows waiting for one bulk INSERT.

    Thread-safe: rows are appended and taken under a lock, and the INSERT runs
    outside it (other threads keep appending meanwhile). A failed flush puts
    the rows back in front (logged); beyond ``max(10 * size, 1000)`` rows the
    oldest are dropped, counted in :attr:`dropped` and logged as an error.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.lock = threading.Lock()
        self.rows: list[tuple[str, dict[str, Any]]] = []
        self.oldest = 0.0  # monotonic time of the oldest buffered row
        self.retry_after = 0.0  # no automatic retry before this after a failure
        self.dropped = 0
        self.timer: threading.Timer | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, alias: str, values: dict[str, Any]) -> bool:
        """Buffer one row; ``False`` (not buffered) while the last write failed.

        Back-pressure keeps the promise that no success goes unrecorded while
        the audit database is down: after a failed flush the caller writes each
        row at once (and refuses the request with 503 if that fails too), so
        the buffer never grows past one batch and a crash loses at most
        ``APIAUTH_AUDIT_BUFFER_SIZE`` rows / ``APIAUTH_AUDIT_BUFFER_SECONDS``.
        """
        now = time.monotonic()
        size = app_settings.AUDIT_BUFFER_SIZE
        seconds = app_settings.AUDIT_BUFFER_SECONDS
        with self.lock:
            if now < self.retry_after:
                return False
            if not self.rows:
                self.oldest = now
                self._start_timer(seconds)
            self.rows.append((alias, values))
            due = self._due(now, size, seconds)
        if due:
            try:
                in_transaction = connections[alias].in_atomic_block
            except ConnectionDoesNotExist:  # check apiauth.E006; flush() logs it
                in_transaction = False
            # Never inside the request's transaction: a rollback would take
            # other requests' rows with it. request_finished flushes instead.
            if not in_transaction:
                flush()
        return True

    def _due(self, now: float, size: int, seconds: float) -> bool:
        if not self.rows or now < self.retry_after:
            return False
        return len(self.rows) >= size or now - self.oldest >= seconds

    def due(self) -> bool:
        with self.lock:
            return self._due(time.monotonic(), max(app_settings.AUDIT_BUFFER_SIZE, 1),
                             app_settings.AUDIT_BUFFER_SECONDS)

    def take(self) -> list[tuple[str, dict[str, Any]]]:
        with self.lock:
            rows, self.rows = self.rows, []
            self.retry_after = 0.0  # a failure of this attempt sets it again
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            return rows

    def put_back(self, rows: list[tuple[str, dict[str, Any]]]) -> None:
        now = time.monotonic()
        with self.lock:
            self.rows[:0] = rows
            cap = max(10 * app_settings.AUDIT_BUFFER_SIZE, 1000)
            if len(self.rows) > cap:
                lost = len(self.rows) - cap
                del self.rows[:lost]
                self.dropped += lost
                logger.error(
                    "Audit buffer full: %d successful-authentication rows dropped (%d in all "
                    "since start); the audit database has been unreachable for a while.",
                    lost, self.dropped,
                )
            self.oldest = now
            self.retry_after = now + 1.0
            self._start_timer(max(app_settings.AUDIT_BUFFER_SECONDS, 1.0))

    def _start_timer(self, seconds: float) -> None:
        """An idle process still writes its rows within ``seconds``."""
        if self.timer is None and seconds > 0:
            timer = threading.Timer(seconds, _timer_flush)
            timer.daemon = True
            timer.name = "apiauth-audit-flush"
            self.timer = timer
            timer.start()

    def clear(self) -> list[tuple[str, dict[str, Any]]]:
        """Forget the buffered rows (tests); returns them."""
        return self.take()


_buffer = _Buffer()


@dataclass
class FlushResult:
    written: int = 0
    kept: int = 0
    errors: list[str] = field(default_factory=list)


def flush() -> FlushResult:
    """Write every buffered row now, one bulk INSERT per database.

    Never raises: a database error is logged (type only, no values) and the
    rows stay buffered for the next attempt. Call it in tests, before reading
    the audit table on a page, or before a process ends on its own terms.
    """
    result = FlushResult()
    rows = _buffer.take()
    if not rows:
        return result
    by_alias: dict[str, list[dict[str, Any]]] = {}
    for alias, values in rows:
        by_alias.setdefault(alias, []).append(values)
    failed: list[tuple[str, dict[str, Any]]] = []
    for alias, batch in by_alias.items():
        try:
            connection = connections[alias]
            compiled = _compiled(connection)
            params = [compiled.params(values) for values in batch]
            with transaction.atomic(using=alias):
                compiled.execute_many(connection, params)
        except (DatabaseError, ConnectionDoesNotExist) as exc:
            result.errors.append(type(exc).__name__)
            result.kept += len(batch)
            failed.extend((alias, values) for values in batch)
            logger.warning(
                "Could not write %d buffered audit rows to database %r (%s); they stay "
                "buffered and are retried.", len(batch), alias, type(exc).__name__,
            )
        else:
            result.written += len(batch)
            _state.written += len(batch)
    if failed:
        _buffer.put_back(failed)
    return result


def buffered() -> int:
    """How many rows are waiting in this process's buffer."""
    return len(_buffer)


def _timer_flush() -> None:
    with _buffer.lock:
        _buffer.timer = None
    try:
        flush()
    finally:
        # This thread's connections are its own: never leave them open.
        for conn in connections.all(initialized_only=True):
            conn.close()


def _flush_at_exit() -> None:
    if len(_buffer):
        result = flush()
        if result.kept:
            logger.error("%d buffered audit rows could not be written at exit and are lost.",
                         result.kept)


# -- sealing ---------------------------------------------------------------------

class _State:
    def __init__(self) -> None:
        self.written = 0  # rows this process wrote since its last seal
        self.last_seal = time.monotonic()


_state = _State()


def _after_fork() -> None:
    # The parent's buffered rows are the parent's to write.
    _buffer._reset()
    _state.__init__()  # type: ignore[misc]
    _nonces.__init__()  # type: ignore[misc]


os.register_at_fork(after_in_child=_after_fork)
atexit.register(_flush_at_exit)


def _ensure_head(alias: str) -> None:
    from ..models import AuditChainHead, AuditEvent

    if AuditChainHead.objects.using(alias).filter(pk=1).exists():
        return
    if AuditEvent.objects.using(alias).filter(seq__isnull=False).exists():
        raise ChainError(
            "The audit chain head row is missing while sealed rows exist: it was deleted. "
            "Run verify_audit and investigate."
        )
    try:
        with transaction.atomic(using=alias):
            AuditChainHead.objects.using(alias).create(
                pk=1, seq=0, chain=GENESIS, start_seq=1, start_prev=GENESIS,
                mac=_head_mac(0, GENESIS, 1, GENESIS),
            )
    except IntegrityError:
        pass  # another process created it first


def _lock_head(alias: str, *, nowait: bool = False) -> Any:
    """The head row, locked until the end of the current transaction (or None
    when ``nowait`` and another process holds it)."""
    from ..models import AuditChainHead

    connection = connections[alias]
    manager = AuditChainHead.objects.using(alias)
    if connection.features.has_select_for_update:
        skip = nowait and connection.features.has_select_for_update_skip_locked
        head = manager.select_for_update(skip_locked=skip).filter(pk=1).first()
    else:
        # SQLite: write first, so this transaction holds the write lock before
        # it reads the head (a read-then-write transaction could not upgrade).
        from django.db.models import F

        manager.filter(pk=1).update(seq=F("seq"))
        head = manager.filter(pk=1).first()
    if head is None and not nowait:
        raise ChainError("The audit chain head row is missing.")
    if head is not None and not head_is_valid(head):
        raise ChainError(
            "The audit chain head does not authenticate under any configured audit key: it "
            "was edited, or its key was removed from APIAUTH_AUDIT_KEYS. Run verify_audit."
        )
    return head


def _update_rows(alias: str, updates: list[tuple[int, str, int]]) -> None:
    from ..models import AuditEvent

    connection = connections[alias]
    qn = connection.ops.quote_name
    sql = (
        f"UPDATE {qn(AuditEvent._meta.db_table)} SET {qn('seq')} = %s, {qn('chain')} = %s "  # noqa: S608
        f"WHERE {qn('id')} = %s AND {qn('seq')} IS NULL"
    )
    with connection.cursor() as cursor:
        cursor.executemany(sql, updates)


#: How far below the last sealed row's id an ordinary sealing pass looks for
#: rows that committed late (a transaction still open when later ids were
#: sealed). Older stragglers are sealed by a sweep (verify_audit, prune_audit).
SEAL_LOOKBACK = 10_000


def _seal_batch(alias: str, batch_size: int, nowait: bool, sweep: bool) -> int | None:
    from ..models import AuditEvent

    events = AuditEvent.objects.using(alias)
    with transaction.atomic(using=alias):
        head = _lock_head(alias, nowait=nowait)
        if head is None:
            return None
        unsealed = events.filter(seq__isnull=True)
        if not sweep and head.seq:
            # A primary-key range scan from just below the last sealed row.
            last_id = events.filter(seq=head.seq).values_list("id", flat=True).first()
            if last_id is not None:
                unsealed = unsealed.filter(id__gt=last_id - SEAL_LOOKBACK)
        rows = list(unsealed.order_by("id").values_list("id", "mac")[:batch_size])
        if not rows:
            return 0
        prev, seq = head.chain, head.seq
        updates = []
        for row_id, mac in rows:
            seq += 1
            prev = link(prev, seq, row_id, mac)
            updates.append((seq, prev, row_id))
        _update_rows(alias, updates)
        head.seq, head.chain = seq, prev
        head.mac = _head_mac(head.seq, head.chain, head.start_seq, head.start_prev)
        head.sealed_at = timezone.now()
        head.save(using=alias, update_fields=["seq", "chain", "mac", "sealed_at"])
    return len(rows)


def seal(*, using: str | None = None, batch_size: int = 1000, max_batches: int | None = None,
         nowait: bool = False, sweep: bool = False) -> int:
    """Link every committed unsealed row into the chain, oldest id first.

    One transaction per batch of ``batch_size`` rows, each holding the chain
    head's lock only for that batch. Rows committed late (a lower id than rows
    already sealed) are simply sealed in a later batch: the chain's order is
    ``seq``, the order of sealing. An ordinary pass looks for them down to
    :data:`SEAL_LOOKBACK` ids below the last sealed row (a primary-key range);
    ``sweep`` looks through the whole table. With ``nowait``, returns at once
    when another process is sealing (PostgreSQL; SQLite waits for its write
    lock). Returns the number of rows sealed.
    """
    alias = using or audit_alias()
    _ensure_head(alias)
    total = batches = 0
    while max_batches is None or batches < max_batches:
        sealed = _seal_batch(alias, batch_size, nowait, sweep)
        if sealed is None:
            break
        total += sealed
        batches += 1
        if sealed < batch_size:
            break
    _state.written = 0
    _state.last_seal = time.monotonic()
    return total


def _on_request_finished(**kwargs: Any) -> None:
    """After a response: flush the buffer when due, seal when the interval has passed.

    Never raises (the response is already out); failures are logged.
    """
    try:
        if len(_buffer) and _buffer.due():
            flush()
        interval = app_settings.AUDIT_SEAL_INTERVAL
        if interval and _state.written and time.monotonic() - _state.last_seal >= interval:
            _state.last_seal = time.monotonic()
            seal(max_batches=5, nowait=True)
    except (DatabaseError, ChainError, ConnectionDoesNotExist) as exc:
        logger.warning("Audit sealing after a request failed: %s", type(exc).__name__)
    except Exception:  # never let bookkeeping break the server
        logger.exception("Unexpected error in the audit writer's request_finished hook")


request_finished.connect(_on_request_finished, dispatch_uid="django_apiauth.audit.finished")


# -- verification ----------------------------------------------------------------

_ROW_FIELDS = ("id", "seq", "mac", "chain", *MAC_FIELDS)


@dataclass
class Problem:
    id: int | None
    seq: int | None
    problem: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "seq": self.seq, "problem": self.problem, "message": self.message}


@dataclass
class Report:
    checked: int = 0
    sealed_now: int = 0
    unsealed: int = 0
    start_seq: int = 1
    head_seq: int = 0
    head_chain: str = ""
    problems: list[Problem] = field(default_factory=list)
    problems_total: int = 0

    @property
    def ok(self) -> bool:
        return self.problems_total == 0

    @property
    def first_break_id(self) -> int | None:
        return self.problems[0].id if self.problems else None

    def add(self, problem: Problem, limit: int) -> None:
        self.problems_total += 1
        if len(self.problems) < limit:
            self.problems.append(problem)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "checked": self.checked, "sealed_now": self.sealed_now,
            "unsealed": self.unsealed, "start_seq": self.start_seq, "head_seq": self.head_seq,
            "head_chain": self.head_chain, "first_break_id": self.first_break_id,
            "problems_total": self.problems_total,
            "problems": [p.as_dict() for p in self.problems],
        }


def _rows(queryset: Any, order: str, chunk: int) -> Iterator[dict[str, Any]]:
    """Keyset pagination over ``order`` (``seq`` or ``id``), ``chunk`` rows at a time."""
    last = None
    while True:
        page = queryset if last is None else queryset.filter(**{f"{order}__gt": last})
        rows = list(page.order_by(order).values(*_ROW_FIELDS)[:chunk])
        yield from rows
        if len(rows) < chunk:
            return
        last = rows[-1][order]


def verify(*, using: str | None = None, seal_first: bool = True, chunk: int = 2000,
           limit: int = 100, progress: Callable[[int], None] | None = None) -> Report:
    """Check every row's MAC and every chain link; report where the chain breaks.

    Detects: an edited row (its MAC no longer matches), a forged row (no MAC
    under a configured key can be produced without the key), a deleted or
    reordered sealed row (``seq`` gap or link mismatch), rows cut off the end
    of the chain (the head names a later row), and an edited chain head.
    """
    from ..models import AuditChainHead, AuditEvent

    alias = using or audit_alias()
    report = Report()
    if seal_first:
        report.sealed_now = seal(using=alias, sweep=True)
    head = AuditChainHead.objects.using(alias).filter(pk=1).first()
    events = AuditEvent.objects.using(alias)
    if head is None:
        if events.filter(seq__isnull=False).exists():
            report.add(Problem(None, None, "head_missing",
                               "The chain head row is missing while sealed rows exist."), limit)
        start_seq, prev, head_seq, head_chain = 1, GENESIS, 0, GENESIS
    else:
        if not head_is_valid(head):
            report.add(Problem(None, head.seq, "head_edited",
                               "The chain head does not authenticate (edited, or its key is "
                               "no longer configured)."), limit)
        start_seq, prev, head_seq, head_chain = head.start_seq, head.start_prev, head.seq, head.chain
    report.start_seq, report.head_seq, report.head_chain = start_seq, head_seq, head_chain

    for row in events.filter(seq__lt=start_seq).values(*_ROW_FIELDS).order_by("seq")[:limit]:
        report.add(Problem(row["id"], row["seq"], "before_start",
                           "A row sits before the start of the chain (after the last prune's "
                           "cut)."), limit)

    expected = start_seq
    last_id: int | None = None
    for row in _rows(events.filter(seq__gte=start_seq), "seq", chunk):
        report.checked += 1
        if progress is not None and report.checked % chunk == 0:
            progress(report.checked)
        row_id, seq = row["id"], row["seq"]
        if seq != expected:
            report.add(Problem(row_id, seq, "missing",
                               f"{seq - expected} row(s) missing before this one (deleted), "
                               f"chain positions {expected} to {seq - 1}."), limit)
        elif not link_is_valid(prev, seq, row_id, row["mac"], row["chain"]):
            report.add(Problem(row_id, seq, "chain",
                               "The chain link does not match: the row was moved, reordered, "
                               "or its id, position or chain hash was changed."), limit)
        _check_mac(report, row, seq, limit)
        prev, expected, last_id = row["chain"], seq + 1, row_id
    if expected - 1 != head_seq or (report.checked and not _matches(prev, head_chain)):
        report.add(Problem(last_id, expected - 1, "truncated",
                           f"The chain head names position {head_seq}, the last row found is at "
                           f"{expected - 1}: rows were deleted from the end (or the head was "
                           "edited)."), limit)

    for row in _rows(events.filter(seq__isnull=True), "id", chunk):
        report.unsealed += 1
        _check_mac(report, row, None, limit)

    # A copied row carries a valid MAC (the id is not covered until sealing,
    # and the sealer links whatever it finds): two rows never share a MAC
    # (each has its own nonce), so a shared one is a copy.
    from django.db.models import Count, Min

    copies = (events.exclude(mac="").values("mac").annotate(n=Count("id"), first=Min("id"))
              .filter(n__gt=1).order_by("first"))
    for copy in copies[:limit]:
        for row_id, seq in (events.filter(mac=copy["mac"]).exclude(id=copy["first"])
                            .order_by("id").values_list("id", "seq")):
            report.add(Problem(row_id, seq, "duplicate",
                               f"A copy of row id {copy['first']} (same content and MAC): "
                               "inserted by someone else than the audit writer."), limit)
    return report


def _check_mac(report: Report, row: Mapping[str, Any], seq: int | None, limit: int) -> None:
    mac = row["mac"]
    if not mac:
        report.add(Problem(row["id"], seq, "unsigned",
                           "The row has no MAC: forged, or written by an older version "
                           "and never adopted."), limit)
    elif not _known_key(mac):
        report.add(Problem(row["id"], seq, "unknown_key",
                           f"The row's MAC is under key {mac.partition('$')[0]!r}, which is not "
                           "configured: put it back in APIAUTH_AUDIT_KEYS (or "
                           "SECRET_KEY_FALLBACKS), or the row was forged."), limit)
    elif not mac_is_valid(row, mac):
        report.add(Problem(row["id"], seq, "edited",
                           "The row's content does not match its MAC: edited or forged."), limit)


# -- pruning ---------------------------------------------------------------------

@dataclass
class PruneResult:
    deleted: int = 0
    batches: int = 0
    cut_seq: int | None = None
    cut_chain: str = ""
    sealed_now: int = 0
    event_id: int | None = None


def prune(*, cutoff: datetime, using: str | None = None, batch_size: int = 1000,
          dry_run: bool = False, older_than: str = "",
          progress: Callable[[int], None] | None = None) -> PruneResult:
    """Delete the oldest rows (``at`` before ``cutoff``), a chain prefix at a time.

    Rows go in ``seq`` order, ``batch_size`` per transaction; each batch checks
    the links of the rows it deletes (so pruning never erases a break: it stops
    with :class:`ChainError`) and moves the chain's start to the first kept
    row, under the head lock, in the same transaction. Pruning stops at the
    first row of the chain that is not old enough, so what remains is always
    verifiable from its start. The last step records an ``audit.pruned`` row
    with the position and hash it cut at.
    """
    from ..models import AuditEvent
    from . import reasons

    alias = using or audit_alias()
    result = PruneResult()
    result.sealed_now = seal(using=alias, sweep=True)  # unsealed old rows could not be pruned
    events = AuditEvent.objects.using(alias)
    if dry_run:
        from ..models import AuditChainHead

        head = AuditChainHead.objects.using(alias).filter(pk=1).first()
        expected = head.start_seq if head else 1
        for row in _rows(events.filter(seq__gte=expected), "seq", batch_size):
            if row["at"] >= cutoff or row["seq"] != expected:
                break
            result.deleted += 1
            expected += 1
            if progress is not None and result.deleted % batch_size == 0:
                progress(result.deleted)
        return result

    while True:
        with transaction.atomic(using=alias):
            head = _lock_head(alias)
            rows = list(
                events.filter(seq__gte=head.start_seq).order_by("seq")
                .values_list("id", "seq", "at", "mac", "chain")[:batch_size]
            )
            prev, expected = head.start_prev, head.start_seq
            doomed: list[int] = []
            for row_id, seq, at, mac, chain in rows:
                if at >= cutoff:
                    break
                if seq != expected or not link_is_valid(prev, seq, row_id, mac, chain):
                    raise ChainError(
                        f"The audit chain is broken at row id {row_id} (position {seq}): pruning "
                        "stops so that the evidence is kept. Run verify_audit."
                    )
                doomed.append(row_id)
                prev, expected = chain, seq + 1
            if not doomed:
                break
            events.filter(id__in=doomed).delete()
            head.start_seq, head.start_prev = expected, prev
            head.mac = _head_mac(head.seq, head.chain, head.start_seq, head.start_prev)
            head.save(using=alias, update_fields=["start_seq", "start_prev", "mac"])
        result.deleted += len(doomed)
        result.batches += 1
        result.cut_seq, result.cut_chain = expected - 1, prev
        if progress is not None:
            progress(result.deleted)
        if len(doomed) < batch_size:
            break
    if result.deleted:
        record(event="audit.pruned", scheme="", outcome=SUCCESS, reason=reasons.PRUNED,
               detail={"cut_seq": result.cut_seq, "cut_chain": result.cut_chain,
                       "deleted": result.deleted, "older_than": older_than,
                       "cutoff": cutoff.isoformat(), "via": "cli"})
        result.event_id = events.filter(event="audit.pruned").order_by("-id").values_list(
            "id", flat=True).first()
        seal(using=alias)  # the checkpoint joins the chain at once
    return result
