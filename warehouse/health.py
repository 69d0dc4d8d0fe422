"""Live figures for monitoring (``GET /metrics``): running jobs' progress, their GPUs, jobs by status.

Only jobs with status ``running`` get per-job rows, so the number of series a scrape returns
is bounded by the jobs running now: a job that finishes (or pauses) leaves them.
"""

from __future__ import annotations

from typing import Any

import duckdb

from .pg_reader import sql_for

LIVE_STATUS = "running"  # paused, queued and finished jobs have no per-job series

# The running jobs' ids are read first and passed as a list: DuckDB's list_contains() is pushed
# below step_metrics' window (PARTITION BY job_id), where an IN (subquery) join is not, so a scrape
# reads the running jobs' rows only (about 4x faster on 1M step rows, 57 of 500 jobs running).
# The queries are templates (@list_contains is `job_id = ANY($job_ids)` on PostgreSQL):
# pg_reader.sql_for renders their macros for the engine read.

# ETA: the average seconds per step over a job's last RECENT_ROWS timing rows (those that are timed).
RECENT_ROWS = 20

# Per running job: the latest step (the step rows' or the job's current_step, whichever is
# further), the latest finite loss, the latest step row's throughput (its samples_per_second,
# else its samples / seconds; NULL when it has neither: an earlier row's would be a stale figure
# shown as current, docs/metrics.md), total_steps, and the seconds per step of its recent timed rows.
RUNNING_JOBS = f"""
WITH live AS (
    SELECT job_id, current_step, total_steps FROM jobs WHERE @list_contains($job_ids; job_id)
), rows AS (
    SELECT m.job_id, m.step, m.delta, m.seconds, m.loss,
           CASE WHEN @finite(m.samples_per_second) THEN m.samples_per_second
                WHEN m.seconds > 0 AND @finite(m.samples) THEN @fdiv(m.samples; m.seconds) END AS throughput,
           -- counted back over the timing rows only (step_metrics: a progress.json job's other
           -- rows cover no interval, and a denser tool log would crowd its timing rows out)
           m.timing_count - m.timing_no + 1 AS back
    FROM step_metrics m
    WHERE @list_contains($job_ids; m.job_id)
), per_job AS (
    SELECT job_id,
           max(step) AS max_step,
           @first_by(loss; step DESC) FILTER (WHERE @finite(loss)) AS loss,
           @first_by(throughput; step DESC) AS throughput,
           -- guarded (fdiv, ordered_fsum): on PostgreSQL a float8 that overflows raises, and one
           -- running job's iteration times of 1e308 made the whole scrape a 500
           @fdiv(@ordered_fsum(seconds) FILTER (WHERE back <= {RECENT_ROWS} AND seconds >= 0 AND delta > 0);
                 sum(delta) FILTER (WHERE back <= {RECENT_ROWS} AND seconds >= 0 AND delta > 0))
               AS seconds_per_step
    FROM rows
    GROUP BY job_id
)
SELECT l.job_id,
       CASE WHEN p.max_step IS NULL THEN l.current_step
            WHEN l.current_step IS NULL THEN p.max_step
            ELSE greatest(p.max_step, l.current_step) END AS step,
       p.loss,
       p.throughput AS samples_per_second,
       l.total_steps,
       p.seconds_per_step
FROM live l
LEFT JOIN per_job p ON p.job_id = l.job_id
ORDER BY l.job_id
"""

# Per running job and GPU: the latest GPU sample; for a job without any samples, the reading
# logged with its latest step that has one (host ''). A GPU is its gpu_key (its UUID when known,
# else '#<index>'): each container numbers its GPUs from 0, so two GPUs of a host may share an
# index, and grouping by the index kept one of them (whichever won a tie on ts). One row_number
# picks the whole latest sample, so a series set's figures come from one sample; (job, host,
# gpu_key, ts) is kept unique by ingest (not by the database), and source and gpu_index order
# any duplicate the same way on every scrape and engine.
RUNNING_GPUS = """
WITH ranked AS (
    SELECT job_id, host, gpu_key, gpu_index, gpu_uuid, ts,
           utilization_percent, memory_used_mb, temperature_c, power_w,
           row_number() OVER (PARTITION BY job_id, host, gpu_key ORDER BY ts DESC, source, gpu_index) AS latest
    FROM gpu_samples
    WHERE @list_contains($job_ids; job_id)
), sampled AS (
    SELECT job_id, host, gpu_key, gpu_index, gpu_uuid, ts,
           utilization_percent, memory_used_mb, temperature_c, power_w
    FROM ranked
    WHERE latest = 1
), logged AS (
    SELECT job_id, '' AS host, '#' || CAST(gpu_index AS VARCHAR) AS gpu_key, gpu_index,
           @first_by(gpu_uuid; step DESC) AS gpu_uuid,
           CAST(NULL AS TIMESTAMP) AS ts,
           @first_by(utilization_percent; step DESC) AS utilization_percent,
           @first_by(memory_used_mb; step DESC) AS memory_used_mb,
           @first_by(temperature_c; step DESC) AS temperature_c,
           @first_by(power_w; step DESC) AS power_w
    FROM step_gpus
    WHERE @list_contains($job_ids; job_id) AND job_id NOT IN (SELECT job_id FROM sampled)
    GROUP BY job_id, gpu_index
)
SELECT job_id, host, gpu_index, coalesce(gpu_uuid, '') AS gpu_uuid,
       @seconds_between(TIMESTAMP '1970-01-01 00:00:00'; ts) AS sample_epoch,
       utilization_percent, memory_used_mb, temperature_c, power_w
FROM (SELECT * FROM sampled UNION ALL SELECT * FROM logged) AS readings
ORDER BY job_id, host, gpu_index, gpu_key
"""

JOBS_BY_STATUS = "SELECT status, count(*) FROM jobs GROUP BY status ORDER BY status"

LIVE_JOBS = "SELECT job_id FROM jobs WHERE status = $status ORDER BY job_id"


def _records(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def running_job_ids(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [row[0] for row in con.execute(LIVE_JOBS, {"status": LIVE_STATUS}).fetchall()]


def running_jobs(con: duckdb.DuckDBPyConnection, job_ids: list[str]) -> list[dict[str, Any]]:
    """Per job (of the running ones): job_id, step, loss, samples_per_second, total_steps, seconds_per_step."""
    return _records(con.execute(sql_for(con, RUNNING_JOBS), {"job_ids": job_ids}))


def running_gpus(con: duckdb.DuckDBPyConnection, job_ids: list[str]) -> list[dict[str, Any]]:
    """Per job (of the running ones) and GPU (gpu_key): job_id, host, gpu_index, gpu_uuid ('' when
    unknown), sample_epoch and the latest reading."""
    return _records(con.execute(sql_for(con, RUNNING_GPUS), {"job_ids": job_ids}))


def jobs_by_status(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    return dict(con.execute(JOBS_BY_STATUS).fetchall())
