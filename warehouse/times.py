"""The times a person writes to choose jobs by their start: the API's ``since`` and ``until``
and ``runlytics export --since`` all read them with ``instant``, so one text is one instant on
both sides (docs/decisions.md, "Times in filters").

- ISO 8601 calendar dates and times, these forms only (``_EXTENDED``, ``_BASIC``): a date
  (``2026-03-01``, or the basic ``20260301``); a date and a time of hours and minutes, and maybe
  seconds and a fraction of a second (``.`` or ``,``, past microseconds cut), the extended date
  with the extended time (``2026-03-01T02:00``, ``2026-03-01T02:00:00.5``), the basic with the
  basic (``20260301T0200``, ``20260301T020000``), a blank for the ``T``; and after a time maybe an
  offset: ``Z``, ``+02``, ``+02:00`` or ``-0530``. ``T`` and ``Z`` in either case (RFC 3339 allows
  ``t`` and ``z``; inputs.md's timestamps take ``z``). Without an offset the time is UTC, as
  inputs.md reads a timestamp. ``datetime.fromisoformat`` took more than the documented list
  (ISO weeks ``2026-W09``, an hour alone ``2026-03-01T02``, a date and time in two styles, an
  offset with seconds, ``00:10:00.Z``): each is a BadTime now, as are ordinal dates ``2026-060``.
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
# the ISO 8601 forms read: a date, or a date, a time and maybe an offset, each extended or basic
_OFFSET = r"(?:[Zz]|[+-]\d\d(?::?\d\d)?)"
_FRACTION = r"(?:[.,][0-9]+)?"
_EXTENDED = re.compile(rf"\d{{4}}-\d\d-\d\d(?:[Tt ]\d\d:\d\d(?::\d\d{_FRACTION})?{_OFFSET}?)?", re.ASCII)
_BASIC = re.compile(rf"\d{{8}}(?:[Tt ]\d{{4}}(?:\d\d{_FRACTION})?{_OFFSET}?)?", re.ASCII)
_EPOCH_START = datetime(1970, 1, 1)
MAX_SHOWN = 100  # characters of a bad text quoted in the error

# The years every time the warehouse holds lies in, 1 to 9999 (Python's datetime holds no other;
# DuckDB takes year 0, BC dates and year 10000 on, which psycopg, pandas and most readers can't
# hold): the SQL of a TIMESTAMP {t} kept within them, else NULL (DuckDB's SQL, which PostgreSQL's
# reads alike). Ingest's rl_in_years macro (ingest/sql.py) and the copy to PostgreSQL
# (warehouse/pg_copy.py, select_list) both are this text; the C history reader's MIN_MICROS and
# MAX_MICROS (ingest/_history.c) are the same bounds in microseconds, as this parser's datetime's.
IN_YEARS = (
    "CASE WHEN {t} >= TIMESTAMP '0001-01-01 00:00:00' AND {t} <= TIMESTAMP '9999-12-31 23:59:59.999999' THEN {t} END"
)


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
        # only the documented forms (2026: a year, or Unix seconds of 1970? neither), read by
        # fromisoformat (which takes a date that does not exist for none), T and Z in capitals
        if not (_EXTENDED.fullmatch(value) or _BASIC.fullmatch(value)):
            raise ValueError(value)
        parsed = datetime.fromisoformat(value.upper())
    except ValueError:
        hint = "; a '+' sent unescaped in a URL reads as a blank" if " " in value else ""
        raise BadTime(f"{shown} is not an ISO 8601 date or time, nor Unix seconds (9 digits or more){hint}") from None
    if parsed.tzinfo is None:
        return parsed
    try:
        return parsed.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:  # 9999-12-31T23:59-01:00 is in the year 10000 in UTC
        raise BadTime(f"{shown} is out of range in UTC") from None
