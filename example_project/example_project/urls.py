from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from . import views

urlpatterns = [
    path("admin/", admin.site.urls),
    # End users sign in here to authorize OAuth clients (authorization code, device flow).
    path("accounts/login/", auth_views.LoginView.as_view(template_name="demo/login.html"), name="login"),
    path("o/", include("django_apiauth.oauth2.urls", namespace="oauth2_provider")),
    path("auth/", include("django_apiauth.urls")),
    path("api/whoami/", views.WhoAmI.as_view(), name="whoami"),
    path("api/echo/", views.Echo.as_view(), name="echo"),
    # The demo's own SAML IdP (pysaml2), so that `make demo` can show SAML sign-in.
    path("demo-idp/", include("demo.saml_idp")),
]
