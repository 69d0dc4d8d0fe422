"""A job's metrics of any name (warehouse/metric_history.py): the list, and one metric's history,
keyset-paginated or downsampled for charts as the step history is.

A metric's name may hold ``/`` (``train/loss``), so it is a query parameter, never a path segment.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from runlytics.warehouse import metric_history

from .. import models
from ..deps import MAX_PAGE, Con, Cursor, JobId, Limit
from ..routing import JOB
from .common import MAX_POINTS_NO_PAGES, next_url, not_with_cursor, require_job

router = APIRouter(tags=["jobs"], responses={404: {"model": models.Problem}})


@router.get(
    f"/api/training/{JOB}/metrics/history",
    response_model=models.MetricHistory,
    operation_id="get_job_metric_history",
)
def job_metric_history(
    request: Request,
    job_id: JobId,
    con: Con,
    name: Annotated[str, Query(min_length=1, max_length=1_000, description="the metric's name, e.g. train/loss")],
    limit: Limit = 1_000,
    cursor: Cursor = None,
    from_step: Annotated[int | None, Query(ge=-(2**62), le=2**62)] = None,
    to_step: Annotated[int | None, Query(ge=-(2**62), le=2**62)] = None,
    max_points: Annotated[int | None, Query(ge=10, le=MAX_PAGE)] = None,
) -> dict[str, Any]:
    """One metric's points by step; ``max_points`` downsamples for charts, keeping every extreme."""
    not_with_cursor(cursor, "max_points", max_points is not None, MAX_POINTS_NO_PAGES)
    require_job(con, job_id)
    # metric_history.UnknownMetric: 404
    points = metric_history.metric_history(con, job_id, name, cursor, from_step, to_step, limit, max_points)
    return {
        "job_id": job_id,
        "name": name,
        "downsampled": points.downsampled,
        "points": points.rows,
        "next_cursor": points.next_cursor,
        "next": next_url(request, points.next_cursor, drop=("from_step",)),
    }


@router.get(f"/api/training/{JOB}/metrics", response_model=models.JobMetrics, operation_id="list_job_metrics")
def job_metrics(job_id: JobId, con: Con) -> dict[str, Any]:
    """Every metric the job logged, by name: its points, first and last step, last value."""
    require_job(con, job_id)
    return {"job_id": job_id, "metrics": metric_history.job_metrics(con, job_id)}
