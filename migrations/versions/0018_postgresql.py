"""PostgreSQL: the views on both engines.

The views are written once, in SQL that DuckDB and PostgreSQL 15 both run, with the macros of
warehouse/dialect.py rendered for the connection's engine. Five views had DuckDB's own
constructs and are rewritten: step_facts (QUALIFY -> a ranked subquery, any_value -> max of
the one value), step_gpu_alignment (ASOF JOIN -> the macro asof_left_join: still an ASOF JOIN
on DuckDB, a LATERAL subquery on PostgreSQL; GROUP BY ALL spelled out), job_checkpoints
(regexp_extract -> the macro capture_bigint) and, with them, job_settings, step_metrics and
job_checkpoints write DOUBLE PRECISION for DOUBLE. On DuckDB each gives the same rows, to the
last digit (tests/test_postgres_views.py), so nothing derived is refilled.

On PostgreSQL the revisions before this one build the tables only. This one creates the
functions the POSTGRES snippets call (aggregates: runlytics_median, as PostgreSQL's
percentile_cont cannot be a window function; runlytics_first, as a FILTER must follow an
aggregate; runlytics_last_known for IGNORE NULLS; and runlytics_printf, DuckDB's printf to the
digit) and every view of the head in dependency order, each from its newest frozen copy up to
this revision (the derived tables job_results and utilization_minutes, which some views read,
are 0004's and 0006's there, with DuckDB's columns). The insight views are left out: their texts
(revisions 0011-0016) call printf and last_value(... IGNORE NULLS) directly and cast to DOUBLE; a
later revision that writes them with the macros creates them on PostgreSQL.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from runlytics.migrations import engine, frozen
from runlytics.warehouse import dialect

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

# versions/views/0018/, and the revision whose copy each had before (DuckDB)
VIEWS_BEFORE = {
    "step_facts": "0012",
    "job_settings": "0004",
    "step_metrics": "0004",
    "job_checkpoints": "0004",
    "step_gpu_alignment": "0010",
}

# PostgreSQL: every view of this revision's head in dependency order, with the revision of its
# frozen copy
POSTGRES_VIEWS = {
    "step_facts": "0018",
    "job_settings": "0018",
    "step_metrics": "0018",
    "job_performance": "0013",
    "job_duration": "0013",
    "job_losses": "0004",
    "gpu_sample_intervals": "0010",
    "job_gpus": "0015",
    "job_resources": "0015",
    "checkpoint_scores": "0004",
    "job_checkpoints": "0018",
    "job_efficiency": "0004",
    "job_energy": "0013",
    "step_gpu_alignment": "0018",
    "job_analytics": "0004",
    "gpu_utilization_readings": "0015",
    "job_gpu_hours": "0008",
    "fleet_gpu_hours": "0013",
    "metric_points": "0012",
}
# the views of the head that PostgreSQL does not get here (DuckDB's printf, last_value(... IGNORE
# NULLS), DOUBLE), in dependency order: revision 0019 makes them portable and creates them there
NOT_ON_POSTGRES = (
    "insight_parameters",
    "insight_rows",
    "insight_losses",
    "insight_speed",
    "insight_peers",
    "insight_gpus",
    "insight_lifecycle",
    "job_insights",
)

# The functions of warehouse/dialect.py's POSTGRES snippets.
# runlytics_median: DuckDB's median (quantile_cont at 0.5): NULLs left out, the middle value of an
# odd count as it is, else lo * 0.5 + hi * 0.5 of the two middle ones (DuckDB's interpolation;
# percentile_cont's lo + (hi - lo) * 0.5 differs in the last digit for about one pair in 15),
# NULL for no value. An aggregate of our own: percentile_cont cannot be a window function either.
# runlytics_first: DuckDB's first(): the first row's value in the aggregate's ORDER BY, a NULL
# value included.
FUNCTIONS = (
    r"""
CREATE OR REPLACE FUNCTION runlytics_median_final(state DOUBLE PRECISION[]) RETURNS DOUBLE PRECISION
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN n = 0 THEN NULL
                WHEN mod(n, 2) = 1 THEN s[(n + 1) / 2]
                ELSE s[n / 2] * CAST(0.5 AS DOUBLE PRECISION) + s[n / 2 + 1] * CAST(0.5 AS DOUBLE PRECISION) END
    FROM (SELECT array_agg(v ORDER BY v) AS s, count(*) AS n FROM unnest(state) v WHERE v IS NOT NULL) t
$$""",
    r"""
CREATE OR REPLACE AGGREGATE runlytics_median(DOUBLE PRECISION) (
    SFUNC = array_append, STYPE = DOUBLE PRECISION[], FINALFUNC = runlytics_median_final, INITCOND = '{}'
)""",
    r"""
CREATE OR REPLACE FUNCTION runlytics_first_step(state anyarray, value anyelement) RETURNS anyarray
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN cardinality(state) = 0 THEN ARRAY[value] ELSE state END
$$""",
    r"""
CREATE OR REPLACE FUNCTION runlytics_first_final(state anyarray) RETURNS anyelement
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT state[1]
$$""",
    r"""
CREATE OR REPLACE AGGREGATE runlytics_first(anyelement) (
    SFUNC = runlytics_first_step, STYPE = anyarray, FINALFUNC = runlytics_first_final, INITCOND = '{}'
)""",
    # runlytics_last_known: over a window frame, its last value that is not NULL (DuckDB's
    # last_value(x IGNORE NULLS))
    r"""
CREATE OR REPLACE FUNCTION runlytics_last_known_step(state anyelement, value anyelement) RETURNS anyelement
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(value, state)
$$""",
    r"""
CREATE OR REPLACE AGGREGATE runlytics_last_known(anyelement) (SFUNC = runlytics_last_known_step, STYPE = anyelement)""",
    # runlytics_printf: DuckDB's printf for what the views write (%s text, %d an integer, %.Nf and
    # %.Ng a DOUBLE, %%), NULL when any value is NULL. Each value comes as text from
    # runlytics_printf_arg, a DOUBLE as its 64 bits (whatever the session's extra_float_digits);
    # it is formatted from its exact binary value rounded half to even, as DuckDB's fmt does.
    # The same digits, but for %f of magnitudes from 1e17, where DuckDB writes digits past the
    # 17th that are not the value's.
    r"""
CREATE OR REPLACE FUNCTION runlytics_printf_arg(value DOUBLE PRECISION) RETURNS TEXT
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT 'f' || encode(float8send(value), 'hex')
$$""",
    r"""
CREATE OR REPLACE FUNCTION runlytics_printf_arg(value BIGINT) RETURNS TEXT
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT 'i' || CAST(value AS TEXT)
$$""",
    r"""
CREATE OR REPLACE FUNCTION runlytics_printf_arg(value TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT 's' || value
$$""",
    # the exact decimal value of a float8 given as its 64 bits in hex: (sign, digits N, scale k) with
    # |value| = N / 10^k; NULL digits for NaN, k = -1 for infinity
    r"""
CREATE OR REPLACE FUNCTION runlytics_float_decimal(
    hex TEXT, OUT negative BOOLEAN, OUT digits NUMERIC, OUT scale INTEGER
)
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    bits BIGINT := CAST(CAST(('x' || hex) AS BIT(64)) AS BIGINT);
    biased INTEGER := CAST((bits >> 52) & 2047 AS INTEGER);
    mantissa NUMERIC := bits & 4503599627370495;
    exponent INTEGER;
BEGIN
    negative := bits < 0;
    IF biased = 2047 THEN
        digits := CASE WHEN mantissa = 0 THEN 0 END;
        scale := -1;
        RETURN;
    END IF;
    IF biased = 0 THEN
        exponent := -1074;
    ELSE
        mantissa := mantissa + 4503599627370496;
        exponent := biased - 1075;
    END IF;
    IF exponent >= 0 THEN
        digits := mantissa * power(CAST(2 AS NUMERIC), exponent);
        scale := 0;
    ELSE
        -- m * 2^-e = m * 5^e / 10^e
        digits := mantissa * power(CAST(5 AS NUMERIC), -exponent);
        scale := -exponent;
    END IF;
    digits := trunc(digits);
END
$$""",
    # n / 10^shift rounded to an integer, halves to even
    r"""
CREATE OR REPLACE FUNCTION runlytics_round_even(n NUMERIC, shift INTEGER) RETURNS NUMERIC
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    d NUMERIC;
    q NUMERIC;
    r NUMERIC;
BEGIN
    IF shift <= 0 THEN
        RETURN trunc(n * power(CAST(10 AS NUMERIC), -shift));
    END IF;
    d := trunc(power(CAST(10 AS NUMERIC), shift));
    q := div(n, d);
    r := n - q * d;
    IF 2 * r > d OR (2 * r = d AND mod(q, 2) = 1) THEN
        q := q + 1;
    END IF;
    RETURN trunc(q);
END
$$""",
    # one DOUBLE as %.Nf or %.Ng (kind 'f' or 'g'), as C's printf writes it
    r"""
CREATE OR REPLACE FUNCTION runlytics_format_double(hex TEXT, kind TEXT, precision_ INTEGER) RETURNS TEXT
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    v RECORD;
    sign_ TEXT;
    q NUMERIC;
    qt TEXT;
    x INTEGER;
    p INTEGER := precision_;
    decimals INTEGER;
    body TEXT;
BEGIN
    v := runlytics_float_decimal(hex);
    sign_ := CASE WHEN v.negative THEN '-' ELSE '' END;
    IF v.digits IS NULL THEN
        RETURN 'nan';
    ELSIF v.scale = -1 THEN
        RETURN sign_ || 'inf';
    END IF;
    IF kind = 'f' THEN
        q := runlytics_round_even(v.digits, v.scale - p);
        qt := CAST(q AS TEXT);
        qt := lpad(qt, greatest(length(qt), p + 1), '0');
        RETURN sign_ || left(qt, length(qt) - p) || CASE WHEN p > 0 THEN '.' || right(qt, p) ELSE '' END;
    END IF;
    -- %g
    IF p = 0 THEN
        p := 1;
    END IF;
    IF v.digits = 0 THEN
        RETURN sign_ || '0';
    END IF;
    x := length(CAST(v.digits AS TEXT)) - 1 - v.scale;
    q := runlytics_round_even(v.digits, length(CAST(v.digits AS TEXT)) - p);
    IF length(CAST(q AS TEXT)) > p THEN
        -- rounding carried into a new digit (9.9999995 -> 10.0000)
        q := div(q, 10);
        x := x + 1;
    END IF;
    qt := CAST(q AS TEXT);
    IF x < -4 OR x >= p THEN
        body := rtrim(left(qt, 1) || '.' || substr(qt, 2), '0');
        body := rtrim(body, '.');
        RETURN sign_ || body || 'e' || CASE WHEN x < 0 THEN '-' ELSE '+' END
            || CASE WHEN abs(x) < 10 THEN '0' ELSE '' END || CAST(abs(x) AS TEXT);
    END IF;
    decimals := p - 1 - x;
    qt := lpad(qt, greatest(length(qt), decimals + 1), '0');
    body := left(qt, length(qt) - decimals);
    IF decimals > 0 THEN
        body := rtrim(rtrim(body || '.' || right(qt, decimals), '0'), '.');
    END IF;
    RETURN sign_ || body;
END
$$""",
    r"""
CREATE OR REPLACE FUNCTION runlytics_printf(format TEXT, VARIADIC args TEXT[]) RETURNS TEXT
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    out_ TEXT := '';
    i INTEGER := 1;
    n INTEGER := 0;
    c TEXT;
    spec TEXT;
    arg TEXT;
    precision_ INTEGER;
BEGIN
    IF format IS NULL OR array_position(args, NULL) IS NOT NULL THEN
        RETURN NULL;
    END IF;
    WHILE i <= length(format) LOOP
        c := substr(format, i, 1);
        IF c <> '%' THEN
            out_ := out_ || c;
            i := i + 1;
            CONTINUE;
        END IF;
        spec := substring(substr(format, i + 1) FROM '^(?:\.[0-9]+)?[sdfg%]');
        IF spec IS NULL THEN
            RAISE EXCEPTION 'runlytics_printf: unsupported conversion in %', format;
        END IF;
        i := i + 1 + length(spec);
        IF spec = '%' THEN
            out_ := out_ || '%';
            CONTINUE;
        END IF;
        n := n + 1;
        arg := args[n];
        IF arg IS NULL THEN
            RAISE EXCEPTION 'runlytics_printf: too few arguments for %', format;
        END IF;
        precision_ := coalesce(CAST(substring(spec FROM '^\.([0-9]+)') AS INTEGER), 6);
        IF right(spec, 1) = 's' THEN
            IF left(arg, 1) <> 's' THEN
                RAISE EXCEPTION 'runlytics_printf: %%s takes text';
            END IF;
            out_ := out_ || substr(arg, 2);
        ELSIF right(spec, 1) = 'd' THEN
            IF left(arg, 1) = 'i' THEN
                out_ := out_ || substr(arg, 2);
            ELSIF left(arg, 1) = 'f' THEN  -- an integer of a type PostgreSQL passed as float8
                out_ := out_ || runlytics_format_double(substr(arg, 2), 'f', 0);
            ELSE
                RAISE EXCEPTION 'runlytics_printf: %%d takes an integer';
            END IF;
        ELSE
            IF left(arg, 1) = 'i' THEN  -- an integer: its double's digits, as DuckDB would refuse
                arg := runlytics_printf_arg(CAST(substr(arg, 2) AS DOUBLE PRECISION));
            ELSIF left(arg, 1) <> 'f' THEN
                RAISE EXCEPTION 'runlytics_printf: %%f and %%g take a number';
            END IF;
            out_ := out_ || runlytics_format_double(substr(arg, 2), right(spec, 1), precision_);
        END IF;
    END LOOP;
    RETURN out_;
END
$$""",
)
DROP_FUNCTIONS = (
    "DROP FUNCTION IF EXISTS runlytics_printf(TEXT, TEXT[])",
    "DROP FUNCTION IF EXISTS runlytics_format_double(TEXT, TEXT, INTEGER)",
    "DROP FUNCTION IF EXISTS runlytics_round_even(NUMERIC, INTEGER)",
    "DROP FUNCTION IF EXISTS runlytics_float_decimal(TEXT)",
    "DROP FUNCTION IF EXISTS runlytics_printf_arg(TEXT)",
    "DROP FUNCTION IF EXISTS runlytics_printf_arg(BIGINT)",
    "DROP FUNCTION IF EXISTS runlytics_printf_arg(DOUBLE PRECISION)",
    "DROP AGGREGATE IF EXISTS runlytics_last_known(anyelement)",
    "DROP FUNCTION IF EXISTS runlytics_last_known_step(anyelement, anyelement)",
    "DROP AGGREGATE IF EXISTS runlytics_first(anyelement)",
    "DROP FUNCTION IF EXISTS runlytics_first_final(anyarray)",
    "DROP FUNCTION IF EXISTS runlytics_first_step(anyarray, anyelement)",
    "DROP AGGREGATE IF EXISTS runlytics_median(DOUBLE PRECISION)",
    "DROP FUNCTION IF EXISTS runlytics_median_final(DOUBLE PRECISION[])",
)


def postgres_statements() -> list[str]:
    """What this revision runs on PostgreSQL, in order: the functions, then the views."""
    views = [frozen.copy(revision_of, name) for name, revision_of in POSTGRES_VIEWS.items()]
    return [*FUNCTIONS, *(view.create_sql(dialect.POSTGRES) for view in views)]


def upgrade() -> None:
    if engine.on_postgres():
        for statement in postgres_statements():
            op.execute(statement)
        return
    for view in frozen.views("0018", tuple(VIEWS_BEFORE)):
        op.execute(view.create_sql())


def downgrade() -> None:
    if engine.on_postgres():
        # the views exist on PostgreSQL from this revision on (names from POSTGRES_VIEWS)
        for name in reversed(POSTGRES_VIEWS):
            op.execute(f"DROP VIEW IF EXISTS {name}")
        for statement in DROP_FUNCTIONS:
            op.execute(statement)
        return
    for name, before in VIEWS_BEFORE.items():
        for view in frozen.views(before, (name,)):
            op.execute(view.create_sql())
