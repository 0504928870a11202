from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class OAuth2ProviderConfig(AppConfig):
    """Wires revocation of django-oauth-toolkit tokens into the JWT deny-list."""

    name = "django_apiauth.oauth2"
    label = "apiauth_oauth2"
    verbose_name = _("API authentication: OAuth 2.0 provider")

    def ready(self) -> None:
        from . import receivers

        receivers.connect()
