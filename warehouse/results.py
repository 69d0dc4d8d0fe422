"""``job_results``: the ``job_analytics`` view materialised, one row per job; and
``utilization_minutes``, the GPU utilization readings summed per job and minute.

Computing the view for one job scans that job's steps; for a fleet summary it scans all of
them. Ingest refreshes the rows of the jobs a run changed, so readers get a job's analytics
and the summary from a table of one row per job. ``tests/test_results.py`` checks that the
table equals the view.
"""

from __future__ import annotations

import duckdb

from . import db, insights

CREATE = "CREATE TABLE job_results AS SELECT * FROM job_analytics WHERE false"
REFILL = "DELETE FROM job_results; INSERT INTO job_results SELECT * FROM job_analytics"
DELETE_JOBS = "DELETE FROM job_results WHERE job_id IN (SELECT unnest($job_ids))"
INSERT_JOBS = "INSERT INTO job_results SELECT * FROM job_analytics WHERE job_id IN (SELECT unnest($job_ids))"


# utilization_minutes: gpu_utilization_readings summed per job and minute (revision 0006), so
# that the fleet's GPU utilization over time reads thousands of rows, not millions. The sum adds
# the readings in ascending order (revision 0013): the same last digit on every ingest, whatever
# the threads (the views' @ordered_sum, written out: this text is not a view template).
UTILIZATION_SELECT = """
SELECT job_id, date_trunc('minute', ts) AS minute, count(*) AS readings,
       sum(utilization_percent ORDER BY utilization_percent) AS utilization_sum
FROM gpu_utilization_readings
WHERE isfinite(utilization_percent) {where}
GROUP BY job_id, minute
"""
UTILIZATION_CREATE = "CREATE TABLE utilization_minutes AS " + UTILIZATION_SELECT.format(where="AND false")
UTILIZATION_REFILL = "DELETE FROM utilization_minutes; INSERT INTO utilization_minutes " + UTILIZATION_SELECT.format(
    where=""
)
UTILIZATION_DELETE_JOBS = "DELETE FROM utilization_minutes WHERE job_id IN (SELECT unnest($job_ids))"

# From revision 0015 the samples' part comes from the rollups (gpu_minutes: per GPU and minute,
# the count and ascending sum of its finite utilizations), so that a refresh reads a job's
# minutes, not its samples, and the figures stay when raw samples age out; the step readings are
# still read one by one. The sum adds the per-GPU sums in ascending order: the raw sum up to float
# rounding, one order whatever the threads. UTILIZATION_SELECT above stays the text of the
# revisions before 0015 (their upgrades and downgrades refill with it).
ROLLUP_UTILIZATION_SELECT = """
SELECT job_id, minute, CAST(sum(readings) AS BIGINT) AS readings,
       sum(utilization_sum ORDER BY utilization_sum) AS utilization_sum
FROM (
    SELECT job_id, minute, utilization_percent_n AS readings, utilization_percent_sum AS utilization_sum
    FROM gpu_minutes
    WHERE utilization_percent_n > 0 {where}
    UNION ALL
    SELECT job_id, date_trunc('minute', ts), 1, utilization_percent
    FROM gpu_utilization_readings
    WHERE source = 'step_readings' AND isfinite(utilization_percent) {where}
)
GROUP BY job_id, minute
"""
ROLLUP_UTILIZATION_REFILL = (
    "DELETE FROM utilization_minutes; INSERT INTO utilization_minutes " + ROLLUP_UTILIZATION_SELECT.format(where="")
)
UTILIZATION_INSERT_JOBS = "INSERT INTO utilization_minutes " + ROLLUP_UTILIZATION_SELECT.format(
    where="AND job_id IN (SELECT unnest($job_ids))"
)


# refresh_queue (revision 0009): the jobs owed a refresh, queued with the facts that changed them
ENQUEUE = "INSERT INTO refresh_queue SELECT DISTINCT unnest($job_ids) ON CONFLICT DO NOTHING"
ENQUEUE_BATCH = "INSERT INTO refresh_queue SELECT DISTINCT job_id FROM batch_jobs ON CONFLICT DO NOTHING"
QUEUED = "SELECT job_id FROM refresh_queue ORDER BY job_id"
PENDING = "SELECT count(*) FROM refresh_queue"  # jobs whose derived rows a run still owes
DEQUEUE = "DELETE FROM refresh_queue WHERE job_id IN (SELECT unnest($job_ids))"


def refresh(con: duckdb.DuckDBPyConnection, job_ids: set[str]) -> None:
    """Recompute the rows of these jobs (in the caller's transaction, if any)."""
    if not job_ids:
        return
    params = {"job_ids": sorted(job_ids)}
    for statement in (DELETE_JOBS, INSERT_JOBS, UTILIZATION_DELETE_JOBS, UTILIZATION_INSERT_JOBS):
        con.execute(statement, params)


def enqueue(con: duckdb.DuckDBPyConnection, job_ids: set[str]) -> None:
    """Owe these jobs a refresh: call it in the transaction that changes their facts."""
    if job_ids:
        con.execute(ENQUEUE, {"job_ids": sorted(job_ids)})


def refresh_queued(con: duckdb.DuckDBPyConnection) -> int:
    """Refresh every queued job and empty the queue, in one transaction; the number of jobs.

    Insights follow the same queue, and every run also recomputes ``silent_running`` of the
    other running jobs (it depends on the time) and ``slow_vs_peers`` of the queued jobs' peers."""
    with db.atomic(con):
        job_ids = {job_id for (job_id,) in con.execute(QUEUED).fetchall()}
        peer_ids = insights.peers(con, job_ids)  # before job_results changes: a job's former model counts
        refresh(con, job_ids)
        insights.refresh(con, job_ids, peer_ids)
        con.execute(DEQUEUE, {"job_ids": sorted(job_ids)})
    return len(job_ids)
