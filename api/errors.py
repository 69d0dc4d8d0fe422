"""Errors to answers, in one place: create_app registers ``HANDLERS``.

Routes and the warehouse raise what went wrong in their own terms; each domain error becomes
one status with a ``models.Problem`` body, ``{"detail": …}``:

    queries.UnknownJob     404  no job 'x'
    fleet.UnknownJobs      404  unknown job(s): 'a', 'b' (each id quoted, as quoted() does)
    metric_history.UnknownMetric
                           404  job 'x' has no metric 'm'
    pages.BadCursor        422  bad cursor: …
    history.TooFewPoints   422  max_points must be at least …
    db.WarehouseError      503  warehouse unavailable: … (no snapshot yet, a file that can't be opened,
                                a stored JSON text that no parser reads (queries.job_record_config);
                                the warehouse's folder left out of the paths it names)
                                a part file the views name and do not find: the warehouse moved
                                with its parts until a writer relinks them, or copied without them,
                                deps.get_connection's parts.parts_elsewhere)

Nothing else is mapped. A ``duckdb.Error`` out of a query is a bug (a view missing, SQL that
does not bind), not an outage: it is a 500, and its traceback is logged (and raised in tests).
The routes' own HTTPException (401, 422 for a parameter, 404 for unknown export ids) has
FastAPI's handler, and Starlette's (a path that no route takes, a method not allowed) and request
validation (422, the list of errors) have those below: all answer with the same body shape.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from runlytics.warehouse import db, fleet, history, metric_history, pages, queries

MAX_SHOWN_ID = 200  # characters of a job id echoed in a 404


def quoted(job_id: str) -> str:
    """A job id as a 404 names it: repr, and cut to MAX_SHOWN_ID characters."""
    return repr(job_id if len(job_id) <= MAX_SHOWN_ID else job_id[:MAX_SHOWN_ID] + "…")


def unknown_jobs_detail(job_ids: Sequence[str], at_most: int | None = None) -> str:
    """The 404's text for ids that name no job: ``unknown job(s): 'a', 'b'``, each id quoted (one
    id ``x, y`` reads apart from the two ids ``x`` and ``y``); with ``at_most``, the first that
    many ids and ``and N more``."""
    shown = job_ids if at_most is None else job_ids[:at_most]
    more = f" and {len(job_ids) - len(shown)} more" if len(shown) < len(job_ids) else ""
    return f"unknown job(s): {', '.join(quoted(j) for j in shown)}{more}"


def without_paths(text: str, db_path: Path) -> str:
    """A message as a client may read it: the warehouse's folder left out of every path in it."""
    for folder in {str(db_path.parent), str(db_path.parent.resolve())} - {"."}:
        text = text.replace(folder.rstrip(os.sep) + os.sep, "")
    return text


def problem(status: int, detail: Any, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return problem(exc.status_code, exc.detail, exc.headers)


async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
              for e in exc.errors()]  # fmt: skip
    return problem(422, errors)


async def unknown_job(request: Request, exc: queries.UnknownJob) -> JSONResponse:
    return problem(404, f"no job {quoted(exc.job_id)}")


async def unknown_jobs(request: Request, exc: fleet.UnknownJobs) -> JSONResponse:
    return problem(404, unknown_jobs_detail(exc.job_ids))


async def unknown_metric(request: Request, exc: metric_history.UnknownMetric) -> JSONResponse:
    return problem(404, f"job {quoted(exc.job_id)} has no metric {quoted(exc.name)}")


async def bad_cursor(request: Request, exc: pages.BadCursor) -> JSONResponse:
    return problem(422, f"bad cursor: {exc}")


async def too_few_points(request: Request, exc: history.TooFewPoints) -> JSONResponse:
    return problem(422, str(exc))


async def warehouse_unavailable(request: Request, exc: db.WarehouseError) -> JSONResponse:
    return problem(503, f"warehouse unavailable: {without_paths(str(exc), request.app.state.reader.db_path)}")


# FastAPI(exception_handlers=HANDLERS); Starlette picks the handler of the nearest class in the MRO
HANDLERS: dict[int | type[Exception], Callable[[Request, Any], Coroutine[Any, Any, Response]]] = {
    StarletteHTTPException: http_error,
    RequestValidationError: invalid_request,
    queries.UnknownJob: unknown_job,
    fleet.UnknownJobs: unknown_jobs,
    metric_history.UnknownMetric: unknown_metric,
    pages.BadCursor: bad_cursor,
    history.TooFewPoints: too_few_points,
    db.WarehouseError: warehouse_unavailable,
}
