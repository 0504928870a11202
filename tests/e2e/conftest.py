"""Real peers for the end-to-end tests: Debian's nginx terminating mutual TLS.

One nginx per test module, started from the shipped template
``example_project/deploy/nginx-mtls.conf`` on a free loopback port, in front of
pytest-django's live server. nginx trusts the CA the module creates with
:func:`django_apiauth.ca.authority.create_ca` and reads its CRL; the server
certificate comes from a throwaway server CA made with ``cryptography``.

nginx is installed by ``make system-deps`` (``scripts/system-deps.sh``); where
it is missing, the tests skip with that hint.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "example_project" / "deploy" / "nginx-mtls.conf"
#: The only trusted proxy: nginx connects to the app from there (proxy_bind).
PROXY_ADDRESS = "127.0.0.2"


def find_nginx() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


NGINX = find_nginx()
NGINX_MISSING = (
    "nginx is not installed: run `make system-deps` (scripts/system-deps.sh installs Debian's "
    "nginx) to run the mTLS end-to-end tests"
)


# -- files ------------------------------------------------------------------------


def write_file(path: Path, data: str | bytes, mode: int = 0o644) -> Path:
    """Write ``path`` with ``mode`` (0644: nginx's workers run as ``nobody``)."""
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(mode)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def render(template: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        template = template.replace("{{" + name + "}}", value)
    directives = [line for line in template.splitlines() if not line.lstrip().startswith("#")]
    left = [line.strip() for line in directives if "{{" in line]
    assert not left, f"placeholders of nginx-mtls.conf left unfilled: {left}"
    return template


# -- the server's TLS identity (not the app's CA) ----------------------------------


@dataclass(frozen=True)
class ServerTLS:
    ca_path: Path  # what clients verify nginx against
    cert_path: Path
    key_path: Path


def make_server_tls(directory: Path) -> ServerTLS:
    """A throwaway server CA and a certificate for 127.0.0.1 / localhost."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "apiauth e2e server CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return ServerTLS(
        ca_path=write_file(directory / "server-ca.pem", ca_cert.public_bytes(pem)),
        cert_path=write_file(directory / "server.crt.pem", cert.public_bytes(pem)),
        # Read by the master process only: may stay private.
        key_path=write_file(directory / "server.key.pem", key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), 0o600),
    )


# -- nginx ------------------------------------------------------------------------


@dataclass
class Nginx:
    """A running nginx of our own (never the system service)."""

    prefix: Path
    conf: Path
    port: int
    server_tls: ServerTLS
    crl_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def error_log(self) -> Path:
        return self.prefix / "error.log"

    def command(self, *extra: str) -> list[str]:
        assert NGINX is not None
        return [NGINX, "-e", str(self.error_log), "-c", str(self.conf), "-p", str(self.prefix), *extra]

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.error_log.read_text(errors="replace").splitlines()[-lines:])
        return "(no error log)"

    def start(self, timeout: float = 5.0) -> None:
        # `daemon off` keeps the master our child process, so it cannot outlive
        # a crashed test run unnoticed and we stop it by its own pid.
        with open(self.prefix / "stderr.log", "wb") as stderr:  # the child keeps its own copy
            self.process = subprocess.Popen(  # noqa: S603 (fixed arguments)
                self.command("-g", "daemon off;"),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"nginx did not listen on port {self.port} within {timeout} s:\n"
                           f"{self.log_tail()}")

    def workers(self) -> set[int]:
        """The master's child processes (Linux ``/proc``)."""
        assert self.process is not None
        children = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # gone meanwhile
            if int(stat.rsplit(")", 1)[1].split()[1]) == self.process.pid:
                children.add(int(entry.name))
        return children

    def reload(self, timeout: float = 5.0) -> None:
        """``nginx -s reload`` with the same flags (re-reads the config and the CRL).

        Returns once every worker is from the new configuration: until the old
        workers have exited, they still accept connections with the old CRL.
        """
        old = self.workers()
        result = subprocess.run(  # noqa: S603 (fixed arguments)
            self.command("-s", "reload"), capture_output=True, text=True, timeout=10, check=False,
        )
        assert result.returncode == 0, f"nginx -s reload failed: {result.stderr}\n{self.log_tail()}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            current = self.workers()
            if current and not current & old:
                return
            time.sleep(0.02)
        raise AssertionError(f"nginx's old workers {old} still run {timeout} s after the reload:\n"
                             f"{self.log_tail()}")

    def write_crl(self, pem: str) -> None:
        # Replace atomically: a reload never reads half a CRL.
        tmp = self.crl_path.with_suffix(".tmp")
        write_file(tmp, pem)
        os.replace(tmp, self.crl_path)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGQUIT)  # graceful stop
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def start_nginx(prefix: Path, *, upstream: str, server_tls: ServerTLS, ca_pem: str,
                crl_pem: str) -> Nginx:
    ca_path = write_file(prefix / "client-ca.pem", ca_pem)
    crl_path = write_file(prefix / "client-ca.crl.pem", crl_pem)
    last_error: Exception | None = None
    for _attempt in range(3):  # a free port can be taken between probe and bind
        port = free_port()
        conf = write_file(prefix / "nginx.conf", render(TEMPLATE.read_text(), {
            "PREFIX": str(prefix), "LISTEN_PORT": str(port), "UPSTREAM": upstream,
            "SERVER_CERT": str(server_tls.cert_path), "SERVER_KEY": str(server_tls.key_path),
            "CA_CERT": str(ca_path), "CRL": str(crl_path),
        }))
        nginx = Nginx(prefix=prefix, conf=conf, port=port, server_tls=server_tls, crl_path=crl_path)
        try:
            nginx.start()
        except RuntimeError as exc:
            last_error = exc
            continue
        return nginx
    raise RuntimeError(f"nginx did not start: {last_error}")


# -- fixtures ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def e2e_dir() -> Iterator[Path]:
    """A directory nginx's workers (``nobody``) can traverse: not under pytest's 0700 tmp."""
    path = Path(tempfile.mkdtemp(prefix="apiauth-e2e-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def mtls_ca(django_db_setup: Any, django_db_blocker: Any) -> Any:
    """The app's CA, created once per module (each test's flush removes the row; see ``ca``)."""
    from django_apiauth.ca.authority import create_ca

    with django_db_blocker.unblock():
        return create_ca(name="E2E API clients", slug="e2e-clients")


@pytest.fixture(scope="module")
def nginx(live_server: Any, mtls_ca: Any, e2e_dir: Path, django_db_blocker: Any) -> Iterator[Nginx]:
    """nginx with ssl_verify_client on, proxying to the live server, once per module."""
    if NGINX is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is missing in CI: " + NGINX_MISSING)
        pytest.skip(NGINX_MISSING)
    from django_apiauth.ca.authority import crl_pem

    parts = urlsplit(live_server.url)
    # The live server listens on the IPv4 loopback; name it by address so
    # nginx never tries ::1.
    upstream = f"127.0.0.1:{parts.port}"
    with django_db_blocker.unblock():
        crl = crl_pem(mtls_ca)
    server = start_nginx(
        e2e_dir, upstream=upstream, server_tls=make_server_tls(e2e_dir),
        ca_pem=mtls_ca.certificate_pem, crl_pem=crl,
    )
    yield server
    server.stop()


@pytest.fixture
def ca(mtls_ca: Any, transactional_db: Any) -> Any:
    """The module's CA, back in the database after the previous test's flush."""
    from django_apiauth.models import CertificateAuthority

    if not CertificateAuthority.objects.filter(pk=mtls_ca.pk).exists():
        mtls_ca.save(force_insert=True)
    return mtls_ca


@pytest.fixture
def trusted_proxy(settings: Any) -> None:
    """Only nginx's address may forward certificates (process-wide: the live server sees it)."""
    settings.APIAUTH_TRUSTED_PROXIES = [f"{PROXY_ADDRESS}/32"]


@dataclass(frozen=True)
class IssuedCert:
    credential: Any
    cert_path: Path
    key_path: Path

    @property
    def pair(self) -> tuple[str, str]:
        return (str(self.cert_path), str(self.key_path))

    @property
    def pem(self) -> str:
        return str(self.credential.certificate_pem)


@pytest.fixture
def issue_cert(tmp_path: Path, transactional_db: Any) -> Callable[..., IssuedCert]:
    """Issue a client certificate through the lifecycle; key and cert go to files."""
    from django_apiauth.core import lifecycle
    from django_apiauth.models import ClientCertificate

    counter = {"n": 0}

    def issue(owner: Any, ca: Any, *, key_pem: str = "", **fields: Any) -> IssuedCert:
        """``key_pem``: the key of a certificate registered with ``certificate_pem=``."""
        counter["n"] += 1
        fields.setdefault("name", f"e2e cert {counter['n']}")
        credential, private_key = lifecycle.issue(ClientCertificate, owner=owner, ca=ca, **fields)
        private_key = private_key or key_pem
        assert private_key, "no private key: pass key_pem= with certificate_pem="
        stem = tmp_path / f"client{counter['n']}"
        cert_path = write_file(stem.with_suffix(".crt.pem"), credential.certificate_pem)
        key_path = write_file(stem.with_suffix(".key.pem"), private_key, 0o600)
        return IssuedCert(credential, cert_path, key_path)

    return issue
