"""``manage.py create_saml_sp_key``: generate this site's SAML SP key pair.

The RSA key is generated on the server and stored only encrypted
(:mod:`django_apiauth.core.encryption`, bound to the certificate's
fingerprint); it is never printed. The self-signed certificate is public: it is
published in every IdP's SP metadata (``/auth/saml/<slug>/metadata/``).

The newest active key signs AuthnRequests and metadata; the previous active
key stays published next to it during a rollover until it is deactivated
(``--retire-others`` or the admin).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db import transaction

from ...models import SamlServiceProviderKey
from ...sso.saml.sp import create_sp_key
from ._base import ApiAuthCommand

MAX_DAYS = 30 * 365


class Command(ApiAuthCommand):
    help = (
        "Generate the SAML service provider's key pair (RSA 3072, self-signed certificate). The "
        "private key is stored encrypted and never shown; the certificate is published in the SP "
        "metadata."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", default="SAML SP key", help="Label shown in the admin.")
        parser.add_argument("--common-name", dest="common_name",
                            help="Certificate subject CN (default: --name).")
        parser.add_argument("--days", type=int, default=3650, metavar="N",
                            help="Certificate validity in days (default 3650). IdPs check "
                                 "AuthnRequest signatures with it; most ignore its expiry.")
        parser.add_argument("--retire-others", action="store_true", dest="retire_others",
                            help="Deactivate the older keys at once (they stop being published). "
                                 "Without it, the previous key stays published for a rollover.")
        super().add_arguments(parser)

    def run(self, *args: Any, **options: Any) -> None:
        days: int = options["days"]
        if not 1 <= days <= MAX_DAYS:
            raise CommandError(f"--days must be between 1 and {MAX_DAYS}, e.g. --days 3650.")
        name = (options["name"] or "").strip()[:100]
        if not name:
            raise CommandError("--name must not be empty, e.g. --name 'SAML SP key 2026'.")
        with transaction.atomic():
            key = create_sp_key(name=name, days=days, common_name=options.get("common_name"))
            retired = 0
            if options["retire_others"]:
                retired = SamlServiceProviderKey.objects.exclude(pk=key.pk).filter(active=True).update(
                    active=False)
        result = {
            "id": key.pk, "name": key.name, "fingerprint_sha256": key.fingerprint_sha256,
            "not_before": key.not_before, "not_after": key.not_after, "retired": retired,
            "certificate_pem": key.certificate_pem,
        }
        if options["json"]:
            self.write_json(result)
            return
        self.stdout.write(self.style.SUCCESS(f"SAML SP key {key.pk} created; it signs from now on."))
        self.write_fields({"fingerprint (SHA-256)": key.fingerprint_sha256,
                           "valid until": key.not_after.isoformat(), "older keys retired": retired})
        self.stdout.write("Give each IdP the new SP metadata: /auth/saml/<slug>/metadata/")
