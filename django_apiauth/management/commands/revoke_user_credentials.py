"""``manage.py revoke_user_credentials USERNAME --reason TEXT``: the per-user kill switch.

Revokes every unrevoked credential of the user, of every kind the registry
knows (API keys, HTTP signature keys, client certificates, and kinds added
later), in one transaction; each revocation is audited, plus one
``user.credentials_revoked`` row for the whole step.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError, CommandParser

from ...audit.killswitch import revoke_all_for_user
from ...core import lifecycle
from ._base import ApiAuthCommand


class Command(ApiAuthCommand):
    help = ("Revoke every credential of a user at once, every kind (the kill switch). "
            "Each revocation and the whole step are recorded in the audit log.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", metavar="USERNAME", help="The user whose credentials to revoke.")
        parser.add_argument("--reason", required=True, metavar="TEXT",
                            help="Why, for the audit log, e.g. 'laptop stolen'.")
        super().add_arguments(parser)

    def run(self, *args: Any, **options: Any) -> None:
        reason = options["reason"]
        if not reason.strip():
            raise CommandError("--reason must not be blank, e.g. --reason 'laptop stolen'.")
        user_model = get_user_model()
        try:
            # Inactive users too: their credentials may still need revoking.
            user = user_model._default_manager.get_by_natural_key(options["username"])
        except user_model.DoesNotExist:
            raise CommandError(
                f"No user {options['username']!r}. Check the spelling (usernames are case-sensitive)."
            ) from None
        try:
            result = revoke_all_for_user(user, reason=reason, via="cli")
        except lifecycle.LifecycleError as exc:
            raise CommandError(str(exc)) from None
        if options["json"]:
            self.write_json(result.to_dict())
            return
        if not result.revoked:
            self.stdout.write(f"{user.get_username()} has no unrevoked credentials; nothing to do "
                              "(the step is recorded in the audit log).")
            return
        for credential in result.revoked:
            self.stdout.write(f"  revoked {credential.credential_kind} {credential.public_id} "
                              f"({credential.name!r})")
        self.stdout.write(self.style.SUCCESS(
            f"Revoked {len(result.revoked)} credential(s) of {user.get_username()}: {result.reason}"
        ))
