"""GPU telemetry published from a stage to PostgreSQL (warehouse/pg_telemetry.py), on a real server.

The stage is an ordinary warehouse built by ``pipeline.ingest`` from GPU spool files; after each
publish PostgreSQL's samples, rollups, GPU series and utilization minutes must equal the stage's,
row for row and float for float: after a second spool chunk (new minutes, a late file for past
minutes, a replaced sample, a new GPU), after a publish that failed or was killed at any of its
steps, and with PostgreSQL's own raw window, which keeps every rollup. The API on PostgreSQL
then draws the stage's GPU charts as the API on the stage does.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
from fastapi.testclient import TestClient
from pg_server import PgServer

from runlytics.api.app import create_app
from runlytics.ingest.pipeline import ingest
from runlytics.warehouse import (
    db,
    migrate,
    parts,
    pg_copy,
    pg_samples,
    pg_telemetry,
    postgres,
    snapshots,
    telemetry_outbox,
)

REPO = Path(__file__).resolve().parent.parent
DAY = datetime(2026, 11, 2)  # days before the tests run: the stage seals every sample into Parquet parts
Gpu = tuple[str, str, int, str | None]
# (job, host, gpu_index, gpu_uuid): two GPUs under one index, a MIG instance, a GPU known by index only
GPUS = (
    ("j0", "n1", 0, "GPU-aaaa-0001"),
    ("j0", "n1", 0, "GPU-bbbb-0002"),
    ("j0", "n1", 1, "MIG-4f1e-77aa-0003"),
    ("j1", "n2", 0, None),
)
NEW_GPU = ("j1", "n2", 1, None)
ODD = (None, math.nan, math.inf)
TABLES = {  # PostgreSQL's table -> the stage's view or table of the same rows, and their key
    "gpu_samples": ("gpu_samples", "job_id, host, gpu_key, ts"),  # on PostgreSQL the view over the packed minutes
    "gpu_minutes": ("gpu_minutes", "job_id, host, gpu_key, minute"),
    "job_gpu_series": ("job_gpu_series", "job_id, host, gpu_key"),
    "utilization_minutes": ("utilization_minutes", "job_id, minute"),
}


def _reading(rng: random.Random, low: float, high: float) -> float | None:
    return rng.choice(ODD) if rng.random() < 0.05 else round(rng.uniform(low, high), 2)


def _sample(rng: random.Random, gpu: Gpu, ts: datetime) -> dict[str, Any]:
    job_id, host, index, uuid = gpu
    row = {"ts": ts.replace(tzinfo=UTC).timestamp(), "job_id": job_id, "host": host, "gpu_index": index}
    if uuid is not None:
        row["gpu_uuid"] = uuid
    row.update(
        utilization_percent=_reading(rng, 0, 100),
        memory_used_mb=_reading(rng, 1000, 80000),
        memory_total_mb=81920.0,
        temperature_c=_reading(rng, 30, 90),
        power_w=_reading(rng, 50, 700),
        sm_clock_mhz=_reading(rng, 200, 2000),
        clocks_event_reasons=rng.choice([None, 0, 4, 0x104]),
    )
    return row


def _samples(
    seed: int, gpus: tuple[tuple[str, str, int, str | None], ...], lo: datetime, hi: datetime
) -> list[dict[str, Any]]:
    """Samples of each GPU from lo to hi, every 2 to 10 s (milliseconds: no two runs share a time)."""
    rng = random.Random(seed)
    rows = []
    for gpu in gpus:
        ts = lo + timedelta(seconds=rng.uniform(0, 5))
        while ts < hi:
            rows.append(_sample(rng, gpu, ts.replace(microsecond=ts.microsecond // 1000 * 1000)))
            ts += timedelta(seconds=rng.uniform(2, 10))
    return rows


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def chunk_one(spool: Path) -> None:
    """Four GPUs of two jobs on three days: ten minutes two days before DAY, and twenty minutes
    across each of the next two midnights."""
    windows = ((DAY - timedelta(days=2), 5), (DAY - timedelta(days=1), 10), (DAY, 20))
    for i, (midnight, minutes) in enumerate(windows):
        rows = _samples(i, GPUS, midnight - timedelta(minutes=minutes), midnight + timedelta(minutes=minutes))
        _write(spool / f"n-{i}.jsonl", rows)


def chunk_two(spool: Path) -> int:
    """Ten new minutes of every GPU and of a new one; the samples it adds."""
    rows = _samples(3, (*GPUS, NEW_GPU), DAY + timedelta(minutes=20), DAY + timedelta(minutes=30))
    _write(spool / "n-9.jsonl", rows)
    return len(rows)


def late_file(spool: Path, stage: Path) -> int:
    """A late file for minutes already published, one of its samples replacing a stored one with
    other values; the samples it adds."""
    late = _samples(4, GPUS[:1], DAY - timedelta(minutes=12), DAY - timedelta(minutes=9))
    with duckdb.connect(str(stage), read_only=True) as con:
        (ts,) = con.execute(
            "SELECT ts FROM gpu_samples WHERE gpu_key = 'GPU-aaaa-0001' AND ts >= $t ORDER BY ts LIMIT 1",
            {"t": DAY - timedelta(minutes=5)},
        ).fetchone() or (None,)
    assert ts is not None
    replaced = _sample(random.Random(5), GPUS[0], ts)
    replaced["utilization_percent"] = 12.345
    _write(spool / "late.jsonl", [*late, replaced])
    return len(late)


def _jobs(root: Path) -> None:
    """The two jobs' progress files: running, a few steps with GPU readings of their own."""
    import json

    for job_id in ("j0", "j1"):
        start = (DAY - timedelta(days=2, minutes=5)).replace(tzinfo=UTC).timestamp()
        history = [
            {"step": 10 * i, "timestamp": start + 600 * i, "loss": 2.0 / i, "iteration_time": 1.0,
             "gpus": [{"index": 0, "utilization_percent": 50.0 + i, "memory_used_mb": 1.0, "temperature_c": 40.0}]}
            for i in range(1, 4)
        ]  # fmt: skip
        doc = {
            "job_id": job_id,
            "status": "running",
            "started_at": start,
            "config": {"batch_size": 4},
            "history": history,
        }
        path = root / job_id / "progress.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(doc))
        os.utime(path, (start, start))  # settled: later runs don't read it again


@dataclass(frozen=True)
class Templates:
    """Stages built once per module (ingest is the slow part), copied by each test:
    ``one``: chunk_one ingested, no outbox (an ordinary warehouse until its first publish);
    ``two``: ``one`` made a stage with nothing owed (as its first publish leaves it), then
    chunk_two and the late file ingested by a run each; ``added``: the samples those add;
    ``pg``: the name of a database at the head revision to clone."""

    one: Path
    two: Path
    added: int
    pg: str


def _ingest(path: Path, root: Path, spool: Path) -> None:
    assert ingest(path, [root], spools=[spool], wait=10, keep_raw_days=0).failed == 0


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory, pg_server: PgServer) -> Templates:
    tmp = tmp_path_factory.mktemp("telemetry")
    root, spool = tmp / "jobs", tmp / "spool"
    _jobs(root)
    chunk_one(spool)
    one = tmp / "one" / "stage.duckdb"
    _ingest(one, root, spool)
    two = tmp / "two" / "stage.duckdb"
    shutil.copytree(one.parent, two.parent)
    with db.connection(two) as con:
        _moved(con)
        pg_telemetry.prepare(con)
        con.execute(f"DELETE FROM {telemetry_outbox.TABLE}")
    added = chunk_two(spool)
    _ingest(two, root, spool)
    added += late_file(spool, two)
    _ingest(two, root, spool)
    url = pg_server.new_database()
    migrate.upgrade(db.PostgresUrl(url))
    return Templates(one, two, added, url.rsplit("/", 1)[1])


def _moved(con: duckdb.DuckDBPyConnection) -> None:
    """A warehouse copied elsewhere: its views name their Parquet parts by absolute path."""
    with db.atomic(con):
        for table in parts.TABLES.values():
            parts.ensure_view(con, table)


class Stage:
    """A copy of a template stage, and a PostgreSQL database of its own at the head revision."""

    def __init__(self, tmp: Path, templates: Templates, pg_server: PgServer) -> None:
        self.path, self.templates = tmp / "stage" / "stage.duckdb", templates
        name = f"{templates.pg}_{tmp.name[-20:]}".replace("-", "_").lower()
        with psycopg.connect(pg_server.admin_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{templates.pg}"')
        self.url = db.PostgresUrl(pg_server.admin_url.rsplit("/", 1)[0] + "/" + name)
        self.load(templates.one)

    def load(self, template: Path) -> None:
        """The stage becomes a copy of ``template`` (the same stage, later)."""
        shutil.rmtree(self.path.parent, ignore_errors=True)
        shutil.copytree(template.parent, self.path.parent)
        with db.connection(self.path) as con:
            _moved(con)

    def publish(self, **options: Any) -> pg_telemetry.Published:
        with db.connection(self.path) as con:
            return pg_telemetry.publish(con, self.url, **options)

    def owed(self) -> int:
        with db.connection(self.path, read_only=True) as con:
            return int(db.one(con, f"SELECT count(*) FROM {telemetry_outbox.TABLE}")[0])

    def rows(self, tables: tuple[str, ...] = tuple(TABLES), where: str = "true") -> dict[str, list[tuple[Any, ...]]]:
        out = {}
        with psycopg.connect(self.url.libpq_url) as pg, db.connection(self.path, read_only=True) as con:
            for table in tables:
                origin, key = TABLES[table]
                names = ", ".join(name for name, _ in pg_copy.target_columns(pg, table))
                found = con.execute(f"SELECT {names} FROM {origin} WHERE {where} ORDER BY {key}").fetchall()
                out[table] = [_norm(row) for row in found]
        return out

    def pg_rows(self, tables: tuple[str, ...] = tuple(TABLES)) -> dict[str, list[tuple[Any, ...]]]:
        out = {}
        with psycopg.connect(self.url.libpq_url) as pg:
            for table in tables:
                names = ", ".join(name for name, _ in pg_copy.target_columns(pg, table))
                found = pg.execute(f"SELECT {names} FROM {table} ORDER BY {TABLES[table][1]}").fetchall()
                out[table] = [_norm(row) for row in found]
        return out

    def assert_equal(self) -> dict[str, list[tuple[Any, ...]]]:
        """PostgreSQL's rows of every published table are the stage's; returns them."""
        stage, pg = self.rows(), self.pg_rows()
        for table in TABLES:
            assert len(pg[table]) == len(stage[table]), table
            assert pg[table] == stage[table], table
        return pg


def _norm(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """Floats by their bits (NaN equal to itself), so that equal means the same double."""
    return tuple(float(v).hex() if isinstance(v, float) else v for v in row)


@pytest.fixture
def stage(tmp_path: Path, templates: Templates, pg_server: PgServer) -> Stage:
    return Stage(tmp_path, templates, pg_server)


def test_publish_equals_the_stage_then_sends_only_what_is_new(stage: Stage) -> None:
    first = stage.publish(keep_raw_days=0)  # the first publish of a stage: everything it holds
    total = len(stage.assert_equal()["gpu_samples"])
    assert first.samples == total > 2000 and first.series == 4 and stage.owed() == 0
    # nothing new: nothing sent, nothing changed
    again = stage.publish(keep_raw_days=0)
    assert (again.ranges, again.samples, again.minutes, again.series) == (0, 0, 0, 0)
    stage.assert_equal()
    # new minutes, a new GPU, a late file and a replaced sample: only their minutes are sent
    stage.load(stage.templates.two)
    assert stage.owed() == len(GPUS) + 2  # a range per GPU and run
    second = stage.publish(keep_raw_days=0)
    on_pg = stage.assert_equal()
    added = stage.templates.added
    assert len(on_pg["gpu_samples"]) == total + added
    # the new samples and the others of their minutes (the late file's run: from its first to the
    # replaced sample's), not the stored ones
    assert added < second.samples < (total + added) / 4 and second.ranges == len(GPUS) + 2
    assert second.minutes < 80 and second.series == len(GPUS) + 1
    assert (12.345).hex() in {row[5] for row in on_pg["gpu_samples"]}  # the replaced sample's value
    _api_draws_the_gpu_charts_of_the_stage(stage)


def _api_draws_the_gpu_charts_of_the_stage(stage: Stage) -> None:
    """The API on PostgreSQL (the job facts copied there too) answers the stage's GPU charts."""
    # the job facts, as the ingest's own publish sends them (ingest/postgres.py): copied here
    with db.connection(stage.path, read_only=True) as con, psycopg.connect(stage.url.libpq_url) as pg:
        for table in ("jobs", "steps", "step_gpus", "job_results"):
            columns = pg_copy.target_columns(pg, table)
            names = ", ".join(db.quote_identifier(name) for name, _ in columns)
            pg_copy.copy_rows(con, pg, table, columns, f"SELECT {names} FROM {table}")
    snapshots.publish(stage.path)
    duck, pg = TestClient(create_app(stage.path)), TestClient(create_app(stage.url))
    seen = set()
    for job_id in ("j0", "j1"):
        for query in ("max_points=1000", "max_points=40", "max_points=10", "gpu=0&max_points=30", "limit=500"):
            url = f"/api/training/{job_id}/gpus?{query}"
            a, b = duck.get(url), pg.get(url)
            assert (a.status_code, b.status_code, url) == (200, 200, url)
            assert b.json() == a.json(), url
            seen.add((a.json()["source"], a.json().get("resolution")))
    fleet = "/api/training/analytics/fleet"
    assert pg.get(fleet).json() == duck.get(fleet).json()
    assert ("gpu_samples", "minute") in seen and ("gpu_samples", "sample") in seen


def test_each_steps_latest_sample_is_the_stages(stage: Stage) -> None:
    """step_gpu_alignment on PostgreSQL finds a step's latest sample in the GPU's packed minutes
    (dialect asof_sample_left_join): the rows of the stage's ASOF JOIN, for steps a microsecond
    before a minute's first sample (the minute of the step holds only later ones), at a sample,
    between two windows of samples, before every sample and after the last."""
    stage.publish(keep_raw_days=0)
    with db.connection(stage.path) as con:
        firsts = [
            first
            for (first,) in con.execute(
                "SELECT min(ts) FROM gpu_samples WHERE gpu_key = 'GPU-aaaa-0001' "
                "GROUP BY date_trunc('minute', ts) ORDER BY 1 LIMIT 4"
            ).fetchall()
        ]
        times = [*(t - timedelta(microseconds=1) for t in firsts), *firsts]
        times += [DAY - timedelta(days=1, hours=6), DAY - timedelta(days=3), DAY + timedelta(days=1)]
        con.execute("DELETE FROM steps WHERE job_id = 'j0'")
        for i, ts in enumerate(times):
            con.execute("INSERT INTO steps (job_id, step, ts) VALUES ('j0', $step, $ts)", {"step": i, "ts": ts})
        with psycopg.connect(stage.url.libpq_url) as pg:
            for table in ("jobs", "steps"):
                columns = pg_copy.target_columns(pg, table)
                names = ", ".join(db.quote_identifier(name) for name, _ in columns)
                pg_copy.copy_rows(con, pg, table, columns, f"SELECT {names} FROM {table}")
            order = " ORDER BY job_id, step, host, gpu_index, sample_ts"
            theirs = [_norm(r) for r in pg.execute(f"SELECT * FROM step_gpu_alignment{order}").fetchall()]
        ours = [_norm(r) for r in con.execute(f"SELECT * FROM step_gpu_alignment{order}").fetchall()]
    assert theirs == ours and len({r[1] for r in ours if r[0] == "j0"}) == len(times)
    found = {r[1]: r[5] for r in ours if r[0] == "j0" and r[4] == 0 and r[5] is not None}
    assert len(found) > len(firsts)  # most steps have a sample at or before them


def test_ranges_inside_minutes_replace_those_minutes_whole(stage: Stage) -> None:
    """PostgreSQL's samples are packed a minute a row: ranges owed that begin or end inside a minute
    (the rollups' never do) are widened to whole minutes, and two that meet in one minute merged."""
    stage.publish(keep_raw_days=0)
    job_id, host, _, key = GPUS[0]
    minute = DAY - timedelta(minutes=5)
    with db.connection(stage.path) as con:
        for lo, hi in ((minute + timedelta(seconds=17), minute + timedelta(seconds=30)),
                       (minute + timedelta(seconds=40), minute + timedelta(minutes=2, seconds=5))):  # fmt: skip
            con.execute(
                f"INSERT INTO {telemetry_outbox.TABLE} VALUES ($job, $host, $key, $lo, $hi)",
                {"job": job_id, "host": host, "key": key, "lo": lo, "hi": hi},
            )
        (expected,) = db.one(
            con,
            "SELECT count(*) FROM gpu_samples WHERE gpu_key = $key AND ts >= $lo AND ts < $hi",
            {"key": key, "lo": minute, "hi": minute + timedelta(minutes=3)},
        )
    published = stage.publish(keep_raw_days=0)
    assert published.ranges == 1 and published.samples == expected > 0 and published.minutes == 3
    stage.assert_equal()


def test_a_failed_publish_leaves_postgres_as_it_was_and_the_next_one_equals(
    stage: Stage, monkeypatch: pytest.MonkeyPatch
) -> None:
    stage.publish(keep_raw_days=0)
    before = stage.pg_rows()
    stage.load(stage.templates.two)
    owed = stage.owed()
    calls = 0
    copy_rows = pg_copy.copy_rows

    def failing(*args: Any, **kwargs: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == 2:  # the samples of the first span copied, then a failure
            raise psycopg.OperationalError("connection lost")
        return copy_rows(*args, **kwargs)

    monkeypatch.setattr(pg_copy, "copy_rows", failing)
    with pytest.raises(db.WarehouseError, match="nothing written there"):
        stage.publish(keep_raw_days=0)
    monkeypatch.undo()
    assert stage.pg_rows() == before and stage.owed() == owed
    stage.publish(keep_raw_days=0)
    stage.assert_equal()
    assert stage.owed() == 0


KILLED = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from runlytics.warehouse import db, pg_copy, pg_telemetry

    stage, url, where, flag = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])

    def stall():
        flag.write_text("stalled")
        time.sleep(60)

    class Stage:  # the stage's connection, stalling just before the outbox is emptied
        def __init__(self, con):
            self.con = con
        def execute(self, sql, *args):
            if where == "after-commit" and sql == pg_telemetry.DONE:
                stall()
            return self.con.execute(sql, *args)
        def __getattr__(self, name):
            return getattr(self.con, name)

    copy_rows = pg_copy.copy_rows
    def copying(*args, **kwargs):
        done = copy_rows(*args, **kwargs)
        if where == "copying" and args[2] == "gpu_minutes":
            stall()
        return done
    pg_copy.copy_rows = copying

    with db.connection(Path(stage)) as con:
        pg_telemetry.publish(Stage(con), db.PostgresUrl(url), keep_raw_days=0)
    """
)


# a kill in the middle of PostgreSQL's transaction is as the failure above ("copying"; it passes,
# and is left out of the suite for its time); the kill that matters is the one between commits
@pytest.mark.parametrize("where", ["after-commit"])
def test_a_publish_killed_then_run_again_equals(stage: Stage, tmp_path: Path, where: str) -> None:
    stage.publish(keep_raw_days=0)
    stage.load(stage.templates.two)
    flag = tmp_path / "stalled"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED, str(stage.path), stage.url.url, where, str(flag)], env=env, cwd=REPO
    )
    try:
        deadline = time.monotonic() + 30
        while not flag.exists():
            assert proc.poll() is None, "the publish ended before its stall"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert stage.owed() > 0  # the kill came before the outbox was emptied
    if where == "after-commit":
        stage.assert_equal()  # PostgreSQL committed: the next publish sends the same ranges again
    else:
        assert len(stage.pg_rows()["gpu_samples"]) < len(stage.rows()["gpu_samples"])
    stage.publish(keep_raw_days=0)
    stage.assert_equal()
    assert stage.owed() == 0


def test_retention_on_postgres_keeps_the_window_and_every_rollup(stage: Stage, tmp_path: Path) -> None:
    # a sample whose minute is not rolled up on PostgreSQL (written there by hand): never pruned
    with psycopg.connect(stage.url.libpq_url) as pg:
        pg.execute(
            f"INSERT INTO {pg_samples.TABLE} VALUES ('j9', 'n9', '#0', %s, '{{1500000}}', '{{0}}', '{{NULL}}', "
            "'{NULL}', '{NULL}', '{NULL}', '{NULL}', '{NULL}', '{NULL}', '{NULL}', '{spool}')",
            (DAY - timedelta(days=3),),
        )
    published = stage.publish(keep_raw_days=1)
    # the newest sample's day is DAY: the window keeps DAY - 1 and DAY
    horizon = DAY - timedelta(days=1)
    window = f"ts >= TIMESTAMP '{horizon}'"

    def check() -> None:
        on_pg, stage_rows = stage.pg_rows(), stage.rows()
        assert [r for r in on_pg["gpu_samples"] if r[1] == "n9"]
        assert [r for r in on_pg["gpu_samples"] if r[1] != "n9"] == stage.rows(("gpu_samples",), window)["gpu_samples"]
        for table in ("gpu_minutes", "job_gpu_series", "utilization_minutes"):
            assert on_pg[table] == stage_rows[table], table

    check()
    kept = stage.rows(("gpu_samples",), window)["gpu_samples"]
    assert published.pruned > 500 and min(r[3] for r in kept) < horizon + timedelta(seconds=10)
    # a late file for minutes past the window: their rollups change, no raw sample of them stays
    spool = tmp_path / "late"
    _write(
        spool / "late.jsonl",
        _samples(6, GPUS[:1], DAY - timedelta(days=2, minutes=3), DAY - timedelta(days=2, minutes=2)),
    )
    (tmp_path / "none").mkdir()
    _ingest(stage.path, tmp_path / "none", spool)
    stage.publish(keep_raw_days=1)
    check()


def test_revision_0028_packs_the_samples_and_going_back_unpacks_them(pg_url: str) -> None:
    """PostgreSQL's rows of gpu_samples_hot become packed minutes and come back, every value the same:
    NULL, NaN and infinite readings, microseconds, a minute's first and last microsecond, two GPUs
    under one index, a GPU whose index changes from one minute to another."""
    from alembic import command

    target = db.PostgresUrl(pg_url)
    assert migrate.upgrade(target, "0027") == "0027"
    rng = random.Random(7)
    rows = []
    for job_id, host, index, uuid in GPUS:
        key = uuid or f"#{index}"
        for ts in (DAY, DAY + timedelta(microseconds=59_999_999), DAY + timedelta(minutes=3, microseconds=1)):
            sample = _sample(rng, (job_id, host, index, uuid), ts)
            rows.append(
                (job_id, host, index + (ts.minute == 3), ts, uuid,
                 *(sample[f] for f in ("utilization_percent", "memory_used_mb", "memory_total_mb", "temperature_c",
                                       "power_w", "sm_clock_mhz", "clocks_event_reasons")),
                 "spool", key)
            )  # fmt: skip
    rows[0] = (*rows[0][:5], math.nan, math.inf, -math.inf, None, None, None, None, *rows[0][12:])
    columns = (
        "job_id, host, gpu_index, ts, gpu_uuid, utilization_percent, memory_used_mb, memory_total_mb, "
        "temperature_c, power_w, sm_clock_mhz, clocks_event_reasons, source, gpu_key"
    )
    ordered = f"SELECT {columns} FROM {{}} ORDER BY job_id, host, gpu_key, ts"
    with psycopg.connect(pg_url) as pg:
        with pg.cursor() as cursor:
            cursor.executemany(f"INSERT INTO gpu_samples_hot ({columns}) VALUES ({', '.join(['%s'] * 14)})", rows)
        before = [_norm(r) for r in pg.execute(ordered.format("gpu_samples_hot")).fetchall()]
    assert len(before) == len(rows) and migrate.upgrade(target) == migrate.HEAD_REVISION
    with psycopg.connect(pg_url) as pg:
        assert [_norm(r) for r in pg.execute(ordered.format("gpu_samples")).fetchall()] == before
        assert pg_samples.stored_samples(pg) == len(rows)
        assert pg.execute(f"SELECT count(*) FROM {pg_samples.TABLE}").fetchone() == (2 * len(GPUS),)
    with postgres.connection(target) as conn:
        config = migrate.alembic_config()
        config.attributes["connection"] = conn
        command.downgrade(config, "0027")
        conn.commit()
    with psycopg.connect(pg_url) as pg:
        assert [_norm(r) for r in pg.execute(ordered.format("gpu_samples_hot")).fetchall()] == before
        assert [_norm(r) for r in pg.execute(ordered.format("gpu_samples")).fetchall()] == before


# 200,000 samples of 32 GPUs, one a second each (about 104 minutes), with NULL, NaN, -0.0 and
# infinite readings: a DuckDB table named as the view copy() reads
MANY = """
CREATE TABLE gpu_samples AS
SELECT 'j' || (i % 2) AS job_id, 'n' || (i % 4) AS host, CAST(i % 8 AS INTEGER) AS gpu_index,
       TIMESTAMP '2026-11-01 23:30:00' + to_microseconds((i // 32) * 1000000 + i % 32 * 997) AS ts,
       CASE WHEN i % 5 = 0 THEN NULL ELSE 'GPU-' || (i % 32) END AS gpu_uuid,
       CASE WHEN i % 97 = 0 THEN NULL WHEN i % 89 = 0 THEN CAST('nan' AS DOUBLE) ELSE (i * 7919 % 10007) / 100 END
           AS utilization_percent,
       CASE WHEN i % 83 = 0 THEN CAST('-0.0' AS DOUBLE) ELSE i / 3 END AS memory_used_mb,
       CAST(81920 AS DOUBLE) AS memory_total_mb,
       CASE WHEN i % 79 = 0 THEN CAST('inf' AS DOUBLE) ELSE 30 + (i % 61) / 7 END AS temperature_c,
       CAST((i % 700) * 1.1 AS DOUBLE) AS power_w, NULL::DOUBLE AS sm_clock_mhz,
       CAST(i % 3 AS BIGINT) AS clocks_event_reasons,
       'spool' AS source, 'GPU-' || (i % 32) AS gpu_key
FROM range(200000) r(i)
"""
PACKED_TEXT = f"SELECT m::text FROM {pg_samples.TABLE} m ORDER BY job_id, host, gpu_key, minute"


def test_samples_are_packed_in_chunks_of_whole_minutes_within_a_small_memory_limit(
    stage: Stage, tmp_path: Path
) -> None:
    """pg_samples.copy packs the samples in chunks of whole minutes: under a 32 MB memory limit the
    one-shot packing of 200,000 samples runs out of memory (list aggregates do not spill) and the
    chunked one completes; every chunk size gives the same rows, bit for bit, as one query; the
    table's key (job, host, GPU, minute) would refuse a minute split over two chunks; and a chunk
    holds at most its size plus one minute's samples."""
    path = tmp_path / "many.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(MANY)
        con.execute("SET threads = 1")
        ours = [
            _norm(r) for r in con.execute(f"SELECT * FROM gpu_samples ORDER BY {TABLES['gpu_samples'][1]}").fetchall()
        ]
        per_minute = dict(
            con.execute("SELECT date_trunc('minute', ts), count(*) FROM gpu_samples GROUP BY 1").fetchall()
        )
        texts = {}
        with psycopg.connect(stage.url.libpq_url) as pg:
            for size in (10**9, 20_000, 3_000):
                assert pg_samples.copy(con, pg, chunk_samples=size) == len(ours)
                texts[size] = [row[0] for row in pg.execute(PACKED_TEXT).fetchall()]
                if size == 10**9:
                    names = ", ".join(name for name, _ in pg_copy.target_columns(pg, "gpu_samples"))
                    found = pg.execute(f"SELECT {names} FROM gpu_samples ORDER BY {TABLES['gpu_samples'][1]}")
                    assert [_norm(r) for r in found.fetchall()] == ours
                pg.execute(f"DELETE FROM {pg_samples.TABLE}")
            pg.commit()
            con.execute("SET memory_limit = '32MB'")
            with pytest.raises(duckdb.OutOfMemoryException):
                pg_samples.copy(con, pg, chunk_samples=10**9)
            pg.rollback()
            assert pg_samples.copy(con, pg, chunk_samples=20_000) == len(ours)
            assert [row[0] for row in pg.execute(PACKED_TEXT).fetchall()] == texts[10**9]
        firsts = [f for (f,) in con.execute(pg_samples.CHUNKS.format(source="gpu_samples t", where="true"),
                                            {"chunk_samples": 20_000}).fetchall()]  # fmt: skip
    assert texts[20_000] == texts[3_000] == texts[10**9] and len(texts[3_000]) == 32 * len(per_minute)
    assert len(firsts) >= len(ours) // 20_000 and firsts == sorted(firsts)
    bounds = [*firsts[1:], max(per_minute) + timedelta(minutes=1)]
    sizes = [sum(n for m, n in per_minute.items() if lo <= m < hi) for lo, hi in zip(firsts, bounds, strict=True)]
    assert sum(sizes) == len(ours) and max(sizes) <= 20_000 + max(per_minute.values())


def test_a_first_publish_packed_in_small_chunks_equals_the_stage(stage: Stage, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stage's first publish (every sample it holds) packed in chunks of about 50 samples: its
    spans' samples are cut into many chunks, and PostgreSQL still equals the stage."""
    monkeypatch.setattr(pg_samples, "CHUNK_SAMPLES", 50)
    first = stage.publish(keep_raw_days=0)
    assert first.samples == len(stage.assert_equal()["gpu_samples"]) > 2000


def test_a_packed_row_holds_samples_and_arrays_of_one_length(stage: Stage) -> None:
    """gpu_sample_minutes refuses a row without samples (it would hide the GPU's earlier minutes from
    step_gpu_alignment's lookup of the last two) and arrays of unequal lengths (unnest would pad)."""
    values = "('j', 'n', 'k', TIMESTAMP '2026-11-01', %s, '{0}', '{NULL}', " + "'{1}', " * 6 + "'{0}', '{spool}')"
    with psycopg.connect(stage.url.libpq_url) as pg:
        for offsets in ("{}", "{0,1}"):
            with pytest.raises(psycopg.errors.CheckViolation), pg.transaction():
                pg.execute(f"INSERT INTO {pg_samples.TABLE} VALUES {values}", (offsets,))
        pg.execute(f"INSERT INTO {pg_samples.TABLE} VALUES {values}", ("{0}",))
        assert pg_samples.stored_samples(pg) == 1


def test_an_ordinary_warehouse_owes_nothing(templates: Templates) -> None:
    """Until its first publish a warehouse is no stage: its ingest owed nothing."""
    with db.connection(templates.one, read_only=True) as con:
        assert not telemetry_outbox.marked(con)
        assert db.one(con, f"SELECT count(*) FROM {telemetry_outbox.TABLE}") == (0,)


def test_a_connection_in_a_transaction_is_refused(stage: Stage) -> None:
    """publish commits: inside a caller's transaction it would not, so it refuses to start."""
    with psycopg.connect(stage.url.libpq_url) as pg, db.connection(stage.path) as con:
        pg.execute("SELECT 1")
        with pytest.raises(db.WarehouseError, match="in no transaction"):
            pg_telemetry.publish(con, pg)
        pg.rollback()
        assert pg_telemetry.publish(con, pg, keep_raw_days=0).samples > 2000
        assert pg.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert len(stage.pg_rows(("gpu_samples",))["gpu_samples"]) > 2000  # committed: another session sees it


def test_runlytics_ingest_into_postgres_publishes_the_telemetry(stage: Stage, tmp_path: Path) -> None:
    """End to end: ``ingest/postgres.py`` ingests a spool into its stage and publishes, twice."""
    from runlytics.ingest import postgres as pg_ingest

    root, spool = tmp_path / "jobs", tmp_path / "spool"
    _jobs(root)
    chunk_one(spool)
    stage.path = tmp_path / "own" / "stage.duckdb"
    _, first = pg_ingest.ingest(stage.url, [root], stage=stage.path, spools=[spool], keep_raw_days=0, wait=10)
    assert first.telemetry is not None and first.telemetry.samples > 2000
    stage.assert_equal()
    added = chunk_two(spool)
    _, second = pg_ingest.ingest(stage.url, [root], stage=stage.path, spools=[spool], keep_raw_days=0, wait=10)
    assert second.telemetry is not None and added <= second.telemetry.samples < first.telemetry.samples
    stage.assert_equal()
