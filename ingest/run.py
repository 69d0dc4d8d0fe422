"""One ingest run: find the files, read what changed in batches, merge, record the outcome.

Each batch is one transaction: its facts and its ledger rows commit together or not at all,
so a run killed at any moment leaves the warehouse as the last committed batch left it, and
the next run reads the rest. Runs are serialised by a lock file beside the warehouse.
"""

from __future__ import annotations

import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb

from runlytics.warehouse import db, migrate, results, snapshots
from runlytics.warehouse.lock import run_lock

from . import fast, gpu_samples, ledger, merge, progress, quick, runs, trainer_state
from .discover import JobFolder, discover
from .sql import install_macros
from .summary import Summary

# A batch holds at most BATCH_BYTES of files for DuckDB's careful read (its memory is several
# times the JSON's size), at most FAST_BATCH_BYTES in all (the fast road's typed rows take about
# half the JSON's size) and at most BATCH_FILES files. Files are read CHUNK_BYTES at a time.
BATCH_BYTES = 128 << 20
FAST_BATCH_BYTES = 512 << 20
BATCH_FILES = 2000
CHUNK_BYTES = 32 << 20
KIND_PROGRESS = "progress"
KIND_TRAINER = "trainer_state"
KIND_SPOOL = "spool"
KIND_NVIDIA_SMI = "nvidia_smi"

ProgressCallback = Callable[[int, int], None]

FILES_TABLE = """
CREATE OR REPLACE TEMP TABLE batch_files (
    file_id INTEGER, seq INTEGER, path VARCHAR, read_path VARCHAR, folder VARCHAR, source_dir VARCHAR,
    size BIGINT, mtime_ns BIGINT, fingerprint VARCHAR, history_entries INTEGER
)
"""
INSERT_FILES = """
INSERT INTO batch_files
SELECT unnest($file_id), unnest($seq), unnest($path), unnest($read_path), unnest($folder), unnest($source_dir),
       unnest($size), unnest($mtime_ns), unnest($fingerprint), unnest($history_entries)
"""
DROP_DOC = "DELETE FROM raw_docs WHERE filename = ?"
DROP_FILE = "DELETE FROM batch_files WHERE read_path = ?"
REREAD_FROM = "UPDATE batch_files SET read_path = $read_path, history_entries = NULL WHERE path = $path"
ADD_WARNINGS = """
INSERT INTO batch_warnings
SELECT f.file_id, -1, unnest(range(len($messages))), unnest($messages) FROM batch_files f WHERE f.path = $path
"""
MULTI_DOC_FILES = "SELECT filename FROM raw_docs GROUP BY filename HAVING count(*) > 1"

# Checkpoint folders of every job folder seen, for jobs the warehouse knows.
FOLDERS_TABLE = "CREATE OR REPLACE TEMP TABLE seen_folders (source_dir VARCHAR, step BIGINT, path VARCHAR)"
INSERT_FOLDERS = "INSERT INTO seen_folders SELECT unnest($source_dir), unnest($step), unnest($path)"
ADD_FOLDER_CHECKPOINTS = """
INSERT INTO checkpoints (job_id, step, path, saved_at, eval_loss, source)
SELECT DISTINCT j.job_id, f.step, f.path, NULL, NULL, 'folder'
FROM seen_folders f
JOIN jobs j ON j.source_dir = f.source_dir
ON CONFLICT (job_id, step) DO NOTHING
RETURNING job_id
"""

_FILE_IN_ERROR = re.compile(r'file "([^"]+)"')


@dataclass(frozen=True)
class CsvImport:
    """An nvidia-smi CSV log to import for a job (its timestamps are local time in ``timezone``)."""

    path: Path
    job_id: str
    timezone: str = "UTC"
    host: str = ""
    columns: tuple[str, ...] | None = None


@dataclass
class Candidate:
    path: Path
    job: JobFolder
    stat: ledger.Stat


def ingest(
    db_path: Path,
    roots: list[Path],
    *,
    spools: list[Path] | None = None,
    csv_imports: list[CsvImport] | None = None,
    wait: float = db.DEFAULT_WAIT_SECONDS,
    on_progress: ProgressCallback | None = None,
) -> Summary:
    """Ingest every job folder under ``roots``, GPU sample spools and nvidia-smi logs."""
    started = time.monotonic()
    summary = Summary()
    jobs = discover(roots)
    spool_files = _spool_files(spools or [])
    state = None if spool_files or csv_imports else quick.state(jobs)
    for item in csv_imports or []:
        if not item.path.is_file():
            raise FileNotFoundError(f"nvidia-smi CSV {item.path} is not a file")
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with run_lock(db_path, wait=wait):
        # a new warehouse has read nothing yet: its first batch is read while migrations build it
        first = _FirstBatch(_candidates({}, jobs, Summary())) if not db_path.exists() else None
        migrate.ensure_current(db_path, wait=wait, locked=True)
        with db.connection(db_path, wait=wait) as con:
            run_id = runs.start(con)
            try:
                install_macros(con)
                _ingest_progress_files(con, jobs, summary, on_progress, first)
                _ingest_trainer_states(con, jobs, summary)
                _add_folder_checkpoints(con, jobs, summary)
                offsets = ledger.load_offsets(con, KIND_SPOOL)
                for path in spool_files:
                    _ingest_spool_file(con, path, offsets.get(str(path), (0, 0)), summary)
                for item in csv_imports or []:
                    _import_nvidia_smi(con, item, summary)
                results.refresh(con, summary.job_ids)
            except Exception as error:
                summary.seconds = time.monotonic() - started
                message = f"{type(error).__name__}: {error}"
                runs.finish(con, run_id, summary.as_dict(), error=message)
                runs.write_heartbeat(db_path, run_id, summary.as_dict(), error=message)
                raise
            summary.seconds = time.monotonic() - started
            runs.finish(con, run_id, summary.as_dict())
            con.execute("CHECKPOINT")
        changed = summary.ingested or summary.pending or summary.failed or summary.job_ids
        if changed or snapshots.age(db_path) > snapshots.REFRESH_SECONDS:
            snapshots.publish(db_path)
        runs.write_heartbeat(db_path, run_id, summary.as_dict(), state=state, warehouse=quick.warehouse_stat(db_path))
    summary.seconds = time.monotonic() - started
    return summary


def _ingest_progress_files(
    con: duckdb.DuckDBPyConnection,
    jobs: list[JobFolder],
    summary: Summary,
    on_progress: ProgressCallback | None,
    first: _FirstBatch | None = None,
) -> None:
    candidates = _candidates(ledger.load(con, KIND_PROGRESS), jobs, summary)
    batches = first.batches() if first and first.candidates == candidates else _read_batches(candidates)
    done = 0
    for batch, parsed in batches:
        _ingest_batch(con, batch, summary, parsed)
        done += len(batch)
        if on_progress:
            on_progress(done, len(candidates))


def _candidates(known: dict[str, tuple[str | None, str]], jobs: list[JobFolder], summary: Summary) -> list[Candidate]:
    """The progress files to read (changed since the ledger's record of them), counted in ``summary``."""
    candidates: list[Candidate] = []
    for job in jobs:
        if job.progress is None:
            continue
        summary.files_seen += 1
        try:
            st = ledger.stat(job.progress)
        except OSError:  # vanished between discovery and now: nothing to read
            summary.files_seen -= 1
            continue
        if ledger.is_unchanged(known.get(str(job.progress)), st):
            summary.unchanged += 1
        else:
            candidates.append(Candidate(job.progress, job, st))
    return candidates


class _FirstBatch:
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


def _ingest_batch(
    con: duckdb.DuckDBPyConnection,
    batch: list[Candidate],
    summary: Summary,
    parsed: dict[int, fast.Parsed] | None = None,
) -> None:
    """Read, check and merge one batch in one transaction; isolate files that break it."""
    rejected: list[Rejection] = []
    readable: list[tuple[int, Candidate]] = []  # with its file_id, its place in the batch
    for file_id, c in enumerate(batch):
        if progress.looks_complete(c.path, c.stat.size):
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
                    _count_batch(con, summary)
        except duckdb.Error as error:
            rejected_paths = {r.candidate.path for r in rejected}
            retry = [c for _, c in readable if c.path not in rejected_paths]
            if len(readable) == 1:
                rejected = [Rejection(readable[0][1], "failed", f"could not be ingested: {error}")]
            else:
                # Something in the batch broke a statement: retry file by file to find it.
                for c in retry:
                    _ingest_batch(con, [c], summary)
    for r in rejected:
        _not_ingested(con, summary, r)


def _merge(con: duckdb.DuckDBPyConnection) -> None:
    """Apply the staged batch and record its files in one transaction."""
    con.execute("BEGIN")
    try:
        merge.apply(con)
        ledger.record_batch(con, KIND_PROGRESS)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


@dataclass
class Rejection:
    candidate: Candidate
    outcome: str  # 'pending' or 'failed'
    reason: str


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
    fast_ids = {read_paths[file_id]: file_id for file_id in parsed}
    con.execute(FILES_TABLE)
    by_path = {read_paths[file_id]: c for file_id, c in files}
    con.execute(
        INSERT_FILES,
        {
            "file_id": [file_id for file_id, _ in files],
            "seq": [file_id for file_id, _ in files],
            "path": [str(c.path) for _, c in files],
            "read_path": [read_paths[file_id] for file_id, _ in files],
            "folder": [c.job.path.name for _, c in files],
            "source_dir": [str(c.job.path) for _, c in files],
            "size": [c.stat.size for _, c in files],
            "mtime_ns": [c.stat.mtime_ns for _, c in files],
            "fingerprint": [c.stat.fingerprint for _, c in files],
            "history_entries": [parsed[i].history_entries if i in parsed else None for i, _ in files],
        },
    )
    repaired: dict[str, list[str]] = {}  # original path -> the warnings of its repair
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
            fixed = None if str(c.path) in repaired else _repair(con, c, repaired, scratch)
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
    for path, c in list(by_path.items()):
        if not _same_file(c):
            _drop(con, path)
            rejected.append(Rejection(by_path.pop(path), "pending", "changed while being read"))
    if by_path:
        progress.stage(con)
        for path, messages in repaired.items():
            if messages:
                con.execute(ADD_WARNINGS, {"path": path, "messages": messages})
        progress.add_null_warnings(con, _files(by_path, fast_ids, rests), rests)
    return len(by_path)


def _files(by_path: dict[str, Candidate], fast_ids: dict[str, int], rests: str) -> list[str]:
    """The files to read for the documents still in the batch (the rests are in one file)."""
    files = [path for path in by_path if path not in fast_ids]
    if any(name in by_path for name in fast_ids):
        files.append(rests)
    return files


def _repair(con: duckdb.DuckDBPyConnection, c: Candidate, repaired: dict[str, list[str]], scratch: Path) -> str | None:
    """Have DuckDB read a reshaped copy of a file it refused (see progress.repair); its path."""
    try:
        result = progress.repair(c.path.read_bytes())
    except OSError:
        return None
    if result is None:
        return None
    text, warnings = result
    copy = str(scratch / f"repaired-{len(repaired)}.json")
    Path(copy).write_text(text)
    repaired[str(c.path)] = warnings
    con.execute(REREAD_FROM, {"read_path": copy, "path": str(c.path)})
    return copy


def _drop(con: duckdb.DuckDBPyConnection, path: str) -> None:
    con.execute(DROP_DOC, [path])
    con.execute(DROP_FILE, [path])


def _same_file(c: Candidate) -> bool:
    """True when the file still has the size and mtime it had before it was read."""
    try:
        now = ledger.stat(c.path)
    except OSError:
        return False
    return (now.size, now.mtime_ns) == (c.stat.size, c.stat.mtime_ns)


BATCH_JOB_IDS = "SELECT DISTINCT job_id FROM batch_jobs"
BATCH_COUNTS = (
    "SELECT count(*), sum(rows), sum(warning_count) FROM ingest_files WHERE path IN (SELECT path FROM batch_files)"
)


def _count_batch(con: duckdb.DuckDBPyConnection, summary: Summary) -> None:
    summary.job_ids.update(job_id for (job_id,) in con.execute(BATCH_JOB_IDS).fetchall())
    files, rows, warnings = db.one(con, BATCH_COUNTS)
    summary.ingested += files
    summary.rows += rows or 0
    summary.warnings += warnings or 0


def _explain(c: Candidate) -> Rejection:
    """Why a file that is not one JSON object can't be ingested (yet)."""
    try:
        data = c.path.read_bytes()
    except OSError as error:
        return Rejection(c, "pending", f"cannot read: {error}")
    outcome, reason = progress.diagnose(data)
    return Rejection(c, outcome, reason)


def _not_ingested(con: duckdb.DuckDBPyConnection, summary: Summary, r: Rejection, kind: str = KIND_PROGRESS) -> None:
    stat = r.candidate.stat if r.outcome == "failed" else None
    ledger.record(con, str(r.candidate.path), kind, stat, r.outcome, r.reason)
    if r.outcome == "failed":
        summary.failed += 1
    else:
        summary.pending += 1
    summary.problems.append({"path": str(r.candidate.path), "outcome": r.outcome, "reason": r.reason})


PROGRESS_JOB_IDS = "SELECT path, job_id FROM ingest_files WHERE kind = 'progress' AND job_id IS NOT NULL"


def _ingest_trainer_states(con: duckdb.DuckDBPyConnection, jobs: list[JobFolder], summary: Summary) -> None:
    """Read changed trainer_state.json files and merge them in one transaction."""
    known = ledger.load(con, KIND_TRAINER)
    progress_job_ids = dict(con.execute(PROGRESS_JOB_IDS).fetchall())
    states: list[trainer_state.TrainerState] = []
    folders: list[JobFolder] = []
    stats: list[ledger.Stat] = []
    rejected: list[Rejection] = []
    for job in jobs:
        # the job a folder's trainer states belong to: its progress.json's job_id, else the folder name
        job_id = progress_job_ids.get(str(job.progress), job.path.name)
        for path in job.trainer_states:
            summary.files_seen += 1
            try:
                st = ledger.stat(path)
            except OSError:
                summary.files_seen -= 1
                continue
            if ledger.is_unchanged(known.get(str(path)), st):
                summary.unchanged += 1
                continue
            candidate = Candidate(path, job, st)
            try:
                data = path.read_bytes()
                if not _same_file(candidate):
                    raise OSError("changed while being read")
            except OSError as error:
                rejected.append(Rejection(candidate, "pending", str(error)))
                continue
            try:
                states.append(trainer_state.parse(path, job_id, data))
            except trainer_state.NotATrainerState as error:
                outcome = progress.diagnose(data)[0] if str(error).startswith("invalid JSON") else "failed"
                rejected.append(Rejection(candidate, outcome, str(error)))
                continue
            folders.append(job)
            stats.append(st)
    if states:
        _merge_trainer_states(con, states, folders, stats)
        summary.ingested += len(states)
        summary.job_ids.update(s.job_id for s in states)
        summary.rows += sum(len(s.rows) for s in states)
        summary.warnings += sum(len(s.warnings) for s in states)
    for r in rejected:
        _not_ingested(con, summary, r, KIND_TRAINER)


def _merge_trainer_states(
    con: duckdb.DuckDBPyConnection,
    states: list[trainer_state.TrainerState],
    folders: list[JobFolder],
    stats: list[ledger.Stat],
) -> None:
    checkpoints = [
        (s.job_id, step, str(s.path.parent))
        for s, job in zip(states, folders, strict=True)
        if (step := trainer_state.checkpoint_step(s, job.path)) is not None
    ]
    trainer_state.stage(con, states, [str(job.path) for job in folders])
    con.execute("BEGIN")
    try:
        trainer_state.merge(con)
        if checkpoints:
            job_ids, steps, paths = (list(column) for column in zip(*checkpoints, strict=True))
            con.execute(trainer_state.CHECKPOINTS, {"job_id": job_ids, "step": steps, "path": paths})
        for s, st in zip(states, stats, strict=True):
            ledger.record(con, str(s.path), KIND_TRAINER, st, "ingested", None, s.job_id, len(s.rows), s.warnings)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _spool_files(spools: list[Path]) -> list[Path]:
    files = []
    for spool in spools:
        if not spool.is_dir():
            raise FileNotFoundError(f"spool {spool} is not a folder")
        files.extend(sorted(p.resolve() for p in spool.rglob("*.jsonl") if p.is_file()))
    return files


def _ingest_spool_file(con: duckdb.DuckDBPyConnection, path: Path, resume: tuple[int, int], summary: Summary) -> None:
    """Read a spool file from where the last run stopped (bytes, lines), up to its last complete line."""
    summary.files_seen += 1
    key = str(path)
    offset, lines = resume
    try:
        st = ledger.stat(path)
    except OSError:
        summary.files_seen -= 1
        return
    if st.size < offset:  # replaced or truncated: read it from the start
        offset, lines = 0, 0
    if st.size == offset:
        summary.unchanged += 1
        return
    chunk = gpu_samples.read_spool(path, offset, lines + 1)
    if chunk.consumed == 0:  # only a line still being written
        summary.unchanged += 1
        return
    con.execute("BEGIN")
    try:
        summary.job_ids |= gpu_samples.store(con, chunk.rows, "spool")
        ledger.record(
            con, key, KIND_SPOOL, st, "ingested", None, None, lines + chunk.lines, chunk.warnings,
            read_offset=offset + chunk.consumed,
        )  # fmt: skip
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    summary.ingested += 1
    summary.rows += len(chunk.rows)
    summary.warnings += len(chunk.warnings)


def _import_nvidia_smi(con: duckdb.DuckDBPyConnection, item: CsvImport, summary: Summary) -> None:
    """Import one nvidia-smi CSV log for a job (again only when it changed)."""
    from . import nvidia_smi

    summary.files_seen += 1
    path = item.path.resolve()
    st = ledger.stat(path)
    if ledger.is_unchanged(ledger.load(con, KIND_NVIDIA_SMI).get(str(path)), st):
        summary.unchanged += 1
        return
    candidate = Candidate(path, JobFolder(path.parent), st)
    try:
        columns = list(item.columns) if item.columns else None
        parsed = nvidia_smi.parse(path.read_bytes(), timezone=item.timezone, columns=columns)
    except (nvidia_smi.NotNvidiaSmiCsv, UnicodeError) as error:
        _not_ingested(con, summary, Rejection(candidate, "failed", str(error)), KIND_NVIDIA_SMI)
        return
    rows = [{**row, "job_id": item.job_id, "host": item.host} for row in parsed.rows]
    con.execute("BEGIN")
    try:
        summary.job_ids |= gpu_samples.store(con, rows, "nvidia-smi")
        ledger.record(con, str(path), KIND_NVIDIA_SMI, st, "ingested", None, item.job_id, len(rows), parsed.warnings)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    summary.ingested += 1
    summary.rows += len(rows)
    summary.warnings += len(parsed.warnings)


def _add_folder_checkpoints(con: duckdb.DuckDBPyConnection, jobs: list[JobFolder], summary: Summary) -> None:
    rows = [(str(j.path), step, str(p)) for j in jobs for step, p in j.checkpoints.items()]
    if not rows:
        return
    con.execute(FOLDERS_TABLE)
    source_dirs, steps, paths = (list(column) for column in zip(*rows, strict=True))
    con.execute(INSERT_FOLDERS, {"source_dir": source_dirs, "step": steps, "path": paths})
    summary.job_ids.update(job_id for (job_id,) in con.execute(ADD_FOLDER_CHECKPOINTS).fetchall())
