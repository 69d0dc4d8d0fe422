"""The REST API: thin handlers over the warehouse's views, served from published snapshots.

Each handler validates its input, calls one query function, and shapes the answer. Readers
never open the warehouse file that ingest writes (see warehouse/snapshots.py), so requests
are answered while cron ingests.
"""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import duckdb
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from runlytics.warehouse import db, fleet, history, migrate, pages, queries, runs, snapshots, trends
from runlytics.warehouse.views import STATUSES

from . import dashboard, metrics, models

TOKEN_ENV = "RUNLYTICS_API_TOKEN"
MAX_COMPARE = 50
MAX_PAGE = 10_000
MAX_ID_LENGTH = 1_000

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="rows per page")]
Cursor = Annotated[str | None, Query(max_length=4_000, description="next_cursor of the previous page")]
JobId = Annotated[str, "a job id"]


def connection(request: Request) -> Iterator[duckdb.DuckDBPyConnection]:
    """A cursor on the newest snapshot, for one request."""
    try:
        cursor = request.app.state.reader.cursor()
    except db.WarehouseError as error:
        raise HTTPException(503, f"warehouse unavailable: {error}") from error
    try:
        yield cursor
    finally:
        cursor.close()


def authorized(request: Request) -> None:
    token = request.app.state.token
    if token is None:
        return
    given = request.headers.get("authorization", "")
    if not secrets.compare_digest(given.encode(), f"Bearer {token}".encode()):
        raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


Con = Annotated[duckdb.DuckDBPyConnection, Depends(connection)]


def create_app(db_path: Path, token: str | None = None) -> FastAPI:
    """The API over the warehouse at ``db_path``; with a token, Bearer auth guards all but health."""
    reader = snapshots.Reader(db_path)
    app = FastAPI(
        title="runlytics",
        version="0.1.0",
        description="Training-run analytics: durations, throughput, losses, GPU use, efficiency.",
        responses={401: {"model": models.Problem}, 422: {"model": models.Problem}, 503: {"model": models.Problem}},
    )
    app.state.reader = reader
    app.state.token = token if token is not None else os.environ.get(TOKEN_ENV) or None
    guarded = [Depends(authorized)]
    from .export import router as export_router  # here: api/export.py imports this module

    app.include_router(export_router)  # first: /api/training/{job_id}/steps must not take export/steps

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]  # fmt: skip
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(pages.BadCursor)
    async def bad_cursor(request: Request, exc: pages.BadCursor) -> JSONResponse:
        return JSONResponse({"detail": f"bad cursor: {exc}"}, status_code=422)

    @app.exception_handler(duckdb.Error)
    async def warehouse_error(request: Request, exc: duckdb.Error) -> JSONResponse:
        return JSONResponse({"detail": f"warehouse unavailable: {exc}"}, status_code=503)

    @app.get("/healthz", response_model=models.Health, tags=["health"])
    def healthz() -> dict[str, Any]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=models.Readiness, tags=["health"], responses={503: {"model": models.Readiness}})
    def readyz() -> Any:
        """The warehouse is reachable and its schema is at this code's head revision."""
        try:
            cursor = reader.cursor()
            try:
                revision = migrate.current_revision(cursor)
            finally:
                cursor.close()
        except (db.WarehouseError, duckdb.Error) as error:
            return JSONResponse({"status": "unavailable", "detail": str(error)}, status_code=503)
        snapshot = str(reader.snapshot) if reader.snapshot else None
        if revision != migrate.HEAD_REVISION:
            detail = f"schema at {revision}, code at {migrate.HEAD_REVISION}"
            return JSONResponse({"status": "unavailable", "detail": detail, "revision": revision}, status_code=503)
        fresh = metrics.ingest_freshness(db_path)
        if fresh.stale:
            body = {"status": "stale", "detail": fresh.detail, "revision": revision, "snapshot": snapshot}
            return JSONResponse({**body, "stale": True}, status_code=503)
        return {"status": "ok", "revision": revision, "snapshot": snapshot, "stale": fresh.stale}

    @app.get("/api/ingest/runs", response_model=models.IngestRuns, dependencies=guarded, tags=["ingest"])
    def ingest_runs(request: Request, con: Con, limit: Limit = 50, cursor: Cursor = None) -> dict[str, Any]:
        """Ingest runs, newest first (keyset pages), and the files that are failing with their reasons."""
        rows, next_cursor = runs.runs_page(con, limit, cursor)
        return {
            "runs": rows,
            "problem_files": runs.problem_files(con),
            "next_cursor": next_cursor,
            "next": _next(request, next_cursor),
        }

    @app.get("/api/training/jobs", response_model=models.JobList, dependencies=guarded, tags=["jobs"])
    def list_jobs(
        request: Request,
        con: Con,
        status: str | None = None,
        model: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        id_prefix: Annotated[str | None, Query(max_length=MAX_ID_LENGTH, description="job ids starting with")] = None,
        sort: Annotated[str, Query(description="a sort key; prefix '-' for descending")] = "-start_time",
        limit: Limit = 100,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        """Every job, newest first by default; keyset pages never skip nor repeat a job."""
        key = sort.removeprefix("-")
        if key not in fleet.SORT_KEYS:
            raise HTTPException(422, f"unknown sort key {key!r}; known: {', '.join(fleet.SORT_KEYS)}")
        filters = _filters(status, model, since, until, id_prefix)
        rows, next_cursor, total = fleet.jobs_page(con, filters, key, sort.startswith("-"), limit, cursor)
        return {"jobs": rows, "total": total, "next_cursor": next_cursor, "next": _next(request, next_cursor)}

    @app.get("/api/training/jobs/{job_id:path}", response_model=models.JobRecord, dependencies=guarded, tags=["jobs"])
    def job_by_id(job_id: JobId, con: Con) -> dict[str, Any]:
        """The job record (also reachable here when the id collides with a route name)."""
        return _job_record(con, job_id)

    @app.get("/api/training/analytics/summary", response_model=models.Summary, dependencies=guarded, tags=["analytics"])
    def summary(
        request: Request,
        con: Con,
        status: str | None = None,
        model: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: Limit = 10,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        """All jobs' figures (analytics.md, "All jobs"), filtered by status, model and start time."""
        result = fleet.summary(con, _filters(status, model, since, until), limit, offset, cursor)
        result["next"] = _next(request, result["next_cursor"], drop=("offset",))
        return result

    @app.get(
        "/api/training/analytics/fleet", response_model=models.FleetTrends, dependencies=guarded, tags=["analytics"]
    )
    def fleet_trends(
        con: Con,
        status: str | None = None,
        model: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        bins: Annotated[int, Query(ge=1, le=200, description="throughput histogram bins")] = 20,
        buckets: Annotated[int, Query(ge=1, le=2_000, description="time buckets of GPU utilization")] = 120,
    ) -> dict[str, Any]:
        """Fleet trends for charts: GPU hours, the throughput distribution, GPU utilization over time."""
        return trends.fleet_trends(con, _filters(status, model, since, until), bins, buckets)

    @app.get(
        "/api/training/analytics/compare",
        response_model=models.Comparison,
        dependencies=guarded,
        tags=["analytics"],
        responses={404: {"model": models.Problem}},
    )
    def compare(con: Con, job_ids: Annotated[str, Query(max_length=60_000, description="a,b,…")]) -> dict:
        """Side by side, with the winners of analytics.md ("Comparing jobs"); 1 to 50 distinct ids."""
        ids = list(dict.fromkeys(j.strip() for j in job_ids.split(",") if j.strip()))
        if not 1 <= len(ids) <= MAX_COMPARE:
            raise HTTPException(422, f"job_ids must name 1 to {MAX_COMPARE} distinct jobs, got {len(ids)}")
        try:
            return fleet.compare(con, ids)
        except fleet.UnknownJobs as error:
            raise HTTPException(404, f"unknown job(s): {', '.join(error.job_ids)}") from error

    @app.get(
        "/api/training/{job_id:path}/analytics",
        response_model=models.JobAnalytics,
        dependencies=guarded,
        tags=["analytics"],
        responses={404: {"model": models.Problem}},
    )
    def job_analytics(job_id: JobId, con: Con) -> dict[str, Any]:
        """One job's analytics: the six sections of analytics.md, and why any figure is null."""
        result = queries.job_analytics(con, job_id)
        if result is None:
            raise HTTPException(404, f"no job {_quoted(job_id)}")
        return result

    @app.get(
        "/api/training/{job_id:path}/steps",
        response_model=models.StepPage,
        dependencies=guarded,
        tags=["jobs"],
        responses={404: {"model": models.Problem}},
    )
    def job_steps(
        request: Request,
        job_id: JobId,
        con: Con,
        fields: Annotated[str | None, Query(max_length=1_000, description="comma-separated; default all")] = None,
        limit: Limit = 1_000,
        cursor: Cursor = None,
        from_step: Annotated[int | None, Query(ge=0, le=2**62)] = None,
        to_step: Annotated[int | None, Query(ge=0, le=2**62)] = None,
        max_points: Annotated[int | None, Query(ge=10, le=MAX_PAGE)] = None,
    ) -> dict[str, Any]:
        """The step history by step; ``max_points`` downsamples for charts, keeping every extreme."""
        chosen = _fields(fields)
        _require_job(con, job_id)
        try:
            rows, next_cursor = history.step_history(con, job_id, chosen, cursor, from_step, to_step, limit, max_points)
        except history.TooFewPoints as error:
            raise HTTPException(422, str(error)) from error
        return {
            "job_id": job_id,
            "fields": chosen,
            "downsampled": max_points is not None,
            "steps": rows,
            "next_cursor": next_cursor,
            "next": _next(request, next_cursor, drop=("from_step",)),
        }

    @app.get(
        "/api/training/{job_id:path}/gpus",
        response_model=models.GpuPage,
        dependencies=guarded,
        tags=["jobs"],
        responses={404: {"model": models.Problem}},
    )
    def job_gpus(
        request: Request,
        job_id: JobId,
        con: Con,
        gpu: Annotated[int | None, Query(ge=0, le=1_000_000)] = None,
        limit: Limit = 1_000,
        cursor: Cursor = None,
        max_points: Annotated[int | None, Query(ge=10, le=MAX_PAGE, description="per GPU, for charts")] = None,
    ) -> dict[str, Any]:
        """The job's GPU samples (else the readings logged with its steps), by GPU, keyset-paginated;
        ``max_points`` downsamples each GPU's readings for charts, keeping every extreme."""
        _require_job(con, job_id)
        if max_points is not None:
            source, rows = history.gpu_readings_downsampled(con, job_id, gpu, max_points)
            return {"job_id": job_id, "source": source, "readings": rows, "next_cursor": None, "next": None}
        source, rows, next_cursor = history.gpu_readings(con, job_id, gpu, cursor, limit)
        return {
            "job_id": job_id,
            "source": source,
            "readings": rows,
            "next_cursor": next_cursor,
            "next": _next(request, next_cursor),
        }

    @app.get(
        "/api/training/{job_id:path}/checkpoints",
        response_model=models.CheckpointList,
        dependencies=guarded,
        tags=["jobs"],
        responses={404: {"model": models.Problem}},
    )
    def job_checkpoints(job_id: JobId, con: Con) -> dict[str, Any]:
        """The job's checkpoints by step, with the losses the best one is chosen by."""
        _require_job(con, job_id)
        return {"job_id": job_id, "checkpoints": queries.job_checkpoints(con, job_id)}

    @app.get(
        "/api/training/{job_id:path}",
        response_model=models.JobRecord,
        dependencies=guarded,
        tags=["jobs"],
        responses={404: {"model": models.Problem}},
    )
    def job(job_id: JobId, con: Con) -> dict[str, Any]:
        """The job record: status, times, config, latest step."""
        return _job_record(con, job_id)

    app.include_router(metrics.router(reader), dependencies=guarded)
    # the pages carry no data (their scripts ask the API above), so they are not guarded
    app.include_router(dashboard.router())
    app.mount("/static", dashboard.static_files(), name="static")
    return app


def _job_record(con: duckdb.DuckDBPyConnection, job_id: str) -> dict[str, Any]:
    record = queries.job_record(con, job_id)
    if record is None:
        raise HTTPException(404, f"no job {_quoted(job_id)}")
    record["config"] = _finite(record["config"])
    return record


def _require_job(con: duckdb.DuckDBPyConnection, job_id: str) -> None:
    if not queries.job_exists(con, job_id):
        raise HTTPException(404, f"no job {_quoted(job_id)}")


def _quoted(job_id: str) -> str:
    return repr(job_id if len(job_id) <= 200 else job_id[:200] + "…")


def _filters(
    status: str | None, model: str | None, since: datetime | None, until: datetime | None, id_prefix: str | None = None
) -> fleet.Filters:
    if status is not None and status not in (*STATUSES, "unknown"):
        raise HTTPException(422, f"unknown status {status!r}; known: {', '.join((*STATUSES, 'unknown'))}")
    return fleet.Filters(status=status, model=model, since=_utc(since), until=_utc(until), id_prefix=id_prefix)


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is None:
        return value
    try:
        return value.astimezone(UTC).replace(tzinfo=None)
    except OverflowError as error:  # 9999-12-31T23:59-01:00 is in year 10000 in UTC
        raise HTTPException(422, f"time {value.isoformat()} is out of range in UTC") from error


def _fields(fields: str | None) -> list[str]:
    if fields is None:
        return list(history.STEP_FIELDS)
    chosen = list(dict.fromkeys(f.strip() for f in fields.split(",") if f.strip()))
    unknown = [f for f in chosen if f not in history.STEP_FIELDS]
    if unknown or not chosen:
        raise HTTPException(422, f"unknown field(s) {unknown}; known: {', '.join(history.STEP_FIELDS)}")
    return chosen


def _next(request: Request, cursor: str | None, drop: tuple[str, ...] = ()) -> str | None:
    """The URL of the next page: this request's, with the new cursor."""
    if cursor is None:
        return None
    # urlencode, not replace_query_params(**params): a parameter named "self" would clash
    params = [(k, v) for k, v in request.query_params.multi_items() if k not in ("cursor", *drop)]
    return str(request.url.replace(query=urlencode([*params, ("cursor", cursor)])))


def _finite(value: Any) -> Any:
    """JSON has no NaN: non-finite floats of a free-form config become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
