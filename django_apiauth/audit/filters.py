"""The filters of the audit pages: one form validates every query parameter.

Every value comes from the query string, so every value is hostile until the
form has cleaned it: text is bounded and may not carry control characters
(a NUL byte is refused here, before PostgreSQL would refuse it with a
``DataError``), codes must look like codes, an IP address must parse, dates
must be dates within range and the keyset cursor must be two bounded
integers. An invalid filter is answered with **400** and the form's errors,
never with a 500 and never with an unfiltered list.

:meth:`AuditFilterForm.apply` turns the cleaned values into a queryset whose
``WHERE`` clause matches the leading columns of an
:class:`~django_apiauth.models.AuditEvent` index (``at``, ``credential_id``,
``user``; ``reason`` / ``ip`` / ``scheme`` with ``outcome=failure``), bounded
by a time window unless an indexed identity filter (credential, user) makes
the window unnecessary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.core.validators import RegexValidator
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from ..models import AuditEvent

#: Presets of the time-range select, newest first; ``all`` means no lower bound.
RANGES: dict[str, timedelta | None] = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "90d": timedelta(days=90),
    "all": None,
}
RANGE_CHOICES = [
    ("1h", _("last hour")), ("24h", _("last 24 hours")), ("7d", _("last 7 days")),
    ("30d", _("last 30 days")), ("90d", _("last 90 days")), ("all", _("all time")),
    ("", _("custom: From / Until")),
]
DEFAULT_LIST_RANGE = "7d"

_CODE = RegexValidator(r"^[A-Za-z0-9_.:\-]+\Z", _("Letters, digits and _ . : - only."), "invalid")
_CURSOR_RE = re.compile(r"^(\d{1,17})-(\d{1,19})\Z")
_MAX_ID = 2**63 - 1
# Unix microseconds of the last representable datetime (9999-12-31).
_MAX_MICROS = 253402300799 * 1_000_000
# Characters no filter value may contain: C0/C1 controls, line separators and
# bidirectional controls (what core.audit.sanitise replaces on write).
_UNSAFE_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _no_control_characters(value: str) -> None:
    if _UNSAFE_RE.search(value):
        raise forms.ValidationError(_("Control characters are not allowed."), code="invalid")


class FilterText(forms.CharField):
    """A bounded, stripped text filter without control characters (NUL included)."""

    def __init__(self, *, max_length: int, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        super().__init__(max_length=max_length, strip=True, **kwargs)
        self.validators.append(_no_control_characters)


@dataclass(frozen=True)
class Cursor:
    """A keyset position: the ``(at, id)`` of a row, newest-first order."""

    at: datetime
    id: int

    def encode(self) -> str:
        delta = self.at - datetime(1970, 1, 1, tzinfo=UTC)
        micros = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
        return f"{micros}-{self.id}"

    @classmethod
    def of(cls, event: AuditEvent) -> Cursor:
        return cls(event.at, event.id)


class CursorField(forms.CharField):
    """``<unix microseconds>-<id>``; anything else (huge, negative, text) is invalid."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(required=False, **kwargs)

    def to_python(self, value: Any) -> Cursor | None:  # type: ignore[override]
        text = super().to_python(value)
        if not text:
            return None
        match = _CURSOR_RE.match(text) if len(text) <= 40 else None
        if not match:
            raise forms.ValidationError(_("Not a page position."), code="invalid")
        micros, pk = int(match[1]), int(match[2])
        if micros > _MAX_MICROS or pk > _MAX_ID:
            raise forms.ValidationError(_("Not a page position."), code="invalid")
        at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
        return Cursor(at, pk)


class BoundedDateTimeField(forms.DateTimeField):
    """A date and time (``2026-01-31T08:00``, ISO 8601); naive values are in the current time zone."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(required=False, **kwargs)

    def to_python(self, value: Any) -> datetime | None:
        if isinstance(value, str):
            if len(value) > 40:
                raise forms.ValidationError(_("Enter a valid date/time."), code="invalid")
            _no_control_characters(value)
        try:
            result = super().to_python(value)
        except OverflowError:  # year 9999 plus a time-zone offset
            raise forms.ValidationError(_("Enter a valid date/time."), code="invalid") from None
        if result is not None and not (datetime(1970, 1, 1, tzinfo=UTC) <= result
                                       <= datetime(9999, 1, 1, tzinfo=UTC)):
            raise forms.ValidationError(_("Enter a date between 1970 and 9999."), code="invalid")
        return result


class AuditFilterForm(forms.Form):
    """The filters of the event list and of the exports (all optional)."""

    range = forms.ChoiceField(label=_("Time range"), choices=RANGE_CHOICES, required=False)
    since = BoundedDateTimeField(label=_("From"))
    until = BoundedDateTimeField(label=_("Until"))
    scheme = FilterText(label=_("Scheme"), max_length=32, validators=[_CODE])
    outcome = forms.ChoiceField(
        label=_("Outcome"), required=False,
        choices=[("", _("any")), *AuditEvent.OUTCOMES],
    )
    reason = FilterText(label=_("Reason"), max_length=40, validators=[_CODE])
    event = FilterText(label=_("Event"), max_length=40, validators=[_CODE])
    user = FilterText(label=_("User"), max_length=150,
                      help_text=_("Exact username."))
    credential = FilterText(label=_("Credential id"), max_length=100,
                            help_text=_("Exact public id, e.g. an API key's lookup id."))
    ip = forms.GenericIPAddressField(label=_("IP address"), required=False, unpack_ipv4=False)
    q = FilterText(label=_("Path contains"), max_length=200)
    before = CursorField()
    after = CursorField()

    #: Query parameters that are filters (not paging): kept in links and exports.
    FILTER_FIELDS = ("range", "since", "until", "scheme", "outcome", "reason", "event", "user",
                     "credential", "ip", "q")

    def __init__(self, data: Any = None, *, default_range: str = DEFAULT_LIST_RANGE,
                 **kwargs: Any) -> None:
        self.default_range = default_range
        if data is not None and not any(data.get(name) for name in ("range", "since", "until")):
            # Show (and link to) the range that applies, not the select's first option.
            data = data.copy()
            data["range"] = "all" if _indexed_identity(data) else default_range
        super().__init__(data, **kwargs)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until and since > until:
            self.add_error("until", _("“Until” must be later than “From”."))
        if cleaned.get("before") and cleaned.get("after"):
            self.add_error(None, _("Page either backwards or forwards, not both."))
        return cleaned

    # -- what the cleaned values mean -------------------------------------------

    @property
    def identity_filter(self) -> bool:
        """A credential or (existing) user filter: served by its own index, no window needed."""
        return _indexed_identity(self.cleaned_data)

    def window(self, now: datetime | None = None) -> tuple[datetime | None, datetime | None]:
        """``(since, until)``: explicit dates win; else the preset (or the default)."""
        now = now or timezone.now()
        since, until = self.cleaned_data.get("since"), self.cleaned_data.get("until")
        if since or until:
            return since, until
        preset = self.cleaned_data.get("range") or (
            "all" if self.identity_filter else self.default_range
        )
        delta = RANGES[preset]
        return (now - delta if delta is not None else None), None

    def effective_range(self) -> str:
        if self.cleaned_data.get("since") or self.cleaned_data.get("until"):
            return ""
        return self.cleaned_data.get("range") or ("all" if self.identity_filter else self.default_range)

    def apply(self, queryset: QuerySet[AuditEvent], now: datetime | None = None) -> QuerySet[AuditEvent]:
        """The filtered queryset (not ordered, not paged)."""
        data = self.cleaned_data
        since, until = self.window(now)
        if since is not None:
            queryset = queryset.filter(at__gte=since)
        if until is not None:
            queryset = queryset.filter(at__lte=until)
        for field, column in (("scheme", "scheme"), ("outcome", "outcome"), ("reason", "reason"),
                              ("event", "event"), ("credential", "credential_id"), ("ip", "ip")):
            if data.get(field):
                queryset = queryset.filter(**{column: data[field]})
        if data.get("user"):
            queryset = queryset.filter(user_condition(data["user"]))
        if data.get("q"):
            # ``contains`` escapes % and _ (and \) itself: they match literally.
            queryset = queryset.filter(path__contains=data["q"])
        return queryset

    def query_items(self) -> list[tuple[str, str]]:
        """The filter parameters as given (cleaned), for links to other pages and exports."""
        items = []
        for name in self.FILTER_FIELDS:
            value = self.cleaned_data.get(name) if self.is_bound and hasattr(self, "cleaned_data") else None
            if value in (None, ""):
                continue
            if isinstance(value, datetime):
                value = timezone.localtime(value).strftime("%Y-%m-%dT%H:%M:%S")
            items.append((name, str(value)))
        return items


def _indexed_identity(data: Any) -> bool:
    """A credential filter, or a user filter naming an existing user (the indexed ``user``
    column; a deleted user's rows are found by the unindexed ``username``, so they keep
    the default window)."""
    if data.get("credential"):
        return True
    username = data.get("user")
    if not username or not isinstance(username, str) or len(username) > 150 or _UNSAFE_RE.search(username):
        return False
    user_model = get_user_model()
    return bool(user_model._default_manager.filter(**{user_model.USERNAME_FIELD: username.strip()})
                .exists())


def user_condition(username: str) -> Q:
    """Rows of the user called ``username``: the indexed ``user`` column when the
    user exists, else the kept ``username`` of a deleted user's rows."""
    user_model = get_user_model()
    user_pk = (
        user_model._default_manager.filter(**{user_model.USERNAME_FIELD: username})
        .values_list("pk", flat=True).first()
    )
    if user_pk is not None:
        return Q(user_id=user_pk)
    return Q(username=username)
