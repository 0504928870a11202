"""Shared plumbing of the django-apiauth management commands (DESIGN §6).

Every command:

* takes ``--json`` for scripts (one JSON object per command, JSON lines for
  lists) and otherwise prints a short human summary;
* turns every expected failure (unknown user, kind or id, bad duration,
  impossible lifecycle step, database unavailable) into a
  :class:`~django.core.management.CommandError` whose message names the fix,
  so ``manage.py`` exits non-zero with one line on stderr and no traceback,
  ``--json`` or not;
* passes ``actor=None`` to :mod:`django_apiauth.core.lifecycle` (the audit
  rows of CLI actions have ``"actor": null`` and ``"via": "cli"``).

One-time secrets are written to stdout exactly once, by the command that
created them, and never logged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from ...core import audit, registry
from ...core.durations import parse_duration
from ...core.models import AbstractCredential

# Identifiers longer than this are not echoed back in error messages: a
# public id or primary key is short, a long value may be a pasted secret.
_MAX_ECHOED_IDENTIFIER = 40


class ApiAuthCommand(BaseCommand):
    """Base class: ``--json``, error translation and output helpers.

    Subclasses implement :meth:`run` instead of ``handle``.
    """

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--json", action="store_true", dest="json",
            help="Print machine-readable JSON on stdout (errors still go to stderr as text).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            self.run(*args, **options)
        except audit.AuditUnavailable as exc:
            raise CommandError(
                f"The audit row could not be written ({exc}), so nothing was changed. "
                "Check that the database is reachable and migrated, then try again."
            ) from None
        except DatabaseError as exc:
            raise CommandError(
                f"Database error: {type(exc).__name__}: {exc}. "
                "Check the database connection and run `manage.py migrate`."
            ) from None

    def run(self, *args: Any, **options: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- output ------------------------------------------------------------

    def write_json(self, obj: Mapping[str, Any]) -> None:
        """One JSON object on one line (also used for each line of JSON lines)."""
        self.stdout.write(json.dumps(obj, default=_json_default, ensure_ascii=False))

    def write_fields(self, fields: Mapping[str, Any]) -> None:
        width = max(len(label) for label in fields) + 1
        for label, value in fields.items():
            self.stdout.write(f"  {label + ':':<{width}} {value}")

    def write_secret(self, label: str, secret: str, noun: str) -> None:
        """Print a one-time secret with the warning that it is shown only once."""
        self.stdout.write("")
        self.stdout.write(f"{label}: {secret}")
        self.stdout.write("")
        self.stdout.write(self.style.WARNING(
            f"Store this {noun} now, in a password manager or secret store: "
            "it is not stored in plaintext and will not be shown again."
        ))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return str(value)


def duration_option(value: str, option: str, *, allow_zero: bool = False) -> timedelta:
    """Parse a ``--expires-in``-style option or raise a :class:`CommandError`."""
    try:
        delta = parse_duration(value)
    except ValueError as exc:
        raise CommandError(f"{option}: {exc}") from None
    if not allow_zero and delta <= timedelta(0):
        raise CommandError(f"{option} must be longer than zero, e.g. {option} 30d.")
    return delta


def get_owner(username: str) -> Any:
    """The active user named ``username`` (by the user model's natural key)."""
    user_model = get_user_model()
    try:
        user = user_model._default_manager.get_by_natural_key(username)
    except user_model.DoesNotExist:
        raise CommandError(
            f"No user {username!r}. Check the spelling, or create the user first "
            "(in the admin, or with `manage.py createsuperuser`); machine clients "
            "are ordinary users, e.g. a service account with no password."
        ) from None
    if not getattr(user, "is_active", True):
        raise CommandError(
            f"User {username!r} is inactive, so a credential issued to it would be refused. "
            "Activate the user first (admin: Users → Active)."
        )
    return user


def get_credential(kind: str, identifier: str) -> AbstractCredential:
    """The credential of ``kind`` with public id (or primary key) ``identifier``."""
    kinds = registry.credential_models()
    if kind not in kinds:
        raise CommandError(
            f"Unknown credential kind {kind!r}. Choose one of: {', '.join(sorted(kinds)) or '(none)'}."
        )
    try:
        return registry.get_credential(kind, identifier)
    except LookupError:
        shown = (
            repr(identifier) if len(identifier) <= _MAX_ECHOED_IDENTIFIER
            else "(the value given, not echoed because it may be a secret)"
        )
        raise CommandError(
            f"No {kind} credential with id {shown}. Pass the credential's public id "
            "(e.g. an API key's lookup id, shown in the admin and in `audit_log`), "
            "not its secret."
        ) from None


def kinds_help() -> str:
    kinds = ", ".join(sorted(registry.credential_models())) or "none installed"
    return f"Credential kind ({kinds})."


def validation_message(exc: ValidationError, options: Mapping[str, str]) -> str:
    """A ``full_clean()`` error as one line, naming the command-line option at fault."""
    if not hasattr(exc, "error_dict"):
        return " ".join(exc.messages)
    parts = []
    for field, errors in exc.message_dict.items():
        name = options.get(field, field)
        parts.append(f"{name}: {' '.join(errors)}")
    return " ".join(parts)


def public_dict_with_secret(credential: AbstractCredential, secret: str) -> dict[str, Any]:
    """``to_public_dict()`` plus the one-time secret under ``"secret"`` (and its alias)."""
    data = credential.to_public_dict()
    data["secret"] = secret or None  # None: a public-key credential has no server secret
    # DESIGN §6 names an API key's one-time secret "key" (the model's secret_name).
    data[credential.secret_name] = secret or None
    return data


def secret_label(credential: AbstractCredential) -> str:
    return credential.secret_name.replace("_", " ").capitalize()


def when(value: datetime | None, never: str = "never") -> str:
    return value.isoformat(timespec="seconds") if value is not None else never


def add_credential_arguments(parser: CommandParser, noun: str) -> None:
    """The options every ``issue_*`` command shares (DESIGN §6)."""
    parser.add_argument("--owner", required=True, metavar="USERNAME",
                        help=f"User the {noun} authenticates as (e.g. a service account).")
    parser.add_argument("--name", required=True, help="Human label, e.g. 'billing cron'.")
    parser.add_argument("--scopes", nargs="*", default=[], metavar="SCOPE",
                        help="Scopes granted, e.g. --scopes echo:write orders:read.")
    parser.add_argument("--expires-in", metavar="DURATION",
                        help="Lifetime such as 90s, 15m, 12h or 30d (default: no expiry).")
    parser.add_argument("--allowed-ips", nargs="*", default=[], metavar="CIDR",
                        help=f"IP addresses or CIDR networks the {noun} may be used from "
                             "(default: any).")
