"""Reading the insights of shared/spec/insights.md: one job's, the fleet's (keyset pages), counts
by severity per job (the job list's badges, a job's analytics) and by kind for running jobs
(``/metrics``).

Everything reads ``insight_results`` (the view ``job_insights`` materialised at ingest, with
``insight_jobs`` saying when each job's were computed: ``as_of``); the thresholds in force come
from ``warehouse/insights.py``. Filters are bound parameters checked against the allow-lists
below. The queries are templates: pg_reader.sql_for renders their macros (warehouse/dialect.py)
for the engine read.
"""

from __future__ import annotations

from typing import Any

import duckdb

from . import db, insights, pages
from .fleet import FILTER, Filters
from .pg_reader import sql_for
from .queries import plain, records

# Every kind of insights.md (insights.KINDS, the allow-list of the `kind` filter) and its
# severity, which the spec fixes per kind: /metrics counts every kind, zeros included.
SEVERITY_OF: dict[str, str] = {
    "nonfinite_loss": "critical",
    "loss_spike": "warning",
    "loss_divergence": "critical",
    "overfitting": "warning",
    "throughput_drop": "warning",
    "stall": "warning",
    "slow_vs_peers": "warning",
    "gpu_idle": "warning",
    "gpu_straggler": "warning",
    "gpu_throttled": "warning",
    "low_gpu_utilization": "warning",
    "memory_headroom": "info",
    "work_at_risk": "warning",
    "silent_running": "warning",
}
KINDS = insights.KINDS
SEVERITIES = insights.SEVERITIES
FIELDS = (
    "job_id", "kind", "severity", "first_step", "last_step", "start_time", "end_time", "host", "gpu_index",
    "gpu_uuid", "value", "reference", "message",
)  # fmt: skip
# Every field is a column of insight_results but gpu_uuid, read from gpu_key: the GPU's UUID, else
# '#<index>' (no UUID: null), NULL for the kinds of no GPU (not a field of the contract's insight:
# it tells apart two GPUs of a host that share an index; revision 0037).
GPU_UUID = "nullif(gpu_key, '#' || CAST(gpu_index AS VARCHAR)) AS gpu_uuid"
SELECTED = ", ".join(GPU_UUID if field == "gpu_uuid" else field for field in FIELDS)

# A job's insights by first step (those without one last), then kind; the rest of the order
# only makes it total. Two GPUs' insights of one kind differ by host and GPU key, not always by
# index: two GPUs of a host can both be index 0 (containers, Slurm cgroups), told apart by UUID
# only, and two idle ones have the same share (revision 0037). NULLs are made values, so that the
# fleet's keyset compares rows as this order sorts them.
NO_STEP = 2**63 - 1
KEY_COLUMNS = (
    f"coalesce(first_step, {NO_STEP})",
    "kind",
    f"coalesce(last_step, {NO_STEP})",
    "coalesce(host, '')",
    "coalesce(gpu_index, -1)",
    "coalesce(gpu_key, '')",
    "CASE WHEN @finite(value) THEN value ELSE 0 END",
)
KEY = ", ".join(KEY_COLUMNS)
KEY_ARITY = len(KEY_COLUMNS)
KEYSET = ", ".join(f"{column} AS k{i}" for i, column in enumerate(KEY_COLUMNS, 1))
AFTER = ", ".join(f"$k{i}" for i in range(1, KEY_ARITY + 1))

JOB_INSIGHTS = f"""
SELECT {SELECTED}
FROM insight_results
WHERE job_id = $job_id AND ($kind IS NULL OR kind = $kind) AND ($severity IS NULL OR severity = $severity)
ORDER BY {KEY}
"""
JOB_AS_OF = "SELECT max(as_of) FROM insight_jobs WHERE job_id = $job_id"
# the newest computation's; in a warehouse with no job computed yet, insight_parameters' as_of
# (the latest run's start, else now): every answer that lists insights carries one (insights.md)
FLEET_AS_OF = "SELECT coalesce((SELECT max(as_of) FROM insight_jobs), (SELECT as_of FROM insight_parameters))"

# The fleet's insights: jobs newest first (by the job's start, those without one last, then job
# id, as the job list), and within a job by KEY. The keyset: the job's (start, id), then KEY.
FLEET_PAGE = f"""
WITH chosen AS (
    SELECT job_id, status, model_name, start_time AS job_start_time FROM job_results WHERE {FILTER}
)
SELECT {SELECTED}, status, model_name, job_start_time, {KEYSET}
FROM insight_results JOIN chosen USING (job_id)
WHERE ($kind IS NULL OR kind = $kind) AND ($severity IS NULL OR severity = $severity)
  AND ($after_id IS NULL
       OR (job_start_time IS NOT DISTINCT FROM $after_start
           AND (job_id > $after_id OR (job_id = $after_id AND ({KEY}) > ({AFTER}))))
       OR ($after_start IS NOT NULL AND (job_start_time IS NULL OR job_start_time < $after_start)))
ORDER BY job_start_time IS NULL, job_start_time DESC, job_id, {KEY}
LIMIT $limit
"""

# Counts by severity of the jobs asked for (the job list's page, one job's analytics).
SEVERITY_COUNTS = """
SELECT job_id, severity, count(*) FROM insight_results
WHERE @list_contains($job_ids; job_id)
GROUP BY job_id, severity
"""
# Counts by kind and severity over the running jobs (for /metrics).
KIND_COUNTS = """
SELECT kind, severity, count(*) FROM insight_results
WHERE @list_contains($job_ids; job_id)
GROUP BY kind, severity
"""


class UnknownFilter(ValueError):
    """A kind or severity outside the allow-lists."""


def checked(kind: str | None, severity: str | None) -> None:
    """UnknownFilter unless ``kind`` and ``severity`` are None or on the allow-lists."""
    if kind is not None and kind not in KINDS:
        raise UnknownFilter(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
    if severity is not None and severity not in SEVERITIES:
        raise UnknownFilter(f"unknown severity {severity!r}; known: {', '.join(SEVERITIES)}")


def thresholds(con: duckdb.DuckDBPyConnection) -> dict[str, float]:
    """The thresholds in force (every answer that lists insights carries them)."""
    return insights.thresholds(con)


def job_insights(
    con: duckdb.DuckDBPyConnection, job_id: str, kind: str | None = None, severity: str | None = None
) -> dict[str, Any]:
    """One job's answer: ``job_id``, ``as_of``, ``thresholds``, ``insights`` (whether the job
    exists is the caller's check)."""
    checked(kind, severity)
    rows = records(con.execute(sql_for(con, JOB_INSIGHTS), {"job_id": job_id, "kind": kind, "severity": severity}))
    (as_of,) = db.one(con, JOB_AS_OF, {"job_id": job_id})
    return {"job_id": job_id, "as_of": plain(as_of), "thresholds": thresholds(con), "insights": rows}


def fleet_insights(
    con: duckdb.DuckDBPyConnection,
    filters: Filters,
    kind: str | None,
    severity: str | None,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """One page of the fleet's insights: ``insights`` (each with its job's ``status``,
    ``model_name`` and ``job_start_time``), ``as_of`` (the newest computation's),
    ``thresholds``, ``next_cursor``."""
    checked(kind, severity)
    after: dict[str, Any] = {"after_start": None, "after_id": None, **{f"k{i}": None for i in range(1, KEY_ARITY + 1)}}
    if cursor:
        after = _after(pages.decode("insights", cursor, 2 + KEY_ARITY))
    params = {**filters.params(), "kind": kind, "severity": severity, **after, "limit": limit + 1}
    rows = records(con.execute(sql_for(con, FLEET_PAGE), params))
    rows, next_cursor = pages.page(rows, limit, "insights", _keyset)
    for row in rows:
        for i in range(1, KEY_ARITY + 1):
            del row[f"k{i}"]
    (as_of,) = db.one(con, FLEET_AS_OF)
    return {"insights": rows, "as_of": plain(as_of), "thresholds": thresholds(con), "next_cursor": next_cursor}


def _keyset(row: dict[str, Any]) -> list[Any]:
    """A fleet cursor's values: the job's start and id, then the insight's KEY (k1, k2, …)."""
    return [row["job_start_time"], row["job_id"], *(row[f"k{i}"] for i in range(1, KEY_ARITY + 1))]


# The types of a fleet cursor's values: the job's start (ISO time or None), its id, then KEY.
_KEY_TYPES: tuple[type | tuple[type, ...], ...] = (int, str, int, str, int, str, (int, float))


def _after(values: list[Any]) -> dict[str, Any]:
    """A decoded fleet cursor as the page query's parameters; BadCursor when a value has the
    wrong type (it would fail in the query: a bug's 500, not the client's 422)."""
    start, job_id, *key = values
    if not isinstance(job_id, str) or any(
        isinstance(v, bool) or not isinstance(v, t) for v, t in zip(key, _KEY_TYPES, strict=True)
    ):
        raise pages.BadCursor("cursor is not one this API handed out")
    after_start = pages.timestamp(start) if start is not None else None
    return {"after_start": after_start, "after_id": job_id, **{f"k{i}": v for i, v in enumerate(key, 1)}}


def severity_counts(con: duckdb.DuckDBPyConnection, job_ids: list[str]) -> dict[str, dict[str, int]]:
    """Per job asked for, its insights by severity: every severity, zeros included."""
    counts = {job_id: dict.fromkeys(SEVERITIES, 0) for job_id in job_ids}
    for job_id, severity, count in con.execute(sql_for(con, SEVERITY_COUNTS), {"job_ids": job_ids}).fetchall():
        counts[job_id][severity] = count
    return counts


def kind_counts(con: duckdb.DuckDBPyConnection, job_ids: list[str]) -> dict[tuple[str, str], int]:
    """Over the jobs asked for, insights by (kind, severity): every kind, zeros included."""
    counts = {(kind, SEVERITY_OF[kind]): 0 for kind in KINDS}
    for kind, severity, count in con.execute(sql_for(con, KIND_COUNTS), {"job_ids": job_ids}).fetchall():
        counts[(kind, severity)] = count
    return counts
