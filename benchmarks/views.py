"""The benchmarked views: one tiny GET per authentication stack, nothing else differs."""

from __future__ import annotations

from typing import Any

import knox.auth
from rest_framework.authentication import TokenAuthentication
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_api_key.permissions import HasAPIKey

from django_apiauth.permissions import HasScopes
from django_apiauth.schemes.api_key import ApiKeyAuthentication
from django_apiauth.schemes.http_signature import HttpSignatureAuthentication

BENCH_SCOPE = "bench:read"


class _Tiny(APIView):
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response({"ok": True})


class NoAuthView(_Tiny):
    authentication_classes = []
    permission_classes = [AllowAny]


class OursView(_Tiny):
    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [HasScopes]
    required_scopes = (BENCH_SCOPE,)


class DrfApiKeyView(_Tiny):
    authentication_classes = []
    permission_classes = [HasAPIKey]


class DrfTokenView(_Tiny):
    authentication_classes = [TokenAuthentication]
    permission_classes = [IsAuthenticated]


class KnoxView(_Tiny):
    authentication_classes = [knox.auth.TokenAuthentication]
    permission_classes = [IsAuthenticated]


class SignatureView(_Tiny):
    """RFC 9421 signed requests (hmac-sha256 and ed25519 credentials alike)."""

    authentication_classes = [HttpSignatureAuthentication]
    permission_classes = [HasScopes]
    required_scopes = (BENCH_SCOPE,)
