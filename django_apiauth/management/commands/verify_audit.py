"""``manage.py verify_audit``: check the audit trail's hash chain (docs/audit-integrity.md).

Seals the rows not yet in the chain (unless ``--no-seal``), then walks the
chain from its start (genesis, or the cut of the last ``prune_audit``) and
checks every row's MAC and link. Reports the id of each row where the chain
breaks: edited, forged, deleted, reordered rows, rows cut off its end, and an
edited chain head. Exits non-zero when anything is wrong, so cron and CI
notice. Reads the table once, a few thousand rows at a time.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from ...core import audit
from ._base import ApiAuthCommand


class Command(ApiAuthCommand):
    help = (
        "Verify the audit trail's hash chain: report every edited, forged, deleted or "
        "reordered audit row (with its id). Exits non-zero when the chain is broken."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--no-seal", action="store_true",
                            help="Do not seal unsealed rows first (verify only what is sealed; "
                                 "unsealed rows are still checked against their MAC).")
        parser.add_argument("--limit", type=int, default=100, metavar="N",
                            help="List at most N problems (default 100; all are counted).")
        parser.add_argument("--database", metavar="ALIAS",
                            help="Database alias (default: APIAUTH_AUDIT_DATABASE or the "
                                 "router's choice).")
        super().add_arguments(parser)

    def run(self, *args: Any, **options: Any) -> None:
        if options["limit"] < 1:
            raise CommandError("--limit must be at least 1, e.g. --limit 100.")
        tty = bool(self.stderr.isatty()) and not options["json"]

        def progress(checked: int) -> None:
            if tty:
                self.stderr.write(f"\rverified {checked} rows", ending="", style_func=_plain)
                self.stderr.flush()

        try:
            report = audit.verify(using=options["database"], seal_first=not options["no_seal"],
                                  limit=options["limit"], progress=progress)
        except audit.ChainError as exc:
            raise CommandError(str(exc)) from None
        if tty and report.checked:
            self.stderr.write("", style_func=_plain)
        if options["json"]:
            self.write_json(report.as_dict())
        else:
            self._human(report)
        if not report.ok:
            raise CommandError(
                f"The audit chain is broken: {report.problems_total} problem(s), first at row id "
                f"{report.first_break_id}. Keep a copy of the database for investigation; do not "
                "run prune_audit until this is understood."
            )

    def _human(self, report: audit.Report) -> None:
        self.stdout.write(
            f"Checked {report.checked} sealed rows (chain positions {report.start_seq} to "
            f"{report.head_seq}); sealed {report.sealed_now} now; {report.unsealed} not yet "
            "sealed (MAC checked)."
        )
        for problem in report.problems:
            where = f"row id {problem.id}" if problem.id is not None else "chain head"
            seq = f" (position {problem.seq})" if problem.seq is not None else ""
            self.stdout.write(self.style.ERROR(f"  {where}{seq}: {problem.problem}: "
                                               f"{problem.message}"))
        if report.problems_total > len(report.problems):
            self.stdout.write(f"  … and {report.problems_total - len(report.problems)} more.")
        if report.ok:
            self.stdout.write(self.style.SUCCESS(
                f"The audit chain is intact. Head: position {report.head_seq}, "
                f"hash {report.head_chain}."
            ))


def _plain(text: str) -> str:
    return text
