from django.contrib import admin
from django.urls import include, path

from . import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
    path("auth/", include("django_apiauth.urls")),
    path("api/whoami/", views.WhoAmI.as_view(), name="whoami"),
    path("api/echo/", views.Echo.as_view(), name="echo"),
]
