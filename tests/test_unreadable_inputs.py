"""Folders and trainer states ingest can't read or store: each fails (or is trimmed) alone, named
with its reason, and never stops the run for the other jobs (inputs.md's preamble).

A ``checkpoint-<step>/`` folder whose step is out of range, a trainer state holding counts beyond
BIGINT, nested too deeply or holding escaped lone surrogates, folders this user may not list or
search. Every test that ingests runs on both engines (``ingest_engine``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest
from conftest import REPO, Engine, Lab

CHECKPOINTS = "SELECT job_id, step FROM checkpoints ORDER BY job_id, step"
FOLDER_ROWS = "SELECT path, outcome, error FROM ingest_files WHERE kind = 'folder' ORDER BY path"


def doc(job_id: str, loss: float = 1.0) -> dict[str, Any]:
    return {"job_id": job_id, "status": "running", "history": [{"step": 1, "loss": loss}, {"step": 2, "loss": loss}]}


def settled(path: Path) -> Path:
    """Date a file's last change an hour ago: a file changed within seconds is read again."""
    past = path.stat().st_mtime - 3600
    os.utime(path, (past, past))
    return path


def write_state(folder: Path, state: dict[str, Any]) -> Path:
    return write(folder / "trainer_state.json", json.dumps(state))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return settled(path)


def good_jobs(lab: Lab) -> None:
    for name in ("good-0", "good-1"):
        settled(lab.write_job(name, doc(name)))


def job_ids(lab: Lab) -> list[str]:
    return sorted(j for (j,) in lab.query("SELECT job_id FROM jobs"))


def problems(summary: Any) -> dict[str, tuple[str, str]]:
    """Each problem of a run: its path below the root, its outcome and its reason."""
    return {p["path"]: (p["outcome"], p["reason"]) for p in summary.problems}


@pytest.fixture
def lab(tmp_path: Path, ingest_engine: Engine) -> Lab:
    return Lab(tmp_path, ingest_engine)


def test_a_checkpoint_folder_naming_a_step_beyond_range_fails_alone(lab: Lab) -> None:
    """``checkpoint-99999999999999999999/`` (a step no BIGINT holds) crashed every run: it is named
    as a problem every run while it is there, the job's other checkpoints and the other jobs come in."""
    good_jobs(lab)
    settled(lab.write_job("j1", doc("j1")))
    huge = lab.root / "j1" / "checkpoint-99999999999999999999"
    huge.mkdir()
    (lab.root / "j1" / "checkpoint-5").mkdir()
    summary = lab.ingest()
    assert (summary.ingested, summary.failed, summary.to_retry) == (3, 1, 1)
    assert problems(summary) == {
        str(huge.resolve()): (
            "failed",
            "checkpoint step 99999999999999999999 is out of range (0 to 10^18): "
            "the folder counts as a checkpoint only at its trainer state's global_step, if any",
        )
    }
    assert job_ids(lab) == ["good-0", "good-1", "j1"]
    assert lab.query(CHECKPOINTS) == [("j1", 5)]
    again = lab.ingest()  # named every run while it is there
    assert (again.failed, again.to_retry, again.unchanged) == (1, 1, 3)
    shutil.rmtree(huge)
    fixed = lab.ingest()
    assert (fixed.failed, fixed.problems) == (0, [])
    assert lab.own_query(FOLDER_ROWS) == []  # no longer listed by `runlytics status`


def test_counts_beyond_range_in_a_trainer_state_are_dropped_with_warnings(lab: Lab) -> None:
    """A step, global_step or max_steps of 2^63 or more crashed every run (DuckDB's BIGINT cast):
    each is dropped with a warning naming it, as progress.json's are (bound 10^18); an integer of
    5,000 digits is a number too large for a double (+inf), not a crash."""
    good_jobs(lab)
    state = {
        "global_step": 99999999999999999999,
        "max_steps": 10**19,
        "log_history": [
            {"step": 9223372036854775807, "loss": 1.0},
            {"step": 10**18 + 1, "loss": 1.0},
            {"step": 5, "loss": 2.0, "eval_loss": 3.0},
        ],
    }
    text = json.dumps(state)[:-3] + ', "huge": 1' + "0" * 5000 + "}]}"
    path = write(lab.root / "j1" / "checkpoint-5" / "trainer_state.json", text)
    summary = lab.ingest()
    assert (summary.ingested, summary.failed) == (3, 0)
    assert list(summary.listed_warnings) == [
        (str(path.resolve()), message)
        for message in (
            "global_step '99999999999999999999' is out of range (0 to 10^18), ignored",
            "max_steps '10000000000000000000' is out of range (0 to 10^18), ignored",
            "log_history[0]: step '9223372036854775807' is out of range (0 to 10^18), skipped",
            "log_history[1]: step '1000000000000000001' is out of range (0 to 10^18), skipped",
        )
    ]
    assert lab.query("SELECT job_id, step, loss, eval_loss FROM trainer_steps") == [("j1", 5, 2.0, 3.0)]
    assert lab.query("SELECT value FROM metric_values WHERE job_id = 'j1' AND name = 'huge'") == [(float("inf"),)]
    assert lab.query("SELECT job_id, global_step, max_steps FROM trainer_runs") == [("j1", None, None)]
    assert lab.query(CHECKPOINTS) == [("j1", 5)]
    assert job_ids(lab) == ["good-0", "good-1", "j1"]


def test_a_trainer_state_nested_too_deeply_fails_alone(lab: Lab) -> None:
    """1,000 nested arrays crashed every run (RecursionError): the file fails with the reason
    progress.json gets, read again when it changes; the other jobs come in."""
    good_jobs(lab)
    deep = write(lab.root / "deep" / "trainer_state.json", '{"log_history": [], "x": ' + "[" * 1000 + "]" * 1000 + "}")
    summary = lab.ingest()
    assert (summary.ingested, summary.failed, summary.to_retry) == (2, 1, 0)
    assert problems(summary) == {str(deep.resolve()): ("failed", "invalid JSON: nested too deeply")}
    assert job_ids(lab) == ["good-0", "good-1"]
    again = lab.ingest()
    assert (again.failed, again.unchanged) == (0, 3)  # a plain failure: read again when it changes
    write(deep, json.dumps({"global_step": 3, "log_history": [{"step": 3, "loss": 0.5}]}))
    fixed = lab.ingest()
    assert (fixed.ingested, fixed.failed) == (1, 0)
    assert lab.query("SELECT job_id, step, loss FROM trainer_steps") == [("deep", 3, 0.5)]


def test_a_trainer_state_starting_with_a_byte_order_mark_is_read(lab: Lab) -> None:
    """A UTF-8 BOM failed the file ("Unexpected UTF-8 BOM"), while progress.json with one is read."""
    path = lab.root / "bom" / "trainer_state.json"
    path.parent.mkdir()
    state = {"global_step": 5, "log_history": [{"step": 5, "loss": 1.5}]}
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(state).encode())
    settled(path)
    summary = lab.ingest()
    assert (summary.ingested, summary.failed, summary.warnings) == (1, 0, 0)
    assert lab.query("SELECT job_id, step, loss FROM trainer_steps") == [("bom", 5, 1.5)]


def test_escaped_lone_surrogates_in_a_trainer_state_are_replaced_with_a_warning(lab: Lab) -> None:
    """``"\\udcff"`` is valid JSON (Python's json.dumps writes it for a path decoded with
    surrogateescape) but no UTF-8: stored, it crashed every run. Each such string or key is kept
    with U+FFFD in place of the surrogate, and a warning names it."""
    good_jobs(lab)
    text = (
        '{"best_model_checkpoint": "out/checkpoint-5\\udcff", "global_step": 5, "note": "\\ud800",'
        ' "log_history": [{"step": 5, "loss": 1.0, "eval_\\udcff": 2.0, "tag": "x\\udfff"}]}'
    )
    path = write(lab.root / "surr" / "trainer_state.json", text)
    summary = lab.ingest()
    assert (summary.ingested, summary.failed) == (3, 0)
    assert list(summary.listed_warnings) == [
        (str(path.resolve()), message)
        for message in (
            "best_model_checkpoint 'out/checkpoint-5\ufffd': held an escaped lone UTF-16 surrogate (not a "
            "character), replaced by U+FFFD",
            "log_history[0] (step 5): key 'eval_\ufffd' held an escaped lone UTF-16 surrogate (not a character), "
            "replaced by U+FFFD",
            "log_history[0] (step 5): tag 'x\\udfff' is not a number, dropped",  # as repr() quotes it
        )
    ]
    assert lab.query("SELECT best_model_checkpoint FROM trainer_runs") == [("checkpoint-5\ufffd",)]
    values = lab.query("SELECT name, step, value FROM metric_values WHERE job_id = 'surr' ORDER BY name")
    assert values == [("eval_\ufffd", 5, 2.0), ("loss", 5, 1.0)]
    assert job_ids(lab) == ["good-0", "good-1", "surr"]


def test_a_trainer_state_duckdb_refuses_fails_alone(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """A value no check foresaw, refused by DuckDB when staged, ended the run for every job: the
    state fails alone with DuckDB's reason, the batch is staged again without it."""
    from runlytics.ingest import trainer_state

    stage = trainer_state.stage

    def refusing(con: Any, states: list[Any], source_dirs: list[str]) -> None:
        if any(s.job_id == "bad" for s in states):
            raise duckdb.ConversionException("Conversion Error: a value no check foresaw")
        stage(con, states, source_dirs)

    monkeypatch.setattr(trainer_state, "stage", refusing)
    for name in ("bad", "good"):
        write_state(lab.root / name, {"global_step": 2, "log_history": [{"step": 2, "loss": 0.5}]})
    summary = lab.ingest()
    assert (summary.ingested, summary.failed, summary.to_retry) == (1, 1, 0)
    bad = str((lab.root / "bad" / "trainer_state.json").resolve())
    assert problems(summary) == {bad: ("failed", "could not be stored: Conversion Error: a value no check foresaw")}
    assert lab.query("SELECT job_id, step, loss FROM trainer_steps") == [("good", 2, 0.5)]


def test_a_checkpoint_without_global_step_ranks_by_its_folders_step(lab: Lab) -> None:
    """checkpoint-200/ without global_step is the later state: its values of the steps both hold win
    over checkpoint-100's (the step it stands for is its folder's, as its checkpoint row's)."""
    settled(lab.write_job("j", doc("j")))
    history_100 = [{"step": s, "loss": s / 1000} for s in range(10, 101, 10)]
    history_200 = [{"step": s, "loss": s / 1000 + 1} for s in range(10, 201, 10)]
    write_state(lab.root / "j" / "checkpoint-100", {"global_step": 100, "log_history": history_100})
    write_state(lab.root / "j" / "checkpoint-200", {"log_history": history_200})
    summary = lab.ingest()
    assert (summary.ingested, summary.failed) == (3, 0)
    losses = dict(lab.query("SELECT step, loss FROM trainer_steps WHERE job_id = 'j' AND step IN (50, 100, 150)"))
    assert losses == {50: 1.05, 100: 1.1, 150: 1.15}
    assert lab.query(CHECKPOINTS) == [("j", 100), ("j", 200)]


# --- folders and files this user may not read ------------------------------------------------------

# root reads every file (CAP_DAC_OVERRIDE): the CLI runs without that capability, as any other user
DROP_CAPS = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"]


def as_plain_user(tmp_path: Path) -> list[str]:
    """The prefix that runs a command without the power to read what chmod forbids; skip where none can."""
    if os.geteuid() != 0:
        return []
    probe = tmp_path / "probe"
    probe.write_text("x")
    probe.chmod(0)
    try:
        done = subprocess.run([*DROP_CAPS, "cat", str(probe)], capture_output=True)
    except FileNotFoundError:
        done = None
    probe.unlink()
    if done is None or done.returncode == 0:
        pytest.skip("running as root, and setpriv can't drop CAP_DAC_OVERRIDE here")
    return DROP_CAPS


def cli_ingest(lab: Lab, prefix: list[str]) -> tuple[int, dict[str, Any]]:
    where = ["--db", str(lab.target()), "--stage", str(lab.db)] if lab.engine.ingests else ["--db", str(lab.db)]
    command = [*prefix, sys.executable, "-m", "runlytics", "ingest", str(lab.root), *where, "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)


def test_unreadable_folders_and_files_are_named_and_read_once_readable(lab: Lab, tmp_path: Path) -> None:
    """A checkpoint folder this user can't search crashed discovery (every run, every job); a job
    folder or a folder of jobs that can't be listed was skipped in silence; an unreadable trainer
    state was `pending`. Each is `failed` (to_retry), named with its reason, every run while it is
    so (exit 1), the other jobs ingested; once readable, read, and no longer listed."""
    prefix = as_plain_user(tmp_path)
    good_jobs(lab)
    settled(lab.write_job("ckpt", doc("ckpt")))
    write_state(lab.root / "ckpt" / "checkpoint-10", {"global_step": 10, "log_history": [{"step": 10, "loss": 0.25}]})
    settled(lab.write_job("locked/jobx", doc("jobx")))
    state = write_state(lab.root / "hf", {"global_step": 3, "log_history": [{"step": 3, "loss": 0.5}]})
    shut = [lab.root / "ckpt" / "checkpoint-10", lab.root / "locked", state]
    for path in shut:
        path.chmod(0)
    try:
        rc, summary = cli_ingest(lab, prefix)
        again_rc, again = cli_ingest(lab, prefix)
    finally:
        for path in shut:
            path.chmod(0o755 if path.is_dir() else 0o644)
    root = lab.root.resolve()
    expected = {
        str(root / "ckpt" / "checkpoint-10"): ("failed", "cannot read folder: permission denied"),
        str(root / "locked"): ("failed", "cannot list folder: permission denied"),
        str(root / "hf" / "trainer_state.json"): (
            "failed",
            f"cannot read: [Errno 13] Permission denied: '{root / 'hf' / 'trainer_state.json'}'",
        ),
    }
    for run_rc, run in ((rc, summary), (again_rc, again)):
        assert run_rc == 1
        assert {p["path"]: (p["outcome"], p["reason"]) for p in run["problems"]} == expected
        assert (run["failed"], run["to_retry"]) == (3, 3)
    assert summary["ingested"] == 3 and again["unchanged"] == 3
    assert job_ids(lab) == ["ckpt", "good-0", "good-1"]
    assert lab.query("SELECT count(*) FROM trainer_steps") == [(0,)]
    ledger = {Path(p).name: (o, e) for p, o, e in lab.own_query(FOLDER_ROWS)}
    assert ledger == {
        "checkpoint-10": ("failed", "cannot read folder: permission denied"),
        "locked": ("failed", "cannot list folder: permission denied"),
    }
    # readable again: read, and no longer listed (in this process: nothing is unreadable now, and a
    # third CLI start per engine only costs time)
    fixed = lab.ingest()
    assert (fixed.failed, fixed.problems) == (0, [])
    assert job_ids(lab) == ["ckpt", "good-0", "good-1", "hf", "jobx"]
    steps = lab.query("SELECT job_id, step, loss FROM trainer_steps ORDER BY job_id")
    assert steps == [("ckpt", 10, 0.25), ("hf", 3, 0.5)]
    assert lab.own_query(FOLDER_ROWS) == []


def test_a_folder_problem_goes_once_its_root_holds_no_job_folder(lab: Lab) -> None:
    """The folder rows to look at again were taken from the jobs' roots: once the only job folder
    went, the root walked had no job, and the row stayed `failed` (listed by `runlytics status`) forever."""
    settled(lab.write_job("j1", doc("j1")))
    (lab.root / "j1" / "checkpoint-99999999999999999999").mkdir()
    assert lab.ingest().failed == 1
    assert [Path(p).name for p, _, _ in lab.own_query(FOLDER_ROWS)] == ["checkpoint-99999999999999999999"]
    shutil.rmtree(lab.root / "j1")
    gone = lab.ingest()
    assert (gone.failed, gone.to_retry, gone.problems) == (0, 0, [])
    assert lab.own_query(FOLDER_ROWS) == []


def test_a_checkpoint_folder_beyond_range_counts_at_its_states_global_step(lab: Lab) -> None:
    """What the problem says is what is stored: the folder's trainer state stands at its global_step
    (the message said the folder was "not counted as a checkpoint", yet its checkpoint row was stored)."""
    settled(lab.write_job("j1", doc("j1")))
    huge = lab.root / "j1" / "checkpoint-1000000000000000001"
    write_state(huge, {"global_step": 10, "log_history": [{"step": 10, "loss": 0.5}]})
    summary = lab.ingest()
    [(outcome, reason)] = problems(summary).values()
    assert (outcome, reason.split(": ", 1)[1]) == (
        "failed",
        "the folder counts as a checkpoint only at its trainer state's global_step, if any",
    )
    assert lab.query(CHECKPOINTS) == [("j1", 10)]


def test_a_checkpoint_step_is_written_in_ascii_digits(lab: Lab) -> None:
    """``\\d`` took any script's digits: ``checkpoint-٣/`` (Arabic-Indic 3) was checkpoint 3."""
    settled(lab.write_job("j1", doc("j1")))
    (lab.root / "j1" / "checkpoint-\u0663").mkdir()
    (lab.root / "j1" / "checkpoint-4").mkdir()
    lab.ingest()
    assert lab.query(CHECKPOINTS) == [("j1", 4)]


def test_a_folder_named_progress_json_that_cant_be_searched_is_named_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its trainer state was probed too: the folder was named twice (two reasons, one ledger row
    flipping to kind 'folder'); the progress reader names it alone ("not a regular file")."""
    from runlytics.ingest import discover

    write(tmp_path / "j1" / "progress.json" / "x", "")
    real = os.stat

    def stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if str(path).endswith(os.path.join("progress.json", "trainer_state.json")):
            raise PermissionError(13, "Permission denied", str(path))  # as for a folder without search permission
        return real(path, *args, **kwargs)

    monkeypatch.setattr(discover.os, "stat", stat)
    [job] = discover.discover([tmp_path])
    assert (job.path, job.progress, job.problems, job.trainer_states) == (
        tmp_path.resolve() / "j1", tmp_path.resolve() / "j1" / "progress.json", [], []
    )  # fmt: skip
