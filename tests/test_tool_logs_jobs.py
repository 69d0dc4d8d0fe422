"""What a trainer's own log makes of its job, on the real files of ``shared/realdata``: the times of
a resumed LLaMA-Factory log, a tool-log job's current_step, the ingest summary's counts.

Every expected figure is read from the raw file here (``json``, the file's lines) or worked out by
hand in the comments, never taken from the code under test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import REALDATA, Engine, Lab

TOOL_LOGS2 = REALDATA / "tool_logs2"
TWO_GPU = TOOL_LOGS2 / "llamafactory" / "two-gpu-duplicated-lines" / "trainer_log.jsonl"
QWEN = TOOL_LOGS2 / "llamafactory" / "qwen25-7b-eval-lines" / "trainer_log.jsonl"
WRITTEN = 1_790_000_000  # the copies' modification time: 2026-09-21 14:13:20 UTC


@pytest.fixture
def lab(tmp_path: Path, ingest_engine: Engine) -> Lab:
    return Lab(tmp_path, ingest_engine)


def utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)


def api_time(seconds: float) -> str:
    """A time as the analytics answer it (ISO 8601, UTC)."""
    return utc(seconds).isoformat() + "Z"


def seconds_of(text: str) -> int:
    """``"22:08:06"`` / ``"1 day, 0:08:23"`` in seconds, read here by hand."""
    days = 0
    if "day" in text:
        head, text = text.split(", ")
        days = int(head.split()[0])
    h, m, s = (int(x) for x in text.split(":"))
    return ((days * 24 + h) * 60 + m) * 60 + s


def copy_log(lab: Lab, source: Path, folder: str) -> Path:
    log = lab.root / folder / "trainer_log.jsonl"
    log.parent.mkdir(parents=True)
    shutil.copyfile(source, log)
    os.utime(log, (WRITTEN, WRITTEN))
    return log


# --- G1: a LLaMA-Factory log holding a resumed run ---------------------------------------------------


def test_a_resumed_llamafactory_log_is_never_timed_after_its_last_write(lab: Lab) -> None:
    """The real two-GPU log was resumed: line 1047 (step 5010, elapsed 0:02:38) follows line 1046
    (step 5220, elapsed 22:08:06). The resumed run's 314 lines are timed from the file's last write
    (its last line, 6:36:26); the first run's lines before line 1047 ran at an unknown time before
    it: no time, so the job's start and total are unknown (null with warnings), never a time after
    the file was written nor training_seconds above total_seconds."""
    log = copy_log(lab, TWO_GPU, "real")
    lines = [json.loads(t) for t in TWO_GPU.read_text().splitlines()]
    assert (lines[1045]["current_steps"], lines[1045]["elapsed_time"]) == (5220, "22:08:06")
    assert (lines[1046]["current_steps"], lines[1046]["elapsed_time"]) == (5010, "0:02:38")
    resumed = lines[1046:]
    highest = max(seconds_of(e["elapsed_time"]) for e in resumed)
    assert highest == seconds_of("6:36:26") == 23786  # the last line's
    start = WRITTEN - highest  # the resumed run's start: 2026-09-21 07:36:54
    assert lab.ingest().failed == 0
    j = {"j": "real"}
    # no point after the file's last write; the last line (step 6565) at that very time
    assert lab.query("SELECT max(ts) FROM metric_points WHERE job_id = $j", j) == [(utc(WRITTEN),)]
    at = "SELECT ts FROM metric_points WHERE job_id = $j AND name = 'loss' AND step = $s"
    assert lab.query(at, {**j, "s": 5010}) == [(utc(start + 158),)]  # 0:02:38 into the resumed run
    assert lab.query(at, {**j, "s": 6560}) == [(utc(start + seconds_of("6:35:21")),)]
    # the first run's steps that the resumed run did not log again: values kept, no time
    assert lab.query(at, {**j, "s": 5000}) == [(None,)]
    assert lab.query(at, {**j, "s": 10}) == [(None,)]
    timed = lab.query("SELECT count(DISTINCT step) FROM metric_points WHERE job_id = $j AND ts IS NOT NULL", j)
    assert timed == [(len({e["current_steps"] for e in resumed}),)]
    # each step's time (the later line's) only grows with the step in the resumed run, so the
    # seconds of its rows add up to its span: 6:36:26 - 0:02:38 (step 5010's row has no seconds:
    # the row before it, step 5000, has no time)
    by_step: dict[int, int] = {}
    for e in resumed:
        by_step[e["current_steps"]] = seconds_of(e["elapsed_time"])
    times = [by_step[s] for s in sorted(by_step)]
    assert times == sorted(times)
    a = lab.analytics("real")
    assert a is not None
    d = a["duration"]
    assert d["training_seconds"] == 23786 - 158 == 23628
    assert d["end_time"] == api_time(WRITTEN)
    assert (d["start_time"], d["total_seconds"], d["overhead_seconds"]) == (None, None, None)
    assert any(w.startswith("start unknown") for w in a["warnings"])
    assert any(w.startswith("training time partly unknown") for w in a["warnings"])
    (warnings,) = lab.query("SELECT warnings FROM ingest_files WHERE path = $p", {"p": lab.ledger_path(log)})[0]
    assert "line 1047: elapsed_time 0:02:38 falls back from 22:08:06 (a resumed run)" in str(warnings)


def test_two_writers_lines_never_make_training_exceed_the_total(lab: Lab) -> None:
    """The real two-GPU log's first 1046 lines: one run (no resume), two writers' lines interleaved,
    so line order is not step order near its end: step 5230 at 22:03:53 (line 1043), then step 5220
    again at 22:08:06 (line 1046, the last). A step finished before any later step did, so step
    5220 is timed no later than 22:03:53; the job was last written at its last line (updated_at,
    end). Every step's time then grows with the step: training = the rows' span <= total =
    22:08:06 (79686 s), where the lines' own times gave training 79700 > total 79686."""
    lines = TWO_GPU.read_text().splitlines(keepends=True)[:1046]
    log = lab.root / "j" / "trainer_log.jsonl"
    log.parent.mkdir(parents=True)
    log.write_text("".join(lines))
    os.utime(log, (WRITTEN, WRITTEN))
    docs = [json.loads(t) for t in lines]
    assert [(d["current_steps"], d["elapsed_time"]) for d in docs[-4:]] == [
        (5230, "22:03:53"), (5210, "22:05:48"), (5240, "22:06:20"), (5220, "22:08:06")
    ]  # fmt: skip
    start = WRITTEN - 79686
    # by hand: each step at the lowest time of its own later line and of every line of a higher step
    kept: dict[int, int] = {}
    for d in docs:
        kept[d["current_steps"]] = seconds_of(d["elapsed_time"])  # the later line's time
    capped: dict[int, float] = {}
    lowest = float("inf")
    for step in sorted(kept, reverse=True):
        capped[step] = min(kept[step], lowest)
        lowest = min(lowest, min(seconds_of(d["elapsed_time"]) for d in docs if d["current_steps"] == step))
    assert capped[5220] == seconds_of("22:03:53") and capped[5240] == seconds_of("22:06:20")
    steps = sorted(capped)
    assert [capped[s] for s in steps] == sorted(capped.values())
    lab.ingest()
    at = "SELECT step, ts FROM metric_points WHERE job_id = 'j' AND name = 'epoch' ORDER BY step"
    assert lab.query(at) == [(step, utc(start + capped[step])) for step in steps]
    a = lab.analytics("j")
    assert a is not None
    d = a["duration"]
    assert (d["start_time"], d["end_time"], d["total_seconds"]) == (api_time(start), api_time(WRITTEN), 79686)
    # the first row (step 10) has no seconds: the rows' span from it to the last step
    assert d["training_seconds"] == capped[steps[-1]] - capped[steps[0]] == 79580 - 133
    assert d["training_seconds"] <= d["total_seconds"]
    assert lab.query("SELECT updated_at FROM jobs WHERE job_id = 'j'") == [(utc(WRITTEN),)]


def test_a_llamafactory_log_of_one_run_starts_at_its_last_write_less_its_elapsed_time(lab: Lab) -> None:
    """The real Qwen log is one run (elapsed_time only grows, 0:00:32 to 6:48:06, completed at step
    6750): its start is the last write less 6:48:06, its end the last line, total = 6:48:06."""
    copy_log(lab, QWEN, "qwen")
    lines = [json.loads(t) for t in QWEN.read_text().splitlines()]
    elapsed = [seconds_of(e["elapsed_time"]) for e in lines]
    assert elapsed == sorted(elapsed) and elapsed[-1] == 6 * 3600 + 48 * 60 + 6 == 24486
    lab.ingest()
    a = lab.analytics("qwen")
    assert a is not None and a["status"] == "completed"
    d = a["duration"]
    assert (d["start_time"], d["end_time"]) == (api_time(WRITTEN - 24486), api_time(WRITTEN))
    assert d["total_seconds"] == 24486
    assert d["training_seconds"] <= d["total_seconds"]
    first = "SELECT ts FROM metric_points WHERE job_id = 'qwen' AND name = 'loss' ORDER BY step LIMIT 1"
    assert lab.query(first) == [(utc(WRITTEN - 24486 + elapsed[0]),)]


# --- G4: a tool-log job's current_step is its step rows' scale ----------------------------------------


def logged_steps(folder: Path) -> dict[str, list[int]]:
    """Each scalar tag's steps, as TensorBoard's own EventAccumulator reads the folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    steps = {tag: [e.step for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}
    steps.update({tag: [e.step for e in ea.Tensors(tag)] for tag in ea.Tags()["tensors"]})
    return steps


def test_current_step_of_a_tool_log_job_is_the_highest_step_of_its_rows(lab: Lab) -> None:
    """Keras's validation run logs epoch_loss at epochs 0..78 (its step rows) and
    evaluation_loss_vs_iterations at iterations 320..25280 (a metric of its own, not a row: one
    step scale per job). Its current_step and total_iterations are 78, like its train sibling's,
    not 25280. The Object Detection eval run has no step rows (none of its tags is a row metric):
    its current_step is the highest step it logged, 20000."""
    fit = TOOL_LOGS2 / "tfevents" / "keras-logs-fit" / "logs" / "fit" / "20220104-193303"
    objdet = TOOL_LOGS2 / "tfevents" / "tf2-objdet-eval"
    validation = logged_steps(fit / "validation")
    assert validation["epoch_loss"] == list(range(79))
    assert max(validation["evaluation_loss_vs_iterations"]) == 25280
    assert max(logged_steps(fit / "train")["epoch_loss"]) == 78
    eval_steps = {s for steps in logged_steps(objdet / "my_ssd_mobnet" / "eval").values() for s in steps}
    assert max(eval_steps) == 20000
    lab.ingest(TOOL_LOGS2 / "tfevents" / "keras-logs-fit", objdet)
    rows = lab.query(
        "SELECT j.job_id, j.current_step, a.total_iterations, a.step_rows FROM jobs j"
        " JOIN job_analytics a ON a.job_id = j.job_id WHERE j.job_id LIKE '%193303%' OR j.job_id LIKE '%eval'"
        " ORDER BY j.job_id"
    )
    assert rows == [
        ("logs/fit/20220104-193303/train", 78, 78, 79),
        ("logs/fit/20220104-193303/validation", 78, 78, 79),
        ("my_ssd_mobnet/eval", 20000, 20000, 0),
    ]
    # the iterations metric is kept, at its own steps
    last = "SELECT max(step) FROM metric_points WHERE job_id = $j AND name = 'evaluation_loss_vs_iterations'"
    assert lab.query(last, {"j": "logs/fit/20220104-193303/validation"}) == [(25280,)]


# --- G8: the ingest summary counts a tool log's points as points, not step rows ---------------------

MISTRAL = REALDATA / "tool_logs" / "llamafactory-mistral-trainer_log.jsonl"


def test_the_ingest_summary_counts_a_tool_logs_points_not_as_step_rows(lab: Lab, tmp_path: Path) -> None:
    """The real Mistral LLaMA-Factory log: 866 distinct steps, and a numeric value per metric on each
    line (but its throughput and total_tokens: 0 on every line, tokens not counted). The summary
    reads its points as ``points`` (every value on every line) and no step rows; the warehouse
    keeps one per (metric, step) and one step row per step."""
    lines = [json.loads(t) for t in MISTRAL.read_text().splitlines()]
    skip = {"current_steps", "total_steps", "elapsed_time", "remaining_time", "throughput", "total_tokens"}
    values = [(k, e["current_steps"]) for e in lines for k in e if k not in skip]
    steps = {e["current_steps"] for e in lines}
    assert {e["total_tokens"] for e in lines} == {0}
    assert (len(values), len(set(values)), len(steps)) == (3466, 3464, 866)
    copy_log(lab, MISTRAL, "mistral-lf")
    summary = lab.ingest()
    assert (summary.rows, summary.points, summary.warnings) == (0, 3466, 0)
    assert summary.as_dict()["points"] == 3466
    assert lab.query("SELECT count(*) FROM metric_points WHERE job_id = 'mistral-lf'") == [(3464,)]
    assert lab.query("SELECT step_rows FROM job_analytics WHERE job_id = 'mistral-lf'") == [(866,)]
    again = lab.ingest()
    assert (again.rows, again.points) == (0, 0)


def test_the_text_summary_names_points_and_step_rows(tmp_path: Path) -> None:
    """``runlytics ingest`` (a real process) of the Mistral log and of a progress.json job."""
    root = tmp_path / "jobs"
    (root / "mistral-lf").mkdir(parents=True)
    shutil.copyfile(MISTRAL, root / "mistral-lf" / "trainer_log.jsonl")
    (root / "p").mkdir()
    (root / "p" / "progress.json").write_text(
        '{"job_id": "p", "status": "running", "history": [{"step": 1}, {"step": 2}]}'
    )
    out = subprocess.run(
        [sys.executable, "-m", "runlytics", "ingest", str(root), "--db", str(tmp_path / "w.duckdb")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "; 2 step rows, 3466 metric points, 0 GPU samples, 0 warnings, " in out.stdout
    status = subprocess.run(
        [sys.executable, "-m", "runlytics", "status", "--db", str(tmp_path / "w.duckdb")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "2 step rows, 3466 metric points, 0 GPU samples" in status.stdout, status.stdout
