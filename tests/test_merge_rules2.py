"""Merge rules of one progress.json (ingest/merge.py), on both engines.

- `latest` against its own history: the history's winner of the step is what its entries keep
  one at a time (the last untimed copy, then the later timestamps after it), not every copy's; a
  `latest` strictly later than that winner replaces it, as one ingest per entry does.
- GPU readings of one entry: one per GPU index (step_gpus is keyed by job, step and index); a
  reading repeating an index is dropped with a warning naming the file's entry, reading and index.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from conftest import Engine, Lab


@pytest.fixture
def lab(tmp_path, ingest_engine: Engine) -> Lab:
    return Lab(tmp_path, ingest_engine)


def at(second: int) -> str:
    return f"2026-11-01T00:00:{second:02d}Z"


def step(loss: float, second: int | None = None, **more: Any) -> dict[str, Any]:
    e: dict[str, Any] = {"step": 10, "loss": loss, **more}
    if second is not None:
        e["timestamp"] = at(second)
    return e


def stored(lab: Lab, job: str) -> list[tuple[Any, ...]]:
    return lab.query(f"SELECT step, ts, loss FROM steps WHERE job_id = '{job}'")


def ts(second: int) -> datetime:
    return datetime(2026, 11, 1, 0, 0, second)


@pytest.mark.parametrize(
    ("history", "latest", "kept"),
    [
        # the history's winner is its timed copy after the untimed one (10 s): latest at 13 s is later
        pytest.param([step(3.0), step(2.0, 10)], step(1.0, 13), (ts(13), 1.0), id="untimed-then-timed"),
        # 20 s, untimed, 15 s: the winner is the 15 s copy, and latest at 17 s is later
        pytest.param([step(3.0, 20), step(2.5), step(2.0, 15)], step(1.0, 17), (ts(17), 1.0), id="timed-untimed-timed"),
        # no untimed copy: latest later than the history's entry replaces it, readings included
        pytest.param([step(2.0, 10, gpus=[{"utilization_percent": 50.0}])], step(1.0, 13), (ts(13), 1.0), id="timed"),
        # latest not later than the winner (equal): the history's entry stays
        pytest.param([step(3.0), step(2.0, 10)], step(1.0, 10), (ts(10), 2.0), id="equal"),
        # the history's last copy is untimed: it stays, latest fills its timestamp
        pytest.param([step(3.0, 20), step(2.0)], step(1.0, 30), (ts(30), 2.0), id="last-copy-untimed"),
    ],
)
def test_latest_against_the_history_winner_of_its_step(
    lab: Lab, history: list[dict[str, Any]], latest: dict[str, Any], kept: tuple[Any, ...]
) -> None:
    lab.write_job("one", {"status": "running", "history": history, "latest": latest})
    lab.ingest()
    assert stored(lab, "one") == [(10, *kept)]
    assert lab.query("SELECT count(*) FROM step_gpus") == [(0,)]


def test_one_file_keeps_what_one_ingest_per_entry_keeps(lab: Lab) -> None:
    entries = [step(3.0), step(2.0, 10), step(1.0, 13)]
    lab.write_job("one", {"status": "running", "history": entries[:2], "latest": entries[2]})
    lab.ingest()
    for e in entries:
        lab.write_job("each", {"status": "running", "history": [e]})
        lab.ingest()
    assert stored(lab, "one") == stored(lab, "each") == [(10, ts(13), 1.0)]


def reading(util: float, **more: Any) -> dict[str, Any]:
    return {"utilization_percent": util, "memory_used_mb": util * 10, "temperature_c": 40.0, **more}


def test_a_repeated_gpu_index_keeps_the_first_reading_and_warns(lab: Lab) -> None:
    mig = [reading(90.0, index=0, uuid="MIG-aaa"), reading(10.0, index=0, uuid="MIG-bbb")]
    lab.write_job("mig", {"status": "running", "history": [step(2.0, 5), {**step(1.0, 10), "gpus": mig}]})
    # a reading without an index takes its position (1), which the first reading holds
    positional = [reading(90.0, index=1), reading(10.0)]
    lab.write_job("pos", {"status": "running", "history": [{**step(1.0, 10), "gpus": positional}]})
    latest = {**step(1.0, 11), "step": 11, "gpus": [reading(50.0, index=2), reading(60.0, index=2, uuid="GPU-x")]}
    lab.write_job("late", {"status": "running", "history": [step(2.0, 10)], "latest": latest})
    summary = lab.ingest()
    rows = lab.query("SELECT job_id, step, gpu_index, gpu_uuid, utilization_percent FROM step_gpus ORDER BY 1, 2, 3")
    assert rows == [
        ("late", 11, 2, None, 50.0),
        ("mig", 10, 0, "MIG-aaa", 90.0),
        ("pos", 10, 1, None, 90.0),
    ]
    warnings = sorted((path.split("/")[-2], message) for path, message in summary.listed_warnings)
    assert warnings == [
        ("late", "latest (step 11): gpus[1] repeats GPU index 2 (uuid GPU-x), dropped: one reading per index"),
        ("mig", "history[1] (step 10): gpus[1] repeats GPU index 0 (uuid MIG-bbb), dropped: one reading per index"),
        ("pos", "history[0] (step 10): gpus[1] repeats GPU index 1, dropped: one reading per index"),
    ]
    assert lab.query("SELECT average_gpu_utilization FROM job_analytics WHERE job_id = 'mig'") == [(90.0,)]


def test_a_uuid_that_is_not_a_string_is_dropped_with_a_warning(lab: Lab) -> None:
    gpus = [reading(90.0, index=0, uuid=5), reading(80.0, index=1, uuid=None), reading(70.0, index=2, uuid="GPU-c")]
    lab.write_job("u", {"status": "running", "history": [{**step(1.0, 10), "gpus": gpus}]})
    summary = lab.ingest()
    rows = lab.query("SELECT gpu_index, gpu_uuid, utilization_percent FROM step_gpus ORDER BY 1")
    assert rows == [(0, None, 90.0), (1, None, 80.0), (2, "GPU-c", 70.0)]
    assert [message for _, message in summary.listed_warnings] == [
        "history[0] (step 10) gpus[0]: uuid 5 is not a string, dropped"
    ]
