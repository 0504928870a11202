"""The benchmarked views: one tiny GET (and POST) per authentication stack, nothing else differs."""

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
from django_apiauth.schemes.client_cert import ClientCertificateAuthentication
from django_apiauth.schemes.http_signature import HttpSignatureAuthentication

from .floor import FloorHmacAuthentication

BENCH_SCOPE = "bench:read"


class _Tiny(APIView):
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response({"ok": True})

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        # The body is not parsed: only the authentication class reads it.
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
    """RFC 9421 signed requests (hmac-sha256 and ed25519 credentials, GET and POST alike)."""

    authentication_classes = [HttpSignatureAuthentication]
    permission_classes = [HasScopes]
    required_scopes = (BENCH_SCOPE,)


class FloorView(_Tiny):
    """The issue #3 floor: a bare hand-written HMAC check, key in memory (benchmarks/floor.py)."""

    authentication_classes = [FloorHmacAuthentication]
    permission_classes = [IsAuthenticated]


class ClientCertView(_Tiny):
    """Forwarded client certificate (nginx header format) from a trusted proxy."""

    authentication_classes = [ClientCertificateAuthentication]
    permission_classes = [HasScopes]
    required_scopes = (BENCH_SCOPE,)
