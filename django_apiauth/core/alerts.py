"""Alerts: the ``suspicious_activity`` signal and its optional notifier.

:func:`emit` sends :data:`django_apiauth.signals.suspicious_activity` (robustly:
a failing receiver is logged, never an error response). When
``APIAUTH_ALERTS`` is set, :func:`notify` (connected here) forwards each alert
by e-mail (Django's mail, to ``"email"``) and/or as a JSON ``POST`` to
``"webhook"`` with a timeout. Delivery runs on one background thread with a
bounded queue, so a slow mail server or webhook never delays a response; a
full queue or a failed delivery is logged, never raised. Payloads carry public
identifiers only (credential id, address, scheme, reason counts), never a
secret: ``detail`` goes through the audit writer's redaction.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import urllib.request
from datetime import UTC, datetime
from typing import Any

from django.dispatch import receiver

from .. import signals
from ..app_settings import app_settings

logger = logging.getLogger("django_apiauth")

KINDS = ("failure_burst", "lockout", "revoked_credential_used", "rotated_credential_used",
         "new_ip")
QUEUE_SIZE = 100


def emit(kind: str, *, request: Any = None, scheme: str = "", credential_id: str = "",
         ip: str | None = None, detail: dict[str, Any] | None = None, sender: Any = None) -> None:
    """Send ``suspicious_activity``; receivers' errors are logged."""
    from .audit import clean_detail

    results = signals.suspicious_activity.send_robust(
        sender=sender, kind=kind, request=request, scheme=scheme, credential_id=credential_id,
        ip=ip, detail=clean_detail(detail),
    )
    for receiver_, result in results:
        if isinstance(result, Exception):
            logger.error("A suspicious_activity receiver (%r) failed: %s", receiver_,
                         type(result).__name__)


def payload(kind: str, scheme: str, credential_id: str, ip: str | None,
            detail: dict[str, Any], request: Any = None) -> dict[str, Any]:
    """The JSON document of one alert (e-mail body and webhook body)."""
    return {
        "event": "suspicious_activity",
        "kind": kind,
        "at": datetime.now(UTC).isoformat(),
        "scheme": scheme,
        "credential_id": credential_id,
        "ip": ip,
        "path": (getattr(request, "META", None) or {}).get("PATH_INFO", "")[:512],
        "detail": detail,
    }


@receiver(signals.suspicious_activity, dispatch_uid="django_apiauth.alerts.notify")
def notify(sender: Any, kind: str, scheme: str = "", credential_id: str = "",
           ip: str | None = None, detail: dict[str, Any] | None = None, request: Any = None,
           **kwargs: Any) -> None:
    config = app_settings.ALERTS
    if not config or not (config.get("email") or config.get("webhook")):
        return
    kinds = config.get("kinds")
    if kinds and kind not in kinds:
        return
    document = payload(kind, scheme, credential_id, ip, detail or {}, request)
    if config.get("background", True):
        _worker().submit(config, document)
    else:
        deliver(config, document)


def deliver(config: dict[str, Any], document: dict[str, Any]) -> None:
    """Send one alert to every configured destination; log failures."""
    body = json.dumps(document, sort_keys=True, default=str)
    emails = config.get("email")
    if emails:
        from django.core.mail import send_mail

        try:
            send_mail(
                subject=f"[django-apiauth] suspicious activity: {document['kind']}",
                message=body, from_email=None,
                recipient_list=[emails] if isinstance(emails, str) else list(emails),
            )
        except Exception as exc:
            logger.error("Could not e-mail a suspicious_activity alert: %s", type(exc).__name__)
    url = config.get("webhook")
    if url:
        if not str(url).startswith(("https://", "http://")):
            logger.error("APIAUTH_ALERTS['webhook'] is not an http(s) URL; alert not sent")
            return
        request = urllib.request.Request(  # noqa: S310 (scheme checked above)
            str(url), data=body.encode(), method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "django-apiauth-alerts"},
        )
        try:
            with urllib.request.urlopen(request, timeout=float(config.get("timeout", 3.0))) as r:  # noqa: S310
                r.read(1024)
        except Exception as exc:
            logger.error("Could not POST a suspicious_activity alert to the webhook: %s",
                         type(exc).__name__)


class _Worker:
    """One daemon thread draining a bounded queue of alerts."""

    def __init__(self) -> None:
        self.queue: queue.Queue[tuple[dict[str, Any], dict[str, Any]]] = queue.Queue(QUEUE_SIZE)
        self.thread = threading.Thread(target=self.run, name="apiauth-alerts", daemon=True)
        self.thread.start()

    def submit(self, config: dict[str, Any], document: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait((config, document))
        except queue.Full:
            logger.error("The alert queue is full; a %s alert was dropped", document["kind"])

    def run(self) -> None:
        while True:
            config, document = self.queue.get()
            try:
                deliver(config, document)
            except Exception:  # pragma: no cover - deliver logs its own errors
                logger.exception("Alert delivery failed")
            finally:
                self.queue.task_done()


_WORKER: _Worker | None = None
_WORKER_LOCK = threading.Lock()


def _worker() -> _Worker:
    global _WORKER
    with _WORKER_LOCK:
        if _WORKER is None or not _WORKER.thread.is_alive():
            _WORKER = _Worker()
        return _WORKER


def wait_idle() -> None:
    """Block until queued alerts are delivered (tests, and before a process exits)."""
    if _WORKER is not None:
        _WORKER.queue.join()
