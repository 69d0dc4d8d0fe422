"""Named queries over the views, and the shape of one job's analytics (shared by CLI and API)."""

from __future__ import annotations

import math
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from . import bounded_json, db

if TYPE_CHECKING:
    import duckdb

# job_results is job_analytics materialised (warehouse/results.py)
JOB_ANALYTICS = "SELECT * FROM job_results WHERE job_id = $job_id"

# The sections of a job's analytics (analytics.md) and the view columns each holds.
SECTIONS: dict[str, tuple[str, ...]] = {
    "duration": ("start_time", "end_time", "total_seconds", "training_seconds", "overhead_seconds"),
    "performance": (
        "total_iterations",
        "total_samples",
        "average_samples_per_second",
        "peak_samples_per_second",
        "average_iteration_time",
    ),
    "losses": (
        "initial_loss",
        "final_loss",
        "best_loss",
        "loss_reduction_percent",
        "final_eval_loss",
        "best_eval_loss",
    ),
    "resource_utilization": (
        "average_gpu_utilization",
        "average_gpu_memory_mb",
        "peak_gpu_memory_mb",
        "average_gpu_temp_celsius",
        "peak_gpu_temp_celsius",
    ),
    "checkpoints": ("total_checkpoints", "checkpoint_frequency_steps", "final_checkpoint", "best_checkpoint"),
    "efficiency": ("gpu_utilization_score", "throughput_score", "overall_score"),
    "energy": (
        "total_energy_wh",
        "energy_per_1000_samples_wh",
        "gpus_with_power",
        "idle_gpus",
        "average_throttled_share",
    ),
}

# The per-GPU breakdown of a job (from its GPU samples). gpu_index is not unique on a host
# (containers number their GPUs from 0; a GPU sampled with and without its UUID is two GPUs of
# one index): the UUID breaks ties, the GPU without one last, so both engines give one order.
JOB_GPUS = """
SELECT host, gpu_index, gpu_uuid, samples, first_sample, last_sample, average_utilization, average_memory_mb,
       peak_memory_mb, average_temp_celsius, peak_temp_celsius, average_power_w, energy_wh, throttled_share,
       idle_share, idle
FROM job_gpus
WHERE job_id = $job_id
ORDER BY host, gpu_index, gpu_uuid NULLS LAST
"""


def plain(value: Any) -> Any:
    """A JSON-ready value: ISO times with Z, non-finite floats as None, at any depth of a LIST
    or STRUCT (a list or dict)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "isoformat"):
        text = value.isoformat()
        return text + "Z" if getattr(value, "tzinfo", None) is None and "T" in text else text
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def records(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """The cursor's rows as dicts by column name, each value made ``plain``."""
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, (plain(v) for v in row), strict=True)) for row in cursor.fetchall()]


class UnknownJob(LookupError):
    """No job has this id."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


def job_analytics(con: duckdb.DuckDBPyConnection, job_id: str) -> dict[str, Any] | None:
    """One job's analytics in sections, or None when the warehouse has no such job."""
    cursor = con.execute(JOB_ANALYTICS, {"job_id": job_id})
    row = cursor.fetchone()
    if row is None:
        return None
    record = dict(zip([d[0] for d in cursor.description], row, strict=True))
    shaped: dict[str, Any] = {
        "job_id": record["job_id"],
        "status": record["status"],
        "model_name": record["model_name"],
    }
    for section, columns in SECTIONS.items():
        shaped[section] = {c: plain(record[c]) for c in columns}
    shaped["gpus"] = []
    if record["gpu_source"] == "gpu_samples":  # only samples have a per-GPU breakdown
        gpus = con.execute(JOB_GPUS, {"job_id": job_id})
        names = [d[0] for d in gpus.description]
        shaped["gpus"] = [{n: plain(v) for n, v in zip(names, r, strict=True)} for r in gpus.fetchall()]
    shaped["warnings"] = list(record["warnings"] or [])
    return shaped


# A config nested deeper is cut (null below): a reader recursing per level would overflow.
MAX_CONFIG_DEPTH = 64

JOB_RECORD = """
SELECT j.job_id, j.status, j.model_name, j.created_at, j.started_at, j.ended_at, j.updated_at,
       j.current_step, j.total_steps, j.config, j.source_dir,
       l.step AS latest_step, l.ts AS latest_step_time, l.loss AS latest_loss
FROM jobs j
LEFT JOIN (SELECT step, ts, loss FROM step_facts WHERE job_id = $job_id ORDER BY step DESC LIMIT 1) l ON true
WHERE j.job_id = $job_id
"""


def job_record(con: duckdb.DuckDBPyConnection, job_id: str) -> dict[str, Any]:
    """The job dimension row with its config and latest step, as the API serves it; UnknownJob
    when there is no such job."""
    cursor = con.execute(JOB_RECORD, {"job_id": job_id})
    row = cursor.fetchone()
    if row is None:
        raise UnknownJob(job_id)
    record = {d[0]: plain(v) for d, v in zip(cursor.description, row, strict=True)}
    record["config"] = job_record_config(job_id, record["config"])
    # the job folder's name, not where it lies on the server
    record["source_dir"] = PurePath(record["source_dir"]).name if record["source_dir"] else None
    latest = {k: record.pop(k) for k in ("latest_step", "latest_step_time", "latest_loss")}
    record["latest_step"] = (
        {"step": latest["latest_step"], "timestamp": latest["latest_step_time"], "loss": latest["latest_loss"]}
        if latest["latest_step"] is not None
        else None
    )
    return record


def job_record_config(job_id: str, text: str | None) -> Any:
    """A stored config as the API serves it (``plain``: JSON has no NaN, so a non-finite float of
    a free-form config is null). The JSON types of both engines hold JSON only, and
    bounded_json reads DuckDB's (``nan``, a trailing comma): a text it can't read is a warehouse
    written by something else, said as such (db.WarehouseError: 503), never an unhandled error."""
    if not text:
        return None
    try:
        return plain(bounded_json.loads(text, MAX_CONFIG_DEPTH))
    except ValueError as error:
        raise db.WarehouseError(f"the warehouse holds invalid JSON (job {job_id!r}'s config): {error}") from error


JOB_EXISTS = "SELECT count(*) FROM jobs WHERE job_id = $job_id"


def job_exists(con: duckdb.DuckDBPyConnection, job_id: str) -> bool:
    return db.one(con, JOB_EXISTS, {"job_id": job_id})[0] > 0


# A job's checkpoints, by step, with the loss each is judged by (checkpoint_scores).
JOB_CHECKPOINT_LIST = """
SELECT step, name, eval_loss, train_loss FROM checkpoint_scores WHERE job_id = $job_id ORDER BY step
"""


def job_checkpoints(con: duckdb.DuckDBPyConnection, job_id: str) -> list[dict[str, Any]]:
    """The job's checkpoints by step: ``step``, ``name``, ``eval_loss``, ``train_loss``."""
    return records(con.execute(JOB_CHECKPOINT_LIST, {"job_id": job_id}))
