"""DuckDB macros shared by the ingest SQL: turning raw JSON values into checked typed values.

Values are read with DuckDB's JSON reader as ``JSON`` text so that a string, a boolean or an
array in a numeric field can be told from a number (and reported), instead of being cast
silently. ``NaN`` and ``Infinity`` are numbers here, as in Python's ``json``.
"""

from __future__ import annotations

import duckdb

MACROS = """
-- true when a raw JSON value is a number literal (NaN and +-Infinity included)
CREATE OR REPLACE TEMP MACRO rl_is_number(x) AS
    x IS NOT NULL AND left(CAST(x AS VARCHAR), 1) NOT IN ('"', 't', 'f', '[', '{', 'n')
    AND TRY_CAST(x AS DOUBLE) IS NOT NULL;

-- why a raw JSON value can't be the number asked for, or NULL when it can (or is absent)
CREATE OR REPLACE TEMP MACRO rl_number_problem(label, x, lo, hi, integral) AS
    CASE
        WHEN x IS NULL THEN NULL
        WHEN NOT rl_is_number(x) THEN label || ' ' || left(CAST(x AS VARCHAR), 40) || ' is not a number, dropped'
        WHEN isfinite(TRY_CAST(x AS DOUBLE))
             AND (TRY_CAST(x AS DOUBLE) < lo OR TRY_CAST(x AS DOUBLE) > hi)
            THEN label || ' ' || CAST(x AS VARCHAR) || ' is out of range, dropped'
        WHEN integral AND (NOT isfinite(TRY_CAST(x AS DOUBLE))
                           OR TRY_CAST(x AS DOUBLE) <> floor(TRY_CAST(x AS DOUBLE)))
            THEN label || ' ' || CAST(x AS VARCHAR) || ' is not a whole number, dropped'
    END;

-- the checked number, NULL when absent or refused by rl_number_problem
CREATE OR REPLACE TEMP MACRO rl_number(x, lo, hi, integral) AS
    CASE WHEN rl_number_problem('', x, lo, hi, integral) IS NULL THEN TRY_CAST(x AS DOUBLE) END;

-- an ISO-8601 string (no offset = UTC) or Unix epoch seconds, as a UTC TIMESTAMP
CREATE OR REPLACE TEMP MACRO rl_timestamp(x) AS
    CASE
        WHEN x IS NULL THEN NULL
        WHEN left(CAST(x AS VARCHAR), 1) = '"' THEN CAST(TRY_CAST(x ->> '$' AS TIMESTAMPTZ) AS TIMESTAMP)
        WHEN rl_is_number(x) AND isfinite(TRY_CAST(x AS DOUBLE))
             AND abs(TRY_CAST(x AS DOUBLE)) < 1e11
            THEN make_timestamp(CAST(round(TRY_CAST(x AS DOUBLE) * 1000000) AS BIGINT))
    END;

CREATE OR REPLACE TEMP MACRO rl_timestamp_problem(label, x) AS
    CASE WHEN x IS NOT NULL AND rl_timestamp(x) IS NULL
         THEN label || ' ' || left(CAST(x AS VARCHAR), 40) || ' is not a timestamp, dropped' END;

-- a JSON string's text; other JSON values give NULL
CREATE OR REPLACE TEMP MACRO rl_string(x) AS
    CASE WHEN left(CAST(x AS VARCHAR), 1) = '"' THEN x ->> '$' END;
"""


def install_macros(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(MACROS)
