"""progress.json files (inputs.md section 1): read in batches, each merged in one transaction.

A batch's files are read by the fast road (the C reader of ``history`` lists, ``fast.py``) where
it can prove there is nothing to warn about, and by DuckDB's JSON reader (``progress.py``, the
careful road) otherwise; a file DuckDB refuses is repaired or diagnosed, and fails alone.
Each batch's facts and its ledger rows commit together or not at all, so a run killed at any
moment leaves the warehouse as the last committed batch left it, and the next run reads the rest.
"""

from __future__ import annotations

import re
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np

from runlytics.ingest import fast, json_text, ledger, merge, progress, sql
from runlytics.ingest.discover import JobFolder
from runlytics.warehouse import db, results

from .base import Candidate, Context, Rejection, changed_files, not_ingested, openable, stored_owner

KIND = "progress"

# A batch holds at most BATCH_BYTES of files for DuckDB's careful read (its memory is several
# times the JSON's size), at most FAST_BATCH_BYTES in all (the fast road's typed rows take about
# half the JSON's size) and at most BATCH_FILES files. Files are read CHUNK_BYTES at a time.
# A batch's statements cost about the same for 2,000 small files as for 10,000: many small jobs
# take few batches (docs/benchmark.md, "Many small jobs").
BATCH_BYTES = 128 << 20
FAST_BATCH_BYTES = 512 << 20
BATCH_FILES = 10_000
CHUNK_BYTES = 32 << 20

FILES_TABLE = """
CREATE OR REPLACE TEMP TABLE batch_files (
    file_id INTEGER, seq INTEGER, path VARCHAR, read_path VARCHAR, folder VARCHAR, source_dir VARCHAR,
    size BIGINT, mtime_ns BIGINT, fingerprint VARCHAR, history_entries INTEGER
)
"""
INSERT_FILES = """
INSERT INTO batch_files
SELECT file_id, file_id, path, read_path, folder, source_dir, size, mtime_ns, fingerprint,
       CASE WHEN counted THEN history_entries END
FROM batch_file_rows
"""
DROP_DOC = "DELETE FROM raw_docs WHERE filename = ?"
DROP_FILE = "DELETE FROM batch_files WHERE read_path = ?"
REREAD_FROM = "UPDATE batch_files SET read_path = $read_path, history_entries = NULL WHERE path = $path"
# a large file read in pieces: its rest repaired, its history still in the pieces
REREAD_REST_FROM = "UPDATE batch_files SET read_path = $read_path WHERE path = $path"
ADD_WARNINGS = """
INSERT INTO batch_warnings
SELECT f.file_id, -1, unnest(range(len($messages))), unnest($messages) FROM batch_files f WHERE f.path = $path
"""
MULTI_DOC_FILES = "SELECT filename FROM raw_docs GROUP BY filename HAVING count(*) > 1"
# A file that names another job than it did when last read: the job it named stays the folder's
# as stored (docs/ingest.md, "A folder keeps the ids it once held"), said once, in this read.
JOB_ROW_KEPT = """
INSERT INTO batch_warnings
SELECT b.file_id, 0, 1,
       'job_id ''' || left(b.job_id, 80) || ''' is not the ''' || left(f.job_id, 80)
       || ''' this file named when last read: job ''' || left(f.job_id, 80)
       || ''' stays as stored, a job of its own (a folder keeps the ids it held)'
FROM batch_jobs b
JOIN ingest_files f ON f.path = b.path AND f.kind = 'progress'
WHERE f.job_id IS NOT NULL AND f.job_id <> b.job_id
  -- still this folder's (a folder moved away took its job along: a new file here holds nothing of it)
  AND EXISTS (SELECT 1 FROM jobs j WHERE j.job_id = f.job_id AND j.source_dir = b.source_dir);
-- a snapshot older than the stored job's: the job row stays (merge.DELETE_REPLACED_JOBS), said
INSERT INTO batch_warnings
SELECT b.file_id, 0, 2,
       'updated_at ' || CAST(b.updated_at AS VARCHAR) || ' UTC is before the stored job''s '
       || CAST(j.updated_at AS VARCHAR) || ' UTC: its status, times and settings stay as stored '
       || '(the later updated_at wins); its step entries are read'
FROM batch_jobs b
JOIN jobs j ON j.job_id = b.job_id
WHERE b.updated_at < j.updated_at;
"""

_FILE_IN_ERROR = re.compile(r'file "([^"]+)"')

# The staged files whose job id another folder may hold: the warehouse has the job from another
# folder, or an earlier folder of the batch (in path order) claims it too (see _drop_conflicts).
CLAIMS = """
WITH claims AS (
    SELECT b.file_id, b.job_id, b.source_dir, j.source_dir AS stored_dir,
           first_value(b.source_dir) OVER (PARTITION BY b.job_id ORDER BY b.source_dir) AS first_dir
    FROM batch_jobs b
    LEFT JOIN jobs j ON j.job_id = b.job_id
)
SELECT file_id, job_id, source_dir, stored_dir, first_dir
FROM claims
-- (a job the warehouse doesn't have yet belongs to the batch's first folder claiming it)
WHERE (stored_dir IS NOT NULL AND stored_dir <> source_dir) OR first_dir <> source_dir
ORDER BY file_id
"""
# A file taken out of a staged batch leaves every batch table (the fast road's rows follow batch_jobs).
DROP_STAGED = [
    f"DELETE FROM {db.quote_identifier(table)} WHERE file_id IN (SELECT unnest($file_ids))"
    for table in ("batch_jobs", "batch_steps", "batch_gpus", "batch_checkpoints", "batch_warnings", "batch_files")
]


class ProgressFormat:
    """Every job folder's progress.json."""

    kind = KIND

    def __init__(self) -> None:
        self._first: FirstBatch | None = None

    def files(self, job: JobFolder) -> list[Path]:
        return [job.progress] if job.progress is not None else []

    def ingest(self, ctx: Context, jobs: list[JobFolder]) -> None:
        candidates = self.candidates(ctx, jobs)
        first, self._first = self._first, None
        batches = first.batches() if first and first.candidates == candidates else _read_batches(candidates)
        done = 0
        for batch, parsed in batches:
            ctx.progress("read", done + len(batch), len(candidates))
            _ingest_batch(ctx, batch, parsed)
            done += len(batch)
            ctx.progress("merge", done, len(candidates))

    def candidates(self, ctx: Context, jobs: list[JobFolder]) -> list[Candidate]:
        """The progress files to read (changed since the ledger's record of them)."""
        return changed_files(ctx, KIND, [(job, path) for job in jobs for path in self.files(job)])

    def prefetch(self, jobs: list[JobFolder], max_file_bytes: int) -> None:
        """Start reading the first batch, in a thread, while the migrations build a new warehouse."""
        self._first = FirstBatch(openable([(job, path) for job in jobs for path in self.files(job)], max_file_bytes))


class FirstBatch:
    """The batches of these candidates, the first read in a thread from the start."""

    def __init__(self, candidates: list[Candidate]) -> None:
        self.candidates = candidates
        self._batches = _read_batches(candidates)
        self._first: tuple[list[Candidate], dict[int, fast.Parsed]] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._read_first, name="runlytics-first-batch", daemon=True)
        self._thread.start()

    def _read_first(self) -> None:
        try:
            self._first = next(self._batches, None)
        except BaseException as error:  # raised again where the batches are used
            self._error = error

    def batches(self) -> Iterator[tuple[list[Candidate], dict[int, fast.Parsed]]]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self._first is not None:
            yield self._first
            yield from self._batches


def _read_batches(candidates: list[Candidate]) -> Iterator[tuple[list[Candidate], dict[int, fast.Parsed]]]:
    """The candidates in batches, each with the files whose history the fast road read."""
    batch: list[Candidate] = []
    parsed: dict[int, fast.Parsed] = {}
    careful = total = 0
    rest = iter(candidates)
    while chunk := _chunk(rest, BATCH_FILES - len(batch)):
        read = fast.read([(len(batch) + i, c.path) for i, c in enumerate(chunk)])
        for i, c in enumerate(chunk):
            total += c.stat.size
            careful += 0 if len(batch) + i in read else c.stat.size
        parsed.update(read)
        batch.extend(chunk)
        if careful >= BATCH_BYTES or total >= FAST_BATCH_BYTES or len(batch) >= BATCH_FILES:
            yield batch, parsed
            batch, parsed, careful, total = [], {}, 0, 0
    if batch:
        yield batch, parsed


def _chunk(candidates: Iterator[Candidate], most: int) -> list[Candidate]:
    """The next candidates, up to CHUNK_BYTES (at least one) and ``most`` files."""
    chunk: list[Candidate] = []
    size = 0
    while size < CHUNK_BYTES and len(chunk) < most and (c := next(candidates, None)) is not None:
        chunk.append(c)
        size += c.stat.size
    return chunk


def _ingest_batch(ctx: Context, batch: list[Candidate], parsed: dict[int, fast.Parsed] | None = None) -> None:
    """Read, check and merge one batch in one transaction; isolate files that break it."""
    con = ctx.con
    rejected: list[Rejection] = []
    readable: list[tuple[int, Candidate]] = []  # with its file_id, its place in the batch
    for file_id, c in enumerate(batch):
        try:
            complete = progress.looks_complete(c.path, c.stat.size)
        except OSError as error:  # permission denied, vanished since: this file alone, again next run
            rejected.append(Rejection(c, "failed", f"cannot read: {error}", retry=True))
            continue
        if complete:
            readable.append((file_id, c))
        else:
            rejected.append(_explain(c))
    if readable:
        if parsed is None:
            parsed = fast.read([(file_id, c.path) for file_id, c in readable])
        try:
            with tempfile.TemporaryDirectory(prefix="runlytics-") as scratch:
                staged = _stage(con, readable, rejected, Path(scratch), parsed)
            if staged:
                with fast.staged(con, parsed):
                    _merge(con)
                    _count_batch(ctx)
                progress.start_pieces(con)  # the pieces' rows are merged: their memory back
        except sql.READ_ERRORS as error:
            if db.is_write_failure(error) or isinstance(error, duckdb.FatalException):
                raise  # the disk, not a file: the run stops, and the batch is read again next run
            rejected_paths = {r.candidate.path for r in rejected}
            retry = [c for _, c in readable if c.path not in rejected_paths]
            if len(readable) == 1:
                of_the_moment = isinstance(error, duckdb.OutOfMemoryException)  # not the file's fault
                rejected = [Rejection(readable[0][1], "failed", f"could not be ingested: {error}", of_the_moment)]
            else:
                # Something in the batch broke a statement: retry it in halves, down to the file that
                # did (file by file, a batch of thousands of small files took a transaction each).
                half = len(retry) // 2
                for part in (retry[:half], retry[half:]):
                    if part:
                        _ingest_batch(ctx, part)
    for r in rejected:
        if r.conflict:
            ctx.conflicts[r.candidate.job.path] = r.reason
        not_ingested(ctx, r, KIND)


def _merge(con: duckdb.DuckDBPyConnection) -> None:
    """Apply the staged batch and record its files in one transaction."""
    with db.atomic(con):
        merge.apply(con)
        ledger.record_batch(con, KIND)
        con.execute(results.ENQUEUE_BATCH)


def _stage(
    con: duckdb.DuckDBPyConnection,
    files: list[tuple[int, Candidate]],
    rejected: list[Rejection],
    scratch: Path,
    parsed: dict[int, fast.Parsed],
) -> int:
    """Fill the batch tables; returns how many files are staged. Drops files that can't be.

    Reading and staging touch only temporary tables, outside any transaction: a file DuckDB
    can't parse aborts its statement, and must not abort the batch's transaction. ``parsed``
    holds the files whose history the fast road read; those sent back to the careful read
    are removed from it.
    """
    rests = str(scratch / "rests.json")  # the fast road took their history: DuckDB reads the rest
    read_paths = {file_id: str(c.path) for file_id, c in files}
    read_paths.update(fast.write_rests(parsed, Path(rests)))
    split = _split(files, parsed, scratch)  # large files for the careful read: their history in pieces
    read_paths.update({file_id: str(pieces.rest) for file_id, pieces in split.items()})
    fast_ids = {read_paths[file_id]: file_id for file_id in parsed}
    con.execute(FILES_TABLE)
    by_path = {read_paths[file_id]: c for file_id, c in files}
    entries = {i: parsed[i].history_entries if i in parsed else split[i].history_entries for i in (*parsed, *split)}
    batch_file_rows = {  # numpy arrays: a list parameter per column cost more
        "file_id": np.array([file_id for file_id, _ in files], dtype=np.int32),
        "path": np.array([str(c.path) for _, c in files], dtype=object),
        "read_path": np.array([read_paths[file_id] for file_id, _ in files], dtype=object),
        "folder": np.array([c.job.path.name for _, c in files], dtype=object),
        "source_dir": np.array([str(c.job.path) for _, c in files], dtype=object),
        "size": np.array([c.stat.size for _, c in files], dtype=np.int64),
        "mtime_ns": np.array([c.stat.mtime_ns for _, c in files], dtype=np.int64),
        "fingerprint": np.array([c.stat.fingerprint for _, c in files], dtype=object),
        "counted": np.array([file_id in entries for file_id, _ in files], dtype=bool),
        "history_entries": np.array([entries.get(file_id, 0) for file_id, _ in files], dtype=np.int64),
    }
    with db.registered(con, {"batch_file_rows": batch_file_rows}):
        con.execute(INSERT_FILES)
    repaired: dict[str, list[str]] = {}  # original path -> the warnings of its repair
    by_id = dict(files)
    progress.start_pieces(con)
    for file_id, pieces in split.items():
        if _read_pieces(con, file_id, pieces, scratch, repair=False) is not None:
            continue
        c = by_id[file_id]
        fixed = _repair_split(con, c, file_id, pieces, repaired, scratch)  # a piece DuckDB refused
        del by_path[read_paths[file_id]]
        if fixed is None:
            rejected.append(_explain(c))
            con.execute(DROP_FILE, [read_paths[file_id]])
        else:
            by_path[fixed] = c
    while by_path:
        try:
            progress.read_docs(con, _files(by_path, fast_ids, rests), rests)
            break
        except duckdb.InvalidInputException as error:
            match = _FILE_IN_ERROR.search(str(error))
            bad = match.group(1) if match else None
            if bad == rests:  # DuckDB refused a rest: every file of the fast road is read whole
                for name, file_id in fast_ids.items():
                    del parsed[file_id]
                    c = by_path.pop(name)
                    by_path[str(c.path)] = c
                    con.execute(REREAD_FROM, {"read_path": str(c.path), "path": str(c.path)})
                fast_ids.clear()
                continue
            if bad not in by_path:
                raise
            c = by_path.pop(bad)
            large = next((i for i in split if read_paths[i] == bad), None)
            if str(c.path) in repaired:
                fixed = None
            elif large is not None:  # the rest of a large file refused
                fixed = _repair_split(con, c, large, split[large], repaired, scratch)
            else:
                fixed = _repair(con, c, repaired, scratch)
            if fixed is None:
                rejected.append(_explain(c))
                con.execute(DROP_FILE, [bad])
            else:
                by_path[fixed] = c
    if not by_path:
        return 0
    for (path,) in con.execute(MULTI_DOC_FILES).fetchall():
        _drop(con, path)
        rejected.append(Rejection(by_path.pop(path), "failed", "holds more than one JSON value"))
    for path, c in list(by_path.items()):  # (checked again after the last read: _drop_changed)
        if not ledger.unchanged_since(c.path, c.stat):
            _drop(con, path)
            rejected.append(Rejection(by_path.pop(path), "pending", "changed while being read"))
    if by_path:
        progress.stage(con, pieces=bool(split))
        for path, messages in repaired.items():
            if messages:
                con.execute(ADD_WARNINGS, {"path": path, "messages": messages})
        progress.add_null_warnings(con, _files(by_path, fast_ids, rests), rests)
        con.execute(JOB_ROW_KEPT)
        rejected.extend(_drop_conflicts(con, by_id))
        rejected.extend(_drop_changed(con, by_id, by_path))
    if not by_path:  # every file of the batch was dropped above: nothing was staged
        return 0
    return db.one(con, "SELECT count(*) FROM batch_jobs")[0]


def _drop_changed(
    con: duckdb.DuckDBPyConnection, by_id: dict[int, Candidate], by_path: dict[str, Candidate]
) -> list[Rejection]:
    """Take out of the staged batch every file that changed since the stat taken before any read
    of it (size, mtime or inode): each of its reads (the fast road's, DuckDB's, a repair's, the
    null warnings') may have seen another version. Pending: read again, whole, next run."""
    staged = [file_id for (file_id,) in con.execute("SELECT file_id FROM batch_jobs ORDER BY file_id").fetchall()]
    changed = [file_id for file_id in staged if not ledger.unchanged_since(by_id[file_id].path, by_id[file_id].stat)]
    if not changed:
        return []
    for statement in DROP_STAGED:
        con.execute(statement, {"file_ids": changed})
    gone = {id(by_id[file_id]) for file_id in changed}
    for path in [path for path, c in by_path.items() if id(c) in gone]:
        del by_path[path]
    return [Rejection(by_id[file_id], "pending", "changed while being read") for file_id in changed]


def _drop_conflicts(con: duckdb.DuckDBPyConnection, by_id: dict[int, Candidate]) -> list[Rejection]:
    """Take out of the batch every file whose job id belongs to another folder.

    A job id belongs to the folder the warehouse has for it while that folder exists (a folder
    moved elsewhere takes its job along), else to the first folder of the batch, in path order,
    that claims it. A second folder claiming it would replace the first one's steps.
    """
    conflicts: dict[int, Rejection] = {}
    for file_id, job_id, source_dir, stored_dir, first_dir in con.execute(CLAIMS).fetchall():
        owner = stored_owner(stored_dir) or first_dir
        if owner != source_dir:
            reason = (f"job id {job_id!r} belongs to the folder {owner}: a second folder can't claim it "
                      "(give one of them another job_id)")  # fmt: skip
            conflicts[file_id] = Rejection(by_id[file_id], "failed", reason, retry=True, conflict=True)
    if conflicts:
        for statement in DROP_STAGED:
            con.execute(statement, {"file_ids": list(conflicts)})
    return list(conflicts.values())


def _files(by_path: dict[str, Candidate], fast_ids: dict[str, int], rests: str) -> list[str]:
    """The files to read for the documents still in the batch (the rests are in one file)."""
    files = [path for path in by_path if path not in fast_ids]
    if any(name in by_path for name in fast_ids):
        files.append(rests)
    return files


def _repair(
    con: duckdb.DuckDBPyConnection,
    c: Candidate,
    repaired: dict[str, list[str]],
    scratch: Path,
    rest: Path | None = None,
) -> str | None:
    """Have DuckDB read a reshaped copy of a file it refused (see progress.repair); its path.

    ``rest``: the file is read in pieces, and this is its document without the history.
    """
    try:
        data = (rest or c.path).read_bytes()
    except OSError:
        return None
    result = progress.repair(data)
    if result is None:
        return None
    text, warnings = result
    if rest is None and (not_utf8 := json_text.not_utf8(data)) is not None:  # a rest's: see _repair_split
        warnings.insert(0, not_utf8)
    copy = str(scratch / f"repaired-{len(repaired)}.json")
    Path(copy).write_text(text)
    repaired[str(c.path)] = warnings
    con.execute(REREAD_FROM if rest is None else REREAD_REST_FROM, {"read_path": copy, "path": str(c.path)})
    return copy


def _repair_split(
    con: duckdb.DuckDBPyConnection,
    c: Candidate,
    file_id: int,
    pieces: fast.Pieces,
    repaired: dict[str, list[str]],
    scratch: Path,
) -> str | None:
    """Read every part of a large file repaired, as the whole would be: its pieces, then its rest
    (see _repair); the path of the rest's copy, or None with none of its pieces' rows kept."""
    found = _read_pieces(con, file_id, pieces, scratch, repair=True)
    fixed = None if found is None else _repair(con, c, repaired, scratch, pieces.rest)
    if found is None or fixed is None:
        progress.drop_pieces(con, file_id)
        return None
    # the file's bytes that are not UTF-8 (its pieces and rest were read with U+FFFD in their place),
    # then the history's warnings, as in the whole file
    first = [pieces.not_utf8] if pieces.not_utf8 is not None else []
    repaired[str(c.path)] = first + found + repaired[str(c.path)]
    return fixed


def _split(files: list[tuple[int, Candidate]], parsed: dict[int, fast.Parsed], scratch: Path) -> dict[int, fast.Pieces]:
    """The large files the fast road refused, each as its rest and pieces of its history."""
    split = {}
    for file_id, c in files:
        if file_id not in parsed and c.stat.size >= fast.SPLIT_BYTES:
            try:
                pieces = fast.split(c.path, scratch, f"split-{file_id}")
            except OSError:  # the read of the whole meets the same error and says so
                pieces = None
            if pieces is not None:
                split[file_id] = pieces
    return split


def _read_pieces(
    con: duckdb.DuckDBPyConnection, file_id: int, pieces: fast.Pieces, scratch: Path, *, repair: bool
) -> list[str] | None:
    """Read a large file's history pieces into the split tables; the warnings of their repair,
    or None when DuckDB refuses one (then none of its rows are kept)."""
    progress.drop_pieces(con, file_id)
    warnings: list[str] = []
    for path, offset in pieces.pieces:
        data = path.read_bytes()
        if repair:
            result = progress.repair(data, offset)
            if result is None:
                return None
            text, found = result
            data = text.encode()
            path = scratch / f"{path.stem}-repaired.json"
            path.write_bytes(data)
            warnings += found
        try:
            progress.read_piece(con, file_id, offset, str(path), data)
        except duckdb.InvalidInputException:
            progress.drop_pieces(con, file_id)
            return None
    return warnings


def _drop(con: duckdb.DuckDBPyConnection, path: str) -> None:
    con.execute(DROP_DOC, [path])
    con.execute(DROP_FILE, [path])


BATCH_JOB_IDS = "SELECT DISTINCT job_id FROM batch_jobs"
BATCH_COUNTS = (
    "SELECT count(*), sum(rows), sum(warning_count) FROM ingest_files WHERE path IN (SELECT path FROM batch_files)"
)


def _count_batch(ctx: Context) -> None:
    ctx.summary.job_ids.update(job_id for (job_id,) in ctx.con.execute(BATCH_JOB_IDS).fetchall())
    files, rows, warnings = db.one(ctx.con, BATCH_COUNTS)
    ctx.summary.ingested += files
    ctx.summary.rows += rows or 0
    ctx.summary.warnings += warnings or 0


def _explain(c: Candidate) -> Rejection:
    """Why a file that is not one JSON object can't be ingested (yet)."""
    try:
        data = c.path.read_bytes()
    except OSError as error:
        return Rejection(c, "pending", f"cannot read: {error}")
    if not ledger.unchanged_since(c.path, c.stat):  # the writer finished (or went on) since the batch read it
        return Rejection(c, "pending", "changed while being read")
    age = time.time() - c.stat.mtime_ns / 1e9
    outcome, reason = progress.diagnose(data, age_seconds=age)
    return Rejection(c, outcome, reason)
