"""``manage.py create_ca``: create the app's certificate authority for client certificates.

The CA key is generated on the server and stored only encrypted (like HMAC
secrets; ``reencrypt_secrets`` covers it); it is never printed. The CA
certificate is public: give it to the TLS terminator (nginx
``ssl_client_certificate``) so it accepts the client certificates it signs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser
from django.core.validators import validate_slug

from ...ca import authority
from ...models import CertificateAuthority
from ._base import ApiAuthCommand, validation_message, when
from .issue_client_cert import MAX_COMMON_NAME, check_common_name, prepare_out_dir, write_atomic

_OPTIONS = {"name": "--name", "slug": "--slug"}
MAX_DAYS = 100 * 365


class Command(ApiAuthCommand):
    help = (
        "Create a certificate authority that issues client certificates for mutual TLS. Its key "
        "is stored encrypted and never shown; its certificate (public) goes to the TLS "
        "terminator as ssl_client_certificate."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True,
                            help="Human name, also the CA certificate's common name "
                                 f"(at most {MAX_COMMON_NAME} characters), e.g. 'Example API clients'.")
        parser.add_argument("--slug", required=True,
                            help="Short public id (letters, digits, - and _), used by --ca and "
                                 "in /auth/ca/<slug>/crl.pem.")
        parser.add_argument("--days", type=int, default=3650, metavar="N",
                            help="Validity of the CA certificate in days (default: 3650). Client "
                                 "certificates never outlive it.")
        parser.add_argument("--key-type", choices=["ec", "rsa"], default="ec",
                            help="CA key: ec (P-256, the default) or rsa (3072 bits).")
        parser.add_argument("--out", metavar="DIR",
                            help="Write the CA certificate to DIR/<slug>.ca.pem (0644) instead of "
                                 "printing it.")
        parser.add_argument("--import-certificate", metavar="FILE", dest="import_certificate",
                            help="Instead of creating a CA, trust another organisation's CA "
                                 "certificate (PEM, no key: it never issues here), for chain mode "
                                 "(APIAUTH_CLIENT_CERT_CHAIN_CAS).")
        super().add_arguments(parser)

    def run(self, *args: Any, **options: Any) -> None:
        name = check_common_name(options["name"], "--name", "'Example API clients'")
        slug: str = options["slug"]
        try:
            validate_slug(slug)
        except ValidationError:
            raise CommandError(
                "--slug may contain only letters, digits, hyphens and underscores, e.g. "
                "--slug api-clients."
            ) from None
        days: int = options["days"]
        if not 1 <= days <= MAX_DAYS:
            raise CommandError(f"--days must be between 1 and {MAX_DAYS}, e.g. --days 3650.")
        existing = CertificateAuthority._default_manager.filter(slug=slug).first()
        if existing is not None:
            raise CommandError(
                f"A certificate authority with slug {slug!r} already exists ({existing.name!r}, "
                f"created {when(existing.created_at)}). Choose another --slug."
            )
        out_dir = prepare_out_dir(options["out"]) if options["out"] else None
        try:
            if options.get("import_certificate"):
                try:
                    pem = Path(options["import_certificate"]).read_text()[:64 * 1024]
                except (OSError, UnicodeDecodeError) as exc:
                    raise CommandError(f"--import-certificate: cannot read it: {exc}.") from None
                if "PRIVATE KEY" in pem:
                    raise CommandError("--import-certificate: that file holds a PRIVATE key; give "
                                       "only the CA certificate.")
                ca = authority.import_ca(name=name, slug=slug, certificate_pem=pem, via="cli")
            else:
                ca = authority.create_ca(
                    name=name, slug=slug, days=days, key_type=options["key_type"], via="cli"
                )
        except ValidationError as exc:
            raise CommandError(validation_message(exc, _OPTIONS)) from None
        except ValueError as exc:  # cryptography refusing a name, for instance
            raise CommandError(f"The CA could not be created: {exc}.") from None

        cert_path: Path | None = None
        if out_dir is not None:
            cert_path = out_dir / f"{ca.slug}.ca.pem"
            try:
                write_atomic(cert_path, ca.certificate_pem.encode(), 0o644)
            except OSError as exc:
                raise CommandError(
                    f"--out: the CA {ca.slug!r} was created, but writing {cert_path} failed "
                    f"({exc.strerror or exc}). Its certificate is public: download it from "
                    f"/auth/ca/{ca.slug}/ca.pem or the admin."
                ) from None
        if options["json"]:
            self.write_json({
                "slug": ca.slug,
                "name": ca.name,
                "fingerprint_sha256": ca.fingerprint_sha256,
                "not_before": ca.not_before,
                "not_after": ca.not_after,
                "key_type": options["key_type"],
                "cert_path": str(cert_path) if cert_path is not None else None,
                **({"certificate_pem": ca.certificate_pem} if cert_path is None else {}),
            })
            return
        if not ca.can_issue:
            self.stdout.write(self.style.SUCCESS(
                f"Imported certificate authority {ca.slug!r} ({ca.name!r}): trusted for chain mode "
                "(APIAUTH_CLIENT_CERT_CHAIN_CAS); it issues nothing here and its CRL is its own."
            ))
            self.write_fields({"fingerprint": ca.fingerprint_sha256, "valid until": when(ca.not_after)})
            return
        self.stdout.write(self.style.SUCCESS(
            f"Created certificate authority {ca.slug!r} ({ca.name!r})."
        ))
        self.write_fields({
            "fingerprint": ca.fingerprint_sha256,
            "key type": options["key_type"],
            "valid until": when(ca.not_after),
            "key": "stored encrypted in the database (never shown; reencrypt_secrets covers it)",
        })
        self.stdout.write("")
        if cert_path is not None:
            self.stdout.write(f"CA certificate: {cert_path}")
        else:
            self.stdout.write("CA certificate (PEM, public):")
            self.stdout.write(ca.certificate_pem.strip())
        self.stdout.write("")
        self.stdout.write("Next steps:")
        self.stdout.write(
            f"  nginx: ssl_client_certificate {cert_path or f'{ca.slug}.ca.pem'}; "
            "ssl_verify_client on;"
        )
        self.stdout.write(
            f"  issue: manage.py issue_client_cert --ca {ca.slug} --owner USERNAME --name NAME "
            "--common-name CN --out DIR"
        )
        self.stdout.write(
            f"  CRL:   manage.py export_crl --ca {ca.slug} --out /etc/nginx/{ca.slug}.crl.pem "
            "(cron, then reload nginx; ssl_crl)"
        )
