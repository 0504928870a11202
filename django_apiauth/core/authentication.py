"""The one DRF authentication base class every scheme subclasses.

A scheme implements two small hooks and nothing else:

* :meth:`CredentialAuthentication.extract`: parse the wire format. Return
  ``None`` when the request does not use the scheme (DRF rule), raise
  :class:`Refused` when it does but the input is malformed, or return a
  :class:`Presented` with the lookup value and the proof.
* :meth:`CredentialAuthentication.verify`: check the proof against the
  stored credential, doing the same work when the credential is ``None``.

The base class does the rest, in this order: lockout check → lookup →
verify → usability rule → last-used → rate limit → audit → ``(user,
Principal)``. Every refusal is audited with a precise reason code and
answered with one generic message; a database, cache or audit failure is
answered with 503, never a 500 and never an accept.

Abuse protection (:mod:`.lockout`, :mod:`.ratelimit`, :mod:`.alerts`) lives in
:meth:`ApiAuthentication.refuse` and :meth:`ApiAuthentication.succeed`, the two
exits every scheme takes, so a scheme that overrides ``authenticate()``
(JWT) is covered without code of its own; :class:`CredentialAuthentication`
also checks the lockout as soon as the presented credential id is known, so
a locked-out source costs no database lookup and no proof verification.
"""

from __future__ import annotations

import logging
import time
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
from . import alerts, audit, lockout, ratelimit, reasons
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


class TooManyRequests(exceptions.Throttled):
    """429 for a rate limit or a lockout.

    A subclass of DRF's ``Throttled`` so that DRF's stock exception handler
    sets ``Retry-After`` from :attr:`wait`; the ``RateLimit-*`` headers reach
    the response through the view (see :func:`set_response_headers`).
    """

    default_detail = _("Too many requests. Try again later.")
    default_code = "rate_limited"

    def __init__(self, detail: Any = None, code: str | None = None, wait: int | None = None) -> None:
        code = code or self.default_code
        # APIException's own __init__: Throttled's would append its English
        # "Expected available in N seconds" to a dict body.
        exceptions.APIException.__init__(
            self, {"detail": detail or self.default_detail, "code": code}, code,
        )
        self.wait = wait


def set_response_headers(request: Any, headers: dict[str, str]) -> None:
    """Put ``headers`` on the response of the DRF view that is authenticating ``request``.

    Authentication classes can only return or raise, and a project's own
    ``EXCEPTION_HANDLER`` may drop every header DRF's stock one sets. But
    every DRF view copies ``view.headers`` onto its response in
    ``finalize_response()``, after the exception handler, for success and
    error responses alike; the view is in ``request.parser_context``. Outside
    a DRF view (a hand-made ``Request``) the headers are kept on the request
    as ``request.apiauth_response_headers`` for the caller.
    """
    context = getattr(request, "parser_context", None) or {}
    view = context.get("view") if isinstance(context, dict) else None
    target = getattr(view, "headers", None)
    if isinstance(target, dict):
        target.update(headers)
    try:
        stored = request.__dict__.setdefault("apiauth_response_headers", {})
        stored.update(headers)
    except AttributeError:  # pragma: no cover - exotic request objects
        pass


logger = logging.getLogger("django_apiauth")


class DependencyUnavailable(Exception):
    """A service needed to decide (cache, replay store, JWKS) is down: answer 503."""


class Refused(Exception):
    """Internal: an attempt that must be refused, with its audit reason."""

    def __init__(self, reason: str, *, credential: Any = None, credential_id: str = "",
                 detail: dict[str, Any] | None = None, client_message: str | None = None,
                 user: Any = None, retry_after: int | None = None) -> None:
        super().__init__(reason)
        #: The user concerned when ``credential`` has no ``owner`` (stateless tokens).
        self.user = user
        #: Seconds until a rate limit or lockout ends (``Retry-After``).
        self.retry_after = retry_after
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
        user = getattr(credential, "owner", None) if credential is not None else refused.user
        credential_id = credential.public_id if credential is not None else refused.credential_id
        ip = client_ip(request)
        epoch = now.timestamp() if now is not None else time.time()
        counted = refused.reason not in lockout.NOT_COUNTED
        if counted:
            # A locked-out source gets 429 whatever it sent: answering 401 for a
            # wrong secret but 429 for a right one would be a guessing oracle.
            try:
                guard = self.lockout_guard(request, credential_id, epoch)
            except lockout.StoreUnavailable:
                self.store_unavailable(request, credential_id, now, refused_for=refused.reason)
            if guard.locked_until is not None:
                refused = Refused(
                    reasons.LOCKED_OUT, credential=credential, credential_id=credential_id,
                    user=user, retry_after=guard.retry_after(epoch),
                    detail={"scope": guard.scope, "refused_for": refused.reason},
                )
                counted = False
        try:
            audit.record(
                event="authenticate", scheme=self.scheme, outcome=audit.FAILURE,
                reason=refused.reason, request=request, user=user,
                credential_id=credential_id, detail=refused.detail, at=now,
            )
        except audit.AuditUnavailable:
            raise ServiceUnavailable() from None
        if counted:
            try:
                lockout.register_failure(scheme=self.scheme, credential_id=credential_id, ip=ip,
                                         now=epoch, request=request, sender=type(self))
            except lockout.StoreUnavailable:
                self.store_unavailable(request, credential_id, now, refused_for=refused.reason)
            self.alert_misuse(request, refused, credential, credential_id, ip)
        signals.authentication_failed.send(
            sender=type(self), request=request, scheme=self.scheme, reason=refused.reason,
            credential_id=credential_id,
        )
        if refused.reason in (reasons.RATE_LIMITED, reasons.LOCKED_OUT):
            wait = refused.retry_after or 1
            set_response_headers(request, {"Retry-After": str(wait)})
            if refused.reason == reasons.LOCKED_OUT:
                raise TooManyRequests(_("Too many failed attempts. Try again later."),
                                      "locked_out", wait=wait)
            raise TooManyRequests(None, "rate_limited", wait=wait)
        code, message = CLIENT_ERRORS.get(refused.reason, GENERIC)
        if refused.client_message and code != GENERIC[0]:
            message = refused.client_message
        raise AuthenticationFailed(message, code)

    def succeed(self, request: HttpRequest, user: Any, principal: Principal, now: Any) -> None:
        epoch = now.timestamp() if now is not None else time.time()
        try:
            self.guard_success(request, user, principal, epoch)
        except Refused as refused:
            self.refuse(request, refused, now=now)
        except lockout.StoreUnavailable:
            self.store_unavailable(request, principal.credential_id, now)
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

    # -- abuse protection (docs/rate-limits.md) ---------------------------------

    def lockout_guard(self, request: Any, credential_id: str, now: float, *,
                      want_seen: bool = False) -> lockout.Guard:
        """This source's lockout state: one cache ``get_many``, once per request
        and credential id (memoised on the request)."""
        want_seen = want_seen and app_settings.ALERT_NEW_IP
        memo: dict[tuple[str, str], lockout.Guard] | None = getattr(request, "_apiauth_guard", None)
        key = (self.scheme, credential_id)
        if memo is not None and key in memo:
            guard = memo[key]
            if not want_seen or guard.seen is not None:
                return guard
        guard = lockout.check(self.scheme, credential_id, client_ip(request), now,
                              want_seen=want_seen)
        try:
            if memo is None:
                memo = request._apiauth_guard = {}
            memo[key] = guard
        except AttributeError:  # pragma: no cover - exotic request objects
            pass
        return guard

    def rate_limit_for(self, principal: Principal) -> tuple[str, ratelimit.Rate | None]:
        """The counter key and the rate of an authenticated request.

        The credential's own ``rate_limit`` when set (``none``: unlimited), else
        ``APIAUTH_RATE_LIMITS[scheme]``. Stateless tokens (no stored
        credential) are counted per OAuth ``client_id`` when they carry one,
        else per credential id.
        """
        credential = principal.credential
        own = getattr(credential, "rate_limit", "") if credential is not None else ""
        spec = own or app_settings.RATE_LIMITS.get(self.scheme, "")
        try:
            rate = ratelimit.parse_rate(spec)
        except ValueError:
            # A bad setting (check apiauth.E009) or a row saved past validation:
            # the strictest reading is no access, which would be an outage; log
            # loudly and apply no limit.
            logger.error("Invalid rate limit %r for %s %s", spec, self.scheme,
                         principal.credential_id)
            rate = None
        identity = principal.credential_id
        if credential is None and isinstance(principal.claims.get("client_id"), str):
            identity = "client:" + principal.claims["client_id"]
        return lockout.rate_key(self.scheme, identity), rate

    def guard_success(self, request: Any, user: Any, principal: Principal, now: float) -> None:
        """Lockout, new-address alert and rate limit of an authenticated request.

        Costs one ``get_many`` (usually already done by
        :meth:`CredentialAuthentication.authenticate`), plus one counter
        increment when a rate limit applies.
        """
        credential = principal.credential
        stored = credential is not None and hasattr(credential, "last_used_at")
        guard = self.lockout_guard(request, principal.credential_id, now, want_seen=stored)
        if guard.locked_until is not None:
            raise Refused(reasons.LOCKED_OUT, credential=credential,
                          credential_id=principal.credential_id, user=user,
                          retry_after=guard.retry_after(now), detail={"scope": guard.scope})
        if guard.seen is False:
            ip = client_ip(request)
            lockout.remember_ip(self.scheme, principal.credential_id, ip)
            if guard.previously_used:  # the very first use is not news
                alerts.emit("new_ip", request=request, scheme=self.scheme,
                            credential_id=principal.credential_id, ip=ip, sender=type(self),
                            detail={"previous_ip": getattr(credential, "last_used_ip", None)})
        key, rate = self.rate_limit_for(principal)
        if rate is None:
            return
        try:
            counted = ratelimit.hit(lockout.cache(), key, rate.limit, rate.window, now)
        except Exception as exc:  # any backend error: fail closed
            raise lockout.StoreUnavailable(type(exc).__name__) from None
        set_response_headers(request, {
            "RateLimit-Limit": str(rate.limit),
            "RateLimit-Remaining": str(counted.remaining),
            "RateLimit-Reset": str(counted.reset),
            "RateLimit-Policy": rate.policy(),
        })
        if counted.exceeded:
            raise Refused(reasons.RATE_LIMITED, credential=credential,
                          credential_id=principal.credential_id, user=user,
                          retry_after=counted.reset,
                          detail={"limit": rate.limit, "window_seconds": rate.window})

    def alert_misuse(self, request: Any, refused: Refused, credential: Any, credential_id: str,
                     ip: str | None) -> None:
        """``suspicious_activity`` for a revoked or rotated-out credential in use."""
        if refused.reason == reasons.REVOKED:
            kind = "revoked_credential_used"
        elif refused.reason == reasons.EXPIRED and isinstance(credential, AbstractCredential):
            try:
                rotated = type(credential)._default_manager.filter(rotated_from=credential).exists()
            except DatabaseError:
                return
            if not rotated:
                return
            kind = "rotated_credential_used"
        else:
            return
        alerts.emit(kind, request=request, scheme=self.scheme, credential_id=credential_id,
                    ip=ip, sender=type(self), detail={"reason": refused.reason})

    def store_unavailable(self, request: Any, credential_id: str, now: Any,
                          refused_for: str = "") -> None:
        """The rate-limit / lockout cache is down: 503 (fail closed), audited."""
        logger.error("The rate-limit and lockout cache (%s) is unavailable",
                     app_settings.RATE_LIMIT_CACHE)
        try:
            audit.record(
                event="authenticate", scheme=self.scheme, outcome=audit.FAILURE,
                reason=reasons.SERVICE_UNAVAILABLE, request=request,
                credential_id=credential_id, at=now,
                detail={"dependency": "rate_limit_cache",
                        **({"refused_for": refused_for} if refused_for else {})},
            )
        except audit.AuditUnavailable:
            pass
        raise ServiceUnavailable()

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
        try:
            # Before any database work: a locked-out source costs one cache read.
            guard = self.lockout_guard(request, presented.lookup_value, now.timestamp(),
                                       want_seen=True)
        except lockout.StoreUnavailable:
            self.store_unavailable(request, presented.lookup_value, now)
        if guard.locked_until is not None:
            self.refuse(request, Refused(
                reasons.LOCKED_OUT, credential_id=presented.lookup_value,
                retry_after=guard.retry_after(now.timestamp()), detail={"scope": guard.scope},
            ), now=now)
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
            guard.previously_used = credential.last_used_at is not None
            if credential.public_id != presented.lookup_value:  # same credential, other spelling
                request.__dict__.setdefault("_apiauth_guard", {})[
                    (self.scheme, credential.public_id)] = guard
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
