"""JSON texts of bounded nesting: what the warehouse hands out never overflows a reader's stack.

Python's ``json`` module, pydantic and most JSON code recurse once per nesting level, so a
stored text nested a few thousand levels deep (a config, a cursor) raises ``RecursionError``
wherever it is read. ``depth`` measures a text without recursing; ``loads`` parses one with
every container below ``max_depth`` levels replaced by null.

``loads`` also reads what DuckDB's JSON type holds and Python's parser refuses: DuckDB (yyjson)
takes ``nan``, ``inf`` and ``infinity`` in any case, after an optional minus, and a comma before
a closing bracket (a progress.json's config of ``{"lr": nan}`` is stored so). They read as
Python's NaN and infinities, the comma left out, so that a stored value never fails its reader.
"""

from __future__ import annotations

import json
import re
from typing import Any

# A whole string (escapes included) or one bracket: strings are skipped in one step, so a
# bracket inside a string is never counted.
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
# DuckDB's JSON beyond Python's, in one pass over the text: (1) a whole string (to keep as it is),
# (2, 3) a non-finite number's minus and word (nonfinite), or a trailing comma (no group). Also
# pg_copy's (PostgreSQL's json takes neither)
DUCKDB_ONLY = re.compile(
    r'("[^"\\]*(?:\\.[^"\\]*)*")|(-?)\b(nan|inf(?:inity)?)\b|,(?=[ \t\n\r]*[\]}])', re.DOTALL | re.IGNORECASE
)


def depth(text: str) -> int:
    """The deepest nesting of arrays and objects in a JSON text (0 for a scalar)."""
    deepest = level = 0
    for token in _TOKENS.finditer(text):
        mark = token.group()
        if mark in "[{":
            level += 1
            deepest = max(deepest, level)
        elif mark in "]}":
            level -= 1
    return deepest


def loads(text: str, max_depth: int) -> Any:
    """``json.loads``, with each array or object nested deeper than ``max_depth`` levels as null;
    DuckDB's JSON too (the module's docstring). Raises ValueError for text that is neither."""
    try:
        return _bounded(text, max_depth)
    except json.JSONDecodeError:
        return _bounded(DUCKDB_ONLY.sub(_as_python, text), max_depth)


def _bounded(text: str, max_depth: int) -> Any:
    if text.count("[") + text.count("{") <= max_depth or depth(text) <= max_depth:
        return json.loads(text)
    return json.loads(_cut(text, max_depth))


def nonfinite(minus: str, word: str) -> str:
    """A non-finite number's word as Python's json writes it: NaN, Infinity or -Infinity."""
    if word.lower() == "nan":
        return "NaN"  # (-nan too)
    return "-Infinity" if minus else "Infinity"


def _as_python(match: re.Match[str]) -> str:
    string, minus, word = match.group(1, 2, 3)
    if string is not None:
        return string
    return "" if word is None else nonfinite(minus, word)  # a trailing comma left out


def _cut(text: str, max_depth: int) -> str:
    pieces: list[str] = []
    level = 0
    kept_until = 0  # text[:kept_until] is in pieces
    start = 0
    for token in _TOKENS.finditer(text):
        mark = token.group()
        if mark in "[{":
            level += 1
            if level == max_depth + 1:
                start = token.start()
        elif mark in "]}":
            if level == max_depth + 1:
                pieces += [text[kept_until:start], "null"]
                kept_until = token.end()
            level -= 1
    pieces.append(text[kept_until:])
    return "".join(pieces)
