"""django-oauth-toolkit's URLs with the audited token and revocation views.

Mount instead of ``oauth2_provider.urls``, same namespace::

    path("o/", include("django_apiauth.oauth2.urls", namespace="oauth2_provider")),
"""

from __future__ import annotations

from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from oauth2_provider import urls as dot_urls

from . import views

app_name = "oauth2_provider"

urlpatterns = [
    path("token/", csrf_exempt(views.TokenView.as_view()), name="token"),
    path("revoke_token/", csrf_exempt(views.RevokeTokenView.as_view()), name="revoke-token"),
    path("device-authorization/", csrf_exempt(views.DeviceAuthorizationView.as_view()),
         name="device-authorization"),
    *dot_urls.urlpatterns,
]
