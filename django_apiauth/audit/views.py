"""The audit console under ``/auth/audit/`` (issue 7).

Staff users with the ``django_apiauth.view_auditevent`` permission only:
anonymous visitors are sent to the admin login, everyone else gets 403.
Pages extend ``admin/base_site.html``, so they look like (and link into) the
admin. Every query parameter goes through
:class:`~django_apiauth.audit.filters.AuditFilterForm` (invalid → 400), every
list is keyset-paged (:mod:`django_apiauth.audit.queries`: no ``COUNT(*)``,
no ``OFFSET``), every stored value is made inert before it is shown
(:mod:`django_apiauth.audit.text`) and escaped by the template engine.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import wraps
from typing import Any
from urllib.parse import quote, urlencode

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth import get_user_model
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST, require_safe

from ..core import audit, lifecycle, registry
from ..core.models import AbstractCredential
from ..models import AuditEvent
from . import charts, credentials, export, killswitch, queries
from .filters import AuditFilterForm, Cursor
from .text import inert

PER_PAGE = 50
_MAX_PK = 2**63 - 1
PERMISSION = "django_apiauth.view_auditevent"


# -- access ----------------------------------------------------------------------


def _login_url() -> str | None:
    try:
        return reverse("admin:login")
    except NoReverseMatch:  # no admin mounted: settings.LOGIN_URL
        return None


def audit_staff_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Anonymous → the admin login (then back); not staff or no permission → 403."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        user = request.user
        if not user.is_authenticated:
            return redirect_to_login(request.get_full_path(), _login_url())
        if not (user.is_active and user.is_staff and user.has_perm(PERMISSION)):
            raise PermissionDenied
        # This process's buffered success rows first (other processes write
        # theirs within APIAUTH_AUDIT_BUFFER_SECONDS).
        audit.flush()
        return view(request, *args, **kwargs)

    return never_cache(wrapper)


def _context(request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
    return {
        **admin.site.each_context(request),
        "title": title,
        "subtitle": None,
        "opts": AuditEvent._meta,
        "nav": _nav(request),
        **extra,
    }


def _nav(request: HttpRequest) -> list[dict[str, Any]]:
    items = [
        (gettext("Overview"), reverse("django_apiauth:audit:overview")),
        (gettext("Events"), reverse("django_apiauth:audit:events")),
        (gettext("Credentials"), reverse("django_apiauth:audit:credentials")),
    ]
    return [{"label": label, "url": url, "current": request.path == url} for label, url in items]


# -- rows ------------------------------------------------------------------------


def _fmt(value: datetime | None) -> str:
    if value is None:
        return "—"
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S")


class RowUrls:
    """The per-row links, reversed once per page instead of four times per row."""

    def __init__(self) -> None:
        self.event = reverse("django_apiauth:audit:event", args=[1]).rsplit("1", 1)
        self.user = reverse("django_apiauth:audit:user", args=[1]).rsplit("1", 1)
        self.credential = reverse("django_apiauth:audit:credential", args=["X"]).rsplit("X", 1)
        self.events = reverse("django_apiauth:audit:events")

    def for_credential(self, credential_id: str) -> str:
        if not credential_id or "/" in credential_id:
            return ""
        # What reverse() would produce (django.urls.resolvers quotes the same way).
        return quote(credential_id, safe=_URL_SAFE).join(self.credential)


_URL_SAFE = "!$&'()*+,;=" + "/~:@"


def event_row(event: AuditEvent, urls: RowUrls | None = None) -> dict[str, Any]:
    """What a list row shows: inert text and the links of the row."""
    urls = urls or RowUrls()
    return {
        "id": event.id,
        "at": _fmt(event.at),
        "event": inert(event.event),
        "scheme": inert(event.scheme),
        "outcome": event.outcome,
        "reason": inert(event.reason),
        "username": inert(event.username),
        "credential_id": inert(event.credential_id),
        "ip": event.ip or "",
        "request": inert(f"{event.method} {event.path}".strip()),
        "detail_url": str(event.id).join(urls.event),
        "user_url": str(event.user_id).join(urls.user) if event.user_id else "",
        "credential_url": urls.for_credential(event.credential_id),
        "ip_url": (urls.events + "?" + urlencode({"ip": event.ip, "range": "all"}) if event.ip else ""),
    }


_LIST_FIELDS = ("id", "at", "event", "scheme", "outcome", "reason", "user_id", "username",
                "credential_id", "ip", "method", "path")


def _paged(request: HttpRequest, form: AuditFilterForm, queryset: Any) -> dict[str, Any]:
    page = queries.keyset_page(
        form.apply(queryset.only(*_LIST_FIELDS)),
        before=form.cleaned_data.get("before"), after=form.cleaned_data.get("after"),
        per_page=PER_PAGE,
    )
    filters = form.query_items()
    urls = RowUrls()

    def link(**cursor: Cursor) -> str:
        return "?" + urlencode([*filters, *((k, v.encode()) for k, v in cursor.items())])

    exports = urlencode(filters)
    return {
        "rows": [event_row(e, urls) for e in page.rows],
        "older_url": link(before=page.older) if page.older else "",
        "newer_url": link(after=page.newer) if page.newer else "",
        "newest_url": "?" + urlencode(filters) if page.newer else "",
        "export_csv": reverse("django_apiauth:audit:export", args=["csv"]) + "?" + exports,
        "export_jsonl": reverse("django_apiauth:audit:export", args=["jsonl"]) + "?" + exports,
        "window": form.window(),
        "effective_range": form.effective_range(),
    }


def _bad_request(request: HttpRequest, title: str, form: forms.Form, **extra: Any) -> HttpResponse:
    return render(request, "django_apiauth/audit/events.html", _context(
        request, title, form=form, rows=[], invalid=True, **extra,
    ), status=400)


# -- overview --------------------------------------------------------------------


class OverviewForm(forms.Form):
    range = forms.ChoiceField(
        required=False, label=_("Time range"),
        choices=[("1h", _("last hour")), ("24h", _("last 24 hours")), ("7d", _("last 7 days")),
                 ("30d", _("last 30 days"))],
    )

    def __init__(self, data: Any) -> None:
        if not data.get("range"):  # show the range that applies, not the first option
            data = data.copy()
            data["range"] = queries.DEFAULT_OVERVIEW_RANGE
        super().__init__(data)


@require_safe
@audit_staff_required
def overview(request: HttpRequest) -> HttpResponse:
    """Charts of a bounded window: attempts over time, failures by reason, top IPs and credentials."""
    form = OverviewForm(request.GET)
    title = gettext("Authentication overview")
    if not form.is_valid():
        return render(request, "django_apiauth/audit/overview.html",
                      _context(request, title, form=form, invalid=True), status=400)
    range_key = form.cleaned_data["range"] or queries.DEFAULT_OVERVIEW_RANGE
    data = queries.overview(range_key)
    events_url = reverse("django_apiauth:audit:events")

    def events_link(**params: Any) -> str:
        return events_url + "?" + urlencode(params)

    day_buckets = data.bucket_size >= timedelta(days=1)

    def bucket_label(bucket: Any) -> str:
        local = timezone.localtime(bucket.start)
        return local.strftime("%m-%d") if day_buckets else local.strftime("%H:%M")

    def bucket_tooltip(bucket: Any) -> str:
        return f"{_fmt(bucket.start)} to {_fmt(bucket.end)}"

    def bucket_href(bucket: Any) -> str:
        local = "%Y-%m-%dT%H:%M:%S"
        return events_link(since=timezone.localtime(bucket.start).strftime(local),
                           until=timezone.localtime(bucket.end).strftime(local))

    since_param = timezone.localtime(data.capped_since or data.since).strftime("%Y-%m-%dT%H:%M:%S")
    time_chart = charts.time_chart(
        charts.columns_from(data.buckets, bucket_label, bucket_tooltip, bucket_href),
        title=gettext("Attempts over time"), chart_id="chart-attempts",
    )
    reasons_chart = charts.bar_chart(
        [charts.Bar(reason, n, n, events_link(outcome="failure", reason=reason, since=since_param))
         for reason, n in data.reasons],
        title=gettext("Failures by reason"), chart_id="chart-reasons",
        empty=gettext("No failures in this period."),
    )
    ips_chart = charts.bar_chart(
        [charts.Bar(ip, n, n, events_link(outcome="failure", ip=ip, since=since_param))
         for ip, n in data.ips],
        title=gettext("Top failing IP addresses"), chart_id="chart-ips",
        empty=gettext("No failures from a known address in this period."),
    )
    credentials_chart = charts.bar_chart(
        [charts.Bar(cid, n, failed, reverse("django_apiauth:audit:credential", args=[cid])
                    if "/" not in cid else events_link(credential=cid))
         for cid, n, failed in data.credentials],
        title=gettext("Top credentials"), chart_id="chart-credentials",
        empty=gettext("No credential was presented in this period."),
    )
    total = data.total
    return render(request, "django_apiauth/audit/overview.html", _context(
        request, title, form=form, data=data, range_key=range_key,
        since=_fmt(data.since), until=_fmt(data.until),
        capped_since=_fmt(data.capped_since) if data.capped_since else "",
        row_cap=queries.OVERVIEW_ROW_CAP,
        total=total, failures=data.failures,
        failure_rate=f"{100 * data.failures / total:.1f}" if total else "0.0",
        time_chart=time_chart, reasons_chart=reasons_chart, ips_chart=ips_chart,
        credentials_chart=credentials_chart,
        events_url=events_link(range=range_key),
        failures_url=events_link(range=range_key, outcome="failure"),
    ))


# -- event list, detail, export ------------------------------------------------------


@require_safe
@audit_staff_required
def events(request: HttpRequest) -> HttpResponse:
    """The filterable, keyset-paged event list."""
    form = AuditFilterForm(request.GET)
    title = gettext("Audit events")
    if not form.is_valid():
        return _bad_request(request, title, form)
    return render(request, "django_apiauth/audit/events.html", _context(
        request, title, form=form, **_paged(request, form, AuditEvent.objects.all()),
    ))


def _pk(value: int) -> int:
    if value > _MAX_PK:  # a huge number in the URL: no such row (never an overflow)
        raise Http404
    return value


@require_safe
@audit_staff_required
def event_detail(request: HttpRequest, pk: int) -> HttpResponse:
    event = AuditEvent.objects.filter(pk=_pk(pk)).first()
    if event is None:
        raise Http404
    row = event_row(event)
    fields = [
        (gettext("at"), _fmt(event.at)), (gettext("event"), row["event"]),
        (gettext("scheme"), row["scheme"]), (gettext("outcome"), event.outcome),
        (gettext("reason"), row["reason"]), (gettext("user"), row["username"]),
        (gettext("credential id"), row["credential_id"]), (gettext("IP address"), row["ip"]),
        (gettext("user agent"), inert(event.user_agent)), (gettext("method"), inert(event.method)),
        (gettext("path"), inert(event.path)), (gettext("request id"), inert(event.request_id)),
    ]
    return render(request, "django_apiauth/audit/event_detail.html", _context(
        request, gettext("Audit event %(id)s") % {"id": event.id},
        event=event, row=row, fields=fields,
        detail_json=json.dumps(export.inert_detail(event.detail), indent=2, sort_keys=True,
                                      ensure_ascii=True, default=str),
    ))


@require_safe
@audit_staff_required
def export_events(request: HttpRequest, fmt: str) -> HttpResponse:
    """CSV or JSON lines of every row the filters match, streamed."""
    if fmt not in export.FORMATS:
        raise Http404
    form = AuditFilterForm(request.GET)
    if not form.is_valid():
        return _bad_request(request, gettext("Audit events"), form)
    queryset = form.apply(AuditEvent.objects.all())
    stream = export.csv_stream(queryset) if fmt == "csv" else export.jsonl_stream(queryset)
    content_type, extension = export.FORMATS[fmt]
    response = StreamingHttpResponse(stream, content_type=content_type)
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.{extension}"'
    response["X-Content-Type-Options"] = "nosniff"
    return response


# -- timelines -------------------------------------------------------------------


def find_credential(credential_id: str) -> AbstractCredential | None:
    """The credential of any kind whose public id is ``credential_id``, if it still exists."""
    for model in registry.credential_models().values():
        found = (model._default_manager.select_related("owner")
                 .filter(**{model.lookup_field: credential_id}).first())
        if found is not None:
            return found
    return None


def _admin_change_url(obj: Any) -> str:
    opts = obj._meta
    try:
        return reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
    except NoReverseMatch:
        return ""


def _admin_changelist_url(model: Any) -> str:
    opts = model._meta
    try:
        return reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
    except NoReverseMatch:
        return ""


def credential_facts(credential: AbstractCredential, user: Any) -> dict[str, Any]:
    """A credential for templates: inert names, its state and the admin links the user may use."""
    opts = credential._meta
    app, name = opts.app_label, opts.model_name
    can_change = user.has_perm(f"{app}.change_{name}")
    can_add = user.has_perm(f"{app}.add_{name}")
    return {
        "kind": credential.credential_kind,
        "kind_label": str(opts.verbose_name),
        "pk": credential.pk,
        "public_id": inert(credential.public_id),
        "name": inert(credential.name),
        "owner": inert(credential.owner.get_username()),
        "owner_url": reverse("django_apiauth:audit:user", args=[credential.owner_id]),
        "state": credential.state(),
        "expires_at": _fmt(credential.expires_at),
        "last_used_at": _fmt(credential.last_used_at),
        "created_at": _fmt(credential.created_at),
        "timeline_url": (reverse("django_apiauth:audit:credential", args=[credential.public_id])
                         if "/" not in credential.public_id else ""),
        "change_url": _admin_change_url(credential) if user.has_perm(f"{app}.view_{name}") else "",
        "changelist_url": _admin_changelist_url(type(credential)),
        "can_rotate": can_change and can_add and credential.revoked_at is None,
        "can_revoke": can_change and credential.revoked_at is None,
    }


@require_safe
@audit_staff_required
def credential_timeline(request: HttpRequest, credential_id: str) -> HttpResponse:
    """Every event of one credential (the ``(credential_id, at)`` index), newest first."""
    if len(credential_id) > 100 or credential_id != inert(credential_id):
        raise Http404
    data = request.GET.copy()
    data["credential"] = credential_id
    form = AuditFilterForm(data, default_range="all")
    title = gettext("Credential %(id)s") % {"id": credential_id}
    if not form.is_valid():
        return _bad_request(request, title, form)
    credential = find_credential(credential_id)
    return render(request, "django_apiauth/audit/timeline.html", _context(
        request, title, form=form, timeline="credential",
        credential=credential_facts(credential, request.user) if credential else None,
        **_paged(request, form, AuditEvent.objects.all()),
    ))


@require_safe
@audit_staff_required
def user_timeline(request: HttpRequest, pk: int) -> HttpResponse:
    """Every event of one user (the ``(user, at)`` index), their credentials and the kill switch."""
    user_model = get_user_model()
    subject = user_model._default_manager.filter(pk=_pk(pk)).first()
    form = AuditFilterForm(request.GET, default_range="all")
    name = subject.get_username() if subject is not None else f"#{pk}"
    title = gettext("User %(name)s") % {"name": inert(name)}
    if not form.is_valid():
        return _bad_request(request, title, form)
    owned = killswitch.live_credentials(subject) if subject is not None else []
    return render(request, "django_apiauth/audit/timeline.html", _context(
        request, title, form=form, timeline="user", subject=subject, subject_pk=pk,
        subject_name=inert(name),
        owned=[credential_facts(c, request.user) for c in owned],
        can_kill=subject is not None and bool(owned) and killswitch.can_revoke_all(request.user),
        kill_url=reverse("django_apiauth:audit:revoke_all", args=[pk]),
        **_paged(request, form, AuditEvent.objects.filter(user_id=pk)),
    ))


# -- kill switch -----------------------------------------------------------------


class KillSwitchForm(forms.Form):
    reason = forms.CharField(max_length=200, strip=True, label=_("Reason"))


@require_POST
@audit_staff_required
def revoke_all(request: HttpRequest, pk: int) -> HttpResponse:
    """POST (CSRF-protected): revoke every credential of the user, audited."""
    if not killswitch.can_revoke_all(request.user):
        raise PermissionDenied
    subject = get_user_model()._default_manager.filter(pk=_pk(pk)).first()
    if subject is None:
        raise Http404
    timeline = reverse("django_apiauth:audit:user", args=[pk])
    form = KillSwitchForm(request.POST)
    if not form.is_valid():
        messages.error(request, gettext("Give a reason to revoke every credential of this user."))
        return HttpResponseRedirect(timeline)
    try:
        result = killswitch.revoke_all_for_user(
            subject, reason=form.cleaned_data["reason"], actor=request.user, via="audit-console",
        )
    except lifecycle.LifecycleError as exc:
        messages.error(request, str(exc))
        return HttpResponseRedirect(timeline)
    except audit.AuditUnavailable:
        return HttpResponse(gettext("The audit trail is unavailable: nothing was revoked. Try again."),
                            status=503, content_type="text/plain")
    messages.success(request, gettext("Revoked %(count)d credentials of %(user)s.") % {
        "count": len(result.revoked), "user": subject.get_username(),
    })
    return HttpResponseRedirect(timeline)


# -- credential overview -----------------------------------------------------------


class CredentialOverviewForm(forms.Form):
    expiring_days = forms.IntegerField(label=_("Expiring within (days)"), min_value=1,
                                       max_value=3650, required=False)
    unused_days = forms.IntegerField(label=_("Unused for (days)"), min_value=1, max_value=3650,
                                     required=False)
    grace_days = forms.IntegerField(label=_("Used after rotation grace, last (days)"),
                                    min_value=1, max_value=365, required=False)


@require_safe
@audit_staff_required
def credential_overview(request: HttpRequest) -> HttpResponse:
    """Every kind of credential needing attention: expiring, unused, used after rotation grace."""
    form = CredentialOverviewForm(request.GET)
    title = gettext("Credentials needing attention")
    if not form.is_valid():
        return render(request, "django_apiauth/audit/credentials.html",
                      _context(request, title, form=form, invalid=True), status=400)
    expiring_days = form.cleaned_data["expiring_days"] or 14
    unused_days = form.cleaned_data["unused_days"] or 90
    grace_days = form.cleaned_data["grace_days"] or 30
    models = credentials.kinds_for(request.user)
    now = timezone.now()

    def present(sections: list[credentials.KindSection]) -> list[dict[str, Any]]:
        return [
            {
                "kind": section.kind,
                "label": str(section.model._meta.verbose_name_plural),
                "changelist_url": _admin_changelist_url(section.model),
                "truncated": section.truncated,
                "limit": credentials.LIMIT,
                "entries": [
                    {**credential_facts(e.credential, request.user),
                     "last_seen": _fmt(e.last_seen), "attempts": e.attempts}
                    for e in section.entries
                ],
            }
            for section in sections
        ]

    expiring = present(credentials.expiring(models, expiring_days, now))
    unused = present(credentials.unused(models, unused_days, now))
    used_after_grace = present(credentials.used_after_grace(models, grace_days, now))

    def empty(sections: list[dict[str, Any]]) -> bool:
        return not any(section["entries"] for section in sections)

    return render(request, "django_apiauth/audit/credentials.html", _context(
        request, title, form=form,
        expiring_days=expiring_days, unused_days=unused_days, grace_days=grace_days,
        expiring=expiring, unused=unused, used_after_grace=used_after_grace,
        expiring_empty=empty(expiring), unused_empty=empty(unused), grace_empty=empty(used_after_grace),
        action_checkbox_name=helpers.ACTION_CHECKBOX_NAME,
    ))
