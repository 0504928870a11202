"""The ``/auth/login/`` page: one "Sign in with <provider>" button per active provider."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_safe

from .identity import safe_next
from .providers import active_providers


@require_safe
def login_page(request: HttpRequest) -> HttpResponse:
    next_url = request.GET.get(REDIRECT_FIELD_NAME)
    checked_next = safe_next(request, next_url) if next_url else ""
    response = TemplateResponse(
        request,
        "django_apiauth/sso/login.html",
        {
            **admin.site.each_context(request),
            "title": _("Sign in"),
            "providers": active_providers(),
            "next": checked_next,
        },
    )
    response["Cache-Control"] = "no-store"
    return response
