"""Django admin for credentials and the audit trail.

* :class:`CredentialAdmin` is the reusable base for every credential model
  (API keys now; HMAC secrets and client certificates later). It issues new
  credentials through :func:`django_apiauth.core.lifecycle.issue` and shows
  the one-time secret once, as a warning message (as djangorestframework-api-key
  does); it adds the *rotate* and *revoke* actions (each with a confirmation
  page), the state filter and a link to the credential's audit events. A
  credential model's admin only names its own fields::

      @admin.register(HmacSecret)
      class HmacSecretAdmin(CredentialAdmin):
          identity_fields = ("key_id",)

* :class:`AuditEventAdmin` is read-only for everyone, superusers included, and
  never runs an unbounded ``COUNT(*)`` or ``DISTINCT`` on the audit table: the
  paginator counts at most :attr:`CappedCountPaginator.count_cap` rows, the
  date drill-down uses one MIN/MAX query, and the filters read indexed columns
  or a bounded window of recent rows.

User-controlled values are rendered by the admin's templates (escaped) or
through :func:`~django.utils.html.format_html`; nothing stored is marked safe.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any, ClassVar, cast
from urllib.parse import urlencode

from cryptography import x509 as crypto_x509
from cryptography.hazmat.primitives.asymmetric import rsa
from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import flatten_fieldsets, unquote
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import connections, router, transaction
from django.db.models import Count, Max, Min, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils import formats, timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.text import capfirst
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from .app_settings import app_settings
from .ca import authority as ca_authority
from .ca import x509 as ca_x509
from .core import audit, lifecycle, lockout, reasons
from .core.durations import format_duration, parse_duration
from .core.models import AbstractCredential, CredentialQuerySet
from .models import (
    AbstractClientCertificate,
    ApiKey,
    AuditEvent,
    CertificateAuthority,
    ClientCertificate,
    HmacSecret,
    Lockout,
)

#: Display names of the states a credential can be in, as shown in the list.
EXPIRING = "expiring"
STATE_LABELS: dict[str, Any] = {
    "active": _("active"),
    EXPIRING: _("expiring soon"),
    reasons.EXPIRED: _("expired"),
    reasons.REVOKED: _("revoked"),
    reasons.NOT_YET_VALID: _("not yet valid"),
    reasons.INACTIVE_OWNER: _("owner inactive"),
}

#: Longest grace period the rotate action accepts (a longer one defeats rotating).
MAX_ROTATION_GRACE = timedelta(days=365)


# -- forms --------------------------------------------------------------------


class CredentialAdminForm(forms.ModelForm):
    """Add / change form: the validity window must make sense."""

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        adding = self.instance._state.adding
        not_before = cleaned.get("not_before", self.instance.not_before)
        expires_at = cleaned.get("expires_at")
        if expires_at is not None:
            if adding and expires_at <= timezone.now():
                self.add_error("expires_at", _("A new credential must expire in the future."))
            elif not_before is not None and expires_at <= not_before:
                self.add_error("expires_at", _("The expiry must be later than “not before”."))
        return cleaned


class RotateForm(forms.Form):
    grace = forms.CharField(
        label=_("Grace period"),
        max_length=20,
        help_text=_(
            "How long the old credentials keep working next to their successors, "
            "e.g. 1h, 24h or 7d; 0s ends them at once."
        ),
    )

    def clean_grace(self) -> timedelta:
        try:
            grace = parse_duration(self.cleaned_data["grace"])
        except ValueError:
            raise ValidationError(
                _("Enter a number and a unit, e.g. 90s, 15m, 12h or 30d."), code="invalid"
            ) from None
        if grace > MAX_ROTATION_GRACE:
            raise ValidationError(
                _("The grace period can be at most %(max)s."),
                code="max_value",
                params={"max": format_duration(MAX_ROTATION_GRACE)},
            )
        return grace


class RevokeForm(forms.Form):
    reason = forms.CharField(
        label=_("Reason"),
        max_length=200,
        widget=forms.TextInput(attrs={"size": 60}),
        help_text=_("Recorded on the credentials and in the audit log, e.g. “key leaked in CI logs”."),
    )


# -- credential admin ---------------------------------------------------------


class CredentialStateFilter(admin.SimpleListFilter):
    """Filter credentials by state, in SQL (:class:`CredentialQuerySet`).

    Mirrors :meth:`CredentialAdmin.credential_state`: *active* is
    :meth:`~CredentialQuerySet.usable`, *expiring* the active ones that expire
    within :attr:`CredentialAdmin.expiring_window`.
    """

    title = _("state")
    parameter_name = "state"

    def __init__(self, request: HttpRequest, params: dict[str, Any], model: Any, model_admin: Any) -> None:
        self.model_admin = model_admin
        super().__init__(request, params, model, model_admin)

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [
            (state, STATE_LABELS[state])
            for state in ("active", EXPIRING, reasons.EXPIRED, reasons.REVOKED, reasons.NOT_YET_VALID)
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if not value:
            return queryset
        now = timezone.now()
        queryset = cast(CredentialQuerySet, queryset)
        window: timedelta = getattr(self.model_admin, "expiring_window", CredentialAdmin.expiring_window)
        if value == "active":
            return queryset.usable(now)
        if value == EXPIRING:
            return queryset.usable(now).filter(expires_at__lte=now + window)
        if value == reasons.EXPIRED:
            return queryset.expired(now)
        if value == reasons.REVOKED:
            return queryset.revoked()
        if value == reasons.NOT_YET_VALID:
            return queryset.filter(revoked_at__isnull=True, not_before__gt=now)
        return queryset.none()


class CredentialAdmin(admin.ModelAdmin):
    """Reusable admin for a credential model (a subclass of ``AbstractCredential``).

    Extend by class attributes:

    * ``identity_fields``: the public identifier fields (``("lookup_id",)``),
      shown read-only in the list and the change form and searchable by prefix.
    * ``add_fields``: the fields of the add form (passed to ``lifecycle.issue``).
    * ``editable_fields``: the fields an existing, unrevoked credential may change.
    * ``expiring_window``: how soon an expiry makes an active credential "expiring".

    and by hooks: :meth:`secret_message` (the one-time message),
    :meth:`credential_state`, :meth:`rotate_intro` (the rotate confirmation
    text) and :meth:`rotation_refused_message` (why a credential's model
    refused a successor). The secret fields (``secret_hash``, ciphertexts)
    are never listed: the form only shows what the fieldsets name.
    """

    identity_fields: ClassVar[tuple[str, ...]] = ()
    add_fields: ClassVar[tuple[str, ...]] = (
        "owner", "name", "scopes", "allowed_ips", "rate_limit", "not_before", "expires_at",
    )
    editable_fields: ClassVar[tuple[str, ...]] = (
        "name", "scopes", "allowed_ips", "rate_limit", "expires_at",
    )
    expiring_window: ClassVar[timedelta] = timedelta(days=7)
    action_confirmation_template: ClassVar[str | None] = None

    form = CredentialAdminForm
    list_display = ("name", "owner", "state_display", "scopes", "expires_at", "last_used_at",
                    "audit_timeline_column")
    list_filter = (CredentialStateFilter, ("owner", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("owner",)
    raw_id_fields = ("owner",)
    actions = ("rotate_selected", "revoke_selected", "revoke_owners_credentials")

    # -- list -----------------------------------------------------------------

    def get_list_display(self, request: HttpRequest) -> Sequence[str]:
        display = list(super().get_list_display(request))
        position = display.index("name") + 1 if "name" in display else 0
        missing = [f for f in self.identity_fields if f not in display]
        return [*display[:position], *missing, *display[position:]]

    def get_search_fields(self, request: HttpRequest) -> Sequence[str]:
        if self.search_fields:
            return self.search_fields
        username_field = get_user_model().USERNAME_FIELD
        return ["name", *(f"^{f}" for f in self.identity_fields), f"^owner__{username_field}"]

    def credential_state(self, credential: AbstractCredential, now: datetime | None = None) -> str:
        """``credential.state()`` refined: *expiring* within the window, *owner inactive*."""
        now = now or timezone.now()
        state = credential.state(now)
        if state == "active":
            if not credential.owner.is_active:
                return reasons.INACTIVE_OWNER
            if credential.expires_at is not None and credential.expires_at - now <= self.expiring_window:
                return EXPIRING
        return state

    @admin.display(description=_("state"))
    def state_display(self, obj: AbstractCredential) -> str:
        state = self.credential_state(obj)
        return str(STATE_LABELS.get(state, state))

    # -- change form ------------------------------------------------------------

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> list[tuple[Any, dict[str, Any]]]:
        if obj is None:
            return [(None, {"fields": self.add_fields})]
        return [
            (None, {"fields": (
                *self.identity_fields, "owner", "name", "state_display", "scopes", "allowed_ips",
                "rate_limit",
            )}),
            (_("Validity"), {"fields": (
                "created_at", "not_before", "expires_at", "revoked_at", "revoked_reason",
                "rotated_from", "successors_display",
            )}),
            (_("Usage"), {"fields": (
                "last_used_at", "last_used_ip", "audit_events_link", "audit_timeline_link",
                "owner_timeline_link",
            )}),
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Sequence[str]:
        if obj is None:
            return ()
        # A revoked credential is read-only: revocation is one-way.
        editable = () if obj.revoked_at is not None else self.editable_fields
        shown = flatten_fieldsets(self.get_fieldsets(request, obj))
        return tuple(f for f in shown if f not in editable)

    @admin.display(description=_("successors"))
    def successors_display(self, obj: AbstractCredential) -> SafeString | str:
        successors = list(obj.successors.all())  # type: ignore[attr-defined]
        if not successors:
            return self.get_empty_value_display()
        return format_html_join(", ", '<a href="{}">{}</a>', (
            (self._change_url(successor), str(successor)) for successor in successors
        ))

    @admin.display(description=_("audit events"))
    def audit_events_link(self, obj: AbstractCredential) -> SafeString | str:
        opts = AuditEvent._meta
        try:
            url = reverse(
                f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_changelist",
                current_app=self.admin_site.name,
            )
        except NoReverseMatch:
            return self.get_empty_value_display()
        query = urlencode({"credential_id": obj.public_id})
        return format_html('<a href="{}?{}">{}</a>', url, query, gettext("View audit events"))

    # Links into the audit console (/auth/audit/), when the project mounts it.

    @admin.display(description=_("audit timeline"))
    def audit_timeline_link(self, obj: AbstractCredential) -> SafeString | str:
        url = _audit_console_url("credential", obj.public_id)
        if not url:
            return self.get_empty_value_display()
        return format_html('<a href="{}">{}</a>', url, gettext("Timeline in the audit console"))

    @admin.display(description=_("timeline"))
    def audit_timeline_column(self, obj: AbstractCredential) -> SafeString | str:
        url = _audit_console_url("credential", obj.public_id)
        if not url:
            return self.get_empty_value_display()
        return format_html('<a href="{}">{}</a>', url, gettext("timeline"))

    @admin.display(description=_("owner's timeline"))
    def owner_timeline_link(self, obj: AbstractCredential) -> SafeString | str:
        url = _audit_console_url("user", obj.owner_id)
        if not url:
            return self.get_empty_value_display()
        return format_html(
            '<a href="{}">{}</a>', url,
            gettext("Events and credentials of %(owner)s (kill switch)") % {
                "owner": obj.owner.get_username()},
        )

    def _change_url(self, obj: Any) -> str:
        opts = obj._meta
        return reverse(
            f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_change",
            args=(obj.pk,), current_app=self.admin_site.name,
        )

    # -- issue and edit -----------------------------------------------------------

    def save_model(self, request: HttpRequest, obj: Any, form: forms.ModelForm, change: bool) -> None:
        if change:
            # Only the editable fields the form changed: never write back
            # lifecycle fields (revoked_at, expires_at set by a rotation,
            # last_used_at) that may have changed since the object was read.
            allowed = () if obj.revoked_at is not None else self.editable_fields
            changes = {f: getattr(obj, f) for f in form.changed_data if f in allowed}
            lifecycle.update(obj, changes=changes, actor=request.user, via="admin")
            return
        model_fields = {f.name for f in obj._meta.concrete_fields}
        fields = {name: getattr(obj, name) for name in form.fields if name in model_fields}
        credential, secret = lifecycle.issue(type(obj), actor=request.user, via="admin", **fields)
        # The admin carries on (log entry, redirect) with ``obj``: make it the issued row.
        for field in obj._meta.concrete_fields:
            setattr(obj, field.attname, getattr(credential, field.attname))
        obj._state.adding = False
        obj._state.db = credential._state.db
        if secret:  # credentials with nothing secret on the server (public keys) have none
            messages.warning(request, self.secret_message(credential, secret))

    def secret_message(
        self, credential: AbstractCredential, secret: str, *, rotated_from: AbstractCredential | None = None,
    ) -> SafeString:
        """The one-time message showing a new secret. Override for other wording."""
        kind = credential._meta.verbose_name
        if rotated_from is None:
            return format_html(
                gettext("The {kind} “{name}” is: <code>{secret}</code> — store it somewhere safe "
                        "now: it will not be shown again."),
                kind=kind, name=str(credential), secret=secret,
            )
        return format_html(
            gettext("The new {kind} “{name}” replacing “{old}” is: <code>{secret}</code> — store "
                    "it somewhere safe now: it will not be shown again (the old one keeps working "
                    "until {until})."),
            kind=kind, name=str(credential), old=str(rotated_from), secret=secret,
            until=_format_datetime(rotated_from.expires_at),
        )

    # -- actions ----------------------------------------------------------------

    def has_rotate_permission(self, request: HttpRequest) -> bool:
        """Rotating issues credentials: it needs both the add and change permissions."""
        return self.has_add_permission(request) and self.has_change_permission(request)

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return self.has_change_permission(request)

    @admin.action(description=_("Rotate selected %(verbose_name_plural)s…"), permissions=["rotate"])
    def rotate_selected(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse | None:
        form = RotateForm(
            request.POST if request.POST.get("confirm") else None,
            initial={"grace": format_duration(app_settings.ROTATION_GRACE)},
        )
        if not form.is_bound or not form.is_valid():
            return self.render_action_confirmation(
                request, queryset, form, action="rotate_selected",
                title=gettext("Rotate %(name)s") % {"name": self.opts.verbose_name_plural},
                intro=self.rotate_intro(request, queryset),
                submit_label=gettext("Rotate"),
            )
        grace: timedelta = form.cleaned_data["grace"]
        issued: list[tuple[AbstractCredential, AbstractCredential, str]] = []
        skipped: list[tuple[AbstractCredential, str]] = []
        now = timezone.now()
        with transaction.atomic(using=router.db_for_write(self.model)):
            for credential in self._locked(queryset):
                state = credential.state(now)
                if state in (reasons.REVOKED, reasons.EXPIRED):
                    skipped.append((credential, str(STATE_LABELS[state])))
                    continue
                try:
                    successor, secret = lifecycle.rotate(
                        credential, grace=grace, actor=request.user, now=now, via="admin",
                    )
                except lifecycle.LifecycleError as exc:
                    skipped.append((credential, str(exc)))
                    continue
                except ValidationError as exc:
                    # The model refused the successor (full_clean or
                    # validate_successor, e.g. a public-key credential needs
                    # a new public key). Raised before the successor is
                    # saved; rotate() rolled back its savepoint.
                    skipped.append((credential, self.rotation_refused_message(credential, exc)))
                    continue
                issued.append((credential, successor, secret))
        # Messages only once the transaction has committed: never show a
        # secret whose credential was rolled back.
        for credential, successor, secret in issued:
            self.log_change(request, credential, gettext("Rotated; successor %(id)s.") % {
                "id": successor.public_id,
            })
            self.log_addition(request, successor, gettext("Issued by rotating %(id)s.") % {
                "id": credential.public_id,
            })
            if secret:
                messages.warning(request, self.secret_message(successor, secret, rotated_from=credential))
        self._report(request, skipped)
        if issued:
            self.message_user(request, ngettext(
                "Rotated %(count)d %(name)s.", "Rotated %(count)d %(plural)s.", len(issued),
            ) % self._names(len(issued)), messages.SUCCESS)
        return None

    def rotate_intro(self, request: HttpRequest, queryset: QuerySet[Any]) -> str:
        """The text of the rotate confirmation page (escaped unless a ``SafeString``)."""
        return gettext(
            "Each selected %(name)s gets a successor with the same owner, scopes and allowed "
            "IPs. The new secrets are shown once, on the next page. The old ones keep "
            "working during the grace period. Revoked and expired ones are skipped."
        ) % {"name": self.opts.verbose_name}

    def rotation_refused_message(self, credential: AbstractCredential, exc: ValidationError) -> str:
        """Why ``credential`` was skipped when its model refused the successor.

        Plain text is escaped; return a ``SafeString`` (``format_html``) for markup.
        """
        return " ".join(exc.messages)

    @admin.action(description=_("Revoke selected %(verbose_name_plural)s…"), permissions=["revoke"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse | None:
        form = RevokeForm(request.POST if request.POST.get("confirm") else None)
        if not form.is_bound or not form.is_valid():
            return self.render_action_confirmation(
                request, queryset, form, action="revoke_selected",
                title=gettext("Revoke %(name)s") % {"name": self.opts.verbose_name_plural},
                intro=gettext(
                    "Revoking is immediate and cannot be undone: requests using the selected "
                    "%(name)s are refused at once. Already revoked ones are skipped."
                ) % {"name": self.opts.verbose_name_plural},
                submit_label=gettext("Revoke"),
            )
        reason: str = form.cleaned_data["reason"]
        revoked: list[AbstractCredential] = []
        skipped: list[tuple[AbstractCredential, str]] = []
        with transaction.atomic(using=router.db_for_write(self.model)):
            for credential in self._locked(queryset):
                if credential.revoked_at is not None:
                    skipped.append((credential, str(STATE_LABELS[reasons.REVOKED])))
                    continue
                lifecycle.revoke(credential, reason=reason, actor=request.user, via="admin")
                revoked.append(credential)
        for credential in revoked:
            self.log_change(request, credential, gettext("Revoked: %(reason)s") % {
                "reason": credential.revoked_reason,
            })
        self._report(request, skipped)
        if revoked:
            self.message_user(request, ngettext(
                "Revoked %(count)d %(name)s.", "Revoked %(count)d %(plural)s.", len(revoked),
            ) % self._names(len(revoked)), messages.SUCCESS)
        return None

    def has_kill_switch_permission(self, request: HttpRequest) -> bool:
        from .audit.killswitch import can_revoke_all

        return can_revoke_all(request.user)

    @admin.action(description=_("Kill switch: revoke every credential of the owners…"),
                  permissions=["kill_switch"])
    def revoke_owners_credentials(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse | None:
        """The per-user kill switch (:mod:`django_apiauth.audit.killswitch`) for the owners
        of the selected credentials: all their credentials, of every kind."""
        from .audit.killswitch import revoke_all_for_user

        owners = list(get_user_model()._default_manager.filter(
            pk__in=list(queryset.values_list("owner_id", flat=True))).order_by("pk"))
        form = RevokeForm(request.POST if request.POST.get("confirm") else None)
        if not form.is_bound or not form.is_valid():
            return self.render_action_confirmation(
                request, queryset, form, action="revoke_owners_credentials",
                title=gettext("Revoke every credential of their owners"),
                intro=gettext(
                    "Every unrevoked credential of every kind (API keys, signature keys, client "
                    "certificates, …) of these users is revoked at once and for good: %(users)s."
                ) % {"users": ", ".join(owner.get_username() for owner in owners)},
                submit_label=gettext("Revoke all their credentials"),
            )
        for owner in owners:
            result = revoke_all_for_user(owner, reason=form.cleaned_data["reason"], actor=request.user,
                                         via="admin")
            self.message_user(request, gettext("Revoked %(count)d credentials of %(user)s.") % {
                "count": len(result.revoked), "user": owner.get_username(),
            }, messages.SUCCESS)
        return None

    def render_action_confirmation(
        self, request: HttpRequest, queryset: QuerySet[Any], form: forms.Form, *, action: str,
        title: str, intro: str, submit_label: str,
    ) -> TemplateResponse:
        """The intermediate page of an action: the selected credentials and a form."""
        now = timezone.now()
        objects = [
            {
                "object": credential,
                "url": self._change_url(credential),
                "state": STATE_LABELS.get(state := self.credential_state(credential, now), state),
            }
            for credential in queryset.select_related("owner")
        ]
        opts = self.opts
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "subtitle": None,
            "intro": intro,
            "objects": objects,
            "form": form,
            "action": action,
            "submit_label": submit_label,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "opts": opts,
            "media": self.media + form.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.action_confirmation_template or [
            f"django_apiauth/admin/{opts.model_name}/{action}_confirmation.html",
            f"django_apiauth/admin/{action}_confirmation.html",
            "django_apiauth/admin/credential_action_confirmation.html",
        ], context)

    def _locked(self, queryset: QuerySet[Any]) -> Iterator[Any]:
        """The selected credentials, locked for the lifecycle change where the database can."""
        pks = list(queryset.values_list("pk", flat=True))
        locked = self.model._default_manager.select_related("owner").filter(pk__in=pks).order_by("pk")
        features = connections[router.db_for_write(self.model)].features
        if features.has_select_for_update:
            locked = (
                locked.select_for_update(of=("self",)) if features.has_select_for_update_of
                else locked.select_for_update()
            )
        return iter(locked)

    def _names(self, count: int) -> dict[str, Any]:
        return {
            "count": count, "name": self.opts.verbose_name, "plural": self.opts.verbose_name_plural,
        }

    def _report(self, request: HttpRequest, skipped: Iterable[tuple[AbstractCredential, str]]) -> None:
        for credential, why in skipped:
            # A SafeString reason is already formatted: stripping it would make it plain (escaped).
            reason = why if isinstance(why, SafeString) else why.rstrip(".")
            self.message_user(request, format_html(
                gettext("Skipped “{name}”: {why}."), name=str(credential), why=reason,
            ), messages.WARNING)


def _audit_console_url(page: str, arg: Any) -> str:
    """A page of the audit console, or ``""`` if the project did not mount ``django_apiauth.urls``."""
    if page == "credential" and "/" in str(arg):
        return ""
    try:
        return reverse(f"django_apiauth:audit:{page}", args=[arg])
    except NoReverseMatch:
        return ""


def _format_datetime(value: datetime | None) -> str:
    if value is None:
        return "—"
    return formats.date_format(timezone.localtime(value), "DATETIME_FORMAT")


def _valid_ip(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


@admin.register(ApiKey)
class ApiKeyAdmin(CredentialAdmin):
    identity_fields = ("lookup_id",)


class HmacSecretAdminForm(CredentialAdminForm):
    """Add form of signing keys: the model checks the public key against the algorithm.

    A private key pasted as the public key is refused here with its own message
    and is not sent back in the redisplayed form.
    """

    def clean_public_key(self) -> str:
        value: str = self.cleaned_data.get("public_key", "")
        if "PRIVATE KEY" in value:
            data = self.data.copy()
            data[self.add_prefix("public_key")] = ""
            self.data = data
            raise ValidationError(
                _("This is a private key: keep it on the client, never paste it anywhere, and "
                  "register its public key (“-----BEGIN PUBLIC KEY-----”), e.g. from "
                  "`openssl pkey -in PRIVATE.pem -pubout`."),
                code="private_key",
            )
        return value


@admin.register(HmacSecret)
class HmacSecretAdmin(CredentialAdmin):
    """HTTP signature keys: an HMAC secret is shown once; a public key is registered.

    ``algorithm`` and ``public_key`` are read-only once issued (they are not in
    ``editable_fields``): a new key means a rotation, which for a public-key
    credential needs the client's new public key, so the CLI does it
    (``manage.py rotate_credential hmac ID --public-key NEW.pem``); the rotate
    action skips those and says so. ``secret_encrypted`` is never shown.
    """

    form = HmacSecretAdminForm
    identity_fields = ("key_id", "algorithm")
    add_fields = (*CredentialAdmin.add_fields, "algorithm", "public_key")

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> list[tuple[Any, dict[str, Any]]]:
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or obj.algorithm not in self.model.ASYMMETRIC:
            return fieldsets
        # Public, so shown (read-only: not an editable field) next to the algorithm.
        name, options = fieldsets[0]
        fields = list(options["fields"])
        fields.insert(fields.index("algorithm") + 1, "public_key")
        return [(name, {**options, "fields": tuple(fields)}), *fieldsets[1:]]

    def rotate_intro(self, request: HttpRequest, queryset: QuerySet[Any]) -> str:
        intro = super().rotate_intro(request, queryset)
        if not queryset.filter(algorithm__in=self.model.ASYMMETRIC).exists():
            return intro
        return format_html(
            "{} {} <code>{}</code>.", intro,
            gettext("Public-key (Ed25519, ECDSA) keys are skipped: their successor needs the "
                    "client's new public key, so rotate them with"),
            f"manage.py rotate_credential {self.model.credential_kind} ID --public-key NEW.pem",
        )

    def rotation_refused_message(self, credential: AbstractCredential, exc: ValidationError) -> str:
        reason = super().rotation_refused_message(credential, exc)
        needs_new_key = "public_key" in getattr(exc, "error_dict", {})
        if not needs_new_key or getattr(credential, "algorithm", None) not in self.model.ASYMMETRIC:
            return reason
        return format_html(
            "{}: {} <code>{}</code>", reason.rstrip("."), gettext("rotate it with"),
            f"manage.py rotate_credential {credential.credential_kind} {credential.public_id} "
            "--public-key NEW.pem",
        )


# -- client certificates and their certificate authorities -------------------------


def _short_fingerprint(fingerprint: str) -> SafeString | str:
    """The first 16 hex digits of a SHA-256 fingerprint; the whole one on hover."""
    if not fingerprint:
        return "—"
    return format_html('<span title="{}">{}…</span>', fingerprint, fingerprint[:16])


def _pem_block(pem: str) -> SafeString:
    return format_html('<pre class="apiauth-pem">{}</pre>', pem.strip())


class CertificateAuthorityAddForm(forms.ModelForm):
    """Create a CA: the key is generated on the server, stored encrypted, never shown."""

    days = forms.IntegerField(
        label=_("Valid for (days)"), min_value=1, max_value=36500, initial=3650,
        help_text=_("Lifetime of the CA certificate; the certificates it issues never outlive it."),
    )
    key_type = forms.ChoiceField(
        label=_("Key type"), choices=ClientCertificate.KEY_TYPES, initial="ec",
    )

    class Meta:
        model = CertificateAuthority
        fields = ("name", "slug")


@admin.register(CertificateAuthority)
class CertificateAuthorityAdmin(admin.ModelAdmin):
    """The app's certificate authorities.

    Creating one calls :func:`django_apiauth.ca.authority.create_ca`: the
    private key is generated on the server and stored encrypted; it is never
    shown, not even encrypted. Afterwards only the name and ``is_active`` can
    change. A CA with certificates (revoked ones included) cannot be deleted
    (``PROTECT``): the delete page says so and suggests deactivating it.
    """

    list_display = (
        "name", "slug", "fingerprint_display", "not_after", "is_active", "certificate_count", "links",
    )
    list_filter = ("is_active",)
    search_fields = ("name", "^slug")
    actions = None  # no bulk delete: a CA is deleted, if ever, one at a time
    editable_fields: ClassVar[tuple[str, ...]] = ("name", "is_active")

    @cached_property
    def _certificates_query_name(self) -> str:
        return ClientCertificate._meta.get_field("ca").related_query_name()

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).annotate(
            _certificate_count=Count(self._certificates_query_name),
        )

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False,
                 **kwargs: Any) -> type[forms.ModelForm]:
        if obj is None:
            kwargs["form"] = CertificateAuthorityAddForm
        return super().get_form(request, obj, change, **kwargs)

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> list[tuple[Any, dict[str, Any]]]:
        if obj is None:
            return [(None, {
                "fields": ("name", "slug", "days", "key_type"),
                "description": _(
                    "A new key is generated on the server and stored encrypted; it is never shown. "
                    "Give the CA certificate to the TLS terminator (nginx "
                    "<code>ssl_client_certificate</code>) and fetch its CRL regularly."
                ),
            })]
        return [
            (None, {"fields": ("name", "slug", "is_active", "certificate_count", "links")}),
            (_("CA certificate"), {"fields": (
                "fingerprint_sha256", "subject", "not_before", "not_after", "created_at",
                "certificate_display",
            )}),
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Sequence[str]:
        if obj is None:
            return ()
        shown = flatten_fieldsets(self.get_fieldsets(request, obj))
        return tuple(f for f in shown if f not in self.editable_fields)

    # -- display ------------------------------------------------------------

    @admin.display(description=_("SHA-256 fingerprint"), ordering="fingerprint_sha256")
    def fingerprint_display(self, obj: CertificateAuthority) -> SafeString | str:
        return _short_fingerprint(obj.fingerprint_sha256)

    @admin.display(description=_("certificates"), ordering="_certificate_count")
    def certificate_count(self, obj: CertificateAuthority) -> int:
        count = getattr(obj, "_certificate_count", None)
        return self._count_certificates(obj) if count is None else int(count)

    @admin.display(description=_("public URLs"))
    def links(self, obj: CertificateAuthority) -> SafeString | str:
        try:
            cert_url = reverse("django_apiauth:ca_certificate", args=[obj.slug])
            crl_url = reverse("django_apiauth:ca_crl", args=[obj.slug])
        except NoReverseMatch:  # the project did not mount django_apiauth.urls
            return self.get_empty_value_display()
        return format_html(
            '<a href="{}">{}</a> · <a href="{}">{}</a>',
            cert_url, gettext("CA certificate"), crl_url, gettext("CRL"),
        )

    @admin.display(description=_("subject"))
    def subject(self, obj: CertificateAuthority) -> str:
        return ca_x509.describe(obj.certificate, obj.fingerprint_sha256).subject

    @admin.display(description=_("certificate (PEM)"))
    def certificate_display(self, obj: CertificateAuthority) -> SafeString:
        return _pem_block(obj.certificate_pem)

    def _count_certificates(self, obj: CertificateAuthority) -> int:
        return ClientCertificate._default_manager.filter(ca=obj).count()

    # -- create, change, delete -----------------------------------------------

    def save_model(self, request: HttpRequest, obj: Any, form: forms.ModelForm, change: bool) -> None:
        if change:
            changed = [f for f in form.changed_data if f in self.editable_fields]
            if not changed:
                return
            with transaction.atomic(using=router.db_for_write(self.model)):
                obj.save(update_fields=changed)
                audit.record(
                    event="ca.changed", scheme=ClientCertificate.credential_kind,
                    outcome=audit.SUCCESS, reason=reasons.CHANGED, credential_id=obj.slug,
                    detail={"actor": request.user.get_username(), "via": "admin",
                            "changed": {f: getattr(obj, f) for f in changed}},
                )
            return
        ca = ca_authority.create_ca(
            name=form.cleaned_data["name"], slug=form.cleaned_data["slug"],
            days=form.cleaned_data["days"], key_type=form.cleaned_data["key_type"],
            actor=request.user, via="admin",
        )
        # The admin carries on (log entry, redirect) with ``obj``: make it the created row.
        for field in obj._meta.concrete_fields:
            setattr(obj, field.attname, getattr(ca, field.attname))
        obj._state.adding = False
        obj._state.db = ca._state.db

    def delete_view(self, request: HttpRequest, object_id: str,
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        obj = self.get_object(request, unquote(object_id))
        if obj is not None and self.has_delete_permission(request, obj):
            count = self._count_certificates(obj)
            if count:
                self.message_user(request, ngettext(
                    "The certificate authority “%(name)s” cannot be deleted: %(count)d client "
                    "certificate was issued or registered under it (revoked ones count too, the "
                    "CRL needs them). Uncheck “active” instead: it then issues nothing new.",
                    "The certificate authority “%(name)s” cannot be deleted: %(count)d client "
                    "certificates were issued or registered under it (revoked ones count too, "
                    "the CRL needs them). Uncheck “active” instead: it then issues nothing new.",
                    count,
                ) % {"name": str(obj), "count": count}, messages.ERROR)
                return HttpResponseRedirect(reverse(
                    f"{self.admin_site.name}:{self.opts.app_label}_{self.opts.model_name}_change",
                    args=(obj.pk,), current_app=self.admin_site.name,
                ))
        return super().delete_view(request, object_id, extra_context)

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        with transaction.atomic(using=router.db_for_write(self.model)):
            audit.record(
                event="ca.deleted", scheme=ClientCertificate.credential_kind,
                outcome=audit.SUCCESS, reason=reasons.DELETED, credential_id=obj.slug,
                detail={"actor": request.user.get_username(), "via": "admin",
                        "fingerprint_sha256": obj.fingerprint_sha256},
            )
            obj.delete()


MODE_ISSUE = "issue"
MODE_CSR = "csr"
MODE_REGISTER = "register"
CERTIFICATE_MODES = (
    (MODE_ISSUE, _("Issue a new key and certificate from a certificate authority (the private key "
                   "is shown once)")),
    (MODE_CSR, _("Sign the client's certificate signing request (CSR) with a certificate authority "
                 "(the private key stays on the client)")),
    (MODE_REGISTER, _("Register a certificate of another CA (PEM, pasted or uploaded)")),
)
#: Largest certificate file the register form reads.
MAX_UPLOAD_BYTES = 64 * 1024


class ClientCertificateAddForm(CredentialAdminForm):
    """Add form of client certificates: issue, sign a CSR or register a PEM.

    Everything the model would refuse when issuing (bad PEM, a CA certificate,
    no clientAuth EKU, a CSR whose signature does not verify, a certificate
    already registered) is a form error here, never an error while saving.
    A pasted private key is refused and not sent back in the redisplayed form.
    """

    mode = forms.ChoiceField(
        label=_("How"), choices=CERTIFICATE_MODES, initial=MODE_ISSUE, widget=forms.RadioSelect,
    )
    csr_pem = forms.CharField(
        label=_("Certificate signing request (PEM)"), required=False, strip=True,
        widget=forms.Textarea(attrs={"rows": 8, "cols": 70, "spellcheck": "false"}),
        help_text=_("“-----BEGIN CERTIFICATE REQUEST-----”, e.g. from "
                    "`openssl req -new -key client.key -subj /CN=client`. Only its public key and "
                    "common name are used."),
    )
    certificate_file = forms.FileField(
        label=_("Certificate file"), required=False,
        help_text=_("Instead of pasting: a PEM or DER certificate file."),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        ca_field = self.fields.get("ca")
        if isinstance(ca_field, forms.ModelChoiceField):
            ca_field.queryset = ca_field.queryset.filter(is_active=True)  # type: ignore[union-attr]
            ca_field.help_text = _(
                "Issues the certificate or signs the CSR. When registering, optional: the CA "
                "that issued the pasted certificate, if it is one of these."
            )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        mode = cleaned.get("mode")
        if mode == MODE_ISSUE:
            self._clean_issue(cleaned)
        elif mode == MODE_CSR:
            self._clean_csr(cleaned)
        elif mode == MODE_REGISTER:
            self._clean_register(cleaned)
        return cleaned

    # -- modes --------------------------------------------------------------

    def _clean_issue(self, cleaned: dict[str, Any]) -> None:
        cleaned["certificate_pem"] = ""
        self._require_ca(cleaned, gettext("Choose the certificate authority that issues the certificate."))

    def _clean_csr(self, cleaned: dict[str, Any]) -> None:
        ca = self._require_ca(cleaned, gettext("Choose the certificate authority that signs the CSR."))
        csr_pem: str = cleaned.get("csr_pem", "")
        if self._refuse_private_key("csr_pem", csr_pem):
            return
        if not csr_pem:
            self.add_error("csr_pem", gettext("Paste the client's certificate signing request."))
            return
        try:
            ca_x509.load_csr(csr_pem)
        except ca_x509.CertificateError as exc:
            self.add_error("csr_pem", gettext("Not a usable CSR: %(problem)s.") % {"problem": exc})
            return
        except Exception:  # unsupported algorithms and other parser refusals
            self.add_error("csr_pem", gettext("Not a usable CSR: it could not be parsed."))
            return
        owner = cleaned.get("owner")
        if ca is None or owner is None or self.errors:
            return  # sign only what will be issued
        expires_at = cleaned.get("expires_at") or timezone.now() + timedelta(days=365)
        try:
            pem = ca_authority.sign_csr(ca, csr_pem, owner=owner, not_after=expires_at)
        except Exception:  # cryptography parses the CSR lazily: a malformed subject fails here
            self.add_error("csr_pem", gettext("The CSR could not be signed: it could not be parsed."))
            return
        cleaned["common_name"] = ""  # the certificate's, i.e. the CSR's
        self._check_certificate(cleaned, pem, ca, "csr_pem")

    def _clean_register(self, cleaned: dict[str, Any]) -> None:
        pasted: str = (cleaned.get("certificate_pem") or "").strip()
        upload = cleaned.get("certificate_file")
        if self._refuse_private_key("certificate_pem", pasted):
            return
        if pasted and upload:
            self.add_error("certificate_file", gettext("Paste the certificate or upload it, not both."))
            return
        pem = pasted
        field = "certificate_pem"
        if upload:
            field = "certificate_file"
            pem = self._read_upload(upload)
            if not pem:
                return
        if not pem:
            self.add_error("certificate_pem", gettext("Paste the certificate (PEM) or upload its file."))
            return
        self._check_certificate(cleaned, pem, cleaned.get("ca"), field)

    # -- helpers -------------------------------------------------------------

    def _require_ca(self, cleaned: dict[str, Any], message: str) -> CertificateAuthority | None:
        ca: CertificateAuthority | None = cleaned.get("ca")
        if ca is None:
            if "ca" not in self.errors:
                self.add_error("ca", message)
            return None
        if not ca.is_active:
            self.add_error("ca", gettext("This certificate authority is inactive."))
            return None
        if ca.not_after <= timezone.now():
            self.add_error("ca", gettext("This certificate authority has expired."))
            return None
        if not ca.can_issue:
            self.add_error("ca", gettext(
                "This CA was imported without its key: it cannot issue or sign. Register its "
                "certificates instead (or let chain mode register them)."))
            return None
        return ca

    def _refuse_private_key(self, field: str, value: str) -> bool:
        if "PRIVATE KEY" not in value:
            return False
        data = self.data.copy()
        data[self.add_prefix(field)] = ""
        self.data = data
        self.add_error(field, ValidationError(
            _("This is a private key: keep it on the client, never paste it anywhere. Paste "
              "the certificate (“-----BEGIN CERTIFICATE-----”) or the certificate signing "
              "request (“-----BEGIN CERTIFICATE REQUEST-----”)."),
            code="private_key",
        ))
        return True

    def _read_upload(self, upload: Any) -> str:
        if upload.size > MAX_UPLOAD_BYTES:
            self.add_error("certificate_file", gettext("This file is too large for a certificate."))
            return ""
        data: bytes = upload.read(MAX_UPLOAD_BYTES + 1)
        if b"-----BEGIN" in data:
            try:
                return data.decode("ascii")
            except UnicodeDecodeError:
                self.add_error("certificate_file", gettext("This PEM file is not ASCII text."))
                return ""
        try:  # a DER file: the model takes PEM
            return ca_x509.certificate_pem(crypto_x509.load_der_x509_certificate(data))
        except ValueError:
            self.add_error("certificate_file", gettext("This file is neither a PEM nor a DER certificate."))
            return ""

    def _check_certificate(self, cleaned: dict[str, Any], pem: str, ca: CertificateAuthority | None,
                           field: str) -> None:
        """What the model checks when it registers ``pem``, run now, as form errors on ``field``."""
        model = cast(type[AbstractClientCertificate], self._meta.model)
        probe = model(certificate_pem=pem, ca=ca, expires_at=cleaned.get("expires_at"))
        try:
            probe.generate_secret()  # with a PEM: parses and checks, generates nothing
        except ValidationError as exc:
            by_field = exc.error_dict if hasattr(exc, "error_dict") else {None: exc.error_list}
            for name, errors in by_field.items():
                target = field if name in (None, "certificate_pem") or name not in self.fields else name
                for error in errors:
                    self.add_error(target, error)
            return
        except Exception:
            # cryptography parses extensions lazily: a malformed or duplicate one
            # raises its own errors (ValueError, DuplicateExtension, ...).
            self.add_error(field, gettext("Not a usable certificate: its extensions could not be parsed."))
            return
        if probe.expires_at is not None and probe.expires_at <= timezone.now():
            self.add_error(field, gettext("This certificate has expired."))
            return
        existing = model._default_manager.filter(fingerprint_sha256=probe.fingerprint_sha256).first()
        if existing is not None:
            self.add_error(field, gettext("This certificate is already registered: “%(name)s”.") % {
                "name": str(existing)})
            return
        cleaned["certificate_pem"] = pem.strip() + "\n"
        public_key = crypto_x509.load_pem_x509_certificate(pem.strip().encode()).public_key()
        cleaned["key_type"] = "rsa" if isinstance(public_key, rsa.RSAPublicKey) else "ec"


@admin.register(ClientCertificate)
class ClientCertificateAdmin(CredentialAdmin):
    """Client certificates (mTLS), pinned by their SHA-256 fingerprint.

    The add form issues a key and certificate from one of the app's CAs (the
    private key is shown once, as a ``<pre>`` block), signs a client's CSR, or
    registers a certificate of another CA; the last two show no secret. Once
    issued, the certificate is read-only (a new one means a rotation) and only
    the name, scopes and allowed IPs change. Rotating gives a CA-issued
    certificate a new key and certificate; a registered one needs the client's
    new certificate, so the CLI does it and the rotate action skips it.
    """

    add_form: ClassVar[type[forms.ModelForm]] = ClientCertificateAddForm
    identity_fields = ("fingerprint_sha256", "common_name", "ca", "serial")
    add_fields = (
        "mode", "owner", "name", "scopes", "allowed_ips", "rate_limit", "expires_at",
        "ca", "common_name", "key_type", "csr_pem", "certificate_pem", "certificate_file",
    )
    editable_fields = ("name", "scopes", "allowed_ips", "rate_limit")
    list_filter = (*CredentialAdmin.list_filter, "ca")
    list_select_related = ("owner", "ca")

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False,
                 **kwargs: Any) -> type[forms.ModelForm]:
        if obj is None:
            kwargs["form"] = self.add_form  # the modes exist only when adding
        return super().get_form(request, obj, change, **kwargs)

    def get_list_display(self, request: HttpRequest) -> Sequence[str]:
        return ["fingerprint_display" if f == "fingerprint_sha256" else f
                for f in super().get_list_display(request)]

    def get_search_fields(self, request: HttpRequest) -> Sequence[str]:
        if self.search_fields:
            return self.search_fields
        username_field = get_user_model().USERNAME_FIELD
        return ["name", "^fingerprint_sha256", "^common_name", "^serial", "=ca__slug",
                f"^owner__{username_field}"]

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> list[tuple[Any, dict[str, Any]]]:
        if obj is None:
            return [
                (None, {"fields": ("mode", "owner", "name", "scopes", "allowed_ips", "expires_at")}),
                (_("Issue from a CA, or sign a CSR"), {
                    "fields": ("ca", "common_name", "key_type", "csr_pem"),
                    "description": _(
                        "Issuing uses the common name (default: the name) and the key type; "
                        "signing uses the CSR (its common name, its key). Without an expiry, "
                        "certificates are valid for a year (never beyond the CA's validity)."
                    ),
                }),
                (_("Register a certificate of another CA"), {
                    "fields": ("certificate_pem", "certificate_file"),
                    "description": _(
                        "The certificate (never its private key) must have the clientAuth "
                        "extended key usage and must not be a CA certificate."
                    ),
                }),
            ]
        fieldsets = super().get_fieldsets(request, obj)
        certificate = (_("Certificate"), {"fields": (
            "subject", "issuer", "sans_display", "key_type", "certificate_display",
        )})
        return [fieldsets[0], certificate, *fieldsets[1:]]

    # -- display -------------------------------------------------------------------

    @admin.display(description=_("SHA-256 fingerprint"), ordering="fingerprint_sha256")
    def fingerprint_display(self, obj: AbstractClientCertificate) -> SafeString | str:
        return _short_fingerprint(obj.fingerprint_sha256)

    @admin.display(description=_("subject alternative names"))
    def sans_display(self, obj: AbstractClientCertificate) -> SafeString | str:
        if not obj.sans:
            return self.get_empty_value_display()
        return ", ".join(obj.sans)

    @admin.display(description=_("certificate (PEM)"))
    def certificate_display(self, obj: AbstractClientCertificate) -> SafeString | str:
        if not obj.certificate_pem:
            return self.get_empty_value_display()
        return format_html('{}<a href="{}" download>{}</a>', _pem_block(obj.certificate_pem),
                           self._download_url(obj), gettext("Download the certificate"))

    def _download_url(self, obj: Any) -> str:
        opts = self.opts
        return reverse(
            f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_certificate",
            args=(obj.pk,), current_app=self.admin_site.name,
        )

    # -- certificate download (public) ---------------------------------------------

    def get_urls(self) -> list[Any]:
        opts = self.opts
        return [
            path(
                "<path:object_id>/certificate.pem",
                self.admin_site.admin_view(self.certificate_view),
                name=f"{opts.app_label}_{opts.model_name}_certificate",
            ),
            *super().get_urls(),
        ]

    def certificate_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The certificate as a PEM file (public: no private key is ever stored)."""
        obj = self.get_object(request, unquote(object_id))
        if obj is None or not obj.certificate_pem:
            raise Http404
        if not self.has_view_or_change_permission(request, obj):
            raise PermissionDenied
        response = HttpResponse(obj.certificate_pem, content_type="application/x-pem-file")
        response["Content-Disposition"] = f'attachment; filename="cert-{obj.fingerprint_sha256[:16]}.pem"'
        return response

    # -- one-time private key -------------------------------------------------------

    def secret_message(
        self, credential: AbstractCredential, secret: str, *, rotated_from: AbstractCredential | None = None,
    ) -> SafeString:
        """The new private key as a ``<pre>`` block, with where to get the certificate."""
        certificate = format_html('<a href="{}">{}</a>', self._download_url(credential),
                                  gettext("download its certificate"))
        if rotated_from is None:
            intro = format_html(
                gettext("The private key of the new client certificate “{name}” is below. Store it "
                        "somewhere safe now (e.g. as client.key, mode 0600): it is not stored on the "
                        "server and will not be shown again. Then {certificate}."),
                name=str(credential), certificate=certificate,
            )
        else:
            intro = format_html(
                gettext("The private key of the new client certificate “{name}” replacing “{old}” is "
                        "below. Store it somewhere safe now: it is not stored on the server and will "
                        "not be shown again. Then {certificate}. The old certificate keeps working "
                        "until {until}."),
                name=str(credential), old=str(rotated_from), certificate=certificate,
                until=_format_datetime(rotated_from.expires_at),
            )
        return format_html("{}{}", intro, _pem_block(secret))

    # -- rotation ------------------------------------------------------------------

    def rotate_intro(self, request: HttpRequest, queryset: QuerySet[Any]) -> str:
        intro = gettext(
            "Each selected client certificate issued by one of the app's CAs gets a successor "
            "with a new private key and certificate from the same CA, and the same owner, "
            "scopes and allowed IPs (also when the old key came from a CSR: the new key is made "
            "on the server). The new private keys are shown once, on the next page. The old "
            "certificates keep working during the grace period. Revoked and expired ones are "
            "skipped."
        )
        if not queryset.filter(ca__isnull=True).exists():
            return intro
        return format_html(
            "{} {} <code>{}</code>.", intro,
            gettext("Certificates of other CAs are skipped: their successor is the client's new "
                    "certificate, so rotate them with"),
            f"manage.py rotate_credential {self.model.credential_kind} ID --certificate NEW.pem",
        )

    def rotation_refused_message(self, credential: AbstractCredential, exc: ValidationError) -> str:
        reason = super().rotation_refused_message(credential, exc)
        needs_certificate = "certificate_pem" in getattr(exc, "error_dict", {})
        if not needs_certificate or getattr(credential, "ca_id", None) is not None:
            return reason
        return format_html(
            "{} <code>{}</code>",
            gettext("it is a certificate of another CA, so its successor is the client's new "
                    "certificate: rotate it with"),
            f"manage.py rotate_credential {credential.credential_kind} {credential.public_id} "
            "--certificate NEW.pem",
        )


# -- audit admin ------------------------------------------------------------------


class CappedCountPaginator(Paginator):
    """A paginator that never counts more than ``count_cap`` rows.

    ``count`` runs ``SELECT COUNT(*) FROM (SELECT … LIMIT cap + 1)``: cheap at
    any table size. When more rows match, ``count_is_capped`` is true and
    only the first ``count_cap`` rows are paged; filters narrow the rest.
    """

    count_cap: ClassVar[int] = 10_000
    count_is_capped = False

    @cached_property
    def count(self) -> int:
        counted = self.object_list[: self.count_cap + 1].count()
        self.count_is_capped = counted > self.count_cap
        return min(counted, self.count_cap)


class AuditEventChangeList(ChangeList):
    """Change list for the audit template: capped count, cheap date drill-down."""

    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet[Any]:
        # The list shows short columns only; the detail JSON stays on disk.
        return super().get_queryset(request, exclude_parameters).defer("detail", "user_agent")

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        self.count_is_capped = bool(getattr(self.paginator, "count_is_capped", False))
        self.pagination_required = (not self.show_all or not self.can_show_all) and self.multi_page
        self.elided_page_range = (
            list(self.paginator.get_elided_page_range(self.page_num))
            if self.pagination_required else []
        )
        show_all = self.can_show_all and not self.show_all and self.multi_page
        self.show_all_url = self.get_query_string({"all": ""}) if show_all else ""

    @cached_property
    def date_hierarchy_links(self) -> dict[str, Any]:
        """The date drill-down of ``admin/date_hierarchy.html``, without a DISTINCT scan.

        Django's ``{% date_hierarchy %}`` lists the years / months / days that
        have rows with ``SELECT DISTINCT date_trunc(…)`` over every matching
        row (a full scan at millions of rows). This offers the calendar range
        between the first and the last matching row instead: one MIN/MAX
        query, answered from the ends of the ``at`` index. A day or month
        without events inside that range shows an empty list.
        """
        field = self.date_hierarchy
        year_field, month_field, day_field = f"{field}__year", f"{field}__month", f"{field}__day"
        year, month, day = (self.params.get(f) for f in (year_field, month_field, day_field))

        def link(filters: dict[str, Any]) -> str:
            return self.get_query_string(filters, [f"{field}__"])

        if year and month and day:
            date = datetime(int(year), int(month), int(day)).date()
            return {
                "show": True,
                "back": {"link": link({year_field: year, month_field: month}),
                         "title": capfirst(formats.date_format(date, "YEAR_MONTH_FORMAT"))},
                "choices": [{"title": capfirst(formats.date_format(date, "MONTH_DAY_FORMAT"))}],
            }
        bounds = self.queryset.aggregate(first=Min(field), last=Max(field))
        first, last = bounds["first"], bounds["last"]
        if first is None or last is None:
            return {"show": bool(year), "back": {"link": link({}), "title": gettext("All dates")},
                    "choices": []}
        first, last = (timezone.localtime(v) if timezone.is_aware(v) else v for v in (first, last))
        if not year and first.year == last.year:
            year = str(first.year)
            if first.month == last.month:
                month = str(first.month)
        if year and month:
            days = range(first.day, last.day + 1)
            return {
                "show": True,
                "back": {"link": link({year_field: year}), "title": year},
                "choices": [
                    {
                        "link": link({year_field: year, month_field: month, day_field: d}),
                        "title": capfirst(formats.date_format(
                            datetime(int(year), int(month), d).date(), "MONTH_DAY_FORMAT",
                        )),
                    }
                    for d in days
                ],
            }
        if year:
            return {
                "show": True,
                "back": {"link": link({}), "title": gettext("All dates")},
                "choices": [
                    {
                        "link": link({year_field: year, month_field: m}),
                        "title": capfirst(formats.date_format(
                            datetime(int(year), m, 1).date(), "YEAR_MONTH_FORMAT",
                        )),
                    }
                    for m in range(first.month, last.month + 1)
                ],
            }
        return {
            "show": True,
            "back": None,
            "choices": [
                {"link": link({year_field: str(y)}), "title": str(y)}
                for y in range(first.year, last.year + 1)
            ],
        }


class RecentValuesFilter(admin.SimpleListFilter):
    """Choices are the values in the latest ``window`` rows, never a DISTINCT over the table.

    One ``ORDER BY pk DESC LIMIT window`` query on the primary key index; the
    selected value is always offered, even when it is older than the window.
    """

    field_name: ClassVar[str] = ""
    window: ClassVar[int] = 5_000

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        recent = model_admin.get_queryset(request).order_by("-pk").values_list(self.field_name, flat=True)
        values = set(recent[: self.window])
        if self.value():
            values.add(self.value())
        values.discard("")
        return [(value, value) for value in sorted(values)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(**{self.field_name: value}) if value else queryset


class EventFilter(RecentValuesFilter):
    title = _("event")
    parameter_name = field_name = "event"


class SchemeFilter(RecentValuesFilter):
    title = _("scheme")
    parameter_name = field_name = "scheme"


class ReasonFilter(RecentValuesFilter):
    title = _("reason")
    parameter_name = field_name = "reason"


class InputFilter(admin.SimpleListFilter):
    """A sidebar filter with a text box instead of a list of choices."""

    template = "django_apiauth/admin/input_filter.html"
    max_length: ClassVar[int] = 150

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return []

    def has_output(self) -> bool:
        return True

    def cleaned_value(self) -> str:
        return (self.value() or "").strip()[: self.max_length]

    def choices(self, changelist: Any) -> Iterator[dict[str, Any]]:
        yield {
            "selected": bool(self.cleaned_value()),
            "parameter_name": self.parameter_name,
            "value": self.cleaned_value(),
            "hidden_params": [
                (name, value)
                for name, values in sorted(changelist.filter_params.items())
                if name != self.parameter_name
                for value in values
            ],
            "clear_query_string": changelist.get_query_string(remove=[self.parameter_name]),
        }


class UsernameFilter(InputFilter):
    """Events of one user, through the indexed ``user`` column when the user exists.

    A username that no longer exists matches the kept ``username`` of its rows.
    """

    title = _("user")
    parameter_name = "username"

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.cleaned_value()
        if not value:
            return queryset
        user_model = get_user_model()
        user_pk = (
            user_model._default_manager.filter(**{user_model.USERNAME_FIELD: value})
            .values_list("pk", flat=True).first()
        )
        if user_pk is not None:
            return queryset.filter(user_id=user_pk)
        return queryset.filter(username=value)


class CredentialIdFilter(InputFilter):
    title = _("credential id")
    parameter_name = "credential_id"

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.cleaned_value()
        return queryset.filter(credential_id=value) if value else queryset


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """The audit trail: read-only for everyone, fast at millions of rows (DESIGN §5).

    Nothing on the list page is an unbounded ``COUNT(*)`` or ``DISTINCT``: the
    paginator counts at most ``count_cap`` rows, the date drill-down is one
    MIN/MAX query, facets are off, only ``at`` is sortable, and filters and
    search use indexed columns (the user filter falls back to the unindexed
    ``username`` only for users that no longer exist).
    """

    list_display = (
        "at", "event", "scheme", "outcome", "reason", "username", "credential_id", "ip", "method", "path",
    )
    list_filter = (
        "outcome", SchemeFilter, ReasonFilter, EventFilter, UsernameFilter, CredentialIdFilter,
    )
    date_hierarchy = "at"
    search_fields = ("=credential_id", "^username", "=ip")
    search_help_text = _("An exact credential id or IP address, or the start of a username.")
    search_user_limit: ClassVar[int] = 100
    sortable_by = ("at",)
    list_per_page = 100
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = CappedCountPaginator
    change_list_template = "django_apiauth/admin/auditevent_change_list.html"
    fields = (
        "at", "event", "scheme", "outcome", "reason", "user", "username", "credential_id", "ip",
        "user_agent", "method", "path", "request_id", "detail", "console_links",
    )
    readonly_fields = fields

    @admin.display(description=_("audit console"))
    def console_links(self, obj: AuditEvent) -> SafeString | str:
        links = [(url, label) for url, label in (
            (_audit_console_url("event", obj.pk), gettext("this event")),
            (_audit_console_url("credential", obj.credential_id) if obj.credential_id else "",
             gettext("credential timeline")),
            (_audit_console_url("user", obj.user_id) if obj.user_id else "", gettext("user timeline")),
        ) if url]
        if not links:
            return self.get_empty_value_display()
        return format_html_join(" · ", '<a href="{}">{}</a>', links)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return AuditEventChangeList

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        """``search_fields`` made index-friendly.

        Django's ``=`` and ``^`` are case-insensitive (``UPPER(col)``), which
        no plain index serves, and ``username`` has no index of its own. So
        the credential id and IP are compared exactly (the IP only when the
        term is one) and the username prefix is resolved on the user table
        (at most ``search_user_limit`` users), then matched on the indexed
        ``user`` column. Events of deleted users are found with the user filter.
        """
        term = search_term.strip()
        if not term:
            return queryset, False
        condition = Q(credential_id=term)
        ip = _valid_ip(term)
        if ip is not None:
            condition |= Q(ip=ip)
        user_model = get_user_model()
        user_pks = list(
            user_model._default_manager.filter(**{f"{user_model.USERNAME_FIELD}__startswith": term})
            .order_by().values_list("pk", flat=True)[: self.search_user_limit]
        )
        if user_pks:
            condition |= Q(user_id__in=user_pks)
        return queryset.filter(condition), False


class LockoutStateFilter(admin.SimpleListFilter):
    title = _("state")
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [("active", _("active")), ("ended", _("ended"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "active":
            return queryset.filter(expires_at__gt=timezone.now())
        if self.value() == "ended":
            return queryset.filter(expires_at__lte=timezone.now())
        return queryset


@admin.register(Lockout)
class LockoutAdmin(admin.ModelAdmin):
    """Lockouts (docs/rate-limits.md): read-only, with a *lift* action.

    Lifting clears the lockout's cache marker and failure counter, deletes the
    row and writes a ``lockout.lifted`` audit row. Deleting a row lifts it too.
    """

    list_display = ("started_at", "scope", "scheme", "credential_id", "ip", "failures",
                    "expires_at", "active_display")
    list_filter = (LockoutStateFilter, "scope", "scheme")
    search_fields = ("credential_id",)  # see get_search_results
    actions = ("lift_selected",)

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Any],
                           search_term: str) -> tuple[QuerySet[Any], bool]:
        """Exact credential id, or an exact address when the term is one (an
        address column compared with arbitrary text is an error on PostgreSQL)."""
        term = search_term.strip()
        if not term:
            return queryset, False
        condition = Q(credential_id=term)
        ip = _valid_ip(term)
        if ip is not None:
            condition |= Q(ip=ip)
        return queryset.filter(condition), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("active"), boolean=True)
    def active_display(self, obj: Lockout) -> bool:
        return obj.is_active

    @admin.action(description=_("Lift the selected lockouts"), permissions=["delete"])
    def lift_selected(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        lifted = 0
        for item in queryset:
            lockout.lift(item, actor=request.user)
            lifted += 1
        self.message_user(request, ngettext(
            "%(count)d lockout lifted.", "%(count)d lockouts lifted.", lifted,
        ) % {"count": lifted}, messages.SUCCESS)

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        lockout.lift(obj, actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for item in queryset:
            lockout.lift(item, actor=request.user)


# Admin of the features that live in their own packages.
from .sso import admin as _sso_admin  # noqa: E402,F401
from .sso.oidc import admin as _oidc_admin  # noqa: E402,F401
from .sso.saml import admin as _saml_admin  # noqa: E402,F401
