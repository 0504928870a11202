"""Admin of the identity links shared by SSO and JWT bearer authentication."""

from __future__ import annotations

from django.contrib import admin

from ..models import ExternalIdentity


@admin.register(ExternalIdentity)
class ExternalIdentityAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Link an issuer's subject to an existing account (the safe way to link accounts)."""

    list_display = ("issuer", "subject", "user", "created_at", "last_seen_at")
    list_filter = ("issuer",)
    search_fields = ("issuer", "subject", "user__username", "user__email")
    raw_id_fields = ("user",)
    readonly_fields = ("created_at", "last_seen_at")
    list_select_related = ("user",)
