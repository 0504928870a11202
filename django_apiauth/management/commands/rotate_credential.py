"""``manage.py rotate_credential KIND ID``: issue a successor, keep the old one for a grace period."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser
from django.utils import timezone

from ...app_settings import app_settings
from ...ca import authority
from ...ca import x509 as ca_x509
from ...core import encryption, lifecycle
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
from .issue_client_cert import (
    DEFAULT_DAYS,
    CertFiles,
    ca_key_error,
    check_csr_common_name,
    client_cert_dict,
    deliver,
    issuer_ca,
    key_type_of,
    p12_password,
    prepare_out_dir,
    read_certificate,
    read_csr,
    registered_key_type,
    write_files_or_revoke,
)
from .issue_hmac_secret import read_public_key

_CLIENT_CERT = "client_cert"
_CLIENT_CERT_OPTIONS = ("certificate", "csr", "out", "p12_password_env")


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
        source = parser.add_mutually_exclusive_group()
        source.add_argument(
            "--certificate", metavar="FILE",
            help="client_cert: the client's NEW certificate (PEM). Required for a certificate "
                 "registered from another CA; otherwise the app's CA issues the successor.",
        )
        source.add_argument(
            "--csr", metavar="FILE",
            help="client_cert issued by the app's CA: sign this CSR (the client's new key never "
                 "reaches the server). Without it the server generates the new key, even for a "
                 "certificate first issued from a CSR.",
        )
        parser.add_argument(
            "--out", metavar="DIR",
            help="client_cert: write the new <fingerprint[:16]>.crt.pem (0644) and .key.pem "
                 "(0600) there instead of printing them.",
        )
        parser.add_argument(
            "--p12-password-env", metavar="VAR",
            help="client_cert, with --out: also write a PKCS#12 bundle encrypted with the "
                 "password in environment variable VAR.",
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
        is_cert = credential.credential_kind == _CLIENT_CERT
        for name in _CLIENT_CERT_OPTIONS:
            if options.get(name) and not is_cert:
                raise CommandError(
                    f"--{name.replace('_', '-')} applies only to client_cert credentials."
                )
        out_dir, password = None, None
        if is_cert:
            successor_fields, password, out_dir = self._client_cert_fields(credential, options)
        try:
            successor, secret = lifecycle.rotate(credential, grace=grace, via="cli", **successor_fields)
        except lifecycle.LifecycleError as exc:
            hint = "" if "successor" in str(exc) else (
                f" Issue a new {credential.credential_kind} credential instead."
            )
            raise CommandError(f"{exc}{hint}") from None
        except encryption.DecryptionError as exc:
            raise ca_key_error(getattr(credential, "ca", None), exc) from None
        except ValidationError as exc:
            source = "--csr" if options.get("csr") else "--certificate"
            raise CommandError(validation_message(exc, {
                "public_key": "--public-key", "certificate_pem": source, "fingerprint_sha256": source,
            })) from None

        # rotate() moved the predecessor's expiry to the end of the grace
        # period (or left an earlier expiry alone): that is when it stops working.
        grace_until = credential.expires_at
        if is_cert:
            files = write_files_or_revoke(
                successor, secret, out_dir, password,
                retry=f"then issue a new one with issue_client_cert (the old certificate works "
                      f"until {when(grace_until)})",
            ) if out_dir is not None else None
            self._client_cert_output(credential, successor, secret, files, grace_until,
                                     options["json"])
            return
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

    # -- client certificates -----------------------------------------------------

    @staticmethod
    def _client_cert_fields(
        credential: Any, options: dict[str, Any]
    ) -> tuple[dict[str, Any], bytes | None, Path | None]:
        """What the successor certificate is made from, checked before anything changes.

        Returns the successor fields, the PKCS#12 password and the ``--out`` directory.
        """
        ca = credential.ca
        if options.get("p12_password_env"):
            if options.get("certificate") or options.get("csr") or ca is None:
                raise CommandError(
                    "--p12-password-env needs a key generated by the server; here the client "
                    "keeps its own key. Drop --p12-password-env."
                )
            if not options.get("out"):
                raise CommandError("--p12-password-env needs --out DIR to write the PKCS#12 file to.")
        password = p12_password(options["p12_password_env"]) if options.get("p12_password_env") else None
        if options.get("certificate"):
            pem, cert = read_certificate(options["certificate"])
            out_dir = prepare_out_dir(options["out"]) if options.get("out") else None
            return {"certificate_pem": pem, "common_name": "", "key_type": registered_key_type(cert),
                    "ca": ca if ca is not None else issuer_ca(cert)}, password, out_dir
        if ca is None:
            raise CommandError(
                f"client_cert {credential.public_id[:16]}… was registered from another CA, so the "
                "server cannot issue its successor: pass the client's new certificate with "
                "--certificate FILE."
            )
        if not ca.is_active or ca.not_after <= timezone.now():
            state = "inactive" if not ca.is_active else f"expired at {when(ca.not_after)}"
            raise CommandError(
                f"Certificate authority {ca.slug!r} of this certificate is {state} and issues "
                "nothing new. Issue a new certificate from another CA with "
                "`issue_client_cert --ca SLUG`, or pass a new certificate with --certificate FILE."
            )
        if not options.get("csr"):
            out_dir = prepare_out_dir(options["out"]) if options.get("out") else None
            return {}, password, out_dir  # the CA issues a new key and certificate
        csr_pem, csr = read_csr(options["csr"])
        key_type = key_type_of(csr.public_key())
        check_csr_common_name(csr, None)
        out_dir = prepare_out_dir(options["out"]) if options.get("out") else None
        # The successor keeps the predecessor's lifetime (as lifecycle.rotate does).
        lifetime = (credential.expires_at - credential.created_at
                    if credential.expires_at is not None else timedelta(days=DEFAULT_DAYS))
        try:
            pem = authority.sign_csr(ca, csr_pem, owner=credential.owner,
                                     not_after=timezone.now() + lifetime)
        except (ca_x509.CertificateError, ValueError) as exc:
            raise CommandError(f"--csr: {exc}.") from None
        except encryption.DecryptionError as exc:
            raise ca_key_error(ca, exc) from None
        return {"certificate_pem": pem, "common_name": "", "key_type": key_type}, password, out_dir

    def _client_cert_output(self, credential: Any, successor: Any, secret: str,
                            files: CertFiles | None, grace_until: Any, as_json: bool) -> None:
        if as_json:
            data = client_cert_dict(successor, secret, files)
            if files is None:
                data["secret"] = secret or None
            self.write_json({**data, "grace_until": when(grace_until, never=""),
                             "rotated_from": credential.public_id})
            return
        self.stdout.write(self.style.SUCCESS(
            f"Rotated client_cert {credential.public_id[:16]}… ({credential.name!r}, owner "
            f"{credential.owner.get_username()}): successor {successor.public_id[:16]}…."
        ))
        self.write_fields({
            "old works until": when(grace_until),
            "new fingerprint": successor.fingerprint_sha256,
            "new subject": successor.subject,
            "new expires": when(successor.expires_at),
            "scopes": " ".join(sorted(successor.scope_set)) or "(none)",
        })
        deliver(self, successor, secret, files)
