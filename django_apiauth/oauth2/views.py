"""django-oauth-toolkit's token and revocation endpoints, audited and failing closed.

Every token-endpoint answer writes one audit row (``event="oauth2.token"``, scheme
``oauth2``): success with reason ``issued`` and the new token's ``jti`` (or
DOT's token id for an opaque token), failure with the RFC 6749 §5.2 / RFC 8628
§3.5 error code as reason. The grant type and ``client_id`` go in ``detail``;
client secrets, codes, verifiers and tokens never do. A shared cache that
cannot be reached (deny-list, issued-token records) answers 503
``temporarily_unavailable`` instead of a 500.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any
from urllib.parse import unquote_plus

from django import http
from oauth2_provider import views as dot_views

from ..core import audit, reasons
from ..core.authentication import DependencyUnavailable
from . import tokens

_KNOWN_ERRORS = frozenset({
    reasons.OAUTH_INVALID_REQUEST, reasons.OAUTH_INVALID_CLIENT, reasons.OAUTH_INVALID_GRANT,
    reasons.OAUTH_UNAUTHORIZED_CLIENT, reasons.OAUTH_UNSUPPORTED_GRANT_TYPE, reasons.OAUTH_INVALID_SCOPE,
    reasons.OAUTH_INVALID_TARGET, reasons.OAUTH_AUTHORIZATION_PENDING, reasons.OAUTH_SLOW_DOWN,
    reasons.OAUTH_ACCESS_DENIED, reasons.OAUTH_EXPIRED_TOKEN,
})


def _unavailable() -> http.HttpResponse:
    # RFC 6749 §4.1.2.1 names this error for a temporarily overloaded server.
    return http.JsonResponse({"error": "temporarily_unavailable"}, status=503,
                             headers={"Cache-Control": "no-store", "Retry-After": "5"})


def client_id_of(request: http.HttpRequest) -> str:
    """The client the request claims to be (body or HTTP Basic user name); never the secret."""
    client_id = request.POST.get("client_id", "")
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if not client_id and header[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return ""
        client_id = unquote_plus(decoded.partition(":")[0])
    return client_id[:100]


def _json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


class TokenView(dot_views.TokenView):
    """DOT's ``/token/`` endpoint, audited."""

    def post(self, request: http.HttpRequest, *args: Any, **kwargs: Any) -> http.HttpResponse:
        detail = {"grant_type": request.POST.get("grant_type", "")[:80], "client_id": client_id_of(request)}
        try:
            response = super().post(request, *args, **kwargs)
        except DependencyUnavailable:
            self._audit(request, audit.FAILURE, reasons.SERVICE_UNAVAILABLE, detail)
            return _unavailable()
        data = _json(response.content)
        if response.status_code == 200 and data.get("access_token"):
            self._audit_issued(request, str(data["access_token"]), detail)
        else:
            error = str(data.get("error", ""))
            reason = error if error in _KNOWN_ERRORS else reasons.OAUTH_OTHER_ERROR
            self._audit(request, audit.FAILURE, reason, {**detail, "status": response.status_code})
        return response

    def _audit_issued(self, request: http.HttpRequest, token: str, detail: dict[str, Any]) -> None:
        from oauth2_provider.models import get_access_token_model

        row = (get_access_token_model().objects.select_related("user", "application__user")
               .filter(token_checksum=tokens.checksum(token)).first())
        claims = tokens.unverified_claims(token) if token.count(".") == 2 else None
        credential_id = str(claims["jti"]) if claims and "jti" in claims else (
            f"dot:{row.pk}" if row is not None else "")
        extra: dict[str, Any] = {"scope": row.scope[:500] if row is not None else ""}
        if claims and isinstance(claims.get("cnf"), dict):
            extra["certificate_bound"] = True
        # A client-credentials token has no end user: it acts as the client's owner.
        user = None if row is None else row.user or (row.application.user if row.application else None)
        self._audit(request, audit.SUCCESS, reasons.ISSUED, {**detail, **extra},
                    user=user, credential_id=credential_id)

    def _audit(self, request: http.HttpRequest, outcome: str, reason: str, detail: dict[str, Any],
               user: Any = None, credential_id: str = "") -> None:
        try:
            audit.record(event="oauth2.token", scheme="oauth2", outcome=outcome, reason=reason,
                         request=request, user=user, credential_id=credential_id, detail=detail)
        except audit.AuditUnavailable:
            pass  # the token answer is already decided; the database error is DOT's to report


class RevokeTokenView(dot_views.RevokeTokenView):
    """DOT's RFC 7009 ``/revoke_token/`` endpoint: a deny-list outage is a 503, not a 500.

    The revocation itself is audited by the deletion receiver
    (:mod:`django_apiauth.oauth2.receivers`)."""

    def post(self, request: http.HttpRequest, *args: Any, **kwargs: Any) -> http.HttpResponse:
        try:
            return super().post(request, *args, **kwargs)
        except DependencyUnavailable:
            return _unavailable()


class DeviceAuthorizationView(dot_views.DeviceAuthorizationView):
    """DOT's RFC 8628 ``/device-authorization/`` endpoint, working with oauthlib 4.

    oauthlib 4 adds the resolved ``scope`` to the device authorization answer;
    DOT 3.4 passes that answer to ``DeviceCodeResponse(**response)``, which has
    no ``scope`` field, and answers 500. DOT reads the scope from the request
    itself, so the extra member is dropped before DOT sees it.
    """

    def create_device_authorization_response(self, request: http.HttpRequest) -> Any:
        headers, response, status = super().create_device_authorization_response(request)
        if status == 200 and isinstance(response, dict):
            response = {k: v for k, v in response.items() if k != "scope"}
        return headers, response, status
