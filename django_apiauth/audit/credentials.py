"""The credential overview: what needs an operator's attention, every kind on one page.

Three lists, each over every credential model the registry knows
(:func:`django_apiauth.core.registry.credential_models`), so a kind added
later appears without a change here:

* **expiring**: usable credentials whose ``expires_at`` falls within N days
  (rotated-out predecessors in their grace period are left out: their
  successor exists already);
* **unused**: usable credentials not used for N days (never used and older
  than N days counts too);
* **used after rotation grace**: rotated-out predecessors that were presented
  after their grace ended, read from the audit trail
  (``authenticate / failure / expired`` rows of their credential id, through
  the ``(credential_id, at)`` index).

Each list is bounded (:data:`LIMIT` rows per kind) and ordered so the most
urgent come first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Max, Q
from django.utils import timezone

from ..core import reasons, registry
from ..core.models import AbstractCredential
from ..models import AuditEvent

#: Rows per kind and list.
LIMIT = 200
#: Most rotated-out credentials whose audit rows are read per kind.
ROTATED_LIMIT = 1_000


@dataclass
class Entry:
    credential: AbstractCredential
    note: str
    last_seen: datetime | None = None
    attempts: int = 0


@dataclass
class KindSection:
    kind: str
    model: type[AbstractCredential]
    entries: list[Entry] = field(default_factory=list)
    truncated: bool = False


def kinds_for(user: Any) -> dict[str, type[AbstractCredential]]:
    """Credential models ``user`` may view, by kind."""
    return {
        kind: model for kind, model in sorted(registry.credential_models().items())
        if user.has_perm(f"{model._meta.app_label}.view_{model._meta.model_name}")
    }


def expiring(models: dict[str, type[AbstractCredential]], days: int,
             now: datetime | None = None) -> list[KindSection]:
    now = now or timezone.now()
    sections = []
    for kind, model in models.items():
        rows = list(
            model._default_manager.usable(now)  # type: ignore[attr-defined]
            .filter(expires_at__lte=now + timedelta(days=days), successors__isnull=True)
            .select_related("owner").order_by("expires_at", "pk")[: LIMIT + 1]
        )
        sections.append(KindSection(kind, model, [Entry(c, "") for c in rows[:LIMIT]],
                                    truncated=len(rows) > LIMIT))
    return sections


def unused(models: dict[str, type[AbstractCredential]], days: int,
           now: datetime | None = None) -> list[KindSection]:
    now = now or timezone.now()
    cut = now - timedelta(days=days)
    sections = []
    for kind, model in models.items():
        rows = list(
            model._default_manager.usable(now)  # type: ignore[attr-defined]
            .filter(Q(last_used_at__lt=cut) | Q(last_used_at__isnull=True, created_at__lt=cut))
            .select_related("owner").order_by("last_used_at", "created_at", "pk")[: LIMIT + 1]
        )
        sections.append(KindSection(kind, model, [Entry(c, "") for c in rows[:LIMIT]],
                                    truncated=len(rows) > LIMIT))
    return sections


def used_after_grace(models: dict[str, type[AbstractCredential]], days: int,
                     now: datetime | None = None) -> list[KindSection]:
    """Rotated-out credentials presented after their grace ended, within the last ``days``."""
    now = now or timezone.now()
    since = now - timedelta(days=days)
    sections = []
    for kind, model in models.items():
        # Rotated out (a successor exists) and ended within the window.
        rotated = list(
            model._default_manager.filter(
                pk__in=model._default_manager.filter(successors__isnull=False).values("pk"),
                expires_at__lte=now, expires_at__gte=since - timedelta(days=days),
            ).select_related("owner").order_by("-expires_at", "pk")[:ROTATED_LIMIT]
        )
        by_id = {c.public_id: c for c in rotated}
        entries: list[Entry] = []
        ids = list(by_id)
        for start in range(0, len(ids), 500):
            chunk = ids[start: start + 500]
            uses = (
                AuditEvent.objects.filter(
                    credential_id__in=chunk, at__gte=since, event="authenticate",
                    outcome=AuditEvent.FAILURE, reason=reasons.EXPIRED,
                ).order_by().values("credential_id").annotate(n=Count("id"), last=Max("at"))
            )
            for row in uses:
                credential = by_id[row["credential_id"]]
                if credential.expires_at is not None and row["last"] >= credential.expires_at:
                    entries.append(Entry(credential, "", last_seen=row["last"], attempts=row["n"]))
        entries.sort(key=lambda e: e.last_seen or now, reverse=True)
        sections.append(KindSection(kind, model, entries[:LIMIT], truncated=len(entries) > LIMIT))
    return sections
