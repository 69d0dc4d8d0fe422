"""`runlytics ingest --db postgresql://…`: a local stage, then a publish per job (ingest/postgres.py).

Every table and view read on PostgreSQL after an ingest through stages is compared with a plain
DuckDB ingest of the same files (row for row, floats to a relative 1e-9; the columns that say
when something was ingested, and the insights that depend on it, left out): one ingester, a re-run
that finds nothing new, three ingesters at once from disjoint roots, an ingester killed between its
stage's commit and PostgreSQL's, a job two ingesters both hold, a job that grew.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
from conftest import DEEP_ONLY, REALDATA, REPO
from pg_server import PgServer
from test_postgres_views import _same

from bench import generate
from runlytics import cli
from runlytics.ingest import postgres as pg_ingest
from runlytics.ingest.pipeline import ingest
from runlytics.warehouse import db, migrate, views
from tests.test_postgres_views import _value

REL = 1e-9
ROOTS, JOBS_PER_ROOT, STEPS, GPUS = 3, 8, 30, 2
# compared tables: the facts, the ledger's per-job rows, the derived tables and the GPU samples
# and rollups (published by warehouse/pg_telemetry.py after the jobs; gpu_samples a view on both)
TABLES = (
    "jobs", "steps", "step_gpus", "checkpoints", "trainer_steps", "trainer_runs", "metric_values",
    "job_results", "utilization_minutes", "insight_results", "insight_jobs", "insight_settings",
    "ingest_files", "refresh_queue", "gpu_samples", "gpu_minutes", "job_gpu_series",
)  # fmt: skip
KEEP = ("--keep-raw-days", "0")  # every raw sample kept: the jobs are from January
# when a row was ingested or computed: differs between any two ingests
WHEN = {"ingested_at", "first_seen_at", "last_read_at", "as_of"}
# silent_running measures the silence up to as_of (the latest run's start): its figures move with it
SILENT_FIGURES = {"value", "reference", "message"}
ENTRY = "from runlytics import cli; cli.entry()"
# the entry point with small publish batches, killed with SIGKILL after the first batch's commit
# (PostgreSQL has those jobs, the stage still owes them), before the publish began, or after every
# batch but before slow_vs_peers was recomputed (its stale marks stay on PostgreSQL)
KILL = """
import os, signal, sys
from runlytics.ingest import postgres as p
p.BATCH_JOBS = 4
when = sys.argv.pop(1)
publish, publish_jobs = p.publish, p._publish_jobs
def before(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
def after_first(*args, **kwargs):
    result = publish_jobs(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
if when == "before":
    p.publish = before
elif when == "before_peers":
    p._recompute_peers = before
else:
    p._publish_jobs = after_first
from runlytics import cli
cli.entry()
"""
SMALL_BATCHES = "from runlytics.ingest import postgres as p; p.BATCH_JOBS = 4; from runlytics import cli; cli.entry()"


@dataclass
class Fleet:
    roots: list[Path]
    spools: list[Path]  # each host's GPU sampler spool (the jobs of its root)
    reference: dict[str, list[dict[str, Any]]]  # a plain DuckDB ingest of every root, read
    blank: Path  # a stage at the head revision, holding nothing: copied, not built again per test

    def stage(self, path: Path) -> Path:
        shutil.copyfile(self.blank, path)
        return path


def _write_spools(base: Path) -> list[Path]:
    """Two GPUs' samples every 5 s for 8 minutes of the first two jobs of each host (power on most)."""
    spools = [base / f"spool{n}" for n in range(ROOTS)]
    for n, spool in enumerate(spools):
        spool.mkdir(parents=True)
        for index in (n * JOBS_PER_ROOT, n * JOBS_PER_ROOT + 1):
            start = generate.EPOCH0.timestamp() + index * 7 * 60
            lines = [
                {"ts": start + 5 * k, "host": f"host{n}", "job_id": f"job-{index:06d}", "gpu_index": gpu,
                 "utilization_percent": 50 + (k * 7 + gpu * 13) % 50, "memory_used_mb": 1000.0 + k,
                 "temperature_c": 60.5, **({"power_w": 200 + k % 9 * 0.25} if k % 7 else {})}
                for k in range(96) for gpu in range(GPUS)
            ]  # fmt: skip
            (spool / f"job-{index:06d}.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return spools


def _write_roots(base: Path) -> list[Path]:
    rng = random.Random(18)
    roots = [base / f"host{n}" for n in range(ROOTS)]
    for n, root in enumerate(roots):
        for index in range(n * JOBS_PER_ROOT, (n + 1) * JOBS_PER_ROOT):
            job = generate.make_job(index, STEPS, GPUS, rng)
            if index % 3 == 0:  # peers across hosts: slow_vs_peers compares them (on PostgreSQL, all hosts')
                job["status"], job["config"]["model_name"] = "completed", "llama-3-8b"
                job["ended_at"] = job["updated_at"]
            if index % 9 == 0:  # a quarter of its peers' speed, on hosts 0 and 1
                for row in job["history"]:
                    row["samples"] //= 4
                    row["samples_per_second"] /= 4
            folder = root / job["job_id"]
            folder.mkdir(parents=True)
            (folder / "progress.json").write_text(json.dumps(job))
            _age(folder / "progress.json")
    # a trainer state (trainer_steps, trainer_runs, metric_values) on the last host
    shutil.copytree(REALDATA / "hf_trainer_state" / "tinyllama-sft", roots[-1] / "tinyllama-sft")
    return roots


def _age(path: Path) -> None:
    """An hour old: not a file being written (ingest leaves those for the next run)."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns - 3600 * 10**9))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    base = tmp_path_factory.mktemp("pg_ingest")
    roots = _write_roots(base / "roots")
    spools = _write_spools(base / "spools")
    blank = base / "blank.duckdb"
    migrate.upgrade(blank)
    reference = base / "reference.duckdb"
    shutil.copyfile(blank, reference)
    summary = ingest(reference, roots, spools=spools, wait=30, keep_raw_days=0)
    assert summary.failed == 0 and summary.ingested > ROOTS * JOBS_PER_ROOT and summary.gpu_samples > 0
    return Fleet(roots, spools, _duckdb_dump(reference), blank)


@pytest.fixture(scope="module")
def template(pg_server: PgServer) -> str:
    """A database at the head revision, holding nothing: each test's database is a copy of it."""
    url = pg_server.new_database()
    migrate.upgrade(db.PostgresUrl(url))
    return url.rsplit("/", 1)[1]


@pytest.fixture
def url(pg_server: PgServer, template: str) -> str:
    name = f"{template}_{next(_NAMES)}"
    with psycopg.connect(pg_server.admin_url, autocommit=True) as con:
        con.execute(f"CREATE DATABASE {db.quote_identifier(name)} TEMPLATE {db.quote_identifier(template)}")
    return pg_server.admin_url.rsplit("/", 1)[0] + "/" + name


_NAMES = itertools.count()


# --- reading both engines, normalised -----------------------------------------------------------


def _normalise(name: str, columns: list[str], rows: list[tuple[Any, ...]], pg: bool) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        record = {c: _value(v) for c, v in zip(columns, row, strict=True) if c not in WHEN}
        if record.get("kind") == "silent_running":
            record.update(dict.fromkeys(SILENT_FIGURES & record.keys()))
        if name == "ingest_files":
            if record["job_id"] is None:  # not per job: the stage's own (spools)
                continue
            if pg:  # "<host>:<stage>:<path>": the ingester's name, then the path
                record["path"] = record["path"].split(":", 2)[2]
        out.append(record)
    return out


def _key(record: dict[str, Any]) -> str:
    return repr(sorted((k, f"{v:.6g}" if isinstance(v, int | float) and not isinstance(v, bool) else v)
                       for k, v in record.items()))  # fmt: skip


def _duckdb_dump(path: Path) -> dict[str, list[dict[str, Any]]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        out = {}
        for name in (*TABLES, *views.ORDER):
            cursor = con.execute(f"SELECT * FROM {db.quote_identifier(name)}")
            out[name] = _normalise(name, [d[0] for d in cursor.description], cursor.fetchall(), pg=False)
        return out
    finally:
        con.close()


def _pg_dump(url: str) -> dict[str, list[dict[str, Any]]]:
    with psycopg.connect(url) as con:
        con.execute("SET jit = off")
        present = {r[0] for r in con.execute("SELECT viewname FROM pg_views WHERE schemaname = 'public'")}
        out = {}
        for name in (*TABLES, *[v for v in views.ORDER if v in present]):
            cursor = con.execute(f"SELECT * FROM {db.quote_identifier(name)}")
            assert cursor.description is not None
            out[name] = _normalise(name, [d.name for d in cursor.description], cursor.fetchall(), pg=True)
        return out


def _assert_equal(url: str, want: dict[str, list[dict[str, Any]]]) -> None:
    """PostgreSQL's tables and views hold the rows of ``want``, and no other."""
    got = _pg_dump(url)
    assert set(got) == set(want), "a view is missing on PostgreSQL"
    for name, rows in want.items():
        mine = got[name]
        assert len(mine) == len(rows), f"{name}: {len(mine)} rows on PostgreSQL, {len(rows)} in DuckDB"
        for a, b in zip(sorted(mine, key=_key), sorted(rows, key=_key), strict=True):
            assert a.keys() == b.keys(), name
            assert all(_same(a[c], b[c]) for c in a), f"{name}: {a} != {b}"


def _spooled(fleet: Fleet) -> dict[str, Any]:
    return {"spools": fleet.spools, "keep_raw_days": 0}


def _owners(url: str) -> dict[str, str]:
    with psycopg.connect(url) as con:
        return dict(con.execute("SELECT job_id, ingester FROM job_owners").fetchall())


def _command(
    code: str, url: str, stage: Path, *roots: Path, extra: tuple[str, ...] = (), options: tuple[str, ...] = ()
) -> list[str]:
    return [sys.executable, "-c", code, *extra, "ingest", "--db", url, "--stage", str(stage), "--json",
            *options, *map(str, roots)]  # fmt: skip


def _run(
    code: str, url: str, stage: Path, fleet: Fleet, extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """An ingest of the whole fleet (every root and spool) into ``url`` through ``stage``."""
    spools = [option for spool in fleet.spools for option in ("--spool", str(spool))]
    command = _command(code, url, stage, *fleet.roots, extra=extra, options=(*spools, *KEEP))
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)


# --- the tests -----------------------------------------------------------------------------------


def test_one_ingester_equals_a_duckdb_ingest_and_a_rerun_changes_nothing(
    fleet: Fleet, url: str, tmp_path: Path
) -> None:
    stage = fleet.stage(tmp_path / "stage.duckdb")
    target = db.PostgresUrl(url)
    summary, published = pg_ingest.ingest(target, fleet.roots, stage=stage, wait=30, **_spooled(fleet))
    assert summary.failed == 0 and published.conflicts == {}
    assert published.jobs == ROOTS * JOBS_PER_ROOT + 1  # every job, the trainer state's too
    _assert_equal(url, fleet.reference)
    assert set(_owners(url).values()) == {pg_ingest.default_ingester(stage)}
    with psycopg.connect(url) as con:
        facts = {t: sorted(map(repr, con.execute(f"SELECT * FROM {t}").fetchall())) for t in ("jobs", "steps")}

    summary, published = pg_ingest.ingest(target, fleet.roots, stage=stage, wait=30, **_spooled(fleet))
    assert summary.ingested == 0 and published.jobs == 0
    _assert_equal(url, fleet.reference)
    with psycopg.connect(url) as con:  # not even rewritten: the same ingested_at
        assert facts == {t: sorted(map(repr, con.execute(f"SELECT * FROM {t}").fetchall())) for t in facts}
        runs = con.execute("SELECT count(*) FROM ingest_runs WHERE outcome = 'ok'").fetchone()
    assert runs == (2,)


def test_concurrent_ingesters_leave_the_facts_of_one_ingest(fleet: Fleet, url: str, tmp_path: Path) -> None:
    commands = [
        _command(
            SMALL_BATCHES, url, fleet.stage(tmp_path / f"stage{n}.duckdb"), root, options=("--spool", str(spool), *KEEP)
        )
        for n, (root, spool) in enumerate(zip(fleet.roots, fleet.spools, strict=True))
    ]
    processes = [
        subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for command in commands
    ]
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        assert json.loads(out)["published"]["conflicts"] == []
    _assert_equal(url, fleet.reference)
    assert len(set(_owners(url).values())) == ROOTS


@DEEP_ONLY  # 4-7 s each (docs/testing.md, "Both engines")
def test_a_kill_between_stage_and_publish_is_published_by_the_next_run(fleet: Fleet, url: str, tmp_path: Path) -> None:
    stage = fleet.stage(tmp_path / "stage.duckdb")
    for when, published in (("before", 0), ("after_first", 4)):  # the second run's first batch only
        killed = _run(KILL, url, stage, fleet, extra=(when,))
        assert killed.returncode == -9, killed.stderr
        with psycopg.connect(url) as con:
            assert con.execute("SELECT count(*) FROM jobs").fetchone() == (published,)
    again = _run(ENTRY, url, stage, fleet)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["ingested"] == 0  # the first run's stage had it all: only the publish was owed
    assert report["published"]["jobs"] == ROOTS * JOBS_PER_ROOT + 1
    _assert_equal(url, fleet.reference)


@DEEP_ONLY  # 4-7 s each (docs/testing.md, "Both engines")
def test_a_kill_before_the_peers_recompute_leaves_it_owed(fleet: Fleet, url: str, tmp_path: Path) -> None:
    stage = fleet.stage(tmp_path / "stage.duckdb")
    killed = _run(KILL, url, stage, fleet, extra=("before_peers",))
    assert killed.returncode == -9, killed.stderr
    with psycopg.connect(url) as con:
        assert con.execute("SELECT count(*) FROM jobs").fetchone() == (ROOTS * JOBS_PER_ROOT + 1,)
        assert con.execute("SELECT count(*) FROM insight_results WHERE kind = 'slow_vs_peers'").fetchone() == (0,)
        stale = {model for (model,) in con.execute("SELECT model_name FROM peer_changes").fetchall()}
    assert "llama-3-8b" in stale
    again = _run(ENTRY, url, stage, fleet)
    assert again.returncode == 0, again.stderr
    assert set(json.loads(again.stdout)["published"]["peers_recomputed"]) == stale
    _assert_equal(url, fleet.reference)
    with psycopg.connect(url) as con:
        assert con.execute("SELECT count(*) FROM peer_changes").fetchone() == (0,)


@DEEP_ONLY  # 4-7 s each (docs/testing.md, "Both engines")
def test_a_recompute_that_another_ingester_ran_is_not_run_again(
    fleet: Fleet, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ingester 0 has committed its batches; before its recompute, ingester 1 publishes and
    recomputes slow_vs_peers from every committed job, ingester 0's too: 0 then recomputes only
    the models 1 did not."""
    target = db.PostgresUrl(url)
    stages = [fleet.stage(tmp_path / f"stage{n}.duckdb") for n in range(ROOTS)]
    wait_for_publishers = pg_ingest._wait_for_publishers
    second: list[pg_ingest.Published] = []

    def another_ingester_first(pg: Any, models: set[str], wait: float) -> None:
        pg.execute(pg_ingest.PG_DONE_PUBLISHING)  # 0's batches are committed: 1 need not wait for it
        pg.commit()
        monkeypatch.setattr(pg_ingest, "_wait_for_publishers", wait_for_publishers)
        second.append(pg_ingest.ingest(target, fleet.roots[1:2], stage=stages[1], wait=30, spools=fleet.spools[1:2],
                                       keep_raw_days=0)[1])  # fmt: skip
        wait_for_publishers(pg, models, wait)

    monkeypatch.setattr(pg_ingest, "_wait_for_publishers", another_ingester_first)
    _, first = pg_ingest.ingest(target, fleet.roots[:1], stage=stages[0], wait=30, spools=fleet.spools[:1],
                                keep_raw_days=0)  # fmt: skip
    # 1's recompute covered 0's models that 1 also published (llama-3-8b on every host); 0 recomputes only the others
    assert "llama-3-8b" in second[0].peers_recomputed
    assert first.peers_recomputed and not set(first.peers_recomputed) & set(second[0].peers_recomputed)
    _, third = pg_ingest.ingest(target, fleet.roots[2:], stage=stages[2], wait=30, spools=fleet.spools[2:],
                                keep_raw_days=0)  # fmt: skip
    assert "llama-3-8b" in third.peers_recomputed
    _assert_equal(url, fleet.reference)
    with psycopg.connect(url) as con:
        assert con.execute("SELECT count(*) FROM peer_changes").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone() == (0,)


def test_a_recompute_waits_for_the_publishes_in_flight_at_most_wait_seconds(url: str) -> None:
    """A publish of a model in flight (PUBLISHING held shared) holds back another's recompute of
    it until its batches are committed; no longer than the run's wait, after which the other
    recomputes anyway (its marks keep it right) and holds nothing."""
    models = {"llama-3-8b", "gpt2"}
    held = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND mode = 'ExclusiveLock' AND granted"
    with psycopg.connect(url) as in_flight, psycopg.connect(url) as pg:
        in_flight.execute(pg_ingest.PG_PUBLISHING, (pg_ingest.PUBLISHING, ["gpt2"]))
        in_flight.commit()
        began = time.monotonic()
        pg_ingest._wait_for_publishers(pg, models, 0.3)
        assert 0.3 <= time.monotonic() - began < 10
        assert pg.execute(held).fetchone() == (0,)
        in_flight.execute(pg_ingest.PG_DONE_PUBLISHING)
        in_flight.commit()
        pg_ingest._wait_for_publishers(pg, models, 0.3)
        assert pg.execute(held).fetchone() == (2,)  # both models, this session's, until it lets go
        pg.execute(pg_ingest.PG_DONE_PUBLISHING)
        assert pg.execute(held).fetchone() == (0,)


PEER_ROW = "INSERT INTO insight_results (job_id, kind, severity, message, as_of) VALUES (%s, %s, 'warning', 'x', now())"


def test_a_batch_and_a_peers_recompute_do_not_deadlock(url: str) -> None:
    """A batch's delete of its jobs' insight_results and another ingester's slow_vs_peers recompute
    both delete the peers' slow_vs_peers rows: each locks them first, in job_id order
    (PG_LOCK_PEER_ROWS). Forced here: rows stored in the reverse of job_id order, the batch's delete
    in block order (bitmap heap scan), the recompute's in job_id order (index scan), the batch held
    up on j0 by a third transaction; without the locks PostgreSQL aborts one ("deadlock detected")."""
    with psycopg.connect(url, autocommit=True) as con, con.cursor() as cur:
        con.execute(PEER_ROW, ("j2", "slow_vs_peers"))  # first in the heap, last in job_id order
        cur.executemany(PEER_ROW, [(f"f{i:05d}", "stall") for i in range(2000)])
        con.execute(PEER_ROW, ("j0", "stall"))
        cur.executemany(PEER_ROW, [(f"g{i:05d}", "stall") for i in range(2000)])
        con.execute(PEER_ROW, ("j1", "slow_vs_peers"))
        con.execute("ANALYZE insight_results")
    errors: list[BaseException] = []

    def batch() -> None:  # _publish_jobs' statements on insight_results
        try:
            with psycopg.connect(url) as con:
                con.execute("SET LOCAL enable_indexscan = off")
                con.execute(pg_ingest.PG_LOCK_PEER_ROWS, (["j0", "j1", "j2"],))
                con.execute("DELETE FROM insight_results WHERE job_id = ANY(%s)", (["j0", "j1", "j2"],))
                time.sleep(0.3)
        except psycopg.Error as error:
            errors.append(error)

    def recompute() -> None:  # _recompute_peers'
        time.sleep(0.3)
        try:
            with psycopg.connect(url) as con:
                con.execute("SET LOCAL enable_bitmapscan = off")
                con.execute("SET LOCAL enable_seqscan = off")
                con.execute(pg_ingest.PG_LOCK_PEER_ROWS, (["j1", "j2"],))
                con.execute(pg_ingest.PG_DELETE_PEER_KIND, (["j1", "j2"],))
        except psycopg.Error as error:
            errors.append(error)

    with psycopg.connect(url) as holder:  # another batch holding j0's row: the first batch waits there
        holder.execute("UPDATE insight_results SET message = message WHERE job_id = 'j0'")
        threads = [threading.Thread(target=batch), threading.Thread(target=recompute)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        holder.rollback()
    for thread in threads:
        thread.join(30)
    assert errors == []
    with psycopg.connect(url) as con:
        assert con.execute("SELECT count(*) FROM insight_results WHERE job_id IN ('j0', 'j1', 'j2')").fetchone() == (0,)


def test_the_marks_a_killed_run_left_are_recomputed_by_the_next_run(fleet: Fleet, url: str, tmp_path: Path) -> None:
    """A run killed after a commit that marked a model stale (here its telemetry's, for a job the
    stage does not hold) and before its recompute: the next run of the ingester, with nothing new,
    recomputes the models it marked (not another ingester's marks)."""
    with psycopg.connect(url) as con:
        con.execute("INSERT INTO jobs (job_id, status, model_name, ingested_at) VALUES ('a', 'completed', 'm', now())")
        con.execute(PEER_ROW, ("a", "slow_vs_peers"))  # no longer true: 'a' has no peers
        con.execute("INSERT INTO peer_changes VALUES ('m', 'y', now()), ('n', 'x', now())")
    published = pg_ingest.publish(fleet.stage(tmp_path / "y.duckdb"), db.PostgresUrl(url), "y", wait=30)
    assert published.jobs == 0 and published.peers_recomputed == ["m"]
    with psycopg.connect(url) as con:
        assert con.execute("SELECT count(*) FROM insight_results").fetchone() == (0,)
        assert con.execute("SELECT model_name, ingester FROM peer_changes").fetchall() == [("n", "x")]


@DEEP_ONLY  # 4-7 s each (docs/testing.md, "Both engines")
def test_a_job_another_ingester_owns_is_not_overwritten(
    fleet: Fleet, url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    shutil.copytree(fleet.roots[0] / "job-000000", first / "job-000000")
    shutil.copytree(fleet.roots[0] / "job-000001", second / "job-000001")
    doc = json.loads((fleet.roots[0] / "job-000000" / "progress.json").read_text())
    doc["history"] = doc["history"][:5]  # the other host's job of the same id: 5 steps, not 30
    (second / "job-000000").mkdir()
    (second / "job-000000" / "progress.json").write_text(json.dumps(doc))
    _age(second / "job-000000" / "progress.json")
    a, b = fleet.stage(tmp_path / "a.duckdb"), fleet.stage(tmp_path / "b.duckdb")
    assert cli.main(["ingest", "--quiet", "--db", url, "--stage", str(a), str(first)]) == 0
    assert cli.main(["ingest", "--quiet", "--db", url, "--stage", str(b), str(second)]) == 0
    err = capsys.readouterr().err
    owner = pg_ingest.default_ingester(a)
    assert f"job job-000000 is owned by ingester {owner}" in err
    assert _owners(url) == {"job-000000": owner, "job-000001": pg_ingest.default_ingester(b)}
    with psycopg.connect(url) as con:
        steps = dict(con.execute("SELECT job_id, count(*) FROM steps GROUP BY job_id").fetchall())
        files = con.execute("SELECT path FROM ingest_files WHERE job_id = 'job-000000'").fetchall()
    assert steps == {"job-000000": STEPS, "job-000001": STEPS}
    assert [path.startswith(f"{owner}:") for (path,) in files] == [True]
    # handed over (docs/postgresql.md): the refused job stayed owed, so the next run publishes it
    with psycopg.connect(url) as con:
        con.execute("DELETE FROM job_owners WHERE ingester = %s", (owner,))
    assert cli.main(["ingest", "--quiet", "--db", url, "--stage", str(b), str(second)]) == 0
    assert _owners(url)["job-000000"] == pg_ingest.default_ingester(b)
    with psycopg.connect(url) as con:
        assert con.execute("SELECT count(*) FROM steps WHERE job_id = 'job-000000'").fetchone() == (5,)


@DEEP_ONLY  # 4-7 s each (docs/testing.md, "Both engines")
def test_a_job_that_grew_is_published_whole(fleet: Fleet, url: str, tmp_path: Path) -> None:
    stage = fleet.stage(tmp_path / "stage.duckdb")
    target = db.PostgresUrl(url)
    file = fleet.roots[1] / "job-000013" / "progress.json"
    text, stat = file.read_text(), file.stat()
    doc = json.loads(text)
    doc["history"] = doc["history"][:10]
    try:
        file.write_text(json.dumps(doc))
        _age(file)
        pg_ingest.ingest(target, fleet.roots, stage=stage, wait=30, **_spooled(fleet))
        with psycopg.connect(url) as con:
            assert con.execute("SELECT count(*) FROM steps WHERE job_id = 'job-000013'").fetchone() == (10,)
    finally:  # the file as the fleet's reference read it: twenty more steps, their GPU readings
        file.write_text(text)
        os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    summary, published = pg_ingest.ingest(target, fleet.roots, stage=stage, wait=30, **_spooled(fleet))
    assert summary.ingested == 1 and published.jobs == 1
    _assert_equal(url, fleet.reference)


def test_publishes_that_end_together_analyze_a_table_once(url: str) -> None:
    """Two publishes of a new database end together: the one that waits for the table's ANALYZE
    lock reads the count the other's ANALYZE took (its own rows in it) and analyzes no more."""
    analyzed: list[int] = []

    class Recording(psycopg.Cursor[Any]):
        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:  # type: ignore[override]
            if str(query).startswith("ANALYZE"):
                analyzed.append(1)
            return super().execute(query, params, **kwargs)

    with psycopg.connect(url) as other, psycopg.connect(url, cursor_factory=Recording) as pg:
        other.execute("INSERT INTO steps (job_id, step) SELECT 'j', g FROM generate_series(1, 1000) AS g")
        other.commit()
        other.execute(pg_ingest.PG_LOCK_FOR_ANALYZE.format(table="steps"))  # the other publish's ANALYZE, begun
        waiting = threading.Thread(target=pg_ingest._analyze, args=(pg, {"steps": 1000}))
        waiting.start()
        blocked = "SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted"
        deadline = time.monotonic() + 10
        while other.execute(blocked, (pg.info.backend_pid,)).fetchone() != (1,) and time.monotonic() < deadline:
            time.sleep(0.01)
        other.execute("ANALYZE steps")
        other.commit()
        waiting.join(10)
        assert not waiting.is_alive() and analyzed == []
        estimate = "SELECT reltuples FROM pg_class WHERE relname = 'steps'"
        assert other.execute(estimate).fetchone() == (1000,)
        # a table never analyzed (-1) is, and one the publish more than doubled
        pg_ingest._analyze(pg, {"checkpoints": 1})
        other.execute("INSERT INTO steps (job_id, step) SELECT 'k', g FROM generate_series(1, 1001) AS g")
        other.commit()
        pg_ingest._analyze(pg, {"steps": 1001})
        assert len(analyzed) == 2 and other.execute(estimate).fetchone() == (2001,)


@DEEP_ONLY  # 4-7 s each (docs/testing.md, "Both engines")
def test_a_nul_character_is_published_as_a_replacement_character(
    fleet: Fleet, url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """PostgreSQL's text holds no NUL (JSON may escape one in any string): the published strings
    carry U+FFFD instead; a job whose id holds one is not published (its id is its key there),
    and said so on stderr (the running job, every run); the other jobs, of this run and the next, are."""
    root = tmp_path / "jobs"
    history = [{"step": 1, "loss": 1.0, "gpus": [{"index": 0, "uuid": "GPU-\u0000", "utilization_percent": 50.0}]}]
    docs = {
        "nul-id": {"job_id": "nul\u0000id", "status": "running", "history": history},
        "nul-strings": {"job_id": "nul-strings", "status": "completed", "history": history,
                        "config": {"model_name": "model\u0000", "note": "a\u0000b"}},
        "later": {"job_id": "later", "status": "running", "history": [{"step": 1, "loss": 1.0}]},
    }  # fmt: skip
    for name in ("nul-id", "nul-strings"):
        (root / name).mkdir(parents=True)
        (root / name / "progress.json").write_text(json.dumps(docs[name]))
        _age(root / name / "progress.json")
    stage, target = fleet.stage(tmp_path / "stage.duckdb"), db.PostgresUrl(url)
    summary, published = pg_ingest.ingest(target, [root], stage=stage, wait=30)
    assert summary.ingested == 2 and published.jobs == 1 and published.unpublishable == ["nul\x00id"]
    (root / "later").mkdir()
    (root / "later" / "progress.json").write_text(json.dumps(docs["later"]))
    _age(root / "later" / "progress.json")
    assert cli.main(["ingest", "--quiet", "--db", url, "--stage", str(stage), str(root)]) == 0
    warning = "runlytics ingest: warning: job 'nul\\x00id' has a NUL character in its id, which PostgreSQL cannot hold"
    assert capsys.readouterr().err.count(warning) == 1
    with psycopg.connect(url) as con:
        jobs = con.execute("SELECT job_id, model_name FROM jobs ORDER BY job_id").fetchall()
        assert jobs == [("later", None), ("nul-strings", "model\ufffd")]
        assert con.execute("SELECT DISTINCT gpu_uuid FROM step_gpus").fetchall() == [("GPU-\ufffd",)]
        config = con.execute("SELECT config FROM jobs WHERE job_id = 'nul-strings'").fetchone()
        assert config == ({"model_name": "model\x00", "note": "a\x00b"},)  # JSON's escape kept: json holds it


@DEEP_ONLY  # 4-7 s each (docs/testing.md, "Both engines")
def test_a_file_whose_job_changed_is_published_under_its_new_job(fleet: Fleet, url: str, tmp_path: Path) -> None:
    """A progress.json first of job a, then of job b: PostgreSQL ends, as DuckDB, with both jobs
    and one ledger row of the file, job b's (its row is replaced by path, not only by job)."""
    file = tmp_path / "jobs" / "f" / "progress.json"
    file.parent.mkdir(parents=True)
    stage, target = fleet.stage(tmp_path / "stage.duckdb"), db.PostgresUrl(url)
    for job_id, steps in (("a", 1), ("b", 2)):
        history = [{"step": step, "loss": 1.0 / step} for step in range(1, steps + 1)]
        file.write_text(json.dumps({"job_id": job_id, "status": "running", "history": history}))
        os.utime(file, (1_700_000_000 + steps, 1_700_000_000 + steps))
        pg_ingest.ingest(target, [tmp_path / "jobs"], stage=stage, wait=30)
    with psycopg.connect(url) as con:
        assert con.execute("SELECT job_id FROM jobs ORDER BY 1").fetchall() == [("a",), ("b",)]
        assert con.execute("SELECT job_id FROM ingest_files WHERE path LIKE %s", (f"%:{file}",)).fetchall() == [("b",)]


def test_thresholds_set_on_postgres_hold_for_the_stage(fleet: Fleet, url: str, tmp_path: Path) -> None:
    stage = fleet.stage(tmp_path / "stage.duckdb")
    target = db.PostgresUrl(url)
    pg_ingest.ingest(target, fleet.roots[:1], stage=stage, wait=30)
    silent = "SELECT count(*) FROM insight_results WHERE kind = 'silent_running'"
    with psycopg.connect(url) as con:
        assert con.execute(silent).fetchone() == (1,)  # job-000002, running and silent for months
        con.execute("UPDATE insight_settings SET value = 1e12 WHERE name = 'silent_running.min_seconds'")
    summary, published = pg_ingest.ingest(target, fleet.roots[:1], stage=stage, wait=30)
    assert summary.ingested == 0 and published.jobs == 0 and published.insights_only == JOBS_PER_ROOT
    with psycopg.connect(url) as con:
        assert con.execute(silent).fetchone() == (0,)
    with duckdb.connect(str(stage), read_only=True) as con:
        assert con.execute(silent).fetchone() == (0,)
        assert con.execute(
            "SELECT value FROM insight_settings WHERE name = 'silent_running.min_seconds'"
        ).fetchone() == (1e12,)


def test_thresholds_taken_by_a_killed_run_are_still_owed(fleet: Fleet, url: str, tmp_path: Path) -> None:
    """The stage took PostgreSQL's thresholds and recomputed its insights, then died before the
    publish: the next run, which finds the thresholds equal, still republishes every insight."""
    stage = fleet.stage(tmp_path / "stage.duckdb")
    target = db.PostgresUrl(url)
    pg_ingest.ingest(target, fleet.roots[:1], stage=stage, wait=30)
    silent = "SELECT count(*) FROM insight_results WHERE kind = 'silent_running'"
    with psycopg.connect(url) as pg:
        pg.execute("UPDATE insight_settings SET value = 1e12 WHERE name = 'silent_running.min_seconds'")
    with db.connection(stage, wait=30) as con, psycopg.connect(url) as pg:
        pg_ingest._pull_thresholds(con, pg)  # the run's first step, then the kill
    with psycopg.connect(url) as pg:
        assert pg.execute(silent).fetchone() == (1,)  # not yet published
    summary, published = pg_ingest.ingest(target, fleet.roots[:1], stage=stage, wait=30)
    assert published.insights_only == JOBS_PER_ROOT
    with psycopg.connect(url) as pg:
        assert pg.execute(silent).fetchone() == (0,)
    _, again = pg_ingest.ingest(target, fleet.roots[:1], stage=stage, wait=30)  # owed once, not forever
    assert again.insights_only < JOBS_PER_ROOT


def test_thresholds_set_during_a_publish_refuse_its_batch(
    fleet: Fleet, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`insights set --db` commits between the stage's taking of the thresholds and a batch: the
    batch is not written (its insights were computed with the old ones) and the next run is right."""
    stage = fleet.stage(tmp_path / "stage.duckdb")
    target = db.PostgresUrl(url)
    pull = pg_ingest._pull_thresholds

    def pull_then_someone_sets(con: Any, pg: Any) -> None:
        pull(con, pg)
        with psycopg.connect(url) as other:
            other.execute("UPDATE insight_settings SET value = 1e12 WHERE name = 'silent_running.min_seconds'")

    monkeypatch.setattr(pg_ingest, "_pull_thresholds", pull_then_someone_sets)
    with pytest.raises(pg_ingest.ThresholdsMoved, match="set on PostgreSQL during this publish"):
        pg_ingest.ingest(target, fleet.roots[:1], stage=stage, wait=30)
    with psycopg.connect(url) as pg:
        assert pg.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
    monkeypatch.setattr(pg_ingest, "_pull_thresholds", pull)
    _, published = pg_ingest.ingest(target, fleet.roots[:1], stage=stage, wait=30)
    assert published.jobs == JOBS_PER_ROOT
    with psycopg.connect(url) as pg:
        assert pg.execute("SELECT count(*) FROM insight_results WHERE kind = 'silent_running'").fetchone() == (0,)


def test_a_database_that_orders_text_unlike_duckdb_is_told(pg_server: PgServer, url: str) -> None:
    """A database whose collation is not C (here ICU's en-US) sorts strings unlike DuckDB: told."""
    name = f"icu_{next(_NAMES)}"
    with psycopg.connect(pg_server.admin_url, autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'")
    with psycopg.connect(url) as c, psycopg.connect(pg_server.admin_url.rsplit("/", 1)[0] + "/" + name) as icu:
        assert not pg_ingest.order_differs(c) and pg_ingest.order_differs(icu)


def test_ingest_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["ingest", "--stage", str(tmp_path / "s.duckdb"), "--db", str(tmp_path / "w.duckdb"), "x"]) == 2
    assert "--stage goes with --db postgresql://" in capsys.readouterr().err


def test_default_stage_is_named_after_the_database_and_this_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", "/var/state")
    stage = pg_ingest.default_stage(db.PostgresUrl("postgresql://u:secret@db-host:6543/runs?sslmode=require"))
    assert stage.parent == Path("/var/state/runlytics")
    assert stage.name.startswith("db-host_6543_runs@") and stage.suffix == ".duckdb"
    assert "secret" not in str(stage)


@pytest.fixture(autouse=True)
def _no_leftover_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(db.ENV_DB, raising=False)
    yield
