"""Trainers' own logs: a folder where a log file belongs, bytes that are not UTF-8 in a Lightning
``metrics.csv``, numbers no double holds in a CSV cell or an MLflow metric line, and a
LLaMA-Factory log's status read in pieces across runs (inputs.md's preamble: skip what cannot be
read, say why, go on; a run's result must not depend on the pieces earlier runs saw). Every test
that ingests runs on both engines (``ingest_engine``)."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Engine, Lab
from file_times import write

from runlytics.ingest import ledger
from runlytics.ingest.formats import lightning_csv, llamafactory, mlflow_store

D400 = "1" + "0" * 400  # an integer no double holds
GOOD = "ok/lightning_logs/version_0"
VALUES = "SELECT name, step, value FROM metric_values WHERE job_id = $j ORDER BY name, step"
FOLDER = "not a regular file (a folder): not read"
JOB = "SELECT status, current_step, total_steps, ended_at IS NULL FROM jobs WHERE job_id = $j"


def good_run(lab: Lab) -> None:
    write(lab.root / GOOD / "metrics.csv", "epoch,step,train_loss\n0,1,2.0\n0,2,1.5\n")


def warnings_of(summary: Any, lab: Lab) -> dict[str, list[str]]:
    """The run's warnings by file, as paths below the root."""
    out: dict[str, list[str]] = {}
    for path, message in summary.listed_warnings:
        out.setdefault(Path(path).relative_to(lab.root.resolve()).as_posix(), []).append(message)
    return out


def problems_of(summary: Any, lab: Lab) -> dict[str, tuple[str, str]]:
    """The run's failed or pending entries: path below the root -> (outcome, reason)."""
    root = lab.root.resolve()
    return {Path(p["path"]).relative_to(root).as_posix(): (p["outcome"], p["reason"]) for p in summary.problems}


def job_ids(lab: Lab) -> list[str]:
    return sorted(j for (j,) in lab.query("SELECT job_id FROM jobs"))


@pytest.fixture
def lab(tmp_path: Path, ingest_engine: Engine) -> Lab:
    return Lab(tmp_path, ingest_engine)


# --- 1. a folder where a tool log file belongs -----------------------------------------------


def test_a_folder_named_like_a_tool_log_is_named_as_a_failure(lab: Lab) -> None:
    """A folder named metrics.csv or trainer_log.jsonl, an MLflow run's meta.yaml that is a folder
    or an empty folder under its metrics/ were passed by in silence (no entry, no warning). Each is
    now a `failed` (to_retry) entry, "not a regular file (a folder)", every run while it is one;
    the root's other files are ingested, and the folder's files once they are files."""
    good_run(lab)
    (lab.root / "bad" / "lightning_logs" / "version_0" / "metrics.csv").mkdir(parents=True)
    (lab.root / "lf" / "trainer_log.jsonl").mkdir(parents=True)
    run = lab.root / "mlruns" / "1" / "r1"
    write(run / "meta.yaml", "run_id: r1\nstatus: 3\nstart_time: 1729486917471\n")
    write(run / "metrics" / "loss", "1729486925677 2.25 12\n")
    (run / "metrics" / "acc").mkdir()
    other = lab.root / "mlruns" / "1" / "r2"
    (other / "meta.yaml").mkdir(parents=True)
    write(other / "metrics" / "loss", "1729486925677 3.5 4\n")
    failures = {
        "bad/lightning_logs/version_0/metrics.csv": ("failed", FOLDER),
        "lf/trainer_log.jsonl": ("failed", FOLDER),
        "mlruns/1/r1/metrics/acc": ("failed", FOLDER),
        "mlruns/1/r2/meta.yaml": ("failed", FOLDER),
    }
    for _ in range(2):  # named again by the next run: a failure of the moment
        summary = lab.ingest()
        assert (summary.failed, summary.to_retry) == (4, 4)
        assert problems_of(summary, lab) == failures
    assert job_ids(lab) == ["mlruns/1/r1", "mlruns/1/r2", GOOD]
    assert lab.query(VALUES, {"j": GOOD})[-1] == ("train_loss", 2, 1.5)
    assert lab.query(VALUES, {"j": "mlruns/1/r1"}) == [("loss", 12, 2.25)]
    # the run whose meta.yaml is a folder: its metrics read, its status unknown, as for a missing one
    assert lab.query(VALUES, {"j": "mlruns/1/r2"}) == [("loss", 4, 3.5)]
    assert lab.query("SELECT status FROM jobs WHERE job_id = 'mlruns/1/r2'") == [("unknown",)]
    # fixed: the folders become files, read at the next run
    for folder in ("bad/lightning_logs/version_0/metrics.csv", "lf/trainer_log.jsonl"):
        shutil.rmtree(lab.root / folder)
    write(lab.root / "bad" / "lightning_logs" / "version_0" / "metrics.csv", "step,val_loss\n3,0.5\n")
    write(lab.root / "lf" / "trainer_log.jsonl", '{"current_steps": 2, "total_steps": 2, "loss": 0.25}\n')
    summary = lab.ingest()
    assert (summary.failed, summary.ingested) == (2, 2)
    assert lab.query(VALUES, {"j": "bad/lightning_logs/version_0"}) == [("val_loss", 3, 0.5)]
    assert lab.query(VALUES, {"j": "lf"}) == [("loss", 2, 0.25)]


# --- 2. bytes that are not UTF-8 in a Lightning metrics.csv ----------------------------------


def test_bytes_that_are_not_utf8_in_a_lightning_csv_are_replaced_with_a_warning(lab: Lab) -> None:
    """One such byte in the header dropped every row of the file (the header line was skipped,
    the first row taken for a header without a step column). The line is read with U+FFFD in the
    byte's place and one warning per read names the first line, the byte and how many lines."""
    good_run(lab)
    path = write(lab.root / "v" / "metrics.csv", b"epoch,step,train_lo\xffss\n0,1,2.0\n0,2,1.\xfe5\n0,3,1.25\n")
    summary = lab.ingest()
    assert (summary.failed, summary.ingested) == (0, 2)
    assert warnings_of(summary, lab)["v/metrics.csv"] == [
        "line 1: not valid UTF-8 (byte 0xff at column 20), read with U+FFFD in its place (and 1 more line)",
        "line 3: train_lo\ufffdss '1.\ufffd5' is not a number, dropped",
    ]
    assert lab.query(VALUES, {"j": "v"}) == [
        ("epoch", 1, 0.0),
        ("epoch", 2, 0.0),
        ("epoch", 3, 0.0),
        ("train_lo\ufffdss", 1, 2.0),
        ("train_lo\ufffdss", 3, 1.25),
    ]
    # appended: read on from the offset under the same header
    with path.open("ab") as f:
        f.write(b"1,4,1.0\n")
    os.utime(path, (time.time() - 1800, time.time() - 1800))
    summary = lab.ingest()
    assert warnings_of(summary, lab).get("v/metrics.csv", []) == []
    assert lab.query(VALUES, {"j": "v"})[-2:] == [("train_lo\ufffdss", 3, 1.25), ("train_lo\ufffdss", 4, 1.0)]


def test_the_column_of_a_byte_that_is_not_utf8_counts_characters(lab: Lab) -> None:
    """The warning's column is the one an editor shows: "é" and "µ" before the byte are one
    column each, not two (it counted bytes: column 20)."""
    write(lab.root / "u" / "metrics.csv", "epoch,step,é_µ_lo".encode() + b"\xffss\n0,1,2.0\n")
    summary = lab.ingest()
    assert warnings_of(summary, lab)["u/metrics.csv"] == [
        "line 1: not valid UTF-8 (byte 0xff at column 18), read with U+FFFD in its place",
    ]
    assert lab.query(VALUES, {"j": "u"}) == [("epoch", 1, 0.0), ("é_µ_lo\ufffdss", 1, 2.0)]


# --- 3. numbers no double holds -----------------------------------------------------------------


def test_numbers_beyond_a_double_in_csv_and_mlflow_are_dropped_with_a_warning(lab: Lab) -> None:
    """A 400-digit number (or 1e400) in a Lightning cell or an MLflow metric line was stored as
    +inf in silence. It is dropped with a warning naming the line; ``inf`` as written stays inf."""
    write(lab.root / "v" / "metrics.csv", f"epoch,step,train_loss\n0,1,{D400}\n0,2,1e400\n0,3,inf\n0,4,-{D400}\n")
    run = lab.root / "mlruns" / "1" / "r1"
    write(run / "meta.yaml", "run_id: r1\nstatus: 3\nstart_time: 1729486917471\n")
    write(run / "metrics" / "loss", f"1729486925677 {D400} 1\n1729486925678 2.5 2\n1729486925679 inf 3\n")
    summary = lab.ingest()
    assert (summary.failed, summary.ingested) == (0, 3)
    big = f"'{D400[:40]}' is out of range (beyond a double's 1.8e308)"
    warned = warnings_of(summary, lab)
    assert warned["v/metrics.csv"] == [
        f"line 2: train_loss {big}, dropped",
        "line 3: train_loss '1e400' is out of range (beyond a double's 1.8e308), dropped",
        f"line 5: train_loss '-{D400[:39]}' is out of range (beyond a double's 1.8e308), dropped",
    ]
    assert warned["mlruns/1/r1/metrics/loss"] == [f"line 1: value {big}, skipped"]
    inf = float("inf")
    assert [r for r in lab.query(VALUES, {"j": "v"}) if r[0] == "train_loss"] == [("train_loss", 3, inf)]
    assert lab.query(VALUES, {"j": "mlruns/1/r1"}) == [("loss", 2, 2.5), ("loss", 3, inf)]
    assert mlflow_store.parse_metric(f"1 1{'0' * 400}.5 7\n".encode(), "m").points == []
    assert lightning_csv.overflows(float(D400), D400) and not lightning_csv.overflows(float("inf"), "inf")


# --- 4. a LLaMA-Factory log's status, read in pieces ---------------------------------------------


def _lines(case: str) -> list[dict[str, Any]]:
    if case == "extended":  # completes 4/4, then goes on with total_steps 8 (elapsed_time goes on)
        return [
            {"current_steps": s, "total_steps": 4 if s <= 4 else 8, "loss": 1.0 / s, "elapsed_time": f"0:00:{10 * s}"}
            for s in range(1, 7)
        ]
    if case == "total_once":  # total_steps only on the first line; the last step reaches it
        first = {"current_steps": 1, "total_steps": 3, "loss": 1.0, "elapsed_time": "0:00:10"}
        return [first] + [{"current_steps": s, "loss": 1.0 / s, "elapsed_time": f"0:00:{10 * s}"} for s in (2, 3)]
    if case == "ranks":  # two ranks: the last line is one step below the total the other reached
        return [
            {"current_steps": s, "total_steps": 4, "loss": 1.0 / s, "elapsed_time": f"0:00:{10 * s}"}
            for s in (1, 2, 3, 4, 3)
        ]
    # resumed (elapsed_time falls back) with a larger total_steps
    return [
        {"current_steps": s, "total_steps": 4 if s <= 4 else 8, "loss": 0.5, "elapsed_time": f"0:{s:02d}:00"}
        for s in range(1, 7)
    ] + [{"current_steps": 7, "total_steps": 8, "loss": 0.25, "elapsed_time": "0:00:30"}]


CASES = {"extended": "unknown", "total_once": "completed", "ranks": "completed", "resumed": "unknown"}


def test_a_llamafactory_status_read_in_pieces_equals_one_read(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """inputs' docs (ingest.md, LLaMA-Factory): the status is `completed` once current_steps
    reaches total_steps, else `unknown`. A log read whole says so of its final lines; read in
    pieces across runs it said `completed` after the piece that reached the first total, and
    kept it (an `unknown` never replaced a status), or never saw a total named on an earlier
    piece. Each log is ingested cut at every line end, at all of them, and mid-line: every job
    row equals the one read whole in the last run (status, steps, an end only when completed)."""
    # the logs are dated long ago, yet cut mid-line by a writer still at them: none has settled (a
    # settled log's last line without its newline is read as its last: test_tool_log_tail_s16.py)
    monkeypatch.setattr(ledger, "SETTLED_SECONDS", math.inf)
    plans: dict[str, list[int]] = {}  # folder -> the file's size at each run (the last: the whole file)
    data: dict[str, bytes] = {}
    for case in CASES:
        raw = "".join(json.dumps(line) + "\n" for line in _lines(case)).encode()
        ends = [i + 1 for i, byte in enumerate(raw) if byte == ord("\n")]
        runs = len(ends)
        plans[f"{case}/fresh"] = [0] * (runs - 1) + [len(raw)]
        plans[f"{case}/every"] = ends
        for i, end in enumerate(ends[:-1]):
            plans[f"{case}/cut{i + 1}"] = [end] * (runs - 1) + [len(raw)]
        plans[f"{case}/midline"] = [ends[0] + 5, ends[-2] - 3] + [len(raw)] * (runs - 2)
        for folder in plans:
            if folder.startswith(case + "/"):
                data[folder] = raw
    runs = max(len(p) for p in plans.values())
    for k in range(runs):
        for folder, sizes in plans.items():
            size = sizes[k] if k < len(sizes) else sizes[-1]
            path = lab.root / folder / "trainer_log.jsonl"
            if size and (not path.exists() or path.stat().st_size != size):
                write(path, data[folder][:size], age=3600 - 10 * k)
        summary = lab.ingest()
        assert summary.failed == 0
    for case, status in CASES.items():
        fresh = lab.query(JOB, {"j": f"{case}/fresh"})
        assert fresh[0][0] == status and fresh[0][3] == (status == "unknown")
        for folder in plans:
            if folder.startswith(case + "/"):
                assert lab.query(JOB, {"j": folder}) == fresh, folder
    # the parser alone: a piece's lines say nothing of a total named before them; read whole they do
    raw = "".join(json.dumps(line) + "\n" for line in _lines("total_once")).encode()
    assert llamafactory.parse(raw).info.status == "completed"
    assert llamafactory.steps_and_total(raw) == (3, 3)
