"""PostgreSQL: float8 arithmetic that gives DuckDB's 0 and +-Infinity instead of raising.

PostgreSQL's float8 multiplication and division raise ``value out of range: underflow`` when the
result rounds to 0 from nonzero operands, and they, addition and subtraction raise ``overflow``
when it rounds to +-Infinity from finite operands; DuckDB (IEEE) gives the signed 0 or infinity.
So a subnormal loss such as 5e-324 made every read of job_insights and job_analytics fail on
PostgreSQL (issue #18): runlytics_median_final halves 5e-324, and job_losses divides by it.

This revision (1) replaces runlytics_median_final on PostgreSQL: DuckDB's build rounds
lo / 2 + round(hi / 2) once (see MEDIAN_FINAL), and the half of +-2^-1074 is computed as x * 0,
the same signed 0 without the error; (2) creates, on PostgreSQL, runlytics_fmul, runlytics_fdiv,
runlytics_fadd and runlytics_fsub (the dialect macros @fmul, @fdiv, @fadd, @fsub; DuckDB's
snippets are the plain operators): where both operands are moderate (1e-150 to 1e150) they are
the plain operator, else runlytics_float_edge decides from the operands' exact binary values (as
NUMERIC integers times powers of two) whether IEEE rounds the result to 0 or infinity, and
returns that signed value, or else the plain operator, which then cannot raise; (3) recreates,
with the macros, on both engines and in dependency order, the views that multiply, divide, add or
subtract measured values: step_metrics and insight_rows (a row's samples and seconds),
job_performance (throughput, iteration time), job_losses (loss reduction), job_gpus,
job_resources and insight_gpus (means; memory share), job_efficiency, job_energy, job_gpu_hours,
insight_steps and insight_peers (the rules' limits: a factor times a median, a median plus that).
DuckDB's values are unchanged (only parentheses differ), and so are PostgreSQL's but where it
raised, or for a median of subnormal values (one rounding, now DuckDB's): nothing derived is
refilled. Division by zero still raises on PostgreSQL (the views divide only by nonzero values).
sum() and avg() of float8 still raise there when a sum of finite values overflows.

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from runlytics.migrations import engine, frozen
from runlytics.warehouse import dialect

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None

# versions/views/0029/, and the revision whose copy each had before
VIEWS_BEFORE = {
    "step_metrics": "0018",
    "job_performance": "0013",
    "job_losses": "0004",
    "job_gpus": "0015",
    "job_resources": "0015",
    "job_efficiency": "0004",
    "job_energy": "0013",
    "job_gpu_hours": "0020",
    "insight_rows": "0025",
    "insight_steps": "0025",
    "insight_gpus": "0019",
    "insight_peers": "0019",
}

# Revision 0018's text, which the downgrade restores
MEDIAN_FINAL_0018 = r"""
CREATE OR REPLACE FUNCTION runlytics_median_final(state DOUBLE PRECISION[]) RETURNS DOUBLE PRECISION
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN n = 0 THEN NULL
                WHEN mod(n, 2) = 1 THEN s[(n + 1) / 2]
                ELSE s[n / 2] * CAST(0.5 AS DOUBLE PRECISION) + s[n / 2 + 1] * CAST(0.5 AS DOUBLE PRECISION) END
    FROM (SELECT array_agg(v ORDER BY v) AS s, count(*) AS n FROM unnest(state) v WHERE v IS NOT NULL) t
$$"""

# DuckDB's median of an even count, as measured on its build (tests/test_postgres_float_edges.py):
# lo * 0.5 + hi * 0.5 with the first product fused into the sum (one rounding of lo / 2 + round(hi / 2)),
# which differs from two roundings only where lo / 2 is not a float8 (|lo| below 2^-1021). Then
# the sum is computed with both operands scaled by 2^100 (lo / 2 exact, no rounding below 2^-922, so
# one rounding above it, as in the true range) and scaled back in one product (one rounding to the
# subnormal grid); where |h| >= 2^900, lo / 2 is below half its last place. A half of +-2^-1074
# (the least subnormal) rounds to +-0, which PostgreSQL raises as an underflow: x * 0 is that
# signed 0 (an operand 0 raises nothing), as for the scaled sum's least magnitude, 2^-975.
MEDIAN_FINAL = r"""
CREATE OR REPLACE FUNCTION runlytics_median_final(state DOUBLE PRECISION[]) RETURNS DOUBLE PRECISION
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN n = 0 THEN NULL
                WHEN mod(n, 2) = 1 THEN s[(n + 1) / 2]
                WHEN abs(lo) >= power(CAST(2 AS DOUBLE PRECISION), -1021) THEN lo * CAST(0.5 AS DOUBLE PRECISION) + h
                WHEN abs(h) >= power(CAST(2 AS DOUBLE PRECISION), 900) THEN h
                WHEN abs(v) = power(CAST(2 AS DOUBLE PRECISION), -975) THEN v * CAST(0 AS DOUBLE PRECISION)
                ELSE v * power(CAST(2 AS DOUBLE PRECISION), -100) END
    FROM (SELECT s, n, lo, h,
                 CASE WHEN abs(lo) < power(CAST(2 AS DOUBLE PRECISION), -1021)
                           AND abs(h) < power(CAST(2 AS DOUBLE PRECISION), 900)
                      THEN lo * power(CAST(2 AS DOUBLE PRECISION), 100) * CAST(0.5 AS DOUBLE PRECISION)
                           + h * power(CAST(2 AS DOUBLE PRECISION), 100) END AS v
          FROM (SELECT s, n, s[n / 2] AS lo,
                       s[n / 2 + 1] * CASE WHEN abs(s[n / 2 + 1]) = CAST('4.9406564584124654e-324' AS DOUBLE PRECISION)
                                          THEN CAST(0 AS DOUBLE PRECISION) ELSE CAST(0.5 AS DOUBLE PRECISION) END AS h
                FROM (SELECT array_agg(v ORDER BY v) AS s, count(*) AS n
                      FROM unnest(state) v WHERE v IS NOT NULL) t) u) w
$$"""

FUNCTIONS = (
    MEDIAN_FINAL,
    # the exact value of a finite float8 as m * 2^e, m a nonnegative integer below 2^53 (its 64 bits)
    r"""
CREATE OR REPLACE FUNCTION runlytics_float_parts(x DOUBLE PRECISION, OUT m NUMERIC, OUT e INTEGER)
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN biased = 0 THEN mantissa ELSE mantissa + 4503599627370496 END,
           CASE WHEN biased = 0 THEN -1074 ELSE biased - 1075 END
    FROM (SELECT CAST((bits >> 52) & 2047 AS INTEGER) AS biased, CAST(bits & 4503599627370495 AS NUMERIC) AS mantissa
          FROM (SELECT CAST(CAST(('x' || encode(float8send(x), 'hex')) AS BIT(64)) AS BIGINT) AS bits) b) p
$$""",
    # xm * 2^xe >= ym * 2^ye, exactly
    r"""
CREATE OR REPLACE FUNCTION runlytics_float_at_least(xm NUMERIC, xe INTEGER, ym NUMERIC, ye INTEGER) RETURNS BOOLEAN
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN xe >= ye THEN xm * power(CAST(2 AS NUMERIC), xe - ye) >= ym
                ELSE xm >= ym * power(CAST(2 AS NUMERIC), ye - xe) END
$$""",
    # a op b ('*', '/', '+', '-') as IEEE rounds it, without PostgreSQL's out-of-range errors: the
    # exact result rounds to 0 when at most 2^-1075 (ties to even), to infinity when at least
    # 2^1024 - 2^970 = (2^54 - 1) * 2^970 (the midpoint above the greatest float8)
    r"""
CREATE OR REPLACE FUNCTION runlytics_float_edge(op TEXT, a DOUBLE PRECISION, b DOUBLE PRECISION)
RETURNS DOUBLE PRECISION
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    finite BOOLEAN := abs(a) < CAST('Infinity' AS DOUBLE PRECISION) AND abs(b) < CAST('Infinity' AS DOUBLE PRECISION);
    signed DOUBLE PRECISION := sign(a) * sign(b);
    am NUMERIC;
    ae INTEGER;
    bm NUMERIC;
    be INTEGER;
    low INTEGER;
BEGIN
    IF op = '-' THEN
        b := -b;
        signed := -signed;
    END IF;
    IF NOT finite OR a = 0 OR b = 0 THEN
        -- no out-of-range error here (b = 0 in a division still raises, as PostgreSQL's / does)
        RETURN CASE op WHEN '*' THEN a * b WHEN '/' THEN a / b ELSE a + b END;
    END IF;
    SELECT p.m, p.e INTO am, ae FROM runlytics_float_parts(abs(a)) p;
    SELECT p.m, p.e INTO bm, be FROM runlytics_float_parts(abs(b)) p;
    IF op = '*' THEN
        IF runlytics_float_at_least(1, 0, am * bm, ae + be + 1075) THEN
            RETURN signed * CAST(0 AS DOUBLE PRECISION);
        ELSIF runlytics_float_at_least(am * bm, ae + be, 18014398509481983, 970) THEN
            RETURN signed * CAST('Infinity' AS DOUBLE PRECISION);
        END IF;
        RETURN a * b;
    ELSIF op = '/' THEN
        IF runlytics_float_at_least(bm, be - 1075, am, ae) THEN
            RETURN signed * CAST(0 AS DOUBLE PRECISION);
        ELSIF runlytics_float_at_least(am, ae, bm * 18014398509481983, be + 970) THEN
            RETURN signed * CAST('Infinity' AS DOUBLE PRECISION);
        END IF;
        RETURN a / b;
    END IF;
    -- a sum: only one of two operands of the same sign can overflow
    IF (a < 0) = (b < 0) THEN
        low := least(ae, be, 970);
        IF am * power(CAST(2 AS NUMERIC), ae - low) + bm * power(CAST(2 AS NUMERIC), be - low)
           >= 18014398509481983 * power(CAST(2 AS NUMERIC), 970 - low) THEN
            RETURN sign(a) * CAST('Infinity' AS DOUBLE PRECISION);
        END IF;
    END IF;
    RETURN a + b;
END
$$""",
    # the operators with a fast path that cannot raise: moderate operands (a product or quotient of
    # magnitudes from 1e-150 to 1e150 lies within 1e-300 to 1e300; a sum of two below 8e307 is
    # below the greatest float8); NULL gives NULL (runlytics_float_edge is strict)
    r"""
CREATE OR REPLACE FUNCTION runlytics_fmul(a DOUBLE PRECISION, b DOUBLE PRECISION) RETURNS DOUBLE PRECISION
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN abs(a) BETWEEN CAST('1e-150' AS DOUBLE PRECISION) AND CAST('1e150' AS DOUBLE PRECISION)
                     AND abs(b) BETWEEN CAST('1e-150' AS DOUBLE PRECISION) AND CAST('1e150' AS DOUBLE PRECISION)
                THEN a * b ELSE runlytics_float_edge('*', a, b) END
$$""",
    r"""
CREATE OR REPLACE FUNCTION runlytics_fdiv(a DOUBLE PRECISION, b DOUBLE PRECISION) RETURNS DOUBLE PRECISION
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN abs(a) BETWEEN CAST('1e-150' AS DOUBLE PRECISION) AND CAST('1e150' AS DOUBLE PRECISION)
                     AND abs(b) BETWEEN CAST('1e-150' AS DOUBLE PRECISION) AND CAST('1e150' AS DOUBLE PRECISION)
                THEN a / b ELSE runlytics_float_edge('/', a, b) END
$$""",
    r"""
CREATE OR REPLACE FUNCTION runlytics_fadd(a DOUBLE PRECISION, b DOUBLE PRECISION) RETURNS DOUBLE PRECISION
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN abs(a) <= CAST('8e307' AS DOUBLE PRECISION) AND abs(b) <= CAST('8e307' AS DOUBLE PRECISION)
                THEN a + b ELSE runlytics_float_edge('+', a, b) END
$$""",
    r"""
CREATE OR REPLACE FUNCTION runlytics_fsub(a DOUBLE PRECISION, b DOUBLE PRECISION) RETURNS DOUBLE PRECISION
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN abs(a) <= CAST('8e307' AS DOUBLE PRECISION) AND abs(b) <= CAST('8e307' AS DOUBLE PRECISION)
                THEN a - b ELSE runlytics_float_edge('-', a, b) END
$$""",
)

DROP_FUNCTIONS = (
    "DROP FUNCTION IF EXISTS runlytics_fsub(DOUBLE PRECISION, DOUBLE PRECISION)",
    "DROP FUNCTION IF EXISTS runlytics_fadd(DOUBLE PRECISION, DOUBLE PRECISION)",
    "DROP FUNCTION IF EXISTS runlytics_fdiv(DOUBLE PRECISION, DOUBLE PRECISION)",
    "DROP FUNCTION IF EXISTS runlytics_fmul(DOUBLE PRECISION, DOUBLE PRECISION)",
    "DROP FUNCTION IF EXISTS runlytics_float_edge(TEXT, DOUBLE PRECISION, DOUBLE PRECISION)",
    "DROP FUNCTION IF EXISTS runlytics_float_at_least(NUMERIC, INTEGER, NUMERIC, INTEGER)",
    "DROP FUNCTION IF EXISTS runlytics_float_parts(DOUBLE PRECISION)",
)


def upgrade() -> None:
    if engine.on_postgres():
        for statement in FUNCTIONS:
            op.execute(statement)
    bound = dialect.for_bind(op.get_bind())
    for name in VIEWS_BEFORE:
        op.execute(frozen.copy("0029", name).create_sql(bound))


def downgrade() -> None:
    bound = dialect.for_bind(op.get_bind())
    for name, before in VIEWS_BEFORE.items():
        op.execute(frozen.copy(before, name).create_sql(bound))
    if engine.on_postgres():
        for statement in DROP_FUNCTIONS:
            op.execute(statement)
        op.execute(MEDIAN_FINAL_0018)
