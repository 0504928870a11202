"""Keys for RFC 9421 signature algorithms: loading and validating public keys.

Plain functions, no database. Parsed keys are cached by their PEM text, so a
request pays a dictionary lookup, not a PEM parse.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import load_pem_public_key

ED25519 = "ed25519"
ECDSA_P256_SHA256 = "ecdsa-p256-sha256"


@lru_cache(maxsize=1024)
def load_public_key(pem: str, algorithm: str) -> object:
    """Parse ``pem`` and check it fits ``algorithm``. Raises ``ValueError``."""
    try:
        key = load_pem_public_key(pem.strip().encode())
    except (ValueError, TypeError):
        raise ValueError("Not a PEM public key (expected -----BEGIN PUBLIC KEY-----).") from None
    if algorithm == ED25519 and not isinstance(key, ed25519.Ed25519PublicKey):
        raise ValueError("The algorithm is ed25519 but this is not an Ed25519 public key.")
    if algorithm == ECDSA_P256_SHA256 and not (
        isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)
    ):
        raise ValueError("The algorithm is ecdsa-p256-sha256 but this is not a P-256 public key.")
    if algorithm not in (ED25519, ECDSA_P256_SHA256):
        raise ValueError(f"Unsupported asymmetric algorithm {algorithm!r}.")
    return key
