"""The times a person writes to choose jobs by their start: the API's ``since`` and ``until``
and ``runlytics export --since`` all read them with ``instant``, so one text is one instant on
both sides (docs/decisions.md, "Times in filters").

- ISO 8601, as ``datetime.fromisoformat`` reads it: a date (``2026-03-01``, or the basic
  ``20260301``), a date and time (``2026-03-01T02:00``, a blank for the ``T``, ``20260301T0200``),
  fractions of a second (past microseconds cut), an offset (``Z``, ``+02``, ``+02:00``,
  ``-0530``); without one the time is UTC, as inputs.md reads a timestamp.
- Unix epoch seconds, inputs.md's other form of a timestamp: a number of 9 digits or more, with
  an optional fraction (``1772323200``, ``1772323200.5``).
- Anything else is a ValueError (BadTime): a shorter number (``2026``: a year, or 34 minutes
  after 1970?), a sign or an exponent, a time outside the years 1 to 9999 in UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

# 9 digits or more: 100000000 is 1973-03-03; an 8-digit number is an ISO 8601 basic date
_EPOCH = re.compile(r"([0-9]{9,})(?:\.([0-9]*))?")
_EPOCH_START = datetime(1970, 1, 1)
MAX_SHOWN = 100  # characters of a bad text quoted in the error


class BadTime(ValueError):
    """A text that is neither an ISO 8601 date or time nor Unix seconds (the message quotes it)."""


def instant(text: str) -> datetime:
    """``text`` as a naive UTC datetime (see the module's docstring); BadTime when it is none."""
    value = text.strip()
    shown = repr(value if len(value) <= MAX_SHOWN else value[:MAX_SHOWN] + "…")
    epoch = _EPOCH.fullmatch(value)
    if epoch is not None:
        try:
            micros = int((epoch.group(2) or "")[:6].ljust(6, "0"))  # past microseconds cut, as ISO's
            return _EPOCH_START + timedelta(seconds=int(epoch.group(1)), microseconds=micros)
        except (OverflowError, ValueError):  # ValueError: more digits than int() reads (4,300)
            raise BadTime(f"{shown} is out of range: Unix seconds up to the year 9999") from None
    try:
        if value.isascii() and value.isdigit() and len(value) != 8:
            raise ValueError(value)  # 2026: a year, or Unix seconds of 1970?
        parsed = datetime.fromisoformat(value)
    except ValueError:
        hint = "; a '+' sent unescaped in a URL reads as a blank" if " " in value else ""
        raise BadTime(f"{shown} is not an ISO 8601 date or time, nor Unix seconds (9 digits or more){hint}") from None
    if parsed.tzinfo is None:
        return parsed
    try:
        return parsed.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:  # 9999-12-31T23:59-01:00 is in the year 10000 in UTC
        raise BadTime(f"{shown} is out of range in UTC") from None
