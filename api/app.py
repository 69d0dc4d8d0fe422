"""The REST API: thin handlers over the warehouse's views, served from published snapshots.

``create_app`` only wires: the routers of api/routes/ (one module per resource), the error
handlers of api/errors.py, the bearer-token guard of api/deps.py, and the app's state (the
snapshot reader and the token). Readers never open the warehouse file that ingest writes (see
warehouse/snapshots.py), so requests are answered while cron ingests.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI

from runlytics.warehouse import snapshots

from . import errors, models
from .deps import GUARDED, TOKEN_ENV
from .routes import analytics, dashboard, export, health, history, ingest, jobs, metrics
from .routes.analytics import MAX_COMPARE

__all__ = ["MAX_COMPARE", "TOKEN_ENV", "create_app"]


def create_app(db_path: Path, token: str | None = None) -> FastAPI:
    """The API over the warehouse at ``db_path``; with a token, Bearer auth guards all but health."""
    reader = snapshots.Reader(db_path)
    app = FastAPI(
        title="runlytics",
        version="0.1.0",
        description="Training-run analytics: durations, throughput, losses, GPU use, efficiency.",
        responses={401: {"model": models.Problem}, 422: {"model": models.Problem}, 503: {"model": models.Problem}},
        exception_handlers=errors.HANDLERS,
    )
    app.state.reader = reader
    app.state.token = token if token is not None else os.environ.get(TOKEN_ENV) or None

    # Starlette answers with the first route that matches, and `{job_id:path}` matches any path
    # (a job id may hold "/"): this order routes requests (and orders the schema's paths).
    app.include_router(export.router, dependencies=GUARDED)  # first: {job_id}/steps would take export/steps
    app.include_router(health.router)  # the probes need no token
    app.include_router(ingest.router, dependencies=GUARDED)
    app.include_router(jobs.router, dependencies=GUARDED)  # /jobs/{job_id} before any /{job_id}/…
    app.include_router(analytics.router, dependencies=GUARDED)
    app.include_router(history.router, dependencies=GUARDED)
    app.include_router(jobs.job_router, dependencies=GUARDED)  # last: /api/training/{job_id} takes any path
    app.include_router(metrics.router(reader), dependencies=GUARDED)
    # the pages carry no data (their scripts ask the API above), so they are not guarded
    app.include_router(dashboard.router())
    app.mount("/static", dashboard.static_files(), name="static")
    return app
