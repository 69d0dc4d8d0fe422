"""Every piece of SQL that differs between backends, in one place.

The views in ``warehouse/views.py`` are written in portable SQL plus the placeholders below
(``@finite(x)``, ``@seconds_between(a; b)``; each snippet is a ``str.format`` template).
``DUCKDB`` and ``POSTGRES`` map the same keys; ``for_bind`` picks one for a migration's
connection. Both engines must give the same values to the last digit
(``tests/test_postgres_views.py`` compares every row of every view): each PostgreSQL snippet
says what of DuckDB's behaviour it reproduces. Some need functions of our own on PostgreSQL
(``runlytics_median``, an aggregate that also works as a window function): revision 0018
creates them (docs/postgresql.md, "Views on PostgreSQL").
"""

from __future__ import annotations

import re
from typing import Any

DUCKDB: dict[str, str] = {
    # true when x is a finite number (NULL, NaN and +-Infinity are not)
    "finite": "isfinite({x})",
    # seconds from timestamp a to timestamp b, as DOUBLE: the exact difference in microseconds,
    # divided once, so the correctly rounded double of the exact seconds for spans under 2^53 us
    # (about 285 years; past that the BIGINT's conversion to DOUBLE rounds once more) (epochs
    # subtracted as doubles lose ~1e-7 s near 2026). A BIGINT holds any difference of the times
    # ingest keeps (years 1 to 9999); HUGEINT arithmetic would cost the views twice the time
    "seconds_between": "((epoch_us({b}) - epoch_us({a})) / 1e6)",
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
    # the first capture group of a regular expression as BIGINT; NULL when the text does not
    # match or the number does not fit (the group must match digits only)
    "capture_bigint": "TRY_CAST(regexp_extract({x}, {pattern}, 1) AS BIGINT)",
    # a LEFT JOIN of each row to the one row of a table with the latest time at or before the
    # row's (time column ts of the table, at the row's time; match: the join's other conditions)
    "asof_left_join": "ASOF LEFT JOIN {table} {alias} ON {match} AND {at} >= {ts}",
    # asof_left_join of gpu_samples, whose time column is ts (match: the join's other conditions on
    # the GPU, job_id, host and gpu_key)
    "asof_sample_left_join": "ASOF LEFT JOIN gpu_samples {alias} ON {match} AND {at} >= {alias}.ts",
    # over a window frame: the last value of x that is not NULL
    "last_known": "last_value({x} IGNORE NULLS)",
    # a message: %s (text), %d (integer), %.Nf and %.Ng (DOUBLE), %%; NULL when any value is
    # NULL. The values follow the format as further arguments: @printf('%d of %s'; n; name)
    "printf": "printf({format}{rest_comma})",
    # of the formats `format`, %.6g, %.10g and %.17g, the first that prints a and b apart: a
    # message's figure and its limit never read alike once rounded ("40.0 % ... below 40.0 %")
    "apart_format": (
        "CASE WHEN printf({format}, {a}) <> printf({format}, {b}) THEN {format}"
        " WHEN printf('%.6g', {a}) <> printf('%.6g', {b}) THEN '%.6g'"
        " WHEN printf('%.10g', {a}) <> printf('%.10g', {b}) THEN '%.10g' ELSE '%.17g' END"
    ),
    # x is an item of the list (a bound parameter): @list_contains($ids; job_id). DuckDB pushes
    # list_contains below a window, where it does not push IN (warehouse/health.py)
    "list_contains": "list_contains({list}, {x})",
    # DOUBLE arithmetic: IEEE's signed 0 or infinity where the result is out of range (PostgreSQL's
    # operators raise there). An operand that is itself an operation is written in parentheses
    "fmul": "({a} * {b})",
    "fdiv": "({a} / {b})",
    "fadd": "({a} + {b})",
    "fsub": "({a} - {b})",
    # @ordered_sum and @ordered_avg of DOUBLE values, and a mean in any order: IEEE's infinity where
    # a sum of finite values overflows (PostgreSQL's sum and avg of float8 raise there)
    "ordered_fsum": "sum({x} ORDER BY {x})",
    "ordered_favg": "avg({x} ORDER BY {x})",
    "favg": "avg({x})",
}

# PostgreSQL's guarded float8 operation (the snippets of @fmul, @fdiv, @fadd, @fsub): the operator
# where the operands' product or quotient lies within 1e-300 to 1e300, or their sum below the
# greatest float8; each operand cast to DOUBLE PRECISION, as the functions' parameters are (two
# integers divide as DOUBLEs, as with DuckDB's /)
_A, _B = "CAST({a} AS DOUBLE PRECISION)", "CAST({b} AS DOUBLE PRECISION)"
_PRODUCT_RANGE = "BETWEEN CAST('1e-150' AS DOUBLE PRECISION) AND CAST('1e150' AS DOUBLE PRECISION)"
_SUM_RANGE = "<= CAST('8e307' AS DOUBLE PRECISION)"


def _float_op(op: str, within: str) -> str:
    return (
        f"(CASE WHEN abs({_A}) {within} AND abs({_B}) {within} THEN {_A} {op} {_B}"
        f" ELSE runlytics_float_edge('{op}', {_A}, {_B}) END)"
    )


# The same keys for PostgreSQL 15 (issue #18).
POSTGRES: dict[str, str] = {
    # NaN is above every number in PostgreSQL, and abs() of NULL is NULL as isfinite()'s is
    "finite": "(abs({x}) < CAST('Infinity' AS DOUBLE PRECISION))",
    # the interval's exact NUMERIC epoch rounded once to a DOUBLE: the correctly rounded double
    # of the exact seconds, as DuckDB's exact microseconds divided once (to the last digit for
    # spans under about 285 years)
    "seconds_between": "CAST(EXTRACT(EPOCH FROM ({b}) - ({a})) AS DOUBLE PRECISION)",
    # DuckDB's round() of a DOUBLE takes halves away from zero, PostgreSQL's to even: halves first
    "from_epoch": (
        "(TIMESTAMP '1970-01-01 00:00:00' + CAST(CASE WHEN abs({x} * 1000000 - trunc({x} * 1000000)) = 0.5"
        " THEN trunc({x} * 1000000) + sign({x}) ELSE round({x} * 1000000) END AS BIGINT)"
        " * INTERVAL '1 microsecond')"
    ),
    # an aggregate of revision 0018: percentile_cont cannot be a window function (DuckDB's median
    # can), and it interpolates as lo + (hi - lo) * 0.5, DuckDB as lo * 0.5 + hi * 0.5
    "median": "runlytics_median({x})",
    # DuckDB sorts NULLs last in both directions, PostgreSQL first when descending
    "first_by": "runlytics_first({value} ORDER BY {order_nulls_last})",
    "compact_list": "array_remove(ARRAY[{items}], NULL)",
    # PostgreSQL's sum and avg of float8 add in input order: sorted, DuckDB's digits
    "ordered_sum": "sum({x} ORDER BY {x})",
    "ordered_avg": "avg({x} ORDER BY {x})",
    "capture_bigint": (
        "CAST(CASE WHEN CAST(substring({x} FROM {pattern}) AS NUMERIC) <= 9223372036854775807"
        " THEN substring({x} FROM {pattern}) END AS BIGINT)"
    ),
    "asof_left_join": (
        "LEFT JOIN LATERAL (SELECT * FROM {table} {alias} WHERE {match} AND {ts} <= {at}"
        " ORDER BY {ts} DESC LIMIT 1) {alias} ON true"
    ),
    # PostgreSQL packs the samples per GPU and minute (revision 0028, warehouse/pg_samples.py), and a
    # time bound on the view gpu_samples' ts reaches no index: the latest sample at or before `at`
    # is in one of the GPU's last two minutes that start at or before it (the latest such minute may
    # hold only later samples; any sample of the one before is earlier than `at`). The columns are
    # the view's.
    "asof_sample_left_join": (
        "LEFT JOIN LATERAL (SELECT {alias}.job_id, {alias}.host, u.gpu_index,"
        " {alias}.minute + u.offset_us * INTERVAL '1 microsecond' AS ts, u.gpu_uuid, u.utilization_percent,"
        " u.memory_used_mb, u.memory_total_mb, u.temperature_c, u.power_w, u.sm_clock_mhz,"
        " u.clocks_event_reasons, u.source, {alias}.gpu_key"
        " FROM (SELECT * FROM gpu_sample_minutes {alias} WHERE {match} AND {alias}.minute <= {at}"
        " ORDER BY {alias}.minute DESC LIMIT 2) {alias}"
        " CROSS JOIN LATERAL unnest({alias}.offsets_us, {alias}.gpu_index, {alias}.gpu_uuid,"
        " {alias}.utilization_percent, {alias}.memory_used_mb, {alias}.memory_total_mb, {alias}.temperature_c,"
        " {alias}.power_w, {alias}.sm_clock_mhz, {alias}.clocks_event_reasons, {alias}.source)"
        " AS u(offset_us, gpu_index, gpu_uuid, utilization_percent, memory_used_mb, memory_total_mb,"
        " temperature_c, power_w, sm_clock_mhz, clocks_event_reasons, source)"
        " WHERE {alias}.minute + u.offset_us * INTERVAL '1 microsecond' <= {at}"
        " ORDER BY ts DESC LIMIT 1) {alias} ON true"
    ),
    # an aggregate of revision 0018 (PostgreSQL has no IGNORE NULLS): the same frame, in order
    "last_known": "runlytics_last_known({x})",
    # a function of revision 0018 with DuckDB's digits (the exact binary value rounded half to
    # even); each value travels as text, a DOUBLE as its 64 bits (runlytics_printf_arg)
    "printf": "runlytics_printf({format}, VARIADIC CAST(ARRAY[{rest_printf}] AS TEXT[]))",
    "apart_format": (
        "CASE WHEN runlytics_printf({format}, VARIADIC CAST(ARRAY[runlytics_printf_arg({a})] AS TEXT[]))"
        " <> runlytics_printf({format}, VARIADIC CAST(ARRAY[runlytics_printf_arg({b})] AS TEXT[])) THEN {format}"
        " WHEN runlytics_printf('%.6g', VARIADIC CAST(ARRAY[runlytics_printf_arg({a})] AS TEXT[]))"
        " <> runlytics_printf('%.6g', VARIADIC CAST(ARRAY[runlytics_printf_arg({b})] AS TEXT[])) THEN '%.6g'"
        " WHEN runlytics_printf('%.10g', VARIADIC CAST(ARRAY[runlytics_printf_arg({a})] AS TEXT[]))"
        " <> runlytics_printf('%.10g', VARIADIC CAST(ARRAY[runlytics_printf_arg({b})] AS TEXT[])) THEN '%.10g'"
        " ELSE '%.17g' END"
    ),
    # a list bound as an array; `x IN (SELECT unnest($list))` does not type on PostgreSQL
    "list_contains": "({x} = ANY({list}))",
    # PostgreSQL's float8 operators raise where the result rounds to 0 from nonzero operands or to
    # infinity from finite ones; these give DuckDB's signed 0 or infinity: the operator where both
    # operands are moderate (it cannot raise there), else runlytics_float_edge (revision 0029), which
    # decides from their exact values. Written out in the view (revision 0030), not as a call of
    # 0029's runlytics_fmul etc. (the same expression): PostgreSQL inlines a SQL function only where
    # an argument used more than once is cheap, so a call whose operand is another call, or a
    # column of a subquery it flattens, ran as a function call per row (insight_steps ~1.5x slower)
    "fmul": _float_op("*", _PRODUCT_RANGE),
    "fdiv": _float_op("/", _PRODUCT_RANGE),
    "fadd": _float_op("+", _SUM_RANGE),
    "fsub": _float_op("-", _SUM_RANGE),
    # aggregates of revision 0030: the values collected in an array (in the ORDER BY's order), then
    # added by PostgreSQL's sum where no partial sum can overflow, else one by one with runlytics_fadd
    "ordered_fsum": "runlytics_sum({x} ORDER BY {x})",
    "ordered_favg": "runlytics_avg({x} ORDER BY {x})",
    "favg": "runlytics_avg({x})",
}

# a macro's arguments, in the order its call gives them (each snippet uses a subset); rest: every
# argument after those, any number of them
FIELDS = (
    "list", "x", "a", "b", "value", "order", "items", "pattern", "table", "alias", "match", "ts", "at", "format",
    "rest",
)  # fmt: skip
# fields derived from another one: (name in a snippet, the field it comes from)
DERIVED = {"order_nulls_last": "order", "rest_comma": "rest", "rest_printf": "rest"}
NULLS_PLACED = re.compile(r"\bNULLS\s+(FIRST|LAST)\b", re.IGNORECASE)


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
        out.append(_expand(name, dialect[name], args))
        i = j + 1


def _expand(name: str, snippet: str, args: list[str]) -> str:
    """One macro's snippet with its arguments in place."""
    used = {f for f in FIELDS if "{" + f + "}" in snippet}
    used |= {source for derived, source in DERIVED.items() if "{" + derived + "}" in snippet}
    fields = [f for f in FIELDS if f in used]
    fixed = [f for f in fields if f != "rest"]
    if len(args) != len(fixed) and not ("rest" in fields and len(args) > len(fixed)):
        raise ValueError(f"@{name} takes {len(fixed)} argument(s), got {len(args)}")
    values = dict(zip(fixed, args, strict=False))
    rest = args[len(fixed) :]
    values["rest"] = ", ".join(rest)
    values["rest_comma"] = "".join(f", {a}" for a in rest)
    values["rest_printf"] = ", ".join(f"runlytics_printf_arg({a})" for a in rest)
    if "order" in values:
        values["order_nulls_last"] = _nulls_last(values["order"])
    return snippet.format(**values)


def _nulls_last(order: str) -> str:
    """An ORDER BY list with NULLS LAST on each key that does not say where its NULLs go."""
    keys = _split_args(order, separator=",")
    return ", ".join(k.strip() if NULLS_PLACED.search(k) else f"{k.strip()} NULLS LAST" for k in keys)


def _split_args(text: str, stop_at_close: bool = False, separator: str = ";") -> list[str]:
    """Split on top-level ``;`` (or ``separator``; not inside parentheses or SQL string literals).

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
            if ch == separator and depth == 0:
                args.append(text[start:k])
                start = k + 1
    if stop_at_close:
        raise ValueError(f"unclosed macro call: {text[:60]!r}")
    args.append(text[start:])
    return args
