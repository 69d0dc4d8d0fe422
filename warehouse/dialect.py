"""Every piece of SQL that differs between backends, in one place.

The views in ``warehouse/views.py`` are written in portable SQL plus the placeholders below
(``@finite(x)``, ``@seconds_between(a; b)``; each snippet is a ``str.format`` template).
A PostgreSQL backend would add a second mapping with the same keys. Whole constructs that are
DuckDB's own (``ASOF JOIN`` in ``step_gpu_alignment``, ``QUALIFY``) are marked in the views.
"""

from __future__ import annotations

from typing import Any

DUCKDB: dict[str, str] = {
    # true when x is a finite number (NULL, NaN and +-Infinity are not)
    "finite": "isfinite({x})",
    # seconds from timestamp a to timestamp b, as DOUBLE
    "seconds_between": "(epoch({b}) - epoch({a}))",
    # a TIMESTAMP from seconds since the Unix epoch
    "from_epoch": "make_timestamp(CAST(round({x} * 1000000) AS BIGINT))",
    # the median of a numeric column, as DOUBLE
    "median": "median({x})",
    # the value of the first row in the given order (NULLs of value included)
    "first_by": "first({value} ORDER BY {order})",
    # a list of strings without its NULL items
    "compact_list": "list_filter([{items}], lambda w: w IS NOT NULL)",
    # the sum and the mean of a DOUBLE column, added up in ascending order of the values: the
    # same last digit on every run, whatever the threads (a plain sum adds the partial sums of
    # parallel threads in the order they finish; docs/decisions.md, "Floats that do not change")
    "ordered_sum": "sum({x} ORDER BY {x})",
    "ordered_avg": "avg({x} ORDER BY {x})",
}


# filled in for the PostgreSQL engine (issue #18): the same keys as DUCKDB
POSTGRES: dict[str, str] = {}


def for_bind(bind: Any) -> dict[str, str]:
    """The snippets for a SQLAlchemy connection's engine (what a migration renders its views with)."""
    return POSTGRES if bind.dialect.name == "postgresql" else DUCKDB


def render(template: str, dialect: dict[str, str] = DUCKDB) -> str:
    """Expand ``@name(arg; arg)`` macros of a view template with the dialect's snippets.

    A macro's arguments are separated by ``;`` and may contain parentheses and commas.
    """
    out: list[str] = []
    i = 0
    while True:
        at = template.find("@", i)
        if at < 0:
            out.append(template[i:])
            return "".join(out)
        out.append(template[i:at])
        paren = template.index("(", at)
        name = template[at + 1 : paren]
        j = paren + 1 + len("".join(_split_args(template[paren + 1 :], stop_at_close=True)))
        args = [render(a.strip(), dialect) for a in _split_args(template[paren + 1 : j])]
        snippet = dialect[name]
        fields = [f for f in ("x", "a", "b", "value", "order", "items") if "{" + f + "}" in snippet]
        if len(fields) != len(args):
            raise ValueError(f"@{name} takes {len(fields)} argument(s), got {len(args)}")
        out.append(snippet.format(**dict(zip(fields, args, strict=True))))
        i = j + 1


def _split_args(text: str, stop_at_close: bool = False) -> list[str]:
    """Split on top-level ``;`` (not inside parentheses or SQL string literals).

    With ``stop_at_close``, stop at the ``)`` that closes the macro and return the text before
    it in one piece (its length locates the closing parenthesis).
    """
    args, depth, start, quoted = [], 0, 0, False
    for k, ch in enumerate(text):
        if ch == "'":
            quoted = not quoted
        elif not quoted:
            depth += ch == "("
            depth -= ch == ")"
            if depth < 0 and stop_at_close:
                return [text[:k]]
            if ch == ";" and depth == 0:
                args.append(text[start:k])
                start = k + 1
    if stop_at_close:
        raise ValueError(f"unclosed macro call: {text[:60]!r}")
    args.append(text[start:])
    return args
