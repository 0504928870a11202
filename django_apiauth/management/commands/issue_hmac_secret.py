"""``manage.py issue_hmac_secret``: issue a request-signing credential (DESIGN §6).

HMAC-SHA256 (the default): a shared secret is generated, stored encrypted and
printed once; the printed string, as UTF-8 bytes, is the HMAC key. Ed25519 /
ECDSA P-256: the client keeps its private key and the operator registers the
public key with ``--public-key FILE``; nothing secret is printed or stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser
from django.utils import timezone

from ...core import lifecycle, registry
from ...models import HmacSecret
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
    "expires_at": "--expires-in", "owner": "--owner", "algorithm": "--algorithm",
    "public_key": "--public-key",
}
_ALGORITHMS = [value for value, _label in HmacSecret.ALGORITHMS]
_MAX_PUBLIC_KEY_BYTES = 64 * 1024


def read_public_key(path: str) -> str:
    try:
        raw = Path(path).read_bytes()[: _MAX_PUBLIC_KEY_BYTES + 1]
    except OSError as exc:
        raise CommandError(f"--public-key: cannot read {path}: {exc.strerror or exc}.") from None
    if len(raw) > _MAX_PUBLIC_KEY_BYTES:
        raise CommandError(f"--public-key: {path} is too large to be a PEM public key.")
    try:
        pem = raw.decode("ascii")
    except UnicodeDecodeError:
        raise CommandError(
            f"--public-key: {path} is not a PEM file (a DER key? convert it with "
            "`openssl pkey -pubin -inform DER -in KEY -out key.pub.pem`)."
        ) from None
    if "PRIVATE KEY" in pem:
        # Never accept (or store) the client's private key.
        raise CommandError(
            f"--public-key: {path} holds a PRIVATE key. Keep it on the client and register only "
            "its public key: `openssl pkey -in PRIVATE.pem -pubout -out public.pem`."
        )
    return pem.strip() + "\n"


def _algorithm_of(pem: str) -> str:
    """The algorithm a public key is for (used when --algorithm is not given)."""
    try:
        key = load_pem_public_key(pem.encode())
    except (ValueError, TypeError):
        raise CommandError(
            "--public-key: not a PEM public key (expected -----BEGIN PUBLIC KEY-----)."
        ) from None
    if isinstance(key, ed25519.Ed25519PublicKey):
        return HmacSecret.ED25519
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return HmacSecret.ECDSA_P256_SHA256
    raise CommandError(
        "--public-key: unsupported key type; use an Ed25519 or an ECDSA P-256 public key."
    )


class Command(ApiAuthCommand):
    help = (
        "Issue an RFC 9421 request-signing credential to a user. HMAC-SHA256 (default): print "
        "the shared secret once (stored only encrypted). Ed25519 / ECDSA P-256: register the "
        "client's public key with --public-key; no secret exists on the server."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_credential_arguments(parser, "credential")
        parser.add_argument(
            "--algorithm", choices=_ALGORITHMS,
            help="Signature algorithm: hmac-sha256 (shared secret; the default without "
                 "--public-key), ed25519 or ecdsa-p256-sha256 (client key pair; the default "
                 "with --public-key is the key's own).",
        )
        parser.add_argument(
            "--public-key", metavar="FILE",
            help="PEM public key of the client (SubjectPublicKeyInfo, -----BEGIN PUBLIC KEY-----), "
                 "required for ed25519 and ecdsa-p256-sha256.",
        )
        super().add_arguments(parser)

    def run(self, *args: Any, **options: Any) -> None:
        expires_in = options["expires_in"]
        delta = duration_option(expires_in, "--expires-in") if expires_in is not None else None
        algorithm: str | None = options["algorithm"]
        public_key = ""
        if options["public_key"] is not None:
            if algorithm == HmacSecret.HMAC_SHA256:
                raise CommandError(
                    "--public-key does not go with --algorithm hmac-sha256, whose key is a shared "
                    "secret the server generates. Drop --public-key, or choose --algorithm ed25519 "
                    "or ecdsa-p256-sha256."
                )
            public_key = read_public_key(options["public_key"])
            algorithm = algorithm or _algorithm_of(public_key)
        algorithm = algorithm or HmacSecret.HMAC_SHA256
        if algorithm in HmacSecret.ASYMMETRIC and not public_key:
            raise CommandError(
                f"--algorithm {algorithm} needs the client's public key: --public-key FILE "
                "(PEM; from the client's private key: `openssl pkey -in PRIVATE.pem -pubout`)."
            )
        owner = get_owner(options["owner"])
        # A project's own subclass of HmacSecret replaces it under the same kind.
        model = registry.credential_models().get(HmacSecret.credential_kind, HmacSecret)
        try:
            credential, secret = lifecycle.issue(
                model,
                via="cli",
                owner=owner,
                name=options["name"],
                scopes=" ".join(options["scopes"]),
                allowed_ips=" ".join(options["allowed_ips"]),
                expires_at=timezone.now() + delta if delta is not None else None,
                algorithm=algorithm,
                public_key=public_key,
            )
        except ValidationError as exc:
            raise CommandError(validation_message(exc, _OPTIONS)) from None
        except lifecycle.LifecycleError as exc:
            raise CommandError(str(exc)) from None

        key_id = credential.key_id  # type: ignore[attr-defined]
        asymmetric = algorithm in HmacSecret.ASYMMETRIC
        if options["json"]:
            self.write_json({
                **credential.to_public_dict(),
                "key_id": key_id,
                "algorithm": algorithm,
                "secret": None if asymmetric else secret,
            })
            return
        self.stdout.write(self.style.SUCCESS(
            f"Issued HTTP signature key {key_id} ({credential.name!r}) to {owner.get_username()}."
        ))
        self.write_fields({
            "key id": key_id,
            "algorithm": algorithm,
            "scopes": " ".join(sorted(credential.scope_set)) or "(none)",
            "allowed IPs": credential.allowed_ips or "any",
            "expires": when(credential.expires_at),
        })
        if asymmetric:
            self.stdout.write("")
            self.stdout.write(
                "No secret: the client signs with its private key; the server keeps only the "
                "public key. Example:"
            )
            self.stdout.write(
                f"  python -m django_apiauth.sign --key-id {key_id} --private-key PRIVATE.pem URL"
            )
            return
        self.write_secret("Secret", secret, "secret")
        self.stdout.write(
            "Clients sign with RFC 9421 (alg hmac-sha256, keyid above; the secret's UTF-8 bytes "
            "are the key). Example:"
        )
        self.stdout.write("  export APIAUTH_SECRET='<the secret>'")
        self.stdout.write(
            f"  python -m django_apiauth.sign --key-id {key_id} --secret-env APIAUTH_SECRET URL"
        )
