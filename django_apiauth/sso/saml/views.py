"""SAML 2.0 SP views: metadata, login (AuthnRequest), ACS (response), SLS and logout.

Every failure ends in :func:`django_apiauth.sso.identity.refuse` (audited,
generic page, no session); success in
:func:`~django_apiauth.sso.identity.complete_login`. The raw ``SAMLResponse``
is never stored or logged.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth import REDIRECT_FIELD_NAME, logout
from django.db import DatabaseError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import resolve_url
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from ...app_settings import app_settings
from ...core import audit, reasons
from ..identity import SsoRefused, complete_login, refuse, resolve_user, safe_next
from . import sp
from .models import SamlIdentityProvider

logger = logging.getLogger("django_apiauth.sso.saml")
SCHEME = "saml"
SESSION_KEY = "_apiauth_saml"
LOGOUT_EVENT = "sso_logout"


def _provider(slug: str) -> SamlIdentityProvider:
    provider = SamlIdentityProvider.objects.filter(slug=slug).first()
    if provider is None:
        raise Http404("No such SAML identity provider.")
    return provider


def _refuse(request: HttpRequest, refused: SsoRefused, provider: SamlIdentityProvider | None) -> HttpResponse:
    response = refuse(request, refused, provider=provider, scheme=SCHEME)
    if refused.status == 405:
        response["Allow"] = "POST"
    return response


def _set_binding_cookie(request: HttpRequest, response: HttpResponse, value: str) -> None:
    # The ACS is reached by a cross-site POST from the IdP, on which browsers do
    # not send SameSite=Lax cookies (the session cookie by default): the
    # browser binding rides in its own cookie, SameSite=None over HTTPS.
    secure = request.is_secure()
    response.set_cookie(
        sp.BINDING_COOKIE, value, max_age=app_settings.SAML_REQUEST_TTL, path="/", secure=secure,
        httponly=True, samesite="None" if secure else "Lax",
    )


def metadata(request: HttpRequest, slug: str) -> HttpResponse:
    """The SP metadata for this IdP (SAML 2.0 Metadata §2.4.4), signed with the SP key."""
    if request.method not in ("GET", "HEAD"):
        return HttpResponse(status=405, headers={"Allow": "GET, HEAD"})
    provider = _provider(slug)
    try:
        xml = sp.metadata_xml(request, provider)
    except SsoRefused:
        return HttpResponse("SAML metadata unavailable: the SP key is missing or unreadable.",
                            status=503, content_type="text/plain")
    return HttpResponse(xml, content_type="application/samlmetadata+xml")


def login(request: HttpRequest, slug: str) -> HttpResponse:
    """Send the browser to the IdP with a signed AuthnRequest (HTTP-Redirect binding).

    The request ID and the safe ``next`` are stored server-side, bound to this
    browser (:class:`~django_apiauth.sso.saml.models.SamlAuthnRequest`).
    """
    if request.method not in ("GET", "HEAD"):
        return HttpResponse(status=405, headers={"Allow": "GET"})
    provider = _provider(slug)
    if not provider.active:
        return _refuse(request, SsoRefused(reasons.PROVIDER_INACTIVE), provider)
    next_url = safe_next(request, request.GET.get(REDIRECT_FIELD_NAME))
    binding = sp.usable_binding(request.COOKIES.get(sp.BINDING_COOKIE)) or sp.new_browser_binding()
    try:
        url = sp.start_login(request, provider, binding=binding, next_url=next_url)
    except SsoRefused as refused:
        return _refuse(request, refused, provider)
    except DatabaseError:
        return _refuse(request, SsoRefused(reasons.SERVICE_UNAVAILABLE, status=503,
                                           detail={"problem": "request store"}), provider)
    response = HttpResponseRedirect(url)
    response["Cache-Control"] = "no-store"
    _set_binding_cookie(request, response, binding)
    return response


@csrf_exempt  # a cross-site POST from the IdP; the browser binding and InResponseTo replace CSRF
def acs(request: HttpRequest, slug: str) -> HttpResponse:
    """Assertion Consumer Service (HTTP-POST binding, Bindings §3.5)."""
    provider = SamlIdentityProvider.objects.filter(slug=slug).first()
    if provider is None:
        return _refuse(request, SsoRefused(reasons.UNKNOWN_CREDENTIAL, status=404,
                                           detail={"provider": slug[:50]}), None)
    if request.method != "POST":
        return _refuse(request, SsoRefused(reasons.BAD_METHOD, status=405), provider)
    if not provider.active:
        return _refuse(request, SsoRefused(reasons.PROVIDER_INACTIVE), provider)
    try:
        verified = _verify(request, provider)
        user = resolve_user(provider, subject=verified.subject, attributes=verified.attributes)
    except SsoRefused as refused:
        return _refuse(request, refused, provider)
    response = complete_login(request, user, provider=provider, subject=verified.subject,
                              next_url=verified.next_url)
    if getattr(request, "user", None) is not None and request.user.is_authenticated:
        # What SP-initiated logout needs (Core §3.7.1); the session was cycled by login().
        request.session[SESSION_KEY] = {
            "provider": provider.slug, "name_id": verified.subject,
            "name_id_format": verified.name_id_format, "name_qualifier": verified.name_qualifier,
            "sp_name_qualifier": verified.sp_name_qualifier, "session_index": verified.session_index,
        }
    response.delete_cookie(sp.BINDING_COOKIE, path="/")
    return response


def _verify(request: HttpRequest, provider: SamlIdentityProvider) -> sp.VerifiedAssertion:
    # Bound the body before Django reads it: the form holds SAMLResponse and RelayState.
    limit = app_settings.SAML_MAX_RESPONSE_BYTES + 8192
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > limit:
        raise SsoRefused(reasons.TOO_LARGE, status=400, detail={"bytes": length})
    try:
        raw = request.POST.get("SAMLResponse")
        relay_state = request.POST.get("RelayState")
    except Exception:  # RequestDataTooBig, TooManyFieldsSent, UnreadablePostError
        raise SsoRefused(reasons.TOO_LARGE, status=400) from None
    xml = sp.decode_response(raw)
    if relay_state is not None and len(relay_state) > 2048:
        raise SsoRefused(reasons.MALFORMED, status=400, detail={"problem": "RelayState too long"})
    binding = sp.usable_binding(request.COOKIES.get(sp.BINDING_COOKIE))
    return sp.verify_response(request, provider, xml, binding=binding, relay_state=relay_state)


def _audit_logout(request: HttpRequest, provider: SamlIdentityProvider, outcome: str, reason: str,
                  user: Any = None, detail: dict[str, Any] | None = None) -> None:
    try:
        audit.record(event=LOGOUT_EVENT, scheme=SCHEME, outcome=outcome, reason=reason, request=request,
                     user=user, credential_id=provider.slug,
                     detail={"provider": provider.slug, **(detail or {})})
    except audit.AuditUnavailable:
        logger.error("SAML logout could not be audited (reason %s)", reason)


def _logout_refused(request: HttpRequest, provider: SamlIdentityProvider,
                    refused: SsoRefused) -> HttpResponse:
    """A refused logout message: audited (``sso_logout``), the session left as it was."""
    _audit_logout(request, provider, "failure", refused.reason, detail=refused.detail)
    response = HttpResponse(refused.message, status=refused.status, content_type="text/plain; charset=utf-8")
    response["Cache-Control"] = "no-store"
    return response


def sls(request: HttpRequest, slug: str) -> HttpResponse:
    """Single Logout Service (HTTP-Redirect binding, Profiles §4.4).

    A signed ``LogoutRequest`` from the IdP ends the local session when it names
    the signed-in user, and is answered with a signed ``LogoutResponse``; a
    ``LogoutResponse`` (after logout started here) is checked and leads home.
    """
    from onelogin.saml2.auth import OneLogin_Saml2_Auth
    from onelogin.saml2.logout_request import OneLogin_Saml2_Logout_Request

    if request.method not in ("GET", "HEAD"):
        return HttpResponse(status=405, headers={"Allow": "GET"})
    provider = _provider(slug)
    if "SAMLRequest" not in request.GET and "SAMLResponse" not in request.GET:
        return _logout_refused(request, provider, SsoRefused(reasons.MISSING, status=400))
    if len(request.META.get("QUERY_STRING", "")) > app_settings.SAML_MAX_RESPONSE_BYTES:
        return _logout_refused(request, provider, SsoRefused(reasons.TOO_LARGE, status=400))
    try:
        settings = sp.onelogin_settings(request, provider, messages_signed=True)
        auth = OneLogin_Saml2_Auth(sp.request_data(request), old_settings=settings)
        redirect_url = auth.process_slo(keep_local_session=True)
        errors = auth.get_errors()
    except SsoRefused as refused:
        return _logout_refused(request, provider, refused)
    except Exception as exc:  # malformed deflate/XML, xmlsec: refuse, never 500
        return _logout_refused(request, provider, SsoRefused(
            reasons.MALFORMED, status=400, detail={"problem": type(exc).__name__}))
    if errors:
        reason = reasons.BAD_SIGNATURE if any("signature" in e for e in errors) else reasons.INVALID_RESPONSE
        return _logout_refused(request, provider, SsoRefused(reason, detail={"errors": errors[:3]}))
    user = request.user if request.user.is_authenticated else None
    if "SAMLRequest" in request.GET:
        try:
            name_id = OneLogin_Saml2_Logout_Request.get_nameid(auth.get_last_request_xml())
        except Exception:  # an encrypted or missing NameID: nobody here matches it
            name_id = None
        state = request.session.get(SESSION_KEY) or {}
        if (user is not None and name_id and state.get("provider") == provider.slug
                and state.get("name_id") == name_id):
            logout(request)
        _audit_logout(request, provider, "success", reasons.OK, user=user)
        return HttpResponseRedirect(redirect_url)
    if user is not None and (request.session.get(SESSION_KEY) or {}).get("provider") == provider.slug:
        logout(request)
    _audit_logout(request, provider, "success", reasons.OK, user=user)
    return HttpResponseRedirect(resolve_url(getattr_settings("LOGOUT_REDIRECT_URL") or "/"))


def getattr_settings(name: str) -> Any:
    from django.conf import settings

    return getattr(settings, name, None)


@require_POST
def logout_view(request: HttpRequest, slug: str) -> HttpResponse:
    """Sign out here and, when the user signed in through this IdP and it has an
    SLO endpoint, at the IdP too (signed ``LogoutRequest``). POST with CSRF token."""
    from onelogin.saml2.auth import OneLogin_Saml2_Auth

    provider = _provider(slug)
    state = request.session.get(SESSION_KEY) or {}
    user = request.user if request.user.is_authenticated else None
    logout(request)
    _audit_logout(request, provider, "success", reasons.OK, user=user)
    if user is None or state.get("provider") != provider.slug or not provider.slo_url:
        return HttpResponseRedirect(resolve_url(getattr_settings("LOGOUT_REDIRECT_URL") or "/"))
    try:
        settings = sp.onelogin_settings(request, provider, messages_signed=True)
        auth = OneLogin_Saml2_Auth(sp.request_data(request), old_settings=settings)
        url = auth.logout(
            return_to=None, name_id=state.get("name_id"), session_index=state.get("session_index"),
            nq=state.get("name_qualifier"), name_id_format=state.get("name_id_format"),
            spnq=state.get("sp_name_qualifier"),
        )
    except SsoRefused as refused:
        return _refuse(request, refused, provider)
    return HttpResponseRedirect(url)


