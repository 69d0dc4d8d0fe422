"""An ingest killed with SIGKILL loses nothing and half-applies nothing; concurrent ingests don't corrupt.

The jobs come from bench/generate.py (150 jobs x 300 steps x 2 GPUs, about 23 MB); every ingest
runs as its own process through the command line's entry point, as cron would run it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest
from conftest import DEEP_ONLY, REPO, Lab, deep_case

from runlytics.warehouse import sidefiles
from runlytics.warehouse.lock import run_lock

JOBS, STEPS, GPUS = 150, 300, 2
LEDGER_OUTCOMES = "SELECT outcome, count(*) FROM ingest_files WHERE kind = 'progress' GROUP BY outcome"
EXIT_BUSY = 75
ENTRY = "from runlytics import cli; cli.entry()"
# the same entry point, committing every 20 files instead of every 500: a kill can land between commits
SMALL_BATCHES = (
    "import runlytics.ingest.formats.progress as p; p.BATCH_FILES = 20; from runlytics import cli; cli.entry()"
)


# The entry point with small batches and a SIGKILL sent to itself at a chosen moment: before or
# after the n-th call of module.function (argv: "module:function:before|after" n)
KILL_AT = """
import importlib, os, signal, sys
import runlytics.ingest.formats.progress
runlytics.ingest.formats.progress.BATCH_FILES = 20
target, nth = sys.argv.pop(1), int(sys.argv.pop(1))
module_name, name, when = target.split(":")
module = importlib.import_module(module_name)
original, calls = getattr(module, name), [0]
def hooked(*args, **kwargs):
    calls[0] += 1
    if when == "before" and calls[0] == nth:
        os.kill(os.getpid(), signal.SIGKILL)
    result = original(*args, **kwargs)
    if when == "after" and calls[0] == nth:
        os.kill(os.getpid(), signal.SIGKILL)
    return result
setattr(module, name, hooked)
from runlytics import cli
cli.entry()
"""


def ingest_command(root: Path, db: Path, *options: str, code: str = ENTRY) -> list[str]:
    return [sys.executable, "-c", code, "ingest", str(root), "--db", str(db), *options]


def start(command: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_ingest(root: Path, db: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ingest_command(root, db, "--json", *options), cwd=REPO, capture_output=True, text=True, timeout=120
    )


@dataclass
class Reference:
    root: Path
    facts: dict[str, list[tuple[Any, ...]]]
    seconds: float  # how long one clean ingest took, process start included


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """The generated jobs, and the facts of one clean ingest of them."""
    lab = Lab(tmp_path_factory.mktemp("reference"))
    generate = ["bench/generate.py", str(lab.root), "--jobs", str(JOBS), "--steps", str(STEPS), "--gpus", str(GPUS)]
    subprocess.run([sys.executable, *generate], cwd=REPO, check=True, capture_output=True, timeout=120)
    # written long ago as far as the ledger can tell: a file committed by a killed run is then
    # trusted as unchanged, so the run after a kill reads only what the killed run did not commit
    then = time.time() - 3600
    for path in lab.root.glob("*/progress.json"):
        os.utime(path, (then, then))
    started = time.monotonic()
    done = run_ingest(lab.root, lab.db)
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["ingested"], summary["rows"], summary["failed"]) == (JOBS, JOBS * STEPS, 0)
    facts = lab.facts()
    assert (len(facts["jobs"]), len(facts["steps"]), len(facts["step_gpus"])) == (
        JOBS,
        JOBS * STEPS,
        JOBS * STEPS * GPUS,
    )
    return Reference(lab.root, facts, seconds)


def committed_state(db: Path, scratch: Path) -> tuple[int, int]:
    """Open a copy of a killed run's warehouse (its WAL replayed on the copy, not on the original)
    and check that every job in it is whole; returns (jobs, files recorded as ingested)."""
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir()
    copy = scratch / db.name
    shutil.copyfile(db, copy)
    wal = db.with_name(db.name + ".wal")
    if wal.exists():
        shutil.copyfile(wal, copy.with_name(copy.name + ".wal"))
    con = duckdb.connect(str(copy))
    try:
        tables = {name for (name,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if "jobs" not in tables:  # killed before the schema was committed
            return 0, 0
        per_job = con.execute(
            "SELECT j.job_id, (SELECT count(*) FROM steps s WHERE s.job_id = j.job_id), "
            "(SELECT count(*) FROM step_gpus g WHERE g.job_id = j.job_id) FROM jobs j"
        ).fetchall()
        assert all((steps, gpus) == (STEPS, STEPS * GPUS) for _, steps, gpus in per_job), "a job was half-applied"
        orphans = con.execute("SELECT count(*) FROM steps WHERE job_id NOT IN (SELECT job_id FROM jobs)").fetchone()
        assert orphans == (0,), "steps of a job that has no row"
        (ingested,) = con.execute(
            "SELECT count(*) FROM ingest_files WHERE kind = 'progress' AND outcome = 'ingested'"
        ).fetchone()
        assert ingested == len(per_job), "ledger and facts disagree"
        return len(per_job), ingested
    finally:
        con.close()


def test_kill_9_during_ingest_then_a_full_run_equals_one_clean_ingest(reference: Reference, tmp_path: Path) -> None:
    """Runs killed at named points of each phase, one after another on the same warehouse (the
    first two with the default batches, one for all 150 files; the others with batches of 20);
    then a full run reads only what they did not commit, and equals one clean ingest."""
    lab = Lab(tmp_path)
    one_batch = KILL_AT.replace("runlytics.ingest.formats.progress.BATCH_FILES = 20\n", "")
    assert one_batch != KILL_AT
    committed = 0
    for code, target, nth, jobs_after in [
        # migrations done on a new warehouse (the first batch being read meanwhile), nothing merged
        (one_batch, "runlytics.warehouse.migrate:ensure_current:after", 1, 0),
        # every file read by the fast road, nothing staged
        (one_batch, "runlytics.ingest.fast:read:after", 1, 0),
        # checking the 50th file: inside the third batch of 20, so the first two stay committed
        (KILL_AT, "runlytics.ingest.progress:looks_complete:before", 50, 40),
        # before the third batch of the 110 files left is merged: 40 more committed
        (KILL_AT, "runlytics.ingest.merge:apply:before", 3, 80),
    ]:
        command = [sys.executable, "-c", code, target, str(nth), "ingest", str(reference.root), "--db", str(lab.db)]
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert done.returncode == -signal.SIGKILL, (target, done.returncode, done.stderr[-2000:])
        jobs, ingested = committed_state(lab.db, tmp_path / "scratch")
        assert (jobs, ingested) == (jobs_after, jobs_after), (target, "committed", jobs, "expected", jobs_after)
        committed = jobs

    done = run_ingest(reference.root, lab.db)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["files_seen"], summary["failed"], summary["pending"]) == (JOBS, 0, 0)
    # what the killed runs committed is not read again
    assert (summary["unchanged"], summary["ingested"]) == (committed, JOBS - committed) == (80, 70)
    assert lab.facts() == reference.facts
    assert lab.query(LEDGER_OUTCOMES) == [("ingested", JOBS)]


@DEEP_ONLY  # its points in every run: the phase boundaries' merge:apply:after and snapshots:publish:before
def test_kill_9_at_the_worst_moments(reference: Reference, tmp_path: Path) -> None:
    """Killed inside a batch's transaction (before and after the merge, after the ledger rows),
    and while publishing the readers' snapshot; then a full run equals one clean ingest."""
    lab = Lab(tmp_path)
    committed = 0
    for target, nth in [
        ("runlytics.ingest.merge:apply:before", 2),
        ("runlytics.ingest.merge:apply:after", 2),
        ("runlytics.ingest.ledger:record_batch:after", 1),
        ("shutil:copyfile:after", 1),  # the snapshot's copy is written, not yet renamed into place
    ]:
        command = [sys.executable, "-c", KILL_AT, target, str(nth), "ingest", str(reference.root), "--db", str(lab.db)]
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert done.returncode == -signal.SIGKILL, (target, done.returncode, done.stderr[-2000:])
        jobs, _ = committed_state(lab.db, tmp_path / "scratch")
        assert jobs >= committed, (target, "a commit was lost")
        if not target.startswith("shutil"):  # exactly the batches before the n-th survive
            assert jobs - committed == 20 * (nth - 1), (target, jobs, committed)
        committed = jobs
    assert committed == JOBS  # the last run died after its last commit, while publishing

    done = run_ingest(reference.root, lab.db)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["files_seen"], summary["unchanged"], summary["ingested"]) == (JOBS, JOBS, 0)
    assert lab.facts() == reference.facts
    snapshots = sorted(p.name for p in sidefiles.snapshots(lab.db).iterdir())
    assert len(snapshots) == 1 and snapshots[0].endswith(".duckdb"), snapshots  # the torn copy was cleaned up


# no `reference`: this test ingests a job of its own, and a worker that runs it alone need not
# generate and ingest the 150 jobs. Its rule in every run: test_cli.py's test_busy_lock_exits_75
# and test_concurrent_ingests_wait_or_exit_75_and_never_corrupt below (session 26, CI's time)
@DEEP_ONLY
def test_second_ingest_gives_up_with_75_while_the_lock_is_held(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    lab.write_job("one", {"job_id": "one", "status": "running", "history": [{"step": 1, "loss": 1.0}]})
    assert run_ingest(lab.root, lab.db).returncode == 0
    before = lab.facts()

    lab.write_job("one", {"job_id": "one", "status": "completed", "history": [{"step": 2, "loss": 0.5}]})
    with run_lock(lab.db, wait=0):
        started = time.monotonic()
        done = run_ingest(lab.root, lab.db, "--wait", "1")
        waited = time.monotonic() - started
    assert done.returncode == EXIT_BUSY, done.stderr
    assert "another ingest" in done.stderr
    assert waited >= 1.0
    assert lab.facts() == before

    # once the lock is free the same run goes through
    done = run_ingest(lab.root, lab.db, "--wait", "1")
    assert done.returncode == 0, done.stderr
    assert lab.query("SELECT step, loss FROM steps ORDER BY step") == [(1, 1.0), (2, 0.5)]
    assert lab.query("SELECT status FROM jobs") == [("completed",)]


def test_concurrent_ingests_wait_or_exit_75_and_never_corrupt(reference: Reference, tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    lock_file = sidefiles.lock(lab.db)
    first = start(ingest_command(reference.root, lab.db, "--json"))
    deadline = time.monotonic() + 30
    while not (lock_file.exists() and lock_file.read_text().strip() == str(first.pid)):
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the first ingest never took the lock"
        time.sleep(0.02)

    impatient = start(ingest_command(reference.root, lab.db, "--json", "--wait", "0"))
    patient = start(ingest_command(reference.root, lab.db, "--json", "--wait", "120"))
    impatient_out, impatient_err = impatient.communicate(timeout=120)
    first_running = first.poll() is None
    if first_running:  # it found the lock taken and did not wait
        assert impatient.returncode == EXIT_BUSY, impatient_err
        assert "another ingest" in impatient_err
    else:
        assert impatient.returncode in (0, EXIT_BUSY), impatient_err
    first_out, first_err = first.communicate(timeout=120)
    patient_out, patient_err = patient.communicate(timeout=120)
    assert first.returncode == 0, first_err
    assert patient.returncode == 0, patient_err  # it waited its turn

    first_summary, patient_summary = json.loads(first_out), json.loads(patient_out)
    assert (first_summary["ingested"], first_summary["rows"]) == (JOBS, JOBS * STEPS)
    assert patient_summary["files_seen"] == JOBS
    assert patient_summary["unchanged"] + patient_summary["ingested"] == JOBS
    assert lab.facts() == reference.facts
    assert lab.query(LEDGER_OUTCOMES) == [("ingested", JOBS)]


# --- killed at every phase boundary: facts and derived tables as one clean run -------------------

# Every table a run writes, facts and derived, as compared between a killed-then-rerun warehouse
# and a clean one (ingested_at and the ledger's times are the run's own).
ALL_TABLES = {
    "jobs": "* EXCLUDE (ingested_at)",
    "steps": "*",
    "step_gpus": "*",
    "checkpoints": "*",
    "trainer_steps": "*",
    "trainer_runs": "*",
    "gpu_samples": "*",
    "job_results": "*",
    "utilization_minutes": "*",
    "refresh_queue": "*",
    "ingest_files": "path, kind, job_id, size, mtime_ns, fingerprint, outcome, rows, warning_count, error",
}

# Named points (module:function:before|after, as KILL_AT reads them) at each phase boundary and
# inside each kind of transaction; each run below is killed at the first call.
# Every point runs in deep runs; an ordinary run kills at three phase points (facts merged, results
# refreshed, checkpointed before the snapshot), three storage points (a part written, sealed, pruned)
# and one correction point (docs/testing.md, "Deep runs"; CI's 15 minutes)
PHASE_POINTS = [
    deep_case("runlytics.warehouse.migrate:ensure_current:after"),  # schema built, nothing read
    "runlytics.ingest.merge:apply:after",  # progress batch: facts merged, not committed
    deep_case("runlytics.ingest.ledger:record_batch:after"),  # progress batch: ledger written, not committed
    deep_case("runlytics.ingest.trainer_state:merge:after"),  # trainer states merged, not committed
    deep_case("runlytics.warehouse.results:enqueue:after"),  # checkpoint folders / samples queued, not committed
    deep_case("runlytics.ingest.gpu_store:store_staged:after"),  # spool samples stored (parts, rollups), not committed
    deep_case("runlytics.warehouse.results:refresh_queued:before"),  # every fact committed, nothing refreshed
    "runlytics.warehouse.results:refresh:after",  # derived rows rewritten, not committed
    deep_case("runlytics.warehouse.results:refresh_queued:after"),  # refreshed and committed, run not finished
    deep_case("runlytics.ingest.journal:finish:after"),  # run recorded, not checkpointed or published
    "runlytics.warehouse.snapshots:publish:before",  # checkpointed, no snapshot
    deep_case("runlytics.ingest.journal:write_heartbeat:before"),  # published, no heartbeat
]


def phase_root(tmp: Path) -> tuple[Path, Path]:
    """20 generated jobs, five with checkpoint folders holding trainer states, and a GPU spool."""
    root, spool = tmp / "jobs", tmp / "spool"
    generate = ["bench/generate.py", str(root), "--jobs", "20", "--steps", "40", "--gpus", "2"]
    subprocess.run([sys.executable, *generate], cwd=REPO, check=True, capture_output=True, timeout=120)
    for i in range(5):
        job = root / f"job-{i:06d}"
        for step in (20, 40):
            folder = job / f"checkpoint-{step}"
            folder.mkdir(exist_ok=True)
            log = [
                {"step": s, "loss": 3.0 - s / 100, "grad_norm": 1.5, "learning_rate": 2e-5} for s in (10, 20, 30, 40)
            ]
            state = {"global_step": step, "max_steps": 40, "log_history": [e for e in log if e["step"] <= step]}
            (folder / "trainer_state.json").write_text(json.dumps(state))
    spool.mkdir()
    lines = [
        {"ts": 1767225600 + t, "host": "node-01", "job_id": f"job-{j:06d}", "gpu_index": g, "gpu_uuid": f"GPU-{j}-{g}",
         "utilization_percent": 50.0 + t % 50, "memory_used_mb": 1000.0 + t, "power_w": 200.0 + g}
        for j in range(3) for g in range(2) for t in range(0, 300, 5)
    ]  # fmt: skip
    (spool / "node-01-2026010100.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    then = time.time() - 3600  # settled: the ledger trusts what a killed run committed
    for path in [*root.rglob("*.json"), *spool.iterdir()]:
        os.utime(path, (then, then))
    return root, spool


def all_tables(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {
            table: sorted(tuple(repr(v) for v in row) for row in con.execute(f"SELECT {cols} FROM {table}").fetchall())
            for table, cols in ALL_TABLES.items()
        }
    finally:
        con.close()


@dataclass
class PhaseCase:
    root: Path
    spool: Path
    expected: dict[str, list[tuple[Any, ...]]]


@pytest.fixture(scope="module")
def phase_case(tmp_path_factory: pytest.TempPathFactory) -> PhaseCase:
    """The jobs and spool of the phase points, and the tables of one clean run of them."""
    tmp = tmp_path_factory.mktemp("phases")
    root, spool = phase_root(tmp)
    (tmp / "clean").mkdir()
    clean = Lab(tmp / "clean")
    done = run_ingest(root, clean.db, "--spool", str(spool))
    assert done.returncode == 0, done.stderr
    expected = all_tables(clean.db)
    assert len(expected["trainer_steps"]) > 0 and len(expected["gpu_samples"]) == 3 * 2 * 60
    assert len(expected["job_results"]) == 20 and expected["refresh_queue"] == []
    return PhaseCase(root, spool, expected)


# One test per point (they were one loop): the same kills, runs and comparisons, which xdist can
# now spread over its workers instead of one worker running all 24 processes in a row.
@pytest.mark.parametrize("point", PHASE_POINTS)
def test_killed_at_every_phase_boundary_then_rerun_equals_one_clean_run(
    phase_case: PhaseCase, tmp_path: Path, point: str
) -> None:
    root, spool = phase_case.root, phase_case.spool
    lab = Lab(tmp_path)
    command = [sys.executable, "-c", KILL_AT, point, "1", "ingest", str(root), "--db", str(lab.db),
               "--spool", str(spool), "--json"]  # fmt: skip
    killed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, (point, killed.returncode, killed.stderr[-2000:])
    rerun = run_ingest(root, lab.db, "--spool", str(spool))
    assert rerun.returncode == 0, (point, rerun.stderr)
    assert all_tables(lab.db) == phase_case.expected, point


# --- killed inside sealing, part writing, compaction, pruning and archiving ----------------------

# Each run below is killed at the n-th call of a named point of the sealed-parts storage
# (warehouse/parts.py, warehouse/retention.py), then run again: the same samples, rollups and
# archive as one clean run, no file left that the manifest does not know.
STORAGE_POINTS = [
    deep_case("runlytics.warehouse.parts:remove_orphans:after", 1),  # nothing written yet
    ("runlytics.warehouse.db:fsync_file:after", 1),  # sealing: a part written, not renamed
    deep_case("runlytics.warehouse.parts:write_part:after", 1),  # sealing: a part renamed and listed, not committed
    ("runlytics.warehouse.parts:seal:after", 1),  # sealed, hot rows deleted, not committed
    deep_case("runlytics.warehouse.parts:retire:after", 1),  # a spool batch's clash: old part retired, not committed
    deep_case("runlytics.warehouse.parts:store_cold:after", 2),  # a spool batch's parts written, not committed
    deep_case("runlytics.warehouse.parts:unseal:after", 1),  # a re-sent day's sealed minutes back in the hot table
    deep_case("runlytics.warehouse.rollups:update:after", 1),  # the batch's minutes rolled up, not committed
    deep_case("runlytics.warehouse.parts:_seal_hot:after", 3),  # the run's minutes sealed into parts, not committed
    deep_case("runlytics.warehouse.parts:compact:after", 1),  # merged, old parts retired, not committed
    deep_case("runlytics.warehouse.retention:archive_part:after", 1),  # one part archived, not pruned
    ("runlytics.warehouse.retention:prune:after", 1),  # pruned, not committed
    deep_case("runlytics.ingest.journal:finish:after", 1),  # all committed, not checkpointed
]
STORAGE_T0 = 1767225600  # 2026-01-01T00:00:00Z


def storage_spools(tmp: Path) -> tuple[Path, Path]:
    """A first spool (two hosts, two days, in several files) and a second one: a third day, and
    samples of the first day sent again with other values (a part rewritten)."""
    first, second = tmp / "spool-1", tmp / "spool-2"
    first.mkdir()
    second.mkdir()

    def line(t: int, host: str, gpu: int, util: float) -> str:
        doc = {"ts": STORAGE_T0 + t, "host": host, "job_id": f"job-{gpu % 2}", "gpu_index": gpu,
               "gpu_uuid": f"GPU-{host}-{gpu}", "utilization_percent": util, "power_w": 150.0 + gpu}  # fmt: skip
        return json.dumps(doc) + "\n"

    for host in ("node-01", "node-02"):
        for day in (0, 1):
            for half in (0, 1):
                times = range(86400 * day + 7200 * half, 86400 * day + 7200 * half + 600, 5)
                text = "".join(line(t, host, g, float(t % 97)) for t in times for g in range(2))
                (first / f"{host}-{day}-{half}.jsonl").write_text(text)
    resent = "".join(line(t, "node-01", 0, 99.0) for t in range(100, 200, 5))
    third = "".join(
        line(2 * 86400 + t, h, g, 42.0) for h in ("node-01", "node-03") for t in range(0, 300, 5) for g in range(2)
    )
    (second / "resent.jsonl").write_text(resent)
    (second / "third-day.jsonl").write_text(third)
    then = time.time() - 3600
    for path in [*first.iterdir(), *second.iterdir()]:
        os.utime(path, (then, then))
    return first, second


def storage_base(tmp: Path, first: Path) -> Path:
    """A warehouse holding the first spool, and hot samples of a past hour (as a warehouse
    upgraded from before revision 0014 holds them): the next run seals them."""
    base = tmp / "base"
    base.mkdir()
    db = base / "w.duckdb"
    done = subprocess.run(ingest_command(first, db, "--spool", str(first), "--json"), cwd=REPO, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    con = duckdb.connect(str(db))
    con.execute(
        "INSERT INTO gpu_samples_hot SELECT 'job-9', 'node-04', 0, TIMESTAMP '2026-01-03 05:00:00' + to_seconds(i), "
        "NULL, i % 100, 1000, NULL, 50, 200, NULL, 0, 'spool', '#0' FROM range(0, 600, 5) r(i)"
    )
    con.close()
    return base


def storage_facts(db: Path, archive: Path) -> dict[str, Any]:
    """The samples, the rollups and the archive's rows; checks that the files are the manifest's."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        tables = {name for (name,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        facts: dict[str, Any] = {
            "gpu_samples": con.execute("SELECT * FROM gpu_samples ORDER BY ALL").fetchall(),
        }
        if "gpu_minutes" in tables:
            facts["gpu_minutes"] = sorted(map(repr, con.execute("SELECT * FROM gpu_minutes").fetchall()))
        listed = {
            p
            for (p,) in con.execute(
                "SELECT path FROM gpu_parts UNION ALL SELECT path FROM gpu_parts_retired"
            ).fetchall()
        }
        live = {p for (p,) in con.execute("SELECT path FROM gpu_parts").fetchall()}
        archived = archive.rglob("*.parquet") if archive.exists() else []
        if archived:
            facts["archive"] = con.execute(
                "SELECT CAST(day AS VARCHAR), host, job_id, gpu_key, ts, utilization_percent, power_w "
                "FROM read_parquet($f, hive_partitioning = true) ORDER BY ALL", {"f": str(archive / "**" / "*.parquet")}
            ).fetchall()  # fmt: skip
            if "gpu_minutes" in tables:  # nothing pruned whose minute is not rolled up
                missing = con.execute(
                    "SELECT count(*) FROM read_parquet($f, hive_partitioning = true) a WHERE NOT EXISTS (SELECT 1 FROM "
                    "gpu_minutes g WHERE g.job_id = a.job_id AND g.host = a.host AND g.gpu_key = a.gpu_key "
                    "AND g.minute = date_trunc('minute', a.ts))",
                    {"f": str(archive / "**" / "*.parquet")},
                ).fetchone()
                assert missing == (0,)
    finally:
        con.close()
    folder = sidefiles.parts(db)
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert on_disk <= listed, on_disk - listed  # no file of a killed run left behind
    assert live <= on_disk
    assert not list(archive.rglob("*.tmp")) if archive.exists() else True
    return facts


@dataclass
class StorageCase:
    second: Path
    base: Path
    expected: dict[str, Any]


STORAGE_OPTIONS = ("--keep-raw-days", "1")


def lab_from_base(case: StorageCase, folder: Path) -> tuple[Path, Path]:
    shutil.copytree(case.base, folder)
    return folder / "w.duckdb", folder / "archive"


@pytest.fixture(scope="module")
def storage_case(tmp_path_factory: pytest.TempPathFactory) -> StorageCase:
    """The base warehouse and second spool of the storage points, and the facts of one clean run."""
    tmp = tmp_path_factory.mktemp("storage")
    first, second = storage_spools(tmp)
    case = StorageCase(second, storage_base(tmp, first), {})
    clean_db, clean_archive = lab_from_base(case, tmp / "clean")
    done = subprocess.run(ingest_command(second, clean_db, "--spool", str(second), *STORAGE_OPTIONS, "--archive",
                                         str(clean_archive), "--json"),
                          cwd=REPO, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    case.expected = storage_facts(clean_db, clean_archive)
    # the first day was archived (and left the samples), the third day and node-04's hour sealed
    assert {r[:2] for r in case.expected["archive"]} == {("2026-01-01", "node-01"), ("2026-01-01", "node-02")}
    assert {r[3].day for r in case.expected["gpu_samples"]} == {2, 3}
    return case


# One test per point (they were one loop), as for the phase points: the same runs, spread by xdist.
@pytest.mark.parametrize(("point", "nth"), STORAGE_POINTS)
def test_killed_inside_sealing_compaction_and_pruning_then_rerun_equals_one_clean_run(
    storage_case: StorageCase, tmp_path: Path, point: str, nth: int
) -> None:
    second = storage_case.second
    options = ("--spool", str(second), *STORAGE_OPTIONS)
    db, archive = lab_from_base(storage_case, tmp_path / "lab")
    command = [sys.executable, "-c", KILL_AT, point, str(nth), "ingest", str(second), "--db", str(db), *options,
               "--archive", str(archive), "--json"]  # fmt: skip
    killed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, (point, killed.returncode, killed.stderr[-2000:])
    rerun = subprocess.run(ingest_command(second, db, *options, "--archive", str(archive), "--json"), cwd=REPO,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert rerun.returncode == 0, (point, rerun.stderr)
    assert storage_facts(db, archive) == storage_case.expected, point


# --- killed inside an nvidia-smi log's correction -----------------------------------------------

# A log imported for job a in UTC, then again for a with its real zone: the correction removes the
# first reading's samples (sealed parts rewritten, minutes recomputed) and stores the new one in one
# transaction. Killed at each point, then run again: the same rows as one clean correction.
CORRECTION_POINTS = [
    deep_case("runlytics.warehouse.parts:write_part:after", 1),  # a part rewritten without the old samples, listed
    ("runlytics.ingest.gpu_store:remove_staged:after", 1),  # the old reading removed, minutes recomputed
    deep_case("runlytics.ingest.gpu_store:store_staged:after", 1),  # the new reading stored, not committed
]
CORRECTION_LINES = [
    f"2024/07/01 12:{m:02d}:{s:02d}.000, {g}, {(7 * m + s + g) % 100} %\n"
    for m in range(3)
    for s in range(0, 60, 10)
    for g in range(2)
]
CORRECTION_LOG = "timestamp, index, utilization.gpu [%]\n" + "".join(CORRECTION_LINES)


def correction_lab(tmp: Path) -> tuple[Path, Path]:
    """A warehouse holding job a and the log's UTC import; the log."""
    tmp.mkdir()
    (tmp / "jobs" / "a").mkdir(parents=True)
    (tmp / "jobs" / "a" / "progress.json").write_text(
        '{"job_id": "a", "status": "completed", "history": [{"step": 1}]}'
    )
    log = tmp / "gpu.csv"
    log.write_text(CORRECTION_LOG)
    then = time.time() - 3600
    for path in (log, tmp / "jobs" / "a" / "progress.json"):
        os.utime(path, (then, then))
    db = tmp / "w.duckdb"
    assert run_ingest(tmp / "jobs", db).returncode == 0
    first = subprocess.run([sys.executable, "-c", ENTRY, "ingest", "--nvidia-smi-csv", str(log), "--job-id", "a",
                            "--db", str(db)], cwd=REPO, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert first.returncode == 0, first.stderr
    return db, log


def correction_facts(db: Path) -> dict[str, Any]:
    facts = storage_facts(db, db.parent / "no-archive")
    con = duckdb.connect(str(db), read_only=True)
    try:
        facts["job_gpu_series"] = con.execute("SELECT * FROM job_gpu_series ORDER BY ALL").fetchall()
        facts["utilization_minutes"] = con.execute("SELECT * FROM utilization_minutes ORDER BY ALL").fetchall()
    finally:
        con.close()
    return facts


CORRECT = ["ingest", "--nvidia-smi-csv", "LOG", "--job-id", "a", "--timezone", "Europe/Berlin", "--db", "DB"]


@pytest.fixture(scope="module")
def clean_correction(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The facts of one clean correction (the same for every point: built once)."""
    clean_db, clean_log = correction_lab(tmp_path_factory.mktemp("correction") / "clean")
    args = [str(clean_log) if a == "LOG" else str(clean_db) if a == "DB" else a for a in CORRECT]
    done = subprocess.run([sys.executable, "-c", ENTRY, *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    expected = correction_facts(clean_db)
    # 36 samples, all at 10:0x Z (12:0x in Berlin, UTC+2 in July): the UTC reading is gone
    assert len(expected["gpu_samples"]) == 36 and {r[3].hour for r in expected["gpu_samples"]} == {10}
    return expected


@pytest.mark.parametrize(("point", "nth"), CORRECTION_POINTS)
def test_killed_inside_a_log_correction_then_rerun_equals_one_clean_correction(
    clean_correction: dict[str, Any], tmp_path: Path, point: str, nth: int
) -> None:
    correct, expected = CORRECT, clean_correction
    db, log = correction_lab(tmp_path / "lab")
    args = [str(log) if a == "LOG" else str(db) if a == "DB" else a for a in correct]
    killed = subprocess.run([sys.executable, "-c", KILL_AT, point, str(nth), *args], cwd=REPO, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, (point, killed.returncode, killed.stderr[-2000:])
    rerun = subprocess.run([sys.executable, "-c", ENTRY, *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, (point, rerun.stderr)
    assert correction_facts(db) == expected, point
