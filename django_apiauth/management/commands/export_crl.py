"""``manage.py export_crl --ca SLUG --out FILE``: write the CA's CRL for the TLS terminator.

Run it from cron well within ``APIAUTH_CRL_VALIDITY`` (nginx refuses every
client certificate once the CRL's ``nextUpdate`` has passed) and after each
revocation, then reload nginx (``ssl_crl FILE;``). The file is replaced
atomically, so a reload never reads half a CRL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography import x509
from django.core.management.base import CommandError, CommandParser

from ...ca import authority
from ...core import encryption
from ._base import ApiAuthCommand, when
from .issue_client_cert import ca_key_error, get_ca, write_atomic


class Command(ApiAuthCommand):
    help = (
        "Write a freshly signed CRL (PEM) of a certificate authority, for nginx ssl_crl. "
        "Run it after revocations and regularly from cron (before the CRL's next update), "
        "then reload nginx."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--ca", required=True, metavar="SLUG",
                            help="Certificate authority whose CRL to export.")
        parser.add_argument("--out", metavar="FILE",
                            help="Write the CRL there (replaced atomically, mode 0644) instead of "
                                 "printing it.")
        super().add_arguments(parser)

    def run(self, *args: Any, **options: Any) -> None:
        # An inactive CA issues nothing new, but what it issued still needs its CRL.
        ca = get_ca(options["ca"], issuing=False)
        if not ca.can_issue:
            raise CommandError(
                f"{ca.slug!r} was imported without its key: its CRL comes from its own operator."
            )
        out = Path(options["out"]) if options["out"] else None
        if out is not None and out.is_dir():
            raise CommandError(
                f"--out: {out} is a directory; give the CRL file's path, e.g. --out "
                f"{out / (ca.slug + '.crl.pem')}."
            )
        try:
            pem = authority.crl_pem(ca)
        except encryption.DecryptionError as exc:
            raise ca_key_error(ca, exc) from None
        crl = x509.load_pem_x509_crl(pem.encode())
        revoked = len(crl)
        next_update = crl.next_update_utc
        if out is not None:
            try:
                write_atomic(out, pem.encode(), 0o644)
            except OSError as exc:
                raise CommandError(
                    f"--out: cannot write {out}: {exc.strerror or exc}. Check that the directory "
                    "exists and is writable by this user."
                ) from None
        if options["json"]:
            self.write_json({
                "ca": ca.slug,
                "path": str(out) if out is not None else None,
                "revoked": revoked,
                "next_update": next_update,
                **({"crl_pem": pem} if out is None else {}),
            })
            return
        if out is None:
            self.stdout.write(pem.strip())
            return
        self.stdout.write(self.style.SUCCESS(
            f"Wrote the CRL of {ca.slug!r} to {out}: {revoked} revoked certificate(s), next "
            f"update {when(next_update)}."
        ))
        self.stdout.write(
            "Reload the TLS terminator to use it (nginx: ssl_crl this file; `nginx -s reload`), "
            "and export again before the next update."
        )
