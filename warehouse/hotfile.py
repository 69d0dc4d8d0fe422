"""Rebuilding the warehouse file when a copy of it would be much smaller, so that a snapshot copies what is used.

DuckDB reuses the blocks that deleted rows free but never gives them back: a warehouse upgraded
from before revision 0014 keeps the size its gpu_samples table had once the next run seals
those rows into Parquet parts, and every snapshot would copy that size. When most of the file
is free, the run (holding the ingest lock, the file closed and checkpointed) copies the
database into a new file with ``COPY FROM DATABASE`` (tables, keys, views as they are) and
renames it over the old one. A run killed meanwhile leaves the old file whole and a temporary
one, deleted by the next run.

The copy has blocks of ``BLOCK_SIZE`` (64 KiB), not DuckDB's default 256 KiB: with the samples
and their minutes sealed into Parquet parts, the file is mostly small tables and indexes, each
filling blocks of its own. A warehouse of 0.7M samples (146k of them hot) measured 11.5 MiB
after its first ingest, 6.3 MiB rebuilt with 256 KiB blocks, 3.6 MiB with 64 KiB, and 4.5-5 MiB
through the cron runs that followed (13.3 MiB with 256 KiB blocks): both the live file and its
snapshot (issue #14, bytes at rest). A new warehouse is created with these blocks
(warehouse/head.py); a file over ``CONVERT_MIN_BYTES`` with another block size (created before)
is rebuilt once, at the end of a run.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import duckdb

from . import db

# rebuilt when the file is over this size and over this share of its blocks is free
MIN_BYTES = 64 * 2**20
FREE_SHARE = 0.5
TMP_SUFFIX = ".rebuild.tmp"
# The rebuilt file's block size (module docstring), and the size from which a file with another
# one is rebuilt (a new warehouse with little in it is left as it is: a rebuild costs ~0.3 s).
BLOCK_SIZE = 64 * 2**10
CONVERT_MIN_BYTES = 4 * 2**20


def is_sparse(con: duckdb.DuckDBPyConnection, path: Path) -> bool:
    """True when a rebuild makes the (checkpointed) file much smaller: it is large and mostly free
    blocks, or over CONVERT_MIN_BYTES with blocks of another size than BLOCK_SIZE."""
    try:
        size = path.stat().st_size
    except OSError:
        return False
    row = con.execute(
        "SELECT block_size, total_blocks, free_blocks FROM pragma_database_size() "
        "WHERE database_name = current_database()"
    ).fetchone()
    if not row:
        return False
    block_size, total, free = row
    if size >= CONVERT_MIN_BYTES and block_size != BLOCK_SIZE:
        return True
    return bool(size >= MIN_BYTES and total and free / total > FREE_SHARE)


def remove_leftovers(path: Path) -> None:
    """Delete the half-built copy of a run killed while rebuilding (the caller holds the lock)."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
        leftover.unlink(missing_ok=True)


def rebuild(path: Path) -> None:
    """Copy the closed warehouse into a new file and put it in its place (the caller holds the lock)."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    remove_leftovers(path)
    try:
        con = duckdb.connect(str(path))
        try:
            con.execute("SET enable_progress_bar = false")
            row = con.execute("SELECT current_database()").fetchone()
            assert row is not None
            con.execute(f"ATTACH {db.quote_literal(str(tmp))} AS rebuilt (BLOCK_SIZE {BLOCK_SIZE})")
            con.execute(f"COPY FROM DATABASE {db.quote_identifier(str(row[0]))} TO rebuilt")
            con.execute("CHECKPOINT rebuilt")
            con.execute("DETACH rebuilt")
        finally:
            con.close()
        if tmp.with_name(tmp.name + ".wal").exists():  # not whole in one file: keep the old one
            raise OSError(f"rebuilt copy of {path} left a write-ahead log")
        os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))  # as private as the file it replaces
        db.fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        tmp.with_name(tmp.name + ".wal").unlink(missing_ok=True)
        raise
    db.fsync_dir(path.parent)
