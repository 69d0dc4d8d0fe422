"""Published read-only snapshots of the warehouse, for readers that must never block the writer.

DuckDB lets one process write a file, and other processes open it only while nobody writes.
So readers (the API server, ``runlytics sql``) never open the warehouse file itself: after each
ingest run that changed something, the writer checkpoints the file and publishes a copy,
``<db>.snapshots/<ns>.duckdb``, by an atomic rename. Readers open the newest copy read-only;
the writer never waits for them, and they never wait for it. See docs/decisions.md.

Each copy has a path of its own: DuckDB caches open databases by path, so a reused name could
serve a stale copy to a process that still has the old one open.

Names are nanosecond times, compared as numbers, and never go back: a copy is named after the
newest one even when the clock says earlier (a clock that was ahead, then corrected), so a
copy named in the future never pins readers to it. Its age is read from the file's mtime.
Copies are created 0600 (less what the umask takes): they hold the whole warehouse.

A copy is of the DuckDB file only: sealed GPU samples and their per-minute rollups live in
Parquet parts beside it (``parts.py``) that the warehouse and every copy share; a copy's views
``gpu_samples`` and ``gpu_minutes`` name the parts of its moment, and a part replaced later keeps
its file while a kept copy may name it.

A run that commits to the warehouse first creates ``<db>.unpublished`` (``mark_unpublished``), once
it has opened and checked the warehouse (a refused run leaves none), and only a successful
``publish`` removes it: a run killed between its commits and its publish leaves
the marker, and the next run (the quick path too) publishes even when it finds nothing new, so
readers never keep serving a copy older than what the warehouse holds. A writer that always
publishes (``db upgrade``, ``insights set``) does all of it in ``published_write``.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

from . import db, sidefiles
from .lock import run_lock

# Copies kept: the newest alone. A reader that opened an older copy keeps reading it (an open
# file outlives its name), and the parts it names outlive it (parts.RETIRED_GRACE_SECONDS); a
# reader that finds its copy gone between listing and opening lists again (connect_latest,
# Reader). Each kept copy is a whole DuckDB file at rest (docs/decisions.md, "Bytes at rest").
KEEP = 1
OPEN_TRIES = 3  # a copy replaced between listing and opening: list again
# An ingest run that changed nothing still publishes when the newest copy is older than this,
# so that readers' view of ingest_runs stays recent without a copy every cron minute.
REFRESH_SECONDS = 600
SUFFIX = ".duckdb"
SKEW_SECONDS = 60  # a copy whose mtime is further ahead of the clock than this is stale
# Parts never change once written (a new part has a new name), so a reader keeps their Parquet
# footers: a chart over a month of minute parts parsed every footer per query otherwise.
CACHE_FOOTERS = "SET parquet_metadata_cache = true"


def folder(db_path: Path) -> Path:
    return sidefiles.snapshots(db_path)


def _stamp(name: str) -> int | None:
    """The number a copy is named by; None for any other file."""
    digits = name.removesuffix(SUFFIX)
    return int(digits) if name.endswith(SUFFIX) and digits.isascii() and digits.isdigit() else None


def _published(target_dir: Path) -> list[tuple[int, Path]]:
    """The copies in the folder, oldest first; WarehouseError when it can't be listed (a file in
    its place, a folder this user may not read): the warehouse can't be used, said in one line."""
    try:
        stamps = [(_stamp(e.name), e.name) for e in os.scandir(target_dir)]
    except FileNotFoundError:
        return []
    except OSError as error:
        raise _unusable(target_dir, error) from None
    return sorted((stamp, target_dir / name) for stamp, name in stamps if stamp is not None)


def _unusable(target_dir: Path, error: OSError) -> db.WarehouseError:
    warehouse = target_dir.with_name(target_dir.name.removesuffix(".snapshots"))
    return db.WarehouseError(
        f"cannot use warehouse {warehouse}: its snapshots folder {target_dir}: {error.strerror or error} "
        "(it must be a folder this user may read, and a writer write in)"
    )


def check_folder(db_path: Path) -> None:
    """For a writer, before its first commit: the warehouse's own folder is one it may write in
    (the ``.unpublished`` marker, DuckDB's write-ahead log and a new snapshots folder are created
    there; a lock file made there before the folder became read-only tells nothing), and the
    snapshots folder, if there is one, is a folder it may list and write in (a publish after the
    commits would fail otherwise, the ingest's ``_seal`` lists it too); WarehouseError else."""
    where = db_path.parent
    if not _may_write(where, os.W_OK | os.X_OK):
        raise db.WarehouseError(
            f"cannot write to warehouse {db_path}: its folder {os.path.abspath(where)} can't be written in "
            f"({os.strerror(_refusal(where))}): a writer needs a folder it may write in"
        )
    target_dir = folder(db_path)
    _published(target_dir)
    if target_dir.exists() and not _may_write(target_dir, os.R_OK | os.W_OK | os.X_OK):
        code = _refusal(target_dir)
        raise _unusable(target_dir, OSError(code, os.strerror(code)))


def _may_write(where: Path, mode: int) -> bool:
    """Whether this process may use the folder so, as its effective user (a set-uid program's too)."""
    return os.access(where, mode, effective_ids=os.access in os.supports_effective_ids)


def _refusal(where: Path) -> int:
    """Why a folder can't be written in: the errno a write would meet (a read-only file system, else
    no permission)."""
    try:
        read_only = bool(os.statvfs(where).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    return errno.EROFS if read_only else errno.EACCES


def stamps(db_path: Path) -> list[int]:
    """The numbers the kept copies are named by, oldest first (a retired part outlives them)."""
    return [stamp for stamp, _ in _published(folder(db_path))]


def latest(db_path: Path) -> Path | None:
    """The newest published copy, or None when none was published yet."""
    copies = _published(folder(db_path))
    return copies[-1][1] if copies else None


def stamp_seconds(snapshot: Path) -> float | None:
    """The publish time a copy's name holds (Unix time), whether or not the copy still exists."""
    stamp = _stamp(snapshot.name)
    return stamp / 1e9 if stamp is not None else None


def published_at(snapshot: Path) -> float | None:
    """When a copy was published (its mtime, Unix time); None once it is gone."""
    try:
        return snapshot.stat().st_mtime
    except FileNotFoundError:
        return None


def age(db_path: Path) -> float:
    """Seconds since the newest copy was published (infinite when there is none, or when its time
    is ahead of the clock: then a fresh copy is due)."""
    newest = latest(db_path)
    published = published_at(newest) if newest else None
    if published is None or published > time.time() + SKEW_SECONDS:
        return float("inf")
    return max(0.0, time.time() - published)


def unpublished(db_path: Path) -> Path:
    """The marker of commits no copy holds yet: ``<db>.unpublished``."""
    return db_path.with_name(db_path.name + ".unpublished")


def mark_unpublished(db_path: Path) -> bool:
    """Before a run's first commit: create the marker (durably); whether it was there already,
    left by a run that committed and was killed or failed before publishing."""
    marker = unpublished(db_path)
    if marker.exists():
        return True
    os.close(os.open(marker, os.O_WRONLY | os.O_CREAT, 0o600))
    db.fsync_file(marker)
    db.fsync_dir(marker.parent)
    return False


def clear_unpublished(db_path: Path) -> None:
    """The run committed nothing a reader lacks (and found no marker of an earlier run): no copy owed."""
    unpublished(db_path).unlink(missing_ok=True)


def publish(db_path: Path) -> Path:
    """Copy the (checkpointed, closed) warehouse to a new snapshot; the caller holds the ingest lock."""
    target_dir = folder(db_path)
    target_dir.mkdir(mode=0o700, exist_ok=True)
    for leftover in target_dir.glob("*.tmp"):
        leftover.unlink(missing_ok=True)
    copies = _published(target_dir)
    stamp = max(time.time_ns(), copies[-1][0] + 1 if copies else 0)
    name = f"{stamp:020d}{SUFFIX}"
    tmp = target_dir / (name + ".tmp")
    final = target_dir / name
    try:
        # created 0600 (the umask may take more) before a byte is written; copyfile keeps the mode
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        shutil.copyfile(db_path, tmp)
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        db.fsync_dir(target_dir)  # the copy's name is on disk before the marker goes
    except BaseException:  # a full disk: no half copy stays behind
        tmp.unlink(missing_ok=True)
        raise
    # the copy holds every commit made before it (the caller holds the lock): none is owed now
    clear_unpublished(db_path)
    for _, old in _published(target_dir)[:-KEEP]:
        old.unlink(missing_ok=True)
    return final


@contextmanager
def published_write(
    db_path: Path, wait: float, check: Callable[[], None] | None = None, *, what: str | None = None
) -> Iterator[None]:
    """A writer's commits, then a snapshot of them: the body runs under the ingest lock once the
    file, the folders and ``check`` (what else would refuse the write: the warehouse's revision,
    say) are checked, in that order as ingest checks them, with the warehouse marked unpublished; a
    snapshot is published when the body ends. A refused write leaves no marker; a body that raises
    leaves it, and the next run publishes. Files created meanwhile are private, as an ingest's
    (``db.private_files``); a full disk stops ``what`` (``"upgrade of PATH"``) in one line
    (``db.refused_writes``)."""
    db.check_file(db_path)  # a file that is no warehouse: refused before its lock file is created beside it
    db.make_folder(db_path)
    with db.refused_writes(what or f"write to {db_path}"), db.private_files(), run_lock(db_path, wait=wait):
        check_folder(db_path)  # a publish that can't happen: refused before the commit
        if check is not None:
            check()
        # checked, and about to commit: a kill between the commit and the copy, the next run publishes
        mark_unpublished(db_path)
        yield
        # jobs still queued for their derived rows: an ingest run was killed after committing facts
        # and before its refresh. Publishing now would show those facts beside stale results (a
        # job's steps without its analytics): the marker stays, and the next ingest, which
        # refreshes the queue, publishes (audit 25)
        if not _refresh_pending(db_path):
            publish(db_path)


def _refresh_pending(db_path: Path) -> bool:
    """Whether the warehouse has jobs queued for a refresh of their derived rows (``refresh_queue``)."""
    import duckdb

    from .results import PENDING  # here: readers import this module, and need none of results'

    with db.connection(db_path) as con:
        try:
            row = con.execute(PENDING).fetchone()
        except duckdb.CatalogException:  # a revision before the queue (an upgrade stopped early)
            return False
    return bool(row and row[0])


def connect_latest(db_path: Path, wait: float = db.DEFAULT_WAIT_SECONDS) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the newest snapshot (or to the warehouse when none exists yet).

    With no snapshot and the ``unpublished`` marker, an ingest run has committed (it is running, or
    was killed before its first publish): opening the file would lock that writer or the next one
    out for as long as the reader reads, so the reader is refused in one line instead. A warehouse
    that no ingest run wrote yet (built by other means, never published) is still opened itself:
    a reader then holds DuckDB's file lock while it reads (docs/ingest.md)."""
    snapshot = latest(db_path)
    for tries_left in reversed(range(OPEN_TRIES)):
        if snapshot is None:
            break
        try:
            con = db.connect(snapshot, read_only=True, wait=wait)
        except db.WarehouseError:
            # replaced between listing and opening: the newer one. Any other failure (a copy this
            # user may not read) is said, naming the copy: the file itself is never opened instead,
            # which would hold DuckDB's lock against the writer while the reader reads
            newer = latest(db_path)
            if not tries_left or newer == snapshot:
                raise
            snapshot = newer
            continue
        con.execute(CACHE_FOOTERS)
        return con
    # a marker beside a file that is no warehouse (a folder, a text file) is no run's: the file's
    # own problem is said instead (a warehouse's header is read, the file never opened)
    db.check_file(db_path)
    if unpublished(db_path).exists():
        raise db.WarehouseError(
            f"no snapshot of {db_path} yet: an ingest is writing it or was stopped before publishing; "
            "wait for the running `runlytics ingest`, or run it"
        )
    con = db.connect(db_path, read_only=True, wait=wait)
    con.execute(CACHE_FOOTERS)
    return con


class Reader:
    """A long-lived reader for a server: one connection per snapshot, swapped when a newer appears.

    ``cursor()`` is cheap (no file is opened unless a new snapshot was published) and safe to
    call from several threads; each request uses its own cursor.
    """

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self._lock = threading.Lock()
        self._snapshot: Path | None = None
        self._stamp = -1
        self._con: duckdb.DuckDBPyConnection | None = None

    def cursor(self) -> duckdb.DuckDBPyConnection:
        snapshot = latest(self.db_path)
        stamp = _stamp(snapshot.name) if snapshot is not None else None
        with self._lock:
            # only ever move forward: a thread that listed the folder a moment earlier must not
            # swap an older snapshot back in
            if self._con is None or (stamp is not None and stamp > self._stamp):
                if snapshot is None:
                    raise db.WarehouseError(
                        f"no snapshot of {self.db_path} yet: run `runlytics ingest` or `runlytics db upgrade`"
                    )
                # the old connection closes when its last cursor is gone
                snapshot, stamp, con = self._open(snapshot, stamp)
                self._con = con
                self._snapshot = snapshot
                self._stamp = stamp if stamp is not None else -1
            cursor = self._con.cursor()
        cursor.execute("SET TimeZone = 'UTC'")
        # a session setting: a cursor is a new connection, which would parse every part's footer again
        cursor.execute(CACHE_FOOTERS)
        return cursor

    def _open(self, snapshot: Path, stamp: int | None) -> tuple[Path, int | None, duckdb.DuckDBPyConnection]:
        """A connection to this copy, or to the newer one that replaced it meanwhile."""
        for _ in range(OPEN_TRIES - 1):
            try:
                con = db.connect(snapshot, read_only=True, wait=5)
                break
            except db.WarehouseError:
                newer = latest(self.db_path)
                if newer is None or newer == snapshot:
                    raise
                snapshot, stamp = newer, _stamp(newer.name)
        else:
            con = db.connect(snapshot, read_only=True, wait=5)
        con.execute(CACHE_FOOTERS)
        return snapshot, stamp, con

    @property
    def snapshot(self) -> Path | None:
        return self._snapshot
