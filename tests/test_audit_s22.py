"""Audit 22: what independent readers of inputs.md and insights.md found the product doing otherwise.

1. A later progress.json snapshot whose job-level value was refused (a time in another zone's
   name, a setting of the wrong type) wiped the stored value: the job row was replaced whole, the
   refused field NULL. A refused value now keeps the stored one (inputs.md: a file that breaks the
   contract never loses data already ingested); a field left out, or null, is still replaced.
2. Two `checkpoints` items of one step in one file: the last item alone was kept, so a writer
   listing a checkpoint when saved and again when evaluated lost its path and saved_at (one ingest
   of the final file differed from ingests of its prefixes). Items of a step now complete each other.
3. A checkpoint `path` of "" was stored as the path, hiding the `checkpoint-<step>/` folder's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from conftest import Lab

JOB_COLUMNS = (
    "created_at, started_at, ended_at, updated_at, model_name, batch_size, save_steps, "
    "target_samples_per_second, gpu_count, current_step, total_steps, CAST(config AS VARCHAR)"
)


def job(lab: Lab, job_id: str) -> dict[str, Any]:
    rows = lab.query(f"SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = $j", {"j": job_id})
    assert len(rows) == 1, rows
    names = [name.strip() for name in JOB_COLUMNS.replace("CAST(config AS VARCHAR)", "config").split(",")]
    return dict(zip(names, rows[0], strict=True))


FIRST = {
    "job_id": "j",
    "status": "running",
    "created_at": "2026-03-01T09:00:00Z",
    "started_at": "2026-03-01T09:30:00Z",
    "updated_at": "2026-03-01T10:00:00Z",
    "current_step": 10,
    "total_steps": 100,
    "config": {
        "model_name": "m",
        "batch_size": 8,
        "save_steps": 50,
        "target_samples_per_second": 20,
        "gpu_count": 2,
    },
    "history": [{"step": 10, "timestamp": "2026-03-01T10:00:00Z", "loss": 2.0}],
}


def test_a_refused_job_value_keeps_the_stored_one(lab: Lab) -> None:
    lab.write_job("j", FIRST)
    lab.ingest()
    later = {
        **FIRST,
        "created_at": "yesterday",
        "started_at": "2026-03-01 09:30:00 CST",
        "updated_at": "2026-03-01T10:01:00Z",
        "current_step": -1,
        "total_steps": "100",
        "config": {
            "model_name": 5,
            "batch_size": "8",
            "save_steps": 0,
            "target_samples_per_second": float("nan"),
            "gpu_count": 1.5,
        },
        "history": [{"step": 20, "timestamp": "2026-03-01T10:01:00Z", "loss": 1.9}],
    }
    lab.write_job("j", later)
    summary = lab.ingest()
    assert summary.warnings, "every refused value is still said"
    row = job(lab, "j")
    assert row == {
        "created_at": datetime(2026, 3, 1, 9, 0),
        "started_at": datetime(2026, 3, 1, 9, 30),
        "ended_at": None,
        "updated_at": datetime(2026, 3, 1, 10, 1),  # the new snapshot's, read
        "model_name": "m",
        "batch_size": 8.0,
        "save_steps": 50,
        "target_samples_per_second": 20.0,
        "gpu_count": 2,
        "current_step": 10,
        "total_steps": 100,
        # the config is kept whole, as written (its refused settings are not read from it)
        "config": '{"model_name":5,"batch_size":"8","save_steps":0,"target_samples_per_second":NaN,"gpu_count":1.5}',
    }
    assert lab.query("SELECT step FROM steps ORDER BY step") == [(10,), (20,)]


def test_a_left_out_or_null_job_value_is_replaced(lab: Lab) -> None:
    """The snapshot is the job's state: what it no longer gives is no longer known."""
    lab.write_job("j", {**FIRST, "ended_at": "2026-03-01T10:00:00Z"})
    lab.ingest()
    later = {key: value for key, value in FIRST.items() if key not in ("created_at", "current_step")}
    later.update(
        updated_at="2026-03-01T10:01:00Z",
        ended_at=None,  # resumed: no longer ended
        config={"model_name": "m", "batch_size": None},  # save_steps, target and gpu_count left out
    )
    lab.write_job("j", later)
    lab.ingest()
    row = job(lab, "j")
    assert (row["created_at"], row["ended_at"], row["current_step"]) == (None, None, None)
    assert (row["batch_size"], row["save_steps"], row["target_samples_per_second"], row["gpu_count"]) == (
        None,
        None,
        None,
        None,
    )
    assert (row["started_at"], row["model_name"], row["total_steps"]) == (datetime(2026, 3, 1, 9, 30), "m", 100)


def test_a_refused_updated_at_keeps_the_stored_time_and_the_later_read_wins(lab: Lab) -> None:
    lab.write_job("j", FIRST)
    lab.ingest()
    lab.write_job("j", {**FIRST, "updated_at": "not a time", "status": "completed", "current_step": 20})
    lab.ingest()
    row = job(lab, "j")
    assert (row["updated_at"], row["current_step"]) == (datetime(2026, 3, 1, 10, 0), 20)
    assert lab.query("SELECT status FROM jobs") == [("completed",)]


def test_a_refused_value_of_a_new_job_is_null(lab: Lab) -> None:
    lab.write_job("j", {**FIRST, "started_at": "2026-03-01 09:30:00 CST"})
    summary = lab.ingest()
    assert job(lab, "j")["started_at"] is None
    assert "started_at" in str(summary.listed_warnings)


def test_checkpoint_items_of_one_step_complete_each_other(lab: Lab) -> None:
    items = [
        {"step": 500, "path": "/ckpt/checkpoint-500", "saved_at": "2026-03-01T10:00:00Z"},
        {"step": 500, "eval_loss": 0.42},
        {"step": 600, "eval_loss": 0.5},
        {"step": 600, "path": "/ckpt/600", "eval_loss": 0.4},  # the later item's value wins
    ]
    lab.write_job("j", {**FIRST, "checkpoints": items})
    lab.ingest()
    assert lab.query("SELECT step, path, saved_at, eval_loss FROM checkpoints ORDER BY step") == [
        (500, "/ckpt/checkpoint-500", datetime(2026, 3, 1, 10, 0), 0.42),
        (600, "/ckpt/600", None, 0.4),
    ]


def test_an_empty_checkpoint_path_is_no_path(lab: Lab) -> None:
    folder = lab.write_job("j", {**FIRST, "checkpoints": [{"step": 40, "path": ""}, {"step": 50, "path": "  "}]}).parent
    (folder / "checkpoint-40").mkdir()
    lab.ingest()
    assert lab.query("SELECT step, path FROM checkpoints ORDER BY step") == [
        (40, str(folder / "checkpoint-40")),
        (50, None),
    ]
