"""PostgreSQL: sums and means of float8 that give DuckDB's infinities instead of raising.

PostgreSQL's ``sum(float8)`` raises ``value out of range: overflow`` where a sum of finite values
rounds to +-Infinity, and ``avg(float8)`` also where its running sum of squared deviations
overflows (two readings of +-1e200, whose mean is 0); DuckDB adds in IEEE arithmetic. So two
step readings of 1e308 made job_results' refill and every read of job_resources fail there
(issue #18).

This revision creates, on PostgreSQL, the aggregates ``runlytics_sum`` and ``runlytics_avg``
(the dialect macros @ordered_fsum, @ordered_favg and @favg; DuckDB's snippets are its own sum and
avg): each collects its values in an array (in the aggregate's ORDER BY order), and the final
function adds them with PostgreSQL's own sum where no partial sum can reach infinity (the
values' count times their largest finite magnitude at most 2^1023), else one by one with
runlytics_fadd (revision 0029), which gives IEEE's infinity; the mean is that sum over the count
(runlytics_fdiv: DuckDB's avg is its sum over its count, bit for bit). It recreates, with the
macros, on both engines, the views that sum or average measured values: job_duration,
job_performance, job_gpus, job_resources, job_energy, fleet_gpu_hours, insight_gpus (also its
straggler pre-check's difference and margin, @fsub and @fmul) and insight_steps; and
step_metrics and insight_rows, whose rows' samples from a DOUBLE batch_size times the row's
iterations are now @fmul (1e308 x 2 raised on PostgreSQL). DuckDB's texts
render as before (same values, nothing refilled); PostgreSQL's values are the same where they
did not raise, but a sum of -0 values, +0 as DuckDB's. It also makes runlytics_printf write a NaN
whose sign bit is set as "-nan", as DuckDB's printf does (revision 0018 wrote "nan").

On PostgreSQL the dialect now writes @fmul, @fdiv, @fadd and @fsub out as the guarded
expression of 0029's runlytics_fmul etc. (the same values) instead of calling them: PostgreSQL
did not inline a call whose operand was another call or a column of a flattened subquery, so
those ran as a function call per row. This revision renders again the views of 0029 that use
them (RENDERED_AGAIN, PostgreSQL only; a downgrade leaves them so: the dialect renders 0029's
copies the same way now). 0029's functions stay (runlytics_float_edge is what the expressions
call where an operand is extreme).

Revision ID: 0030
Revises: 0029
Create Date: 2026-12-05
"""

from __future__ import annotations

import importlib

from alembic import op

from runlytics.migrations import engine, frozen
from runlytics.warehouse import dialect

revision = "0030"
down_revision = "0029"
branch_labels = None
depends_on = None

# versions/views/0030/, and the revision whose copy each had before
VIEWS_BEFORE = {
    "step_metrics": "0029",
    "insight_rows": "0029",
    "job_duration": "0013",
    "job_performance": "0029",
    "job_gpus": "0029",
    "job_resources": "0029",
    "job_energy": "0029",
    "fleet_gpu_hours": "0013",
    "insight_gpus": "0029",
    "insight_steps": "0029",
}

# PostgreSQL only: the views whose text is 0029's but whose @fmul, @fdiv, @fadd, @fsub now render
# as the guarded expression itself instead of a call of 0029's functions (warehouse/dialect.py)
RENDERED_AGAIN = ("job_losses", "job_efficiency", "job_gpu_hours", "insight_peers")
# both sets in dependency order (warehouse/views.py's ORDER when this revision was written)
ORDER = (
    "step_metrics", "job_performance", "job_duration", "job_losses", "job_gpus", "job_resources", "job_efficiency",
    "job_energy", "job_gpu_hours", "fleet_gpu_hours", "insight_rows", "insight_steps", "insight_peers", "insight_gpus",
)  # fmt: skip
assert set(ORDER) == set(VIEWS_BEFORE) | set(RENDERED_AGAIN)

# revision 0018's runlytics_format_double wrote every NaN as "nan"; DuckDB's printf writes a NaN
# whose sign bit is set (inf - inf's, on x86) as "-nan", as it writes "-inf"
FORMAT_DOUBLE_0018 = next(
    text
    for text in importlib.import_module("runlytics.migrations.versions.0018_postgresql").FUNCTIONS
    if "FUNCTION runlytics_format_double(" in text
)
NAN_0018 = "RETURN 'nan';"
FORMAT_DOUBLE = FORMAT_DOUBLE_0018.replace(NAN_0018, "RETURN sign_ || 'nan';")
assert FORMAT_DOUBLE != FORMAT_DOUBLE_0018

FUNCTIONS = (
    FORMAT_DOUBLE,
    # the values of the array (NULLs skipped) added in its order, as IEEE adds them: one by one,
    # PostgreSQL's + where it cannot raise, runlytics_fadd where a partial sum may overflow
    r"""
CREATE OR REPLACE FUNCTION runlytics_sum_edges(state DOUBLE PRECISION[]) RETURNS DOUBLE PRECISION
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    total DOUBLE PRECISION;
    v DOUBLE PRECISION;
BEGIN
    FOREACH v IN ARRAY state LOOP
        CONTINUE WHEN v IS NULL;
        total := CASE WHEN total IS NULL THEN v ELSE runlytics_fadd(total, v) END;
    END LOOP;
    RETURN total;
END
$$""",
    # PostgreSQL's sum raises only where a partial sum of finite values rounds to infinity: not
    # when n values are at most 2^1023 / n each (every partial sum is then below 2^1023 * (1 + n
    # * 2^-53)); an infinite value's partial sums are infinite or NaN, which raise nothing
    r"""
CREATE OR REPLACE FUNCTION runlytics_sum_final(state DOUBLE PRECISION[]) RETURNS DOUBLE PRECISION
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN t.n = 0 THEN NULL
                WHEN coalesce(t.largest, 0) <= CAST('8.98846567431158e307' AS DOUBLE PRECISION) / t.n
                    THEN (SELECT sum(v) FROM unnest(state) v)
                ELSE runlytics_sum_edges(state) END
           -- DuckDB's sum starts from +0: a sum of -0 values is +0 there (x + 0 is x for any other x)
           + CAST(0 AS DOUBLE PRECISION)
    FROM (SELECT count(v) AS n,
                 max(abs(v)) FILTER (WHERE abs(v) < CAST('Infinity' AS DOUBLE PRECISION)) AS largest
          FROM unnest(state) v) t
$$""",
    r"""
CREATE OR REPLACE FUNCTION runlytics_avg_final(state DOUBLE PRECISION[]) RETURNS DOUBLE PRECISION
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT runlytics_fdiv(runlytics_sum_final(state),
                          CAST((SELECT count(v) FROM unnest(state) v) AS DOUBLE PRECISION))
$$""",
    r"""
CREATE OR REPLACE AGGREGATE runlytics_sum(DOUBLE PRECISION) (
    SFUNC = array_append, STYPE = DOUBLE PRECISION[], FINALFUNC = runlytics_sum_final, INITCOND = '{}'
)""",
    r"""
CREATE OR REPLACE AGGREGATE runlytics_avg(DOUBLE PRECISION) (
    SFUNC = array_append, STYPE = DOUBLE PRECISION[], FINALFUNC = runlytics_avg_final, INITCOND = '{}'
)""",
)

DROP_FUNCTIONS = (
    "DROP AGGREGATE IF EXISTS runlytics_avg(DOUBLE PRECISION)",
    "DROP AGGREGATE IF EXISTS runlytics_sum(DOUBLE PRECISION)",
    "DROP FUNCTION IF EXISTS runlytics_avg_final(DOUBLE PRECISION[])",
    "DROP FUNCTION IF EXISTS runlytics_sum_final(DOUBLE PRECISION[])",
    "DROP FUNCTION IF EXISTS runlytics_sum_edges(DOUBLE PRECISION[])",
)


def upgrade() -> None:
    if engine.on_postgres():
        for statement in FUNCTIONS:
            op.execute(statement)
    bound = dialect.for_bind(op.get_bind())
    for name in ORDER:
        if name in VIEWS_BEFORE:
            op.execute(frozen.copy("0030", name).create_sql(bound))
        elif engine.on_postgres():
            op.execute(frozen.copy("0029", name).create_sql(bound))


def downgrade() -> None:
    # RENDERED_AGAIN stay as they are: the dialect renders 0029's copies so now (the same values)
    bound = dialect.for_bind(op.get_bind())
    for name in ORDER:
        if name in VIEWS_BEFORE:
            op.execute(frozen.copy(VIEWS_BEFORE[name], name).create_sql(bound))
    if engine.on_postgres():
        for statement in DROP_FUNCTIONS:
            op.execute(statement)
        op.execute(FORMAT_DOUBLE_0018)
