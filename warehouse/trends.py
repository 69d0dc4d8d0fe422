"""Fleet-wide trends for the dashboard's summary page: GPU hours, the throughput distribution,
and GPU utilization over time across all jobs.

Every query takes the job list's filters (status, model, start time) and reads ``job_results``
for the jobs, then their GPU hours (the view ``job_gpu_hours``) or their GPU readings summed
per minute (``utilization_minutes``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import duckdb

from . import db
from .dialect import render
from .fleet import FILTER, Filters
from .pg_reader import sql_for
from .queries import plain

# The queries are templates: pg_reader.sql_for renders their macros for the engine read.

# GPU hours of the chosen jobs: the view job_gpu_hours holds the one definition (total_seconds x
# GPUs / 3600 per job; see docs/views.md), fleet_gpu_hours the same sum over every job. Jobs
# with neither a duration nor a GPU count have no GPU hours and are counted apart.
GPU_HOURS = f"""
WITH chosen AS (SELECT job_id FROM job_results WHERE {FILTER})
SELECT @ordered_sum(g.gpu_hours) AS gpu_hours, count(g.gpu_hours) AS jobs_counted, count(*) AS jobs
FROM job_gpu_hours g
JOIN chosen c ON c.job_id = g.job_id
"""

# Equal-width bins between the lowest and the highest average throughput (one bin when all
# jobs have the same); jobs without a throughput are left out.
THROUGHPUT_HISTOGRAM = f"""
WITH t AS (
    SELECT average_samples_per_second AS x FROM job_results
    WHERE {FILTER} AND @finite(average_samples_per_second)
), span AS (
    SELECT min(x) AS lo, max(x) AS hi, @fsub(max(x); min(x)) AS width,
           CASE WHEN max(x) > min(x) THEN $bins ELSE 1 END AS n
    FROM t
), binned AS (
    SELECT least(CAST(floor(@fdiv(@fsub(x; lo); nullif(width, 0)) * n) AS BIGINT), n - 1) AS bin, count(*) AS jobs
    FROM t, span
    GROUP BY 1
), edges AS (
    -- the n + 1 bin edges: lo + width x e / n, else (the product beyond a double: a throughput of
    -- 1e307 in 20 bins) lo + width / n x e; guarded, as PostgreSQL's float8 raises on overflow
    SELECT g.e, n, hi,
           CASE WHEN @finite(@fmul(width; g.e)) THEN lo + width * g.e / n ELSE lo + width / n * g.e END AS edge
    FROM span, generate_series(0, (SELECT n FROM span)) g(e)
    WHERE lo IS NOT NULL
), bounds AS (
    SELECT e AS bin, n, edge AS low, CASE WHEN n = 1 THEN hi ELSE lead(edge) OVER (ORDER BY e) END AS high
    FROM edges
)
SELECT b.bin, b.low, b.high, coalesce(binned.jobs, 0) AS jobs
FROM bounds b
LEFT JOIN binned ON coalesce(binned.bin, 0) = b.bin
WHERE b.bin < b.n
ORDER BY b.bin
"""

# Mean GPU utilization over every timed reading of the chosen jobs, in equal time buckets from
# the first minute with readings on: utilization_minutes holds the readings summed per job and
# minute, so a bucket spans whole minutes (the fewest that cover the span in $buckets buckets;
# fewer buckets than asked when they don't divide it), or it would count a minute's readings in
# a span that holds part of that minute.
UTILIZATION_OVER_TIME_TEMPLATE = f"""
WITH chosen AS (SELECT job_id FROM job_results WHERE {FILTER}),
minutes AS (SELECT u.* FROM utilization_minutes u JOIN chosen c ON c.job_id = u.job_id),
span AS (
    SELECT min(minute) AS lo,
           60 * ceil((@seconds_between(min(minute); max(minute)) / 60 + 1) / $buckets) AS width
    FROM minutes
)
SELECT least(CAST(floor(@seconds_between(lo; minute) / width) AS BIGINT), $buckets - 1) AS bucket,
       min(lo) AS lo, min(width) AS width,
       @ordered_sum(utilization_sum) / sum(readings) AS average_gpu_utilization,
       sum(readings) AS readings, count(DISTINCT job_id) AS jobs
FROM minutes, span
GROUP BY 1
ORDER BY 1
"""
UTILIZATION_OVER_TIME = render(UTILIZATION_OVER_TIME_TEMPLATE)  # DuckDB's text (bench/gpu_reads.py times it)

MODELS = f"""
SELECT model_name, count(*) AS jobs FROM job_results
WHERE model_name IS NOT NULL AND {FILTER}
GROUP BY model_name ORDER BY model_name
"""


def fleet_trends(con: duckdb.DuckDBPyConnection, filters: Filters, bins: int, buckets: int) -> dict[str, Any]:
    """GPU hours, the throughput histogram, utilization over time, and the models seen."""
    params = filters.params()
    gpu_hours, jobs_counted, jobs = db.one(con, sql_for(con, GPU_HOURS), params)
    histogram = con.execute(sql_for(con, THROUGHPUT_HISTOGRAM), {**params, "bins": bins}).fetchall()
    over_time = con.execute(sql_for(con, UTILIZATION_OVER_TIME_TEMPLATE), {**params, "buckets": buckets}).fetchall()
    models = con.execute(MODELS, {**params, "model": None}).fetchall()  # every model, for a picker
    return {
        "gpu_hours": plain(gpu_hours),
        "gpu_hours_jobs": jobs_counted,
        "jobs": jobs,
        "throughput_histogram": [{"low": plain(low), "high": plain(high), "jobs": n} for _, low, high, n in histogram],
        "utilization_over_time": [
            {
                "start": plain(_moment(lo, width * bucket)),
                "end": plain(_moment(lo, width * (bucket + 1))),
                "average_gpu_utilization": plain(util),
                "readings": readings,
                "jobs": n_jobs,
            }
            for bucket, lo, width, util, readings, n_jobs in over_time
        ],
        "models": [{"model_name": m, "jobs": n} for m, n in models],
    }


def _moment(start: datetime, seconds: float) -> datetime:
    return start + timedelta(seconds=seconds)
