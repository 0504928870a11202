from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ApiAuthConfig(AppConfig):
    name = "django_apiauth"
    label = "django_apiauth"
    verbose_name = _("API authentication")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
