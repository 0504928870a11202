"""Server-rendered SVG charts of the audit overview: no JavaScript, no CDN, no build.

Each function returns one inline ``<svg>`` element built with
:func:`~django.utils.html.format_html`, so every label (a reason code, an IP
address, a credential id: all user-influenced) is HTML-escaped and passed
through :func:`~django_apiauth.audit.text.inert` first. Bars link to the
event list filtered to what they count; ``<title>`` children give the exact
numbers on hover and to screen readers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext

from .text import inert

SUCCESS_COLOUR = "#417690"
FAILURE_COLOUR = "#ba2121"
_FONT = 'font-family="system-ui, sans-serif" font-size="11" fill="currentColor"'


@dataclass(frozen=True)
class Column:
    """One bar of the time chart: two stacked parts."""

    label: str  # under the axis (may be empty)
    tooltip: str
    success: int
    failure: int
    href: str


@dataclass(frozen=True)
class Bar:
    """One bar of a horizontal bar chart (``failure`` is the red part of ``value``)."""

    label: str
    value: int
    failure: int
    href: str


def _join(parts: Sequence[SafeString]) -> SafeString:
    return mark_safe("".join(parts))  # noqa: S308 (every part comes from format_html)


def _f(value: float) -> str:
    return f"{value:.1f}"


def _short(text: str, limit: int) -> str:
    text = inert(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def nice_ceiling(peak: int) -> int:
    """The smallest 4 x (1, 2 or 5 x 10^k) at or above ``peak``: whole, round grid lines."""
    step = 1
    while step * 4 < peak:
        for factor in (2, 2.5, 2):  # 1 → 2 → 5 → 10 → 20 → 50 → …
            step = int(step * factor)
            if step * 4 >= peak:
                break
    return step * 4


def time_chart(columns: Sequence[Column], *, title: str, chart_id: str) -> SafeString:
    """Stacked columns over time: successes (blue) under failures (red)."""
    width, height = 760, 240
    left, right, top, bottom = 48, 10, 28, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = nice_ceiling(max((c.success + c.failure for c in columns), default=0))
    slot = plot_w / max(len(columns), 1)
    bar_w = max(slot * 0.8, 1.0)
    parts: list[SafeString] = []
    for i in range(5):  # horizontal grid and y labels
        value = peak * i / 4
        y = top + plot_h - plot_h * i / 4
        parts.append(format_html(
            '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="currentColor" stroke-opacity="0.15"/>'
            '<text x="{}" y="{}" text-anchor="end" {}>{}</text>',
            left, width - right, _f(y), _f(y), left - 6, _f(y + 4), mark_safe(_FONT),  # noqa: S308
            f"{value:g}",
        ))
    label_every = max(len(columns) // 8, 1)
    for i, column in enumerate(columns):
        x = left + i * slot + (slot - bar_w) / 2
        total = column.success + column.failure
        success_h = plot_h * column.success / peak
        failure_h = plot_h * column.failure / peak
        base = top + plot_h
        tooltip = gettext("%(when)s: %(total)d attempts, %(failures)d failed") % {
            "when": column.tooltip, "total": total, "failures": column.failure,
        }
        parts.append(format_html(
            '<a href="{}"><g class="apiauth-bar"><title>{}</title>'
            '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"/>'
            '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"/>'
            '<rect x="{}" y="{}" width="{}" height="{}" fill="transparent"/></g></a>',
            column.href, tooltip,
            _f(x), _f(base - success_h), _f(bar_w), _f(success_h), SUCCESS_COLOUR,
            _f(x), _f(base - success_h - failure_h), _f(bar_w), _f(failure_h), FAILURE_COLOUR,
            _f(x), top, _f(bar_w), plot_h,
        ))
        if column.label and i % label_every == 0:
            parts.append(format_html(
                '<text x="{}" y="{}" text-anchor="middle" {}>{}</text>',
                _f(left + i * slot + slot / 2), height - bottom + 16, mark_safe(_FONT),  # noqa: S308
                inert(column.label),
            ))
    legend = format_html(
        '<rect x="{}" y="6" width="10" height="10" fill="{}"/><text x="{}" y="15" {}>{}</text>'
        '<rect x="{}" y="6" width="10" height="10" fill="{}"/><text x="{}" y="15" {}>{}</text>',
        left, SUCCESS_COLOUR, left + 14, mark_safe(_FONT), gettext("success"),  # noqa: S308
        left + 90, FAILURE_COLOUR, left + 104, mark_safe(_FONT), gettext("failure"),  # noqa: S308
    )
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" id="{}" class="apiauth-chart" role="img" '
        'viewBox="0 0 {} {}" width="100%" preserveAspectRatio="xMinYMin meet" aria-labelledby="{}-title">'
        '<title id="{}-title">{}</title>{}'
        '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="currentColor" stroke-opacity="0.5"/>{}</svg>',
        chart_id, width, height, chart_id, chart_id, title, legend,
        left, width - right, top + plot_h, top + plot_h, _join(parts),
    )


def bar_chart(bars: Sequence[Bar], *, title: str, chart_id: str, empty: str,
              label_chars: int = 26) -> SafeString:
    """Horizontal bars with their labels and values (top N lists)."""
    width, row_h, label_w = 460, 22, 170
    height = max(len(bars), 1) * row_h + 12
    if not bars:
        return format_html(
            '<svg xmlns="http://www.w3.org/2000/svg" id="{}" class="apiauth-chart" role="img" '
            'viewBox="0 0 {} 36" width="100%" style="max-width: {}px" aria-label="{}">'
            '<text x="0" y="22" {}>{}</text></svg>',
            chart_id, width, width, title, mark_safe(_FONT), empty,  # noqa: S308
        )
    peak = max(b.value for b in bars) or 1
    bar_space = width - label_w - 50
    rows: list[SafeString] = []
    for i, bar in enumerate(bars):
        y = 6 + i * row_h
        full = bar_space * bar.value / peak
        red = bar_space * bar.failure / peak
        tooltip = (
            gettext("%(label)s: %(value)d (%(failures)d failed)") if bar.failure != bar.value
            else gettext("%(label)s: %(value)d")
        ) % {"label": inert(bar.label), "value": bar.value, "failures": bar.failure}
        rows.append(format_html(
            '<a href="{}"><g class="apiauth-bar"><title>{}</title>'
            '<text x="{}" y="{}" text-anchor="end" {}>{}</text>'
            '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"/>'
            '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"/>'
            '<text x="{}" y="{}" {}>{}</text></g></a>',
            bar.href, tooltip,
            label_w - 8, y + 15, mark_safe(_FONT), _short(bar.label, label_chars),  # noqa: S308
            label_w, y + 3, _f(max(full - red, 0)), row_h - 8, SUCCESS_COLOUR,
            _f(label_w + full - red), y + 3, _f(red), row_h - 8, FAILURE_COLOUR,
            _f(label_w + full + 6), y + 15, mark_safe(_FONT), bar.value,  # noqa: S308
        ))
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" id="{}" class="apiauth-chart" role="img" '
        'viewBox="0 0 {} {}" width="100%" style="max-width: {}px" preserveAspectRatio="xMinYMin meet" '
        'aria-label="{}">{}</svg>',
        chart_id, width, height, width, title, _join(rows),
    )


def columns_from(buckets: Sequence[object], label: Callable[[object], str],
                 tooltip: Callable[[object], str], href: Callable[[object], str]) -> list[Column]:
    return [
        Column(label=label(b), tooltip=tooltip(b), success=b.success,  # type: ignore[attr-defined]
               failure=b.failure, href=href(b))  # type: ignore[attr-defined]
        for b in buckets
    ]


__all__ = ["Bar", "Column", "bar_chart", "columns_from", "time_chart"]
