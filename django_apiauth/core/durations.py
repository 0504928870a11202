"""Durations as operators type them: ``90s``, ``15m``, ``12h``, ``30d`` (DESIGN §6)."""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION_RE = re.compile(r"^\s*(\d{1,7})\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(value: str) -> timedelta:
    """Parse ``<number><unit>`` with unit s, m, h, d or w. Raises ``ValueError``."""
    match = _DURATION_RE.match(value or "")
    if not match:
        raise ValueError(
            f"Invalid duration {value!r}: use a number and a unit, e.g. 90s, 15m, 12h or 30d."
        )
    amount, unit = match.groups()
    return timedelta(**{_UNITS[unit]: int(amount)})


def format_duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
