"""Queries across jobs: the job list, the summary of analytics.md, and the comparison.

All read ``job_results`` (job_analytics materialised). Filters are bound parameters; sort
columns come from ``SORT_KEYS``, an allow-list.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb

from . import db, pages
from .pg_reader import sql_for
from .queries import plain, records
from .views import STATUSES

# Sort keys of the job list: name -> column of job_results.
SORT_KEYS: dict[str, str] = {
    "start_time": "start_time",
    "end_time": "end_time",
    "job_id": "job_id",
    "status": "status",
    "model_name": "model_name",
    "total_seconds": "total_seconds",
    "total_iterations": "total_iterations",
    "average_samples_per_second": "average_samples_per_second",
    "final_loss": "final_loss",
    "average_gpu_utilization": "average_gpu_utilization",
    "overall_score": "overall_score",
}
# Sort keys whose values are text or times; every other key is a number.
TEXT_KEYS = frozenset({"job_id", "status", "model_name"})
TIME_KEYS = frozenset({"start_time", "end_time"})

FILTER = """
    ($status IS NULL OR status = $status)
    AND ($model IS NULL OR model_name = $model)
    AND ($since IS NULL OR start_time >= $since)
    AND ($until IS NULL OR start_time < $until)
    AND ($id_prefix IS NULL OR starts_with(job_id, $id_prefix))
"""

# sums and means in one order whatever the threads: the same rows give the same last digit; of
# DOUBLE values, so @ordered_fsum and @ordered_favg as in the views: IEEE's infinity where a sum
# of finite values overflows (PostgreSQL's sum and avg of float8 raise there: a job's peak memory
# of 1e308 made the summary answer 500 on PostgreSQL)
SUMMARY = f"""
SELECT count(*) AS total_jobs,
       @ordered_favg(total_seconds) FILTER (WHERE status = 'completed')
           AS average_training_duration_seconds,
       -- no job matches: 0 h (a sum over no job); matching jobs, none with a training time: null
       CASE WHEN count(*) = 0 THEN 0 ELSE @ordered_fsum(training_seconds) / 3600 END AS total_training_time_hours,
       @ordered_favg(average_samples_per_second) AS average_throughput_samples_per_sec,
       @ordered_favg(average_gpu_utilization) AS average_gpu_utilization,
       @ordered_favg(peak_gpu_memory_mb) AS average_peak_memory_mb,
       count(*) FILTER (WHERE @finite(average_samples_per_second)) AS ranked_jobs
FROM job_results
WHERE {FILTER}
"""

BY_STATUS = f"SELECT status, count(*) FROM job_results WHERE {FILTER} GROUP BY status"

# Jobs by throughput, highest first, ties by job id; a job without a (finite) throughput is
# not ranked (analytics.md, "All jobs").
TOP_JOBS = f"""
SELECT job_id, average_samples_per_second AS throughput, total_seconds AS duration
FROM job_results
WHERE {FILTER}
  AND @finite(average_samples_per_second)
  AND ($after_id IS NULL
       OR average_samples_per_second < $after_value
       OR (average_samples_per_second = $after_value AND job_id > $after_id))
ORDER BY average_samples_per_second DESC, job_id
LIMIT $limit OFFSET $offset
"""

# The job list: {column} and {direction} come from SORT_KEYS and ('ASC', 'DESC'); NULLs last.
JOBS_PAGE = """
SELECT job_id, status, model_name, start_time, end_time, total_seconds, total_iterations,
       average_samples_per_second, final_loss, average_gpu_utilization, overall_score, updated_at
FROM job_results
WHERE {filter}
  AND ($after_id IS NULL
       OR ($after_null AND {column} IS NULL AND job_id > $after_id)
       OR (NOT $after_null AND ({column} IS NULL
                                OR {column} {beyond} $after_value
                                OR ({column} = $after_value AND job_id > $after_id))))
ORDER BY {column} IS NULL, {column} {direction}, job_id
LIMIT $limit
"""

COUNT = f"SELECT count(*) FROM job_results WHERE {FILTER}"

COMPARE = """
SELECT job_id, total_seconds, average_samples_per_second, final_loss, average_gpu_utilization, overall_score
FROM job_results
WHERE job_id = ANY($job_ids)
"""


@dataclass(frozen=True)
class Filters:
    status: str | None = None
    model: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    id_prefix: str | None = None

    def params(self) -> dict[str, Any]:
        return {
            "status": self.status, "model": self.model, "since": self.since, "until": self.until,
            "id_prefix": self.id_prefix,
        }  # fmt: skip


def summary(con: duckdb.DuckDBPyConnection, filters: Filters, limit: int, offset: int, cursor: str | None) -> dict:
    """The all-jobs summary of analytics.md; ``top_performing_jobs`` is one page."""
    params = filters.params()
    row = db.one_dict(con, sql_for(con, SUMMARY), params)
    counts = dict(con.execute(BY_STATUS, params).fetchall())
    by_status = {s: counts.get(s, 0) for s in STATUSES}
    if counts.get("unknown"):
        by_status["unknown"] = counts["unknown"]
    after_value, after_id = None, None
    if cursor:
        after_value, after_id = _after(pages.decode("top", cursor, 2), "average_samples_per_second")
        if after_value is None:  # every ranked job has a throughput: no cursor of ours holds none
            raise pages.BadCursor("cursor is not one this API handed out")
        offset = 0
    top = con.execute(
        sql_for(con, TOP_JOBS),
        {**params, "limit": limit + 1, "offset": offset, "after_value": after_value, "after_id": after_id},
    ).fetchall()
    # a row is (job_id, throughput, duration): the cursor holds its throughput, then its id
    top, next_cursor = pages.page(top, limit, "top", lambda row: [plain(row[1]), row[0]])
    return {
        "total_jobs": row["total_jobs"],
        "jobs_by_status": by_status,
        "average_training_duration_seconds": plain(row["average_training_duration_seconds"]),
        "total_training_time_hours": plain(row["total_training_time_hours"]),
        "average_throughput_samples_per_sec": plain(row["average_throughput_samples_per_sec"]),
        "top_performing_jobs": [
            {"job_id": job_id, "throughput": plain(throughput), "duration": plain(duration)}
            for job_id, throughput, duration in top
        ],
        "top_performing_total": row["ranked_jobs"],
        "next_cursor": next_cursor,
        "resource_trends": {
            "average_gpu_utilization": plain(row["average_gpu_utilization"]),
            "average_peak_memory_mb": plain(row["average_peak_memory_mb"]),
        },
    }


def jobs_page(
    con: duckdb.DuckDBPyConnection, filters: Filters, sort: str, descending: bool, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None, int]:
    """One page of the job list, the cursor of the next page (or None), and the total count."""
    column = SORT_KEYS[sort]
    sql = JOBS_PAGE.format(
        filter=FILTER, column=column, direction="DESC" if descending else "ASC", beyond="<" if descending else ">"
    )
    after_null, after_value, after_id = False, None, None
    kind = f"jobs:{sort}:{int(descending)}"
    if cursor:
        # sorted by id, the cursor holds the id once (its sort value and its tie-break)
        key = pages.decode(kind, cursor, 1) * 2 if sort == "job_id" else pages.decode(kind, cursor, 2)
        after_value, after_id = _after(key, sort)
        after_null = after_value is None
    params = {**filters.params(), "after_null": after_null, "after_value": after_value, "after_id": after_id}
    rows = records(con.execute(sql, {**params, "limit": limit + 1}))
    rows, next_cursor = pages.page(
        rows, limit, kind, lambda row: [row["job_id"]] if sort == "job_id" else [row[sort], row["job_id"]]
    )
    (total,) = db.one(con, COUNT, filters.params())
    return rows, next_cursor, total


def _after(key: list[Any], sort: str) -> tuple[Any, str]:
    """A decoded (value, job_id) cursor key, checked against the sort column's type.

    A value of the wrong type would make the query fail (a warehouse error, not a bad cursor);
    a time comes back as the naive UTC datetime the column holds.
    """
    value, job_id = key
    if not isinstance(job_id, str):
        raise pages.BadCursor("cursor is not one this API handed out")
    if value is None:
        return None, job_id
    if sort in TEXT_KEYS:
        if isinstance(value, str):
            return value, job_id
    elif sort in TIME_KEYS:
        return pages.timestamp(value), job_id
    elif isinstance(value, int | float):
        return value, job_id
    raise pages.BadCursor("cursor is not one this API handed out")


class UnknownJobs(LookupError):
    def __init__(self, job_ids: list[str]) -> None:
        super().__init__(", ".join(job_ids))
        self.job_ids = job_ids


def compare(con: duckdb.DuckDBPyConnection, job_ids: list[str]) -> dict[str, Any]:
    """The comparison of analytics.md for distinct ids in the order asked; raises UnknownJobs."""
    found = {r[0]: r for r in con.execute(COMPARE, {"job_ids": job_ids}).fetchall()}
    missing = [j for j in job_ids if j not in found]
    if missing:
        raise UnknownJobs(missing)
    jobs = [
        {
            "job_id": j,
            "duration_seconds": plain(found[j][1]),
            "throughput": plain(found[j][2]),
            "final_loss": plain(found[j][3]),
            "gpu_utilization": plain(found[j][4]),
            "overall_score": plain(found[j][5]),  # what most_efficient is chosen by
        }
        for j in job_ids
    ]
    return {
        "jobs": jobs,
        "winner": {
            "best_throughput": _winner(jobs, "throughput", highest=True),
            "best_loss": _winner(jobs, "final_loss", highest=False),
            "fastest": _winner(jobs, "duration_seconds", highest=False),
            "most_efficient": _winner(jobs, "overall_score", highest=True),
        },
    }


def _winner(jobs: list[dict[str, Any]], key: str, highest: bool) -> str | None:
    """The job with the best figure; ties go to the job asked first; None when none has it."""
    best: dict[str, Any] | None = None
    for job in jobs:
        value = job[key]
        if value is None:
            continue
        if best is None or (value > best[key] if highest else value < best[key]):
            best = job
    return best["job_id"] if best else None
