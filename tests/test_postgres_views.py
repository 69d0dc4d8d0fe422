"""The views give the same rows on PostgreSQL as on DuckDB (issue #18).

Generated jobs (every insight anomaly of tests/insight_generator.py, GPU samples with power,
steps with GPU readings) and real files (Hugging Face trainer states, a Lightning CSV run,
LLaMA-Factory logs) are ingested into a DuckDB warehouse, which ``runlytics db copy``
(warehouse/pg_copy.py) copies into a PostgreSQL database that the same alembic chain built
(revision 0018 creates the views there); then every view of ``views.ORDER`` is read on both
engines and the rows compared, order aside, floats to a relative 1e-9 (the macros of
warehouse/dialect.py aim at the same last digit, and reach it on these rows: the tolerance keeps
the test about meaning, not bits).
"""

from __future__ import annotations

import importlib
import json
import math
import random
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
from pg_server import PgServer

from runlytics.ingest.pipeline import ingest
from runlytics.warehouse import db, migrate, pg_copy, views
from runlytics.warehouse.dialect import DUCKDB, POSTGRES, render
from tests.conftest import REALDATA
from tests.insight_generator import KINDS, clean, inject

REL = 1e-9
REVISION = importlib.import_module("runlytics.migrations.versions.0018_postgresql")

REAL = (
    "hf_trainer_state/tinyllama-sft",
    "hf_trainer_state/multi-eval-groups",
    "hf_trainer_state/bart-samsum-old",
    "tool_logs2/lightning_csv/slm-resumed-and-killed",
    "tool_logs2/llamafactory/qwen25-7b-eval-lines",
)


def _generate(root: Path, spool: Path) -> None:
    rng = random.Random(18)
    now_ms = int(datetime(2026, 12, 1, tzinfo=UTC).timestamp() * 1000)
    jobs = []
    for n, kind in enumerate(KINDS):
        jobs += inject(rng, kind, f"{kind}-{n}", now_ms).jobs
    for n in range(4):
        jobs += clean(rng, f"clean-{n}", now_ms).jobs
    for job in jobs:
        folder = root / job.job_id
        folder.mkdir(parents=True)
        (folder / "progress.json").write_text(json.dumps(job.progress(), allow_nan=True))
        if job.samples:
            lines = []
            for k, line in enumerate(job.spool()):
                # power readings for the energy figures, one in seven missing
                if k % 7:
                    line["power_w"] = 50 + (k * 37) % 250 + 0.125 * (k % 5)
                lines.append(json.dumps(line) + "\n")
            (spool / f"{job.job_id}.jsonl").write_text("".join(lines))
    for name in REAL:
        shutil.copytree(REALDATA / name, root / "real" / name)


def generated_warehouse(tmp: Path) -> Path:
    """The generated and real jobs of _generate ingested into a DuckDB warehouse under ``tmp``
    (the PostgreSQL view, API and CLI tests compare both engines on it)."""
    root, spool = tmp / "jobs", tmp / "spool"
    root.mkdir()
    spool.mkdir()
    _generate(root, spool)
    warehouse = tmp / "warehouse.duckdb"
    assert ingest(warehouse, [root], spools=[spool], wait=10).failed == 0
    return warehouse


@pytest.fixture(scope="module")
def engines(pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    warehouse = generated_warehouse(tmp_path_factory.mktemp("pg_views"))
    url = pg_server.new_database()
    copied = pg_copy.copy(warehouse, db.PostgresUrl(url))
    assert copied.revision == migrate.HEAD_REVISION
    yield warehouse, url


def _value(v: Any) -> Any:
    if isinstance(v, Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, str) and v.startswith(("{", "[")):
        try:  # JSON columns: DuckDB gives text, PostgreSQL a parsed value
            return json.loads(v)
        except ValueError:
            return v
    if isinstance(v, tuple):
        return list(v)
    return v


def _key(row: tuple[Any, ...]) -> str:
    """A sort key that two rows equal up to float rounding share (an integer and a float alike)."""
    return repr(tuple(f"{v:.6g}" if isinstance(v, int | float) and not isinstance(v, bool) else v for v in row))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return False
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b or math.isclose(a, b, rel_tol=REL, abs_tol=1e-12)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _rows_duckdb(path: Path, view: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        rows = con.execute(f"SELECT * FROM {view}").fetchall()
        return [d[0] for d in con.description], [tuple(_value(v) for v in r) for r in rows]
    finally:
        con.close()


def _rows_postgres(url: str, view: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    with psycopg.connect(url) as con:
        con.execute("SET jit = off")
        cur = con.execute(f"SELECT * FROM {view}")
        assert cur.description is not None
        return [d.name for d in cur.description], [tuple(_value(v) for v in r) for r in cur.fetchall()]


def _postgres_views(url: str) -> set[str]:
    with psycopg.connect(url) as con:
        return {r[0] for r in con.execute("SELECT viewname FROM pg_views WHERE schemaname = 'public'")}


def test_revision_0018_names_every_view_of_its_head_once() -> None:
    named = [*REVISION.POSTGRES_VIEWS, *REVISION.NOT_ON_POSTGRES]
    assert sorted(named) == sorted(set(named))
    assert [v for v in views.ORDER if v in REVISION.POSTGRES_VIEWS] == list(REVISION.POSTGRES_VIEWS)


@pytest.mark.parametrize("view", views.ORDER)
def test_a_view_gives_the_same_rows_on_both_engines(engines: tuple[Path, str], view: str) -> None:
    warehouse, url = engines
    # every head view is on PostgreSQL: 0018 creates all but the insight views, 0019 those
    assert view in _postgres_views(url), f"{view} is missing on PostgreSQL"
    duck_columns, duck = _rows_duckdb(warehouse, view)
    pg_columns, pg = _rows_postgres(url, view)
    assert pg_columns == duck_columns
    assert len(pg) == len(duck), f"{view}: {len(duck)} rows on DuckDB, {len(pg)} on PostgreSQL"
    differences = [
        (d, p)
        for d, p in zip(sorted(duck, key=_key), sorted(pg, key=_key), strict=True)
        if not all(_same(a, b) for a, b in zip(d, p, strict=True))
    ]
    assert not differences, f"{view}: {len(differences)} rows differ, first: {differences[0]}"


def test_the_data_reaches_every_view(engines: tuple[Path, str]) -> None:
    """The comparison means something: each view has rows on DuckDB (fleet_gpu_hours one)."""
    warehouse, _ = engines
    empty = [v for v in views.ORDER if not _rows_duckdb(warehouse, v)[1]]
    assert not empty


# (format, values) pairs for @printf: every conversion the views use, ties, carries and limits
PRINTF_VALUES = [
    0.125, 2.5, 3.5, 12.25, 1234567.0, 0.0001234567, 1e-5, 100000.0, 999999.5, 0.1 + 0.2, -1.5e-7, 5e-324,
    1.7976931348623157e308, -0.04, 9.9999995, 99.95, 123456.5, 0.0, 1e16, math.inf, -math.inf, math.nan,
]  # fmt: skip


def test_printf_writes_duckdbs_digits(pg_url: str) -> None:
    assert migrate.upgrade(db.PostgresUrl(pg_url)) == migrate.HEAD_REVISION
    rng = random.Random(7)
    values = PRINTF_VALUES + [rng.uniform(-1000, 1000) for _ in range(150)]
    values += [round(rng.uniform(0, 100), rng.randint(0, 4)) for _ in range(150)]
    duck = duckdb.connect()
    duck.execute("CREATE TABLE u (n BIGINT, v DOUBLE)")
    duck.executemany("INSERT INTO u VALUES (?, ?)", list(enumerate(values)))
    with psycopg.connect(pg_url) as con:
        con.execute("CREATE TABLE u (n BIGINT, v DOUBLE PRECISION)")
        with con.cursor().copy("COPY u FROM STDIN") as copy:
            for row in enumerate(values):
                copy.write_row(row)
        for fmt in ("%.6g", "%.4g", "%.1f", "%.0f", "%g"):
            # DuckDB's %f writes digits past the 17th that are not the value's (1e300 as
            # 1000000000000000052532...): finite magnitudes from 1e17 are left out of %f
            where = "NOT (abs(v) >= 1e17 AND abs(v) < 'Infinity')" if fmt.endswith("f") else "true"
            sql = f"SELECT @printf('{fmt} %d%s %%'; v; n; 'x') FROM u WHERE {where} ORDER BY n"
            # no parameters: psycopg passes the % signs as they are
            assert con.execute(render(sql, POSTGRES).encode()).fetchall() == duck.execute(render(sql)).fetchall()
        # any NULL value makes the message NULL, as in DuckDB
        null = render("SELECT @printf('%d %s'; CAST(NULL AS BIGINT); 'a')", POSTGRES)
        assert con.execute(null.encode()).fetchall() == [(None,)]


def test_median_first_and_last_known_over_windows_as_duckdb(pg_url: str) -> None:
    assert migrate.upgrade(db.PostgresUrl(pg_url)) == migrate.HEAD_REVISION
    rng = random.Random(3)
    rows = [(k % 3, k, rng.choice([None, rng.uniform(-5, 5), float(rng.randint(0, 3))])) for k in range(300)]
    template = (
        "SELECT g, s, @median(v) OVER (PARTITION BY g ORDER BY s ROWS BETWEEN 9 PRECEDING AND CURRENT ROW),"
        " @last_known(v) OVER (PARTITION BY g ORDER BY s ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),"
        " @median(v) OVER (PARTITION BY g)"
        " FROM t ORDER BY g, s"
    )
    grouped = (
        "SELECT g, @median(v), @first_by(v; v DESC, s), @first_by(s; v DESC) FILTER (WHERE s > 10)"
        " FROM t GROUP BY g ORDER BY g"
    )
    duck = duckdb.connect()
    duck.execute("CREATE TABLE t (g BIGINT, s BIGINT, v DOUBLE)")
    duck.executemany("INSERT INTO t VALUES (?, ?, ?)", rows)
    with psycopg.connect(pg_url) as con:
        con.execute("CREATE TABLE t (g BIGINT, s BIGINT, v DOUBLE PRECISION)")
        with con.cursor().copy("COPY t FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        for sql in (template, grouped):
            assert con.execute(render(sql, POSTGRES)).fetchall() == duck.execute(render(sql, DUCKDB)).fetchall()


def test_the_scalar_macros_as_duckdb(pg_url: str) -> None:
    assert migrate.upgrade(db.PostgresUrl(pg_url)) == migrate.HEAD_REVISION
    rng = random.Random(11)
    # epochs whose microseconds end in exactly .5 (DuckDB rounds them away from zero), others
    epochs = [(k + 0.5) / 1e6 for k in (-3, -2, 0, 1, 2, 1_700_000_000_000_000)]
    epochs += [rng.uniform(-1e9, 2e9) for _ in range(200)]
    texts = [
        "checkpoint-12",
        "runs/checkpoint-9223372036854775807",
        "checkpoint-9223372036854775808",
        "checkpoint-",
        "x",
    ]
    values = [math.nan, math.inf, -math.inf, 0.0, -1.5, None]
    sql = (
        "SELECT n, @from_epoch(e), @seconds_between(@from_epoch(e); @from_epoch(e + n * 0.37)), @finite(v),"
        " @capture_bigint(s; 'checkpoint-([0-9]+)$') FROM m ORDER BY n"
    )
    rows = [(n, e, values[n % len(values)], texts[n % len(texts)]) for n, e in enumerate(epochs)]
    duck = duckdb.connect()
    duck.execute("CREATE TABLE m (n BIGINT, e DOUBLE, v DOUBLE, s VARCHAR)")
    duck.executemany("INSERT INTO m VALUES (?, ?, ?, ?)", rows)
    with psycopg.connect(pg_url) as con:
        con.execute("CREATE TABLE m (n BIGINT, e DOUBLE PRECISION, v DOUBLE PRECISION, s VARCHAR)")
        with con.cursor().copy("COPY m FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        assert con.execute(render(sql, POSTGRES)).fetchall() == duck.execute(render(sql, DUCKDB)).fetchall()


def test_the_chain_builds_the_head_texts_on_postgres(engines: tuple[Path, str]) -> None:
    """Each view PostgreSQL has is its warehouse/sql text rendered for it (a revision that replaced
    a view on DuckDB only would leave an old text there)."""
    _, url = engines
    present = _postgres_views(url)
    with psycopg.connect(url) as con:
        for view in views.CURRENT:
            if view.name not in present:
                continue
            (built,) = con.execute("SELECT pg_get_viewdef(%s::regclass)", (view.name,)).fetchone() or (None,)
            try:
                con.execute(view.create_sql(POSTGRES).encode())
            except psycopg.Error as error:
                pytest.fail(f"{view.name}: the head text does not replace the built one: {error}")
            (head,) = con.execute("SELECT pg_get_viewdef(%s::regclass)", (view.name,)).fetchone() or (None,)
            con.rollback()
            assert built == head, f"{view.name}: PostgreSQL has another text than warehouse/sql/{view.name}.sql"
