"""Browser views of django-apiauth (SSO and audit pages arrive with their issues)."""

from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_safe

from .models import CertificateAuthority


@staff_member_required
def index(request: HttpRequest) -> HttpResponse:
    """Staff landing page: the audit events in the admin, for now."""
    return redirect("admin:django_apiauth_auditevent_changelist")


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
    try:
        body = crl_pem(ca)
    except DecryptionError:
        # The CA key cannot be read (encryption key removed): fail closed, loudly.
        return HttpResponse("CRL temporarily unavailable.", status=503, content_type="text/plain")
    response = HttpResponse(body, content_type="application/pkix-crl")
    response["Cache-Control"] = "no-store"
    return response
