"""What the routes depend on: the request's cursor (on the newest snapshot of a DuckDB
warehouse, or a pooled read-only connection to a PostgreSQL one: warehouse/pg_reader.py, whose
cursor takes the same calls), the bearer-token check, and the parameter types several routes
share, as ``Annotated`` aliases (``con: Con``, ``limit: Limit = 100``, ``filters: Filters``).

A dependency raises domain errors (``db.WarehouseError`` when no snapshot can be read), never
an answer of its own: api/errors.py maps them. The token check is the exception: a 401 is not a
domain error.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any, cast

import duckdb
from fastapi import Depends, HTTPException, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BaseModel, BeforeValidator

from runlytics.warehouse import bounded_json, fleet, pages, parts, pg_reader, snapshots, times
from runlytics.warehouse.views import STATUSES

TOKEN_ENV = "RUNLYTICS_API_TOKEN"
MAX_PAGE = pages.MAX_PAGE
MAX_ID_LENGTH = 1_000
# The cursors this API hands out nest two levels ({"k": …, "v": [...]}); a deeper one is forged,
# and decoding it (warehouse/pages.py) would recurse once per level.
MAX_CURSOR_DEPTH = 4
# A cursor holds a row's job id, host or GPU UUID, which ingest takes of any length: the longest
# cursor the API may hand out is as long as the longest request `runlytics serve` reads (uvicorn's
# h11 reads a request line and headers of 16 KiB in all), so no cursor that reached the API is
# refused for its length; decoding 16 KiB of base64 JSON, its depth checked first, costs little.
MAX_CURSOR_LENGTH = 16 * 1024


def _shallow(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor.encode("ascii") + b"==").decode("utf-8")
    except (ValueError, binascii.Error):
        return cursor  # not base64 JSON: pages.decode says so (bad cursor, 422)
    if bounded_json.depth(text) > MAX_CURSOR_DEPTH:
        raise ValueError("cursor is not one this API handed out")
    return cursor


Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="rows per page")]
Cursor = Annotated[
    str | None,
    Query(max_length=MAX_CURSOR_LENGTH, description="next_cursor of the previous page"),
    AfterValidator(_shallow),
]
JobId = Annotated[str, "a job id"]


def _instant(value: Any) -> Any:
    """A ``since``/``until`` text read as ``runlytics export --since`` reads it (warehouse/times.py),
    before pydantic's own reading, which takes a number as Unix seconds or milliseconds (so that
    ``20260301``, an ISO 8601 date, was 1970-08-23): times.BadTime is a ValueError, a 422."""
    return times.instant(value) if isinstance(value, str) else value


# the jobs' start time: ISO 8601 (UTC unless it has an offset) or Unix seconds; naive UTC after
Instant = Annotated[
    datetime | None,
    BeforeValidator(_instant),
    Query(description="ISO 8601 (UTC unless it has an offset: Z, +02, +02:00) or Unix seconds (9 digits or more)"),
]

KNOWN_STATUSES = (*STATUSES, "unknown")


class FleetFilters(BaseModel):
    """The jobs' filters of the job list, the summary, the fleet trends and the fleet's insights:
    query parameters read as one model, which keeps them in their place among a route's own in
    the schema and in a 422's list (a ``Depends`` function's would come after the route's)."""

    status: str | None = None
    model: str | None = None
    since: Instant = None
    until: Instant = None

    def chosen(self, id_prefix: str | None = None) -> fleet.Filters:
        """The filters as warehouse/fleet.py takes them. An unknown status is a 422 of its own,
        raised when the route asks, after its own checks (a validator's would be a list of
        errors, before them)."""
        if self.status is not None and self.status not in KNOWN_STATUSES:
            raise HTTPException(422, f"unknown status {self.status!r}; known: {', '.join(KNOWN_STATUSES)}")
        return fleet.Filters(
            status=self.status, model=self.model, since=self.since, until=self.until, id_prefix=id_prefix
        )


Filters = Annotated[FleetFilters, Query()]


def configured_token(token: str | None) -> str | None:
    """The token given, else ``$RUNLYTICS_API_TOKEN``, else None (no auth); ValueError when it is
    empty: an empty variable is a mistake, never a way to turn auth off."""
    if token is None:
        token = os.environ.get(TOKEN_ENV)
    if token is not None and not token.strip():
        raise ValueError(f"{TOKEN_ENV} is empty: set a token, or unset the variable to serve without one")
    return token


def get_reader(request: Request) -> snapshots.Reader:
    """The app's reader (create_app puts it in ``app.state``): of published snapshots, or of a
    PostgreSQL database (its ``db_path`` names no file, its ``snapshot`` is None)."""
    reader: snapshots.Reader = request.app.state.reader
    return reader


Reader = Annotated[snapshots.Reader, Depends(get_reader)]


def get_connection(request: Request) -> Iterator[duckdb.DuckDBPyConnection]:
    """A cursor for one request: on the newest snapshot (db.WarehouseError when there is none),
    or a PostgreSQL reader's, which answers the same calls (``execute`` with ``$name``
    parameters, ``fetchone``, ``fetchall``, ``description``)."""
    reader: snapshots.Reader | pg_reader.Reader = request.app.state.reader
    # the routes are typed for DuckDB's cursor; pg_reader.Cursor offers the part they use
    cursor = cast(duckdb.DuckDBPyConnection, reader.cursor())
    try:
        yield cursor
    except duckdb.IOException as error:  # a part the views name, not there: the warehouse's, a 503
        said = parts.unread_part_error(error, request.app.state.reader.db_path, show_paths=False)
        if said is None:
            raise  # any other: a bug, a 500 (api/errors.py)
        raise said from None
    finally:
        cursor.close()


Con = Annotated[duckdb.DuckDBPyConnection, Depends(get_connection)]


# Declares the scheme in the OpenAPI schema (the Authorize button of /docs, the token in generated
# clients); auto_error=False since `authorized` decides, with its own constant-time compare and 401.
BEARER = HTTPBearer(
    scheme_name="bearer",
    description=f"the token of ${TOKEN_ENV}: `Authorization: Bearer <token>`",
    auto_error=False,
)


def authorized(request: Request, _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]) -> None:
    """With a token (``app.state.token``), the request must carry ``Authorization: Bearer <token>``."""
    if not bearer_ok(request.app.state.token, request.headers.get("authorization", "")):
        raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


def bearer_ok(token: str | None, authorization: str) -> bool:
    """Whether an ``Authorization`` value carries ``token`` (any value does when no token is set):
    ``Bearer <token>``, the scheme in any case (RFC 9110 §11.1: ``bearer`` is the same scheme),
    the token compared in constant time."""
    if token is None:
        return True
    scheme, credentials = authorization[:7], authorization[7:]
    return secrets.compare_digest(credentials.encode(), token.encode()) and scheme.lower() == "bearer "


GUARDED = (Depends(authorized),)  # for include_router(dependencies=…)
