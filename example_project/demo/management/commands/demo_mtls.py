"""The mTLS part of ``make demo``: a demo CA, a client certificate, and nginx on :8443.

nginx (Debian package; ``make system-deps`` installs it) terminates TLS with
``ssl_verify_client on`` using the shipped ``deploy/nginx-mtls.conf`` and
forwards to the demo server on 127.0.0.1:8000 from 127.0.0.2, the only
trusted proxy (``make demo`` sets ``APIAUTH_TRUSTED_PROXIES=127.0.0.2/32``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from django_apiauth.ca import x509 as ca_x509
from django_apiauth.ca.authority import create_ca, crl_pem
from django_apiauth.core import lifecycle
from django_apiauth.models import CertificateAuthority, ClientCertificate

TEMPLATE = Path(__file__).resolve().parents[3] / "deploy" / "nginx-mtls.conf"


def _write(path: Path, data: str, mode: int = 0o644) -> Path:
    path.write_text(data)
    path.chmod(mode)
    return path


class Command(BaseCommand):
    help = "Issue a demo client certificate and start nginx with mTLS on 127.0.0.1:8443."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--port", type=int, default=8443)
        parser.add_argument("--upstream", default="127.0.0.1:8000")
        parser.add_argument("--no-nginx", action="store_true", help="Only issue the files.")

    def handle(self, *args: Any, port: int, upstream: str, no_nginx: bool, **options: Any) -> None:
        out = self.stdout.write
        base = Path(settings.VAR_DIR) / "demo-mtls"
        prefix = base / "nginx"
        prefix.mkdir(parents=True, exist_ok=True)
        for directory in (settings.VAR_DIR, base, prefix):
            Path(directory).chmod(0o755)  # nginx workers run as nobody
        self._stop(prefix)

        ca = CertificateAuthority.objects.filter(slug="demo").first() or create_ca(
            name="django-apiauth demo CA", slug="demo", days=365, via="demo")
        demo = get_user_model().objects.get(username="demo")
        cert, key = lifecycle.issue(ClientCertificate, owner=demo, name="demo mTLS client",
                                    ca=ca, scopes="echo:write", via="demo")
        client_cert = _write(base / "client.crt.pem", cert.certificate_pem)
        client_key = _write(base / "client.key.pem", key, 0o600)

        server_key = ca_x509.new_private_key("ec")
        server_cert = ca_x509.build_server_certificate(
            ca_cert=ca.certificate, ca_key=ca.private_key(), public_key=server_key.public_key(),
            hosts=["127.0.0.1", "localhost"])
        ca_path = _write(base / "ca.pem", ca.certificate_pem)
        values = {
            "PREFIX": str(prefix), "LISTEN_PORT": str(port), "UPSTREAM": upstream,
            "SERVER_CERT": str(_write(base / "server.crt.pem", ca_x509.certificate_pem(server_cert))),
            "SERVER_KEY": str(_write(base / "server.key.pem", ca_x509.private_key_pem(server_key), 0o600)),
            "CA_CERT": str(ca_path), "CRL": str(_write(base / "crl.pem", crl_pem(ca))),
        }
        conf = TEMPLATE.read_text()
        for name, value in values.items():
            conf = conf.replace("{{" + name + "}}", value)
        conf_path = _write(prefix / "nginx.conf", conf)

        out("")
        out("# mTLS through nginx: a client certificate issued by the app's demo CA")
        nginx = shutil.which("nginx")
        if nginx is None and os.access("/usr/sbin/nginx", os.X_OK):
            nginx = "/usr/sbin/nginx"
        if no_nginx or nginx is None:
            out("#   nginx is not installed: `make system-deps`, then `make demo` again.")
            out(f"#   Files are ready in {base}")
            return
        subprocess.run(  # noqa: S603 (fixed arguments)
            [nginx, "-e", str(prefix / "error.log"), "-c", str(conf_path), "-p", str(prefix)],
            check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        )
        url = f"https://127.0.0.1:{port}"
        out(f"# 200: who am I, with the demo client certificate ({cert.fingerprint_sha256[:16]}…)")
        out(f"curl -s --cacert {ca_path} --cert {client_cert} --key {client_key} {url}/api/whoami/")
        out("# 400 from nginx: no client certificate")
        out(f"curl -s -o /dev/null -w '%{{http_code}}\\n' --cacert {ca_path} {url}/api/whoami/")
        out(f"# stop nginx: kill -QUIT $(cat {prefix}/nginx.pid)")

    @staticmethod
    def _stop(prefix: Path) -> None:
        pid_file = prefix / "nginx.pid"
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text().strip()), signal.SIGQUIT)
            for _ in range(50):
                if not pid_file.exists():
                    break
                time.sleep(0.05)
