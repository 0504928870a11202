"""``manage.py issue_client_cert``: issue or register a client certificate (DESIGN §6).

Three ways, one credential kind (``client_cert``, pinned by its SHA-256
fingerprint):

* default: the server generates a key pair (EC P-256, or RSA 3072 with
  ``--key-type rsa``) and the app's CA signs a certificate for it; the private
  key is written once to ``--out DIR`` (mode 0600, optionally also as a
  password-protected PKCS#12) or printed once, and never stored;
* ``--csr FILE``: the CA signs the client's certificate signing request, so the
  private key never touches the server;
* ``--certificate FILE``: a certificate of another CA is registered as is.

The file helpers here are shared with ``rotate_credential``, ``create_ca`` and
``export_crl``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from ...ca import authority
from ...ca import x509 as ca_x509
from ...core import encryption, lifecycle, registry
from ...core.models import AbstractCredential
from ...models import CertificateAuthority, ClientCertificate
from ._base import ApiAuthCommand, get_owner, validation_message, when

DEFAULT_DAYS = 365
MAX_PEM_BYTES = 64 * 1024
MIN_RSA_BITS = 2048
#: X.509 (RFC 5280 ub-common-name) and ``ClientCertificate.common_name``.
MAX_COMMON_NAME = 64

_OPTIONS = {
    "name": "--name", "scopes": "--scopes", "allowed_ips": "--allowed-ips",
    "expires_at": "--days", "owner": "--owner", "common_name": "--common-name",
    "key_type": "--key-type", "ca": "--ca",
}
_KEY_TYPES = [value for value, _label in ClientCertificate.KEY_TYPES]


# -- reading files --------------------------------------------------------------


def read_pem_file(path: str, option: str, what: str) -> str:
    """The text of a small PEM file; private keys are refused and never echoed."""
    try:
        raw = Path(path).read_bytes()[: MAX_PEM_BYTES + 1]
    except OSError as exc:
        raise CommandError(f"{option}: cannot read {path}: {exc.strerror or exc}.") from None
    if len(raw) > MAX_PEM_BYTES:
        raise CommandError(f"{option}: {path} is too large to be a PEM {what}.")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise CommandError(
            f"{option}: {path} is not a PEM file (DER? convert it with "
            f"`openssl {'req' if 'request' in what else 'x509'} -inform DER -in FILE -out FILE.pem`)."
        ) from None
    if "PRIVATE KEY" in text:
        # The client's private key stays with the client: never read or stored.
        raise CommandError(
            f"{option}: {path} holds a PRIVATE key. Keep it on the client and pass only the "
            f"{what}."
        )
    return text.strip() + "\n"


def key_type_of(public_key: object) -> str:
    """``ec`` or ``rsa`` for a client's public key; anything else is refused."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return "ec"
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise CommandError(
                f"The client's RSA key has {public_key.key_size} bits; use at least "
                f"{MIN_RSA_BITS} (better: EC P-256, `openssl ecparam -genkey -name prime256v1`)."
            )
        return "rsa"
    raise CommandError(
        "Unsupported client key type: use EC P-256 (`openssl ecparam -genkey -name prime256v1 "
        "-noout -out client.key`) or RSA (3072 bits)."
    )


def registered_key_type(cert: x509.Certificate | None) -> str:
    """``key_type`` of a registered certificate (informational: its key is not ours)."""
    if cert is not None and isinstance(cert.public_key(), rsa.RSAPublicKey):
        return key_type_of(cert.public_key())  # refuses weak RSA keys
    return "ec"


def read_csr(path: str, option: str = "--csr") -> tuple[str, x509.CertificateSigningRequest]:
    pem = read_pem_file(path, option, "certificate signing request")
    try:
        csr = ca_x509.load_csr(pem)
    except ca_x509.CertificateError as exc:
        raise CommandError(
            f"{option}: {path}: {exc}. Create one on the client with "
            "`openssl req -new -key client.key -subj /CN=NAME -out client.csr`."
        ) from None
    return pem, csr


def csr_common_name(csr: x509.CertificateSigningRequest) -> str:
    cns = csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else ""


def read_certificate(path: str, option: str = "--certificate") -> tuple[str, x509.Certificate | None]:
    """The PEM text and, when it parses, the certificate (the model reports what is wrong)."""
    pem = read_pem_file(path, option, "certificate")
    try:
        cert = x509.load_der_x509_certificate(ca_x509.pem_to_der(pem))
    except (ca_x509.CertificateError, ValueError):
        cert = None
    return pem, cert


def p12_password(variable: str) -> bytes:
    """The PKCS#12 password from the environment (never from the command line)."""
    value = os.environ.get(variable, "")
    if not value:
        raise CommandError(
            f"--p12-password-env: the environment variable {variable} is not set or empty. "
            f"Set it first, e.g. `read -rs {variable} && export {variable}`."
        )
    return value.encode()


# -- certificate authorities ----------------------------------------------------


def _slugs(queryset: Any) -> str:
    return ", ".join(queryset.values_list("slug", flat=True)) or "none"


def get_ca(slug: str | None, *, issuing: bool = True, option: str = "--ca") -> CertificateAuthority:
    """The CA named by ``slug`` or, without one, the only active CA.

    ``issuing``: the CA must be able to sign now (active and not expired).
    """
    cas = CertificateAuthority._default_manager.all()
    if slug is None:
        active = list(cas.filter(is_active=True))
        if not active:
            raise CommandError(
                "No active certificate authority. Create one with "
                "`manage.py create_ca --name NAME --slug SLUG`, or register a certificate of "
                "another CA with --certificate FILE."
            )
        if len(active) > 1:
            raise CommandError(
                f"Several active certificate authorities ({', '.join(ca.slug for ca in active)}): "
                f"choose one with {option} SLUG."
            )
        ca = active[0]
    else:
        found = cas.filter(slug=slug).first()
        if found is None:
            shown = slug if len(slug) <= 50 else slug[:50] + "…"
            raise CommandError(
                f"No certificate authority {shown!r}. Existing: {_slugs(cas)}. Pass one of those "
                f"to {option}, or create one with `manage.py create_ca --name NAME --slug SLUG`."
            )
        ca = found
    if issuing and not ca.is_active:
        raise CommandError(
            f"Certificate authority {ca.slug!r} is inactive and issues nothing new. Choose an active "
            f"one with {option} (active: {_slugs(cas.filter(is_active=True))}), or reactivate it "
            "in the admin."
        )
    if issuing and ca.not_after <= timezone.now():
        raise CommandError(
            f"Certificate authority {ca.slug!r} expired at {when(ca.not_after)}. Create a new one "
            f"with `manage.py create_ca --name NAME --slug SLUG` and pass it to {option}."
        )
    return ca


def issuer_ca(cert: x509.Certificate | None) -> CertificateAuthority | None:
    """The app's CA that signed ``cert``, if any (so a revocation reaches its CRL)."""
    if cert is None:
        return None
    for ca in CertificateAuthority._default_manager.all():
        if ca.certificate.subject == cert.issuer and ca_x509.verify_issued_by(cert, ca.certificate):
            return ca
    return None


def ca_key_error(ca: CertificateAuthority | None, exc: Exception) -> CommandError:
    slug = ca.slug if ca is not None else "?"
    return CommandError(
        f"The private key of certificate authority {slug!r} cannot be decrypted ({exc}). Put the "
        "encryption key that wrote it back into APIAUTH_ENCRYPTION_KEYS (or SECRET_KEY_FALLBACKS)."
    )


def check_common_name(common_name: str, option: str = "--common-name",
                      example: str = "billing-cron") -> str:
    common_name = common_name.strip()
    if not common_name:
        raise CommandError(f"{option} must not be blank, e.g. {option} {example}.")
    if len(common_name) > MAX_COMMON_NAME:
        raise CommandError(
            f"{option} is {len(common_name)} characters long; X.509 allows at most "
            f"{MAX_COMMON_NAME}. Choose a shorter name."
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in common_name):
        raise CommandError(f"{option} must not contain control characters.")
    return common_name


def check_csr_common_name(csr: x509.CertificateSigningRequest, common_name: str | None,
                          option: str = "--csr") -> None:
    """The CA takes the common name from the CSR: it must be the one the operator meant."""
    in_csr = csr_common_name(csr)
    if not in_csr:
        raise CommandError(
            f"{option}: the CSR has no common name. Make a new one with "
            f"`openssl req -new -key client.key -subj /CN={common_name or 'NAME'} -out client.csr`."
        )
    if common_name is not None and in_csr != common_name:
        raise CommandError(
            f"{option}: the CSR's common name is {in_csr[:64]!r} but --common-name is "
            f"{common_name!r}. Pass --common-name {in_csr[:64]!r}, or make a new CSR with "
            f"-subj /CN={common_name}."
        )


def warn_if_clamped(command: BaseCommand, ca: CertificateAuthority | None, wanted: datetime | None) -> None:
    if ca is not None and wanted is not None and ca.not_after < wanted:
        command.stderr.write(command.style.WARNING(
            f"Warning: certificate authority {ca.slug!r} expires at {when(ca.not_after)}, before "
            "the validity asked for; the certificate ends with it. Plan a new CA (create_ca)."
        ))


# -- writing files --------------------------------------------------------------


def prepare_out_dir(path: str) -> Path:
    """``--out DIR``, created (0700) if missing, proven writable before anything is issued."""
    directory = Path(path)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".apiauth-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise CommandError(
            f"--out: cannot write to {path}: {exc.strerror or exc}. Choose a writable directory "
            "(it is created if missing)."
        ) from None
    return directory


def write_exclusive(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with exactly ``mode`` (never wider, even for a moment); refuse to overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode & 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fchmod(handle.fileno(), mode)
        os.fsync(handle.fileno())


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` atomically: readers see the old file or the new one, never half a file."""
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@dataclass
class CertFiles:
    cert_path: Path | None = None
    key_path: Path | None = None
    p12_path: Path | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {name: str(value) if value is not None else None
                for name, value in (("cert_path", self.cert_path), ("key_path", self.key_path),
                                    ("p12_path", self.p12_path))}


def write_cert_files(directory: Path, credential: Any, private_key_pem: str,
                     password: bytes | None) -> CertFiles:
    """``<fp16>.crt.pem`` (0644), and for a server-made key ``.key.pem`` / ``.p12`` (0600)."""
    stem = credential.fingerprint_sha256[:16]
    files = CertFiles(cert_path=directory / f"{stem}.crt.pem")
    write_exclusive(files.cert_path, credential.certificate_pem.encode(), 0o644)
    if private_key_pem:
        files.key_path = directory / f"{stem}.key.pem"
        write_exclusive(files.key_path, private_key_pem.encode(), 0o600)
        if password is not None:
            files.p12_path = directory / f"{stem}.p12"
            cert = x509.load_pem_x509_certificate(credential.certificate_pem.encode())
            key = ca_x509.load_private_key(private_key_pem.encode())
            bundle = pkcs12.serialize_key_and_certificates(
                (credential.common_name or credential.name).encode(), key, cert,
                [credential.ca.certificate] if credential.ca_id else None,
                serialization.BestAvailableEncryption(password),
            )
            write_exclusive(files.p12_path, bundle, 0o600)
    return files


def write_files_or_revoke(credential: AbstractCredential, private_key_pem: str,
                          directory: Path, password: bytes | None,
                          retry: str = "then run the command again") -> CertFiles:
    """Write the files; if that fails, revoke the new certificate (its key would be lost)."""
    try:
        return write_cert_files(directory, credential, private_key_pem, password)
    except OSError as exc:
        lifecycle.revoke(credential, reason="--out: the certificate files could not be written",
                         via="cli")
        raise CommandError(
            f"--out: writing to {directory} failed ({exc.strerror or exc}), so the new certificate "
            f"{credential.public_id[:16]}… was revoked (its private key is lost). Free space or fix "
            f"the permissions, {retry}."
        ) from None


def write_pem(command: BaseCommand, label: str, pem: str) -> None:
    command.stdout.write("")
    command.stdout.write(f"{label}:")
    command.stdout.write(pem.strip())


def write_private_key_once(command: BaseCommand, pem: str) -> None:
    write_pem(command, "Private key (PEM)", pem)
    command.stdout.write("")
    command.stdout.write(command.style.WARNING(
        "Store this private key now, in a password manager or secret store: "
        "it is not stored and will not be shown again."
    ))


def client_cert_dict(credential: Any, private_key_pem: str, files: CertFiles | None) -> dict[str, Any]:
    """``to_public_dict()`` plus paths; PEMs only when they were not written to files."""
    data = credential.to_public_dict()
    data.update({
        "id": credential.public_id,
        "fingerprint_sha256": credential.fingerprint_sha256,
        "common_name": credential.common_name,
        "key_type": credential.key_type,
        **(files or CertFiles()).as_dict(),
    })
    if files is None:
        data["certificate_pem"] = credential.certificate_pem
        data["private_key"] = private_key_pem or None
    return data


def describe_cert(command: ApiAuthCommand, credential: Any) -> None:
    command.write_fields({
        "fingerprint": credential.fingerprint_sha256,
        "subject": credential.subject,
        "issuer": credential.issuer + (f" (CA {credential.ca.slug})" if credential.ca_id else ""),
        "serial": credential.serial,
        "SANs": " ".join(credential.sans) or "(none)",
        "scopes": " ".join(sorted(credential.scope_set)) or "(none)",
        "allowed IPs": credential.allowed_ips or "any",
        "valid": f"{when(credential.not_before)} to {when(credential.expires_at)}",
    })


def deliver(command: ApiAuthCommand, credential: Any, private_key_pem: str,
            files: CertFiles | None) -> None:
    """Human output after issue or rotation: where the files are, or the PEMs once."""
    if files is not None:
        command.stdout.write("")
        command.stdout.write(f"Certificate: {files.cert_path}")
        if files.key_path is not None:
            command.stdout.write(f"Private key: {files.key_path} (mode 0600; not stored on the server)")
        if files.p12_path is not None:
            command.stdout.write(f"PKCS#12:     {files.p12_path} (password from the environment)")
        if files.key_path is not None:
            command.stdout.write(
                f"  e.g. curl --cert {files.cert_path} --key {files.key_path} https://API/"
            )
        return
    write_pem(command, "Certificate (PEM)", credential.certificate_pem)
    if private_key_pem:
        write_private_key_once(command, private_key_pem)


class Command(ApiAuthCommand):
    help = (
        "Issue a client certificate for mutual TLS from the app's CA (the server generates the "
        "key and hands it out once), sign a client's CSR (--csr: the key never reaches the "
        "server), or register a certificate of another CA (--certificate)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--owner", required=True, metavar="USERNAME",
                            help="User the certificate authenticates as (e.g. a service account).")
        parser.add_argument("--name", required=True, help="Human label, e.g. 'billing cron'.")
        parser.add_argument("--common-name", metavar="CN",
                            help="Subject common name of the certificate (at most 64 characters). "
                                 "Required, except with --certificate; with --csr it must match "
                                 "the CSR's.")
        parser.add_argument("--ca", metavar="SLUG",
                            help="Certificate authority that signs (default: the only active one).")
        parser.add_argument("--days", type=int, metavar="N",
                            help=f"Validity in days (default: {DEFAULT_DAYS}; never beyond the "
                                 "CA's). With --certificate: end the credential earlier than the "
                                 "certificate.")
        parser.add_argument("--key-type", choices=_KEY_TYPES,
                            help="Key the server generates: ec (P-256, the default) or rsa (3072).")
        parser.add_argument("--scopes", nargs="*", default=[], metavar="SCOPE",
                            help="Scopes granted, e.g. --scopes echo:write orders:read.")
        parser.add_argument("--allowed-ips", nargs="*", default=[], metavar="CIDR",
                            help="IP addresses or CIDR networks the certificate may be used from "
                                 "(default: any).")
        source = parser.add_mutually_exclusive_group()
        source.add_argument("--csr", metavar="FILE",
                            help="Sign this certificate signing request (PEM) instead of "
                                 "generating a key: the private key never touches the server.")
        source.add_argument("--certificate", metavar="FILE",
                            help="Register this certificate (PEM) of another CA; it needs the "
                                 "clientAuth extended key usage.")
        parser.add_argument("--out", metavar="DIR",
                            help="Write <fingerprint[:16]>.crt.pem (0644) and .key.pem (0600) "
                                 "there instead of printing them.")
        parser.add_argument("--p12-password-env", metavar="VAR",
                            help="With --out: also write a PKCS#12 bundle (key, certificate, CA) "
                                 "encrypted with the password in environment variable VAR.")
        super().add_arguments(parser)

    def run(self, *args: Any, **options: Any) -> None:
        csr_file, cert_file = options["csr"], options["certificate"]
        external = bool(csr_file or cert_file)
        source_option = "--csr" if csr_file else "--certificate"
        days: int | None = options["days"]
        if days is not None and days < 1:
            raise CommandError("--days must be at least 1, e.g. --days 365.")
        if external and options["key_type"]:
            raise CommandError(
                f"--key-type does not go with {source_option}: the client made its own key. "
                "Drop --key-type."
            )
        if external and options["p12_password_env"]:
            raise CommandError(
                f"--p12-password-env needs a key generated by the server; with {source_option} the "
                "private key stays with the client (bundle it there: `openssl pkcs12 -export`). "
                "Drop --p12-password-env."
            )
        if options["p12_password_env"] and not options["out"]:
            raise CommandError("--p12-password-env needs --out DIR to write the PKCS#12 file to.")
        common_name = options["common_name"]
        if common_name is None and not cert_file:
            raise CommandError(
                "--common-name is required: the certificate's subject CN, e.g. --common-name "
                "billing-cron."
            )
        if common_name is not None:
            common_name = check_common_name(common_name)
        password = p12_password(options["p12_password_env"]) if options["p12_password_env"] else None
        out_dir = prepare_out_dir(options["out"]) if options["out"] else None
        owner = get_owner(options["owner"])
        now = timezone.now()
        fields: dict[str, Any] = {
            "owner": owner, "name": options["name"],
            "scopes": " ".join(options["scopes"]), "allowed_ips": " ".join(options["allowed_ips"]),
        }
        if cert_file:
            pem, cert = read_certificate(cert_file)
            ca = get_ca(options["ca"], issuing=False) if options["ca"] else issuer_ca(cert)
            if cert is not None and common_name is not None:
                cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
                in_cert = str(cns[0].value) if cns else ""
                if in_cert != common_name:
                    raise CommandError(
                        f"--common-name {common_name!r} differs from the certificate's common "
                        f"name {in_cert[:64]!r}. Drop --common-name (it is taken from the "
                        "certificate)."
                    )
            fields.update(
                ca=ca, certificate_pem=pem, common_name=common_name or "",
                key_type=registered_key_type(cert),
                expires_at=now + timedelta(days=days) if days is not None else None,
            )
        elif csr_file:
            csr_pem, csr = read_csr(csr_file)
            key_type = key_type_of(csr.public_key())
            check_csr_common_name(csr, common_name)
            ca = get_ca(options["ca"])
            not_after = now + timedelta(days=days or DEFAULT_DAYS)
            try:
                pem = authority.sign_csr(ca, csr_pem, owner=owner, not_after=not_after)
            except (ca_x509.CertificateError, ValueError) as exc:
                raise CommandError(f"--csr: {exc}.") from None
            except encryption.DecryptionError as exc:
                raise ca_key_error(ca, exc) from None
            fields.update(ca=ca, certificate_pem=pem, common_name=common_name, key_type=key_type,
                          expires_at=not_after)
        else:
            ca = get_ca(options["ca"])
            fields.update(ca=ca, common_name=common_name, key_type=options["key_type"] or "ec",
                          expires_at=now + timedelta(days=days or DEFAULT_DAYS))
        model = registry.credential_models().get(ClientCertificate.credential_kind, ClientCertificate)
        try:
            credential, private_key = lifecycle.issue(model, via="cli", **fields)
        except ValidationError as exc:
            names = {**_OPTIONS, "certificate_pem": source_option if external else "--ca",
                     "fingerprint_sha256": source_option}
            raise CommandError(validation_message(exc, names)) from None
        except lifecycle.LifecycleError as exc:
            raise CommandError(str(exc)) from None
        except encryption.DecryptionError as exc:
            raise ca_key_error(ca, exc) from None
        if not cert_file:
            warn_if_clamped(self, ca, fields["expires_at"])

        files = write_files_or_revoke(credential, private_key, out_dir, password) if out_dir else None
        if options["json"]:
            self.write_json(client_cert_dict(credential, private_key, files))
            return
        verb = "Registered" if cert_file else "Issued"
        self.stdout.write(self.style.SUCCESS(
            f"{verb} client certificate {credential.public_id[:16]}… ({credential.name!r}) to "
            f"{owner.get_username()}."
        ))
        describe_cert(self, credential)
        if csr_file and files is None:
            self.stdout.write("")
            self.stdout.write("Signed from the CSR: the private key stays with the client.")
        deliver(self, credential, private_key, files)
