"""``manage.py issue_api_key``: issue an API key and print it once (DESIGN §6)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser
from django.utils import timezone

from ...core import lifecycle, registry
from ...models import ApiKey
from ._base import (
    ApiAuthCommand,
    add_credential_arguments,
    duration_option,
    get_owner,
    validation_message,
    when,
)

_OPTIONS = {
    "name": "--name", "scopes": "--scopes", "allowed_ips": "--allowed-ips",
    "expires_at": "--expires-in", "owner": "--owner",
}


class Command(ApiAuthCommand):
    help = (
        "Issue an API key to a user and print it once. Only a hash is stored: "
        "the key cannot be shown again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_credential_arguments(parser, "key")
        super().add_arguments(parser)

    def run(self, *args: Any, **options: Any) -> None:
        expires_in = options["expires_in"]
        delta = duration_option(expires_in, "--expires-in") if expires_in is not None else None
        owner = get_owner(options["owner"])
        # A project's own subclass of ApiKey replaces it under the same kind.
        model = registry.credential_models().get(ApiKey.credential_kind, ApiKey)
        try:
            credential, key = lifecycle.issue(
                model,
                via="cli",
                owner=owner,
                name=options["name"],
                scopes=" ".join(options["scopes"]),
                allowed_ips=" ".join(options["allowed_ips"]),
                expires_at=timezone.now() + delta if delta is not None else None,
            )
        except ValidationError as exc:
            raise CommandError(validation_message(exc, _OPTIONS)) from None
        except lifecycle.LifecycleError as exc:
            raise CommandError(str(exc)) from None

        if options["json"]:
            self.write_json({**credential.to_public_dict(), "key": key})
            return
        self.stdout.write(self.style.SUCCESS(
            f"Issued API key {credential.public_id} ({credential.name!r}) to {owner.get_username()}."
        ))
        self.write_fields({
            "scopes": " ".join(sorted(credential.scope_set)) or "(none)",
            "allowed IPs": credential.allowed_ips or "any",
            "expires": when(credential.expires_at),
        })
        self.write_secret("Key", key, "key")
