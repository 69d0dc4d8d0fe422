"""JSON text as the input files hold it, read by Python's parser.

Python refuses to turn more than 4,300 digits into an int (a plain ValueError, not a
JSONDecodeError, which a reader expecting only the latter lets through as a crash). Such an
integer is read here as the float it is (+-inf), as DuckDB's reader and the fast road read it.
"""

from __future__ import annotations

import codecs
import json
import math
import re
from typing import Any

# json.loads pairs the escapes of a surrogate pair: a surrogate left in a string is a lone one
# (a ``\\udcff`` escape), which UTF-8 can't encode (DuckDB refuses a file or value holding one)
LONE_SURROGATE = re.compile("[\ud800-\udfff]")

# digits Python turns into an int without complaint (its limit is 4,300)
INT_DIGITS = 4000

UTF8_BOM = codecs.BOM_UTF8
# not_utf8 decodes a slice at a time: a one-line file of a gigabyte (a large progress.json is
# one line) must not become a string of its own beside its bytes
_SLICE_BYTES = 1 << 20
# the bytes of UTF-8 that start no character (10xxxxxx)
_CONTINUATION = bytes(range(0x80, 0xC0))
_REPLACEMENT = "\ufffd".encode()


def whole(digits: str) -> int | float:
    """A JSON integer's text as an int, or as a float (+-inf) past ``INT_DIGITS`` digits."""
    return int(digits) if len(digits) <= INT_DIGITS else float(digits)


def loads(text: str | bytes) -> Any:
    """``json.loads``, but an integer of more than 4,300 digits is a float (+-inf), not a ValueError.

    Raises what json.loads raises for text that is not JSON: JSONDecodeError (also after such an
    integer), UnicodeDecodeError (bytes that are not UTF-8), RecursionError (nested too deeply).
    """
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise
    except ValueError:  # "Exceeds the limit (4300 digits) for integer string conversion"
        return json.loads(text, parse_int=whole)


def without_surrogates(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD."""
    return LONE_SURROGATE.sub("\ufffd", text)


def as_float(value: int | float) -> float:
    """A JSON number as a float: an integer too large for a double is +-inf, as ``1e400`` reads."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def is_utf8(data: bytes) -> bool:
    """Whether bytes are UTF-8; plain ASCII (most of them) told by one pass of ``isascii``."""
    if data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def encodable(text: str) -> bool:
    """Whether text can be written as UTF-8 (bound, stored): no lone surrogate."""
    return LONE_SURROGATE.search(text) is None


def not_utf8(data: bytes) -> str | None:
    """The warning for a file read with U+FFFD in place of bytes that are not UTF-8: the first one's
    line and column in characters, as an editor shows them (a leading byte order mark is no
    column), and how many more the file holds; None when every byte is UTF-8.

    Most files are plain ASCII: one pass of ``isascii`` tells, and nothing is decoded.
    """
    if data.isascii():
        return None
    start = len(UTF8_BOM) if data.startswith(UTF8_BOM) else 0
    bad = _first_bad(data, start)
    if bad is None:
        return None
    at, end = bad
    line_start = max(start, data.rfind(b"\n", start, at) + 1)
    line = data.count(b"\n", start, at) + 1
    column = _characters(data, line_start, at) + 1  # the bytes before the first bad one are UTF-8
    shown = ("bytes " if end - at > 1 else "byte ") + " ".join(f"0x{b:02x}" for b in data[at:end])
    more = _replaced(data, start) - 1
    also = f" (and {more} more in the file)" if more else ""
    return f"line {line}: not valid UTF-8 ({shown} at column {column}), read with U+FFFD in its place{also}"


def _first_bad(data: bytes, start: int) -> tuple[int, int] | None:
    """The span of the first bytes from ``start`` that are not UTF-8 (what one U+FFFD replaces)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(data)
    for at in range(start, len(data), _SLICE_BYTES):
        held = len(decoder.getstate()[0])  # the slice before ended mid-character: its bytes come first
        try:
            decoder.decode(view[at : at + _SLICE_BYTES], final=at + _SLICE_BYTES >= len(data))
        except UnicodeDecodeError as error:
            return at - held + error.start, at - held + error.end
    return None


def _replaced(data: bytes, start: int) -> int:
    """How many U+FFFD a decode with errors="replace" puts in (not counting those written as UTF-8)."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    view = memoryview(data)
    made = sum(
        decoder.decode(view[at : at + _SLICE_BYTES], final=at + _SLICE_BYTES >= len(data)).count("\ufffd")
        for at in range(start, len(data), _SLICE_BYTES)
    )
    return made - data.count(_REPLACEMENT, start)


def _characters(data: bytes, start: int, stop: int) -> int:
    """How many characters the UTF-8 bytes ``data[start:stop]`` hold: each byte but a continuation
    byte starts one."""
    view = memoryview(data)
    return sum(
        len(bytes(view[at : min(stop, at + _SLICE_BYTES)]).translate(None, _CONTINUATION))
        for at in range(start, stop, _SLICE_BYTES)
    )
