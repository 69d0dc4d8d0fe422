"""One job's histories: its step rows (paged, or downsampled for charts) and its GPU readings.

Fields and columns come from allow-lists; values are bound parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import numpy as np

from . import db, pages, parts, retention, sealed_reads
from .pg_reader import is_postgres, sql_for
from .queries import plain, records

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
# every extreme. A range of $max_points rows or fewer is kept whole (its buckets' other rows
# were left out too, 2,252 of 2,900 at max_points=10,000). Each row carries the range's count
# (range_rows): a chart that kept fewer left some out (``downsampled``). {source}: step_metrics,
# or another relation of (job_id, step, …) such as a metric's points (warehouse/metric_history.py).
# downsampled_sql builds it for the engine read.
STEPS_DOWNSAMPLED = """
WITH rows AS MATERIALIZED (
    SELECT step, {columns}, ntile($buckets) OVER (ORDER BY step) AS bucket
    FROM {source} AS source
    WHERE job_id = $job_id AND step > $after AND ($to_step IS NULL OR step <= $to_step)
), extremes AS (
    SELECT [{extremes}] AS steps FROM rows GROUP BY bucket
), keep AS (
    SELECT min(step) AS step FROM rows
    UNION SELECT max(step) FROM rows
    UNION SELECT unnest(steps) FROM extremes
), counted AS (
    SELECT count(*) AS range_rows FROM rows
)
SELECT step, {fields}, c.range_rows FROM rows, counted AS c
WHERE c.range_rows <= $max_points OR step IN (SELECT step FROM keep)
ORDER BY step
"""
# Of equal extremes, the smallest step: (value, step) compared as a pair, so that the same request
# always keeps the same rows (arg_min alone keeps whichever tied row a thread meets first).
EXTREME = (
    "arg_min(step, ({f}, step)) FILTER (WHERE isfinite({f})), arg_max(step, ({f}, -step)) FILTER (WHERE isfinite({f}))"
)
# PostgreSQL has no arg_min: the first step in the order of the values, then of the steps (the
# same rows as EXTREME)
EXTREME_TEMPLATE = (
    "@first_by(step; {f}, step) FILTER (WHERE @finite({f})), "
    "@first_by(step; {f} DESC, step) FILTER (WHERE @finite({f}))"
)

# with the step's timestamp, as a chart of them has (READINGS_OF_JOB): joined to the page once cut
# (joined first, a page of 1,000 of a job's 100,000 readings took 2-5x as long)
GPUS_PAGE = """
SELECT p.gpu_index, p.step, s.ts, p.gpu_uuid, p.utilization_percent, p.memory_used_mb, p.memory_total_mb,
       p.temperature_c, p.power_w
FROM (
    SELECT gpu_index, step, gpu_uuid, utilization_percent, memory_used_mb, memory_total_mb, temperature_c, power_w
    FROM step_gpus
    WHERE job_id = $job_id
      AND ($gpu IS NULL OR gpu_index = $gpu)
      AND (gpu_index > $after_gpu OR (gpu_index = $after_gpu AND step > $after_step))
    ORDER BY gpu_index, step
    LIMIT $limit
) AS p
LEFT JOIN steps s ON s.job_id = $job_id AND s.step = p.step
ORDER BY p.gpu_index, p.step
"""


class TooFewPoints(ValueError):
    """``max_points`` too small to keep the first and last step and every extreme."""


@dataclass(frozen=True)
class History:
    """A history by step (a job's steps, a metric's points): one keyset page and the next page's
    cursor, or the whole range downsampled for charts (no cursor); ``downsampled``: whether rows
    of the range were left out (never for a page; false for a chart that kept every row)."""

    rows: list[dict[str, Any]]
    next_cursor: str | None
    downsampled: bool


def step_history(
    con: duckdb.DuckDBPyConnection,
    job_id: str,
    fields: list[str],
    cursor: str | None,
    from_step: int | None,
    to_step: int | None,
    limit: int,
    max_points: int | None,
) -> History:
    """One page of a job's steps (keyset by step), or with ``max_points`` the whole range
    downsampled."""
    after = after_step("steps", cursor, from_step)
    if max_points is None:
        rows, next_cursor = steps_page(con, job_id, fields, after, to_step, limit)
        return History(rows, next_cursor, downsampled=False)
    numeric = max(1, sum(f in NUMERIC_FIELDS for f in fields))
    if max_points < 2 + 2 * numeric:
        raise TooFewPoints(
            f"max_points must be at least {2 + 2 * numeric} for {numeric} numeric field(s): "
            "the first and last step, and a minimum and a maximum of each field per bucket"
        )
    return steps_downsampled(con, job_id, fields, after, to_step, max_points)


def chart(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> History:
    """The History of a downsampled_sql query: its rows, without the range's count they carry,
    and whether they left rows of the range out."""
    rows = records(con.execute(sql, params))
    range_rows = rows[0]["range_rows"] if rows else 0  # a chart keeps the first and last row of any
    for row in rows:
        del row["range_rows"]
    return History(rows, None, downsampled=range_rows > len(rows))


def after_step(kind: str, cursor: str | None, from_step: int | None, before_any: int = -1) -> int:
    """The step a keyset page by step starts after: the one before ``from_step`` (else
    ``before_any``), or the cursor's when it is further on: a cursor never takes a page below
    ``from_step`` (a forged or reused one, ``{"v": [10]}`` with ``from_step=100``, gave steps 11, 12, …);
    BadCursor for a cursor of no step."""
    start = from_step - 1 if from_step is not None else before_any
    if not cursor:
        return start
    (after,) = pages.decode(kind, cursor, 1)  # decode lets no bool through
    if not isinstance(after, int):
        raise pages.BadCursor("cursor is not one this API handed out")
    return max(after, start)


def steps_page(
    con: duckdb.DuckDBPyConnection, job_id: str, fields: list[str], after: int, to_step: int | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """Up to ``limit`` step rows after step ``after``; and the next page's cursor when more follow."""
    sql = STEPS_PAGE.format(fields=", ".join(_checked(fields)))
    rows = records(con.execute(sql, {"job_id": job_id, "after": after, "to_step": to_step, "limit": limit + 1}))
    return pages.page(rows, limit, "steps", lambda row: [row["step"]])


def steps_downsampled(
    con: duckdb.DuckDBPyConnection, job_id: str, fields: list[str], after: int, to_step: int | None, max_points: int
) -> History:
    """At most about ``max_points`` rows that keep the first and last step and every extreme."""
    numeric = [f for f in _checked(fields) if f in NUMERIC_FIELDS] or ["loss"]
    buckets = max(1, (max_points - 2) // (2 * len(numeric)))
    # the bucket extremes may be of a field not asked for (loss, when only ts is)
    columns = list(dict.fromkeys([*fields, *numeric]))
    sql = downsampled_sql(con, "step_metrics", ", ".join(fields), ", ".join(columns), numeric)
    params = {"job_id": job_id, "after": after, "to_step": to_step, "buckets": buckets, "max_points": max_points}
    return chart(con, sql, params)


def downsampled_sql(con: Any, source: str, fields: str, columns: str, numeric: list[str]) -> str:
    """STEPS_DOWNSAMPLED for the engine ``con`` reads, keeping the extremes of the ``numeric``
    columns (DuckDB: its text as it always was)."""
    if not is_postgres(con):
        extremes = ", ".join(EXTREME.format(f=f) for f in numeric)
        return STEPS_DOWNSAMPLED.format(source=source, fields=fields, columns=columns, extremes=extremes)
    # PostgreSQL's list literal is ARRAY[...]
    extremes = sql_for(con, ", ".join(EXTREME_TEMPLATE.format(f=f) for f in numeric))
    sql = STEPS_DOWNSAMPLED.replace("[{extremes}]", "ARRAY[{extremes}]")
    return sql.format(source=source, fields=fields, columns=columns, extremes=extremes)


# A GPU is its gpu_key (its UUID when known): two GPUs of a host may share an index (each
# container numbers its GPUs from 0), so the keyset runs over (index, host, key, ts).
SAMPLES_PAGE = """
SELECT gpu_index, host, ts, gpu_uuid, utilization_percent, memory_used_mb, memory_total_mb, temperature_c,
       power_w, sm_clock_mhz, clocks_event_reasons, gpu_key
FROM gpu_samples
WHERE job_id = $job_id
  AND ($gpu IS NULL OR gpu_index = $gpu)
  AND (gpu_index, host, gpu_key, ts) > ($after_gpu, $after_host, $after_key, $after_ts)
ORDER BY gpu_index, host, gpu_key, ts
LIMIT $limit
"""

HAS_SAMPLES = "SELECT count(*) > 0 FROM (SELECT 1 FROM gpu_samples WHERE job_id = $job_id LIMIT 1) AS one"
# A job whose raw samples retention dropped (--keep-raw-days), all or some, keeps its per-minute
# rollups: its readings are then those minutes (source gpu_minutes), not its step readings, as its
# analytics, nor the samples left (a GPU sampled only on a pruned day would be missing)
HAS_MINUTES = "SELECT count(*) > 0 FROM (SELECT 1 FROM job_gpu_series WHERE job_id = $job_id LIMIT 1) AS one"
# A minute as a reading: its first and last sample's times, its count, each figure's count of
# finite readings and sum (the mean, made in Python as the charts' buckets make theirs), minimum
# and maximum.
MINUTES_PAGE = """
SELECT gpu_index, host, first_ts AS ts, last_ts, gpu_uuid, samples, memory_total_mb_max AS memory_total_mb,
       {figures}, gpu_key, minute
FROM gpu_minutes
WHERE job_id = $job_id
  AND ($gpu IS NULL OR gpu_index = $gpu)
  AND (gpu_index, host, gpu_key, minute) > ($after_gpu, $after_host, $after_key, $after_minute)
ORDER BY gpu_index, host, gpu_key, minute
LIMIT $limit
"""
MINUTE_FIGURE = "{f}_n AS n__{f}, {f}_sum AS sum__{f}, {f}_min AS min__{f}, {f}_max AS max__{f}"


def gpu_readings(
    con: duckdb.DuckDBPyConnection, job_id: str, gpu: int | None, cursor: str | None, limit: int
) -> tuple[str, list[dict[str, Any]], str | None]:
    """The job's GPU samples (or, without any, the readings logged with its steps), by GPU.

    Returns the source (``gpu_samples``; ``gpu_minutes``, each reading a minute of samples, for a
    job some or all of whose raw samples retention dropped; or ``step_readings``), one page, and
    the next cursor.
    """
    if _all_sampled(con, job_id):
        start = (-1, "", "", None)
        gpu_after, host_after, key_after, ts_after = pages.decode("gpus:samples", cursor, 4) if cursor else start
        if not isinstance(gpu_after, int) or not isinstance(host_after, str) or not isinstance(key_after, str):
            raise pages.BadCursor("cursor is not one this API handed out")
        params = {
            "job_id": job_id, "gpu": gpu, "after_gpu": gpu_after, "after_host": host_after, "after_key": key_after,
            "after_ts": pages.timestamp(ts_after) if ts_after is not None else datetime.min, "limit": limit + 1,
        }  # fmt: skip
        rows = records(con.execute(SAMPLES_PAGE, params))
        rows, next_cursor = pages.page(rows, limit, "gpus:samples", _series_key("ts"))
        for row in rows:
            row.pop("gpu_key")
        return "gpu_samples", rows, next_cursor
    if db.one(con, HAS_MINUTES, {"job_id": job_id})[0]:
        return _minutes_page(con, job_id, gpu, cursor, limit)
    gpu_after, step_after = pages.decode("gpus", cursor, 2) if cursor else (-1, -1)
    if not isinstance(gpu_after, int) or not isinstance(step_after, int):
        raise pages.BadCursor("cursor is not one this API handed out")
    params = {"job_id": job_id, "gpu": gpu, "after_gpu": gpu_after, "after_step": step_after, "limit": limit + 1}
    rows = records(con.execute(GPUS_PAGE, params))
    rows, next_cursor = pages.page(rows, limit, "gpus", lambda row: [row["gpu_index"], row["step"]])
    return "step_readings", rows, next_cursor


def _series_key(last: str) -> Callable[[dict[str, Any]], list[Any]]:
    """The keyset of a page of samples or minutes: a row's GPU (index, host, key), then its ``last``
    column (``ts`` or ``minute``)."""
    return lambda row: [row["gpu_index"], row["host"], row["gpu_key"], row[last]]


# Charts of GPU readings: per GPU, buckets of equal width in time (or step); keep each GPU's first
# and last reading and, per bucket, those holding the min and max of every figure. One
# aggregation pass computes all the extremes (a UNION per figure would scan the rows 8 times).
GPU_FIGURES = ("utilization_percent", "memory_used_mb", "temperature_c", "power_w")
# samples have a fifth figure, their SM clock (a throttled GPU's dip is its minimum): the figures
# the per-minute rollups hold
SAMPLE_FIGURES = (*GPU_FIGURES, "sm_clock_mhz")
GPU_DOWNSAMPLED = """
WITH keyed AS (SELECT *, {x} AS x FROM ({source})),
span AS (SELECT host, gpu_key, min(x) AS lo, max(x) AS hi, count(*) AS readings FROM keyed GROUP BY host, gpu_key),
rows AS MATERIALIZED (
    SELECT k.*, least(CAST(floor((k.x - s.lo) / nullif(s.hi - s.lo, 0) * $buckets) AS BIGINT), $buckets - 1) AS bucket
    FROM keyed k JOIN span s USING (host, gpu_key)
), extremes AS (
    SELECT host, gpu_key, [{extremes}] AS xs FROM rows GROUP BY host, gpu_key, bucket
), keep AS (
    SELECT host, gpu_key, lo AS x FROM span
    UNION SELECT host, gpu_key, hi FROM span
    {keep_extremes}
)
SELECT * EXCLUDE (x, bucket, gpu_key) FROM rows SEMI JOIN keep USING (host, gpu_key, x)
ORDER BY gpu_index, host, gpu_key, x
LIMIT $max_points
"""
GPU_KEEP_EXTREMES = "UNION SELECT host, gpu_key, unnest(xs) FROM extremes"
# the readings of a GPU that has no more than its share are all kept (docs/api.md)
GPU_KEEP_FEW = (
    "UNION SELECT r.host, r.gpu_key, r.x FROM rows r JOIN span s USING (host, gpu_key) WHERE s.readings <= $share"
)
# The series (a GPU of a host: its key, its UUID when known, whatever indexes it had) that share an
# answer's max_points. With them, how many readings they hold: an answer that returns fewer left
# some out (``downsampled``).
GPU_SERIES = """
SELECT count(*), sum(readings) FROM (
    SELECT host, gpu_key, count(*) AS readings FROM ({source}) AS source GROUP BY host, gpu_key
) AS series
"""
# of equal extremes the earliest reading, as EXTREME
GPU_EXTREME = "arg_min(x, ({f}, x)) FILTER (WHERE isfinite({f})), arg_max(x, ({f}, -x)) FILTER (WHERE isfinite({f}))"
SAMPLES_OF_JOB = """
SELECT gpu_index, host, ts, gpu_uuid, utilization_percent, memory_used_mb, memory_total_mb, temperature_c,
       power_w, sm_clock_mhz, clocks_event_reasons, gpu_key
FROM gpu_samples WHERE job_id = $job_id AND ($gpu IS NULL OR gpu_index = $gpu)
"""
# Readings logged with steps carry the step's timestamp, so that both sources chart over time; their
# GPU is its index (a sample's key without a UUID).
READINGS_OF_JOB = """
SELECT g.gpu_index, '' AS host, g.step, s.ts, g.gpu_uuid, g.utilization_percent, g.memory_used_mb,
       g.memory_total_mb, g.temperature_c, g.power_w, '#' || CAST(g.gpu_index AS VARCHAR) AS gpu_key
FROM step_gpus g LEFT JOIN steps s ON s.job_id = g.job_id AND s.step = g.step
WHERE g.job_id = $job_id AND ($gpu IS NULL OR g.gpu_index = $gpu)
"""


# The same chart on PostgreSQL: no arg_min, SEMI JOIN or * EXCLUDE there; of equal extremes the
# earliest reading (docs/decisions.md, "extremes of equal values"); `/` of steps is DuckDB's, not
# an integer division. {columns}: the source's, but gpu_key.
GPU_DOWNSAMPLED_PG = """
WITH keyed AS (SELECT source.*, {x} AS x FROM ({source}) AS source),
span AS (SELECT host, gpu_key, min(x) AS lo, max(x) AS hi, count(*) AS readings FROM keyed GROUP BY host, gpu_key),
rows AS MATERIALIZED (
    SELECT k.*, least(CAST(floor(CAST(k.x - s.lo AS DOUBLE PRECISION) / nullif(s.hi - s.lo, 0) * $buckets) AS BIGINT),
                      $buckets - 1) AS bucket
    FROM keyed k JOIN span s USING (host, gpu_key)
), extremes AS (
    SELECT host, gpu_key, ARRAY[{extremes}] AS xs FROM rows GROUP BY host, gpu_key, bucket
), keep AS (
    SELECT host, gpu_key, lo AS x FROM span
    UNION SELECT host, gpu_key, hi FROM span
    {keep_extremes}
)
SELECT {columns} FROM rows WHERE (host, gpu_key, x) IN (SELECT host, gpu_key, x FROM keep)
ORDER BY gpu_index, host, gpu_key, x
LIMIT $max_points
"""
GPU_EXTREME_TEMPLATE = (
    "@first_by(x; {f}, x) FILTER (WHERE @finite({f})), @first_by(x; {f} DESC, x) FILTER (WHERE @finite({f}))"
)
SAMPLE_COLUMNS = (
    "gpu_index", "host", "ts", "gpu_uuid", "utilization_percent", "memory_used_mb", "memory_total_mb",
    "temperature_c", "power_w", "sm_clock_mhz", "clocks_event_reasons",
)  # fmt: skip
READING_COLUMNS = (
    "gpu_index", "host", "step", "ts", "gpu_uuid", "utilization_percent", "memory_used_mb", "memory_total_mb",
    "temperature_c", "power_w",
)  # fmt: skip


# Charts of long ranges read the per-minute rollups (gpu_minutes, revision 0015): per GPU (a GPU of
# a host: its key), buckets of $width seconds (whole minutes) from the job's first minute; a
# bucket's reading is its first sample's time, the mean of every figure over its finite readings,
# and each figure's minimum and maximum, which the rollups hold exactly.
MINUTES_PAGE_SQL = MINUTES_PAGE.format(figures=", ".join(MINUTE_FIGURE.format(f=f) for f in SAMPLE_FIGURES))
# Where a query of DuckDB's reads the minutes: the rows of the job's span only, from the hot table
# and the minute parts of those days (sealed_reads.between; gpu_minutes itself on PostgreSQL)
MINUTES = "{minutes}"
GPU_MINUTES_SPAN = """
SELECT min(minute), max(minute), count(DISTINCT (host, gpu_key))
FROM {minutes} WHERE job_id = $job_id AND gpu_index = $gpu
"""
# every GPU of the job: the same figures from the rollups' per-GPU summary (revision 0020)
GPU_SERIES_SPAN = "SELECT min(first_minute), max(last_minute), count(*) FROM job_gpu_series WHERE job_id = $job_id"
GPU_MINUTE_BUCKET = "CAST(floor((epoch(minute) - epoch($first)) / $width) AS BIGINT)"
GPU_MINUTES_OF_JOB = "WHERE job_id = $job_id AND ($gpu IS NULL OR gpu_index = $gpu) AND minute BETWEEN $first AND $last"
# The buckets, each figure's column holding its count of finite readings: the mean is the sum of
# its minutes' sums over that count, added by _ordered_sums (below).
GPU_MINUTES_DOWNSAMPLED = """
SELECT arg_max(gpu_index, minute) AS gpu_index, host, min(first_ts) AS ts, max(last_ts) AS last_ts,
       max(gpu_uuid) AS gpu_uuid, sum(samples) AS samples, count(*) AS minutes,
       {counts}, max(memory_total_mb_max) AS memory_total_mb,
       {{{minima}}} AS minimum, {{{maxima}}} AS maximum, gpu_key, {bucket} AS bucket,
       dense_rank() OVER (ORDER BY host, gpu_key) - 1 AS series
FROM {{minutes}}
{where}
GROUP BY host, gpu_key, bucket
ORDER BY gpu_index, host, gpu_key, ts
LIMIT $max_points
""".format(
    counts=", ".join(f"sum({f}_n) AS {f}" for f in SAMPLE_FIGURES),
    minima=", ".join(f"'{f}': min({f}_min)" for f in SAMPLE_FIGURES),
    maxima=", ".join(f"'{f}': max({f}_max)" for f in SAMPLE_FIGURES),
    bucket=GPU_MINUTE_BUCKET,
    where=GPU_MINUTES_OF_JOB,
)
# The same on PostgreSQL: each figure's minimum and maximum as columns (min__<figure>,
# max__<figure>) made into the two objects in Python; the bucket by @seconds_between.
GPU_MINUTE_BUCKET_TEMPLATE = "CAST(floor(@seconds_between($first; minute) / $width) AS BIGINT)"
GPU_MINUTES_DOWNSAMPLED_PG = """
SELECT @first_by(gpu_index; minute DESC) AS gpu_index, host, min(first_ts) AS ts, max(last_ts) AS last_ts,
       max(gpu_uuid) AS gpu_uuid, sum(samples) AS samples, count(*) AS minutes,
       {counts}, max(memory_total_mb_max) AS memory_total_mb,
       {minima}, {maxima}, gpu_key, {bucket} AS bucket,
       dense_rank() OVER (ORDER BY host, gpu_key) - 1 AS series
FROM gpu_minutes
{where}
GROUP BY host, gpu_key, bucket
ORDER BY gpu_index, host, gpu_key, ts
LIMIT $max_points
""".format(
    counts=", ".join(f"sum({f}_n) AS {f}" for f in SAMPLE_FIGURES),
    minima=", ".join(f"min({f}_min) AS min__{f}" for f in SAMPLE_FIGURES),
    maxima=", ".join(f"max({f}_max) AS max__{f}" for f in SAMPLE_FIGURES),
    bucket=GPU_MINUTE_BUCKET_TEMPLATE,
    where=GPU_MINUTES_OF_JOB,
)
GPU_MINUTE_SUMS_PG = """
WITH minutes AS (SELECT host, gpu_key, {bucket} AS bucket, {sums} FROM gpu_minutes {where}),
series AS (
    SELECT host, gpu_key, row_number() OVER (ORDER BY host, gpu_key) - 1 AS series
    FROM (SELECT DISTINCT host, gpu_key FROM minutes) AS keys
)
SELECT s.series, m.bucket, {sums} FROM minutes m JOIN series s USING (host, gpu_key)
""".format(
    sums=", ".join(f"{f}_sum" for f in SAMPLE_FIGURES), bucket=GPU_MINUTE_BUCKET_TEMPLATE, where=GPU_MINUTES_OF_JOB
)
# Every minute's sums with its bucket, its GPU numbered as the buckets' dense_rank numbers it: the
# buckets' rows give each GPU's number, $series, host and key (a join with a few rows; numbering the
# distinct GPUs of every minute again cost a week chart ~7 ms). A GPU whose buckets max_points cut
# off has no number here, and no minute read.
GPU_MINUTE_SUMS = """
WITH series AS (SELECT unnest($series) AS series, unnest($series_hosts) AS host, unnest($series_keys) AS gpu_key)
SELECT s.series, {bucket} AS bucket, {sums} FROM {{minutes}} JOIN series s USING (host, gpu_key)
{where}
""".format(sums=", ".join(f"{f}_sum" for f in SAMPLE_FIGURES), bucket=GPU_MINUTE_BUCKET, where=GPU_MINUTES_OF_JOB)


@dataclass(frozen=True)
class GpuReadings:
    """An answer of GPU readings, a keyset page or a chart: where the readings come from, what
    one reading stands for (``sample``: one sample or logged reading; ``minute``: a bucket of
    whole minutes of samples), for minutes the buckets' width; ``downsampled``: whether readings
    of the job's pages were left out or merged into buckets (never for a page);
    ``extremes_kept``: whether each GPU's lowest and highest value of every figure is in the
    answer (a reading's, or a bucket's minimum and maximum); a page's ``next_cursor`` (a chart
    has none)."""

    source: str
    resolution: str
    bucket_seconds: int | None
    readings: list[dict[str, Any]]
    downsampled: bool
    extremes_kept: bool
    next_cursor: str | None = None


def gpu_history(
    con: duckdb.DuckDBPyConnection, job_id: str, gpu: int | None, cursor: str | None, limit: int, max_points: int | None
) -> GpuReadings:
    """The job's GPU readings: with ``max_points`` the chart of gpu_readings_downsampled (which
    reads no cursor), else one keyset page of gpu_readings, whose minutes (``gpu_minutes``: raw
    samples dropped by retention, all or some) are buckets of one minute."""
    if max_points is not None:
        return gpu_readings_downsampled(con, job_id, gpu, max_points)
    source, rows, next_cursor = gpu_readings(con, job_id, gpu, cursor, limit)
    minutes = source == "gpu_minutes"
    return GpuReadings(
        source,
        "minute" if minutes else "sample",
        60 if minutes else None,
        rows,
        downsampled=False,
        extremes_kept=True,
        next_cursor=next_cursor,
    )


def gpu_readings_downsampled(
    con: duckdb.DuckDBPyConnection, job_id: str, gpu: int | None, max_points: int
) -> GpuReadings:
    """At most ``max_points`` readings in all, shared by the GPUs.

    When each GPU's share of ``max_points`` is no more than the minutes its samples span, or too
    small for a bucket of samples (under 2 + 2 per figure: 12), every reading is a bucket of whole
    minutes read from ``gpu_minutes`` (its mean, minimum and maximum of every figure: a spike
    survives), and so are they for a job some of whose minutes lost their raw samples to retention
    (its kept samples would leave out the pruned days, and a GPU sampled only then); else each GPU
    keeps its first and last sample and the samples with every figure's extremes per bucket. A job
    without samples charts the readings logged with its steps so, and
    a share under 10 (2 + 2 per figure) keeps their first and last alone: ``extremes_kept`` false."""
    span = _minutes_span(con, job_id, gpu)
    sampled: bool | None = None
    if span is not None:
        first, last, series, minutes_of_job = span
        minutes = int((last - first).total_seconds()) // 60 + 1
        share = _share(max_points, series)
        if minutes < share:
            sampled = _all_sampled(con, job_id)
        # a share too small for sample buckets charts buckets of one minute: fewer than the share
        if minutes >= share or not sampled or share < _bucket_share(SAMPLE_FIGURES):
            return _minutes_chart(con, job_id, gpu, max_points, span, share, sampled)
    if sampled is None:  # no minutes of the job (or of the GPU asked for): named as its page is
        sampled = _all_sampled(con, job_id)
        if not sampled and db.one(con, HAS_MINUTES, {"job_id": job_id})[0]:
            return GpuReadings("gpu_minutes", "minute", 60, [], downsampled=False, extremes_kept=True)
    source = SAMPLES_OF_JOB if sampled else READINGS_OF_JOB
    figures = SAMPLE_FIGURES if sampled else GPU_FIGURES
    params: dict[str, Any] = {"job_id": job_id, "gpu": gpu, "max_points": max_points}
    series, readings = db.one(con, GPU_SERIES.format(source=source), {"job_id": job_id, "gpu": gpu})
    share = _share(max_points, series)
    # per bucket a minimum and a maximum of each figure: none fits a share under _bucket_share
    buckets = (share - 2) // (_bucket_share(figures) - 2)
    keep = f"{GPU_KEEP_EXTREMES if buckets else ''}\n{GPU_KEEP_FEW}"
    if is_postgres(con):
        extremes = ", ".join(GPU_EXTREME_TEMPLATE.format(f=f) for f in figures)
        sql = sql_for(con, GPU_DOWNSAMPLED_PG).format(
            source=source,
            x="CAST(EXTRACT(EPOCH FROM ts) AS DOUBLE PRECISION)" if sampled else "step",
            extremes=sql_for(con, extremes),
            keep_extremes=keep,
            columns=", ".join(SAMPLE_COLUMNS if sampled else READING_COLUMNS),
        )
    else:
        sql = GPU_DOWNSAMPLED.format(
            source=source,
            x="epoch(ts)" if sampled else "step",
            extremes=", ".join(GPU_EXTREME.format(f=f) for f in figures),
            keep_extremes=keep,
        )
    rows = records(con.execute(sql, {**params, "buckets": max(1, buckets), "share": share}))
    if not sampled:
        for row in rows:
            row.pop("host")
    downsampled = len(rows) < int(readings or 0)
    source_name = "gpu_samples" if sampled else "step_readings"
    return GpuReadings(source_name, "sample", None, rows, downsampled, extremes_kept=buckets > 0 or not downsampled)


def _all_sampled(con: duckdb.DuckDBPyConnection, job_id: str) -> bool:
    """Whether the job's raw samples are its readings: it has some, and retention pruned none of
    its rolled-up minutes (else its minutes are, every GPU and day of them)."""
    return bool(db.one(con, HAS_SAMPLES, {"job_id": job_id})[0]) and not retention.raw_pruned(con, job_id)


def _bucket_share(figures: tuple[str, ...]) -> int:
    """The least share of a GPU that holds a bucket of samples: its first and last reading, and a
    minimum and a maximum of each figure."""
    return 2 + 2 * len(figures)


def _minutes_chart(
    con: duckdb.DuckDBPyConnection,
    job_id: str,
    gpu: int | None,
    max_points: int,
    span: tuple[datetime, datetime, int, sealed_reads.Rows],
    share: int,
    sampled: bool | None,
) -> GpuReadings:
    """The chart at minute resolution: per GPU at most ``share`` buckets of whole minutes from
    the job's first minute (``sampled``: whether the job has raw samples; None: not read yet)."""
    first, last, _, minutes_of_job = span
    minutes = int((last - first).total_seconds()) // 60 + 1
    # the raw samples of a long job are not read at all, nor those of one that aged out
    width = -(-minutes // share) * 60
    # the job's time range: on DuckDB the minute parts of its days only (minutes_of_job),
    # and in each the row groups of the job (a complete day's part is in job order)
    ranged: dict[str, Any] = {"job_id": job_id, "gpu": gpu, "first": first, "last": last, "width": width}
    postgres = is_postgres(con)
    if postgres:
        rows = records(con.execute(sql_for(con, GPU_MINUTES_DOWNSAMPLED_PG), {**ranged, "max_points": max_points}))
        sums = _ordered_sums(con, sql_for(con, GPU_MINUTE_SUMS_PG), ranged)
    else:
        ranged.update(minutes_of_job.params)
        sql = _reading(GPU_MINUTES_DOWNSAMPLED, minutes_of_job)
        rows = records(con.execute(sql, {**ranged, "max_points": max_points}))
        gpus = dict(sorted({row["series"]: (row["host"], row["gpu_key"]) for row in rows}.items()))
        ranged["series"] = list(gpus)
        ranged["series_hosts"] = [host for host, _ in gpus.values()]
        ranged["series_keys"] = [key for _, key in gpus.values()]
        sums = _ordered_sums(con, _reading(GPU_MINUTE_SUMS, minutes_of_job), ranged) if rows else {}
    # downsampled: a bucket merges minutes (each a reading of the pages of a job whose samples
    # aged out), or samples (the readings of the pages while they are kept)
    merged_minutes = merged_samples = False
    for row in rows:
        if postgres:
            _nest_extremes(row)
        row.pop("gpu_key")
        merged_minutes = merged_minutes or row.pop("minutes") > 1
        merged_samples = merged_samples or row["samples"] > 1
        bucket_sums = sums[row.pop("series"), row.pop("bucket")]
        for figure, total in zip(SAMPLE_FIGURES, bucket_sums, strict=True):
            count = row[figure]
            row[figure] = plain(total / count) if count else None
    # named as the page of the same job is: gpu_minutes once retention pruned any of its samples
    # (docs/decisions.md F9), also where the span alone chose minutes and the samples went unread
    all_sampled = _all_sampled(con, job_id) if sampled is None else sampled
    source = "gpu_samples" if all_sampled else "gpu_minutes"
    # a bucket of several samples merges readings of the pages only where the pages are samples
    downsampled = merged_minutes or (merged_samples and all_sampled)
    return GpuReadings(source, "minute", width, rows, downsampled, extremes_kept=True)


def _minutes_page(
    con: duckdb.DuckDBPyConnection, job_id: str, gpu: int | None, cursor: str | None, limit: int
) -> tuple[str, list[dict[str, Any]], str | None]:
    """One page of the job's GPU minutes, by GPU then minute: each a reading with its mean,
    minimum and maximum of every figure (as a chart's minute bucket)."""
    start = (-1, "", "", None)
    gpu_after, host_after, key_after, minute_after = pages.decode("gpus:minutes", cursor, 4) if cursor else start
    if not isinstance(gpu_after, int) or not isinstance(host_after, str) or not isinstance(key_after, str):
        raise pages.BadCursor("cursor is not one this API handed out")
    params = {
        "job_id": job_id, "gpu": gpu, "after_gpu": gpu_after, "after_host": host_after, "after_key": key_after,
        "after_minute": pages.timestamp(minute_after) if minute_after is not None else datetime.min, "limit": limit + 1,
    }  # fmt: skip
    rows = records(con.execute(MINUTES_PAGE_SQL, params))
    rows, next_cursor = pages.page(rows, limit, "gpus:minutes", _series_key("minute"))
    for row in rows:
        row.pop("gpu_key")
        row.pop("minute")
        _nest_extremes(row)
        for f in SAMPLE_FIGURES:
            count, total = row.pop(f"n__{f}"), row.pop(f"sum__{f}")
            row[f] = plain(total / count) if count else None
    return "gpu_minutes", rows, next_cursor


def _nest_extremes(row: dict[str, Any]) -> None:
    """A row's min__<figure> and max__<figure> columns as its ``minimum`` and ``maximum`` objects."""
    for extreme in ("minimum", "maximum"):
        row[extreme] = {f: row.pop(f"{extreme[:3]}__{f}") for f in SAMPLE_FIGURES}


def _ordered_sums(
    con: duckdb.DuckDBPyConnection, sql: str, ranged: dict[str, Any]
) -> dict[tuple[int, int], list[float]]:
    """Per (GPU number, bucket), each figure's minute sums (from ``sql``, GPU_MINUTE_SUMS as the
    engine reads it) added in ascending order: the value of
    @ordered_sum (the same bits whatever the threads). DuckDB would sort a list per bucket and
    figure (list_sum(list_sort(list(x))): most of a week chart's time); here one sort per figure
    orders every bucket's row of a grid, and a cumulative sum, which adds in order, totals each
    row from 0.0 as DuckDB's sum does. A NULL sum (a minute without a finite reading) counts as
    nothing, as in list_sum: it and the padding are NaN, sorted last, then added as 0.0."""
    data = con.execute(sql, ranged).fetchnumpy()
    if not len(data["bucket"]):
        return {}
    stride = int(data["bucket"].max()) + 1
    order = np.argsort(np.asarray(data["series"], dtype=np.int64) * stride + data["bucket"], kind="stable")
    keys = (np.asarray(data["series"], dtype=np.int64) * stride + data["bucket"])[order]
    first_of_group = np.ones(len(keys), dtype=bool)
    first_of_group[1:] = keys[1:] != keys[:-1]
    starts = np.flatnonzero(first_of_group)
    sizes = np.diff(np.append(starts, len(keys)))
    group = np.repeat(np.arange(len(starts)), sizes)
    place = np.arange(len(keys)) - np.repeat(starts, sizes) + 1  # column 0 is the sum's start, 0.0
    totals = np.empty((len(starts), len(SAMPLE_FIGURES)))
    grid = np.empty((len(starts), int(sizes.max()) + 1))
    for i, figure in enumerate(SAMPLE_FIGURES):
        grid.fill(np.nan)
        grid[group, place] = _floats(data[f"{figure}_sum"])[order]
        grid[:, 1:].sort(axis=1)
        grid[:, 0] = 0.0
        grid[np.isnan(grid)] = 0.0
        totals[:, i] = np.cumsum(grid, axis=1)[:, -1]
    numbers, buckets = (keys[starts] // stride).tolist(), (keys[starts] % stride).tolist()
    return dict(zip(zip(numbers, buckets, strict=True), totals.tolist(), strict=True))


def _floats(column: Any) -> Any:
    """A fetched column as float64 values, NULL as NaN."""
    if isinstance(column, np.ma.MaskedArray):
        return np.ma.filled(column.astype(np.float64), np.nan)
    return np.asarray(column, dtype=np.float64)


def _share(max_points: int, series: int) -> int:
    """Each GPU's share of ``max_points``: at least its first and last reading."""
    share = max_points // max(1, series)
    if share < 2:
        raise TooFewPoints(
            f"max_points must be at least {2 * series} for {series} GPU(s): the first and last reading of each"
        )
    return share


def _minutes_span(
    con: duckdb.DuckDBPyConnection, job_id: str, gpu: int | None
) -> tuple[datetime, datetime, int, sealed_reads.Rows] | None:
    """The job's first and last minute of GPU samples and how many GPUs (every GPU: from
    ``job_gpu_series``, its rows grouped per GPU; one GPU: from its minutes), and where its
    minutes are read; None for a job without any."""
    first, last, series = db.one(con, GPU_SERIES_SPAN, {"job_id": job_id})
    if first is not None:
        minutes_of_job = sealed_reads.between(con, parts.GPU_MINUTES, first, last)
    elif gpu is not None:
        minutes_of_job = sealed_reads.whole(parts.GPU_MINUTES)  # as before job_gpu_series: every minute
    else:
        return None
    if gpu is not None:
        sql = _reading(GPU_MINUTES_SPAN, minutes_of_job)
        first, last, series = db.one(con, sql, {"job_id": job_id, "gpu": gpu, **minutes_of_job.params})
    return None if first is None else (first, last, series, minutes_of_job)


def _reading(sql: str, minutes: sealed_reads.Rows) -> str:
    """A query of the minutes (one naming MINUTES) reading these rows."""
    return sql.replace(MINUTES, minutes.sql)


def _checked(fields: list[str]) -> list[str]:
    unknown = [f for f in fields if f not in STEP_FIELDS]
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(unknown)}; known: {', '.join(STEP_FIELDS)}")
    return fields
