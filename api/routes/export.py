"""The API's bulk export: ``GET /api/training/export/steps`` streams many jobs' step histories.

CSV is sent as DuckDB writes it, a group of jobs at a time; Parquet is written by DuckDB to a
temporary file that is streamed in chunks and gone once sent (warehouse/export.py). Neither
holds the whole history in memory. Everything that can fail is checked before the first byte
is sent, so an error is an answer with its status code (never a broken 200).

create_app includes this router before the ``/api/training/{job_id}/…`` routes: Starlette
matches routes in order, and ``/api/training/{job_id}/steps`` would take ``export/steps``.
Unknown ids are a 404 naming at most MAX_NAMED of them (a comparison names them all).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Annotated, BinaryIO, Literal

import duckdb
from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import StreamingResponse

from runlytics.warehouse import export

from .. import models
from ..deps import Reader
from ..errors import unknown_jobs_detail
from .common import distinct_ids

PATH = "/api/training/export/steps"
MAX_EXPORT_JOBS = 1_000
MAX_QUERY = 64_000  # characters of job_ids: about what clients and servers let through in a URL
MAX_NAMED = 10  # unknown ids named in a 404 (and each cut to 200 characters)
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet"}

router = APIRouter(tags=["export"])


@router.get(
    PATH,
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "the step_facts rows of the jobs, by job and step, as a file",
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
            },
        },
        404: {"model": models.Problem},
    },
    operation_id="export_steps",
)
def export_steps(
    reader: Reader,
    job_ids: Annotated[
        list[str],
        Query(description=f"a,b,… or repeated (1 to {MAX_EXPORT_JOBS} distinct jobs)"),
    ],
    fmt: Annotated[Literal["csv", "parquet"], Query(alias="format", description="csv or parquet")] = "csv",
) -> StreamingResponse:
    """Many jobs' step histories (every column of step_facts), streamed as CSV or Parquet."""
    # a cursor of our own, not the Con dependency's: the stream outlives the handler (and the
    # dependency's cleanup); db.WarehouseError: 503
    cursor = reader.cursor()
    try:
        ids = distinct_ids(cursor, job_ids, MAX_QUERY, MAX_EXPORT_JOBS)
        missing = export.unknown_jobs(cursor, ids)
        if missing:
            raise HTTPException(404, unknown_jobs_detail(missing, MAX_NAMED))
        headers = {"Content-Disposition": f'attachment; filename="steps.{fmt}"'}
        if fmt == "parquet":
            file = export.steps_parquet(cursor, ids)
            cursor.close()
            headers["Content-Length"] = str(os.fstat(file.fileno()).st_size)
            return StreamingResponse(_file_chunks(file), media_type=MEDIA_TYPES[fmt], headers=headers)
        chunks = export.steps_csv(cursor, ids)
        # the header and the first group's rows: its queries run now, and a failure is still an
        # error answer; a later group's can only cut the stream (docs/export.md)
        first = next(chunks)
        return StreamingResponse(_then(first, chunks, cursor), media_type=MEDIA_TYPES[fmt], headers=headers)
    except BaseException:
        cursor.close()
        raise


def _then(first: bytes, rest: Iterator[bytes], cursor: duckdb.DuckDBPyConnection) -> Iterator[bytes]:
    try:
        yield first
        yield from rest
    finally:
        close = getattr(rest, "close", None)
        if close is not None:
            close()
        cursor.close()


def _file_chunks(file: BinaryIO) -> Iterator[bytes]:
    with file:
        while chunk := file.read(export.CHUNK_BYTES):
            yield chunk
