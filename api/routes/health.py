"""``/healthz`` and ``/readyz``: the probes, which need no token.

``/readyz`` answers for itself, with a ``models.Readiness`` body: any failure to read the
snapshot (a ``duckdb.Error`` included) makes it 503, since a probe reports and never raises.
It needs no token, so it names no path on the server: the snapshot relative to the
warehouse's folder, and messages without that folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from runlytics.warehouse import db, migrate

from .. import metrics, models
from ..deps import Reader
from ..errors import without_paths

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=models.Health, operation_id="get_health")
def healthz() -> dict[str, Any]:
    """The process is up."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=models.Readiness,
    responses={503: {"model": models.Readiness}},
    operation_id="get_readiness",
)
def readyz(reader: Reader) -> Any:
    """The warehouse is reachable and its schema is at this code's head revision."""
    try:
        cursor = reader.cursor()
        try:
            revision = migrate.current_revision(cursor)
        finally:
            cursor.close()
    except (db.WarehouseError, duckdb.Error) as error:
        detail = without_paths(str(error), reader.db_path)
        return JSONResponse({"status": "unavailable", "detail": detail}, status_code=503)
    snapshot = _relative(reader.snapshot) if reader.snapshot else None
    if revision != migrate.HEAD_REVISION:
        detail = f"schema at {revision}, code at {migrate.HEAD_REVISION}"
        return JSONResponse({"status": "unavailable", "detail": detail, "revision": revision}, status_code=503)
    fresh = metrics.ingest_freshness(reader.db_path)
    if fresh.stale:
        body = {"status": "stale", "detail": fresh.detail, "revision": revision, "snapshot": snapshot}
        return JSONResponse({**body, "stale": True}, status_code=503)
    return {"status": "ok", "revision": revision, "snapshot": snapshot, "stale": fresh.stale}


def _relative(snapshot: Path) -> str:
    """``<db name>.snapshots/<copy>``: where the copy is, seen from the warehouse's folder."""
    return f"{snapshot.parent.name}/{snapshot.name}"
