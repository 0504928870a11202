"""One URL pattern for every variant, so URL resolution costs all of them the same."""

from typing import Any

from django.http import HttpRequest, HttpResponseBase
from django.urls import path

from . import views

VIEWS = {
    "none": views.NoAuthView.as_view(),
    "ours": views.OursView.as_view(),
    "drf-api-key": views.DrfApiKeyView.as_view(),
    "drf-token": views.DrfTokenView.as_view(),
    "knox": views.KnoxView.as_view(),
    "http-sig": views.SignatureView.as_view(),
    "sig-floor": views.FloorView.as_view(),
    "mtls": views.ClientCertView.as_view(),
    "jwt": views.JWTView.as_view(),
    "simplejwt": views.SimpleJWTView.as_view(),
    "dot": views.DOTView.as_view(),
    "oauth2": views.OAuth2View.as_view(),
    "jwt-floor": views.JWTFloorView.as_view(),
}


def dispatch(request: HttpRequest, variant: str, **kwargs: Any) -> HttpResponseBase:
    return VIEWS[variant](request, **kwargs)  # type: ignore[no-any-return]


urlpatterns = [path("bench/<slug:variant>/", dispatch)]
