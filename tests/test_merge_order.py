"""A step seen more than once (ingest/merge.py): one batch keeps what one ingest per entry keeps,
and a ``latest`` that loses to its own history entry fills what that entry lacks.

inputs.md §1: "The same step seen again ... replaces the earlier row: the entry with the later
``timestamp`` wins"; when either entry has no timestamp, the later ingest wins (docs/ingest.md).
Entry by entry, that rule is a fold: an untimed entry replaces whatever came before it, and from
then on the later timestamp wins (ties to the later entry). The audit (F12 k) found three entries
of one step in one file (untimed, then +5 s, then +3 s) keeping the last, where three ingests keep
the +5 s one; and (F6, mirror case) a ``latest`` with the history entry's own timestamp dropped with
the GPU readings the history entry lacked.

Real DuckDB files in tmp folders; the generated cases compare with ``fold`` below, written from the
rule's words, and the hand cases' figures are worked out in their comments.
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Engine, Lab

T0 = "2026-11-02T08:00:00Z"
Entry = tuple[int | None, float]  # (seconds after T0 or None, loss)


def stamp(seconds: int) -> str:
    return f"2026-11-02T08:00:{seconds:02d}Z"


@pytest.fixture
def lab(tmp_path: Path, ingest_engine: Engine) -> Lab:
    """On both engines: on PostgreSQL the merge runs in the DuckDB stage and the publish copies it."""
    return Lab(tmp_path, ingest_engine)


def _doc(job_id: str, entries: list[Entry], step: int = 10) -> dict[str, Any]:
    history = [
        {"step": step, "loss": loss} | ({"timestamp": stamp(ts)} if ts is not None else {}) for ts, loss in entries
    ]
    return {"job_id": job_id, "status": "running", "history": history}


def _write(lab: Lab, folder: str, doc: dict[str, Any], mtime: float) -> None:
    path = lab.write_job(folder, doc)
    os.utime(path, (mtime, mtime))  # each run's rewrite is seen as a change, in order


def fold(entries: list[Entry]) -> Entry:
    """The row one ingest per entry keeps: a later entry replaces the kept one when either has no
    timestamp or its timestamp is later or equal."""
    kept = entries[0]
    for entry in entries[1:]:
        if kept[0] is None or entry[0] is None or entry[0] >= kept[0]:
            kept = entry
    return kept


def _stored(lab: Lab) -> dict[str, Entry]:
    rows = lab.query("SELECT job_id, CAST(ts AS VARCHAR), loss FROM steps WHERE step = 10")
    return {job: (None if ts is None else int(ts[-2:]), loss) for job, ts, loss in rows}


def test_three_entries_of_one_step_in_one_file_keep_the_later_timestamp(lab: Lab) -> None:
    # untimed A (loss 1), then B at +5 s (loss 2), then C at +3 s (loss 3): B replaces A (A has
    # no timestamp), C does not replace B (3 < 5)
    lab.write_job("t", _doc("t", [(None, 1.0), (5, 2.0), (3, 3.0)]))
    lab.ingest()
    assert _stored(lab) == {"t": (5, 2.0)}


def test_the_same_three_entries_over_three_ingests_keep_the_same_row(lab: Lab) -> None:
    start = time.time() - 100
    for n, entry in enumerate([(None, 1.0), (5, 2.0), (3, 3.0)]):
        _write(lab, "t", _doc("t", [entry]), start + n)
        lab.ingest()
    assert _stored(lab) == {"t": (5, 2.0)}


def test_an_untimed_entry_in_the_batch_replaces_a_stored_later_row(lab: Lab) -> None:
    # stored +9 s (loss 1); then one file: untimed (loss 2) replaces it, +4 s (loss 3) replaces
    # the untimed one: +4 s is kept though it is earlier than the row stored before
    start = time.time() - 100
    _write(lab, "t", _doc("t", [(9, 1.0)]), start)
    lab.ingest()
    _write(lab, "t", _doc("t", [(None, 2.0), (4, 3.0)]), start + 1)
    lab.ingest()
    assert _stored(lab) == {"t": (4, 3.0)}


# Every sequence of three entries of one step over these timestamps, split between ingests every
# way (the first k entries one ingest each, the rest in one file), one job per case.
TIMES = (None, 0, 3, 5)
CASES = [(seq, k) for seq in itertools.product(TIMES, repeat=3) for k in range(4)]


def test_one_batch_keeps_what_one_ingest_per_entry_keeps(tmp_path: Path) -> None:
    # DuckDB only: the merge is DuckDB's on either engine (the PostgreSQL publish copies the
    # stage's rows; the hand cases above run on both), and 256 jobs x 3 runs cost seconds there
    lab = Lab(tmp_path)
    start = time.time() - 100
    expected = {}
    for n, (times, _) in enumerate(CASES):
        expected[f"c{n}"] = fold([(ts, float(10 * n + i)) for i, ts in enumerate(times)])
    for run in range(3):
        for n, (times, k) in enumerate(CASES):
            entries = [(ts, float(10 * n + i)) for i, ts in enumerate(times)]
            if run < k:
                _write(lab, f"c{n}", _doc(f"c{n}", [entries[run]]), start + run)
            elif run == k:
                _write(lab, f"c{n}", _doc(f"c{n}", entries[k:]), start + run)
        lab.ingest()
    assert _stored(lab) == expected


# --- latest repeating a history step it does not replace: it fills what that entry lacks -------

GPU = {"index": 0, "utilization_percent": 50.0, "memory_used_mb": 1000.0, "temperature_c": 60.0}


def _with_latest(history_20: dict[str, Any], latest: dict[str, Any], *, careful: bool = False) -> dict[str, Any]:
    """Step 10 (+10 s, loss 2, 10 samples in 10 s), then ``history_20`` at step 20, and ``latest``.
    ``careful``: a string in step 10's loss, so that the careful read takes the history (the C
    reader gives such a file up)."""
    step_10 = {
        "step": 10,
        "timestamp": stamp(10),
        "loss": "2.0" if careful else 2.0,
        "iteration_time": 1.0,
        "samples": 10,
    }
    return {
        "job_id": "j",
        "status": "running",
        "started_at": T0,
        "updated_at": stamp(50),
        "history": [step_10, {"step": 20, **history_20}],
        "latest": {"step": 20, **latest},
    }


def _step_20(lab: Lab) -> tuple[Any, ...]:
    ((row),) = lab.query(
        "SELECT CAST(ts AS VARCHAR), loss, eval_loss, iteration_time, samples FROM steps"
        " WHERE job_id = 'j' AND step = 20"
    )
    return tuple(row)


@pytest.mark.parametrize("careful", [False, True], ids=["fast-road", "careful-road"])
def test_a_latest_with_the_same_timestamp_lends_its_gpu_readings(lab: Lab, careful: bool) -> None:
    lab.write_job(
        "j",
        _with_latest({"timestamp": stamp(20), "loss": 1.5}, {"timestamp": stamp(20), "gpus": [GPU]}, careful=careful),
    )
    lab.ingest()
    assert lab.query("SELECT utilization_percent, memory_used_mb FROM step_gpus WHERE job_id = 'j'") == [(50.0, 1000.0)]
    assert _step_20(lab) == ("2026-11-02 08:00:20", 1.5, None, None, None)
    a = lab.analytics("j")
    assert a is not None
    # the one reading: utilization 50, memory 1000, temperature 60
    r = a["resource_utilization"]
    assert (r["average_gpu_utilization"], r["peak_gpu_memory_mb"], r["peak_gpu_temp_celsius"]) == (50.0, 1000.0, 60.0)


def test_a_latest_fills_the_fields_its_history_entry_lacks_and_no_other(lab: Lab) -> None:
    history_20 = {"timestamp": stamp(20), "loss": 1.5, "gpus": [GPU]}
    latest = {
        "timestamp": stamp(20),
        "loss": 9.0,
        "eval_loss": 1.4,
        "iteration_time": 1.0,
        "samples": 10,
        "gpus": [GPU | {"utilization_percent": 99.0}],
    }
    lab.write_job("j", _with_latest(history_20, latest))
    lab.ingest()
    # the history's loss and reading stay; eval loss, seconds and samples come from latest
    assert _step_20(lab) == ("2026-11-02 08:00:20", 1.5, 1.4, 1.0, 10)
    assert lab.query("SELECT utilization_percent FROM step_gpus WHERE job_id = 'j'") == [(50.0,)]
    a = lab.analytics("j")
    assert a is not None
    # seconds 10 x 1 + 10 x 1 = 20; samples 10 + 10 = 20
    assert (a["duration"]["training_seconds"], a["performance"]["total_samples"]) == (20.0, 20.0)
    assert a["losses"]["final_eval_loss"] == 1.4


def test_a_latest_without_timestamp_fills_a_field_but_not_the_time(lab: Lab) -> None:
    # the updated_at stand-in (+50 s) is when the snapshot was written, not when step 20 finished
    lab.write_job("j", _with_latest({"timestamp": stamp(20), "eval_loss": 1.4}, {"loss": 1.7}))
    lab.ingest()
    assert _step_20(lab) == ("2026-11-02 08:00:20", 1.7, 1.4, None, None)
    lab.write_job("j", _with_latest({"eval_loss": 1.4}, {"loss": 1.7}))  # and the history entry untimed
    lab.ingest()
    assert _step_20(lab) == (None, 1.7, 1.4, None, None)


def test_a_latest_lends_its_own_time_to_an_untimed_history_entry(lab: Lab) -> None:
    lab.write_job("j", _with_latest({"loss": 1.5}, {"timestamp": stamp(25), "loss": 1.7}))
    lab.ingest()
    assert _step_20(lab) == ("2026-11-02 08:00:25", 1.5, None, None, None)
