"""Audit 18, inputs: what an independent reader of inputs.md found ingest doing otherwise.

1. A null item of a step entry's `gpus` (history or latest) was a GPU of nothing at its place,
   silently (the job's GPU hours doubled); `{}` too. Such an item is now dropped with a warning.
2. A spool line whose job_id is a JSON integer was skipped as having none, though progress.json
   takes the same number as the job's id: the spool now reads it as the same text.
3. progress.json's whole numbers went through a double: step 2^53 + 1 was stored as 2^53 (another
   step), 10^18 + 1 as 10^18. Integers are now exact, and above 10^18 refused with a warning.
4. A checkpoint listed without a path took its `checkpoint-<step>/` folder's only when the folder
   was read in an earlier run: a checkpoint now has the same path whatever the order of reading.
5. Null times, a checkpoint's path that is no string, a legacy snapshot's fields beside a history
   and a `gpus` list at the top level were dropped or ignored silently: each now says so.
6. A spool `gpu_index` of 2.0 skipped its line, where progress.json reads index 2.0 as GPU 2.

The code is the stage's, the same for both engines (DuckDB only here). The histories' two roads
(the C reader and DuckDB's careful read) each build a warehouse of the module's files once.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Lab
from test_damaged_values import settled

from runlytics.ingest import fast

T0 = 1_740_823_200  # 2025-03-01T10:00:00Z
BIG = 2**53 + 1  # a double holds it as 2^53
TOP = 10**18  # the bound on steps and counts (inputs.md: steps are integers; docs/ingest.md)
GPU0 = {"index": 0, "utilization_percent": 90, "memory_used_mb": 1000}

DOCS: dict[str, dict[str, Any]] = {
    # finding 1: the audit's repro (an hour at one GPU, a null beside it)
    "nullgpu": {
        "status": "completed",
        "config": {"gpu_count": 1, "batch_size": 8},
        "history": [
            {"step": 1, "timestamp": T0, "iteration_time": 1.0, "gpus": [GPU0, None]},
            {"step": 3601, "timestamp": T0 + 3600, "iteration_time": 1.0, "gpus": [GPU0, None]},
        ],
        "latest": {"step": 3601, "timestamp": T0 + 3600, "gpus": [None, {"utilization_percent": 5}]},
    },
    # a reading of nothing: no GPU; one naming a GPU by index or uuid alone stays one
    "emptygpu": {
        "status": "running",
        "history": [{"step": 1, "gpus": [GPU0, {}, {"uuid": "  "}, {"clock_mhz": 1}, {"index": 4}, {"uuid": "GPU-5"}]}],
    },
    # numbers and strings are dropped by the repair (DuckDB refuses the file): places kept
    "repairedgpu": {"status": "running", "history": [{"step": 1, "gpus": [None, 7, {"utilization_percent": 5}]}]},
    # ... a null index is none: the reading is GPU 2 too, its place as written
    "repairednull": {
        "status": "running",
        "history": [{"step": 1, "gpus": ["x", 7, {"index": None, "utilization_percent": 5}]}],
    },
    # finding 3: exact integers, which the C reader takes (nothing to warn about)
    "bigexact": {
        "status": "running",
        "current_step": BIG,
        "total_steps": TOP,
        "history": [{"step": BIG - 1, "loss": 3.0}, {"step": BIG, "samples": BIG, "loss": 1.0}, {"step": TOP}],
        "checkpoints": [{"step": BIG}],
    },
    # ... and above 10^18, refused with a warning (the C reader leaves the file to the careful read)
    "bigover": {
        "status": "running",
        "current_step": TOP + 1,
        "max_steps": TOP + 1,
        "history": [{"step": TOP + 1, "loss": 2.0}, {"step": 5, "samples": TOP + 1}],
        "checkpoints": [{"step": TOP + 1}],
    },
    # finding 5: the audit's ck3 (null times, a path that is a number)
    "nulltimes": {
        "status": "running",
        "updated_at": None,
        "created_at": "bad",
        "history": [{"step": 1, "timestamp": None}],
        "checkpoints": [{"step": 1, "saved_at": "garbage", "path": 5}, {"step": 2, "eval_loss": -1, "saved_at": None}],
    },
    # a legacy snapshot's fields beside a history (empty) are ignored, and said to be
    "flatbeside": {"status": "running", "step": 5, "loss": 1.5, "history": []},
    # a legacy snapshot is read as ever; a gpus list at the top level is no field: said to be ignored
    "flatgpus": {
        "status": "running",
        "step": 5,
        "loss": 1.5,
        "gpu_utilization": 50,
        "gpus": [{"index": 1, "utilization_percent": 9}],
    },
    # finding 2: the job whose id is a number, as the spool names it
    "run-12345": {"job_id": 12345, "status": "running", "history": [{"step": 1, "timestamp": T0}]},
}


def spool_lines() -> str:
    """Finding 2 and 6's lines: plain ones (the spool's fast road) and ones a NaN sends to the careful road."""

    def line(ts: int, job_id: Any, gpu: Any = 0, nan: bool = False) -> str:
        text = json.dumps({"ts": ts, "job_id": job_id, "gpu_index": gpu, "utilization_percent": 97.0})
        return text[:-1] + ', "extra": NaN}' if nan else text

    return "\n".join([
        line(T0, 12345),  # fast road
        line(T0 + 30, 12345, nan=True),  # careful road
        line(T0 + 60, 12345.0),  # no whole number: skipped, saying so
        line(T0 + 90, True),
        line(T0 + 120, "12345", gpu=2.0),  # GPU 2
        line(T0 + 150, "12345", gpu=2.5),
        line(T0 + 180, None),
        "",
    ])  # fmt: skip


@pytest.fixture(scope="module", params=["fast", "careful"])
def road(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def lab(road: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One warehouse of DOCS and the spool, read by the histories' fast road as built, or by the careful read alone."""
    lab = Lab(tmp_path_factory.mktemp(road))
    for folder, doc in DOCS.items():
        settled(lab.write_job(folder, {"job_id": folder, **doc}))
    spool = lab.root.parent / "spool"
    spool.mkdir()
    settled_write(spool / "node.jsonl", spool_lines())
    with pytest.MonkeyPatch.context() as patch:
        if road == "careful":
            patch.setattr(fast, "_history", None)
        lab.ingest(lab.root, spool_root=spool)
    yield lab


def settled_write(path: Path, text: str) -> None:
    path.write_text(text)
    settled(path)


def warnings(lab: Lab, folder: str) -> list[str]:
    [(stored,)] = lab.own_query(
        "SELECT warnings FROM ingest_files WHERE path = ?", [str(lab.root / folder / "progress.json")]
    )
    return json.loads(stored) if stored else []


def gpus(lab: Lab, job_id: str) -> list[tuple[Any, ...]]:
    return lab.query(
        "SELECT step, gpu_index, gpu_uuid, utilization_percent FROM step_gpus WHERE job_id = ? ORDER BY ALL", [job_id]
    )


# --- 1. null and empty GPU readings ----------------------------------------------------------------


def test_a_null_gpu_item_is_no_gpu_and_is_said(lab: Lab) -> None:
    assert gpus(lab, "nullgpu") == [(1, 0, None, 90.0), (3601, 0, None, 90.0)]  # the latest lends no GPU 1
    assert warnings(lab, "nullgpu") == [
        "history[0] (step 1) gpus[1]: null, not a GPU reading: dropped",
        "history[1] (step 3601) gpus[1]: null, not a GPU reading: dropped",
        "latest (step 3601) gpus[0]: null, not a GPU reading: dropped",
    ]
    # the job ran on one GPU for an hour: not two (job_gpu_hours and the fleet's count the readings' GPUs)
    [(count, hours)] = lab.query("SELECT gpus, gpu_hours FROM job_gpu_hours WHERE job_id = 'nullgpu'")
    assert (count, round(hours, 3)) == (1, 1.0)


def test_a_gpu_reading_of_nothing_is_no_gpu(lab: Lab) -> None:
    assert gpus(lab, "emptygpu") == [(1, 0, None, 90.0), (1, 4, None, None), (1, 5, "GPU-5", None)]
    none = "no index, uuid or reading: not a GPU, dropped"
    assert warnings(lab, "emptygpu") == [f"history[0] (step 1) gpus[{i}]: {none}" for i in (1, 2, 3)]


def test_a_repaired_gpus_list_keeps_each_reading_at_its_place(lab: Lab) -> None:
    # the reading after the null and the number is GPU 2, as without them
    assert gpus(lab, "repairedgpu") == [(1, 2, None, 5.0)]
    assert warnings(lab, "repairedgpu") == [
        "history[0] (step 1) gpus[0]: null, not a GPU reading: dropped",
        "history[0] (step 1) gpus[1]: no index, uuid or reading: not a GPU, dropped",  # each at its place (session 30)
    ]


def test_a_null_index_in_a_repaired_gpus_list_is_its_place_as_written(lab: Lab) -> None:
    # docs/ingest.md: items dropped before a reading without an index do not move it (a null index
    # fell back to its place in the shortened list: GPU 0)
    assert gpus(lab, "repairednull") == [(1, 2, None, 5.0)]
    assert warnings(lab, "repairednull") == [
        "history[0] (step 1) gpus[0]: no index, uuid or reading: not a GPU, dropped",
        "history[0] (step 1) gpus[1]: no index, uuid or reading: not a GPU, dropped",
        "history[0] (step 1) gpus[2]: index is null, dropped",
    ]


# --- 3. whole numbers exact to 10^18 ---------------------------------------------------------------


def test_whole_numbers_are_exact_up_to_10_to_the_18(lab: Lab) -> None:
    data = (lab.root / "bigexact" / "progress.json").read_bytes()
    assert fast.parse(data, 0) is not None  # a file the C reader takes: the fast road's lab read it so
    steps = lab.query("SELECT step, samples, loss FROM steps WHERE job_id = 'bigexact' ORDER BY step")
    assert steps == [(BIG - 1, None, 3.0), (BIG, BIG, 1.0), (TOP, None, None)]  # two steps, not one
    assert lab.query("SELECT current_step, total_steps FROM jobs WHERE job_id = 'bigexact'") == [(BIG, TOP)]
    assert lab.query("SELECT step FROM checkpoints WHERE job_id = 'bigexact'") == [(BIG,)]
    assert warnings(lab, "bigexact") == []


def test_whole_numbers_above_10_to_the_18_are_refused_with_a_warning(lab: Lab) -> None:
    assert lab.query("SELECT step, samples, loss FROM steps WHERE job_id = 'bigover'") == [(5, None, None)]
    assert lab.query("SELECT current_step, total_steps FROM jobs WHERE job_id = 'bigover'") == [(None, None)]
    assert lab.query("SELECT count(*) FROM checkpoints WHERE job_id = 'bigover'") == [(0,)]
    over = f"{TOP + 1} is out of range, dropped"
    assert warnings(lab, "bigover") == [
        f"current_step {over}; max_steps {over}",
        f"history[0]: step {over}: entry skipped",
        f"history[1] (step 5): samples {over}",
        f"checkpoints[0]: step {over}: checkpoint skipped",
    ]


# --- 5. what was dropped or ignored silently ---------------------------------------------------------


def test_null_times_and_a_path_that_is_no_string_are_said(lab: Lab) -> None:
    assert warnings(lab, "nulltimes") == [
        'created_at "bad" is not a timestamp, dropped',
        "updated_at is null, dropped",
        "history[0] (step 1): timestamp is null, dropped",
        'checkpoints[0]: path 5 is not a string, dropped; saved_at "garbage" is not a timestamp, dropped',
        "checkpoints[1]: saved_at is null, dropped",
    ]
    assert lab.query("SELECT step, path, saved_at FROM checkpoints WHERE job_id = 'nulltimes' ORDER BY step") == [
        (1, None, None),
        (2, None, None),
    ]


def test_a_legacy_snapshot_beside_a_history_is_said_to_be_ignored(lab: Lab) -> None:
    assert lab.query("SELECT count(*) FROM steps WHERE job_id = 'flatbeside'") == [(0,)]
    assert warnings(lab, "flatbeside") == [
        "step, loss at the top level (the legacy snapshot form) ignored: the document has a history list"
    ]


def test_a_gpus_list_at_the_top_level_is_said_to_be_ignored(lab: Lab) -> None:
    assert lab.query("SELECT step, loss FROM steps WHERE job_id = 'flatgpus'") == [(5, 1.5)]
    assert gpus(lab, "flatgpus") == [(5, 0, None, 50.0)]  # the snapshot's one GPU, from its flat fields
    assert warnings(lab, "flatgpus") == [
        "gpus at the top level ignored: GPU readings belong to a step entry (history or latest); "
        "a legacy snapshot's one GPU is gpu_utilization, gpu_memory_mb, gpu_temperature"
    ]


# --- 2 and 6. the spool's job id and GPU index -------------------------------------------------------


def spool_warnings(lab: Lab) -> list[str]:
    [(stored,)] = lab.own_query("SELECT warnings FROM ingest_files WHERE kind = 'spool'")
    return json.loads(stored)


def test_a_spool_job_id_written_as_a_number_is_its_text(lab: Lab) -> None:
    assert lab.query("SELECT job_id FROM jobs WHERE job_id LIKE '%12345%'") == [("12345",)]
    samples = lab.query("SELECT job_id, gpu_index, epoch(ts) FROM gpu_samples WHERE gpu_index = 0 ORDER BY ts")
    assert samples == [("12345", 0, T0), ("12345", 0, T0 + 30)]  # both spool roads
    # a line refused says why: its job id is a number of another kind, or there is none
    whole = "is not a string or a whole number 0 to 2^64 - 1, skipped"
    assert [w for w in spool_warnings(lab) if "job_id" in w] == [
        f"line 3: job_id '12345.0' {whole}",
        f"line 4: job_id 'True' {whole}",
        "line 7: no job_id, skipped",
    ]


def test_a_spool_gpu_index_written_as_a_whole_float_is_that_gpu(lab: Lab) -> None:
    samples = lab.query("SELECT job_id, gpu_index, epoch(ts) FROM gpu_samples WHERE gpu_index <> 0 ORDER BY ts")
    assert samples == [("12345", 2, T0 + 120)]
    assert [w for w in spool_warnings(lab) if "gpu_index" in w] == [
        "line 6: gpu_index '2.5' is not a GPU index, skipped"
    ]


# --- 4. a checkpoint's path, whatever the order of reading -------------------------------------------

LISTED = [{"step": 100, "eval_loss": 0.3}, {"step": 200}, {"step": 300, "path": "/data/ckpt-300"}]


def job_files(root: Path, *, listed: bool, folders: bool) -> None:
    """Job a: progress.json (its `checkpoints` list or none), folders checkpoint-100/ and -300/ (a bare
    folder, as a trainer makes it), and last-checkpoint/ (a copy holding the state of step 200)."""
    doc = {"job_id": "a", "status": "running", "history": [{"step": 100, "loss": 1.0}]}
    (root / "a").mkdir(exist_ok=True)
    settled_write(root / "a" / "progress.json", json.dumps({**doc, "checkpoints": LISTED} if listed else doc))
    if folders:
        for name in ("checkpoint-100", "checkpoint-300", "last-checkpoint"):
            (root / "a" / name).mkdir(parents=True, exist_ok=True)
        state = {"global_step": 200, "log_history": [{"step": 200, "loss": 0.9}]}
        settled_write(root / "a" / "last-checkpoint" / "trainer_state.json", json.dumps(state))


def checkpoints(lab: Lab) -> list[tuple[Any, ...]]:
    rows = lab.query("SELECT step, path, eval_loss FROM checkpoints ORDER BY step")
    return [(step, path and path.replace(str(lab.root), "ROOT"), loss) for step, path, loss in rows]


@pytest.fixture(scope="module")
def checkpoint_labs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Lab]:
    """The same final files read at once, folders first then the list, and the list first then the folders."""
    labs = {}
    for order in ("at once", "folders first", "list first"):
        lab = labs[order] = Lab(tmp_path_factory.mktemp(order.replace(" ", "-")))
        if order != "at once":
            job_files(lab.root, listed=order == "list first", folders=order == "folders first")
            lab.ingest()
            shutil.rmtree(lab.root / "a")
        job_files(lab.root, listed=True, folders=True)
        lab.ingest()
    return labs


def test_a_checkpoint_has_one_path_whatever_the_order_of_reading(checkpoint_labs: dict[str, Lab]) -> None:
    expected = [
        (100, "ROOT/a/checkpoint-100", 0.3),  # listed without a path: its folder's
        (200, "ROOT/a/last-checkpoint", None),  # listed without a path: its state's copy
        (300, "/data/ckpt-300", None),  # the list's path
    ]
    for order, lab in checkpoint_labs.items():
        assert checkpoints(lab) == expected, order
