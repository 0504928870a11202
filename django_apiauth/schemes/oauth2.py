"""OAuth 2.0 bearer access tokens issued by django-oauth-toolkit (RFC 6750).

``Authorization: Bearer <token>`` (RFC 6750 §2.1; the scheme word is
case-insensitive), validated by django-oauth-toolkit (DOT) itself: its
``OAuthLibCore.verify_request`` with the configured ``OAUTH2_VALIDATOR_CLASS``
and server class, so the token lookup (by checksum), expiry, RFC 8707
resource restrictions, application usability and introspection against an
external authorization server are all DOT's. This class adds what DOT's own
``OAuth2Authentication`` leaves out:

* only the ``Authorization`` header carries a token. A token in the query
  string (RFC 6750 §2.3, forbidden by RFC 9700 §2.4 / §4.3.2) or in a
  form-encoded body (RFC 6750 §2.2) is refused with 401 and audited
  (``credential_in_query`` / ``credential_in_body``), even when a header is
  sent as well: it may already have leaked;
* the token must be an RFC 6750 ``b64token`` of at most
  :attr:`OAuth2Authentication.max_token_length` characters, checked before
  any hashing or database work → ``malformed``;
* tokens of inactive users are refused → ``inactive_owner``. A
  client-credentials token (no end user) authenticates as its application's
  ``user``, the service account the machine client was registered under; an
  application without one → ``unknown_credential``;
* every attempt is audited (scheme ``oauth2``) through the core, with a
  precise reason: ``unknown_credential`` (no such token: never issued, or
  revoked, since DOT deletes revoked tokens), ``expired``, ``bad_audience``
  (an RFC 8707 resource-restricted token used elsewhere), ``token_refused``
  (DOT's validator refused a token that exists and has not expired, e.g. a
  disabled application), ``inactive_owner``;
* a refusal answers 401 with ``WWW-Authenticate: Bearer realm="…",
  error="invalid_token"`` (``error="invalid_request"`` for a token sent the
  wrong way), RFC 6750 §3.1, and a body with a stable ``code``;
* a missing scope answers 403 ``insufficient_scope`` naming the required
  scopes, with the RFC 6750 §3.1 challenge (through
  :class:`django_apiauth.permissions.HasScopes` and
  :meth:`OAuth2Authentication.insufficient_scope_challenge`).

Success sets ``request.auth`` to an :class:`OAuth2Principal`
(``scheme="oauth2"``, ``credential`` = DOT's ``AccessToken``,
``credential_id`` = the token's primary key, never the token, ``scopes`` =
the token's ``scope``). It also answers to ``scope`` and ``is_valid()``, so
DOT's own permission classes (``TokenHasScope`` and friends) keep working.

With DOT's access-token generator set to mint JWTs, a DOT token is a JWT
string: it is still looked up in DOT's database here (revocation is then
immediate). A JWS-shaped token that DOT does not know is left to a
:class:`~django_apiauth.schemes.jwt.JWTAuthentication` listed *after* this
class, when there is one (an access token from another issuer); without one
it is refused.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlencode

from django.core.exceptions import SuspiciousOperation
from django.db import DatabaseError
from django.http import HttpRequest
from django.utils import timezone
from django.utils.encoding import escape_uri_path
from django.utils.translation import gettext_lazy as _
from oauth2_provider.contrib.rest_framework import OAuth2Authentication as DOTOAuth2Authentication
from oauth2_provider.models import get_access_token_model
from oauth2_provider.oauth2_backends import get_oauthlib_core
from oauthlib.common import Request as OAuthlibRequest
from rest_framework import exceptions

from ..core import reasons
from ..core.authentication import (
    ApiAuthentication,
    AuthenticationFailed,
    DependencyUnavailable,
    Refused,
)
from ..core.principal import Principal

# RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_JWS_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_FORM_MEDIA_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
PARAMETER = "access_token"  # RFC 6750 §2.2 and §2.3

# Refusals about *how* the token was sent are RFC 6750 "invalid_request";
# every other refusal is "invalid_token".
_REQUEST_ERRORS = frozenset({reasons.QUERY_STRING, reasons.FORM_BODY, reasons.AMBIGUOUS})
# Client-facing code and message per reason. Unknown, expired, revoked and
# inactive-owner tokens share one (STYLE habit 2); the audit row has the reason.
_INVALID_TOKEN = ("invalid_token", _("The access token is invalid, expired or revoked."))
_CLIENT_ERRORS: dict[str, tuple[str, Any]] = {
    reasons.QUERY_STRING: (
        "credential_in_query",
        _("Access tokens are not accepted in the URL. Send them in the Authorization header."),
    ),
    reasons.FORM_BODY: (
        "credential_in_body",
        _("Access tokens are not accepted in the request body. "
          "Send them in the Authorization header."),
    ),
    reasons.MALFORMED: (
        "malformed_token",
        _("Malformed access token. Send 'Authorization: Bearer <token>'."),
    ),
}


@dataclass(frozen=True, slots=True)
class OAuth2Principal(Principal):
    """:class:`~django_apiauth.core.principal.Principal` for a DOT access token.

    Also quacks like DOT's ``AccessToken`` for DOT's permission classes:
    ``scope`` and ``is_valid(scopes)`` / ``allow_scopes`` / ``is_expired``.
    """

    @property
    def scope(self) -> str:
        return " ".join(sorted(self.scopes))

    def allow_scopes(self, scopes: Any) -> bool:
        return not scopes or self.scopes.issuperset(scopes)

    def is_expired(self) -> bool:
        return bool(self.credential.is_expired())

    def is_valid(self, scopes: Any = None) -> bool:
        return not self.is_expired() and self.allow_scopes(scopes)


@dataclass(frozen=True, slots=True)
class _Token:
    """What :meth:`ApiAuthentication.refuse` needs to attribute a refusal."""

    owner: Any
    public_id: str


class OAuth2Authentication(ApiAuthentication, DOTOAuth2Authentication):
    """``Authorization: Bearer <django-oauth-toolkit access token>``.

    A subclass of DOT's class too, so code that asks
    ``isinstance(request.successful_authenticator, OAuth2Authentication)``
    (DOT's ``IsAuthenticatedOrTokenHasScope``) treats it as DOT's and checks
    the token's scopes.

    Customise by subclassing: :attr:`max_token_length`, :meth:`get_user`.
    """

    scheme: ClassVar[str] = "oauth2"
    www_authenticate_scheme: ClassVar[str] = "Bearer"
    keyword: ClassVar[str] = "bearer"
    #: Longest token accepted, checked before hashing (DOT's own tokens are 30
    #: characters; JWT access tokens a few hundred).
    max_token_length: ClassVar[int] = 8192
    #: Leave a JWS-shaped token unknown to DOT to a JWTAuthentication listed later.
    defer_unknown_jwts: ClassVar[bool] = True

    # -- challenges (RFC 6750 §3) ------------------------------------------------

    def challenge(self, request: HttpRequest) -> str:
        challenge = super().challenge(request)
        error = getattr(request, "_apiauth_bearer_error", None)
        if error:
            challenge += f', error="{error}"'
        return challenge

    def insufficient_scope_challenge(self, request: HttpRequest, required: frozenset[str]) -> str:
        """The 403 challenge (RFC 6750 §3.1): ``error="insufficient_scope"`` and ``scope``."""
        scope = " ".join(sorted(required))
        return f'{ApiAuthentication.challenge(self, request)}, error="insufficient_scope", scope="{scope}"'

    def refuse(self, request: HttpRequest, refused: Refused, *, now: Any = None) -> None:
        error = "invalid_request" if refused.reason in _REQUEST_ERRORS else "invalid_token"
        try:
            request._apiauth_bearer_error = error  # type: ignore[attr-defined]
        except AttributeError:  # pragma: no cover - exotic request objects
            pass
        try:
            super().refuse(request, refused, now=now)  # audits, then raises
        except AuthenticationFailed:
            code, message = _CLIENT_ERRORS.get(refused.reason, _INVALID_TOKEN)
            raise AuthenticationFailed(message, code) from None

    # -- the token -----------------------------------------------------------------

    def get_token(self, request: Any) -> str | None:
        """The bearer token from ``Authorization``, or ``None`` when none is sent.

        Raises :class:`Refused` for a token in the query string or a form body
        (whether or not a header is sent too) and for a malformed header token.
        """
        django_request = getattr(request, "_request", request)
        if PARAMETER in django_request.GET:
            raise Refused(reasons.QUERY_STRING, detail={"parameter": PARAMETER})
        if django_request.method == "POST" and django_request.content_type in _FORM_MEDIA_TYPES:
            # Django parses the form once; DOT's own validation reads it too.
            if PARAMETER in django_request.POST:
                raise Refused(reasons.FORM_BODY, detail={"parameter": PARAMETER})
        word, _sep, rest = django_request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if word.lower() != self.keyword:
            return None
        token = rest.strip()
        if len(token) > self.max_token_length:
            raise Refused(reasons.MALFORMED, detail={"problem": "too long", "length": len(token)})
        if not _B64TOKEN.fullmatch(token):
            raise Refused(reasons.MALFORMED, detail={"problem": "not a b64token"})
        return token

    def authenticate(self, request: Any) -> tuple[Any, Principal] | None:
        now = timezone.now()
        try:
            token = self.get_token(request)
        except Refused as refused:
            self.refuse(request, refused, now=now)
        except (exceptions.APIException, SuspiciousOperation):
            raise  # e.g. a form body over DATA_UPLOAD_MAX_NUMBER_FIELDS: 400
        except Exception:
            self.internal_error(request, now=now)
        if token is None:
            return None
        credential_id = ""
        try:
            access_token, oauth2_error = self.validate(request, token)
            if access_token is None:
                self.explain_refusal(request, token, oauth2_error)
                return None  # deferred to a JWTAuthentication later in the list
            credential_id = str(access_token.pk)
            user = self.get_user(access_token)
            if user is None:
                raise Refused(reasons.UNKNOWN_CREDENTIAL, credential_id=credential_id,
                              detail={"problem": "no user: the application has no service account"})
            if not user.is_active:
                raise Refused(reasons.INACTIVE_OWNER, credential=_Token(user, credential_id))
            principal = OAuth2Principal(
                scheme=self.scheme, credential=access_token, credential_id=credential_id,
                scopes=frozenset(access_token.scope.split()),
                claims=self.get_claims(access_token),
            )
        except Refused as refused:
            self.refuse(request, refused, now=now)
        except (DatabaseError, DependencyUnavailable):
            self.unavailable(request, credential_id, now)
        except (exceptions.APIException, SuspiciousOperation):
            raise
        except Exception:
            self.internal_error(request, credential_id, now=now)
        self.succeed(request, user, principal, now)
        return user, principal

    # -- verification (DOT's) -------------------------------------------------------

    def validate(self, request: Any, token: str) -> tuple[Any, dict[str, Any]]:
        """DOT's verdict: ``(AccessToken, {})`` or ``(None, oauth2_error)``.

        What ``OAuthLibCore.verify_request`` does, with two differences. The
        token type is always ``Bearer``: with OIDC on, oauthlib routes any
        ``ey…``-shaped token to DOT's *ID-token* check (an OpenID Connect ID
        token would then pass as an access token, and a DOT access token
        minted as a JWT would not be found); here every token is looked up
        among DOT's access tokens. And the URI given to oauthlib has no query
        (``get_token`` refused any ``access_token`` there; DOT's RFC 8707
        resource check compares scheme, host and path only).
        """
        django_request = getattr(request, "_request", request)
        core = get_oauthlib_core()
        uri = django_request.build_absolute_uri(escape_uri_path(django_request.path))
        oauthlib_request = OAuthlibRequest(
            uri, django_request.method, urlencode(core.extract_body(django_request)),
            core.extract_headers(django_request),
        )
        oauthlib_request.token_type = "Bearer"  # noqa: S105 (a token type name)
        oauthlib_request.scopes = []
        server = core.server
        handler = getattr(server, "tokens", {}).get("Bearer") or server.default_token_type_handler
        if handler.validate_request(oauthlib_request):
            return oauthlib_request.access_token, {}
        return None, dict(getattr(oauthlib_request, "oauth2_error", None) or {})

    def explain_refusal(self, request: Any, token: str, oauth2_error: dict[str, Any]) -> None:
        """DOT refused the token: find out why, for the audit row, and refuse.

        Returns (``None``) only to defer a JWS-shaped token DOT does not know
        to a later JWTAuthentication.
        """
        checksum = hashlib.sha256(token.encode()).hexdigest()
        found = (get_access_token_model().objects.select_related("user", "application")
                 .filter(token_checksum=checksum).first())
        detail = {"description": str(oauth2_error.get("error_description", ""))[:200]} \
            if oauth2_error.get("error_description") else {}
        if found is None:
            if self.defer_unknown_jwts and _JWS_SHAPE.fullmatch(token) and self._jwt_after(request):
                return
            raise Refused(reasons.UNKNOWN_CREDENTIAL, detail=detail)
        attributed = _Token(self.get_user(found), str(found.pk))
        if found.is_expired():
            raise Refused(reasons.EXPIRED, credential=attributed,
                          detail={"expired_at": found.expires.isoformat()} if found.expires else {})
        reason = reasons.BAD_AUDIENCE if "resource" in detail.get("description", "") \
            else reasons.TOKEN_REFUSED
        raise Refused(reason, credential=attributed, detail=detail)

    def _jwt_after(self, request: Any) -> bool:
        from .jwt import JWTAuthentication

        authenticators = list(getattr(request, "authenticators", None) or ())
        later = authenticators[authenticators.index(self) + 1:] if self in authenticators else []
        return any(isinstance(a, JWTAuthentication) for a in later)

    def get_user(self, access_token: Any) -> Any:
        """The token's user; for a client-credentials token, its application's ``user``."""
        if access_token.user_id is not None:
            return access_token.user
        application = access_token.application
        return application.user if application is not None else None

    def get_claims(self, access_token: Any) -> dict[str, Any]:
        """Facts about the token for ``Principal.claims`` (never the token itself)."""
        application = access_token.application
        return {
            "client_id": application.client_id if application is not None else None,
            "expires": access_token.expires.isoformat() if access_token.expires else None,
            "end_user": access_token.user_id is not None,
        }
