"""The example API: two views protected by every configured scheme."""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from django_apiauth.core.principal import Principal
from django_apiauth.permissions import HasScopes


class WhoAmI(APIView):
    """GET: who the request authenticated as."""

    permission_classes = [HasScopes]

    def get(self, request: Request) -> Response:
        principal = request.auth
        if isinstance(principal, Principal):
            return Response({
                "user": request.user.get_username(),
                "scheme": principal.scheme,
                "credential_id": principal.credential_id,
                "scopes": sorted(principal.scopes),
            })
        return Response({
            "user": request.user.get_username(), "scheme": "session",
            "credential_id": None, "scopes": [],
        })


class Echo(APIView):
    """POST JSON: returned as is. Requires scope ``echo:write``."""

    permission_classes = [HasScopes]
    required_scopes = ["echo:write"]

    def post(self, request: Request) -> Response:
        data: Any = request.data
        return Response(data)
