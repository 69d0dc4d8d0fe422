"""``/api/ingest/runs``: the ingest runs and the files that are failing."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from runlytics.warehouse import ingest_status

from .. import models
from ..deps import Con, Cursor, Limit
from .common import next_url

router = APIRouter(tags=["ingest"])


@router.get("/api/ingest/runs", response_model=models.IngestRuns, operation_id="list_ingest_runs")
def ingest_runs(request: Request, con: Con, limit: Limit = 50, cursor: Cursor = None) -> dict[str, Any]:
    """Ingest runs, newest first (keyset pages), and the files that are failing with their reasons
    (each path from its job folder on: no server folder is shown)."""
    rows, next_cursor = ingest_status.runs_page(con, limit, cursor)
    return {
        "runs": rows,
        "problem_files": ingest_status.problem_files(con, server_paths=False),
        "next_cursor": next_cursor,
        "next": next_url(request, next_cursor),
    }
