"""Opaque keyset cursors: the sort key of the last row of a page, signed by nothing but checked.

A cursor is base64url JSON ``{"v": [...]}``: the values of the row's sort key. Keyset pages
neither skip nor repeat rows when rows are added between requests (offsets do both).
"""

from __future__ import annotations

import base64
import json
from typing import Any


class BadCursor(ValueError):
    """A cursor that this API did not hand out (or for another listing)."""


def encode(kind: str, values: list[Any]) -> str:
    raw = json.dumps({"k": kind, "v": values}, separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(kind: str, cursor: str, arity: int) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, UnicodeError) as error:
        raise BadCursor("cursor is not one this API handed out") from error
    if not isinstance(data, dict) or data.get("k") != kind:
        raise BadCursor("cursor belongs to another listing")
    values = data.get("v")
    if not isinstance(values, list) or len(values) != arity:
        raise BadCursor("cursor is not one this API handed out")
    for value in values:
        if value is not None and not isinstance(value, str | int | float):
            raise BadCursor("cursor is not one this API handed out")
    return values
