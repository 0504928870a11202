"""Alerts (issue 7 item 5): ``suspicious_activity`` and the e-mail / webhook notifier.

The webhook is a real HTTP server on a free loopback port; mail goes to
Django's locmem outbox. No alert ever carries a secret.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.core import mail
from django.utils import timezone
from freezegun import freeze_time

from django_apiauth import signals
from django_apiauth.core import alerts, lifecycle

from .abuse_helpers import SCHEMES, TERMINATOR, Holder, make_holder_factory

pytestmark = pytest.mark.django_db

A, B, C = "198.51.100.1", "198.51.100.2", "198.51.100.3"


@pytest.fixture(autouse=True)
def _settings(settings: Any) -> None:
    settings.APIAUTH_TRUSTED_PROXIES = [f"{TERMINATOR}/32"]
    settings.APIAUTH_LOCKOUT_CREDENTIAL_FAILURES = 3
    settings.APIAUTH_ALERT_CREDENTIAL_FAILURES = 4


@pytest.fixture
def holder(user: Any) -> Callable[..., Holder]:
    return make_holder_factory(user)


@pytest.fixture
def received() -> Iterator[list[dict[str, Any]]]:
    got: list[dict[str, Any]] = []

    def collect(sender: Any, **kwargs: Any) -> None:
        got.append(kwargs)

    signals.suspicious_activity.connect(collect, dispatch_uid="test-collect")
    yield got
    signals.suspicious_activity.disconnect(dispatch_uid="test-collect")


def kinds(got: list[dict[str, Any]]) -> list[str]:
    return [item["kind"] for item in got]


# -- the signal ---------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["api_key", "hmac"])
def test_failure_burst_from_many_addresses_alerts_without_locking_the_holder(
        client: Any, holder: Callable[..., Holder], received: list[dict[str, Any]],
        scheme: str) -> None:
    h = holder(scheme)
    for ip in ("203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4", "203.0.113.5"):
        assert h.get(client, ip, wrong=True).status_code == 401
    assert kinds(received) == ["failure_burst"]
    burst = received[0]
    assert (burst["scheme"], burst["credential_id"]) == (scheme, h.credential_id)
    assert burst["detail"]["failures"] == 4
    assert h.get(client, A).status_code == 200


def test_lockout_alerts_once(client: Any, holder: Callable[..., Holder],
                             received: list[dict[str, Any]]) -> None:
    h = holder("api_key")
    for _ in range(3):
        h.get(client, A, wrong=True)
    h.get(client, A, wrong=True)
    assert kinds(received) == ["lockout"]
    assert received[0]["detail"]["scope"] == "credential"
    assert received[0]["ip"] == A


@pytest.mark.parametrize("scheme", SCHEMES)
def test_revoked_credential_used(client: Any, holder: Callable[..., Holder],
                                 received: list[dict[str, Any]], scheme: str) -> None:
    h = holder(scheme)
    lifecycle.revoke(h.credential, reason="leaked")
    assert h.get(client, A).status_code == 401
    assert kinds(received) == ["revoked_credential_used"]
    assert received[0]["credential_id"] == h.credential_id


@pytest.mark.parametrize("scheme", ["api_key", "hmac"])
def test_rotated_out_credential_used_after_grace(client: Any, holder: Callable[..., Holder],
                                                 received: list[dict[str, Any]],
                                                 scheme: str) -> None:
    h = holder(scheme)
    with freeze_time("2030-01-01 12:00:00") as frozen:
        lifecycle.rotate(h.credential, grace=timedelta(hours=1))
        assert h.get(client, A).status_code == 200  # within the grace: no alert
        frozen.tick(timedelta(hours=2))
        assert h.get(client, A).status_code == 401
    assert kinds(received) == ["rotated_credential_used"]


def test_plain_expiry_is_not_an_alert(client: Any, holder: Callable[..., Holder],
                                      received: list[dict[str, Any]]) -> None:
    h = holder("api_key")
    with freeze_time("2030-01-01 12:00:00") as frozen:
        h.credential.expires_at = timezone.now() + timedelta(minutes=1)
        h.credential.save(update_fields=["expires_at"])
        frozen.tick(timedelta(minutes=2))
        assert h.get(client, A).status_code == 401
    assert received == []


@pytest.mark.parametrize("scheme", SCHEMES)
def test_first_use_from_a_new_address(client: Any, holder: Callable[..., Holder],
                                      received: list[dict[str, Any]], scheme: str) -> None:
    h = holder(scheme)
    assert h.get(client, A).status_code == 200  # the very first use: not news
    assert h.get(client, A).status_code == 200
    assert received == []
    assert h.get(client, B).status_code == 200
    assert h.get(client, B).status_code == 200
    assert h.get(client, A).status_code == 200
    assert kinds(received) == ["new_ip"]
    assert (received[0]["ip"], received[0]["detail"]["previous_ip"]) == (B, A)


def test_new_address_alert_can_be_disabled(settings: Any, client: Any,
                                           holder: Callable[..., Holder],
                                           received: list[dict[str, Any]]) -> None:
    settings.APIAUTH_ALERT_NEW_IP = False
    h = holder("api_key")
    for ip in (A, B, C):
        assert h.get(client, ip).status_code == 200
    assert received == []


def test_a_failing_receiver_changes_no_answer(client: Any, holder: Callable[..., Holder],
                                              caplog: pytest.LogCaptureFixture) -> None:
    def broken(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    signals.suspicious_activity.connect(broken, dispatch_uid="test-broken")
    try:
        h = holder("api_key")
        lifecycle.revoke(h.credential, reason="leaked")
        assert h.get(client, A).status_code == 401
    finally:
        signals.suspicious_activity.disconnect(dispatch_uid="test-broken")
    assert "receiver" in caplog.text and "RuntimeError" in caplog.text


# -- the notifier ----------------------------------------------------------------------------


class Hook:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.status = 204


@pytest.fixture(scope="module")
def webhook() -> Iterator[tuple[str, Hook]]:
    hook = Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            hook.bodies.append(json.loads(self.rfile.read(length)))
            hook.headers.append(dict(self.headers))
            self.send_response(hook.status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/alerts", hook
    server.shutdown()
    server.server_close()


@pytest.fixture
def hook(webhook: tuple[str, Hook]) -> Hook:
    webhook[1].bodies.clear()
    webhook[1].headers.clear()
    webhook[1].status = 204
    return webhook[1]


def test_email_and_webhook_without_secrets(settings: Any, client: Any,
                                           holder: Callable[..., Holder],
                                           webhook: tuple[str, Hook], hook: Hook) -> None:
    settings.APIAUTH_ALERTS = {"email": ["security@example.com"], "webhook": webhook[0],
                               "timeout": 2.0}
    h = holder("api_key")
    lifecycle.revoke(h.credential, reason="leaked")
    assert h.get(client, A).status_code == 401
    alerts.wait_idle()
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["security@example.com"]
    assert "revoked_credential_used" in message.subject
    assert len(hook.bodies) == 1
    body = hook.bodies[0]
    assert hook.headers[0]["Content-Type"] == "application/json"
    assert body["kind"] == "revoked_credential_used"
    assert (body["credential_id"], body["ip"], body["scheme"]) == (h.credential_id, A, "api_key")
    assert body["path"] == "/api/whoami/"
    for text in (message.body, json.dumps(body)):
        assert h.secret not in text
        assert h.secret.rsplit("_", 1)[-1] not in text


def test_kinds_filter(settings: Any, client: Any, holder: Callable[..., Holder],
                      webhook: tuple[str, Hook], hook: Hook) -> None:
    settings.APIAUTH_ALERTS = {"webhook": webhook[0], "kinds": ["lockout"]}
    h = holder("api_key")
    lifecycle.revoke(h.credential, reason="leaked")
    h.get(client, A)
    alerts.wait_idle()
    assert hook.bodies == []


def test_synchronous_delivery(settings: Any, client: Any, holder: Callable[..., Holder],
                              webhook: tuple[str, Hook], hook: Hook) -> None:
    settings.APIAUTH_ALERTS = {"webhook": webhook[0], "background": False}
    h = holder("hmac")
    for _ in range(3):
        h.get(client, A, wrong=True)
    assert [b["kind"] for b in hook.bodies] == ["lockout"]
    assert hook.bodies[0]["detail"]["failures"] == 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("url", ["dead", "ftp://example.com/x", "error"])
def test_delivery_failures_are_logged_not_raised(settings: Any, client: Any,
                                                 holder: Callable[..., Holder],
                                                 webhook: tuple[str, Hook], hook: Hook,
                                                 caplog: pytest.LogCaptureFixture,
                                                 url: str) -> None:
    if url == "dead":
        url = f"http://127.0.0.1:{free_port()}/nobody"
    elif url == "error":
        hook.status = 500
        url = webhook[0]
    settings.APIAUTH_ALERTS = {"webhook": url, "timeout": 1.0, "background": False}
    h = holder("api_key")
    lifecycle.revoke(h.credential, reason="leaked")
    assert h.get(client, A).status_code == 401
    assert "alert" in caplog.text


def test_email_failure_is_logged(settings: Any, client: Any, holder: Callable[..., Holder],
                                 caplog: pytest.LogCaptureFixture) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", free_port(), 1
    settings.APIAUTH_ALERTS = {"email": "security@example.com", "background": False}
    h = holder("api_key")
    lifecycle.revoke(h.credential, reason="leaked")
    assert h.get(client, A).status_code == 401
    assert "Could not e-mail" in caplog.text


def test_no_configuration_sends_nothing(client: Any, holder: Callable[..., Holder]) -> None:
    h = holder("api_key")
    lifecycle.revoke(h.credential, reason="leaked")
    h.get(client, A)
    alerts.wait_idle()
    assert mail.outbox == []
