"""Session 20 audit, the ledger and the quick road: a file dated in the future lets a run with
nothing to do take the quick road; the quick road in a folder it can't write in, or on a full
disk, says so in one line (exit 3); a failed or pending file deleted since leaves the ledger's
problem files (status, /api/ingest/runs, runlytics_problem_files) of the roots a run walks."""

from __future__ import annotations

import errno
import os
import shutil
import time
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
from fastapi.testclient import TestClient

from runlytics import cli
from runlytics.api.app import TOKEN_ENV, create_app
from runlytics.ingest import journal, quick
from runlytics.ingest.discover import MLFLOW, JobFolder
from runlytics.ingest.pipeline import ingest
from runlytics.ingest.postgres import default_ingester
from runlytics.warehouse import snapshots
from tests.test_write_failures_s20 import another_user, run, shared_folder, write_job  # noqa: F401 - a fixture

FUTURE = 4_070_908_800  # 2099-01-01
OLD = 1_700_000_000  # well past the 2 s a fresh file waits, and the 5 minutes a torn one does
GOOD = '{"job_id": "%s", "status": "running", "history": [{"step": 1, "loss": 1.0}]}'


def write(path: Path, text: str | bytes, when: float = OLD) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    os.utime(path, (when, when))
    return path


def recorded_runs(path: Path) -> int:
    with duckdb.connect(str(path), read_only=True) as con:
        row = con.execute("SELECT count(*) FROM ingest_runs").fetchone()
    assert row is not None
    return int(row[0])


# --- 1. a file dated in the future: the quick road ------------------------------------------------


def test_a_job_folder_dated_in_the_future_takes_the_quick_road(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The audit: a progress.json dated 2099 (touch -d 2099-01-01) was fresh for ever to
    quick.state, so every run took the full road: an ingest_runs row each, nothing read."""
    root, path = tmp_path / "jobs", tmp_path / "w.duckdb"
    write(root / "a" / "progress.json", GOOD % "a", FUTURE)
    assert run(capsys, "ingest", str(root), "--db", str(path))[0] == cli.EXIT_OK
    for _ in range(2):
        assert run(capsys, "ingest", str(root), "--db", str(path))[0] == cli.EXIT_OK
        heartbeat = journal.read_heartbeat(path)
        assert heartbeat is not None and heartbeat["run_id"] is None  # the quick road's
    assert recorded_runs(path) == 1


def test_quick_state_counts_a_file_fresh_within_2_s_of_the_clock_on_either_side(tmp_path: Path) -> None:
    folder = tmp_path / "mlruns" / "1" / "run"
    progress = write(folder / "progress.json", GOOD % "a")
    metric = write(folder / "metrics" / "loss", "1 1.5 1\n")
    experiment = write(tmp_path / "mlruns" / "1" / "meta.yaml", "name: exp\n")
    job = JobFolder(folder, progress=progress, tool_files={MLFLOW: [metric]}, root=tmp_path / "mlruns")
    assert job.watched() == {folder / "meta.yaml": experiment}
    assert quick.state([job]) is not None
    for path in (progress, experiment):  # a file of the folder, a file it is read with
        for when, fresh in ((time.time(), True), (time.time() + 1, True), (FUTURE, False)):
            os.utime(path, (when, when))
            assert (quick.state([job]) is None) == fresh, (path.name, when)
        os.utime(path, (OLD, OLD))


# --- 2. the quick road refused a write ------------------------------------------------------------


def test_the_quick_road_in_a_folder_it_can_no_longer_write_in_says_so_in_one_line(
    shared_folder: Path,  # noqa: F811 - the fixture imported
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The audit: nothing changed, the folder made read-only after the first ingest: the
    heartbeat's write was a PermissionError traceback, exit 1."""
    roots, folder = shared_folder / "jobs", shared_folder / "wh"
    path = folder / "w.duckdb"
    write_job(roots, "a")
    assert run(capsys, "ingest", str(roots), "--db", str(path))[0] == cli.EXIT_OK
    assert quick.nothing_to_do(path, [roots]) is not None  # what the run below meets: the quick road
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if not p.name.endswith(".lock")}
    with another_user(folder):
        folder.chmod(0o555)
        try:
            code, lines = run(capsys, "ingest", str(roots), "--db", str(path))
        finally:
            folder.chmod(0o755)
    assert (code, lines) == (
        cli.EXIT_WAREHOUSE,
        [
            f"runlytics ingest: cannot write to warehouse {path}: its folder {folder} can't be written in "
            "(Permission denied): a writer needs a folder it may write in"
        ],
    )
    # nothing written but the lock file's pid: the heartbeat as the last run left it
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if not p.name.endswith(".lock")} == before


def fill(folder: Path) -> Path:
    """A file that takes every byte left on ``folder``'s file system."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for chunk in (2**20, 2**12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError as error:
                assert error.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def test_the_quick_road_on_a_full_disk_says_so_in_one_line(
    small_disk: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, path = tmp_path / "jobs", small_disk / "w.duckdb"
    write(root / "a" / "progress.json", GOOD % "a")
    assert run(capsys, "ingest", str(root), "--db", str(path))[0] == cli.EXIT_OK
    heartbeat = journal.read_heartbeat(path)
    filler = fill(small_disk)
    code, lines = run(capsys, "ingest", str(root), "--db", str(path))
    assert code == cli.EXIT_WAREHOUSE
    (line,) = lines
    assert line.startswith(f"runlytics ingest: ingest of {path} stopped, a write was refused: [Errno 28] ")
    assert line.endswith("Nothing stored was lost: free some space and run again.")
    assert journal.read_heartbeat(path) == heartbeat  # as the last run left it, and no .tmp beside it
    assert not [p for p in small_disk.iterdir() if p.name.endswith(".tmp")]
    filler.unlink()
    assert run(capsys, "ingest", str(root), "--db", str(path))[0] == cli.EXIT_OK
    assert journal.read_heartbeat(path)["run_id"] is None  # type: ignore[index]  # the quick road's


# --- 3. failed and pending files deleted since ------------------------------------------------------

PROBLEMS = "SELECT path, outcome, first_seen_at FROM ingest_files WHERE outcome <> 'ingested' ORDER BY path"


def problems(path: Path) -> dict[str, str]:
    """The problem files of the newest snapshot (what readers list): path -> outcome."""
    newest = snapshots.latest(path)
    assert newest is not None
    with duckdb.connect(str(newest), read_only=True) as con:
        return {p: outcome for p, outcome, _ in con.execute(PROBLEMS).fetchall()}


def facts(path: Path) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute("SELECT job_id, count(*) FROM steps GROUP BY ALL ORDER BY ALL").fetchall()


@pytest.fixture
def lab(tmp_path: Path) -> dict[str, Path]:
    """Two roots: A with a failed, a pending, an ingested and a formerly ingested (now failed)
    progress.json, a link to nothing and a folder whose name is not UTF-8; B with a failed one."""
    a, b = tmp_path / "A", tmp_path / "B"
    write(a / "was" / "progress.json", GOOD % "was")
    write(a / "ok" / "progress.json", GOOD % "ok")
    write(b / "bad" / "progress.json", "{bad")
    path = tmp_path / "w.duckdb"
    ingest(path, [a, b], wait=10)
    write(a / "was" / "progress.json", "{bad", OLD + 10)  # its job read before: failed now, job kept
    write(a / "bad" / "progress.json", "{bad")
    write(a / "empty" / "progress.json", "")
    (a / "link").mkdir()
    (a / "link" / "progress.json").symlink_to(tmp_path / "nothing")
    write(Path(os.fsdecode(bytes(a) + b"/caf\xe9/progress.json")), GOOD % "cafe")
    ingest(path, [a, b], wait=10)
    return {"A": a, "B": b, "db": path}


def test_a_failed_or_pending_file_deleted_leaves_the_problem_files_of_the_roots_walked(
    lab: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, path = lab["A"], lab["B"], lab["db"]
    cafe = os.fsencode(a).decode() + "/caf\ufffd/progress.json"
    listed = {
        f"{a}/bad/progress.json": "failed",
        f"{a}/empty/progress.json": "pending",
        f"{a}/link/progress.json": "failed",
        f"{a}/was/progress.json": "failed",
        cafe: "failed",
        f"{b}/bad/progress.json": "failed",
    }
    assert problems(path) == listed
    with duckdb.connect(str(path), read_only=True) as con:
        seen = {p: when for p, _, when in con.execute(PROBLEMS).fetchall()}
    steps = facts(path)
    assert steps == [("ok", 1), ("was", 1)]
    for gone in ("bad", "empty", "was", "ok"):  # "ok" was ingested: its record and facts stay
        shutil.rmtree(a / gone)
    (b / "bad" / "progress.json").unlink()
    ingest(path, [a], wait=10)  # B is not walked: its record stays
    kept = {cafe: "failed", f"{a}/link/progress.json": "failed", f"{b}/bad/progress.json": "failed"}
    assert problems(path) == kept  # in the snapshot readers read, published for it
    with duckdb.connect(str(path), read_only=True) as con:
        again = {p: when for p, _, when in con.execute(PROBLEMS).fetchall()}
        ok = con.execute("SELECT outcome FROM ingest_files WHERE path = $p", {"p": f"{a}/ok/progress.json"}).fetchall()
    assert again == {p: seen[p] for p in kept}  # never dropped and recorded again
    assert ok == [("ingested",)]
    assert facts(path) == steps  # the jobs of deleted folders keep their facts (docs/ingest.md)
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    body = TestClient(create_app(path, token=None)).get("/api/ingest/runs").json()
    shown = sorted(f["path"] for f in body["problem_files"])
    assert shown == ["bad/progress.json", "caf\ufffd/progress.json", "link/progress.json"]  # A's bad one gone
    ingest(path, [b], wait=10)
    assert problems(path) == {cafe: "failed", f"{a}/link/progress.json": "failed"}


def test_a_problem_file_deleted_leaves_this_ingesters_rows_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    """Two ingesters, a failed file each at the same path below its own root: the one deleted on
    host a goes from PostgreSQL's ledger at a's next run; b's row stays."""
    roots = {name: tmp_path / name / "jobs" for name in ("a", "b")}
    stages = {name: tmp_path / name / "stage.duckdb" for name in roots}
    for root in roots.values():
        write(root / "bad" / "progress.json", "{bad")
    for name, root in roots.items():
        code = cli.main(["ingest", "--quiet", "--db", pg_url, "--stage", str(stages[name]), str(root)])
        assert code == cli.EXIT_FILES_FAILED
    owners = {default_ingester(stage): name for name, stage in stages.items()}
    assert len(owners) == 2

    def listed() -> list[tuple[str, str]]:
        with psycopg.connect(pg_url) as con:
            rows = con.execute("SELECT path FROM ingest_files WHERE outcome <> 'ingested' ORDER BY 1").fetchall()
        return sorted((name, p[len(owner) + 1 :]) for (p,) in rows for owner, name in owners.items()
                      if p.startswith(f"{owner}:"))  # fmt: skip

    assert listed() == [(name, f"{root}/bad/progress.json") for name, root in sorted(roots.items())]
    (roots["a"] / "bad" / "progress.json").unlink()
    assert cli.main(["ingest", "--quiet", "--db", pg_url, "--stage", str(stages["a"]), str(roots["a"])]) == 0
    assert listed() == [("b", f"{roots['b']}/bad/progress.json")]


def test_a_run_that_finds_its_problem_files_there_publishes_nothing_new(tmp_path: Path) -> None:
    root, path = tmp_path / "jobs", tmp_path / "w.duckdb"
    write(root / "bad" / "progress.json", "{bad")
    ingest(path, [root], wait=10)
    first = snapshots.latest(path)
    ingest(path, [root], wait=10)  # the failed file is unchanged and there: nothing new to publish
    assert snapshots.latest(path) == first
