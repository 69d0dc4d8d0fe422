"""The jobs: the list, and one job's record and checkpoints.

Two routers, for the order of routes (api/app.py): ``router`` (the list, and the record at
``/api/training/jobs/{job_id}``) comes before every ``/api/training/{job_id}/…`` route, so that
``/api/training/jobs/x/steps`` is the job ``x/steps``; ``job_router`` comes after every other
``/api/training`` route, since its ``/api/training/{job_id}`` takes any path below it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request

from runlytics.warehouse import fleet, insight_list, queries

from .. import models
from ..deps import MAX_ID_LENGTH, Con, Cursor, Filters, JobId, Limit
from ..routing import JOB, JOB_TO_END
from .common import next_url, require_job

router = APIRouter(tags=["jobs"])
job_router = APIRouter(tags=["jobs"], responses={404: {"model": models.Problem}})


@router.get("/api/training/jobs", response_model=models.JobList, operation_id="list_jobs")
def list_jobs(
    request: Request,
    con: Con,
    filters: Filters,
    id_prefix: Annotated[str | None, Query(max_length=MAX_ID_LENGTH, description="job ids starting with")] = None,
    sort: Annotated[str, Query(description="a sort key; prefix '-' for descending")] = "-start_time",
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Every job, newest first by default; keyset pages never skip nor repeat a job."""
    key = sort.removeprefix("-")
    if key not in fleet.SORT_KEYS:
        raise HTTPException(422, f"unknown sort key {key!r}; known: {', '.join(fleet.SORT_KEYS)}")
    chosen = filters.chosen(id_prefix)
    rows, next_cursor, total = fleet.jobs_page(con, chosen, key, sort.startswith("-"), limit, cursor)
    counts = insight_list.severity_counts(con, [row["job_id"] for row in rows])  # the list's badges
    for row in rows:
        row["insights"] = counts[row["job_id"]]
    return {"jobs": rows, "total": total, "next_cursor": next_cursor, "next": next_url(request, next_cursor)}


@router.get(f"/api/training/jobs/{JOB_TO_END}", response_model=models.JobRecord, operation_id="get_job_by_id")
def job_by_id(job_id: JobId, con: Con) -> dict[str, Any]:
    """The job record (also reachable here when the id collides with a route name)."""
    return queries.job_record(con, job_id)  # queries.UnknownJob: 404


@job_router.get(
    f"/api/training/{JOB}/checkpoints", response_model=models.CheckpointList, operation_id="list_job_checkpoints"
)
def job_checkpoints(job_id: JobId, con: Con) -> dict[str, Any]:
    """The job's checkpoints by step, with the losses the best one is chosen by."""
    require_job(con, job_id)
    return {"job_id": job_id, "checkpoints": queries.job_checkpoints(con, job_id)}


@job_router.get(f"/api/training/{JOB_TO_END}", response_model=models.JobRecord, operation_id="get_job")
def job(job_id: JobId, con: Con) -> dict[str, Any]:
    """The job record: status, times, config, latest step."""
    return queries.job_record(con, job_id)  # queries.UnknownJob: 404
