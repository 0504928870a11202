"""X.509 helpers: parse client certificates, build CA / client certificates and CRLs.

Plain functions over :mod:`cryptography`, no database. Parsed client
certificates are cached by the SHA-256 of their DER bytes, so authenticating
a request costs a hash and a dictionary lookup, not an ASN.1 parse.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PEM_BEGIN = "-----BEGIN CERTIFICATE-----"
PEM_END = "-----END CERTIFICATE-----"
MAX_CERTIFICATE_BYTES = 16 * 1024

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


class CertificateError(ValueError):
    """Not exactly one well-formed X.509 certificate."""


@dataclass(frozen=True, slots=True)
class CertificateFacts:
    """What authentication needs from a client certificate, parsed once."""

    fingerprint_sha256: str
    subject: str
    issuer: str
    serial: str
    not_before: datetime
    not_after: datetime
    is_ca: bool
    client_auth: bool
    sans: tuple[str, ...]
    common_name: str


def pem_to_der(pem: str) -> bytes:
    """The DER bytes of exactly one PEM certificate; anything else is refused.

    Refused: no certificate, two certificates, text before or after the block
    (other than whitespace), a private key or other PEM type, bad base64.
    """
    text = pem.strip()
    if len(text) > MAX_CERTIFICATE_BYTES * 2:
        raise CertificateError("too large")
    if text.count(PEM_BEGIN) != 1 or text.count(PEM_END) != 1:
        raise CertificateError("expected exactly one PEM certificate")
    if not (text.startswith(PEM_BEGIN) and text.endswith(PEM_END)):
        raise CertificateError("text around the PEM block")
    body = "".join(text[len(PEM_BEGIN): -len(PEM_END)].split())
    try:
        der = base64.b64decode(body.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise CertificateError("bad base64 in the PEM block") from None
    if not der:
        raise CertificateError("empty PEM block")
    return der


def facts_from_der(der: bytes) -> CertificateFacts:
    if len(der) > MAX_CERTIFICATE_BYTES:
        raise CertificateError("too large")
    return _facts(hashlib.sha256(der).hexdigest(), der)


@lru_cache(maxsize=4096)
def _facts(fingerprint: str, der: bytes) -> CertificateFacts:
    try:
        cert = x509.load_der_x509_certificate(der)
    except Exception:  # ValueError, x509.InvalidVersion, …: all mean "not a certificate we read"
        raise CertificateError("not a valid DER certificate") from None
    if cert.public_bytes(serialization.Encoding.DER) != der:
        raise CertificateError("trailing or non-canonical data")
    try:
        return describe(cert, fingerprint)
    except Exception:  # extensions are parsed lazily: ValueError, DuplicateExtension, …
        raise CertificateError("the certificate's extensions could not be parsed") from None


def describe(cert: x509.Certificate, fingerprint: str | None = None) -> CertificateFacts:
    der = cert.public_bytes(serialization.Encoding.DER)
    try:
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = bool(basic.ca)
    except x509.ExtensionNotFound:
        is_ca = False
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        client_auth = ExtendedKeyUsageOID.CLIENT_AUTH in eku
    except x509.ExtensionNotFound:
        client_auth = False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = tuple(
            [f"DNS:{v}" for v in san.get_values_for_type(x509.DNSName)]
            + [f"URI:{v}" for v in san.get_values_for_type(x509.UniformResourceIdentifier)]
            + [f"email:{v}" for v in san.get_values_for_type(x509.RFC822Name)]
        )
    except x509.ExtensionNotFound:
        sans = ()
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return CertificateFacts(
        fingerprint_sha256=fingerprint or hashlib.sha256(der).hexdigest(),
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial=format(cert.serial_number, "x"),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        is_ca=is_ca,
        client_auth=client_auth,
        sans=sans,
        common_name=str(cns[0].value) if cns else "",
    )


# -- building -----------------------------------------------------------------


def new_private_key(key_type: str = "ec") -> PrivateKey:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    raise ValueError(f"Unknown key type {key_type!r}: use 'ec' (P-256) or 'rsa' (3072 bits).")


def private_key_pem(key: PrivateKey, password: bytes | None = None) -> str:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    ).decode()


def load_private_key(pem: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise ValueError("unsupported CA key type")
    return key


def certificate_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _signing_hash(key: PrivateKey) -> hashes.HashAlgorithm | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def build_ca(common_name: str, days: int, key: PrivateKey) -> x509.Certificate:
    now = datetime.now(UTC)
    name = _name(common_name, "django-apiauth CA")
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, _signing_hash(key))
    )


def build_client_certificate(
    *,
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    public_key: object,
    common_name: str,
    not_after: datetime,
    owner_uri: str | None = None,
) -> x509.Certificate:
    """A client certificate: clientAuth EKU, not a CA, SAN with the owner's URI."""
    now = datetime.now(UTC)
    not_after = min(not_after, ca_cert.not_valid_after_utc)
    sans: list[x509.GeneralName] = []
    if owner_uri:
        sans.append(x509.UniformResourceIdentifier(owner_uri))
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, _signing_hash(ca_key))


def check_public_key(key: object) -> None:
    """Refuse weak or unsupported client keys (RSA < 2048 bits, curves other than P-256/384)."""
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise CertificateError("RSA keys must have at least 2048 bits")
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1 | ec.SECP384R1):
            raise CertificateError("EC keys must be on P-256 or P-384")
    elif not isinstance(key, ed25519.Ed25519PublicKey):
        raise CertificateError("unsupported key type")


def build_server_certificate(
    *, ca_cert: x509.Certificate, ca_key: PrivateKey, public_key: object, hosts: list[str],
    days: int = 30,
) -> x509.Certificate:
    """A TLS server certificate (serverAuth EKU) for ``hosts`` (DNS names or IPs).

    For demos and tests of a TLS terminator in front of the app; production
    servers get theirs from the organisation's usual PKI.
    """
    import ipaddress

    now = datetime.now(UTC)
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(min(now + timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, _signing_hash(ca_key))
    )


def load_csr(pem: str) -> x509.CertificateSigningRequest:
    try:
        csr = x509.load_pem_x509_csr(pem.strip().encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise CertificateError("not a valid PEM certificate signing request") from None
    if not csr.is_signature_valid:
        raise CertificateError("the CSR's signature does not verify")
    return csr


def build_crl(
    *,
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    revoked: list[tuple[str, datetime]],
    crl_number: int,
    next_update: timedelta,
) -> x509.CertificateRevocationList:
    """A CRL listing ``(serial hex, revoked at)`` pairs."""
    now = datetime.now(UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - timedelta(minutes=5))
        .next_update(now + next_update)
        .add_extension(x509.CRLNumber(crl_number), critical=False)
    )
    for serial, at in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(int(serial, 16))
            .revocation_date(at)
            .build()
        )
    return builder.sign(ca_key, _signing_hash(ca_key))


def verify_issued_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, Exception):  # InvalidSignature and friends
        return False
    return True
