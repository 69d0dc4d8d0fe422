"""DuckDB macros shared by the ingest SQL: turning raw JSON values into checked typed values.

Values are read with DuckDB's JSON reader as ``JSON`` text so that a string, a boolean or an
array in a numeric field can be told from a number (and reported), instead of being cast
silently. ``NaN`` and ``Infinity`` are numbers here, as in Python's ``json``.
"""

from __future__ import annotations

import duckdb

from runlytics.warehouse import times

# What a DuckDB statement reading a user's file raises when it refuses the file: duckdb.Error, or
# UnicodeDecodeError when the message quotes the file and cuts it inside a UTF-8 character (a spool
# line `[{"job_id": "\u0080", ...}]`: DuckDB 2.0's binding then fails to decode its own message)
READ_ERRORS = (duckdb.Error, UnicodeDecodeError)

# rl_epoch's bounds (epoch seconds from year 1 on, below 1e11: year 5138), for the Python readers
# of timestamps defined as progress.json's (a spool line's ts: gpu_samples.parse_timestamp)
EPOCH_FIRST = -62_135_596_800
EPOCH_END = 1e11

# rl_iso_text's grammar: a regular expression in RE2's syntax, for DuckDB's regexp_full_match (no
# Python code matches it: the spool's careful road reads its ISO texts with rl_iso too, gpu_samples.
# IsoTimes). The API's since/until and export --since read a person's text with their own parser
# (warehouse/times.py, docs/decisions.md "Times in filters"), which takes more: Unix seconds
# written as text (a URL's value is text; in progress.json they are a number), a lowercase t, a
# basic date alone or a basic time without seconds, blanks around. A person typing a filter sees a
# text it can't read as an error naming it (a 422, exit 2) and types again, where a file's time is
# dropped with a warning long after a program wrote it: that grammar is what people type, and it
# names no zone (UTC included).
_HOUR = "([01][0-9]|2[0-3])"
# UTC or GMT by name, after a blank or not (a writer's strftime with a literal "UTC"): offset 0
# whatever reads it; any other zone's name or abbreviation is refused (CST is US Central and China)
_NAMED_UTC = " ?(UTC|GMT)"
_ZONE = f"(Z|z|[+-]{_HOUR}(:?[0-5][0-9])?|{_NAMED_UTC})"
_DECIMALS = "([.,][0-9]+)?"
ISO_TEXT = (
    f"[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}([T ]{_HOUR}:[0-5][0-9](:[0-5][0-9]{_DECIMALS})?{_ZONE}?)?"
    f"|[0-9]{{8}}T{_HOUR}[0-5][0-9][0-5][0-9]{_DECIMALS}{_ZONE}?"
)


def epoch_timestamp(seconds: str) -> str:
    """rl_epoch's reading of finite epoch seconds (the SQL expression ``seconds``, within its bounds)
    as a TIMESTAMP: the whole seconds exactly, plus their fraction (exact: d - trunc(d) loses
    nothing) times 1e6 rounded half to even, as Python's datetime.fromtimestamp rounds. The spool's
    fast road (gpu_samples._fast_parse) reads its epochs with this text, not the macro: it stages
    on connections without the macros too (tests, bench/fleet.py)."""
    whole = f"CAST(trunc({seconds}) AS BIGINT) * 1000000"
    fraction = f"CAST(round_even(({seconds} - trunc({seconds})) * 1e6, 0) AS BIGINT)"
    return f"make_timestamp({whole} + {fraction})"


MACROS = """
-- a timestamp of years 1 to 9999 (DuckDB takes more: year 0, BC dates, year 10000 and later,
-- which Python, pandas and most readers can't hold); NULL outside them (warehouse/times.py's
-- IN_YEARS, which the copy to PostgreSQL applies too)
CREATE OR REPLACE TEMP MACRO rl_in_years(t) AS {IN_YEARS};

-- a raw JSON value as DOUBLE when it is a number literal (NaN and +-Infinity included);
-- strings ('"1.5"'), booleans, arrays and objects give NULL
CREATE OR REPLACE TEMP MACRO rl_double(x) AS TRY_CAST(CAST(x AS VARCHAR) AS DOUBLE);

-- the checked number: NULL when absent, not a number, out of [lo, hi], or not whole when it must be
-- (d: a value parsed by rl_double; staging parses each value once, then checks it)
CREATE OR REPLACE TEMP MACRO rl_checked(d, lo, hi, integral) AS
    CASE
        WHEN isfinite(d) AND (d < lo OR d > hi) THEN NULL
        WHEN integral AND NOT (isfinite(d) AND d = floor(d)) THEN NULL
        ELSE d
    END;

-- rl_checked of a raw JSON value
CREATE OR REPLACE TEMP MACRO rl_number(x, lo, hi, integral) AS rl_checked(rl_double(x), lo, hi, integral);

-- why rl_number refused a value that is present, or NULL
CREATE OR REPLACE TEMP MACRO rl_number_problem(label, x, lo, hi, integral) AS
    CASE
        WHEN x IS NULL THEN NULL
        WHEN rl_double(x) IS NULL
            THEN label || ' ' || left(CAST(x AS VARCHAR), 40) || ' is not a number, dropped'
        WHEN isfinite(rl_double(x)) AND (rl_double(x) < lo OR rl_double(x) > hi)
            THEN label || ' ' || left(CAST(x AS VARCHAR), 40) || ' is out of range, dropped'
        WHEN integral AND NOT (isfinite(rl_double(x)) AND rl_double(x) = floor(rl_double(x)))
            THEN label || ' ' || left(CAST(x AS VARCHAR), 40) || ' is not a whole number, dropped'
    END;

-- A whole number (a step, a count of samples) exact to its last digit: a DOUBLE holds whole
-- numbers exactly only up to 2^53, and 2^53 + 1 would become 2^53, another step. rl_exact is a
-- JSON integer literal's value (DuckDB writes a JSON number's text back as read when it is one:
-- digits, a minus sign), NULL for any other form (a fraction or an exponent: 10.0, 1e3, which
-- are read through rl_double, exact up to 2^53). Bounds are whole numbers (10^18, not 1e18: a
-- HUGEINT compared with a DOUBLE is compared as a DOUBLE).
CREATE OR REPLACE TEMP MACRO rl_exact(x) AS
    CASE WHEN regexp_full_match(CAST(x AS VARCHAR), '-?[0-9]+') THEN TRY_CAST(CAST(x AS VARCHAR) AS HUGEINT) END;

-- the checked whole number as BIGINT, from h (rl_exact) or else d (rl_double); NULL when refused
CREATE OR REPLACE TEMP MACRO rl_whole_checked(h, d, lo, hi) AS
    CASE WHEN h IS NOT NULL THEN CASE WHEN h >= lo AND h <= hi THEN CAST(h AS BIGINT) END
         ELSE CAST(rl_checked(d, lo, hi, true) AS BIGINT) END;

-- rl_whole_checked of a raw JSON value
CREATE OR REPLACE TEMP MACRO rl_whole(x, lo, hi) AS rl_whole_checked(rl_exact(x), rl_double(x), lo, hi);

-- why rl_whole refused a value that is present, or NULL
CREATE OR REPLACE TEMP MACRO rl_whole_problem(label, x, lo, hi) AS
    CASE
        -- digits past HUGEINT's 38 (read as +-Infinity): a whole number, out of range
        WHEN rl_exact(x) IS NULL AND regexp_full_match(CAST(x AS VARCHAR), '-?[0-9]+')
            THEN label || ' ' || left(CAST(x AS VARCHAR), 40) || ' is out of range, dropped'
        WHEN rl_exact(x) IS NULL THEN rl_number_problem(label, x, lo, hi, true)
        WHEN rl_exact(x) < lo OR rl_exact(x) > hi
            THEN label || ' ' || left(CAST(x AS VARCHAR), 40) || ' is out of range, dropped'
    END;

-- a JSON string's text (unescaped only when it has escapes); other JSON values give NULL
CREATE OR REPLACE TEMP MACRO rl_string(x) AS
    CASE WHEN left(CAST(x AS VARCHAR), 1) <> '"' THEN NULL
         WHEN contains(CAST(x AS VARCHAR), '\\') THEN x ->> '$'
         ELSE substr(CAST(x AS VARCHAR), 2, length(CAST(x AS VARCHAR)) - 2) END;

-- a string without the ASCII whitespace around it (DuckDB's trim drops spaces only; a status
-- that ends with a newline is still the status, as a job_id with blanks around it is the id)
CREATE OR REPLACE TEMP MACRO rl_trim(s) AS trim(s, ' ' || chr(9) || chr(10) || chr(11) || chr(12) || chr(13));

-- Whether a text is an ISO-8601 date and time as progress.json's timestamp is read (inputs.md):
-- the C reader's plain form (ingest/_history.c, iso_micros: YYYY-MM-DD[T ]HH:MM:SS[.ffffff] and
-- Z or +-HH:MM), with the ISO-8601 variants it leaves to the careful read: minutes without seconds,
-- a date alone, any number of decimals, a decimal comma, the basic format (20261102T080010), an
-- offset of hours alone or without its colon (+05, +0530), a lowercase z (RFC 3339). Hours 00-23,
-- an offset's up to 23:59, and UTC or GMT by name in capitals after a blank or not (offset 0: a
-- writer's strftime("%Y-%m-%d %H:%M:%S UTC"), read before session 19 and by the C reader). DuckDB's
-- cast takes much else (ISO_TEXT's rejects): any other zone's name or abbreviation ("CST" is US
-- Central, a Chinese host's CST +08:00), "+99" or +05:30:15 offsets, 24:00, "epoch", slashes,
-- one-digit fields, blanks around: none is this contract's timestamp.
CREATE OR REPLACE TEMP MACRO rl_iso_text(s) AS regexp_full_match(s, '{ISO_TEXT}');

-- ISO-8601 forms DuckDB's cast refuses, as the extended form it reads: the basic format
-- (20261102T080010Z, 20261102T080010.5+0100), a decimal comma (08:00:10,5), a lowercase UTC
-- designator (08:00:10z, which RFC 3339 allows) and UTC or GMT by name without a blank
-- (08:00:10UTC; as Z here whatever the cast's zone names); NULL else.
-- Only reached where the cast gave NULL (coalesce evaluates it for those rows alone)
CREATE OR REPLACE TEMP MACRO rl_iso_other(s) AS TRY_CAST(
    regexp_replace(
        regexp_replace(regexp_replace(s, '([0-9])(z|{NAMED_UTC})$', '\\1Z'),
                       '^([0-9]{4})([0-9]{2})([0-9]{2})T([0-9]{2})([0-9]{2})([0-9]{2})', '\\1-\\2-\\3T\\4:\\5:\\6'),
        '(:[0-9]{2}),([0-9])', '\\1.\\2')
    AS TIMESTAMPTZ);

-- an ISO-8601 string's text (no offset = UTC) as a UTC TIMESTAMP of years 1-9999, or NULL
CREATE OR REPLACE TEMP MACRO rl_iso(s) AS
    CASE WHEN rl_iso_text(s)
         THEN rl_in_years(CAST(coalesce(TRY_CAST(s AS TIMESTAMPTZ), rl_iso_other(s)) AS TIMESTAMP)) END;

-- Unix epoch seconds as a UTC TIMESTAMP; NULL unless finite, from year 1 on, and under 1e11
-- (EPOCH_FIRST and EPOCH_END above: keep them alike). Rounded to the microsecond as Python's
-- datetime.fromtimestamp rounds (the spool's careful road): the whole seconds exactly, their
-- fraction (exact: d - trunc(d) loses nothing) times 1e6 rounded half to even. round(d * 1e6)
-- rounded twice: the product of a time.time() float is 0.25 us apart, and 1767377550.8709195 was
-- .870920 where it is .870919 (the C reader, _history.c, does the same; the spool's fast road
-- reads its epochs with this expression's text, epoch_timestamp above)
CREATE OR REPLACE TEMP MACRO rl_epoch(d) AS
    CASE WHEN isfinite(d) AND d >= -62135596800 AND d < 1e11 THEN {EPOCH_TIMESTAMP} END;

-- a raw JSON timestamp: an ISO-8601 string or epoch seconds
CREATE OR REPLACE TEMP MACRO rl_timestamp(x) AS
    CASE
        WHEN x IS NULL THEN NULL
        WHEN left(CAST(x AS VARCHAR), 1) = '"' THEN rl_iso(rl_string(x))
        ELSE rl_epoch(rl_double(x))
    END;

-- why x, read as t (rl_timestamp(x)), was dropped, or NULL; rl_timestamp_problem reads it itself
CREATE OR REPLACE TEMP MACRO rl_timestamp_dropped(label, x, t) AS
    CASE WHEN x IS NOT NULL AND t IS NULL
         THEN label || ' ' || left(CAST(x AS VARCHAR), 40) || ' is not a timestamp, dropped' END;
CREATE OR REPLACE TEMP MACRO rl_timestamp_problem(label, x) AS rl_timestamp_dropped(label, x, rl_timestamp(x));

-- A config's settings (inputs.md; CONFIG_SETTINGS): each one's upper bound, whether it is
-- whole and whether it must be above 0 (a batch of no samples, a checkpoint every 0 steps, mean
-- nothing), so that progress.json's reader and the trainers' logs' read (rl_setting) and warn
-- (rl_setting_problems) alike
CREATE OR REPLACE TEMP MACRO rl_setting_hi(name) AS
    CASE name WHEN 'gpu_count' THEN 1e9 WHEN 'save_steps' THEN 1e18 WHEN 'max_steps' THEN 1e18 ELSE 1e300 END;
CREATE OR REPLACE TEMP MACRO rl_setting_whole(name) AS name IN ('save_steps', 'gpu_count', 'max_steps');
CREATE OR REPLACE TEMP MACRO rl_setting_positive(name) AS name IN ('batch_size', 'save_steps');

-- a setting of config c (JSON), checked: NULL when absent, not a finite number (a NaN target or
-- batch would spoil every figure it enters), out of range, not whole, or not above 0 when it must be
CREATE OR REPLACE TEMP MACRO rl_setting(c, name) AS
    CASE WHEN isfinite(rl_double(json_extract(c, '$.' || name)))
              AND NOT (rl_setting_positive(name) AND rl_double(json_extract(c, '$.' || name)) <= 0)
         THEN rl_number(json_extract(c, '$.' || name), 0, rl_setting_hi(name), rl_setting_whole(name)) END;

CREATE OR REPLACE TEMP MACRO rl_setting_problem(prefix, c, name) AS coalesce(
    rl_number_problem(prefix || name, json_extract(c, '$.' || name), 0, rl_setting_hi(name), rl_setting_whole(name)),
    CASE WHEN NOT isfinite(rl_double(json_extract(c, '$.' || name)))
         THEN prefix || name || ' ' || CAST(json_extract(c, '$.' || name) AS VARCHAR)
              || ' is not a finite number, dropped'
         WHEN rl_setting_positive(name) AND rl_double(json_extract(c, '$.' || name)) <= 0
         THEN prefix || name || ' ' || CAST(json_extract(c, '$.' || name) AS VARCHAR)
              || ' is not above 0, dropped'
    END);

-- why settings of config c were dropped, each labelled prefix || its name (an empty list: none).
-- One rl_setting_problem over the names' list, not five: DuckDB binds and optimises each
-- expansion of a macro, and five of this one cost a statement ~85 ms of planning (in a small ingest)
CREATE OR REPLACE TEMP MACRO rl_setting_problems(prefix, c) AS list_filter(
    list_transform(['batch_size', 'save_steps', 'target_samples_per_second', 'gpu_count', 'max_steps'],
                   lambda name: rl_setting_problem(prefix, c, name)),
    lambda p: p IS NOT NULL);
"""
MACROS = (
    MACROS.replace("{ISO_TEXT}", ISO_TEXT)
    .replace("{NAMED_UTC}", _NAMED_UTC)
    .replace("{EPOCH_TIMESTAMP}", epoch_timestamp("d"))
    .replace("{IN_YEARS}", times.IN_YEARS.format(t="t"))
)

# The settings rl_setting_problems checks: a reader whose configs name none of them skips its query
CONFIG_SETTINGS = frozenset({"batch_size", "save_steps", "target_samples_per_second", "gpu_count", "max_steps"})


def install_macros(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(MACROS)
