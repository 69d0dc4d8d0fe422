"""A sealed table's rows of a time range, read from the parts that can hold them (DuckDB).

On DuckDB a sealed table (``gpu_minutes``, warehouse/parts.py) is a view over its hot table and
every live part: a query through it opens every part's file, 30 days of minute parts to chart one
job's week. ``between`` is the same rows for a time range, read from the hot table and only the
parts whose rows' time range (``gpu_parts``' min_ts, max_ts) overlaps it (at 52.7M samples the
week chart went from 110 to 85 ms CPU with this and two smaller changes: docs/decisions.md, "GPU
charts read only their job's minute parts"). The files are the ones the view names, so a snapshot
reads exactly the parts of its moment, as through the view. On PostgreSQL (no parts there) and on
a warehouse whose table is no view over parts, the table itself is read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb

from . import db, parts
from .pg_reader import is_postgres

VIEW_TEXT = "SELECT sql FROM duckdb_views() WHERE view_name = $view AND schema_name = 'main'"
LIVE_PARTS = (
    f"SELECT path, min_ts <= $last AND max_ts >= $first FROM {parts.MANIFEST} WHERE table_name = $table ORDER BY path"
)
# {columns}, {hot}, {ts}: from a parts.Sealed (an allow-list), never from input
HOT_ROWS = "SELECT {columns} FROM {hot} WHERE {ts} BETWEEN $sealed_first AND $sealed_last"
PART_ROWS = (
    "SELECT {columns} FROM read_parquet($sealed_parts, hive_partitioning = false) "
    "WHERE {ts} BETWEEN $sealed_first AND $sealed_last"
)
# a string literal of a view's text (a file it names), quotes doubled inside
_LITERAL = re.compile(r"'((?:[^']|'')*)'")


@dataclass(frozen=True)
class Rows:
    """A relation to write after FROM (named as the table) and the parameters it binds."""

    sql: str
    params: dict[str, Any]


def whole(table: parts.Sealed) -> Rows:
    """Every row of the table, through its name."""
    return Rows(table.name, {})


def between(con: Any, table: parts.Sealed, first: datetime, last: datetime) -> Rows:
    """The rows of ``table`` whose time (``table.ts``) lies in [first, last]; every row of the
    table (``whole``) when it is not a view over parts."""
    if is_postgres(con):
        return whole(table)
    files = _named_files(con, table, first, last)
    if files is None:
        return whole(table)
    columns = ", ".join(table.columns)
    selects = [HOT_ROWS.format(columns=columns, hot=table.hot, ts=table.ts)]
    params: dict[str, Any] = {"sealed_first": first, "sealed_last": last}
    if files:
        selects.append(PART_ROWS.format(columns=columns, ts=table.ts))
        params["sealed_parts"] = db.exact_paths(files)
    return Rows(f"({' UNION ALL '.join(selects)}) AS {table.name}", params)


def _named_files(
    con: duckdb.DuckDBPyConnection, table: parts.Sealed, first: datetime, last: datetime
) -> list[str] | None:
    """The files the view names whose parts overlap [first, last], in the manifest's order; None
    when the table is no view over parts, or the view does not name the manifest's parts one for
    one (then only the view itself says what to read)."""
    view = con.execute(VIEW_TEXT, {"view": table.name}).fetchone()
    if view is None:
        return None
    live = con.execute(LIVE_PARTS, {"table": table.name, "first": first, "last": last}).fetchall()
    named = [literal.replace("''", "'") for literal in _LITERAL.findall(view[0])]
    # parts.view_sql names each live part as <folder>/<path>, in the manifest's order of paths
    if len(named) != len(live):
        return None
    if any(not file.endswith("/" + path) for file, (path, _) in zip(named, live, strict=True)):
        return None
    return [file for file, (_, overlaps) in zip(named, live, strict=True) if overlaps]
