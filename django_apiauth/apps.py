from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ApiAuthConfig(AppConfig):
    name = "django_apiauth"
    label = "django_apiauth"
    verbose_name = _("API authentication")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import pre_delete

        from . import checks  # noqa: F401  (registers the system checks)
        from .core.lifecycle import audit_deletion
        from .core.registry import credential_models

        for model in credential_models().values():
            pre_delete.connect(audit_deletion, sender=model, dispatch_uid=f"apiauth-delete-{model.__name__}")
        from .schemes.jwt import connect_signals as connect_jwt_signals

        connect_jwt_signals()  # user / identity changes invalidate the JWT user caches
        self._add_sso_buttons_to_admin_login()

    @staticmethod
    def _add_sso_buttons_to_admin_login() -> None:
        from django.conf import settings

        from .app_settings import app_settings

        if "django.contrib.admin" not in settings.INSTALLED_APPS or not app_settings.SSO_ADMIN_LOGIN_BUTTONS:
            return
        from django.contrib import admin

        if admin.site.login_template is None:  # never override a project's own choice
            admin.site.login_template = "django_apiauth/admin/login.html"
