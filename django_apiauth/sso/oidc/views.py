"""OpenID Connect sign-in views: authorization code flow with PKCE (Core 1.0 §3.1).

* ``login``: discovers the provider, creates a fresh ``state``, ``nonce`` and
  PKCE ``code_verifier`` (RFC 7636, ``S256`` only), keeps them in this
  browser's session under the provider's slug, and redirects to the OP.
* ``callback``: the OP's redirect back. The ``state`` must be one this
  browser's session holds, for this provider, not older than
  ``APIAUTH_OIDC_STATE_MAX_AGE``; it is removed at once and also marked used
  in the replay store, so it works once even with cookie-based sessions. The
  RFC 9207 ``iss`` parameter is checked when present (required when the OP
  advertises it); an OP ``error`` is refused and shown escaped. The code is
  redeemed with the ``code_verifier``; the ID token is validated
  (:mod:`.idtoken`); UserInfo's ``sub`` must equal the ID token's. The user
  comes from :func:`django_apiauth.sso.identity.resolve_user` and the sign-in
  ends in :func:`~django_apiauth.sso.identity.complete_login`.
* ``logout`` (POST): signs out here and, when the user signed in through this
  provider and it publishes an ``end_session_endpoint``, continues to it
  (OpenID Connect RP-Initiated Logout 1.0 §2).

Every refusal goes through :func:`~django_apiauth.sso.identity.refuse`:
audited with a stable reason, no session created; 400 for a broken flow
(state), 403 for failed validation, 502 when the OP cannot be reached.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django.contrib.auth import REDIRECT_FIELD_NAME
from django.contrib.auth import logout as auth_logout
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST, require_safe

from ...app_settings import app_settings
from ...core import audit, reasons, replay
from ...core.authentication import DependencyUnavailable
from ...core.encryption import DecryptionError
from .. import identity
from ..identity import SsoRefused
from . import client
from .idtoken import validate_id_token
from .models import OidcProvider

logger = logging.getLogger("django_apiauth.sso")

SCHEME = OidcProvider.scheme
#: Session key of the sign-ins this browser has started and not finished.
PENDING_KEY = "_apiauth_oidc_pending"
#: Session key naming the provider the current session signed in through.
LOGIN_KEY = "_apiauth_oidc_login"
#: Sign-ins a browser may have in flight at once (several tabs); the oldest is dropped.
MAX_PENDING = 5
MAX_PARAMETER = 2048
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _digest(state: str) -> str:
    # The session is keyed by a hash of the state: the lookup's timing says
    # nothing about the stored values.
    return hashlib.sha256(state.encode("utf-8", "replace")).hexdigest()


def _pkce_challenge(verifier: str) -> str:
    """RFC 7636 §4.2 ``S256``: base64url(SHA-256(ASCII(code_verifier))), unpadded."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).decode().rstrip("=")


def _with_query(url: str, params: dict[str, str]) -> str:
    """``url`` with ``params`` added to whatever query it already has (Core 1.0 §3.1.2.1)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    return urlunsplit(parts._replace(query=urlencode([*query, *params.items()])))


def _clean(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else ""
    return _CONTROL.sub("", text)[:limit]


def redirect_uri(request: HttpRequest, provider: OidcProvider) -> str:
    """This site's callback URL for ``provider``: register it at the OP exactly."""
    return request.build_absolute_uri(reverse("django_apiauth:oidc:callback", args=[provider.slug]))


def _refuse(request: HttpRequest, refused: SsoRefused, provider: OidcProvider | None) -> HttpResponse:
    return identity.refuse(request, refused, provider=provider, scheme=SCHEME)


def _metadata(provider: OidcProvider) -> dict[str, Any]:
    try:
        return client.provider_metadata(provider)
    except client.ProviderUnreachable as exc:
        raise SsoRefused(reasons.PROVIDER_UNREACHABLE, status=502,
                         detail={"step": exc.step, "problem": exc.problem}) from None
    except client.IssuerMismatch as exc:
        raise SsoRefused(reasons.UNTRUSTED_ISSUER, status=403,
                         detail={"step": "discovery", "discovered_issuer": exc.found}) from None


def _guarded(request: HttpRequest, provider: OidcProvider, step: Callable[[], HttpResponse]) -> HttpResponse:
    """Run ``step``; every failure becomes an audited refusal, never a 500."""
    try:
        return step()
    except SsoRefused as refused:
        return _refuse(request, refused, provider)
    except (DatabaseError, DependencyUnavailable) as exc:
        logger.warning("OIDC sign-in through %s: store unavailable (%s)", provider.slug, type(exc).__name__)
        return _refuse(request, SsoRefused(reasons.SERVICE_UNAVAILABLE, status=503), provider)
    except DecryptionError:
        logger.error("The client secret of OpenID Provider %r cannot be decrypted: was its key "
                     "removed from APIAUTH_ENCRYPTION_KEYS before reencrypt_secrets ran?", provider.slug)
        return _refuse(request, SsoRefused(reasons.SERVICE_UNAVAILABLE, status=503,
                                           detail={"problem": "client secret undecryptable"}), provider)
    except Exception:
        logger.exception("OIDC sign-in through %s failed unexpectedly", provider.slug)
        return _refuse(request, SsoRefused(reasons.INTERNAL_ERROR, status=503), provider)


# -- login -------------------------------------------------------------------------


@require_safe
@never_cache
def login(request: HttpRequest, slug: str) -> HttpResponse:
    """Start a sign-in: redirect the browser to the OP's authorization endpoint."""
    provider = get_object_or_404(OidcProvider, slug=slug)
    return _guarded(request, provider, lambda: _login(request, provider))


def _login(request: HttpRequest, provider: OidcProvider) -> HttpResponse:
    if not provider.active:
        raise SsoRefused(reasons.PROVIDER_INACTIVE, status=403)
    metadata = _metadata(provider)
    state = secrets.token_urlsafe(32)
    nonce = secrets.token_urlsafe(32)
    verifier = secrets.token_urlsafe(64)  # 86 characters, RFC 7636 §4.1: 43 to 128
    next_candidate = request.GET.get(REDIRECT_FIELD_NAME)
    pending = dict(request.session.get(PENDING_KEY) or {})
    pending[_digest(state)] = {
        "provider": provider.slug, "uid": str(provider.uid), "nonce": nonce, "verifier": verifier,
        "next": identity.safe_next(request, next_candidate) if next_candidate else None,
        "at": int(time.time()),
    }
    while len(pending) > MAX_PENDING:
        oldest = min(pending, key=lambda k: pending[k].get("at", 0))
        del pending[oldest]
    request.session[PENDING_KEY] = pending
    url = _with_query(metadata["authorization_endpoint"], {
        "response_type": "code",
        "client_id": provider.client_id,
        "redirect_uri": redirect_uri(request, provider),
        "scope": " ".join(provider.scope_list),
        "state": state,
        "nonce": nonce,
        "code_challenge": _pkce_challenge(verifier),
        "code_challenge_method": "S256",
    })
    response = HttpResponseRedirect(url)
    response["Cache-Control"] = "no-store"
    return response


# -- callback ----------------------------------------------------------------------


@require_GET
@never_cache
def callback(request: HttpRequest, slug: str) -> HttpResponse:
    """The OP's authorization response (Core 1.0 §3.1.2.5 / §3.1.2.6)."""
    provider = get_object_or_404(OidcProvider, slug=slug)
    return _guarded(request, provider, lambda: _callback(request, provider))


def _take_state(request: HttpRequest, provider: OidcProvider) -> dict[str, Any]:
    """The pending sign-in named by ``state``, removed from the session (single use)."""
    state = request.GET.get("state")
    if not state:
        raise SsoRefused(reasons.STATE_MISMATCH, status=400, detail={"problem": "missing"})
    if len(state) > MAX_PARAMETER:
        raise SsoRefused(reasons.STATE_MISMATCH, status=400, detail={"problem": "too long"})
    pending = dict(request.session.get(PENDING_KEY) or {})
    entry = pending.pop(_digest(state), None)
    if entry is None:
        raise SsoRefused(reasons.STATE_MISMATCH, status=400, detail={"problem": "unknown or used"})
    request.session[PENDING_KEY] = pending
    request.session.save()  # consumed now, whatever happens next
    # Also single-use across copies of the session (cookie sessions, a raced second request).
    if not replay.first_use("oidc-state", state, app_settings.OIDC_STATE_MAX_AGE):
        raise SsoRefused(reasons.REPLAYED, status=400, detail={"problem": "state replayed"})
    if entry.get("provider") != provider.slug or entry.get("uid") != str(provider.uid):
        raise SsoRefused(reasons.STATE_MISMATCH, status=400, detail={"problem": "another provider's state"})
    if time.time() - float(entry.get("at", 0)) > app_settings.OIDC_STATE_MAX_AGE:
        raise SsoRefused(reasons.STATE_MISMATCH, status=400, detail={"problem": "expired"})
    return entry


def _check_iss_parameter(request: HttpRequest, provider: OidcProvider, metadata: dict[str, Any]) -> None:
    """RFC 9207 §2.4: the authorization response's ``iss`` names our provider."""
    iss = request.GET.get("iss")
    if iss is not None:
        if not hmac.compare_digest(iss.encode("utf-8", "replace"), provider.issuer.encode()):
            raise SsoRefused(reasons.UNTRUSTED_ISSUER, status=403,
                             detail={"step": "authorization_response", "iss": _clean(iss, 255)})
    elif metadata.get("authorization_response_iss_parameter_supported") is True:
        raise SsoRefused(reasons.UNTRUSTED_ISSUER, status=403,
                         detail={"step": "authorization_response", "problem": "iss missing"})


def _attributes(claims: dict[str, Any]) -> dict[str, list[str]]:
    """Claims as ``{name: [str, …]}`` for the attribute mapping (objects are skipped)."""
    out: dict[str, list[str]] = {}
    for name, value in claims.items():
        values = value if isinstance(value, list) else [value]
        strings = []
        for item in values[:100]:
            if isinstance(item, bool):
                strings.append("true" if item else "false")
            elif isinstance(item, str | int | float):
                strings.append(str(item))
        if strings:
            out[str(name)] = strings
    return out


def _callback(request: HttpRequest, provider: OidcProvider) -> HttpResponse:
    entry = _take_state(request, provider)
    if not provider.active:
        raise SsoRefused(reasons.PROVIDER_INACTIVE, status=403)
    metadata = _metadata(provider)
    _check_iss_parameter(request, provider, metadata)
    error = request.GET.get("error")
    if error is not None:
        error, description = _clean(error, 64), _clean(request.GET.get("error_description"), 300)
        # Rendered by the error template with autoescaping: the OP's text is shown, never interpreted.
        message = _("The identity provider refused the sign-in (%(error)s).") % {"error": error}
        if description:
            message += " " + description
        raise SsoRefused(reasons.PROVIDER_ERROR, message, status=403,
                         detail={"error": error, "error_description": description})
    code = request.GET.get("code")
    if not code or len(code) > MAX_PARAMETER:
        raise SsoRefused(reasons.MALFORMED, status=400, detail={"problem": "code missing"})
    try:
        tokens = client.exchange_code(
            provider, metadata, code=code, redirect_uri=redirect_uri(request, provider),
            code_verifier=entry["verifier"],
        )
    except client.TokenRejected as exc:
        raise SsoRefused(reasons.CODE_REJECTED, status=403,
                         detail={"step": "token", "error": _clean(exc.error, 64),
                                 "status": exc.status}) from None
    except client.ProviderUnreachable as exc:
        raise SsoRefused(reasons.PROVIDER_UNREACHABLE, status=502,
                         detail={"step": exc.step, "problem": exc.problem}) from None
    access_token = tokens.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise SsoRefused(reasons.MALFORMED, status=403,
                         detail={"step": "token", "problem": "no access_token"})
    if str(tokens.get("token_type", "")).lower() != "bearer":
        raise SsoRefused(reasons.MALFORMED, status=403, detail={"step": "token", "problem": "token_type"})
    try:
        claims = validate_id_token(provider, metadata, tokens.get("id_token"), nonce=entry["nonce"],
                                   access_token=access_token)
    except client.ProviderUnreachable as exc:
        raise SsoRefused(reasons.PROVIDER_UNREACHABLE, status=502,
                         detail={"step": exc.step, "problem": exc.problem}) from None
    subject = claims["sub"]
    merged = dict(claims)
    if provider.use_userinfo and metadata.get("userinfo_endpoint"):
        try:
            userinfo = client.fetch_userinfo(metadata, access_token)
        except client.ProviderUnreachable as exc:
            raise SsoRefused(reasons.PROVIDER_UNREACHABLE, status=502,
                             detail={"step": exc.step, "problem": exc.problem}) from None
        userinfo_sub = userinfo.get("sub")
        # Core 1.0 §5.3.2: a UserInfo answer about someone else must not be used.
        if not isinstance(userinfo_sub, str) or not hmac.compare_digest(
            userinfo_sub.encode(), subject.encode()
        ):
            raise SsoRefused(reasons.SUBJECT_MISMATCH, status=403, detail={"step": "userinfo"})
        # The signed ID token wins where both speak.
        merged = {**userinfo, **claims}
    email_verified = merged.get("email_verified") in (True, "true")
    user = identity.resolve_user(provider, subject=subject, attributes=_attributes(merged),
                                 email_verified=email_verified)
    response = identity.complete_login(request, user, provider=provider, subject=subject,
                                       next_url=entry.get("next"))
    if 300 <= response.status_code < 400:
        request.session[LOGIN_KEY] = {"provider": provider.slug}
    return response


# -- logout ------------------------------------------------------------------------


@require_POST
@never_cache
def logout(request: HttpRequest, slug: str) -> HttpResponse:
    """Sign out here, then at the OP when the session signed in through it (POST, CSRF-protected)."""
    provider = get_object_or_404(OidcProvider, slug=slug)
    signed_in_here = (request.session.get(LOGIN_KEY) or {}).get("provider") == provider.slug
    user = request.user if getattr(request.user, "is_authenticated", False) else None
    auth_logout(request)
    try:
        audit.record(event="sso_logout", scheme=SCHEME, outcome=audit.SUCCESS, reason=reasons.OK,
                     request=request, user=user, credential_id=provider.slug,
                     detail={"provider": provider.slug, "at_provider": signed_in_here})
    except audit.AuditUnavailable:
        logger.error("OIDC logout could not be audited")
    login_page = reverse("django_apiauth:login")
    target = identity.safe_next(request, request.POST.get(REDIRECT_FIELD_NAME) or login_page)
    end_session = None
    if signed_in_here and provider.active:
        try:
            end_session = client.provider_metadata(provider).get("end_session_endpoint")
        except (client.ProviderUnreachable, client.IssuerMismatch):
            end_session = None  # signed out here; the OP session is the OP's business
    if isinstance(end_session, str) and end_session:
        target = _with_query(end_session, {
            "client_id": provider.client_id,
            "post_logout_redirect_uri": request.build_absolute_uri(login_page),
        })
    response = HttpResponseRedirect(target)
    response["Cache-Control"] = "no-store"
    return response
