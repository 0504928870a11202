"""Test-only URLconf: views that accept django-oauth-toolkit bearer tokens."""

from __future__ import annotations

from typing import Any

from django.urls import path
from oauth2_provider.contrib.rest_framework import (
    IsAuthenticatedOrTokenHasScope,
    TokenHasScope,
)
from oauth2_provider.contrib.rest_framework import OAuth2Authentication as DOTOAuth2Authentication
from rest_framework.response import Response
from rest_framework.views import APIView

from django_apiauth.permissions import HasScopes
from django_apiauth.schemes.jwt import JWTAuthentication
from django_apiauth.schemes.oauth2 import OAuth2Authentication


class OAuth2WhoAmI(APIView):
    authentication_classes = [OAuth2Authentication]
    permission_classes = [HasScopes]
    required_scopes = ("read",)

    def get(self, request: Any) -> Response:
        return Response({
            "user": request.user.get_username(),
            "scheme": request.auth.scheme,
            "credential_id": request.auth.credential_id,
            "scopes": sorted(request.auth.scopes),
        })


class OAuth2Echo(APIView):
    """POST: returns the parsed body (JSON, form or multipart)."""

    authentication_classes = [OAuth2Authentication]
    permission_classes = [HasScopes]
    required_scopes = ("write",)

    def post(self, request: Any) -> Response:
        return Response({key: request.data[key] for key in request.data})


class DOTPermissions(OAuth2WhoAmI):
    """django-oauth-toolkit's own permission class on our authentication class."""

    permission_classes = [TokenHasScope]


class DOTAuthenticatedOrScope(OAuth2WhoAmI):
    permission_classes = [IsAuthenticatedOrTokenHasScope]


class OAuth2ThenJWT(OAuth2WhoAmI):
    """Opaque DOT tokens first, then RFC 9068 JWTs from configured issuers."""

    authentication_classes = [OAuth2Authentication, JWTAuthentication]


class DOTOwnClass(APIView):
    """django-oauth-toolkit's own class, for comparison."""

    authentication_classes = [DOTOAuth2Authentication]
    permission_classes = [TokenHasScope]
    required_scopes = ("read",)

    def get(self, request: Any) -> Response:
        return Response({"user": request.user.get_username()})

    def post(self, request: Any) -> Response:
        return Response({"user": request.user.get_username()})


urlpatterns = [
    path("oauth2/dot-own-class/", DOTOwnClass.as_view()),
    path("oauth2/whoami/", OAuth2WhoAmI.as_view()),
    path("oauth2/echo/", OAuth2Echo.as_view()),
    path("oauth2/dot-permission/", DOTPermissions.as_view()),
    path("oauth2/dot-authenticated-or-scope/", DOTAuthenticatedOrScope.as_view()),
    path("oauth2/then-jwt/", OAuth2ThenJWT.as_view()),
]
