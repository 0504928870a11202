"""Admin of this provider kind (imported by :mod:`django_apiauth.admin`).

The client secret is write-only: the form has an empty password field that
sets or replaces it (required when adding), and the stored value is never
displayed, not even encrypted; the list shows only whether one is set.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from .models import OidcProvider


class OidcProviderForm(forms.ModelForm):  # type: ignore[type-arg]
    client_secret = forms.CharField(
        label=_("client secret"), required=False, strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=_("Write-only: enter a value to set or replace the secret; leave empty to keep it."),
    )

    class Meta:
        model = OidcProvider
        fields = (
            "name", "slug", "issuer", "client_id", "client_secret", "scopes", "algorithms",
            "token_endpoint_auth_method", "use_userinfo", "attribute_mapping", "jit_enabled", "active",
        )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if not self.instance.has_client_secret and not cleaned.get("client_secret"):
            self.add_error("client_secret", _("Enter the client secret the provider gave you."))
        return cleaned

    def save(self, commit: bool = True) -> OidcProvider:
        provider: OidcProvider = super().save(commit=False)
        secret = self.cleaned_data.get("client_secret")
        if secret:
            provider.set_client_secret(secret)
        if commit:
            provider.save()
        return provider


@admin.register(OidcProvider)
class OidcProviderAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    form = OidcProviderForm
    list_display = ("name", "slug", "issuer", "client_id", "secret_set", "jit_enabled", "active")
    list_filter = ("active", "jit_enabled")
    search_fields = ("name", "slug", "issuer", "client_id")
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = ("redirect_uri_path", "created_at", "updated_at")

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fields = list(OidcProviderForm.Meta.fields)
        return [*fields, *self.readonly_fields] if obj is not None else fields

    @admin.display(boolean=True, description=_("secret set"))
    def secret_set(self, obj: OidcProvider) -> bool:
        return obj.has_client_secret

    @admin.display(description=_("redirect URI (register it at the provider)"))
    def redirect_uri_path(self, obj: OidcProvider) -> str:
        from django.urls import reverse

        return "https://<this host>" + reverse("django_apiauth:oidc:callback", args=[obj.slug])
