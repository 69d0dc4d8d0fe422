"""Session 16: a trainer's text log whose last line has no newline (Lightning's ``metrics.csv``,
LLaMA-Factory's ``trainer_log.jsonl``, an MLflow metric file). That line waits while a writer may
be at it, then, once the file has settled (``ledger.settled``: as the spool's and an nvidia-smi
log's since cf770b9), is read as the file's last line: stored, or skipped with its line number.
Before, the file was recorded with its size and time and never opened again: the line was lost
without a word. Also the spool's epoch ``ts``, bounded as progress.json's (``sql.rl_epoch``).
Every test that ingests runs on both engines (``ingest_engine``), but the shortcut's."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import duckdb
import pytest

from runlytics.ingest import gpu_samples, ledger, quick
from runlytics.ingest.gpu_samples import Piece
from tests.conftest import DUCKDB_ONLY_INGEST, Engine, Lab
from tests.file_times import aged, opened_under

VALUES = "SELECT step, value FROM metric_values WHERE job_id = $j AND name = $n ORDER BY step"
FINGERPRINT = "SELECT fingerprint FROM ingest_files WHERE path = $p"


class Log(NamedTuple):
    """A text log of one tool, as a run folder holds it: the file, its job, the metric it logs."""

    path: str  # below the root
    job: str
    metric: str
    head: str  # what precedes the lines (a CSV header)
    line: Callable[[int, float], str]  # the line logging the metric's value at a step
    cut: str  # the last line, cut by a writer that stopped mid-line
    warning: str  # the warning of that cut line, after two lines of the metric
    # whether a settled last line without its newline is read as it is; MLflow writes each line
    # whole, newline and all, so there it is a line cut short (ef496ce), skipped with this warning
    unended: bool = True


LOGS = {
    "lightning": Log(
        "lit/lightning_logs/version_0/metrics.csv", "lit/lightning_logs/version_0", "train_loss",
        "epoch,step,train_loss\n", lambda step, value: f"0,{step},{value}", "0,3",
        "line 4: 2 cells for 3 columns, skipped",
    ),
    "llamafactory": Log(
        "lf/trainer_log.jsonl", "lf", "loss", "",
        lambda step, value: json.dumps({"current_steps": step, "total_steps": 3, "loss": value}),
        '{"current_steps": 3, "lo',
        "line 3: not JSON (Unterminated string starting at: line 1 column 22 (char 21)), skipped",
    ),
    "mlflow": Log(
        "mlruns/1/r1/metrics/loss", "mlruns/1/r1", "loss", "",
        lambda step, value: f"{1_729_486_925_000 + step} {value} {step}", "17294869",
        "line 3: '17294869' has no newline: a line cut short, skipped", unended=False,
    ),
}  # fmt: skip


@pytest.fixture
def lab(tmp_path: Path, ingest_engine: Engine) -> Lab:
    return Lab(tmp_path, ingest_engine)


@pytest.fixture(params=sorted(LOGS))
def log(request: pytest.FixtureRequest, lab: Lab) -> Log:
    """Each tool's log in turn; an MLflow run's folder gets its meta.yaml."""
    chosen = LOGS[request.param]
    if request.param == "mlflow":
        write(lab.root / "mlruns" / "1" / "r1" / "meta.yaml", "run_id: r1\nstatus: 3\n", 3600)
    return chosen


def write(path: Path, text: str, age: float) -> Path:
    """``text`` as the file's bytes, its last change dated ``age`` seconds ago."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    aged(path, age)
    return path


def append(path: Path, text: str, age: float) -> None:
    with path.open("a") as f:
        f.write(text)
    aged(path, age)


def values(lab: Lab, log: Log) -> list[tuple[int, float]]:
    return lab.query(VALUES, {"j": log.job, "n": log.metric})


def warnings_of(summary: Any) -> list[str]:
    return [message for _, message in summary.listed_warnings]


def cut_short(number: int, line: str) -> str:
    """MLflow's warning of a settled last line without its newline."""
    return f"line {number}: {line!r} has no newline: a line cut short, skipped"


def later(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """The clock ``seconds`` ahead: the files, untouched, are that much older."""
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + seconds)


# --- 1. a settled log's last line without its newline -----------------------------------------


def test_a_settled_logs_last_line_without_its_newline_is_read(
    lab: Lab, log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(lab.root / log.path, log.head + log.line(1, 2.0) + "\n" + log.line(2, 1.5), 600)
    first = lab.ingest()
    read = [(1, 2.0), (2, 1.5)] if log.unended else [(1, 2.0)]
    assert values(lab, log) == read and warnings_of(first) == ([] if log.unended else [cut_short(2, log.line(2, 1.5))])
    # read to its end, recorded with its size and time: a run opens it no more
    assert lab.own_query(FINGERPRINT, {"p": str(path.resolve())})[0][0] is not None
    opened = opened_under(lab.root.resolve(), monkeypatch)
    again = lab.ingest()
    assert opened == [] and again.ingested == 0 and again.points == 0
    assert values(lab, log) == read


def test_a_settled_logs_cut_last_line_is_skipped_with_its_number(
    lab: Lab, log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    head = log.head + log.line(1, 2.0) + "\n" + log.line(2, 1.5) + "\n"
    write(lab.root / log.path, head + log.cut, 600)
    first = lab.ingest()
    assert warnings_of(first) == [log.warning]
    assert values(lab, log) == [(1, 2.0), (2, 1.5)]
    opened = opened_under(lab.root.resolve(), monkeypatch)
    again = lab.ingest()
    assert opened == [] and again.ingested == 0 and warnings_of(again) == []


# --- 2. a last line being written: it waits, then is read whole, or as final once settled ---------


def test_a_last_line_waits_is_read_whole_and_once_settled_is_read_unchanged(
    lab: Lab, log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file untouched once its writer left it: its record's size and time still match when
    it settles. The line is read then all the same, and the run after opens nothing."""
    second = log.line(2, 1.5)
    path = write(lab.root / log.path, log.head + log.line(1, 2.0) + "\n" + second[:5], 60)
    first = lab.ingest()
    assert values(lab, log) == [(1, 2.0)] and warnings_of(first) == []
    # the writer ends the line, then writes one more without its newline, and stops
    append(path, second[5:] + "\n" + log.line(3, 0.5), 60)
    lab.ingest()
    assert values(lab, log) == [(1, 2.0), (2, 1.5)]
    assert lab.own_query(FINGERPRINT, {"p": str(path.resolve())}) == [(None,)]  # opened again next run
    later(monkeypatch, 600)
    settled = lab.ingest()
    if log.unended:
        assert values(lab, log) == [(1, 2.0), (2, 1.5), (3, 0.5)] and warnings_of(settled) == []
    else:
        assert values(lab, log) == [(1, 2.0), (2, 1.5)] and warnings_of(settled) == [cut_short(3, log.line(3, 0.5))]
    opened = opened_under(lab.root.resolve(), monkeypatch)
    again = lab.ingest()
    assert opened == [] and again.ingested == 0


def test_a_log_recorded_within_seconds_of_a_change_is_opened_once_more_then_never(
    lab: Lab, log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log read within ledger.FRESH_SECONDS of its last change is recorded without its
    fingerprint (a writer may still be at it). The next run finds it read to its end, holding the
    bytes it was read to: it gets its fingerprint then, and is not opened again every run."""
    path = write(lab.root / log.path, log.head + log.line(1, 2.0) + "\n", 600)
    real, inode = ledger.stat_of, path.stat().st_ino
    with monkeypatch.context() as m:  # the log (not an MLflow run's meta.yaml) found fresh
        m.setattr(ledger, "stat_of", lambda st: replace(real(st), fresh=st.st_ino == inode))
        lab.ingest()
    assert lab.own_query(FINGERPRINT, {"p": str(path.resolve())}) == [(None,)]
    opened = opened_under(lab.root.resolve(), monkeypatch)
    lab.ingest()
    assert set(opened) == {str(path.resolve())}
    assert lab.own_query(FINGERPRINT, {"p": str(path.resolve())})[0][0] is not None
    opened.clear()
    again = lab.ingest()
    assert opened == [] and again.ingested == 0 and values(lab, log) == [(1, 2.0)]


@DUCKDB_ONLY_INGEST  # DuckDB's ingest's shortcut (heartbeat): `ingest --db` always reads
def test_the_no_op_shortcut_leaves_a_waiting_last_line_to_the_full_road(lab: Lab) -> None:
    """The shortcut sees files' sizes and times only: a run that left a last line waiting keeps
    it off (the heartbeat holds no state), so the runs after read the line once it settles."""
    log = LOGS["llamafactory"]
    path = write(lab.root / log.path, log.line(1, 2.0) + "\n" + log.line(2, 1.5), 60)
    lab.ingest()
    assert quick.nothing_to_do(lab.db, [lab.root]) is None
    aged(path, 600)
    lab.ingest()
    assert values(lab, log) == [(1, 2.0), (2, 1.5)]
    assert quick.nothing_to_do(lab.db, [lab.root]) is not None


# --- 3. LLaMA-Factory: a settled last line counts in the log's status ------------------------


def test_a_settled_last_line_counts_in_a_llamafactory_logs_status_when_lines_follow(lab: Lab) -> None:
    """The status is the whole log's: a read from an offset takes the lines before it into
    account, the one read as final (settled) among them, as its own line."""
    log = LOGS["llamafactory"]
    path = write(lab.root / log.path, log.line(1, 2.0) + "\n" + log.line(3, 1.5), 600)
    lab.ingest()
    job = "SELECT status, current_step FROM jobs WHERE job_id = 'lf'"
    assert lab.query(job) == [("completed", 3)]
    # a line of a lower step written after it (a second rank's, late), on a line of its own
    append(path, json.dumps({"current_steps": 2, "total_steps": 3, "eval_loss": 0.7}) + "\n", 60)
    summary = lab.ingest()
    assert warnings_of(summary) == [] and lab.query(job) == [("completed", 3)]
    assert values(lab, log) == [(1, 2.0), (3, 1.5)]


@pytest.mark.parametrize("whole", [False, True], ids=["piece", "file"])
def test_every_road_of_the_spool_bounds_an_epoch_as_rl_epoch(tmp_path: Path, whole: bool) -> None:
    """An epoch within the fast roads' range is theirs; the careful road has the others, and
    refuses those rl_epoch refuses (below year 1, 1e11 and above) with the line's number."""
    epochs = ["1735725600", "-62135596800", "-62135596801", "99999999999", "1e11", "1e12"]
    data = b"".join(
        f'{{"ts": {ts}, "job_id": "x", "gpu_index": {n}, "utilization_percent": 1}}\n'.encode()
        for n, ts in enumerate(epochs)
    )
    path = tmp_path / "s.jsonl"
    path.write_bytes(data)
    con = duckdb.connect()
    staged = gpu_samples.stage(con, [Piece(0, 1, data, path if whole else None)])
    rows = con.execute("SELECT gpu_index, ts FROM batch_gpu_samples ORDER BY seq").fetchall()
    assert rows == [
        (0, datetime(2025, 1, 1, 10)),
        (1, datetime(1, 1, 1)),
        (3, datetime(5138, 11, 16, 9, 46, 39)),
    ]
    assert [s.warnings for s in staged] == [
        [
            "line 3: ts '-62135596801' is not a timestamp, skipped",
            "line 5: ts '100000000000.0' is not a timestamp, skipped",
            "line 6: ts '1000000000000.0' is not a timestamp, skipped",
        ]
    ]
