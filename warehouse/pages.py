"""Opaque keyset cursors: the sort key of the last row of a page, signed by nothing but checked.

A cursor is base64url JSON ``{"k": listing, "v": [...]}``: the values of the row's sort key, the
JSON in UTF-8 (a character outside ASCII is its 1 to 4 bytes, not a 6-byte ``\\uXXXX`` escape, so
an id of 256 CJK characters takes about 1,000 characters of cursor, not 2,000), each value once.
Keyset pages neither skip nor repeat rows when rows are added between requests (offsets do both).
Every listing reads one row past its page and cuts it with ``page``, which makes the cursor.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

Row = TypeVar("Row")

# Cursor numbers must bind to a 64-bit column: a bigger int is no key this API handed out.
INT64 = range(-(2**63), 2**63)
# The most rows one page holds: the API's `limit`, `max_points`, and `runlytics insights --limit`.
MAX_PAGE = 10_000


class BadCursor(ValueError):
    """A cursor that this API did not hand out (or for another listing)."""


def page(rows: list[Row], limit: int, kind: str, key: Callable[[Row], list[Any]]) -> tuple[list[Row], str | None]:
    """A keyset page of ``rows`` read with ``LIMIT limit + 1`` (the row past the page says that
    one follows): the first ``limit`` rows, and the cursor of listing ``kind`` after the last of
    them (the sort key's values, ``key`` of that row), or None when none follows."""
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode(kind, key(rows[-1]))


def encode(kind: str, values: list[Any]) -> str:
    raw = json.dumps({"k": kind, "v": values}, separators=(",", ":"), default=str, ensure_ascii=False)
    return base64.urlsafe_b64encode(raw.encode("utf-8")).decode("ascii").rstrip("=")


def decode(kind: str, cursor: str, arity: int) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, UnicodeError) as error:
        raise BadCursor("cursor is not one this API handed out") from error
    if not isinstance(data, dict) or data.get("k") != kind:
        raise BadCursor("cursor belongs to another listing")
    if data.keys() != {"k", "v"}:
        raise BadCursor("cursor is not one this API handed out")
    values = data.get("v")
    if not isinstance(values, list) or len(values) != arity:
        raise BadCursor("cursor is not one this API handed out")
    for value in values:
        if value is not None and not isinstance(value, str | int | float):
            raise BadCursor("cursor is not one this API handed out")
        if (
            isinstance(value, bool)
            or (isinstance(value, int) and value not in INT64)
            or (isinstance(value, float) and not math.isfinite(value))
            or (isinstance(value, str) and not _utf8(value))
        ):
            raise BadCursor("cursor is not one this API handed out")
    return values


def _utf8(text: str) -> bool:
    """Whether the text can be bound as a query parameter (JSON may hold lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def timestamp(value: Any) -> datetime:
    """A cursor's ISO time as the naive UTC datetime the warehouse holds; BadCursor otherwise."""
    if not isinstance(value, str):
        raise BadCursor("cursor is not one this API handed out")
    try:
        moment = datetime.fromisoformat(value)
        return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo is not None else moment
    except (ValueError, OverflowError) as error:
        raise BadCursor("cursor is not one this API handed out") from error
