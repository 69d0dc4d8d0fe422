"""The REST API: thin handlers over the warehouse's views, served from published snapshots.

``create_app`` only wires: the routers of api/routes/ (one module per resource), the error
handlers of api/errors.py, the bearer-token guard of api/deps.py, the ``Host`` allow-list and
security headers of api/security.py, and the app's state (the snapshot reader, the token, the
base URL of links). Readers never open the warehouse file that ingest writes (see
warehouse/snapshots.py), so requests are answered while cron ingests. A PostgreSQL warehouse is
read directly, or a replica of it (``read_db``), through warehouse/pg_reader.py's pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import cast

from fastapi import FastAPI

from runlytics.warehouse import db, pg_reader, snapshots

from . import errors, head, job_paths, models, security, timed_reads
from .deps import GUARDED, TOKEN_ENV, configured_token
from .routes import analytics, dashboard, docs, export, health, history, ingest, insights, jobs, metric_points, metrics
from .routes.analytics import MAX_COMPARE

__all__ = ["MAX_COMPARE", "TOKEN_ENV", "create_app"]
TITLE = "runlytics"


def create_app(
    db_path: Path | db.PostgresUrl,
    token: str | None = None,
    *,
    allowed_hosts: Sequence[str] | None = None,
    base_url: str | None = None,
    read_db: db.PostgresUrl | None = None,
    read_timeout: float = pg_reader.DEFAULT_TIMEOUT_SECONDS,
) -> FastAPI:
    """The API over the warehouse at ``db_path`` (a DuckDB file, or a PostgreSQL database).

    With a token (else ``$RUNLYTICS_API_TOKEN``), Bearer auth guards all but the probes and the
    dashboard's pages; an empty token is a ValueError, never auth turned off. ``allowed_hosts``:
    the ``Host`` names answered (None: any, as for a test client). ``base_url``: what ``next``
    links start with (None: they are relative, never built from the request's ``Host``). Each
    statement is limited to ``read_timeout`` seconds, on DuckDB (api/timed_reads.py) as on
    PostgreSQL, whose reads go to ``read_db`` when given (a replica).
    """
    reader: snapshots.Reader | pg_reader.Reader
    if isinstance(db_path, db.PostgresUrl):
        reader = pg_reader.Reader(read_db or db_path, read_timeout)
    elif read_db is not None:
        raise ValueError("a replica to read (--read-db) serves a PostgreSQL warehouse only")
    else:
        reader = timed_reads.Reader(db_path, read_timeout)  # each read limited, as on PostgreSQL
    app = FastAPI(
        title=TITLE,
        version="0.1.0",
        description="Training-run analytics: durations, throughput, losses, GPU use, efficiency.",
        responses={401: {"model": models.Problem}, 422: {"model": models.Problem}, 503: {"model": models.Problem}},
        exception_handlers=errors.HANDLERS,
        # api/routes/docs.py serves the schema (behind the token) and the docs page, without any CDN
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        # a path with a slash too many is a JSON 404, not a redirect (an empty 307 after the
        # request's Host, past a proxy's path prefix)
        redirect_slashes=False,
    )
    app.state.reader = reader
    app.state.token = configured_token(token)
    app.state.base_url = base_url.rstrip("/") if base_url else ""
    # innermost: a job whose id looks like a route (`jobs`) gets its own answers (api/job_paths.py)
    app.add_middleware(job_paths.JobPaths, per_job=_per_job_app(app))
    app.add_middleware(head.HeadAsGet)  # HEAD as GET, body dropped: outside JobPaths, which routes GETs
    app.add_middleware(security.AllowedHosts, hosts=allowed_hosts)
    app.add_middleware(security.SecurityHeaders)  # added last: outermost, so the 400s get them too

    # Starlette answers with the first route that matches, and `{job_id:path}` matches any path
    # (a job id may hold "/"): this order routes requests (and orders the schema's paths).
    app.include_router(export.router, dependencies=GUARDED)  # first: {job_id}/steps would take export/steps
    app.include_router(health.router)  # the probes need no token
    app.include_router(ingest.router, dependencies=GUARDED)
    app.include_router(jobs.router, dependencies=GUARDED)  # /jobs/{job_id} before any /{job_id}/…
    app.include_router(analytics.router, dependencies=GUARDED)
    app.include_router(analytics.job_router, dependencies=GUARDED)
    app.include_router(history.router, dependencies=GUARDED)
    app.include_router(insights.router, dependencies=GUARDED)  # before job_router: it would take /insights
    app.include_router(insights.job_router, dependencies=GUARDED)
    app.include_router(metric_points.router, dependencies=GUARDED)
    app.include_router(jobs.job_router, dependencies=GUARDED)  # last: /api/training/{job_id} takes any path
    app.include_router(metrics.router(cast(snapshots.Reader, reader)), dependencies=GUARDED)
    app.include_router(docs.schema_router(), dependencies=GUARDED)
    # the pages carry no data (their scripts ask the API above), so they are not guarded
    app.include_router(docs.page_router(TITLE))
    app.include_router(dashboard.router())
    app.mount("/static", dashboard.static_files(), name="static")
    return app


def _per_job_app(app: FastAPI) -> FastAPI:
    """The per-job routes alone, in the same order and with the app's state and error handlers:
    what job_paths.JobPaths sends a request to when a route taken first would shadow them."""
    per_job = FastAPI(
        exception_handlers=errors.HANDLERS, openapi_url=None, docs_url=None, redoc_url=None, redirect_slashes=False
    )
    per_job.state = app.state
    for router in PER_JOB_ROUTERS:
        per_job.include_router(router, dependencies=GUARDED)
    return per_job


# the routers of /api/training/{job_id}/…, in create_app's order (its other routers between them)
PER_JOB_ROUTERS = (analytics.job_router, history.router, insights.job_router, metric_points.router, jobs.job_router)
