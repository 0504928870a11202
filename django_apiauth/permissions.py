"""Scope checks that work for every scheme (DESIGN §2)."""

from __future__ import annotations

import re
from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.permissions import BasePermission

from .core import audit, reasons
from .core.authentication import CodedError, NotAuthenticated, ServiceUnavailable
from .core.principal import Principal

_SCHEME_WORD = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,19}")


class InsufficientScope(CodedError, exceptions.PermissionDenied):
    default_detail = _("This credential lacks a scope this endpoint requires.")
    default_code = "insufficient_scope"


def required_scopes_for(view: Any, method: str) -> frozenset[str]:
    """``view.required_scopes`` or, per method, ``view.required_scopes_by_method``."""
    by_method = getattr(view, "required_scopes_by_method", None)
    if by_method and method.upper() in by_method:
        return frozenset(by_method[method.upper()])
    return frozenset(getattr(view, "required_scopes", ()) or ())


class HasScopes(BasePermission):
    """Require an authenticated request whose principal holds ``view.required_scopes``.

    * No credential → ``False`` (DRF answers 401 with ``WWW-Authenticate``),
      audited as ``missing``.
    * Missing scopes → 403 ``insufficient_scope`` naming the required scopes,
      audited as ``insufficient_scope``.
    * Authenticated by a non-apiauth class (e.g. a staff session): allowed only
      when the view requires no scope.
    """

    def has_permission(self, request: Any, view: Any) -> bool:
        required = required_scopes_for(view, request.method)
        principal = request.auth
        if not isinstance(principal, Principal):
            user = request.user
            if user is None or not user.is_authenticated:
                self._audit(request, reasons.MISSING, "", None, {
                    "authorization_scheme": _authorization_scheme(request),
                })
                # DRF adds WWW-Authenticate from the view's first authenticator.
                raise NotAuthenticated()
            if required:
                self._deny(request, user, "", "session", required, frozenset())
            return True
        if principal.scopes.issuperset(required):
            return True
        self._deny(request, request.user, principal.credential_id, principal.scheme, required,
                   principal.scopes)
        return False  # pragma: no cover - _deny raises

    def _deny(self, request: Any, user: Any, credential_id: str, scheme: str,
              required: frozenset[str], granted: frozenset[str]) -> None:
        missing = sorted(required - granted)
        self._audit(request, reasons.INSUFFICIENT_SCOPE, credential_id, user,
                    {"required": sorted(required), "missing": missing}, scheme=scheme)
        exc = InsufficientScope({
            "detail": InsufficientScope.default_detail,
            "code": "insufficient_scope",
            "required_scopes": sorted(required),
        })
        # A scheme with a 403 challenge (RFC 6750 §3.1 for bearer tokens) adds
        # it: DRF's exception handler sends ``auth_header`` as WWW-Authenticate.
        hook = getattr(getattr(request, "successful_authenticator", None),
                       "insufficient_scope_challenge", None)
        if hook is not None:
            exc.auth_header = hook(request, required)  # type: ignore[attr-defined]
        raise exc

    @staticmethod
    def _audit(request: Any, reason: str, credential_id: str, user: Any,
               detail: dict[str, Any], scheme: str = "") -> None:
        try:
            audit.record(
                event="authorize", scheme=scheme, outcome=audit.FAILURE, reason=reason,
                request=request, user=user, credential_id=credential_id, detail=detail,
            )
        except audit.AuditUnavailable:
            raise ServiceUnavailable() from None


def _authorization_scheme(request: Any) -> str:
    """The scheme word of ``Authorization`` (never the credential), for the audit row.

    Only a short token followed by a space counts as a scheme word: a header
    holding a bare credential (``Authorization: ak_…``, a bare bearer token)
    has no scheme word, and nothing of it is recorded.
    """
    word, sep, _rest = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if not word:
        return ""
    if sep and _SCHEME_WORD.fullmatch(word):
        return word
    return "(unrecognised)"
