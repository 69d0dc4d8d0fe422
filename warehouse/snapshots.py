"""Published read-only snapshots of the warehouse, for readers that must never block the writer.

DuckDB lets one process write a file, and other processes open it only while nobody writes.
So readers (the API server, ``runlytics sql``) never open the warehouse file itself: after each
ingest run that changed something, the writer checkpoints the file and publishes a copy,
``<db>.snapshots/<ns>.duckdb``, by an atomic rename. Readers open the newest copy read-only;
the writer never waits for them, and they never wait for it. See docs/decisions.md.

Each copy has a path of its own: DuckDB caches open databases by path, so a reused name could
serve a stale copy to a process that still has the old one open.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

from . import db, sidefiles

KEEP = 3  # older copies stay a while for readers that still have them open
# An ingest run that changed nothing still publishes when the newest copy is older than this,
# so that readers' view of ingest_runs stays recent without a copy every cron minute.
REFRESH_SECONDS = 600
SUFFIX = ".duckdb"


def folder(db_path: Path) -> Path:
    return sidefiles.snapshots(db_path)


def latest(db_path: Path) -> Path | None:
    """The newest published copy, or None when none was published yet."""
    try:
        names = [e.name for e in os.scandir(folder(db_path)) if e.name.endswith(SUFFIX)]
    except FileNotFoundError:
        return None
    return folder(db_path) / max(names) if names else None


def age(db_path: Path) -> float:
    """Seconds since the newest copy was published (infinite when there is none)."""
    newest = latest(db_path)
    return time.time() - int(newest.name.removesuffix(SUFFIX)) / 1e9 if newest else float("inf")


def publish(db_path: Path) -> Path:
    """Copy the (checkpointed, closed) warehouse to a new snapshot; the caller holds the ingest lock."""
    target_dir = folder(db_path)
    target_dir.mkdir(exist_ok=True)
    for leftover in target_dir.glob("*.tmp"):
        leftover.unlink(missing_ok=True)
    name = f"{time.time_ns():020d}{SUFFIX}"
    tmp = target_dir / (name + ".tmp")
    shutil.copyfile(db_path, tmp)
    with tmp.open("rb+") as f:
        os.fsync(f.fileno())
    final = target_dir / name
    os.replace(tmp, final)
    for old in sorted(p for p in target_dir.iterdir() if p.name.endswith(SUFFIX))[:-KEEP]:
        old.unlink(missing_ok=True)
    return final


def connect_latest(db_path: Path, wait: float = db.DEFAULT_WAIT_SECONDS) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the newest snapshot (or to the warehouse when none exists yet)."""
    snapshot = latest(db_path)
    if snapshot is not None:
        try:
            return db.connect(snapshot, read_only=True, wait=wait)
        except db.WarehouseError:
            pass  # pruned between listing and opening: fall back to the warehouse
    return db.connect(db_path, read_only=True, wait=wait)


class Reader:
    """A long-lived reader for a server: one connection per snapshot, swapped when a newer appears.

    ``cursor()`` is cheap (no file is opened unless a new snapshot was published) and safe to
    call from several threads; each request uses its own cursor.
    """

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self._lock = threading.Lock()
        self._snapshot: Path | None = None
        self._con: duckdb.DuckDBPyConnection | None = None

    def cursor(self) -> duckdb.DuckDBPyConnection:
        snapshot = latest(self.db_path)
        with self._lock:
            # only ever move forward: a thread that listed the folder a moment earlier must not
            # swap an older snapshot back in
            if self._con is None or (snapshot is not None and (self._snapshot is None or snapshot > self._snapshot)):
                if snapshot is None:
                    raise db.WarehouseError(
                        f"no snapshot of {self.db_path} yet: run `runlytics ingest` or `runlytics db upgrade`"
                    )
                # the old connection closes when its last cursor is gone
                self._con = db.connect(snapshot, read_only=True, wait=5)
                self._snapshot = snapshot
            cursor = self._con.cursor()
        cursor.execute("SET TimeZone = 'UTC'")
        return cursor

    @property
    def snapshot(self) -> Path | None:
        return self._snapshot
