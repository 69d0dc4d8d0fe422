"""``job_results``: the ``job_analytics`` view materialised, one row per job.

Computing the view for one job scans that job's steps; for a fleet summary it scans all of
them. Ingest refreshes the rows of the jobs a run changed, so readers get a job's analytics
and the summary from a table of one row per job. ``tests/test_results.py`` checks that the
table equals the view.
"""

from __future__ import annotations

import duckdb

CREATE = "CREATE TABLE job_results AS SELECT * FROM job_analytics WHERE false"
REFILL = "DELETE FROM job_results; INSERT INTO job_results SELECT * FROM job_analytics"
DELETE_JOBS = "DELETE FROM job_results WHERE job_id IN (SELECT unnest($job_ids))"
INSERT_JOBS = "INSERT INTO job_results SELECT * FROM job_analytics WHERE job_id IN (SELECT unnest($job_ids))"


def refresh(con: duckdb.DuckDBPyConnection, job_ids: set[str]) -> None:
    """Recompute the rows of these jobs (in the caller's transaction, if any)."""
    if not job_ids:
        return
    params = {"job_ids": sorted(job_ids)}
    con.execute(DELETE_JOBS, params)
    con.execute(INSERT_JOBS, params)
