"""Admin of the SAML SP (imported by :mod:`django_apiauth.admin`).

IdP certificates are listed by SHA-256 fingerprint and validity; the SP key
pair is shown by its certificate only: the private key is never displayed, not
even encrypted, and new SP keys come from ``manage.py create_saml_sp_key``.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db import models
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from .models import SamlIdentityProvider, SamlServiceProviderKey, summaries_of


def _validity(not_after: Any) -> str:
    now = timezone.now()
    if not_after <= now:
        return str(_("EXPIRED"))
    days = (not_after - now).days
    return str(_("expires in %(days)d days") % {"days": days}) if days < 30 else ""


@admin.register(SamlIdentityProvider)
class SamlIdentityProviderAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("name", "slug", "entity_id", "certificate_expiry", "jit_enabled",
                    "allow_idp_initiated", "active")
    list_filter = ("active", "jit_enabled", "allow_idp_initiated")
    search_fields = ("name", "^slug", "entity_id")
    prepopulated_fields = {"slug": ("name",)}
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    readonly_fields = ("certificate_summary", "sp_endpoints", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "slug", "active")}),
        (_("Identity provider"), {"fields": ("entity_id", "sso_url", "slo_url", "certificates",
                                             "certificate_summary")}),
        (_("Security"), {"fields": ("want_response_signed", "want_assertions_encrypted",
                                    "allow_idp_initiated", "nameid_format")}),
        (_("Users"), {"fields": ("jit_enabled", "attribute_mapping"),
                      "description": _("See the SSO documentation (docs/sso.md) for the mapping format.")}),
        (_("This service provider"), {"fields": ("sp_entity_id", "sp_endpoints", "created_at",
                                                 "updated_at")}),
    )

    @admin.display(description=_("certificates (SHA-256, valid until)"))
    def certificate_summary(self, obj: SamlIdentityProvider) -> SafeString | str:
        summaries = summaries_of(obj)
        if not summaries:
            return "-"
        return format_html_join(
            "", "<div><code>{}</code><br>{} · {} {}</div>",
            ((s.fingerprint_display, s.subject, s.not_after.strftime("%Y-%m-%d"), _validity(s.not_after))
             for s in summaries),
        )

    @admin.display(description=_("certificate expiry"))
    def certificate_expiry(self, obj: SamlIdentityProvider) -> str:
        summaries = summaries_of(obj)
        if not summaries:
            return "-"
        latest = max(s.not_after for s in summaries)
        return f"{latest:%Y-%m-%d} {_validity(latest)}".strip()

    @admin.display(description=_("SP endpoints (give these to the IdP)"))
    def sp_endpoints(self, obj: SamlIdentityProvider) -> SafeString | str:
        if not obj.pk:
            return "-"
        rows = [(label, reverse(f"django_apiauth:saml:{name}", args=[obj.slug]))
                for label, name in ((_("Metadata"), "metadata"), (_("ACS (POST)"), "acs"),
                                    (_("SLS (Redirect)"), "sls"), (_("Login"), "login"))]
        return format_html_join("", '<div>{}: <a href="{}">{}</a></div>', ((lbl, u, u) for lbl, u in rows))


@admin.register(SamlServiceProviderKey)
class SamlServiceProviderKeyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """SP key pairs: created by ``create_saml_sp_key``; only ``name`` and ``active`` change here."""

    list_display = ("name", "fingerprint", "not_after", "active", "created_at")
    list_filter = ("active",)
    fields = ("name", "active", "fingerprint", "not_before", "not_after", "created_at", "certificate_pem")
    readonly_fields = ("fingerprint", "not_before", "not_after", "created_at", "certificate_pem")
    actions = None

    @admin.display(description=_("SHA-256 fingerprint"))
    def fingerprint(self, obj: SamlServiceProviderKey) -> SafeString:
        pairs = ":".join(obj.fingerprint_sha256[i:i + 2] for i in range(0, 64, 2)).upper()
        return format_html("<code>{}</code>", pairs)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # manage.py create_saml_sp_key generates the key on the server
