"""The one DRF authentication base class every scheme subclasses.

A scheme implements two small hooks and nothing else:

* :meth:`CredentialAuthentication.extract`: parse the wire format. Return
  ``None`` when the request does not use the scheme (DRF rule), raise
  :class:`Refused` when it does but the input is malformed, or return a
  :class:`Presented` with the lookup value and the proof.
* :meth:`CredentialAuthentication.verify`: check the proof against the
  stored credential, doing the same work when the credential is ``None``.

The base class does the rest, in this order: lookup → verify → usability
rule → last-used → audit → ``(user, Principal)``. Every refusal is audited
with a precise reason code and answered with one generic message; a database
or audit failure is answered with 503, never a 500 and never an accept.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

from django.core.exceptions import SuspiciousOperation
from django.db import DatabaseError
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions, status
from rest_framework.authentication import BaseAuthentication

from .. import signals
from ..app_settings import app_settings
from . import audit, reasons
from .lookup import lookup, touch_last_used
from .models import AbstractCredential, unusable_reason
from .net import client_ip
from .principal import Principal


class CodedError:
    """Mixin: the response body carries the stable ``code`` next to ``detail``."""

    default_detail: Any
    default_code: str

    def __init__(self, detail: Any = None, code: str | None = None) -> None:
        code = code or self.default_code
        body = detail if isinstance(detail, dict) else {
            "detail": detail or self.default_detail, "code": code,
        }
        super().__init__(body, code)  # type: ignore[call-arg]


class ServiceUnavailable(CodedError, exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = _("Authentication is temporarily unavailable. Try again later.")
    default_code = "service_unavailable"


class AuthenticationFailed(CodedError, exceptions.AuthenticationFailed):
    default_code = "invalid_credentials"


class NotAuthenticated(CodedError, exceptions.NotAuthenticated):
    default_code = "not_authenticated"


logger = logging.getLogger("django_apiauth")


class DependencyUnavailable(Exception):
    """A service needed to decide (cache, replay store, JWKS) is down: answer 503."""


class Refused(Exception):
    """Internal: an attempt that must be refused, with its audit reason."""

    def __init__(self, reason: str, *, credential: Any = None, credential_id: str = "",
                 detail: dict[str, Any] | None = None, client_message: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        #: Safe, specific advice for the client (format problems only: never
        #: whether a credential exists, is revoked or has a wrong secret).
        self.client_message = client_message
        self.credential = credential
        self.credential_id = credential_id
        self.detail = detail or {}


@dataclass(slots=True)
class Presented:
    """What a request presented: the public lookup value and the proof."""

    lookup_value: str
    proof: Any = None
    claims: dict[str, Any] = field(default_factory=dict)


# Client-facing messages. Unknown, wrong, expired, revoked, inactive and
# IP-refused credentials all get the same one (STYLE habit 2); the precise
# reason is in the audit row.
GENERIC = ("invalid_credentials", _("Invalid credentials."))
CLIENT_ERRORS: dict[str, tuple[str, Any]] = {
    reasons.MALFORMED: ("malformed_credentials", _("Malformed credentials.")),
    reasons.AMBIGUOUS: (
        "ambiguous_credentials",
        _("More than one credential was sent. Send exactly one."),
    ),
    reasons.QUERY_STRING: (
        "credential_in_query",
        _("Credentials are not accepted in the URL. Send them in a header."),
    ),
    reasons.CLOCK_SKEW: (
        "clock_skew",
        _("The signature's created time is too far from the server's clock."),
    ),
    reasons.SIGNATURE_EXPIRED: ("signature_expired", _("The signature has expired.")),
    reasons.REPLAYED: ("replayed", _("This request was already received.")),
    reasons.MISSING_COMPONENTS: (
        "missing_components", _("The signature does not cover the required components."),
    ),
    reasons.BAD_DIGEST: ("bad_digest", _("Content-Digest does not match the request body.")),
}


class ApiAuthentication(BaseAuthentication):
    """Shared behaviour: audit, refusal, principal. Stateless schemes (JWT)
    subclass this directly; stored-credential schemes use
    :class:`CredentialAuthentication`."""

    scheme: ClassVar[str] = ""
    www_authenticate_scheme: ClassVar[str] = ""

    def challenge(self, request: HttpRequest) -> str:
        """This scheme's ``WWW-Authenticate`` challenge (RFC 9110 §11.6.1)."""
        return f'{self.www_authenticate_scheme} realm="{app_settings.WWW_AUTHENTICATE_REALM}"'

    def authenticate_header(self, request: Any) -> str:
        """DRF asks only the view's *first* authentication class for the header.

        So answer for all of them: the challenge of the scheme that refused the
        request when one did, else every django-apiauth scheme the view accepts
        (RFC 9110 allows several challenges in one header).
        """
        refused_by = getattr(request, "_apiauth_challenge", None)
        if refused_by:
            return refused_by  # type: ignore[no-any-return]
        challenges = [
            a.challenge(request) for a in getattr(request, "authenticators", None) or ()
            if isinstance(a, ApiAuthentication)
        ]
        return ", ".join(dict.fromkeys(challenges)) or self.challenge(request)

    def refuse(self, request: HttpRequest, refused: Refused, *, now: Any = None) -> None:
        """Audit a refusal and raise the client-facing error."""
        try:
            request._apiauth_challenge = self.challenge(request)  # type: ignore[attr-defined]
        except AttributeError:  # pragma: no cover - exotic request objects
            pass
        credential = refused.credential
        user = getattr(credential, "owner", None) if credential is not None else None
        credential_id = credential.public_id if credential is not None else refused.credential_id
        try:
            audit.record(
                event="authenticate", scheme=self.scheme, outcome=audit.FAILURE,
                reason=refused.reason, request=request, user=user,
                credential_id=credential_id, detail=refused.detail, at=now,
            )
        except audit.AuditUnavailable:
            raise ServiceUnavailable() from None
        signals.authentication_failed.send(
            sender=type(self), request=request, scheme=self.scheme, reason=refused.reason,
            credential_id=credential_id,
        )
        code, message = CLIENT_ERRORS.get(refused.reason, GENERIC)
        if refused.client_message and code != GENERIC[0]:
            message = refused.client_message
        raise AuthenticationFailed(message, code)

    def succeed(self, request: HttpRequest, user: Any, principal: Principal, now: Any) -> None:
        if app_settings.AUDIT_SUCCESS:
            try:
                audit.record(
                    event="authenticate", scheme=self.scheme, outcome=audit.SUCCESS,
                    reason=reasons.OK, request=request, user=user,
                    credential_id=principal.credential_id, at=now,
                )
            except audit.AuditUnavailable:
                raise ServiceUnavailable() from None
        signals.authentication_succeeded.send(
            sender=type(self), request=request, user=user, principal=principal
        )


    def internal_error(self, request: HttpRequest, credential_id: str = "",
                       credential: Any = None, now: Any = None) -> None:
        """A bug or an unforeseen input in verification: refuse (never a 500, never an accept).

        The traceback goes to the ``django_apiauth`` logger (no local variables,
        so no secret); the client gets the generic answer.
        """
        logger.exception("Unexpected error while verifying a %s credential", self.scheme)
        self.refuse(request, Refused(reasons.INTERNAL_ERROR, credential=credential,
                                     credential_id=credential_id), now=now)

    def unavailable(self, request: HttpRequest, credential_id: str = "", now: Any = None) -> None:
        """A store needed to decide is down: 503 (fail closed), audited when possible."""
        try:
            audit.record(
                event="authenticate", scheme=self.scheme, outcome=audit.FAILURE,
                reason=reasons.SERVICE_UNAVAILABLE, request=request,
                credential_id=credential_id, at=now,
            )
        except audit.AuditUnavailable:
            pass  # the database may be what is down
        raise ServiceUnavailable()


class CredentialAuthentication(ApiAuthentication):
    """Base class for schemes backed by a stored credential model."""

    model: ClassVar[type[AbstractCredential]]
    #: Reason recorded when :meth:`verify` returns False.
    bad_proof_reason: ClassVar[str] = reasons.BAD_SECRET

    def extract(self, request: HttpRequest) -> Presented | None:  # pragma: no cover
        raise NotImplementedError

    def verify(self, request: HttpRequest, presented: Presented,
               credential: AbstractCredential | None) -> bool:  # pragma: no cover
        """Check the proof. Must do the same work when ``credential`` is None.

        Return False for a wrong proof (audited as ``bad_proof_reason``), or raise
        :class:`Refused` with a more precise reason, or
        :class:`DependencyUnavailable` when a store needed to decide is down.
        """
        raise NotImplementedError

    def get_scopes(self, credential: AbstractCredential, presented: Presented) -> frozenset[str]:
        return credential.scope_set

    def resolve_unknown(self, request: HttpRequest, presented: Presented) -> AbstractCredential | None:
        """Hook: a credential for a lookup value that is not stored (default: none).

        A scheme may vouch for it another way (a certificate chaining to a
        trusted CA) and register it; it is then verified and checked like any
        stored credential.
        """
        return None

    def authenticate(self, request: Any) -> tuple[Any, Principal] | None:
        try:
            presented = self.extract(request)
        except Refused as refused:
            self.refuse(request, refused)
        except (exceptions.APIException, SuspiciousOperation):
            raise  # already an HTTP answer (e.g. a body over DATA_UPLOAD_MAX_MEMORY_SIZE: 400)
        except Exception:
            self.internal_error(request)
        if presented is None:
            return None
        now = timezone.now()
        credential: AbstractCredential | None = None
        try:
            credential = lookup(self.model, presented.lookup_value)
            if credential is None:
                credential = self.resolve_unknown(request, presented)
            try:
                proof_ok = self.verify(request, presented, credential)
            except Refused as refused:
                if credential is None:
                    raise Refused(
                        reasons.UNKNOWN_CREDENTIAL, credential_id=presented.lookup_value
                    ) from None
                refused.credential = credential
                raise
            if credential is None:
                raise Refused(reasons.UNKNOWN_CREDENTIAL, credential_id=presented.lookup_value)
            if not proof_ok:
                raise Refused(self.bad_proof_reason, credential=credential)
            owner = credential.owner
            reason = unusable_reason(credential, now, client_ip(request), owner.is_active)
            if reason is not None:
                raise Refused(reason, credential=credential)
            touch_last_used(credential, now, client_ip(request))
        except Refused as refused:
            self.refuse(request, refused, now=now)
        except (DatabaseError, DependencyUnavailable):
            self.unavailable(request, presented.lookup_value, now)
        except (exceptions.APIException, SuspiciousOperation):
            raise
        except Exception:
            self.internal_error(request, presented.lookup_value, credential, now)
        principal = Principal(
            scheme=self.scheme,
            credential=credential,
            credential_id=credential.public_id,  # type: ignore[union-attr]
            scopes=self.get_scopes(credential, presented),  # type: ignore[arg-type]
            claims=presented.claims,
        )
        self.succeed(request, owner, principal, now)
        return owner, principal
