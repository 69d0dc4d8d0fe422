"""The analytics of shared/spec/analytics.md: all jobs' summary, the fleet trends for charts, a
comparison of jobs, and one job's analytics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from runlytics.warehouse import fleet, insight_list, queries, trends

from .. import models
from ..deps import Con, Cursor, Filters, JobId, Limit
from ..routing import JOB
from .common import NO_OFFSET, distinct_ids, next_url, not_with_cursor

MAX_COMPARE = 50
MAX_COMPARE_CHARS = 60_000  # characters of job_ids in all

router = APIRouter(tags=["analytics"])
# one job's: the per-job routes alone (api/app.py, PER_JOB_ROUTERS), no route of the fleet's
job_router = APIRouter(tags=["analytics"])


@router.get("/api/training/analytics/summary", response_model=models.Summary, operation_id="get_summary")
def summary(
    request: Request,
    con: Con,
    filters: Filters,
    limit: Limit = 10,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """All jobs' figures (analytics.md, "All jobs"), filtered by status, model and start time."""
    not_with_cursor(cursor, "offset", "offset" in request.query_params, NO_OFFSET)
    result = fleet.summary(con, filters.chosen(), limit, offset, cursor)
    result["next"] = next_url(request, result["next_cursor"], drop=("offset",))
    return result


@router.get("/api/training/analytics/fleet", response_model=models.FleetTrends, operation_id="get_fleet_trends")
def fleet_trends(
    con: Con,
    filters: Filters,
    bins: Annotated[int, Query(ge=1, le=200, description="throughput histogram bins")] = 20,
    buckets: Annotated[int, Query(ge=1, le=2_000, description="time buckets of GPU utilization")] = 120,
) -> dict[str, Any]:
    """Fleet trends for charts: GPU hours, the throughput distribution, GPU utilization over time."""
    return trends.fleet_trends(con, filters.chosen(), bins, buckets)


@router.get(
    "/api/training/analytics/compare",
    response_model=models.Comparison,
    responses={404: {"model": models.Problem}},
    operation_id="compare_jobs",
)
def compare(
    con: Con, job_ids: Annotated[list[str], Query(description='a,b,… or repeated; "a,b" for an id with a comma')]
) -> dict:
    """Side by side, with the winners of analytics.md ("Comparing jobs"); 1 to 50 distinct ids."""
    return fleet.compare(con, distinct_ids(con, job_ids, MAX_COMPARE_CHARS, MAX_COMPARE))  # fleet.UnknownJobs: 404


@job_router.get(
    f"/api/training/{JOB}/analytics",
    response_model=models.JobAnalytics,
    responses={404: {"model": models.Problem}},
    operation_id="get_job_analytics",
)
def job_analytics(job_id: JobId, con: Con) -> dict[str, Any]:
    """One job's analytics: the six sections of analytics.md, why any figure is null, and its
    insights by severity."""
    result = queries.job_analytics(con, job_id)
    if result is None:
        raise queries.UnknownJob(job_id)
    stored = result["job_id"]  # on PostgreSQL a NUL asked for is U+FFFD, as published (docs/postgresql.md)
    result["insights"] = insight_list.severity_counts(con, [stored])[stored]
    return result
