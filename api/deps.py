"""What the routes depend on: the request's cursor on the newest snapshot, the bearer-token
check, and the parameter types several routes share, as ``Annotated`` aliases (``con: Con``,
``limit: Limit = 100``).

A dependency raises domain errors (``db.WarehouseError`` when no snapshot can be read), never
an answer of its own: api/errors.py maps them. The token check is the exception: a 401 is not a
domain error.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Annotated

import duckdb
from fastapi import Depends, HTTPException, Query, Request

from runlytics.warehouse import snapshots

TOKEN_ENV = "RUNLYTICS_API_TOKEN"
MAX_PAGE = 10_000
MAX_ID_LENGTH = 1_000

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="rows per page")]
Cursor = Annotated[str | None, Query(max_length=4_000, description="next_cursor of the previous page")]
JobId = Annotated[str, "a job id"]


def get_reader(request: Request) -> snapshots.Reader:
    """The app's reader of published snapshots (create_app puts it in ``app.state``)."""
    reader: snapshots.Reader = request.app.state.reader
    return reader


Reader = Annotated[snapshots.Reader, Depends(get_reader)]


def get_connection(reader: Reader) -> Iterator[duckdb.DuckDBPyConnection]:
    """A cursor on the newest snapshot, for one request; db.WarehouseError when there is none."""
    cursor = reader.cursor()
    try:
        yield cursor
    finally:
        cursor.close()


Con = Annotated[duckdb.DuckDBPyConnection, Depends(get_connection)]


def authorized(request: Request) -> None:
    """With a token (``app.state.token``), the request must carry ``Authorization: Bearer <token>``."""
    token = request.app.state.token
    if token is None:
        return
    given = request.headers.get("authorization", "")
    if not secrets.compare_digest(given.encode(), f"Bearer {token}".encode()):
        raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


GUARDED = (Depends(authorized),)  # for include_router(dependencies=…)
