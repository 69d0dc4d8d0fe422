"""A job's histories: its steps and its GPU readings (warehouse/history.py), keyset-paginated,
or downsampled for charts with ``max_points``, every extreme kept."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request

from runlytics.warehouse import history

from .. import models
from ..deps import MAX_PAGE, Con, Cursor, JobId, Limit
from ..routing import JOB
from .common import MAX_POINTS_NO_PAGES, next_url, not_with_cursor, require_job

router = APIRouter(tags=["jobs"], responses={404: {"model": models.Problem}})


@router.get(f"/api/training/{JOB}/steps", response_model=models.StepPage, operation_id="get_job_steps")
def job_steps(
    request: Request,
    job_id: JobId,
    con: Con,
    fields: Annotated[str | None, Query(max_length=1_000, description="comma-separated; default all")] = None,
    limit: Limit = 1_000,
    cursor: Cursor = None,
    from_step: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    to_step: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    max_points: Annotated[
        int | None,
        Query(
            ge=10,
            le=MAX_PAGE,
            description="for charts: 10 or more, and at least 2 + 2 per numeric field asked for (every field but "
            "`ts`): 22 with the default, every field",
        ),
    ] = None,
) -> dict[str, Any]:
    """The step history by step; ``max_points`` downsamples for charts, keeping every extreme."""
    chosen = _fields(fields)
    not_with_cursor(cursor, "max_points", max_points is not None, MAX_POINTS_NO_PAGES)
    require_job(con, job_id)
    # history.TooFewPoints (a max_points too small for the fields): 422
    steps = history.step_history(con, job_id, chosen, cursor, from_step, to_step, limit, max_points)
    return {
        "job_id": job_id,
        "fields": chosen,
        "downsampled": steps.downsampled,
        "steps": steps.rows,
        "next_cursor": steps.next_cursor,
        "next": next_url(request, steps.next_cursor, drop=("from_step",)),
    }


@router.get(f"/api/training/{JOB}/gpus", response_model=models.GpuPage, operation_id="get_job_gpus")
def job_gpus(
    request: Request,
    job_id: JobId,
    con: Con,
    gpu: Annotated[int | None, Query(ge=0, le=1_000_000)] = None,
    limit: Limit = 1_000,
    cursor: Cursor = None,
    max_points: Annotated[int | None, Query(ge=10, le=MAX_PAGE, description="in all, for charts")] = None,
) -> dict[str, Any]:
    """The job's GPU samples (else the readings logged with its steps), by GPU, keyset-paginated;
    ``max_points`` downsamples for charts: at most that many readings, shared by the GPUs. Over
    as many minutes as each GPU's share or more, or with a share too small for buckets of
    samples, a reading is a bucket of whole minutes (its mean, minimum and maximum of every
    figure); else each GPU keeps its first and last reading and, when its share allows, every
    extreme (``extremes_kept`` says whether it did). A job some or all of whose raw samples
    retention pruned reads its per-minute rollups, pages and charts (source ``gpu_minutes``):
    every GPU and day of it."""
    not_with_cursor(cursor, "max_points", max_points is not None, MAX_POINTS_NO_PAGES)
    require_job(con, job_id)
    gpus = history.gpu_history(con, job_id, gpu, cursor, limit, max_points)
    return {
        "job_id": job_id,
        "source": gpus.source,
        "resolution": gpus.resolution,
        "bucket_seconds": gpus.bucket_seconds,
        "downsampled": gpus.downsampled,
        "extremes_kept": gpus.extremes_kept,
        "readings": gpus.readings,
        "next_cursor": gpus.next_cursor,
        "next": next_url(request, gpus.next_cursor),
    }


def _fields(fields: str | None) -> list[str]:
    if fields is None:
        return list(history.STEP_FIELDS)
    chosen = list(dict.fromkeys(f.strip() for f in fields.split(",") if f.strip()))
    unknown = [f for f in chosen if f not in history.STEP_FIELDS]
    if unknown or not chosen:
        raise HTTPException(422, f"unknown field(s) {unknown}; known: {', '.join(history.STEP_FIELDS)}")
    return chosen
