"""Hostile entries in a jobs root: odd names, odd files, files that vanish. Each fails alone.

Every test that ingests runs on both engines (``ingest_engine``: on PostgreSQL through ``ingest
--db URL``, the CLI's included, with the lab's file as its stage)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, Engine, Lab

ODD_NAMES = ["*", "exp[1]", "exp1", "q?", "{a,b}", "a]b", "[!x]", "st*r", "back\\slash", "x**y"]


def doc(job_id: str, loss: float = 1.0) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "status": "completed",
        "history": [{"step": 1, "loss": loss, "iteration_time": 1.0}, {"step": 2, "loss": loss / 2}],
    }


def settled(path: Path) -> None:
    """Date a file's last change an hour ago: a file changed within seconds is read again."""
    past = path.stat().st_mtime - 3600
    os.utime(path, (past, past))


def test_folder_names_are_never_glob_patterns(tmp_path: Path, ingest_engine: Engine) -> None:
    """Each folder is read as itself: `*` reads no sibling, `exp[1]` is not `exp1`."""
    root = tmp_path / "root[*]?"
    root.mkdir()
    lab = Lab(tmp_path, ingest_engine)
    for i, name in enumerate(ODD_NAMES):
        folder = root / name
        folder.mkdir()
        (folder / "progress.json").write_text(json.dumps(doc(f"job-{i}", loss=float(i + 1))))
        settled(folder / "progress.json")
    summary = lab.ingest(root)
    assert (summary.files_seen, summary.ingested, summary.failed, summary.pending) == (len(ODD_NAMES),) * 2 + (0, 0)
    jobs = dict(lab.query("SELECT job_id, source_dir FROM jobs"))
    assert jobs == {f"job-{i}": str((root / name).resolve()) for i, name in enumerate(ODD_NAMES)}
    losses = dict(lab.query("SELECT job_id, loss FROM steps WHERE step = 1"))
    assert losses == {f"job-{i}": float(i + 1) for i in range(len(ODD_NAMES))}
    # and a second run finds every file unchanged, none "unchanged" by mistake before
    again = lab.ingest(root)
    assert (again.unchanged, again.ingested, again.failed) == (len(ODD_NAMES), 0, 0)


def test_odd_names_in_a_file_holding_null_values(tmp_path: Path, ingest_engine: Engine) -> None:
    """The null-warning read (read_text, read_json_objects) takes the same exact paths."""
    lab = Lab(tmp_path, ingest_engine)
    for name in ("exp[1]", "exp1"):
        lab.write_job(name, None, raw=json.dumps({"job_id": name, "history": [{"step": 1, "loss": None}]}))
    summary = lab.ingest()
    assert (summary.ingested, summary.failed) == (2, 0)
    warnings = {job: json.loads(w) for job, w in lab.query("SELECT job_id, warnings FROM ingest_files")}
    expected = ["no status: kept as unknown", "history[0] (step 1): loss is null, dropped"]
    assert warnings == {"exp[1]": expected, "exp1": expected}


# --- an entry fails alone ------------------------------------------------------------------------

FAILED = "SELECT path, outcome, error FROM ingest_files WHERE outcome <> 'ingested' ORDER BY path"


def good_jobs(lab: Lab, n: int = 2) -> None:
    for i in range(n):
        settled(lab.write_job(f"good-{i}", doc(f"good-{i}")))


def problems(summary: Any) -> dict[str, str]:
    return {Path(p["path"]).parent.name: p["reason"] for p in summary.problems}


@pytest.fixture
def lab(tmp_path: Path, ingest_engine: Engine) -> Lab:
    """On both engines (on PostgreSQL through ``ingest --db URL``: conftest's ``ingest_engine``)."""
    return Lab(tmp_path, ingest_engine)


def test_special_files_are_never_opened(lab: Lab, tmp_path: Path) -> None:
    """A FIFO would block a read forever, a link to /dev/zero never ends: neither is opened."""
    good_jobs(lab)
    (lab.root / "fifo").mkdir()
    os.mkfifo(lab.root / "fifo" / "progress.json")
    (lab.root / "zero").mkdir()
    os.symlink("/dev/zero", lab.root / "zero" / "progress.json")
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(doc("outside")))
    (lab.root / "escape").mkdir()
    os.symlink(outside, lab.root / "escape" / "progress.json")
    inside = lab.root / ".docs" / "alias.json"  # a hidden folder: not a job folder itself
    inside.parent.mkdir()
    settled(Path(shutil.copy(lab.root / "good-0" / "progress.json", inside)))
    inside.write_text(json.dumps(doc("alias")))
    settled(inside)
    (lab.root / "alias").mkdir()
    os.symlink(inside, lab.root / "alias" / "progress.json")  # a link within the root is followed
    summary = lab.ingest()  # a new warehouse: its first batch is read ahead, in a thread
    reading = [t for t in threading.enumerate() if t.name == "runlytics-first-batch"]
    assert not reading, "a read-ahead thread is still reading a FIFO or /dev/zero"
    assert (summary.files_seen, summary.ingested, summary.failed, summary.to_retry) == (6, 3, 3, 3)
    reasons = problems(summary)
    assert reasons["fifo"] == "not a regular file (a FIFO): not read"
    assert reasons["zero"] == "a symbolic link to /dev/zero, outside the ingest root " + str(lab.root.resolve())
    assert reasons["escape"].startswith(f"a symbolic link to {outside.resolve()}, outside the ingest root")
    assert sorted(j for (j,) in lab.query("SELECT job_id FROM jobs")) == ["alias", "good-0", "good-1"]
    # the failures are in the ledger (for `runlytics status` and /api/ingest/runs) and fail every run
    assert [(Path(p).parent.name, o) for p, o, _ in lab.query(FAILED)] == [
        ("escape", "failed"), ("fifo", "failed"), ("zero", "failed"),
    ]  # fmt: skip
    again = lab.ingest()
    assert (again.failed, again.to_retry, again.unchanged, again.ingested) == (3, 3, 3, 0)


def test_a_nul_character_in_a_files_strings_blocks_no_other_job(lab: Lab) -> None:
    """JSON may escape a NUL character (``\\u0000``) anywhere in a string: in the job id, a config
    value, a GPU's UUID. Such a file is ingested or fails alone; the other jobs, and the jobs of the
    runs after it, still come through."""
    good_jobs(lab)
    nul = doc("nul\u0000id")
    nul["config"] = {"model_name": "model\u0000", "note": "a\u0000b"}
    nul["history"][0]["gpus"] = [{"index": 0, "uuid": "GPU-\u0000", "utilization_percent": 50.0}]
    settled(lab.write_job("nul", nul))
    summary = lab.ingest()
    assert summary.ingested + summary.failed == 3 and summary.ingested >= 2
    jobs = sorted(j for (j,) in lab.query("SELECT job_id FROM jobs"))
    assert {"good-0", "good-1"} <= set(jobs)
    settled(lab.write_job("later", doc("later")))
    lab.ingest()
    assert "later" in {j for (j,) in lab.query("SELECT job_id FROM jobs")}


def test_a_file_over_max_file_mb_fails_alone(lab: Lab) -> None:
    good_jobs(lab)
    big = doc("big")
    big["config"] = {"padding": "x" * (1 << 20)}
    lab.write_job("big", big)
    summary = lab.ingest(max_file_mb=0.5)
    assert (summary.ingested, summary.failed, summary.to_retry) == (2, 1, 1)  # checked again next run
    assert problems(summary)["big"] == "larger than --max-file-mb (1 MiB > 0.5 MiB): not read"
    assert sorted(j for (j,) in lab.query("SELECT job_id FROM jobs")) == ["good-0", "good-1"]


def test_a_folder_name_that_is_not_utf8_fails_alone(lab: Lab) -> None:
    good_jobs(lab)
    folder = os.fsdecode(os.fsencode(lab.root) + b"/caf\xe9")
    os.mkdir(folder)
    Path(folder, "progress.json").write_text(json.dumps(doc("latin-1")))
    summary = lab.ingest()
    assert (summary.ingested, summary.failed) == (2, 1)
    (problem,) = summary.problems
    assert problem["path"] == str(lab.root.resolve()) + "/caf\ufffd/progress.json"
    assert problem["reason"] == "its path is not valid UTF-8: rename the folder"
    json.dumps(summary.as_dict())  # printable, storable


def test_a_file_that_vanishes_mid_run_fails_alone(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """Deleted after discovery, before it is opened: that file fails (read again next run), not the run."""
    from runlytics.ingest import progress

    good_jobs(lab)
    doomed = lab.write_job("doomed", doc("doomed"))
    original = progress.looks_complete

    def vanishing(path: Path, size: int) -> bool:
        if path == doomed:
            path.unlink()
        return original(path, size)

    monkeypatch.setattr(progress, "looks_complete", vanishing)
    summary = lab.ingest()
    assert (summary.ingested, summary.failed, summary.to_retry) == (2, 1, 1)
    assert problems(summary)["doomed"].startswith("cannot read: [Errno 2] No such file or directory")


# --- a full disk -------------------------------------------------------------------------------------


def cli_ingest(lab: Lab) -> subprocess.CompletedProcess[str]:
    """``runlytics ingest ROOT --db FILE``, or ``--db URL --stage FILE`` on an engine that ingests."""
    where = ["--db", str(lab.target()), "--stage", str(lab.db)] if lab.engine.ingests else ["--db", str(lab.db)]
    command = [sys.executable, "-m", "runlytics", "ingest", str(lab.root), *where, "--json"]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)


def long_job(lab: Lab, name: str, steps: int) -> None:
    history = [
        {"step": s, "loss": 1.0 / s, "iteration_time": 0.5, "timestamp": 1767225600 + s} for s in range(1, steps + 1)
    ]
    settled(lab.write_job(name, {"job_id": name, "status": "running", "history": history}))


def test_a_full_disk_fails_the_run_clearly_loses_nothing_and_is_retried(
    small_disk: Path, tmp_path: Path, ingest_engine: Engine
) -> None:
    lab = Lab(tmp_path, ingest_engine)
    lab.db = small_disk / "w.duckdb"  # the warehouse, or the stage on PostgreSQL
    for i in range(3):
        long_job(lab, f"small-{i}", 50)
    assert cli_ingest(lab).returncode == 0
    before = lab.facts()
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (shutil.disk_usage(small_disk).free - 200_000))
    long_job(lab, "big", 100_000)

    full = cli_ingest(lab)
    assert full.returncode == 3, full.stderr
    (line,) = full.stderr.strip().splitlines()  # one line, no traceback
    assert line.startswith(f"runlytics ingest: ingest of {lab.db} stopped, a write was refused: ")
    assert "No space left on device" in line
    assert "Nothing stored was lost" in line
    assert lab.facts() == before
    # no stray file: the warehouse, DuckDB's own log, the lock, the heartbeat, the snapshots and the
    # marker that the next run owes readers a copy (a stage publishes none: its publish lock instead)
    names = {p.name for p in small_disk.iterdir()} - {"filler"}
    assert names <= {
        "w.duckdb",
        "w.duckdb.wal",
        "w.duckdb.ingest.lock",
        "w.duckdb.last-ingest.json",
        *(["w.duckdb.publish.ingest.lock"] if lab.engine.ingests else ["w.duckdb.snapshots", "w.duckdb.unpublished"]),
    }
    if not lab.engine.ingests:
        assert not [p for p in (small_disk / "w.duckdb.snapshots").iterdir() if not p.name.endswith(".duckdb")]
    # the big file was not blamed: once there is space again, the next run reads it
    assert lab.query("SELECT count(*) FROM ingest_files WHERE outcome <> 'ingested'") == [(0,)]
    filler.unlink()
    again = cli_ingest(lab)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert (summary["ingested"], summary["unchanged"], summary["failed"]) == (1, 3, 0)
    assert lab.query("SELECT count(*) FROM steps WHERE job_id = 'big'") == [(100_000,)]
    assert not (small_disk / "w.duckdb.unpublished").exists()  # published: no copy owed


# --- one folder per job id -------------------------------------------------------------------------


def test_a_second_folder_claiming_a_job_id_is_a_conflict_and_changes_nothing(lab: Lab) -> None:
    settled(lab.write_job("alpha", doc("shared", loss=1.0)))
    assert lab.ingest().ingested == 1
    before = lab.facts()
    settled(lab.write_job("beta", doc("shared", loss=9.0)))  # claims alpha's job
    summary = lab.ingest()
    assert (summary.ingested, summary.failed, summary.unchanged) == (0, 1, 1)
    alpha, beta = (str(lab.root.resolve() / name) for name in ("alpha", "beta"))
    # reported on both: the failing file names the folder that holds the job
    assert summary.problems == [
        {"path": beta + "/progress.json", "outcome": "failed",
         "reason": f"job id 'shared' belongs to the folder {alpha}: a second folder can't claim it "
                   "(give one of them another job_id)"},
    ]  # fmt: skip
    assert lab.facts() == before  # alpha's steps, not beta's
    # the conflict stays reported while both are there
    assert lab.ingest().failed == 1


def test_two_new_folders_claiming_one_job_id_the_first_keeps_it(lab: Lab) -> None:
    settled(lab.write_job("b-second", doc("shared", loss=9.0)))
    settled(lab.write_job("a-first", doc("shared", loss=1.0)))
    summary = lab.ingest()
    assert (summary.ingested, summary.failed) == (1, 1)
    assert lab.query("SELECT source_dir FROM jobs") == [(str(lab.root.resolve() / "a-first"),)]
    assert lab.query("SELECT loss FROM steps WHERE step = 1") == [(1.0,)]


def test_a_moved_folder_is_not_a_conflict(lab: Lab) -> None:
    settled(lab.write_job("old-place", doc("moved", loss=1.0)))
    lab.ingest()
    (lab.root / "old-place").rename(lab.root / "new-place")
    summary = lab.ingest()
    assert (summary.ingested, summary.failed) == (1, 0)
    assert lab.query("SELECT source_dir FROM jobs") == [(str(lab.root.resolve() / "new-place"),)]


def test_a_conflicting_folders_trainer_states_and_checkpoints_are_not_read(lab: Lab) -> None:
    """The folder that lost the conflict adds nothing through its other files either."""
    settled(lab.write_job("shared", doc("shared", loss=1.0)))
    lab.ingest()
    before = lab.facts()
    other = lab.root / "elsewhere" / "shared"  # same folder name, another folder: its states would go to 'shared'
    settled(lab.write_job("elsewhere/shared", doc("shared", loss=9.0)))
    (other / "checkpoint-5").mkdir()
    state = {"global_step": 5, "max_steps": 5, "log_history": [{"step": 5, "loss": 7.0}]}
    (other / "checkpoint-5" / "trainer_state.json").write_text(json.dumps(state))
    settled(other / "checkpoint-5" / "trainer_state.json")
    summary = lab.ingest()
    assert (summary.ingested, summary.failed) == (0, 2)  # the progress.json and its trainer state
    assert lab.facts() == before
    assert lab.query("SELECT count(*) FROM trainer_steps") == [(0,)]


def test_a_file_once_too_large_is_read_once_allowed(lab: Lab) -> None:
    big = doc("big")
    big["config"] = {"padding": "x" * (1 << 20)}
    settled(lab.write_job("big", big))
    assert lab.ingest(max_file_mb=0.5).failed == 1
    assert lab.ingest(max_file_mb=0.5).failed == 1
    assert lab.ingest(max_file_mb=2).ingested == 1


def test_a_path_named_like_a_disk_error_is_no_disk_error() -> None:
    from runlytics.warehouse import db

    assert not db.is_write_failure(RuntimeError('IO Error: No files found "/jobs/No space left on device/x.json"'))
    assert db.is_write_failure(RuntimeError('Could not write file "/w.duckdb.wal": No space left on device'))
    try:
        try:
            raise OSError(28, "No space left on device")
        except OSError:
            raise RuntimeError("cannot rollback") from None
    except RuntimeError as hidden:
        assert not db.is_write_failure(hidden)  # `from None`: no cause left to find
    try:
        try:
            raise OSError(28, "No space left on device")
        except OSError:
            raise RuntimeError("cannot rollback")  # noqa: B904 - the context is what is checked
    except RuntimeError as wrapped:
        assert db.is_write_failure(wrapped)


# --- times out of the years 1-9999 --------------------------------------------------------------


def test_timestamps_outside_years_1_to_9999_are_dropped_with_a_warning(lab: Lab, tmp_path: Path) -> None:
    history = [
        {"step": 1, "timestamp": "10000-01-01T00:00:00Z", "loss": 1.0},
        {"step": 2, "timestamp": -62135596801, "loss": 0.9},  # a second before year 1
        {"step": 3, "timestamp": "0000-06-01T00:00:00Z", "loss": 0.8},
        {"step": 4, "timestamp": -62135596800, "loss": 0.7},  # 0001-01-01T00:00:00Z
        {"step": 5, "timestamp": "9999-12-31T23:59:59Z", "loss": 0.6},
    ]
    lab.write_job("j", {"job_id": "j", "status": "running", "history": history})
    spool = tmp_path / "spool"
    spool.mkdir()
    lines = [{"ts": ts, "job_id": "j", "gpu_index": 0, "utilization_percent": 50.0} for ts in (1e20, -1e20, 1767225600)]
    (spool / "h-2026010100.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    summary = lab.ingest(lab.root, spool_root=spool)
    assert summary.failed == 0
    assert lab.query("SELECT step, CAST(ts AS VARCHAR) FROM steps ORDER BY step") == [
        (1, None), (2, None), (3, None), (4, "0001-01-01 00:00:00"), (5, "9999-12-31 23:59:59"),
    ]  # fmt: skip
    (warnings,) = lab.query("SELECT warnings FROM ingest_files WHERE kind = 'progress'")[0]
    assert [w for w in json.loads(warnings) if "timestamp" in w] == [
        'history[0] (step 1): timestamp "10000-01-01T00:00:00Z" is not a timestamp, dropped',
        "history[1] (step 2): timestamp -62135596801 is not a timestamp, dropped",
        'history[2] (step 3): timestamp "0000-06-01T00:00:00Z" is not a timestamp, dropped',
    ]
    assert lab.query("SELECT count(*) FROM gpu_samples") == [(1,)]  # the two absurd lines skipped, not the run
