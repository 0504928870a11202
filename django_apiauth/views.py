"""Browser views of django-apiauth: the landing page, the CA's public files (the
SSO views and the audit console live in their own packages)."""

from __future__ import annotations

import contextlib

from django.contrib.admin.views.decorators import staff_member_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_safe

from .models import CertificateAuthority


@staff_member_required
def index(request: HttpRequest) -> HttpResponse:
    """Staff landing page: the audit console's overview (``/auth/audit/``)."""
    return redirect("django_apiauth:audit:overview")


@require_safe
def ca_certificate(request: HttpRequest, slug: str) -> HttpResponse:
    """The CA certificate (public), for the TLS terminator's ``ssl_client_certificate``."""
    ca = get_object_or_404(CertificateAuthority, slug=slug)
    return HttpResponse(ca.certificate_pem, content_type="application/x-pem-file")


@require_safe
def ca_crl(request: HttpRequest, slug: str) -> HttpResponse:
    """A freshly signed CRL of the CA, for nginx ``ssl_crl`` (fetch it with cron + reload)."""
    from .ca.authority import crl_pem
    from .core.encryption import DecryptionError

    ca = get_object_or_404(CertificateAuthority, slug=slug)
    if not ca.can_issue:
        raise Http404("An imported CA publishes its own CRL.")
    # Signing costs a few milliseconds: a public endpoint reuses the CRL for a
    # minute unless a revocation happened since (the version key changes).
    from django.core.cache import cache
    from django.db.models import Count, Max

    from .models import ClientCertificate

    state = ClientCertificate.objects.filter(ca=ca, revoked_at__isnull=False).aggregate(
        n=Count("pk"), last=Max("revoked_at"))
    cache_key = f"apiauth:crl:{ca.pk}:{state['n']}:{state['last']}"
    try:
        body = cache.get(cache_key)
    except Exception:  # a cache outage must not take the CRL down
        body = None
    try:
        if body is None:
            body = crl_pem(ca)
            with contextlib.suppress(Exception):
                cache.set(cache_key, body, 60)
    except DecryptionError:
        # The CA key cannot be read (encryption key removed): fail closed, loudly.
        return HttpResponse("CRL temporarily unavailable.", status=503, content_type="text/plain")
    response = HttpResponse(body, content_type="application/x-pem-file")
    response["Cache-Control"] = "no-store"
    return response
