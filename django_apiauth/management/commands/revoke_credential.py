"""``manage.py revoke_credential KIND ID --reason TEXT``: revoke at once and for good."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from ...core import lifecycle
from ._base import ApiAuthCommand, get_credential, kinds_help, when


class Command(ApiAuthCommand):
    help = "Revoke a credential immediately and for good. The reason is recorded in the audit log."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("kind", metavar="KIND", help=kinds_help())
        parser.add_argument("id", metavar="ID", help="Public id (or primary key) of the credential.")
        parser.add_argument("--reason", required=True, metavar="TEXT",
                            help="Why, for the audit log, e.g. 'leaked in CI logs'.")
        super().add_arguments(parser)

    def run(self, *args: Any, **options: Any) -> None:
        reason = options["reason"]
        if not reason.strip():
            raise CommandError("--reason must not be blank, e.g. --reason 'leaked in CI logs'.")
        credential = get_credential(options["kind"], options["id"])
        revoked_at = credential.revoked_at
        try:
            lifecycle.revoke(credential, reason=reason, via="cli")
        except lifecycle.LifecycleError as exc:
            if revoked_at is not None:
                raise CommandError(
                    f"{credential.credential_kind} {credential.public_id} was already revoked at "
                    f"{when(revoked_at)} ({credential.revoked_reason or 'no reason'}); "
                    "nothing to do. Revocation is one-way: issue a new credential if one is needed."
                ) from None
            raise CommandError(str(exc)) from None

        if options["json"]:
            self.write_json(credential.to_public_dict())
            return
        self.stdout.write(self.style.SUCCESS(
            f"Revoked {credential.credential_kind} {credential.public_id} ({credential.name!r}, "
            f"owner {credential.owner.get_username()}) at {when(credential.revoked_at)}: "
            f"{credential.revoked_reason}"
        ))
