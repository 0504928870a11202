"""``manage.py credential_expiry_report [--within 14d] [--json]``: for cron.

Lists every credential of every kind (API keys, HMAC secrets, client
certificates, and any credential model added later: the list comes from
:func:`~django_apiauth.core.registry.credential_models`) that is usable now
and expires within the window, soonest first. Rotated-out credentials whose
grace period ends within the window are listed too, marked ``rotated_out``:
their clients must switch to the successor.

``--json`` prints one JSON object per credential (JSON lines): the
credential's public description plus ``expires_in_seconds`` and
``rotated_out``. Nothing secret is printed. ``--fail-if-any`` exits with
status 1 when anything is listed, so cron's mail or a monitoring check can
act on it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.utils import timezone

from ...core import audit, registry
from ...core.durations import format_duration
from ...core.models import AbstractCredential
from ._base import ApiAuthCommand, duration_option


class Command(ApiAuthCommand):
    help = (
        "List credentials of every kind that expire within a period (default 14d), soonest "
        "first. --json prints one JSON object per line."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--within", default="14d", metavar="DURATION",
                            help="Window: 90s, 15m, 12h, 30d (default 14d).")
        parser.add_argument("--kind", action="append", metavar="KIND",
                            help="Only this credential kind (api_key, hmac, client_cert); "
                                 "repeatable.")
        parser.add_argument("--fail-if-any", action="store_true",
                            help="Exit with status 1 when any credential is listed.")
        super().add_arguments(parser)

    def run(self, *args: Any, **options: Any) -> None:
        within = duration_option(options["within"], "--within")
        now = timezone.now()
        models = registry.credential_models()
        kinds = options["kind"] or sorted(models)
        unknown = sorted(set(kinds) - set(models))
        if unknown:
            raise CommandError(f"Unknown credential kind {unknown[0]!r}. Choose one of: "
                               f"{', '.join(sorted(models))}.")
        found: list[tuple[datetime, AbstractCredential, bool]] = []
        for kind in kinds:
            model = models[kind]
            queryset = (model._default_manager.usable(now)  # type: ignore[attr-defined]
                        .filter(expires_at__lte=now + within)
                        .select_related("owner").order_by("expires_at"))
            rotated = set(model._default_manager.filter(
                rotated_from__in=queryset.values("pk")).values_list("rotated_from_id", flat=True))
            found.extend((c.expires_at, c, c.pk in rotated) for c in queryset)
        found.sort(key=lambda item: (item[0], item[1].credential_kind, item[1].pk))
        if options["json"]:
            for expires_at, credential, rotated_out in found:
                self.write_json({
                    **credential.to_public_dict(),
                    "expires_in_seconds": int((expires_at - now).total_seconds()),
                    "rotated_out": rotated_out,
                })
        else:
            self.write_table(found, now, within)
        if found and options["fail_if_any"]:
            raise SystemExit(1)

    def write_table(self, found: list[tuple[datetime, AbstractCredential, bool]],
                    now: datetime, within: Any) -> None:
        if not found:
            self.stdout.write(f"No credential expires within {format_duration(within)}.")
            return
        self.stdout.write(f"{'EXPIRES (UTC)':<20}  {'IN':>6}  {'KIND':<11}  {'ID':<22}  "
                          f"{'OWNER':<16}  NAME")
        for expires_at, credential, rotated_out in found:
            left = _roughly(int((expires_at - now).total_seconds()))
            name = audit.sanitise(credential.name, 60)
            if rotated_out:
                name += "  (rotated out: switch to its successor)"
            line = (f"{expires_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}  {left:>6}  "
                    f"{credential.credential_kind:<11}  {audit.sanitise(credential.public_id, 22):<22}  "
                    f"{audit.sanitise(credential.owner.get_username(), 16):<16}  {name}")
            self.stdout.write(self.style.WARNING(line) if rotated_out else line)


def _roughly(seconds: int) -> str:
    """Time left in its largest whole unit: ``3d``, ``4h``, ``12m``, ``30s``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"
