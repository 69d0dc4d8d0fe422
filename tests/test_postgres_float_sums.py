"""PostgreSQL's sums and means of float8 give DuckDB's values where they overflow (revision 0030).

PostgreSQL's ``sum(float8)`` raises ``value out of range: overflow`` where a sum of finite values
rounds to infinity, and ``avg(float8)`` also where its running sum of squared deviations does
(values of +-1e200 whose mean is 0); DuckDB adds in IEEE arithmetic and gives +-Infinity (or the
value the sorted order leads to). The views' sums and means of measured values (the dialect's
@ordered_fsum, @ordered_favg, @favg) are compared bit for bit with DuckDB's: the aggregates alone
on sets of edge values, and every view over jobs whose readings overflow them.
"""

from __future__ import annotations

import itertools
import math
import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import psycopg

from runlytics.warehouse import db, dialect, insights, migrate, results, views
from runlytics.warehouse.postgres import SESSION_OPTIONS
from tests.conftest import mirror
from tests.test_postgres_float_edges import TINY, VALUES, _bits

MAX = 1.7976931348623157e308
# every set of one or two edge values, and a few longer ones: sums that overflow in the middle of
# the sorted order or at its end, signed zeros, subnormals, infinities of both signs, NaN, NULL
SETS: list[list[float | None]] = [
    *([v] for v in VALUES),
    *(list(pair) for pair in itertools.combinations_with_replacement(VALUES, 2)),
    [1e308, 1e308, -1e308],
    [1e308, 1e308, -1e308, -1e308],
    [MAX, MAX, -MAX, 1.0],
    [1e200, -1e200],
    [1e200, -1e200, 3.0, None],
    [-0.0, -0.0],
    [-0.0, 0.0],
    [TINY, 0.0],
    [TINY, TINY, TINY],
    [math.inf, 1e308, 1e308],
    [-math.inf, -1e308, -1e308, math.inf],
    [None, None],
    [8e307] * 3,
    [1e307] * 17,
]


def _pg(pg_url: str) -> psycopg.Connection[Any]:
    migrate.upgrade(db.PostgresUrl(pg_url))
    return psycopg.connect(pg_url, autocommit=True, options=SESSION_OPTIONS)


def test_sums_and_means_of_edge_values_give_duckdbs_bits(pg_url: str) -> None:
    rng = random.Random(30)
    sets = [*SETS, *([rng.choice(VALUES) for _ in range(rng.randint(3, 9))] for _ in range(300))]
    rows = [(g, v) for g, values in enumerate(sets) for v in values]
    duck = duckdb.connect()
    duck.execute("CREATE TABLE t (g INTEGER, v DOUBLE)")
    duck.executemany("INSERT INTO t VALUES (?, ?)", rows)
    query = "SELECT g, {sum}(v ORDER BY v), {avg}(v ORDER BY v), {avg}(v) FROM t GROUP BY g"
    want = {g: rest for g, *rest in duck.execute(query.format(sum="sum", avg="avg")).fetchall()}
    with _pg(pg_url) as con, con.cursor() as cur:
        cur.execute("CREATE TEMP TABLE t (g INTEGER, v DOUBLE PRECISION)")
        with cur.copy("COPY t (g, v) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        got = {g: rest for g, *rest in cur.execute(query.format(sum="runlytics_sum", avg="runlytics_avg")).fetchall()}
    # the unordered mean adds in the input's order on each engine: compared where that is one order
    wrong = [
        (sets[g], want[g], got[g])
        for g in want
        if [_bits(x) for x in want[g][:2]] != [_bits(x) for x in got[g][:2]]
        or (len(sets[g]) <= 1 and _bits(want[g][2]) != _bits(got[g][2]))
    ]
    assert wrong == []
    # the cases this is about are among them: infinity from finite values
    assert any(math.isinf(want[g][0]) and all(v is None or math.isfinite(v) for v in sets[g]) for g in want)


def _facts(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Jobs whose step readings, GPU minutes and rates overflow the views' sums and means; their ids."""
    t0 = datetime(2026, 1, 5, 8)
    jobs = {
        # 1e308 samples per iteration (batch_size), 1e308 seconds each (iteration_time), rates of +-1e200
        "huge": (1e308, [(1e308, 1e200), (1e308, -1e200), (1.0, 3.0)]),
        # the same below zero where a reading can be (rates), a mean of 0 from +-1e200
        "opposite": (2.0, [(1.0, -1e200), (1.0, 1e200)]),
        "plain": (4.0, [(0.5, 8.0), (0.5, 8.0)]),
    }
    for job, (batch, steps) in jobs.items():
        con.execute(
            "INSERT INTO jobs (job_id, status, model_name, batch_size, started_at, ingested_at) "
            "VALUES (?, 'completed', 'm', ?, ?, ?)",
            [job, batch, t0, t0],
        )
        for i, (seconds, rate) in enumerate(steps):
            step = 2 * i + 1  # 2 iterations a row after the first: 1e308 samples x 2 overflows (step_metrics)
            con.execute(
                "INSERT INTO steps (job_id, step, ts, loss, iteration_time, samples_per_second) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [job, step, t0 + timedelta(seconds=step), 2.0 - i / 10, seconds, rate],
            )
            for gpu in range(2):  # readings of 1e308 (and -1e308 on the second GPU of "opposite")
                reading = 1e308 if job == "huge" or gpu == 0 else -1e308
                con.execute(
                    "INSERT INTO step_gpus (job_id, step, gpu_index, utilization_percent, memory_used_mb, "
                    "memory_total_mb, temperature_c, power_w) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [job, step, gpu, reading, reading, 1e308, reading, reading],
                )
    # a job with GPU samples: two minutes of one GPU whose sums (and seconds, energy) are 1e308 each
    con.execute(
        "INSERT INTO jobs (job_id, status, model_name, ingested_at) VALUES ('sampled', 'completed', 'm', ?)", [t0]
    )
    con.execute("INSERT INTO steps (job_id, step, ts, loss, samples) VALUES ('sampled', 1, ?, 1.0, 8)", [t0])
    for k in range(2):
        minute = t0 + timedelta(minutes=k)
        con.execute(
            """INSERT INTO gpu_minutes_hot BY NAME SELECT 'sampled' AS job_id, 'h' AS host, 'GPU-1' AS gpu_key,
               CAST(? AS TIMESTAMP) AS minute, 0 AS gpu_index, 'GPU-1' AS gpu_uuid, 1 AS samples,
               CAST(? AS TIMESTAMP) AS first_ts, CAST(? AS TIMESTAMP) AS last_ts,
               1 AS utilization_percent_n, 1e308 AS utilization_percent_sum, 1e308 AS utilization_percent_min,
               1e308 AS utilization_percent_max, 1 AS memory_used_mb_n, 1e308 AS memory_used_mb_sum,
               1e308 AS memory_used_mb_max, 1 AS temperature_c_n, 1e308 AS temperature_c_sum,
               1e308 AS temperature_c_max, 1 AS power_w_n, 1e308 AS power_w_sum, 0 AS nonfinite,
               1e308 AS interval_seconds, 1e308 AS utilization_seconds, 1e308 AS idle_seconds,
               1e308 AS reasons_seconds, 1e308 AS throttled_seconds, 1e308 AS energy_wh""",
            [minute, minute, minute],
        )
    con.execute("INSERT INTO job_gpu_series VALUES ('sampled', 'h', 'GPU-1', ?, ?)", [t0, t0 + timedelta(minutes=1)])
    return [*jobs, "sampled"]


def _rows(cursor: Any) -> list[tuple[Any, ...]]:
    names = [d[0] for d in cursor.description]
    keep = [i for i, name in enumerate(names) if name not in ("as_of", "ingested_at")]
    rows = [tuple(_bits(row[i]) if isinstance(row[i], float) else row[i] for i in keep) for row in cursor.fetchall()]
    return sorted(rows, key=repr)


def test_every_view_over_overflowing_readings_is_duckdbs_on_postgres(pg_url: str, tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    migrate.upgrade(path)
    target = db.PostgresUrl(pg_url)
    migrate.upgrade(target)
    with db.connection(path) as con:
        jobs = _facts(con)
        results.refresh(con, set(jobs))
        want = {name: _rows(con.execute(f"SELECT * FROM {name}")) for name in views.ORDER}
        mirror(con, target)  # PostgreSQL computes job_results from its views here: no error
    # DuckDB has the infinities this is about (in the section's view: job_analytics gives NULL for a
    # figure that is not finite, revision 0042)
    assert any(math.isinf(v) for (v,) in duckdb_floats(path, "SELECT total_samples FROM job_performance"))
    with psycopg.connect(pg_url, options=SESSION_OPTIONS) as pg:
        pg.execute(insights.REFILL)
        got = {name: _rows(pg.execute(f"SELECT * FROM {name}")) for name in views.ORDER}
    for name in views.ORDER:
        assert got[name] == want[name], name


def duckdb_floats(path: Path, sql: str) -> list[tuple[float]]:
    with duckdb.connect(str(path), read_only=True) as con:
        return [row for row in con.execute(sql).fetchall() if isinstance(row[0], float)]


def test_revision_0030_goes_down_and_up_on_postgres(pg_url: str) -> None:
    from alembic import command

    from runlytics.warehouse import postgres

    target = db.PostgresUrl(pg_url)
    assert migrate.upgrade(target) == migrate.HEAD_REVISION
    with postgres.connection(target) as conn:
        config = migrate.alembic_config()
        config.attributes["connection"] = conn
        command.downgrade(config, "0029")
        conn.commit()
    # a NaN whose sign bit is set: "-nan" as DuckDB's printf writes it, from 0030
    nan = "SELECT " + dialect.render("@printf('%.1f'; -CAST('NaN' AS DOUBLE PRECISION))", dialect.POSTGRES)
    with psycopg.connect(pg_url) as con:
        assert con.execute("SELECT count(*) FROM pg_proc WHERE proname LIKE 'runlytics_sum%'").fetchone() == (0,)
        assert "runlytics_sum" not in con.execute("SELECT pg_get_viewdef('job_resources')").fetchone()[0]
        assert con.execute(nan).fetchone() == ("nan",)
    assert migrate.upgrade(target) == migrate.HEAD_REVISION
    with psycopg.connect(pg_url) as con:
        assert "runlytics_sum" in con.execute("SELECT pg_get_viewdef('job_resources')").fetchone()[0]
        assert con.execute(nan).fetchone() == ("-nan",)
