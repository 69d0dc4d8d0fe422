"""Insights (shared/spec/insights.md): one job's, and the fleet's with filters and keyset pages.

Two routers, for the order of routes (api/app.py): ``router`` holds ``/api/training/insights``
and ``job_router`` ``/api/training/{job_id}/insights``; both come before ``jobs.job_router``,
whose ``/api/training/{job_id}`` would take ``/api/training/insights`` as a job's id (a job
named ``insights`` is reached at ``/api/training/jobs/insights``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request

from runlytics.warehouse import insight_list

from .. import models
from ..deps import Con, Cursor, Filters, JobId, Limit
from ..routing import JOB
from .common import next_url, require_job

Kind = Annotated[str | None, Query(max_length=100, description=f"one of {', '.join(insight_list.KINDS)}")]
Severity = Annotated[str | None, Query(max_length=100, description=", ".join(insight_list.SEVERITIES))]

router = APIRouter(tags=["insights"])
job_router = APIRouter(tags=["insights"], responses={404: {"model": models.Problem}})


@router.get("/api/training/insights", response_model=models.FleetInsights, operation_id="list_insights")
def fleet_insights(
    request: Request,
    con: Con,
    kind: Kind = None,
    severity: Severity = None,
    *,  # filters, a model of parameters, has no default
    filters: Filters,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """The fleet's insights, newest jobs first; filtered by kind, severity, and the jobs' status,
    model and start time; keyset pages never skip nor repeat an insight."""
    _check(kind, severity)
    result = insight_list.fleet_insights(con, filters.chosen(), kind, severity, limit, cursor)
    result["next"] = next_url(request, result["next_cursor"])
    return result


@job_router.get(f"/api/training/{JOB}/insights", response_model=models.JobInsights, operation_id="get_job_insights")
def job_insights(job_id: JobId, con: Con, kind: Kind = None, severity: Severity = None) -> dict[str, Any]:
    """The job's insights by first step, then kind, with the thresholds in force and ``as_of``."""
    _check(kind, severity)
    require_job(con, job_id)
    return insight_list.job_insights(con, job_id, kind, severity)


def _check(kind: str | None, severity: str | None) -> None:
    try:
        insight_list.checked(kind, severity)
    except insight_list.UnknownFilter as error:
        raise HTTPException(422, str(error)) from error
