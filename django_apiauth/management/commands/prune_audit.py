"""``manage.py prune_audit --older-than 365d``: delete old audit rows (docs/audit-integrity.md).

Retention without a long lock: rows are deleted oldest first (in chain
order), ``--batch-size`` rows per short transaction that also moves the
chain's start to the first row kept, so the remaining rows stay verifiable
with ``verify_audit``. The links of the rows about to be deleted are checked
first: a broken chain stops the prune (the evidence is kept). The prune ends
with one ``audit.pruned`` audit row that records where it cut (position and
chain hash) and how many rows it deleted. Idempotent; run it from cron.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.utils import timezone

from ...core import audit
from ...models import AuditEvent
from ._base import ApiAuthCommand, duration_option

BAR_WIDTH = 30


class Command(ApiAuthCommand):
    help = (
        "Delete audit rows older than --older-than (e.g. 365d) in small batches, keeping the "
        "hash chain verifiable from the oldest remaining row."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than", required=True, metavar="DURATION",
                            help="Age of the rows to delete, e.g. 365d or 90d.")
        parser.add_argument("--batch-size", type=int, default=1000, metavar="N",
                            help="Rows per transaction (default 1000): smaller means shorter "
                                 "locks.")
        parser.add_argument("--dry-run", action="store_true",
                            help="Count what would be deleted; delete nothing.")
        parser.add_argument("--database", metavar="ALIAS",
                            help="Database alias (default: APIAUTH_AUDIT_DATABASE or the "
                                 "router's choice).")
        super().add_arguments(parser)

    def run(self, *args: Any, **options: Any) -> None:
        older_than = duration_option(options["older_than"], "--older-than")
        batch_size: int = options["batch_size"]
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1, e.g. --batch-size 1000.")
        cutoff = timezone.now() - older_than
        alias = options["database"] or audit.audit_alias()
        # An estimate for the progress bar (rows older than the cutoff; served by
        # the index on ``at``): the prune itself stops at the first young row.
        total = AuditEvent.objects.using(alias).filter(at__lt=cutoff).count()
        self._bar = bool(self.stderr.isatty())

        def progress(done: int) -> None:
            self._progress(done, total)

        try:
            result = audit.prune(cutoff=cutoff, using=alias, batch_size=batch_size,
                                 dry_run=options["dry_run"], older_than=options["older_than"],
                                 progress=progress)
        except audit.ChainError as exc:
            raise CommandError(str(exc)) from None
        if self._bar and result.deleted:
            self.stderr.write("", style_func=_plain)
        left_over = max(total - result.deleted, 0)
        if options["json"]:
            self.write_json({
                "dry_run": options["dry_run"], "cutoff": cutoff, "deleted": result.deleted,
                "batches": result.batches, "older_rows_kept": left_over,
                "cut_seq": result.cut_seq, "cut_chain": result.cut_chain or None,
                "sealed_now": result.sealed_now, "event_id": result.event_id,
            })
            return
        verb = "Would delete" if options["dry_run"] else "Deleted"
        summary = f"{verb} {result.deleted} audit rows older than {cutoff:%Y-%m-%d %H:%M:%S} UTC"
        if result.batches:
            summary += f" in {result.batches} batches"
        summary += "."
        if left_over:
            summary += (f" {left_over} old rows are kept behind a newer one in the chain; a "
                        "later run deletes them.")
        if result.cut_seq is not None:
            summary += f" The chain now starts at position {result.cut_seq + 1}."
        if options["dry_run"]:
            summary += " Dry run: nothing was deleted."
        self.stdout.write(self.style.SUCCESS(summary))

    def _progress(self, done: int, total: int) -> None:
        filled = BAR_WIDTH * min(done, total) // total if total else BAR_WIDTH
        line = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total}"
        if self._bar:
            self.stderr.write("\r" + line, ending="", style_func=_plain)
            self.stderr.flush()
        else:
            self.stderr.write(line, style_func=_plain)


def _plain(text: str) -> str:
    return text
