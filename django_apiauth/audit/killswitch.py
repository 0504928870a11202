"""The per-user kill switch: revoke every credential of one user, of every kind, at once.

Credential kinds are discovered through :mod:`django_apiauth.core.registry`,
so a kind added later (a new credential model) is revoked too without a
change here. Each credential goes through :func:`django_apiauth.core.lifecycle.revoke`
(its own ``credential.revoked`` audit row and ``credential_revoked`` signal),
and one more row, ``user.credentials_revoked``, records the whole step with
its actor, reason and count. Everything happens in one transaction per
database: if an audit row cannot be written, nothing is revoked.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from django.db import router, transaction
from django.utils import timezone

from ..core import audit, lifecycle, reasons, registry
from ..core.models import AbstractCredential

EVENT = "user.credentials_revoked"


@dataclass
class KillSwitchResult:
    user: Any
    reason: str
    revoked: list[AbstractCredential] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "user": self.user.get_username(),
            "reason": self.reason,
            "revoked": [
                {"kind": c.credential_kind, "id": c.public_id, "name": c.name} for c in self.revoked
            ],
            "count": len(self.revoked),
        }


def can_revoke_all(user: Any) -> bool:
    """The kill switch needs the change permission (what revoking needs in the admin)
    of every credential model."""
    return all(
        user.has_perm(f"{m._meta.app_label}.change_{m._meta.model_name}")
        for m in registry.credential_models().values()
    )


def live_credentials(user: Any) -> list[AbstractCredential]:
    """Every unrevoked credential of ``user``, every kind (expired ones included:
    revoking them stops them from ever being extended or counted as live)."""
    found: list[AbstractCredential] = []
    for _kind, model in sorted(registry.credential_models().items()):
        found.extend(
            model._default_manager.select_related("owner")
            .filter(owner=user, revoked_at__isnull=True).order_by("pk")
        )
    return found


def revoke_all_for_user(user: Any, *, reason: str, actor: Any = None,
                        via: str | None = None) -> KillSwitchResult:
    """Revoke all of ``user``'s unrevoked credentials; audited per credential and as a whole.

    Raises :class:`~django_apiauth.core.lifecycle.LifecycleError` for a blank
    reason and :class:`~django_apiauth.core.audit.AuditUnavailable` when the
    audit rows cannot be written (then nothing was revoked).
    """
    reason = (reason or "").strip()
    if not reason:
        raise lifecycle.LifecycleError("A revocation needs a reason.")
    now = timezone.now()
    result = KillSwitchResult(user=user, reason=audit.sanitise(reason, 200))
    models = registry.credential_models()
    aliases = sorted({router.db_for_write(model) for model in models.values()})
    with ExitStack() as stack:
        for alias in aliases:  # usually one
            stack.enter_context(transaction.atomic(using=alias))
        for credential in live_credentials(user):
            try:
                lifecycle.revoke(credential, reason=reason, actor=actor, now=now, via=via)
            except lifecycle.LifecycleError:
                continue  # revoked meanwhile (the lifecycle re-reads under a lock)
            result.revoked.append(credential)
        audit.record(
            event=EVENT, scheme="", outcome=audit.SUCCESS, reason=reasons.REVOKED_BY_OPERATOR,
            user=user, at=now,
            detail={
                "actor": actor.get_username() if actor is not None else None,
                **({"via": via} if via else {}),
                "reason": result.reason,
                "count": len(result.revoked),
                "credentials": [f"{c.credential_kind}:{c.public_id}" for c in result.revoked][:50],
            },
        )
    return result
