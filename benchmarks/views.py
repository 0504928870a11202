"""The benchmarked views: one tiny GET (and POST) per authentication stack, nothing else differs."""

from __future__ import annotations

from typing import Any

import knox.auth
from oauth2_provider.contrib.rest_framework import OAuth2Authentication as DOTOAuth2Authentication
from oauth2_provider.contrib.rest_framework import TokenHasScope
from rest_framework.authentication import TokenAuthentication
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_api_key.permissions import HasAPIKey
from rest_framework_simplejwt.authentication import JWTAuthentication as SimpleJWTAuthentication

from django_apiauth.permissions import HasScopes
from django_apiauth.schemes.api_key import ApiKeyAuthentication
from django_apiauth.schemes.client_cert import ClientCertificateAuthentication
from django_apiauth.schemes.http_signature import HttpSignatureAuthentication
from django_apiauth.schemes.jwt import JWTAuthentication
from django_apiauth.schemes.oauth2 import OAuth2Authentication

from .floor import FloorHmacAuthentication, FloorJWTAuthentication

BENCH_SCOPE = "bench:read"


class _Tiny(APIView):
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response({"ok": True})

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        # Every POST endpoint receives its body: the view reads the raw bytes
        # (not parsed), so receiving 1 KiB costs the baseline what it costs the
        # signed row, whose authentication class reads them first (for the
        # digest; the second read is free). Without this the signed row alone
        # paid for receiving the body.
        request._request.body  # noqa: B018
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


class JWTView(_Tiny):
    """Our RFC 9068 JWT bearer tokens (RS256 and ES256 rows alike)."""

    authentication_classes = [JWTAuthentication]
    permission_classes = [HasScopes]
    required_scopes = (BENCH_SCOPE,)


class SimpleJWTView(_Tiny):
    """djangorestframework-simplejwt (no scopes: IsAuthenticated)."""

    authentication_classes = [SimpleJWTAuthentication]
    permission_classes = [IsAuthenticated]


class DOTView(_Tiny):
    """django-oauth-toolkit's own DRF class and scope permission (opaque token, DB lookup)."""

    authentication_classes = [DOTOAuth2Authentication]
    permission_classes = [TokenHasScope]
    required_scopes = (BENCH_SCOPE,)


class OAuth2View(_Tiny):
    """Our wrapper of django-oauth-toolkit's validation (opaque token, DB lookup)."""

    authentication_classes = [OAuth2Authentication]
    permission_classes = [HasScopes]
    required_scopes = (BENCH_SCOPE,)


class JWTFloorView(_Tiny):
    """The bearer-token floor: a bare PyJWT RS256 decode (benchmarks/floor.py)."""

    authentication_classes = [FloorJWTAuthentication]
    permission_classes = [IsAuthenticated]
