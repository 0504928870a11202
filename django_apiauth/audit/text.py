"""Make stored, user-controlled text inert wherever the audit pages show or export it.

The audit writer already replaces control, line-separator and bidirectional
characters with U+FFFD (:func:`django_apiauth.core.audit.sanitise`); rows
written by other code (a migration, a raw ``INSERT``, an older version) may
not have been. So every page and export passes values through here again:

* :func:`inert` turns each such character into a visible ``\\uXXXX`` escape,
  so a CR/LF cannot start a forged line, an ANSI escape (ESC, U+001B) cannot
  move a terminal's cursor and a right-to-left override (U+202E) cannot
  reorder what an operator reads. HTML escaping is left to the template
  engine (autoescape) or :func:`~django.utils.html.format_html`.
* :func:`csv_cell` also neutralises spreadsheet formulas (a cell starting with
  ``=``, ``+``, ``-``, ``@``, tab or CR is prefixed with ``'``, as OWASP's
  *CSV injection* page recommends).
"""

from __future__ import annotations

from typing import Any

_UNSAFE = (
    *range(0x00, 0x20), *range(0x7F, 0xA0), 0x2028, 0x2029, *range(0x202A, 0x202F),
    *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C, 0xFEFF,
)
_VISIBLE = {code: f"\\u{code:04X}" for code in _UNSAFE}
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "|", "%")


def inert(value: Any) -> str:
    """``value`` as text with control, line-separator and bidi characters made visible."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    if text.isascii() and text.isprintable():
        return text
    return text.translate(_VISIBLE)


def csv_cell(value: Any) -> Any:
    """A CSV cell: numbers as they are, text inert and never a spreadsheet formula."""
    if value is None:
        return ""
    if isinstance(value, bool | int | float):
        return value
    text = inert(value)
    if text.startswith(_FORMULA_START):
        return "'" + text
    return text
