"""``manage.py rotate_credential KIND ID``: issue a successor, keep the old one for a grace period."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser

from ...app_settings import app_settings
from ...core import lifecycle
from ...core.durations import format_duration
from ._base import (
    ApiAuthCommand,
    duration_option,
    get_credential,
    kinds_help,
    public_dict_with_secret,
    secret_label,
    validation_message,
    when,
)
from .issue_hmac_secret import read_public_key


class Command(ApiAuthCommand):
    help = (
        "Rotate a credential: issue a successor with the same owner, scopes and allow-list "
        "and print its secret once; the old credential keeps working for the grace period, "
        "then expires."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("kind", metavar="KIND", help=kinds_help())
        parser.add_argument("id", metavar="ID", help="Public id (or primary key) of the credential.")
        parser.add_argument(
            "--grace", metavar="DURATION",
            help="How long the old credential keeps working, e.g. 1h or 0s for none "
                 f"(default: APIAUTH_ROTATION_GRACE, {format_duration(app_settings.ROTATION_GRACE)}).",
        )
        parser.add_argument(
            "--public-key", metavar="FILE",
            help="For public-key credentials (hmac kind, ed25519 / ecdsa-p256-sha256): the "
                 "client's NEW public key (PEM). Required for those; not used otherwise.",
        )
        super().add_arguments(parser)

    def run(self, *args: Any, **options: Any) -> None:
        grace = (
            duration_option(options["grace"], "--grace", allow_zero=True)
            if options["grace"] is not None else None
        )
        credential = get_credential(options["kind"], options["id"])
        successor_fields: dict[str, Any] = {}
        if options.get("public_key"):
            if not hasattr(credential, "public_key"):
                raise CommandError(
                    f"--public-key does not apply to {credential.credential_kind} credentials."
                )
            successor_fields["public_key"] = read_public_key(options["public_key"])
        try:
            successor, secret = lifecycle.rotate(credential, grace=grace, via="cli", **successor_fields)
        except lifecycle.LifecycleError as exc:
            hint = "" if "successor" in str(exc) else (
                f" Issue a new {credential.credential_kind} credential instead."
            )
            raise CommandError(f"{exc}{hint}") from None
        except ValidationError as exc:
            raise CommandError(validation_message(exc, {})) from None

        # rotate() moved the predecessor's expiry to the end of the grace
        # period (or left an earlier expiry alone): that is when it stops working.
        grace_until = credential.expires_at
        if options["json"]:
            self.write_json({
                **public_dict_with_secret(successor, secret),
                "grace_until": when(grace_until, never=""),
                "rotated_from": credential.public_id,
            })
            return
        kind = credential.credential_kind
        self.stdout.write(self.style.SUCCESS(
            f"Rotated {kind} {credential.public_id} ({credential.name!r}, owner "
            f"{credential.owner.get_username()}): successor {successor.public_id}."
        ))
        self.write_fields({
            "old works until": when(grace_until),
            "new expires": when(successor.expires_at),
            "scopes": " ".join(sorted(successor.scope_set)) or "(none)",
        })
        if secret:  # public-key credentials have no secret on the server
            label = secret_label(successor)
            self.write_secret(label, secret, label.lower())
