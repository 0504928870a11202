"""Browser views of django-apiauth (SSO and audit pages arrive with their issues)."""

from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect


@staff_member_required
def index(request: HttpRequest) -> HttpResponse:
    """Staff landing page: the audit events in the admin, for now."""
    return redirect("admin:django_apiauth_auditevent_changelist")
