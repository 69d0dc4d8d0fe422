"""A run killed after its last commit but before publishing: the re-run publishes (audit 17, finding 1).

Before its first commit a run creates ``<db>.unpublished``; only a successful publish removes it.
A run (the quick path too) that finds the marker publishes even with nothing new, so readers
(``runlytics sql``, the API) see what the warehouse holds once the re-run ends. A run with nothing
new and no marker still publishes nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO

from runlytics.warehouse import snapshots

# the entry point, killed with SIGKILL before the n-th call of module.function (argv: "module:function" n)
KILL_BEFORE = """
import importlib, os, signal, sys
target, nth = sys.argv.pop(1), int(sys.argv.pop(1))
module_name, name = target.split(":")
module = importlib.import_module(module_name)
original, calls = getattr(module, name), [0]
def hooked(*args, **kwargs):
    calls[0] += 1
    if calls[0] == nth:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, **kwargs)
setattr(module, name, hooked)
from runlytics import cli
cli.entry()
"""
ENTRY = "from runlytics import cli; cli.entry()"


def write_progress(root: Path, status: str, steps: int) -> None:
    path = root / "a" / "progress.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    history = [{"step": s, "loss": 2.0 - s / 10} for s in range(1, steps + 1)]
    path.write_text(json.dumps({"job_id": "a", "status": status, "history": history}))
    then = time.time() - 3600  # settled
    os.utime(path, (then, then))


def cli(*args: str, code: str = ENTRY) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def ingest(root: Path, db: Path) -> dict[str, int]:
    done = cli("ingest", str(root), "--db", str(db), "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def read_snapshot(db: Path) -> str:
    done = cli("sql", "SELECT status, (SELECT count(*) FROM steps) FROM jobs", "--db", str(db), "--format", "csv")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def killed_before_publish(root: Path, db: Path) -> None:
    point = "runlytics.warehouse.snapshots:publish"
    killed = cli(point, "1", "ingest", str(root), "--db", str(db), "--quiet", code=KILL_BEFORE)
    assert killed.returncode == -signal.SIGKILL, killed.stderr


def test_a_run_killed_before_publishing_is_published_by_the_rerun(tmp_path: Path) -> None:
    root, db = tmp_path / "jobs", tmp_path / "w.duckdb"
    write_progress(root, "running", 2)
    ingest(root, db)
    assert read_snapshot(db) == "running,2"
    assert not snapshots.unpublished(db).exists()
    write_progress(root, "completed", 3)
    killed_before_publish(root, db)
    assert snapshots.unpublished(db).exists()  # committed, not published
    assert read_snapshot(db) == "running,2"
    summary = ingest(root, db)
    assert (summary["ingested"], summary["jobs_changed"]) == (0, 0)  # nothing new: published all the same
    assert read_snapshot(db) == "completed,3"
    assert not snapshots.unpublished(db).exists()
    published = snapshots.latest(db)
    ingest(root, db)  # the next cron run: nothing new, nothing owed
    assert snapshots.latest(db) == published


def test_the_quick_path_publishes_when_it_finds_the_marker(tmp_path: Path) -> None:
    root, db = tmp_path / "jobs", tmp_path / "w.duckdb"
    write_progress(root, "completed", 3)
    ingest(root, db)
    ingest(root, db)  # a heartbeat with a digest: the next run may take the quick path
    published = snapshots.latest(db)
    # the warehouse as the quick path would find it after a killed run, but for the marker
    snapshots.mark_unpublished(db)
    ingest(root, db)
    assert snapshots.latest(db) != published
    assert not snapshots.unpublished(db).exists()


def test_nothing_new_and_no_marker_publishes_nothing(tmp_path: Path) -> None:
    root, db = tmp_path / "jobs", tmp_path / "w.duckdb"
    write_progress(root, "completed", 3)
    ingest(root, db)
    published = snapshots.latest(db)
    assert published is not None
    for _ in range(2):  # the full road (first), then the quick path
        summary = ingest(root, db)
        assert (summary["ingested"], summary["unchanged"]) == (0, 1)
        assert snapshots.latest(db) == published
        assert not snapshots.unpublished(db).exists()


def test_a_reader_never_opens_a_warehouse_whose_first_run_was_killed(tmp_path: Path) -> None:
    """Finding 2: no snapshot yet and the marker there: ``sql`` is refused in one line instead of
    opening the warehouse itself (which would lock the next ingest out while it reads)."""
    root, db = tmp_path / "jobs", tmp_path / "w.duckdb"
    write_progress(root, "running", 2)
    killed_before_publish(root, db)
    assert snapshots.latest(db) is None and snapshots.unpublished(db).exists()
    refused = cli("sql", "SELECT count(*) FROM steps", "--db", str(db), "--format", "csv")
    assert refused.returncode != 0 and refused.stdout == ""
    assert len(refused.stderr.strip().splitlines()) == 1 and "no snapshot" in refused.stderr, refused.stderr
    assert "runlytics ingest" in refused.stderr
    ingest(root, db)  # the re-run publishes
    assert read_snapshot(db) == "running,2"
