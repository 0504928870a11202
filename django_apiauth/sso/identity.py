"""What every SSO flow shares once the provider's answer is verified.

A SAML assertion or an OpenID Connect ID token, once its protocol module has
checked it, boils down to ``(issuer, subject, attributes)``. This module turns
that into a Django user and a login, the same way for every provider kind:

* :func:`resolve_user` maps ``(provider.issuer_id, subject)`` to a user through
  :class:`~django_apiauth.models.ExternalIdentity` (the table JWT bearer
  authentication uses too), creates the user just in time when the provider
  allows it, and applies the provider's attribute mapping.
* :func:`complete_login` audits the success, logs the user in with
  :func:`django.contrib.auth.login` (new session key) and redirects to a safe
  ``next``.
* :func:`refuse` audits a failure and renders an escaped error page; no
  session is created.
* :func:`safe_next` accepts only same-site paths as redirect targets.

Account linking is deliberately narrow (OWASP Authentication Cheat Sheet,
"account linking"): an identity is linked to an existing account only when an
administrator created the :class:`ExternalIdentity` row, or when the provider's
mapping opts in with ``"link_by_verified_email": true``, the provider says the
address is verified, exactly one active account has it, and that account is
not a superuser. An unverified e-mail address never links anything.

The attribute mapping (``provider.attribute_mapping``, JSON)::

    {
      "username": "uid",            # attribute holding the username (JIT only)
      "email": "mail",
      "first_name": "givenName",
      "last_name": "sn",
      "staff": {"attribute": "groups", "values": ["admins"]},
      "groups": {"attribute": "groups", "map": {"idp-auditors": "Auditors"}},
      "link_by_verified_email": false
    }

Every key is optional. ``staff`` and ``groups`` are synchronised on every
login (a user removed from the IdP group loses ``is_staff`` or the Django group
at the next sign-in); only groups named in ``map`` are ever added or removed.
``is_superuser`` is never granted by SSO.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from django.conf import settings
from django.contrib.auth import get_user_model, login
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import resolve_url
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext_lazy as _

from ..core import audit, reasons

logger = logging.getLogger("django_apiauth.sso")

SSO_LOGIN_EVENT = "sso_login"

#: Reason codes of this module (the protocol modules add their own).
UNKNOWN_IDENTITY = "unknown_identity"
BAD_ATTRIBUTES = "bad_attributes"

_GENERIC_MESSAGE = _("Sign-in failed. Please try again or contact your administrator.")
_USERNAME_UNSAFE = re.compile(r"[^\w.@+-]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class SsoProvider(Protocol):
    """What the shared code needs of a provider model (SAML IdP, OpenID Provider)."""

    slug: str
    name: str
    active: bool
    jit_enabled: bool
    attribute_mapping: dict[str, Any]
    scheme: str

    @property
    def issuer_id(self) -> str: ...

    def login_url(self) -> str: ...


class SsoRefused(Exception):
    """A refused SSO attempt.

    ``reason`` is the stable audit code; ``message`` the generic text shown to
    the browser (the precise reason is only in the audit row); ``status`` is
    400 for malformed input or a broken flow (bad state, not base64, ACS by
    GET), 403 for failed validation, 502 when the provider cannot be reached
    and 503 when a store we need to decide is down.
    """

    def __init__(
        self,
        reason: str,
        message: str | None = None,
        *,
        status: int = 403,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.message = str(message) if message is not None else str(_GENERIC_MESSAGE)
        self.status = status
        self.detail = dict(detail or {})


def _first(attributes: Mapping[str, Sequence[str]], name: Any) -> str | None:
    if not isinstance(name, str) or not name:
        return None
    values = attributes.get(name)
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    for value in values:
        if isinstance(value, str) and value.strip():
            return _CONTROL.sub("", value.strip())
    return None


def _all(attributes: Mapping[str, Sequence[str]], name: Any) -> set[str]:
    if not isinstance(name, str) or not name:
        return set()
    values = attributes.get(name) or []
    if isinstance(values, str):
        values = [values]
    return {v for v in values if isinstance(v, str)}


def _username_for(provider: SsoProvider, subject: str, wanted: str | None) -> str:
    """A free, valid username for a just-in-time user. Never takes over an existing one."""
    user_model = get_user_model()
    field = user_model._meta.get_field(user_model.USERNAME_FIELD)  # type: ignore[attr-defined]
    max_length = getattr(field, "max_length", None) or 150
    suffix = hashlib.sha256(f"{provider.issuer_id}\0{subject}".encode()).hexdigest()[:10]
    base = _USERNAME_UNSAFE.sub("-", wanted or f"{provider.slug}-{subject}").strip("-.") or provider.slug
    candidates = [base[:max_length], f"{base[: max_length - 11]}-{suffix}"]
    for candidate in candidates:
        if not user_model._default_manager.filter(**{user_model.USERNAME_FIELD: candidate}).exists():
            return candidate
    raise SsoRefused(BAD_ATTRIBUTES, detail={"provider": provider.slug, "problem": "username taken"})


def _link_by_email(provider: SsoProvider, email: str | None, email_verified: bool) -> Any:
    if not (provider.attribute_mapping or {}).get("link_by_verified_email"):
        return None
    if not (email and email_verified):
        return None  # an unverified address never links an account
    user_model = get_user_model()
    email_field = user_model.get_email_field_name()  # type: ignore[attr-defined]
    matches = list(
        user_model._default_manager.filter(**{f"{email_field}__iexact": email, "is_active": True})[:2]
    )
    if len(matches) != 1 or getattr(matches[0], "is_superuser", False):
        return None
    return matches[0]


def _apply_mapping(
    user: Any, mapping: Mapping[str, Any], attributes: Mapping[str, Sequence[str]], *, created: bool
) -> None:
    changed: list[str] = []
    user_model = type(user)
    for attr in ("email", "first_name", "last_name"):
        value = _first(attributes, mapping.get(attr))
        if value is None or not hasattr(user, attr):
            continue
        max_length = getattr(user_model._meta.get_field(attr), "max_length", None) or 254
        value = value[:max_length]
        if getattr(user, attr) != value:
            setattr(user, attr, value)
            changed.append(attr)
    staff = mapping.get("staff")
    if isinstance(staff, Mapping) and hasattr(user, "is_staff"):
        wanted_values = {v for v in staff.get("values") or [] if isinstance(v, str)}
        is_staff = bool(_all(attributes, staff.get("attribute")) & wanted_values)
        if user.is_staff != is_staff:
            user.is_staff = is_staff
            changed.append("is_staff")
    if changed and not created:
        user.save(update_fields=changed)
    elif created:
        user.save()
    groups = mapping.get("groups")
    if isinstance(groups, Mapping) and isinstance(groups.get("map"), Mapping) and hasattr(user, "groups"):
        group_map = {k: v for k, v in groups["map"].items() if isinstance(k, str) and isinstance(v, str)}
        granted = {group_map[v] for v in _all(attributes, groups.get("attribute")) if v in group_map}
        managed = set(group_map.values())
        current = set(user.groups.filter(name__in=managed).values_list("name", flat=True))
        for name in sorted(granted - current):
            user.groups.add(Group.objects.get_or_create(name=name)[0])
        if current - granted:
            user.groups.remove(*Group.objects.filter(name__in=current - granted))


def resolve_user(
    provider: SsoProvider,
    *,
    subject: str,
    attributes: Mapping[str, Sequence[str]],
    email_verified: bool = False,
) -> AbstractBaseUser:
    """The Django user for ``(provider.issuer_id, subject)``; raises :class:`SsoRefused`."""
    from ..models import ExternalIdentity

    if not isinstance(subject, str) or not subject.strip() or len(subject) > 255 or _CONTROL.search(subject):
        raise SsoRefused(BAD_ATTRIBUTES, detail={"provider": provider.slug, "problem": "subject"})
    issuer = provider.issuer_id
    mapping = provider.attribute_mapping if isinstance(provider.attribute_mapping, Mapping) else {}
    user_model = get_user_model()
    for _attempt in range(2):
        try:
            with transaction.atomic():
                identity = (
                    ExternalIdentity.objects.select_related("user")
                    .filter(issuer=issuer, subject=subject)
                    .first()
                )
                created = False
                if identity is not None:
                    user = identity.user
                else:
                    user = _link_by_email(provider, _first(attributes, mapping.get("email")), email_verified)
                    if user is None:
                        if not provider.jit_enabled:
                            raise SsoRefused(UNKNOWN_IDENTITY, detail={"provider": provider.slug})
                        wanted = _first(attributes, mapping.get("username"))
                        username = _username_for(provider, subject, wanted)
                        user = user_model(**{user_model.USERNAME_FIELD: username})
                        user.set_unusable_password()
                        created = True
                if not created and not user.is_active:
                    raise SsoRefused(reasons.INACTIVE_OWNER, detail={"provider": provider.slug})
                _apply_mapping(user, mapping, attributes, created=created)
                if identity is None:
                    ExternalIdentity.objects.create(issuer=issuer, subject=subject, user=user)
                return user  # type: ignore[no-any-return]
        except IntegrityError:
            # Two first logins of the same identity raced: the other one won; use its row.
            continue
    raise SsoRefused(reasons.SERVICE_UNAVAILABLE, status=503, detail={"provider": provider.slug})


def safe_next(request: HttpRequest, candidate: str | None) -> str:
    """``candidate`` if it is a same-site path, else ``settings.LOGIN_REDIRECT_URL``."""
    default = resolve_url(settings.LOGIN_REDIRECT_URL)
    if not candidate or not isinstance(candidate, str) or len(candidate) > 2048:
        return default
    if not candidate.startswith("/") or candidate.startswith(("//", "/\\")) or "\\" in candidate:
        return default
    if _CONTROL.search(candidate):
        return default
    if not url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return default
    return candidate


def _login_backend() -> str:
    backends = list(settings.AUTHENTICATION_BACKENDS)
    model_backend = "django.contrib.auth.backends.ModelBackend"
    return model_backend if model_backend in backends else backends[0]


def complete_login(
    request: HttpRequest,
    user: Any,
    *,
    provider: SsoProvider,
    subject: str,
    next_url: str | None,
) -> HttpResponse:
    """Audit the success, log the user in, redirect to a safe ``next``.

    The audit row is written first: if it cannot be written, nobody is logged
    in (every sign-in is recorded, or it does not happen).
    """
    from ..models import ExternalIdentity

    try:
        audit.record(
            event=SSO_LOGIN_EVENT,
            scheme=provider.scheme,
            outcome="success",
            reason=reasons.OK,
            request=request,
            user=user,
            credential_id=provider.slug,
            detail={"provider": provider.slug},
        )
    except audit.AuditUnavailable:
        return _error_page(request, SsoRefused(reasons.SERVICE_UNAVAILABLE, status=503), provider)
    login(request, user, backend=_login_backend())
    ExternalIdentity.objects.filter(issuer=provider.issuer_id, subject=subject).update(
        last_seen_at=timezone.now()
    )
    return HttpResponseRedirect(safe_next(request, next_url))


def refuse(
    request: HttpRequest,
    refused: SsoRefused,
    *,
    provider: SsoProvider | None = None,
    scheme: str,
) -> HttpResponse:
    """Audit a failed attempt and render the error page (no session is created)."""
    detail = {"provider": provider.slug} if provider is not None else {}
    detail.update(refused.detail)
    try:
        audit.record(
            event=SSO_LOGIN_EVENT,
            scheme=scheme,
            outcome="failure",
            reason=refused.reason,
            request=request,
            credential_id=provider.slug if provider is not None else "",
            detail=detail,
        )
    except audit.AuditUnavailable:
        logger.error("SSO failure could not be audited (reason %s)", refused.reason)
    return _error_page(request, refused, provider)


def _error_page(request: HttpRequest, refused: SsoRefused, provider: SsoProvider | None) -> HttpResponse:
    from django.contrib import admin

    response = TemplateResponse(
        request,
        "django_apiauth/sso/error.html",
        {
            **admin.site.each_context(request),
            "title": _("Sign-in failed"),
            "message": refused.message,
            "reason": refused.reason,
            "provider": provider,
            "login_url": resolve_url("django_apiauth:login"),
        },
        status=refused.status,
    )
    response["Cache-Control"] = "no-store"
    return response
