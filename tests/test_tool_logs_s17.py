"""Session 17's audit of LLaMA-Factory logs (docs/ingest.md, "LLaMA-Factory `trainer_log.jsonl`"):

1. A LLaMA-Factory output folder holds ``trainer_log.jsonl`` and ``checkpoint-N/trainer_state.json``,
   both logging ``loss``, ``learning_rate``, ``epoch``, ``eval_loss``. A read of the folder's
   trainer states deleted every stored point of the same (job, name, step), the log's timed ones
   included: the log is read on from its offset, so they never came back, and the step rows lost
   their times. A trainer state's point now gives way to a tool log's, whichever is read first.
2. A LLaMA-Factory text value is a number only as ``"{:.2f}".format`` prints one.
3. A read that ends in a line still being written timed its lines (and the job's start) from that
   write's modification time, late: its offset now stays where it began, the next run reads the
   lines again.
4. ``throughput`` and ``total_tokens`` of a line whose ``total_tokens`` is 0 (tokens not counted)
   are no metric points.
5. The review of 1-4: a log that grew between discovery and the read was timed from the file's
   time after the read (a later line's), late for good; a log replaced after a read that kept its
   offset was not told (from offset 0 nothing was compared); the run reading those lines again
   counted their points and said their warnings again.

Whatever the ingests saw, the warehouse equals one ingest of the final files (docs/decisions.md,
G9). Every test that ingests runs on both engines (``ingest_engine``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import REALDATA, Engine, Lab

from runlytics.ingest.formats import llamafactory
from runlytics.ingest.formats.tool_log import ToolLogFormat

JOB = "lf-out"
TOTAL = 40
POINTS = "SELECT name, step, ts, value, source FROM metric_values WHERE job_id = $j ORDER BY name, step, source"
ROWS = """
SELECT step, ts, loss, eval_loss, learning_rate, grad_norm, epoch, source FROM step_facts
WHERE job_id = $j ORDER BY step
"""
ANALYTICS = "SELECT step_rows, timed_rows, total_seconds FROM job_analytics WHERE job_id = $j"
START = "SELECT started_at FROM jobs WHERE job_id = $j"


@pytest.fixture
def lab(tmp_path: Path, ingest_engine: Engine) -> Lab:
    (tmp_path / "lab").mkdir()
    return Lab(tmp_path / "lab", ingest_engine)


def fresh(lab: Lab, tmp_path: Path) -> Lab:
    """A new warehouse (on the lab's engine) of a copy of the lab's files as they are now, times
    kept: one ingest of the final files."""
    (tmp_path / "fresh").mkdir()
    other = Lab(tmp_path / "fresh", lab.engine)
    shutil.rmtree(other.root)
    shutil.copytree(lab.root, other.root)  # copy2: modification times kept
    other.ingest()
    return other


def facts(lab: Lab, job: str = JOB) -> dict[str, list[tuple[Any, ...]]]:
    def norm(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return [tuple("NaN" if isinstance(v, float) and math.isnan(v) else v for v in r) for r in rows]

    return {q: norm(lab.query(q, {"j": job})) for q in (POINTS, ROWS, ANALYTICS, START)}


def hms(seconds: int) -> str:
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)


def at(path: Path, seconds: float) -> None:
    os.utime(path, (seconds, seconds))


def loss(step: int) -> float:
    return round(2.0 - step / 100, 4)


def lr(step: int) -> float:
    return 1e-4 * step / TOTAL


def log_lines(steps: range) -> str:
    """LLaMA-Factory's lines for ``steps`` (10 s a step of 10), an eval line at step 20."""
    out = []
    for s in steps:
        line = {"current_steps": s, "total_steps": TOTAL, "loss": loss(s), "learning_rate": lr(s),
                "epoch": s / TOTAL, "percentage": 100 * s / TOTAL, "elapsed_time": hms(s),
                "remaining_time": hms(TOTAL - s)}  # fmt: skip
        out.append(json.dumps(line))
        if s == 20:
            evaluation = {"current_steps": 20, "total_steps": TOTAL, "eval_loss": 1.9, "epoch": 0.5,
                          "percentage": 50.0, "elapsed_time": hms(20), "remaining_time": hms(20)}  # fmt: skip
            out.append(json.dumps(evaluation))
    return "".join(line + "\n" for line in out)


def trainer_state(global_step: int) -> str:
    """The trainer state a checkpoint at ``global_step`` holds: the same values as the log, and a
    grad_norm the log does not have."""
    history: list[dict[str, Any]] = []
    for s in range(10, global_step + 1, 10):
        history.append({"step": s, "loss": loss(s), "learning_rate": lr(s), "epoch": s / TOTAL, "grad_norm": 0.5})
        if s == 20:
            history.append({"step": 20, "eval_loss": 1.9, "epoch": 0.5})
    return json.dumps({"global_step": global_step, "max_steps": TOTAL, "save_steps": 20, "log_history": history})


def checkpoint(folder: Path, step: int, when: float) -> Path:
    path = folder / f"checkpoint-{step}" / "trainer_state.json"
    path.parent.mkdir(parents=True)
    path.write_text(trainer_state(step))
    at(path, when)
    return path


def append(path: Path, text: str, when: float) -> None:
    with path.open("a") as f:
        f.write(text)
    at(path, when)


# --- 1. a trainer state read again keeps the log's points ----------------------------------------


def test_a_trainer_state_read_again_keeps_the_logs_timed_points(lab: Lab, tmp_path: Path) -> None:
    """Repro A of the audit: the folder ingested, one of its trainer states touched, ingested
    again. The log's points (and the step rows' times) were deleted and replaced by the trainer
    state's untimed ones; now nothing changes, and both equal one ingest of the files."""
    start = int(time.time()) - 3600
    folder = lab.root / JOB
    folder.mkdir()
    log = folder / "trainer_log.jsonl"
    log.write_text(log_lines(range(10, TOTAL + 1, 10)))
    at(log, start + TOTAL)
    checkpoint(folder, 20, start + 20)
    state = checkpoint(folder, 40, start + 40)
    lab.ingest()
    before = facts(lab)
    points = {(n, s): (ts, src) for n, s, ts, _, src in before[POINTS]}
    # the log's points stand where both log a value (timed); the trainer state's grad_norm alone is its own
    assert points[("loss", 30)] == (utc(start + 30), "llamafactory")
    assert points[("eval_loss", 20)] == (utc(start + 20), "llamafactory")
    assert points[("grad_norm", 30)] == (None, "trainer_state")
    assert before[ANALYTICS] == [(4, 3, 40.0)]
    at(state, start + 600)  # touched (or a new checkpoint): read again
    assert lab.ingest().ingested == 1
    assert facts(lab) == before
    assert facts(fresh(lab, tmp_path)) == before


def test_ingests_after_each_checkpoint_equal_one_ingest(lab: Lab, tmp_path: Path) -> None:
    """Repro B of the audit: ingested after each checkpoint as cron sees it (the log up to it, then
    its trainer state), against one ingest of the final folder: the second checkpoint's read
    deleted the points the first ingest had read from the log (15 of 865 timed rows left on the
    real run)."""
    start = int(time.time()) - 3600
    folder = lab.root / JOB
    folder.mkdir()
    log = folder / "trainer_log.jsonl"
    log.write_text(log_lines(range(10, 21, 10)))
    at(log, start + 20)
    checkpoint(folder, 20, start + 21)
    lab.ingest()
    append(log, log_lines(range(30, TOTAL + 1, 10)), start + 40)
    checkpoint(folder, 40, start + 41)
    lab.ingest()
    ended = facts(lab)
    assert ended[ANALYTICS] == [(4, 3, 40.0)]
    assert [ts for _, ts, *_ in ended[ROWS]] == [utc(start + s) for s in (10, 20, 30, 40)]
    assert ended == facts(fresh(lab, tmp_path))
    assert lab.ingest().ingested == 0
    assert facts(lab) == ended


def test_the_log_read_before_its_trainer_state_keeps_its_points(lab: Lab, tmp_path: Path) -> None:
    """The log's lines of a step ingested before the checkpoint of that step is saved: the trainer
    state's later read adds only what no log holds."""
    start = int(time.time()) - 3600
    folder = lab.root / JOB
    folder.mkdir()
    log = folder / "trainer_log.jsonl"
    log.write_text(log_lines(range(10, TOTAL + 1, 10)))
    at(log, start + 40)
    checkpoint(folder, 20, start + 41)
    lab.ingest()
    checkpoint(folder, 40, start + 42)
    lab.ingest()
    assert facts(lab) == facts(fresh(lab, tmp_path))
    assert lab.query("SELECT count(*) FROM metric_values WHERE job_id = $j AND ts IS NULL AND name <> 'grad_norm'",
                     {"j": JOB}) == [(0,)]  # fmt: skip


def test_the_real_run_keeps_its_times_when_a_trainer_state_is_touched(lab: Lab) -> None:
    """The real mistral-translator folder with its LLaMA-Factory log: touching trainer_state.json
    took its 865 timed step rows to 0 and total_seconds from 20386 to NULL."""
    folder = lab.root / "mistral-translator"
    shutil.copytree(REALDATA / "hf_trainer_state" / "mistral-translator", folder)
    log = folder / "trainer_log.jsonl"
    shutil.copy(REALDATA / "tool_logs" / "llamafactory-mistral-trainer_log.jsonl", log)
    at(log, time.time() - 3600)
    lab.ingest()
    before = facts(lab, "mistral-translator")
    assert before[ANALYTICS] == [(866, 865, 20386.0)]
    at(folder / "trainer_state.json", time.time() - 60)
    assert lab.ingest().ingested == 1
    assert facts(lab, "mistral-translator") == before


# --- 2. text values: what "{:.2f}".format prints, nothing else ---------------------------------

KEPT_TEXT = {"0.00": 0.0, "12.50": 12.5, "-3.5": -3.5, "12": 12.0, "inf": math.inf, "-inf": -math.inf}
DROPPED_TEXT = (" nan ", "NaN", "NAN", "Infinity", "infinity", "+inf", "1e3", "1.5E-2", "+1", "1_000", " 1.5",
                "1.5 ", ".5", "5.", "0x10", "\u0661\u0662", "")  # fmt: skip


def test_text_values_are_numbers_only_as_the_format_prints_them() -> None:
    lines = [{"current_steps": i, "throughput": text} for i, text in enumerate([*KEPT_TEXT, "nan", *DROPPED_TEXT])]
    chunk = llamafactory.parse("".join(json.dumps(line) + "\n" for line in lines).encode())
    got = {lines[p.step]["throughput"]: p.value for p in chunk.points}
    assert math.isnan(got.pop("nan"))
    assert got == KEPT_TEXT
    dropped = [w for w in chunk.warnings if "is not a number, dropped" in w]
    assert len(dropped) == len(DROPPED_TEXT)
    assert f"line {len(KEPT_TEXT) + 2}: throughput ' nan ' is not a number, dropped" in chunk.warnings


def test_text_values_ingested(lab: Lab) -> None:
    """The audit's lines: " nan ", "Infinity", "1e3" and "1_000" are no numbers (each dropped with a
    warning naming its line); the JSON numbers beside them are kept."""
    log = lab.root / "lf" / "trainer_log.jsonl"
    log.parent.mkdir()
    lines = [
        {"current_steps": 10, "total_steps": 100, "loss": 2.0, "throughput": " nan ", "elapsed_time": "0:00:10"},
        {"current_steps": 20, "total_steps": 100, "loss": "Infinity", "throughput": "1e3", "elapsed_time": "0:00:20"},
        {"current_steps": 30, "total_steps": 100, "loss": 1.5, "throughput": "12.50", "elapsed_time": "0:00:30"},
    ]
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    at(log, time.time() - 3600)
    summary = lab.ingest()
    values = "SELECT name, step, value FROM metric_values WHERE job_id = 'lf' ORDER BY name, step"
    assert lab.query(values) == [("loss", 10, 2.0), ("loss", 30, 1.5), ("throughput", 30, 12.5)]
    assert [m for _, m in summary.listed_warnings] == [
        "line 1: throughput ' nan ' is not a number, dropped",
        "line 2: loss 'Infinity' is not a number, dropped",
        "line 2: throughput '1e3' is not a number, dropped",
    ]


# --- 3. a read that ends in a line still being written ------------------------------------------


def lf_line(step: int, total: int = 100) -> str:
    return json.dumps({"current_steps": step, "total_steps": total, "loss": loss(step), "elapsed_time": hms(step),
                       "remaining_time": "0:00:00", "throughput": "12.50"}) + "\n"  # fmt: skip


@pytest.mark.parametrize("beside_a_state", [False, True], ids=["run-folder", "trainer-state-folder"])
def test_a_read_ending_in_a_cut_line_is_read_again(lab: Lab, tmp_path: Path, beside_a_state: bool) -> None:
    """The audit's repro: lines at 10, 20, 30 s and the first bytes of the line at 40 s, written at
    40 s (the modification time), read; then the rest. The read placed the start at 40 - 30 s, 10 s
    late (total_seconds 50 where one read of the final file says 60), and timed its points from it;
    no later read corrected them. Now the next read reads those lines again: as one read."""
    start = int(time.time()) - 200  # the run's real start; the log is not settled (written < 5 min ago)
    folder = lab.root / "sft"
    folder.mkdir()
    if beside_a_state:
        checkpoint(folder, 10, start + 11)
    log = folder / "trainer_log.jsonl"
    full = lf_line(40)
    log.write_text(lf_line(10) + lf_line(20) + lf_line(30) + full[:25])
    at(log, start + 40)
    lab.ingest()
    # seen at once, but read again: the ledger's offset is still the read's start
    assert len(lab.query("SELECT * FROM metric_values WHERE job_id = 'sft' AND name = 'loss'")) == 3
    offset = "SELECT read_offset FROM ingest_files WHERE kind = 'llamafactory'"
    assert lab.own_query(offset) == [(0,)]
    append(log, full[25:] + lf_line(50), start + 50)
    lab.ingest()
    # a read from an offset ending in a cut line: the times of its lines are placed again too
    append(log, lf_line(60) + lf_line(70)[:10], start + 70)
    lab.ingest()
    late = "SELECT ts FROM metric_values WHERE job_id = 'sft' AND name = 'loss' AND step = 60"
    assert lab.query(late) == [(utc(start + 70),)]  # 10 s late, until the next read
    append(log, lf_line(70)[10:] + lf_line(80), start + 80)
    lab.ingest()
    ended = facts(lab, "sft")
    assert ended[START] == [(utc(start),)]
    assert [(n, s, ts) for n, s, ts, _, _ in ended[POINTS] if n == "loss"] == [
        ("loss", s, utc(start + s)) for s in range(10, 81, 10)
    ]
    assert ended == facts(fresh(lab, tmp_path), "sft")
    assert lab.ingest().ingested == 0


# --- 4. tokens not counted: no throughput ----------------------------------------------------------

TOKENS = "SELECT count(*) FROM metric_values WHERE job_id = $j AND name IN ('throughput', 'total_tokens')"


def test_the_real_log_counts_no_tokens_so_has_no_throughput(lab: Lab) -> None:
    """Every line of the real log says "throughput": "0.00", "total_tokens": 0 (LLaMA-Factory without
    token counting): "not counted", charted as a flat 0 before. No such points now, no warning."""
    log = lab.root / "mistral" / "trainer_log.jsonl"
    log.parent.mkdir()
    shutil.copy(REALDATA / "tool_logs" / "llamafactory-mistral-trainer_log.jsonl", log)
    at(log, time.time() - 3600)
    summary = lab.ingest()
    assert lab.query(TOKENS, {"j": "mistral"}) == [(0,)]
    assert lab.query("SELECT count(*) FROM metric_values WHERE job_id = 'mistral' AND name = 'loss'") == [(866,)]
    assert summary.listed_warnings == []


def test_counted_tokens_keep_their_throughput(lab: Lab) -> None:
    log = lab.root / "lf" / "trainer_log.jsonl"
    log.parent.mkdir()
    lines = [
        {"current_steps": 10, "loss": 2.0, "throughput": "1523.41", "total_tokens": 40960},  # counted: kept
        {"current_steps": 20, "loss": 1.9, "throughput": "0.00", "total_tokens": 0},  # not counted: dropped
        {"current_steps": 30, "loss": 1.8, "throughput": "980.00"},  # a throughput alone: kept
        {"current_steps": 40, "loss": 1.7, "throughput": "0.00", "total_tokens": 0.0},
    ]
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    at(log, time.time() - 3600)
    lab.ingest()
    values = "SELECT name, step, value FROM metric_values WHERE job_id = 'lf' AND name <> 'loss' ORDER BY name, step"
    assert lab.query(values) == [("throughput", 10, 1523.41), ("throughput", 30, 980.0), ("total_tokens", 10, 40960.0)]


# --- 5. the review of 1-4 ------------------------------------------------------------------------


def test_a_log_that_grows_between_discovery_and_the_read_is_timed_from_what_was_found(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The review's repro (grow_e2e.py): the run finds three lines (written at 30 s), the trainer
    appends the line at 40 s before the run reads them. The read takes the bytes found, but timed
    them from the file's modification time after it, the new line's: steps at +20/+30/+40 s and a
    start 10 s late, never corrected (the data ends in a newline, the offset moves on). They are
    timed from the modification time of the stat whose size was read."""
    start = int(time.time()) - 200
    log = lab.root / "sft" / "trainer_log.jsonl"
    log.parent.mkdir()
    log.write_text(lf_line(10) + lf_line(20) + lf_line(30))
    at(log, start + 30)
    read_file = ToolLogFormat._read_file
    grown: list[Path] = []

    def racing(self: ToolLogFormat, ctx: Any, c: Any, *args: Any) -> Any:
        if c.path == log and not grown:  # found (size and time taken), not read yet
            grown.append(log)
            append(log, lf_line(40), start + 40)
        return read_file(self, ctx, c, *args)

    monkeypatch.setattr(ToolLogFormat, "_read_file", racing)
    lab.ingest()
    monkeypatch.undo()
    assert grown == [log]
    timed = "SELECT step, ts FROM metric_values WHERE job_id = 'sft' AND name = 'loss' ORDER BY step"
    assert lab.query(timed) == [(s, utc(start + s)) for s in (10, 20, 30)]
    assert lab.query(START, {"j": "sft"}) == [(utc(start),)]
    lab.ingest()
    ended = facts(lab, "sft")
    timed_loss = [(s, ts) for n, s, ts, _, _ in ended[POINTS] if n == "loss"]
    assert timed_loss == [(s, utc(start + s)) for s in range(10, 41, 10)]
    assert ended[START] == [(utc(start),)]
    assert ended == facts(fresh(lab, tmp_path), "sft")


REPLACED = "(the file was replaced): read again from its start, the points stored from it kept"


@pytest.mark.parametrize("first_read_at", ["the-start", "an-offset"])
def test_a_log_replaced_after_a_read_ending_in_a_cut_line_is_told(lab: Lab, first_read_at: str) -> None:
    """A read that ends in a cut line keeps its offset where it began: from the file's start (0), the
    replaced-file check (the digest of the bytes before the offset) had nothing to compare, and from
    an offset it compared only the bytes before it. A log overwritten before the next run (a new
    training in the same output folder) was read whole without the warning, as if it had grown, its
    old points kept beside the new file's. Now the digest is of the bytes up to the end of the lines
    read: the replaced file is told, as any replaced log is (its points kept, docs/ingest.md)."""
    start = int(time.time()) - 200
    log = lab.root / "sft" / "trainer_log.jsonl"
    log.parent.mkdir()
    if first_read_at == "an-offset":
        log.write_text(lf_line(10) + lf_line(20))
        at(log, start + 20)
        lab.ingest()
        append(log, lf_line(30) + lf_line(40) + lf_line(50)[:25], start + 50)
    else:
        log.write_text(lf_line(10) + lf_line(20) + lf_line(30) + lf_line(40) + lf_line(50)[:25])
        at(log, start + 50)
    assert lab.ingest().listed_warnings == []
    # the same first lines (a rerun with the same seed), another run from step 30 on
    log.write_text(lf_line(10) + lf_line(20) + lf_line(30, total=60) + lf_line(35, total=60))
    at(log, start + 80)
    summary = lab.ingest()
    assert [m for _, m in summary.listed_warnings] == [f"the lines read before changed {REPLACED}"]
    steps = "SELECT step FROM metric_values WHERE job_id = 'sft' AND name = 'loss' ORDER BY step"
    assert lab.query(steps) == [(s,) for s in (10, 20, 30, 35, 40)]  # 40: the old file's, kept
    assert lab.query("SELECT total_steps FROM jobs WHERE job_id = 'sft'") == [(60,)]


def test_a_log_read_again_after_a_cut_line_counts_and_warns_once(lab: Lab) -> None:
    """The lines a read ending in a cut line gave are read again by the next run (their times placed
    again): that run counted their points again (``points``) and said their warnings again. Now a
    run counts and warns of the lines no run read before, as reads that move the offset do."""
    start = int(time.time()) - 200
    log = lab.root / "sft" / "trainer_log.jsonl"
    log.parent.mkdir()
    odd = json.dumps({"current_steps": 20, "loss": loss(20), "throughput": " nan ", "elapsed_time": hms(20)}) + "\n"
    full = lf_line(30)
    log.write_text(lf_line(10) + odd + full[:25])
    at(log, start + 30)
    first = lab.ingest()
    said = "line 2: throughput ' nan ' is not a number, dropped"
    assert (first.points, [m for _, m in first.listed_warnings]) == (3, [said])
    append(log, full[25:] + lf_line(40), start + 40)
    second = lab.ingest()
    assert (second.points, second.listed_warnings, second.warnings) == (4, [], 0)
    assert lab.query("SELECT count(*) FROM metric_values WHERE job_id = 'sft'") == [(first.points + second.points,)]
