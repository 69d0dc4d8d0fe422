"""One job's histories: its step rows (paged, or downsampled for charts) and its GPU readings.

Fields and columns come from allow-lists; values are bound parameters.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import duckdb

from . import db, pages
from .queries import plain

# Fields of a step row that a client may select (columns of step_metrics).
STEP_FIELDS: tuple[str, ...] = (
    "ts",
    "loss",
    "eval_loss",
    "learning_rate",
    "samples_per_second",
    "iteration_time",
    "samples",
    "seconds",
    "delta",
    "grad_norm",
    "epoch",
)
# Fields whose min and max a downsampled chart keeps per bucket.
NUMERIC_FIELDS = tuple(f for f in STEP_FIELDS if f != "ts")

STEPS_PAGE = """
SELECT step, {fields}
FROM step_metrics
WHERE job_id = $job_id AND step > $after AND ($to_step IS NULL OR step <= $to_step)
ORDER BY step
LIMIT $limit
"""

# Downsampling for charts: split the range into buckets of equal row counts; keep the first
# and last step, and in each bucket the rows holding the min and max of every numeric field
# asked for. Deterministic, and a spike is never averaged away. One aggregation pass finds
# every extreme.
STEPS_DOWNSAMPLED = """
WITH rows AS MATERIALIZED (
    SELECT step, {columns}, ntile($buckets) OVER (ORDER BY step) AS bucket
    FROM step_metrics
    WHERE job_id = $job_id AND step > $after AND ($to_step IS NULL OR step <= $to_step)
), extremes AS (
    SELECT [{extremes}] AS steps FROM rows GROUP BY bucket
), keep AS (
    SELECT min(step) AS step FROM rows
    UNION SELECT max(step) FROM rows
    UNION SELECT unnest(steps) FROM extremes
)
SELECT step, {fields} FROM rows WHERE step IN (SELECT step FROM keep) ORDER BY step
"""
EXTREME = "arg_min(step, {f}) FILTER (WHERE isfinite({f})), arg_max(step, {f}) FILTER (WHERE isfinite({f}))"

GPUS_PAGE = """
SELECT gpu_index, step, gpu_uuid, utilization_percent, memory_used_mb, memory_total_mb, temperature_c, power_w
FROM step_gpus
WHERE job_id = $job_id
  AND ($gpu IS NULL OR gpu_index = $gpu)
  AND (gpu_index > $after_gpu OR (gpu_index = $after_gpu AND step > $after_step))
ORDER BY gpu_index, step
LIMIT $limit
"""


class TooFewPoints(ValueError):
    """``max_points`` too small to keep the first and last step and every extreme."""


def step_history(
    con: duckdb.DuckDBPyConnection,
    job_id: str,
    fields: list[str],
    cursor: str | None,
    from_step: int | None,
    to_step: int | None,
    limit: int,
    max_points: int | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of a job's steps (keyset by step), or with ``max_points`` the whole range
    downsampled; and the next page's cursor."""
    after = pages.decode("steps", cursor, 1)[0] if cursor else (from_step - 1 if from_step else -1)
    if not isinstance(after, int) or isinstance(after, bool):
        raise pages.BadCursor("cursor is not one this API handed out")
    if max_points is not None:
        numeric = max(1, sum(f in NUMERIC_FIELDS for f in fields))
        if max_points < 2 + 2 * numeric:
            raise TooFewPoints(
                f"max_points must be at least {2 + 2 * numeric} for {numeric} numeric field(s): "
                "the first and last step, and a minimum and a maximum of each field per bucket"
            )
        return steps_downsampled(con, job_id, fields, after, to_step, max_points), None
    rows, last = steps_page(con, job_id, fields, after, to_step, limit)
    return rows, pages.encode("steps", [last]) if last is not None else None


def steps_page(
    con: duckdb.DuckDBPyConnection, job_id: str, fields: list[str], after: int, to_step: int | None, limit: int
) -> tuple[list[dict[str, Any]], int | None]:
    """Up to ``limit`` step rows after step ``after``; and the last step when more follow."""
    sql = STEPS_PAGE.format(fields=", ".join(_checked(fields)))
    rows = _records(con.execute(sql, {"job_id": job_id, "after": after, "to_step": to_step, "limit": limit + 1}))
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1]["step"]
    return rows, None


def steps_downsampled(
    con: duckdb.DuckDBPyConnection, job_id: str, fields: list[str], after: int, to_step: int | None, max_points: int
) -> list[dict[str, Any]]:
    """At most about ``max_points`` rows that keep the first and last step and every extreme."""
    numeric = [f for f in _checked(fields) if f in NUMERIC_FIELDS] or ["loss"]
    buckets = max(1, (max_points - 2) // (2 * len(numeric)))
    extremes = ", ".join(EXTREME.format(f=f) for f in numeric)
    # the bucket extremes may be of a field not asked for (loss, when only ts is)
    columns = list(dict.fromkeys([*fields, *numeric]))
    sql = STEPS_DOWNSAMPLED.format(fields=", ".join(fields), columns=", ".join(columns), extremes=extremes)
    return _records(con.execute(sql, {"job_id": job_id, "after": after, "to_step": to_step, "buckets": buckets}))


SAMPLES_PAGE = """
SELECT gpu_index, host, ts, gpu_uuid, utilization_percent, memory_used_mb, memory_total_mb, temperature_c,
       power_w, sm_clock_mhz, clocks_event_reasons
FROM gpu_samples
WHERE job_id = $job_id
  AND ($gpu IS NULL OR gpu_index = $gpu)
  AND (gpu_index > $after_gpu
       OR (gpu_index = $after_gpu AND (host > $after_host OR (host = $after_host AND ts > $after_ts))))
ORDER BY gpu_index, host, ts
LIMIT $limit
"""

HAS_SAMPLES = "SELECT count(*) > 0 FROM (SELECT 1 FROM gpu_samples WHERE job_id = $job_id LIMIT 1)"


def gpu_readings(
    con: duckdb.DuckDBPyConnection, job_id: str, gpu: int | None, cursor: str | None, limit: int
) -> tuple[str, list[dict[str, Any]], str | None]:
    """The job's GPU samples (or, without any, the readings logged with its steps), by GPU.

    Returns the source (``gpu_samples`` or ``step_readings``), one page, and the next cursor.
    """
    if db.one(con, HAS_SAMPLES, {"job_id": job_id})[0]:
        gpu_after, host_after, ts_after = pages.decode("gpus:samples", cursor, 3) if cursor else (-1, "", None)
        if not isinstance(gpu_after, int) or not isinstance(host_after, str):
            raise pages.BadCursor("cursor is not one this API handed out")
        params = {
            "job_id": job_id, "gpu": gpu, "after_gpu": gpu_after, "after_host": host_after,
            "after_ts": pages.timestamp(ts_after) if ts_after is not None else datetime.min, "limit": limit + 1,
        }  # fmt: skip
        rows = _records(con.execute(SAMPLES_PAGE, params))
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1] if more else None
        next_cursor = pages.encode("gpus:samples", [last["gpu_index"], last["host"], last["ts"]]) if last else None
        return "gpu_samples", rows, next_cursor
    gpu_after, step_after = pages.decode("gpus", cursor, 2) if cursor else (-1, -1)
    if not isinstance(gpu_after, int) or not isinstance(step_after, int):
        raise pages.BadCursor("cursor is not one this API handed out")
    params = {"job_id": job_id, "gpu": gpu, "after_gpu": gpu_after, "after_step": step_after, "limit": limit + 1}
    rows = _records(con.execute(GPUS_PAGE, params))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = pages.encode("gpus", [rows[-1]["gpu_index"], rows[-1]["step"]]) if more else None
    return "step_readings", rows, next_cursor


# Charts of GPU readings: per GPU, buckets of equal width in time (or step); keep each GPU's first
# and last reading and, per bucket, those holding the min and max of every figure. One
# aggregation pass computes all the extremes (a UNION per figure would scan the rows 8 times).
GPU_FIGURES = ("utilization_percent", "memory_used_mb", "temperature_c", "power_w")
GPU_DOWNSAMPLED = """
WITH keyed AS (SELECT *, {x} AS x FROM ({source})),
span AS (SELECT gpu_index, host, min(x) AS lo, max(x) AS hi FROM keyed GROUP BY gpu_index, host),
rows AS MATERIALIZED (
    SELECT k.*, least(CAST(floor((k.x - s.lo) / nullif(s.hi - s.lo, 0) * $buckets) AS BIGINT), $buckets - 1) AS bucket
    FROM keyed k JOIN span s USING (gpu_index, host)
), extremes AS (
    SELECT gpu_index, host, [{extremes}] AS xs FROM rows GROUP BY gpu_index, host, bucket
), keep AS (
    SELECT gpu_index, host, lo AS x FROM span
    UNION SELECT gpu_index, host, hi FROM span
    UNION SELECT gpu_index, host, unnest(xs) FROM extremes
)
SELECT * EXCLUDE (x, bucket) FROM rows SEMI JOIN keep USING (gpu_index, host, x)
ORDER BY gpu_index, host, x
"""
GPU_EXTREME = "arg_min(x, {f}) FILTER (WHERE isfinite({f})), arg_max(x, {f}) FILTER (WHERE isfinite({f}))"
SAMPLES_OF_JOB = """
SELECT gpu_index, host, ts, gpu_uuid, utilization_percent, memory_used_mb, memory_total_mb, temperature_c,
       power_w, sm_clock_mhz, clocks_event_reasons
FROM gpu_samples WHERE job_id = $job_id AND ($gpu IS NULL OR gpu_index = $gpu)
"""
# Readings logged with steps carry the step's timestamp, so that both sources chart over time.
READINGS_OF_JOB = """
SELECT g.gpu_index, '' AS host, g.step, s.ts, g.gpu_uuid, g.utilization_percent, g.memory_used_mb,
       g.memory_total_mb, g.temperature_c, g.power_w
FROM step_gpus g LEFT JOIN steps s ON s.job_id = g.job_id AND s.step = g.step
WHERE g.job_id = $job_id AND ($gpu IS NULL OR g.gpu_index = $gpu)
"""


def gpu_readings_downsampled(
    con: duckdb.DuckDBPyConnection, job_id: str, gpu: int | None, max_points: int
) -> tuple[str, list[dict[str, Any]]]:
    """About ``max_points`` readings per GPU, keeping each GPU's first, last and every extreme."""
    sampled = db.one(con, HAS_SAMPLES, {"job_id": job_id})[0]
    buckets = max(1, (max_points - 2) // (2 * len(GPU_FIGURES)))
    sql = GPU_DOWNSAMPLED.format(
        source=SAMPLES_OF_JOB if sampled else READINGS_OF_JOB,
        x="epoch(ts)" if sampled else "step",
        extremes=", ".join(GPU_EXTREME.format(f=f) for f in GPU_FIGURES),
    )
    rows = _records(con.execute(sql, {"job_id": job_id, "gpu": gpu, "buckets": buckets}))
    if not sampled:
        for row in rows:
            row.pop("host")
    return ("gpu_samples" if sampled else "step_readings"), rows


def _checked(fields: list[str]) -> list[str]:
    unknown = [f for f in fields if f not in STEP_FIELDS]
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(unknown)}; known: {', '.join(STEP_FIELDS)}")
    return fields


def _records(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, (plain(v) for v in row), strict=True)) for row in cursor.fetchall()]
