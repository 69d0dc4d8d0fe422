"""A job's metrics of any name (the view ``metric_points``: every scalar its trainer logged):
the list, and one metric's points as a history, keyset-paginated by step or downsampled for
charts exactly as the step history is (warehouse/history.py: its SQL, its buckets).
"""

from __future__ import annotations

from typing import Any

import duckdb

from . import db, history, pages
from .pg_reader import sql_for
from .queries import records

# Per metric: its points, first and last step, and the value at the last step (rows without a
# value or a step skipped, as DuckDB's arg_max skips them). A template: pg_reader.sql_for
# renders it for the engine read.
JOB_METRICS = """
SELECT name, count(*) AS points, min(step) AS first_step, max(step) AS last_step,
       @first_by(value; step DESC) FILTER (WHERE value IS NOT NULL AND step IS NOT NULL) AS last_value
FROM metric_points
WHERE job_id = $job_id
GROUP BY name
ORDER BY name
"""

POINTS_PAGE = """
SELECT step, ts, value
FROM metric_points
WHERE job_id = $job_id AND name = $name AND step > $after AND ($to_step IS NULL OR step <= $to_step)
ORDER BY step
LIMIT $limit
"""

# history.downsampled_sql reads (job_id, step, …) from a relation: here one metric's points.
POINTS_SOURCE = "(SELECT job_id, step, ts, value FROM metric_points WHERE name = $name)"

METRIC_EXISTS = (
    "SELECT count(*) > 0 FROM (SELECT 1 FROM metric_points WHERE job_id = $job_id AND name = $name LIMIT 1) AS hit"
)

# Steps are BIGINT; a page starts after this when no cursor or from_step says otherwise.
BEFORE_ANY_STEP = -(2**63)
MIN_POINTS = 4  # the first and last point, and one bucket's minimum and maximum


class UnknownMetric(LookupError):
    """The job has no metric of this name."""

    def __init__(self, job_id: str, name: str) -> None:
        super().__init__(f"{job_id}: {name}")
        self.job_id = job_id
        self.name = name


def job_metrics(con: duckdb.DuckDBPyConnection, job_id: str) -> list[dict[str, Any]]:
    """The job's metrics by name: ``name``, ``points``, ``first_step``, ``last_step``, ``last_value``."""
    return records(con.execute(sql_for(con, JOB_METRICS), {"job_id": job_id}))


def metric_history(
    con: duckdb.DuckDBPyConnection,
    job_id: str,
    name: str,
    cursor: str | None,
    from_step: int | None,
    to_step: int | None,
    limit: int,
    max_points: int | None,
) -> history.History:
    """One page of a metric's points (``step``, ``ts``, ``value``, keyset by step), or with
    ``max_points`` the whole range downsampled, as a step history. UnknownMetric when the job
    has no such metric."""
    after = history.after_step("metric", cursor, from_step, BEFORE_ANY_STEP)
    params = {"job_id": job_id, "name": name, "after": after, "to_step": to_step}
    if max_points is not None:
        if max_points < MIN_POINTS:
            raise history.TooFewPoints(f"max_points must be at least {MIN_POINTS}: the first and last point, "
                                       "and a minimum and a maximum per bucket")  # fmt: skip
        sql = history.downsampled_sql(con, POINTS_SOURCE, "ts, value", "ts, value", ["value"])
        answer = history.chart(con, sql, {**params, "buckets": max(1, (max_points - 2) // 2), "max_points": max_points})
    else:
        rows = records(con.execute(POINTS_PAGE, {**params, "limit": limit + 1}))
        rows, next_cursor = pages.page(rows, limit, "metric", lambda row: [row["step"]])
        answer = history.History(rows, next_cursor, downsampled=False)
    if not answer.rows and not db.one(con, METRIC_EXISTS, {"job_id": job_id, "name": name})[0]:
        raise UnknownMetric(job_id, name)
    return answer
