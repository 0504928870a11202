"""URLs of django-apiauth, mounted by the project under ``/auth/``."""

from django.urls import include, path

from . import views
from .sso import views as sso_views

app_name = "django_apiauth"

urlpatterns = [
    path("", views.index, name="index"),
    path("login/", sso_views.login_page, name="login"),
    path("ca/<slug:slug>/ca.pem", views.ca_certificate, name="ca_certificate"),
    path("ca/<slug:slug>/crl.pem", views.ca_crl, name="ca_crl"),
    path("saml/", include(("django_apiauth.sso.saml.urls", "saml"))),
    path("oidc/", include(("django_apiauth.sso.oidc.urls", "oidc"))),
    path("audit/", include(("django_apiauth.audit.urls", "audit"))),
]
