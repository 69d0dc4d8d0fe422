"""PostgreSQL's float8 arithmetic at the edges gives DuckDB's values (revision 0029).

PostgreSQL raises ``value out of range`` where a float8 product or quotient rounds to 0 from
nonzero operands, or any of + - * / rounds to infinity from finite ones; DuckDB gives IEEE's
signed 0 or infinity. Each guarded operation (the dialect macros @fmul, @fdiv, @fadd, @fsub and
the median's final step) is compared bit for bit with DuckDB on a real PostgreSQL server.
"""

from __future__ import annotations

import itertools
import math
import struct
from datetime import datetime
from pathlib import Path

import duckdb
import psycopg
import pytest

from runlytics.warehouse import db, migrate, results
from tests.conftest import mirror

TINY = 5e-324  # the least subnormal, 2^-1074
MAX = 1.7976931348623157e308
EDGES = [
    0.0, TINY, 2 * TINY, 3 * TINY, 2.2250738585072014e-308, 2.225073858507201e-308, 1e-300, 1e-151, 1e-150,
    math.ldexp(1, -51), 0.5, 0.75, 1.0, 1.5, 3.6, 100.0, 1e150, 1e151, 1e300, math.ldexp(1, 970), 8e307,
    math.ldexp(1, 1023), MAX,
]  # fmt: skip
VALUES = [*EDGES, *(-x for x in EDGES), math.inf, -math.inf, math.nan]
OPS = {"fmul": "*", "fdiv": "/", "fadd": "+", "fsub": "-"}


def _bits(x: float | None) -> bytes | None:
    """A float's 64 bits (signed zeros differ), NaN as one value, None as None."""
    if x is None:
        return None
    return b"nan" if math.isnan(x) else struct.pack("<d", x)


def _pg(pg_url: str) -> psycopg.Connection:
    migrate.upgrade(db.PostgresUrl(pg_url))
    return psycopg.connect(pg_url, autocommit=True)


@pytest.mark.parametrize("name", sorted(OPS))
def test_each_operation_gives_duckdbs_bits_on_edge_operands(pg_url: str, name: str) -> None:
    pairs = [(a, b) for a, b in itertools.product(VALUES, VALUES) if not (name == "fdiv" and b == 0)]
    duck = duckdb.connect()
    duck.execute("CREATE TABLE t (i INTEGER, a DOUBLE, b DOUBLE)")
    duck.executemany("INSERT INTO t VALUES (?, ?, ?)", [(i, a, b) for i, (a, b) in enumerate(pairs)])
    want = dict(duck.execute(f"SELECT i, a {OPS[name]} b FROM t").fetchall())
    with _pg(pg_url) as con, con.cursor() as cur:
        cur.execute("CREATE TEMP TABLE t (i INTEGER, a DOUBLE PRECISION, b DOUBLE PRECISION)")
        with cur.copy("COPY t (i, a, b) FROM STDIN") as copy:
            for i, (a, b) in enumerate(pairs):
                copy.write_row((i, a, b))
        got = dict(cur.execute(f"SELECT i, runlytics_{name}(a, b) FROM t").fetchall())
        # NULL operands give NULL, as the operators do
        assert cur.execute(f"SELECT runlytics_{name}(NULL, 1), runlytics_{name}(1, NULL)").fetchone() == (None, None)
    wrong = [(pairs[i], want[i], got[i]) for i in want if _bits(want[i]) != _bits(got[i])]
    assert wrong == []
    # the cases this is about are among them: IEEE's 0 and infinity from finite operands
    if name == "fmul":
        assert _bits(want[pairs.index((TINY, 0.5))]) == _bits(0.0)
    assert any(math.isinf(want[i]) and all(map(math.isfinite, pairs[i])) for i in want)


MEDIANS = [
    [TINY, 1.0],
    [-TINY, -TINY],
    [TINY, TINY],
    [-TINY, TINY],
    [3 * TINY, TINY],
    [TINY, 3 * TINY, 1.0, -1.0],
    [MAX, MAX],
    [-MAX, MAX],
    [1e308, MAX],
    [TINY, 1.0] * 10,
    [TINY, None, 2 * TINY],
    [math.inf, TINY],
    # DuckDB rounds lo / 2 + round(hi / 2) once (its interpolation's first product is fused):
    # 3 x 2^-1074 twice is 4 x 2^-1074 there, not 3
    [3 * TINY, 3 * TINY],
    [-3 * TINY, 6 * TINY],
    [TINY, 1e-310],
    [-TINY, math.ldexp(1, -1000)],
    [7 * TINY, math.ldexp(1, 901)],
]


def test_median_of_edge_values_gives_duckdbs_bits(pg_url: str) -> None:
    duck = duckdb.connect()
    with _pg(pg_url) as con:
        for values in MEDIANS:
            sql = "SELECT median(v) FROM (SELECT unnest(CAST($v AS DOUBLE[])) AS v)"
            (want,) = duck.execute(sql, {"v": values}).fetchone() or (None,)
            row = con.execute("SELECT runlytics_median(v) FROM unnest(CAST(%s AS DOUBLE PRECISION[])) v", [values])
            (got,) = row.fetchone() or (None,)
            assert _bits(got) == _bits(want), values
            # as a window function too (the insight views' use), on both engines
            sql = "SELECT median(v) OVER () FROM (SELECT unnest(CAST($v AS DOUBLE[])) AS v) LIMIT 1"
            (want,) = duck.execute(sql, {"v": values}).fetchone() or (None,)
            (got,) = con.execute(
                "SELECT runlytics_median(v) OVER () FROM unnest(CAST(%s AS DOUBLE PRECISION[])) v LIMIT 1", [values]
            ).fetchone() or (None,)
            assert _bits(got) == _bits(want), values


# initial, final loss -> DuckDB's 100 * (initial - final) / initial: by hand, IEEE's infinities
# and zeros where PostgreSQL's operators raise
LOSSES = {
    "subnormal_start": ([TINY, 3.6], -math.inf),
    "negative_subnormal_start": ([-TINY, 3.6], math.inf),
    "huge_rise_from_negative": ([-MAX, MAX], math.inf),  # -inf x 100 / -MAX
    "sum_overflows": ([MAX, -MAX], math.inf),
    "tiny_change": ([1e300, 1e300 * (1 - 2**-52)], 100 * (1e300 - 1e300 * (1 - 2**-52)) / 1e300),
    "plain": ([4.0, 1.0], 75.0),
}


def test_loss_reduction_of_edge_losses_is_duckdbs_on_postgres(pg_url: str, tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    migrate.upgrade(path)
    target = db.PostgresUrl(pg_url)
    migrate.upgrade(target)
    with db.connection(path) as con:
        for job, (losses, _) in LOSSES.items():
            con.execute(
                "INSERT INTO jobs (job_id, status, ingested_at) VALUES (?, 'completed', ?)", [job, datetime(2026, 1, 1)]
            )
            for i, loss in enumerate(losses):
                con.execute("INSERT INTO steps (job_id, step, loss) VALUES (?, ?, ?)", [job, 10 * (i + 1), loss])
        results.refresh(con, set(LOSSES))
        duck = dict(con.execute("SELECT job_id, loss_reduction_percent FROM job_losses").fetchall())
        mirror(con, target)  # PostgreSQL computes job_results from its views here: no error
    with psycopg.connect(pg_url) as pg:
        got = dict(pg.execute("SELECT job_id, loss_reduction_percent FROM job_losses").fetchall())
        stored = dict(pg.execute("SELECT job_id, loss_reduction_percent FROM job_results").fetchall())
    for job, (_, want) in LOSSES.items():
        assert _bits(duck[job]) == _bits(want), job
        assert _bits(got[job]) == _bits(want), job
        # job_analytics (and job_results) give no figure that is not finite (revision 0042)
        assert _bits(stored[job]) == _bits(want if math.isfinite(want) else None), job


def test_revision_0029_goes_down_and_up_on_postgres(pg_url: str) -> None:
    from alembic import command

    from runlytics.warehouse import postgres

    target = db.PostgresUrl(pg_url)
    assert migrate.upgrade(target) == migrate.HEAD_REVISION
    with postgres.connection(target) as conn:
        config = migrate.alembic_config()
        config.attributes["connection"] = conn
        command.downgrade(config, "0028")
        conn.commit()
    with psycopg.connect(pg_url) as con:
        assert con.execute(
            "SELECT count(*) FROM pg_proc WHERE proname IN ('runlytics_fmul', 'runlytics_float_edge')"
        ).fetchone() == (0,)
        assert "runlytics_fdiv" not in con.execute("SELECT pg_get_viewdef('job_losses')").fetchone()[0]
        assert con.execute("SELECT count(*) FROM job_insights").fetchone() == (0,)
    assert migrate.upgrade(target) == migrate.HEAD_REVISION
    with psycopg.connect(pg_url) as con:
        # the guarded expression, written out since revision 0030 (the dialect's @fdiv)
        assert "runlytics_float_edge" in con.execute("SELECT pg_get_viewdef('job_losses')").fetchone()[0]
        assert con.execute("SELECT runlytics_median(v) FROM unnest(ARRAY[5e-324, 1.0]) v").fetchone() == (0.5,)
