"""JSON texts of bounded nesting: what the warehouse hands out never overflows a reader's stack.

Python's ``json`` module, pydantic and most JSON code recurse once per nesting level, so a
stored text nested a few thousand levels deep (a config, a cursor) raises ``RecursionError``
wherever it is read. ``depth`` measures a text without recursing; ``loads`` parses one with
every container below ``max_depth`` levels replaced by null.
"""

from __future__ import annotations

import json
import re
from typing import Any

# A whole string (escapes included) or one bracket: strings are skipped in one step, so a
# bracket inside a string is never counted.
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


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
    """``json.loads``, with each array or object nested deeper than ``max_depth`` levels as null."""
    if text.count("[") + text.count("{") <= max_depth or depth(text) <= max_depth:
        return json.loads(text)
    return json.loads(_cut(text, max_depth))


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
