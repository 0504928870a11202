"""Test-only URLconf: one view that accepts JWT bearer tokens only."""

from __future__ import annotations

from typing import Any

from django.urls import path
from rest_framework.response import Response
from rest_framework.views import APIView

from django_apiauth.permissions import HasScopes
from django_apiauth.schemes.jwt import JWTAuthentication


class JWTWhoAmI(APIView):
    authentication_classes = [JWTAuthentication]
    permission_classes = [HasScopes]
    required_scopes = ("read",)

    def get(self, request: Any) -> Response:
        return Response({
            "user": request.user.get_username(),
            "scheme": request.auth.scheme,
            "credential_id": request.auth.credential_id,
            "scopes": sorted(request.auth.scopes),
        })


urlpatterns = [path("jwt/whoami/", JWTWhoAmI.as_view())]
