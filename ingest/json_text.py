"""JSON text as the input files hold it, read by Python's parser.

Python refuses to turn more than 4,300 digits into an int (a plain ValueError, not a
JSONDecodeError, which a reader expecting only the latter lets through as a crash). Such an
integer is read here as the float it is (+-inf), as DuckDB's reader and the fast road read it.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

# json.loads pairs the escapes of a surrogate pair: a surrogate left in a string is a lone one
# (a ``\\udcff`` escape), which UTF-8 can't encode (DuckDB refuses a file or value holding one)
LONE_SURROGATE = re.compile("[\ud800-\udfff]")

# digits Python turns into an int without complaint (its limit is 4,300)
INT_DIGITS = 4000


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
