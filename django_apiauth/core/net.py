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
        for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
            if not _is_ip(hop):
                break  # garbage in the chain: stop at the last address we can vouch for
            ip = hop
            if not ip_allowed(hop, trusted):
                break
    try:
        request._apiauth_client_ip = ip  # type: ignore[attr-defined]
    except AttributeError:  # pragma: no cover - exotic request objects
        pass
    return ip


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
