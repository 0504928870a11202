"""Credential lifecycle: issue, rotate, revoke. Each step is audited and signalled.

Schemes and the admin call these functions; nothing else changes a
credential's lifecycle fields.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.db import transaction
from django.utils import timezone

from .. import signals
from ..app_settings import app_settings
from . import audit, reasons
from .models import AbstractCredential

C = TypeVar("C", bound=AbstractCredential)


class LifecycleError(ValueError):
    """An impossible lifecycle step (e.g. revoking a revoked credential)."""


def _audit(event: str, credential: AbstractCredential, reason: str, actor: Any,
           detail: dict[str, Any] | None = None, via: str | None = None) -> None:
    audit.record(
        event=event,
        scheme=credential.credential_kind,
        outcome=audit.SUCCESS,
        reason=reason,
        user=credential.owner,
        credential_id=credential.public_id,
        detail={
            "actor": actor.get_username() if actor is not None else None,
            **({"via": via} if via else {}),
            **(detail or {}),
        },
    )


def issue(model: type[C], *, actor: Any = None, via: str | None = None,
          **fields: Any) -> tuple[C, str]:
    """Create a credential of ``model`` and return it with its one-time secret.

    ``model.generate_secret(credential)`` fills the credential's secret fields
    and returns the plaintext that is shown once and never stored.
    """
    with transaction.atomic(using=router_for(model)):
        credential = model(**fields)
        secret = credential.generate_secret()  # type: ignore[attr-defined]
        credential.full_clean()
        credential.save()
        _audit("credential.issued", credential, reasons.ISSUED, actor, via=via)
    signals.credential_issued.send(sender=model, credential=credential, actor=actor)
    return credential, secret


def rotate(credential: C, *, grace: timedelta | None = None, actor: Any = None,
           now: datetime | None = None, via: str | None = None,
           **successor_fields: Any) -> tuple[C, str]:
    """Issue a successor with the same owner, scopes and allow-list.

    The predecessor keeps working until ``now + grace`` (never longer than it
    would have anyway), then expires. The successor keeps the predecessor's
    lifetime if it had one. ``successor_fields`` override what the successor
    copies (e.g. the new public key of an asymmetric signing credential).
    """
    now = now or timezone.now()
    grace = app_settings.ROTATION_GRACE if grace is None else grace
    model = type(credential)
    with transaction.atomic(using=router_for(model)):
        _lock_and_refresh(credential)
        if credential.revoked_at is not None:
            raise LifecycleError("A revoked credential cannot be rotated.")
        if credential.expires_at is not None and credential.expires_at <= now:
            raise LifecycleError("An expired credential cannot be rotated.")
        successor_ids = list(
            model._default_manager.filter(rotated_from=credential)
            .values_list(model.lookup_field, flat=True)
        )
        if successor_ids:
            # A second rotation during the grace would fork the chain and derive the
            # new lifetime from the shortened expiry; rotate the successor instead.
            raise LifecycleError(
                f"This credential was already rotated; rotate its successor {successor_ids[0]} instead."
            )
        grace_until = now + grace
        lifetime = (
            credential.expires_at - credential.created_at if credential.expires_at is not None else None
        )
        successor = model(
            owner=credential.owner,
            name=credential.name,
            scopes=credential.scopes,
            allowed_ips=credential.allowed_ips,
            rate_limit=credential.rate_limit,
            not_before=None,
            expires_at=now + lifetime if lifetime is not None else None,
            rotated_from=credential,
            created_at=now,
            **{**credential.successor_fields(), **successor_fields},
        )
        secret = successor.generate_secret()  # type: ignore[attr-defined]
        successor.full_clean()
        credential.validate_successor(successor)
        successor.save()
        if credential.expires_at is None or credential.expires_at > grace_until:
            credential.expires_at = grace_until
            credential.save(update_fields=["expires_at"])
        grace_until = credential.expires_at  # what actually applies
        _audit(
            "credential.rotated", credential, reasons.ROTATED, actor,
            {"successor": successor.public_id, "grace_until": grace_until.isoformat()}, via=via,
        )
        _audit("credential.issued", successor, reasons.ISSUED, actor,
               {"rotated_from": credential.public_id}, via=via)
    signals.credential_rotated.send(
        sender=model, credential=credential, successor=successor, grace_until=grace_until,
        actor=actor,
    )
    return successor, secret


def revoke(credential: AbstractCredential, *, reason: str, actor: Any = None,
           now: datetime | None = None, via: str | None = None) -> None:
    """Revoke at once and for good. ``reason`` is required and recorded."""
    reason = (reason or "").strip()
    if not reason:
        raise LifecycleError("A revocation needs a reason.")
    now = now or timezone.now()
    model = type(credential)
    with transaction.atomic(using=router_for(model)):
        _lock_and_refresh(credential)
        if credential.revoked_at is not None:
            raise LifecycleError("This credential is already revoked.")
        credential.revoked_at = now
        credential.revoked_reason = audit.sanitise(reason, 200)
        credential.save(update_fields=["revoked_at", "revoked_reason"])
        _audit("credential.revoked", credential, reasons.REVOKED_BY_OPERATOR, actor,
               {"reason": credential.revoked_reason}, via=via)
    signals.credential_revoked.send(
        sender=model, credential=credential, reason=credential.revoked_reason, actor=actor
    )


#: Fields an operator may change on an issued credential (never secrets,
#: identity or lifecycle fields: rotate or revoke for those).
EDITABLE_FIELDS = ("name", "scopes", "allowed_ips", "expires_at", "not_before", "rate_limit")


def update(credential: AbstractCredential, *, changes: dict[str, Any], actor: Any = None,
           via: str | None = None) -> None:
    """Change editable fields of a live credential; audited as ``changed``."""
    forbidden = sorted(set(changes) - set(EDITABLE_FIELDS))
    if forbidden:
        raise LifecycleError(f"These fields cannot be changed: {', '.join(forbidden)}; rotate instead.")
    if not changes:
        return
    model = type(credential)
    with transaction.atomic(using=router_for(model)):
        _lock_and_refresh(credential)
        if credential.revoked_at is not None:
            raise LifecycleError("A revoked credential cannot be changed.")
        if "expires_at" in changes:
            old, new = credential.expires_at, changes["expires_at"]
            ended = old is not None and old <= timezone.now()
            rotated = model._default_manager.filter(rotated_from=credential).exists()
            if (ended or rotated) and (new is None or (old is not None and new > old)):
                # Only shortening: an expired or rotated-out credential stays ended.
                raise LifecycleError(
                    "An expired or rotated-out credential cannot be extended; issue or rotate instead."
                )
        for name, value in changes.items():
            setattr(credential, name, value)
        credential.full_clean()
        credential.save(update_fields=list(changes))
        _audit("credential.changed", credential, reasons.CHANGED, actor, {
            "changed": {
                name: value.isoformat() if isinstance(value, datetime) else value
                for name, value in changes.items()
            },
        }, via=via)


def _lock_and_refresh(credential: AbstractCredential) -> None:
    """Lock the row (where the database can) and re-read its lifecycle fields,
    so a decision is never taken on a stale copy (e.g. revoked meanwhile)."""
    fresh = (type(credential)._default_manager.select_for_update()
             .only("revoked_at", "revoked_reason", "expires_at", "not_before")
             .get(pk=credential.pk))
    for name in ("revoked_at", "revoked_reason", "expires_at", "not_before"):
        setattr(credential, name, getattr(fresh, name))


def audit_deletion(sender: type[AbstractCredential], instance: AbstractCredential,
                   **kwargs: Any) -> None:
    """``pre_delete`` receiver: deleting a credential (admin, shell, user cascade) is audited."""
    _audit("credential.deleted", instance, reasons.DELETED, None)


def router_for(model: type[AbstractCredential]) -> str:
    from django.db import router

    return router.db_for_write(model)
