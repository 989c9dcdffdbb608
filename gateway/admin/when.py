"""Dates as administrators write them: expiry dates (``2027-01-31``, an ISO date-time, ``+30d``)
and ``--since`` (``30m``, ``2d`` ago, or a date); pure."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

from gateway.errors import InvalidInput

_RELATIVE = re.compile(r"^\+(\d{1,6})([smhdw])$")
_AGO = re.compile(r"^(\d{1,7})\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
DATE_HELP = "YYYY-MM-DD (00:00 UTC), an ISO date-time (UTC unless an offset is given), or +30d/+12h"
SINCE_HELP = "30m, 1h, 2d, 1w, YYYY-MM-DD or an ISO date-time"


def parse_when(text: str, *, now: datetime | None = None, future: bool = True) -> datetime:
    """``YYYY-MM-DD``, an ISO 8601 date-time, or relative ``+N[smhdw]`` -> aware UTC datetime."""
    now = now or datetime.now(UTC)
    raw = text.strip()
    when: datetime
    m = _RELATIVE.fullmatch(raw)
    if m:
        try:
            when = now + timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
        except OverflowError:
            raise InvalidInput(f"date {text!r} is too far in the future") from None
    else:
        try:
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
                d = date.fromisoformat(raw)
                when = datetime(d.year, d.month, d.day, tzinfo=UTC)
            else:
                when = datetime.fromisoformat(raw.replace(" ", "T", 1))
                when = when.replace(tzinfo=UTC) if when.tzinfo is None else when
            when = when.astimezone(UTC)
        except (ValueError, OverflowError):
            raise InvalidInput(f"invalid date {text!r}: use {DATE_HELP}") from None
    if future and when <= now:
        raise InvalidInput(f"date {text!r} ({when:%Y-%m-%d %H:%M} UTC) is in the past")
    return when


def parse_expiry(text: str | None) -> datetime | None:
    """An optional expiry (``--expires``, ``"expires"``): None (never), else :func:`parse_when`."""
    return parse_when(text) if text is not None else None


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``30m``, ``1h``, ``2d``, ``1w`` (that long ago), or a date / ISO date-time."""
    now = now or datetime.now(UTC)
    m = _AGO.fullmatch(text.strip())
    if m:
        try:
            return now - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
        except OverflowError:
            pass
    else:
        try:
            return parse_when(text, now=now, future=False)
        except InvalidInput:
            pass
    raise InvalidInput(f"invalid --since {text!r}: use {SINCE_HELP}")
