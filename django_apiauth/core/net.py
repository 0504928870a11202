"""Where a request comes from."""

from __future__ import annotations

import ipaddress

from django.http import HttpRequest

from ..app_settings import app_settings
from .models import ip_allowed


def client_ip(request: HttpRequest) -> str | None:
    """The client address, believing ``X-Forwarded-For`` only from trusted proxies.

    Walks ``X-Forwarded-For`` from the right and returns the first address
    that is not itself a trusted proxy (OWASP: the left-most value is the
    easiest to forge).
    """
    cached = getattr(request, "_apiauth_client_ip", False)
    if cached is not False:
        return cached  # type: ignore[no-any-return]
    remote = request.META.get("REMOTE_ADDR") or None
    trusted = app_settings.TRUSTED_PROXIES
    ip = remote
    if trusted and remote and ip_allowed(remote, trusted):
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        for raw in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
            hop = _strip_port(raw)
            if not _is_ip(hop):
                # A hop we cannot read: the client is unknown (never the proxy's
                # own address, which an allow-list might accept).
                ip = None
                break
            ip = hop
            if not ip_allowed(hop, trusted):
                break
    try:
        request._apiauth_client_ip = ip  # type: ignore[attr-defined]
    except AttributeError:  # pragma: no cover - exotic request objects
        pass
    return ip


def _strip_port(value: str) -> str:
    """``1.2.3.4:5678`` → ``1.2.3.4``; ``[2001:db8::1]:443`` → ``2001:db8::1``."""
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else value
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def peer_is_trusted_proxy(request: HttpRequest) -> bool:
    remote = request.META.get("REMOTE_ADDR")
    trusted = app_settings.TRUSTED_PROXIES
    return bool(trusted and remote and ip_allowed(remote, trusted))
