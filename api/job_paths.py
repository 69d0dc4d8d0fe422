"""Which answer a path under ``/api/training/`` means when a job id looks like a route.

A job's answers are at ``/api/training/{job_id}/analytics`` (``/steps``, ``/gpus``, ...), the id
taking any path. Routes are matched in order (api/app.py), so two routes take such paths first:
the record alias ``/api/training/jobs/{job_id}`` (for ids that end like a route, ``x/steps``)
and the export ``/api/training/export/steps``. A job named ``jobs`` (or ``jobs/…``) then had
none of its answers reachable, ``/api/training/jobs/analytics`` answering the record of a job
named ``analytics``; a job named ``export`` had no steps. ``JobPaths`` sends such a request to
the job's own answer when that job exists (for the export: when no ``job_ids`` is given), and
leaves every other request to the app's routes. ``/api/training/jobs`` stays the job list and
``/api/training/insights`` the fleet's insights (those jobs' records are at
``/api/training/jobs/jobs`` and ``/api/training/jobs/insights``).

It also undoes a second decoding of the path: the ASGI ``path`` is ``raw_path`` decoded once
(as uvicorn does), but Starlette's ``TestClient`` decodes an already decoded path again, so a
job id ``p%2F`` sent as ``p%252F`` reached the job ``p/``.

And it answers a path ending in a line feed (``%0A``), which Starlette's ``$`` lets a route of
no job id match as if the line feed were not there (``/api/training/jobs%0A`` was the job
list): no route but one whose job id ends the path matches it whole (api/routing.py), so under
``/api/training/jobs/`` it is the record alias's (the app's routes), elsewhere under
``/api/training/`` the per-job routes' (the record of ``jobs\n``, or "no job"), and anywhere else
the 404 of an unknown path.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote

import anyio.to_thread
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from runlytics.warehouse import queries

from .deps import bearer_ok
from .errors import problem

PREFIX = "/api/training/"
ALIAS = PREFIX + "jobs/"
EXPORT = PREFIX + "export/steps"
# the suffixes of the routes /api/training/{job_id}/<suffix>: tests/test_api.py
# (test_the_route_like_suffixes_are_the_schemas) checks them against the schema's paths
SUFFIXES = ("analytics", "steps", "gpus", "insights", "metrics/history", "metrics", "checkpoints")
METHODS = ("GET", "HEAD")


def job_answer(route_path: str, query_string: bytes) -> str | None:
    """The job id whose own answer ``route_path`` names, when a route taken first (the record
    alias, the export) would answer instead; else None (the app's routes decide)."""
    if not route_path.startswith(ALIAS):
        if route_path != EXPORT:
            return None
        if any(key == "job_ids" for key, _ in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)):
            return None
    rest = route_path[len(PREFIX) :]
    for suffix in SUFFIXES:
        if rest.endswith("/" + suffix) and len(rest) > len(suffix) + 1:
            return rest[: -len(suffix) - 1]
    return None


def decoded_once(scope: Scope) -> str | None:
    """``path`` as ``raw_path`` decoded once, when the server decoded it twice; else None."""
    raw = scope.get("raw_path")
    if not raw:
        return None
    once = unquote(raw.decode("latin-1"))
    path: str = scope["path"]
    return once if path != once and path == unquote(once) else None


class JobPaths:
    """Plain ASGI middleware: ``per_job`` is an app holding only the per-job routes, which a
    request is sent to when ``job_answer`` names a job the warehouse has."""

    def __init__(self, app: ASGIApp, per_job: ASGIApp) -> None:
        self.app = app
        self.per_job = per_job

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        once = decoded_once(scope)
        if once is not None:
            scope = {**scope, "path": once}
        root = scope.get("root_path", "")
        path: str = scope["path"]
        route_path = path[len(root) :] if root and path.startswith(root) else path
        if route_path.endswith("\n"):
            if route_path.startswith(ALIAS):
                await self.app(scope, receive, send)
            elif route_path.startswith(PREFIX):
                await self.per_job(scope, receive, send)
            else:
                await problem(404, "Not Found")(scope, receive, send)
            return
        job_id = None
        if scope["method"] in METHODS:
            job_id = job_answer(route_path, scope["query_string"])
        if job_id is not None and _authorized(scope) and await anyio.to_thread.run_sync(_exists, scope, job_id):
            await self.per_job(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _authorized(scope: Scope) -> bool:
    """Whether the request carries the token (when one is set), read as deps.authorized reads it:
    a request that will get a 401 either way costs no lookup."""
    return bearer_ok(scope["app"].state.token, Headers(scope=scope).get("authorization", ""))


def _exists(scope: Scope, job_id: str) -> bool:
    try:
        cursor = scope["app"].state.reader.cursor()
    except Exception:  # no snapshot, a database down: the app's routes answer (503)
        return False
    try:
        return queries.job_exists(cursor, job_id)
    except Exception:  # the same outage on the query: the routes answer it
        return False
    finally:
        cursor.close()
