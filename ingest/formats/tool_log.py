"""What every reader of trainers' own logs shares (TensorBoard, Lightning CSV, MLflow, LLaMA-Factory).

A tool's reader is a ``ToolLogParser``: which of a job folder's files it reads (discovery puts
them in ``JobFolder.tool_files[kind]``), how it turns a file's new bytes into scalar points
(``text_logs.Chunk``), and optionally what the run's own files say of the job. ``ToolLogFormat``
does the rest, the same for every tool:

- **Incremental.** A file that only grows is read from the ledger's ``read_offset`` up to its last
  complete record or line, as the run found it (``Candidate.stat``: its size, and the time of the
  write that made it); a record cut mid-write waits for the next run. A text log's last line
  without its newline (``reads_lines``) is read as its last line once the file has settled
  (``ledger.settled``); until then the file is recorded without its fingerprint, so that the next
  run opens it again for that line (a file read to its end and unchanged since is never opened).
  A reader whose lines are timed from the file's modification time (``reads_again``:
  LLaMA-Factory's) keeps the offset where such a read began: its complete lines are stored, and
  the next run reads them again with the rest (their points replaced), counting and warning of
  only the lines no read had before.
  A file that shrank, or whose bytes before the offset, or up to the end of the lines read there
  (``read_digest``), changed (it was replaced), is read whole again.
  A file that does not grow (``grows`` False: a YAML file, an MLflow param) is read whole when
  its size or time changes, or when a file outside the folder it is read with
  (``JobFolder.watched``: an MLflow run's experiment meta.yaml) changed since: its record keeps
  that file's size and time in ``read_digest`` (``watch_text``).
- **Last written wins.** Of a (metric, step) logged twice the later record wins; across a job's
  files of one tool (``overlapping``: several event files of one run) the file whose name sorts
  later wins. When a file other than the last one grows, the job's points of that tool are read
  again from all its files, so the winner never depends on the order in which runs saw the bytes.
  ``metric_values`` has no key (revision 0017): a batch resolves its own duplicates (numpy) and
  deletes the stored rows of its (job, name, step) before inserting, unless its jobs have none.
- **Crash-safe.** A batch's points, job rows, ledger rows (offsets) and queued refreshes commit in
  one transaction: a run killed at any moment leaves the last batch's state, the next reads on.
- **Jobs.** A run folder of tool logs only gets a ``jobs`` row (its job id is its path relative
  to the root); the logs of a progress.json or trainer-state folder add points to that job (and
  give a trainer-state job, whose states carry no time, its start).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import google_crc32c
import numpy as np

from runlytics.ingest import ledger
from runlytics.ingest.discover import LIGHTNING_HPARAMS as HPARAMS
from runlytics.ingest.discover import LLAMAFACTORY, TOOL_KINDS, JobFolder
from runlytics.ingest.sql import CONFIG_SETTINGS
from runlytics.warehouse import db, results

from .base import (
    STORED_DIRS,
    Candidate,
    Context,
    Rejection,
    changed_files,
    examine,
    not_ingested,
    read_again,
    stored_owner,
)
from .text_logs import Chunk, Events, Point, RunInfo, clean_strings

LFS_POINTER = b"version https://git-lfs.github.com/spec/"
LFS_REASON = "a Git LFS pointer, not the file itself (the repository stores it in LFS: `git lfs pull` fetches it)"
DIGEST_BYTES = 64  # the bytes before the read offset whose digest tells a replaced file
BATCH_POINTS = 1_000_000  # points staged per transaction, at most (a job's points stay in one batch)
ORDER_BITS = 40
EPOCH = datetime(1970, 1, 1)  # a point's order within its file (a byte offset) takes the low bits of seq
# the microseconds since the epoch of years 1-9999 (datetime's range): [MIN_MICROS, END_MICROS)
MIN_MICROS = (datetime.min - EPOCH) // timedelta(microseconds=1)
END_MICROS = (datetime.max - EPOCH) // timedelta(microseconds=1) + 1
WALL_LIMIT = 1e12  # seconds: beyond any year 9999


class NotAToolLog(ValueError):
    """The file is not what its name says; the message says why (the file fails until it changes)."""


class NotYet(ValueError):
    """The file is caught mid-rewrite (an MLflow meta.yaml cut short): nothing of it is applied, it
    is left for the next run (``pending``); the message says why."""


class ToolLogParser:
    """A tool's reader. Subclasses set ``kind`` and write ``parse`` (or ``read``, which is given the
    stat the run found the file with); the rest has defaults."""

    kind: str = ""  # JobFolder.tool_files key, ingest_files.kind and metric_values.source
    # a job's files of this tool may log the same (name, step): the file whose name sorts later wins
    overlapping: bool = False
    # a text log of lines: a settled file's last line without its newline is its last line, read
    # as any other. Not TensorBoard's records: one cut short can't be read whatever the wait
    reads_lines: bool = False
    # (with reads_lines) a read that ends in a line still being written keeps the offset where it
    # began: its complete lines are stored as read, and the next run reads them again with the rest
    # (a reader that times them from the file's modification time, the cut line's write: late)
    reads_again: bool = False

    def grows(self, path: Path) -> bool:
        """True for a file that is only ever appended to (read on from the offset)."""
        return True

    def parse(self, job: JobFolder, path: Path, data: bytes, offset: int, lines: int) -> Chunk:
        """The points of ``data``, the file's bytes from ``offset`` on (``lines`` lines or records
        before it); ``Chunk.consumed`` bytes of them are done with. Raise NotAToolLog to fail the file."""
        raise NotImplementedError

    def read(self, c: Candidate, data: bytes, offset: int, lines: int, seen: int) -> Chunk:
        """``parse`` of ``c``'s bytes as the run found them: ``data`` ends at ``c.stat.size``, whose
        ``mtime_ns`` is the time of the write that made that size (the file may have grown since:
        a reader that times lines by the file's modification time takes that stat's, not the
        file's now). The lines of ``data`` before offset ``seen`` were read by the last run already
        (``reads_again``): their warnings are said no more. This default calls ``parse``."""
        return self.parse(c.job, c.path, data, offset, lines)

    def job_info(self, job: JobFolder) -> tuple[RunInfo | None, list[str]]:
        """What the run's own files say of the job (read whenever one of its files changed), and warnings."""
        return None, []


@dataclass
class _Read:
    """One file read this run: where it started, what came of it."""

    candidate: Candidate
    rank: int  # the file's place among the job's files of this tool (by name)
    offset: int
    lines: int
    chunk: Chunk
    digest: str | None  # None: a file that does not grow (no offset kept)
    # its last line waits for its newline (or for the file to settle): recorded without its
    # fingerprint, so that the next run opens it again
    waiting: bool = False
    repeated: int = 0  # of the chunk's points, those of lines the last run read already (reads_again)
    # (a file read with another outside the folder, ``JobFolder.watched``) that file's ``watch_text``
    watch: str | None = None


@dataclass
class _JobRead:
    job: JobFolder
    job_id: str
    whole: bool  # this tool's stored points of the job are replaced, not added to
    reads: list[_Read] = field(default_factory=list)
    info: RunInfo = field(default_factory=RunInfo)
    info_warnings: list[str] = field(default_factory=list)
    # path -> the job its file was read for before (a tool-log run's, until its folder became part
    # of this job's): that job's points of this tool are deleted, and the job once no file is left
    moved: dict[str, str] = field(default_factory=dict)

    @property
    def points(self) -> int:
        return sum(r.chunk.count for r in self.reads)


OWNERS = "SELECT path, job_id FROM ingest_files WHERE kind = $kind AND job_id IS NOT NULL"
# the size each file had at its last read where that read left bytes after its offset: a line
# still being written, or (``reads_again``) the complete lines before it too, read again now
READ_SIZES = """
SELECT path, size FROM ingest_files WHERE kind = $kind AND read_offset IS NOT NULL AND size > read_offset
"""
# the ids a tool-log run's folder holds (rows its tool logs made: source_file is the folder): it
# keeps the id it was first read under when another ingest root names it otherwise
STORED_RUN_IDS = """
SELECT source_dir, job_id FROM jobs WHERE source_file = source_dir AND source_dir IN (SELECT unnest($dirs))
"""
# the batch's points, one per (job, name, step) (_stage_points keeps the last written), from its
# arrays: job ids and names as codes into small tables. DuckDB's scan of a float64 array reads NaN
# as NULL: a NaN time is no time (NULL), but a NaN value is kept as NaN (the array holds no other
# NULL), as a trainer state's NaN loss is: the non-finite loss counts and the nonfinite_loss insight see it
WINNERS = """
SELECT j.job_id, n.name_text AS name, p.step,
       CASE WHEN NOT isnan(p.ts) THEN rl_in_years(make_timestamp(CAST(round(p.ts * 1e6) AS BIGINT))) END AS ts,
       coalesce(p.value, CAST('NaN' AS DOUBLE)) AS value
FROM staged_points p JOIN staged_jobs j ON j.job = p.job JOIN staged_names n ON n.name = p.name
"""
STAGE_WINNERS = "CREATE OR REPLACE TEMP TABLE batch_metric_winners AS " + WINNERS
DELETE_WHOLE = "DELETE FROM metric_values WHERE source = $source AND job_id IN (SELECT unnest($job_ids))"
# the former jobs (of files that moved to another job) that keep a tool log in the ledger besides
# the moved ones (a file of another tool not yet moved, any outcome). A GPU log imported for the
# job does not keep its row: samples make no job row (a fresh read of the files would have none)
FORMER_KEPT = """
SELECT DISTINCT job_id, kind FROM ingest_files
WHERE job_id IN (SELECT unnest($job_ids)) AND list_contains($kinds, kind) AND NOT list_contains($paths, path)
"""
# a former job's row made by its tool logs (source_file is the run folder; a progress.json's or
# trainer state's row is never deleted here), once no file of it is left
DELETE_FORMER_JOBS = "DELETE FROM jobs WHERE job_id IN (SELECT unnest($job_ids)) AND source_file = source_dir"
# a removed job's other rows: the checkpoints its folder's checkpoint-N/ gave it (formats/
# checkpoint_folders.py joins on source_dir, which it shared with the job now owning the folder), its
# insights (the refresh recomputes only jobs that have a row; job_results and utilization_minutes
# follow the refresh, which deletes each queued job's rows first)
DELETE_FORMER_ROWS = tuple(
    f"DELETE FROM {db.quote_identifier(table)} WHERE job_id IN (SELECT unnest($job_ids)) "
    "AND job_id NOT IN (SELECT job_id FROM jobs)"
    for table in ("checkpoints", "insight_results", "insight_jobs")
)
ANY_STORED = "SELECT 1 FROM metric_values WHERE job_id IN (SELECT unnest($job_ids)) LIMIT 1"
INSERT_POINTS = """
INSERT INTO metric_values (job_id, name, step, ts, value, source)
SELECT job_id, name, step, ts, value, $source FROM batch_metric_winners
"""
# the first points of the batch's jobs (a first ingest): straight from the arrays, nothing to compare
INSERT_NEW_POINTS = f"""
INSERT INTO metric_values (job_id, name, step, ts, value, source)
SELECT job_id, name, step, ts, value, $source FROM ({WINNERS})
"""
# A point logged again without a time keeps the stored point's time: Lightning's CSV logger, which
# writes no times, beside its TensorBoard logger in one folder took the times of the steps both
# logged, as the later writer of each (job, name, step) (the event file is read first), and the
# figures then depended on which file an ingest read last (session 27 audit); the CSV read again
# (rewritten under a wider header when a new metric is first logged) keeps them too. But a
# LLaMA-Factory point read again is as the new read has it: its time is settled by the lines after
# it (ingest/formats/llamafactory.py)
KEEP_TIMES = """
UPDATE batch_metric_winners w SET ts = m.ts
FROM metric_values m
WHERE w.ts IS NULL AND m.ts IS NOT NULL AND (m.source <> $source OR $source <> $settled_by_later_lines)
  AND m.job_id IN (SELECT unnest($job_ids)) AND m.job_id = w.job_id AND m.name = w.name AND m.step = w.step
"""
# A stored (job, name, step) that the batch logs again gives way to the new value (deleted, then
# inserted with the others): one hash join of the batch with the stored rows of its jobs. Only run
# when the batch's jobs have rows already: a first ingest inserts and compares nothing.
DELETE_REPLACED = """
DELETE FROM metric_values USING batch_metric_winners w
WHERE metric_values.job_id IN (SELECT unnest($job_ids))
  AND metric_values.job_id = w.job_id AND metric_values.name = w.name AND metric_values.step = w.step
"""
# The config's known keys (inputs.md: batch_size, max_steps, save_steps, target_samples_per_second,
# gpu_count) read as progress.json's are (ingest/progress.py): a Lightning run's hparams.yaml is its
# config. An MLflow run's config nests its params (``{"params": …}``): no top-level key, none read.
STAGE_RUNS = """
CREATE OR REPLACE TEMP TABLE batch_tool_runs AS
SELECT r.*,
       rl_setting(r.config, 'batch_size') AS batch_size,
       CAST(rl_setting(r.config, 'save_steps') AS BIGINT) AS save_steps,
       rl_setting(r.config, 'target_samples_per_second') AS target_samples_per_second,
       CAST(rl_setting(r.config, 'gpu_count') AS BIGINT) AS gpu_count,
       CAST(rl_setting(r.config, 'max_steps') AS BIGINT) AS config_max_steps
FROM (
    SELECT unnest($job_id) AS job_id, unnest($status) AS status, CAST(unnest($config) AS JSON) AS config,
           unnest($model_name) AS model_name, rl_in_years(unnest($started_at)) AS started_at,
           rl_in_years(unnest($ended_at)) AS ended_at, unnest($current_step) AS current_step,
           unnest($total_steps) AS total_steps, unnest($source_dir) AS source_dir,
           unnest($start_unknown) AS start_unknown, rl_in_years(unnest($updated_at)) AS updated_at,
           unnest($status_final) AS status_final, unnest($times_final) AS times_final
) r
"""
# Why a setting of the config was dropped, in progress.json's words (ingest/progress.py): a Lightning
# hparams.yaml's batch_size 'auto' or gpu_count 2.5 is said, not dropped silently.
SETTING_PROBLEMS = """
SELECT job_id, rl_setting_problems('', config)
FROM batch_tool_runs
WHERE config IS NOT NULL
"""
# A run folder of tool logs only: its job row, merged with what earlier runs and other tools'
# files of the folder said (source_file is the folder: a row made from a progress.json or trainer
# state is never touched). A read that gives a config gives the whole of it (an hparams.yaml read
# whole, an MLflow run's params and tags): it replaces the stored one, as a fresh read of the final
# files has it (a JSON merge kept keys the file no longer has and dropped those set to null), and
# so do the settings read from it. updated_at is the latest point's time, or the time the run's
# log says it last wrote when later (a LLaMA-Factory line timed earlier: its step finished before).
UPSERT_JOBS = """
INSERT INTO jobs (job_id, status, config, model_name, batch_size, save_steps, target_samples_per_second, gpu_count,
                  started_at, ended_at, updated_at, current_step, total_steps, source_dir, source_file, ingested_at)
SELECT r.job_id, coalesce(r.status, 'unknown'), r.config, r.model_name, r.batch_size, r.save_steps,
       r.target_samples_per_second, r.gpu_count, r.started_at, r.ended_at,
       greatest(m.last_ts, r.updated_at), greatest(r.current_step, m.last_step),
       coalesce(r.total_steps, r.config_max_steps), r.source_dir, r.source_dir, now()::TIMESTAMP
FROM batch_tool_runs r
LEFT JOIN (
    SELECT job_id, max(ts) AS last_ts, max(step) AS last_step
    FROM metric_values WHERE job_id IN (SELECT job_id FROM batch_tool_runs) GROUP BY job_id
) m ON m.job_id = r.job_id
ON CONFLICT (job_id) DO UPDATE SET
    status = CASE WHEN excluded.status <> 'unknown' OR jobs.status IS NULL THEN excluded.status ELSE jobs.status END,
    config = coalesce(excluded.config, jobs.config),
    model_name = coalesce(excluded.model_name, jobs.model_name),
    batch_size = CASE WHEN excluded.config IS NULL THEN jobs.batch_size ELSE excluded.batch_size END,
    save_steps = CASE WHEN excluded.config IS NULL THEN jobs.save_steps ELSE excluded.save_steps END,
    target_samples_per_second = CASE WHEN excluded.config IS NULL THEN jobs.target_samples_per_second
                                     ELSE excluded.target_samples_per_second END,
    gpu_count = CASE WHEN excluded.config IS NULL THEN jobs.gpu_count ELSE excluded.gpu_count END,
    started_at = least(excluded.started_at, jobs.started_at),
    ended_at = coalesce(excluded.ended_at, jobs.ended_at),
    updated_at = greatest(excluded.updated_at, jobs.updated_at),
    current_step = greatest(excluded.current_step, jobs.current_step),
    total_steps = coalesce(excluded.total_steps, jobs.total_steps),
    ingested_at = excluded.ingested_at
WHERE jobs.source_file = excluded.source_file
"""
# A run's current_step is the highest step of its step rows (the metrics step_facts maps to the
# analytics' columns): its other scalars may count on another scale (Keras's
# evaluation_loss_vs_iterations counts iterations, its rows epochs), and total_iterations takes
# the higher of the two. A run with no step rows keeps the highest step it logged (above).
# list_contains, not IN (subquery): DuckDB pushes it into step_facts' scans.
ROW_STEPS = """
UPDATE jobs SET current_step = s.last_step
FROM (SELECT job_id, max(step) AS last_step FROM step_facts WHERE list_contains($job_ids, job_id) GROUP BY job_id) s,
     batch_tool_runs r
WHERE jobs.job_id = s.job_id AND r.job_id = s.job_id AND jobs.source_file = r.source_dir
  AND jobs.current_step IS DISTINCT FROM s.last_step
"""
# A run whose start turned out unknown (a resumed LLaMA-Factory log read whole again) loses the
# start an earlier read placed: the job equals one read of the same file.
DROP_START = """
UPDATE jobs SET started_at = NULL
FROM batch_tool_runs r
WHERE r.start_unknown AND jobs.job_id = r.job_id AND jobs.source_file = r.source_dir AND jobs.started_at IS NOT NULL
"""

# A trainer-state job (an HF output folder: its trainer states carry no time) takes the start its
# folder's tool logs give (a TensorBoard run's first record, a LLaMA-Factory log's placement), the
# earliest, as a run folder's row does (UPSERT_JOBS, DROP_START); its row, made again at each
# trainer-state read, keeps it (ingest/trainer_state.py). A progress.json job's row is never changed.
STAGE_STARTS = """
CREATE OR REPLACE TEMP TABLE batch_tool_starts AS
SELECT unnest($job_id) AS job_id, rl_in_years(unnest($started_at)) AS started_at,
       unnest($start_unknown) AS start_unknown
"""
TRAINER_STATE_START = """
UPDATE jobs SET started_at = CASE WHEN s.start_unknown THEN NULL ELSE least(jobs.started_at, s.started_at) END
FROM batch_tool_starts s
WHERE jobs.job_id = s.job_id AND jobs.source_file LIKE '%trainer_state.json'
  AND (s.start_unknown OR s.started_at IS NOT NULL)
  AND jobs.started_at IS DISTINCT FROM CASE WHEN s.start_unknown THEN NULL ELSE least(jobs.started_at, s.started_at) END
"""

# A run whose log gives the whole log's status (LLaMA-Factory: ``RunInfo.status_final``): that status
# replaces the stored one, ``unknown`` included (a log that read completed and then went on with a
# larger total_steps is no longer), and an ``unknown`` one drops the end stored with ``completed``:
# the job equals one read of the same file, whatever pieces the runs read it in.
SETTLE_STATUS = """
UPDATE jobs SET status = coalesce(r.status, 'unknown'),
                ended_at = CASE WHEN coalesce(r.status, 'unknown') = 'unknown' THEN NULL ELSE jobs.ended_at END
FROM batch_tool_runs r
WHERE r.status_final AND jobs.job_id = r.job_id AND jobs.source_file = r.source_dir
  AND (jobs.status IS DISTINCT FROM coalesce(r.status, 'unknown')
       OR (coalesce(r.status, 'unknown') = 'unknown' AND jobs.ended_at IS NOT NULL))
"""

# A run whose own record gives its start and end (``RunInfo.times_final``: an MLflow meta.yaml's
# start_time and end_time, a Lightning run's folder): they replace the stored ones, None included,
# where the earliest start seen stays for the other tools (UPSERT_JOBS). A read of a meta.yaml cut
# at ``start_time: 17800`` (settled: read as it is) gave way to the next read, not least() forever;
# a run resumed in MLflow (RUNNING again, end_time null) has no end, as one read of the file gives.
SETTLE_TIMES = """
UPDATE jobs SET started_at = r.started_at, ended_at = r.ended_at
FROM batch_tool_runs r
WHERE r.times_final AND jobs.job_id = r.job_id AND jobs.source_file = r.source_dir
  AND (jobs.started_at IS DISTINCT FROM r.started_at OR jobs.ended_at IS DISTINCT FROM r.ended_at)
"""


def digest(data: bytes) -> str:
    return format(google_crc32c.value(data), "08x")


NO_BYTES = digest(b"")  # a read that kept offset 0 and read no line: nothing to compare


class ToolLogFormat:
    """A JobFormat (``formats/base.py``) over a ToolLogParser: ledger, offsets, staging and merging."""

    def __init__(self, parser: ToolLogParser) -> None:
        self.parser = parser
        self.kind = parser.kind

    def files(self, job: JobFolder) -> list[Path]:
        return list(job.tool_files.get(self.kind, []))

    def prefetch(self, jobs: list[JobFolder], max_file_bytes: int) -> None:
        return None

    def ingest(self, ctx: Context, jobs: list[JobFolder]) -> None:
        owned = [job for job in jobs if self.files(job)]
        if not owned:
            return
        candidates = changed_files(ctx, self.kind, [(job, path) for job in owned for path in self.files(job)])
        # a run folder whose path is not UTF-8 can't be stored as text: each of its files failed
        # above (to retry, said every run), and nothing else of it is looked up
        owned = [job for job in owned if job.name_is_utf8]
        job_ids = ledger.progress_job_ids(ctx.con)
        owners = dict(ctx.con.execute(OWNERS, {"kind": self.kind}).fetchall())
        resume = ledger.load_resume(ctx.con, self.kind)
        candidates += _watched_changes(ctx, self.kind, owned, candidates, resume)
        sizes: dict[str, int] = {}
        if self.parser.reads_again:
            sizes = dict(ctx.con.execute(READ_SIZES, {"kind": self.kind}).fetchall())
        rejected: list[Rejection] = []
        ids = {job.path: _job_id(job, job_ids) for job in owned}
        ids.update(self._kept_ids(ctx, owned, owners))
        # files read before for another job (a run folder that became part of an HF job folder at
        # its first checkpoint; not a run folder another root names otherwise: it kept its id):
        # read again from the start for the job they belong to now
        seen = {c.path for c in candidates}
        moved: dict[str, str] = {}
        for job in owned:
            for path in self.files(job):
                if owners.get(str(path), ids[job.path]) != ids[job.path]:
                    moved[str(path)] = owners[str(path)]
                    resume.pop(str(path), None)
                    if path not in seen:
                        candidates += _all_candidates(ctx, job, [path], [], rejected, self.kind)
                        ctx.summary.unchanged -= 1
        if not candidates:
            return
        by_job: dict[Path, list[Candidate]] = {}
        for c in candidates:
            by_job.setdefault(c.job.path, []).append(c)
        plans: list[tuple[JobFolder, str, list[Candidate]]] = []
        for job in owned:
            changed = by_job.get(job.path)
            if not changed:
                continue
            if job.path in ctx.conflicts:  # its progress.json claims another folder's job
                rejected += [Rejection(c, "failed", ctx.conflicts[job.path], retry=True) for c in changed]
                continue
            plans.append((job, ids[job.path], changed))
        plans, conflicts = _claims(ctx, plans, job_ids)
        rejected += conflicts
        batch: list[_JobRead] = []
        done = 0
        for job, job_id, changed in plans:
            read = self._read_job(ctx, job, job_id, changed, resume, sizes, rejected)
            done += len(changed)
            ctx.progress("read", done, len(candidates))
            if read is None:
                continue
            paths = (str(r.candidate.path) for r in read.reads)
            read.moved = {path: moved[path] for path in paths if path in moved}
            batch.append(read)
            if sum(r.points for r in batch) >= BATCH_POINTS:
                self._merge(ctx, batch)
                batch = []
        if batch:
            self._merge(ctx, batch)
        for r in rejected:
            not_ingested(ctx, r, self.kind)

    def _kept_ids(self, ctx: Context, owned: list[JobFolder], owners: dict[str, str]) -> dict[Path, str]:
        """The job id each tool-log run folder already holds in the warehouse (its path below the
        root it was first read under, whatever root found it now: as a progress.json folder keeps
        its ids); of two (stored before this rule), the one its files were last read for."""
        runs = [job for job in owned if job.is_tool_run]
        if not runs:
            return {}
        held: dict[str, set[str]] = {}
        for folder, job_id in ctx.con.execute(STORED_RUN_IDS, {"dirs": [str(j.path) for j in runs]}).fetchall():
            held.setdefault(folder, set()).add(job_id)
        kept: dict[Path, str] = {}
        for job in runs:
            ids = held.get(str(job.path))
            if ids:
                named = {owners[path] for path in map(str, self.files(job)) if path in owners} & ids
                kept[job.path] = min(named or ids)
        return kept

    def _read_job(
        self,
        ctx: Context,
        job: JobFolder,
        job_id: str,
        changed: list[Candidate],
        resume: dict[str, tuple[int, int, str | None]],
        sizes: dict[str, int],
        rejected: list[Rejection],
    ) -> _JobRead | None:
        files = self.files(job)
        position = {path: i for i, path in enumerate(files)}
        starts: dict[Path, tuple[int, int, int]] = {}
        whole = False
        # a file that shrank or was replaced: read again from its start, its stored points kept
        # (a cut, emptied or overwritten log must not delete what was read of it), with a warning
        altered: dict[Path, str] = {}
        for c in changed:
            offset, lines, stored_digest = resume.get(str(c.path), (0, 0, None))
            # where the lines the last run read from this offset end (reads_again: read again now)
            seen = offset
            if str(c.path) in resume and sizes.get(str(c.path), 0) > offset and offset <= c.stat.size:
                seen = _end_of_lines(c.path, offset, min(sizes[str(c.path)], c.stat.size))
            if not self.parser.grows(c.path):
                offset, lines, seen = 0, 0, 0
            elif offset > c.stat.size:
                altered[c.path] = (
                    f"the file shrank from {offset} to {c.stat.size} bytes (cut, emptied or replaced):"
                    " read again from its start, the points stored from it kept"
                )
                offset, lines, seen, whole = 0, 0, 0, True
            elif (offset or stored_digest not in (None, NO_BYTES)) and not _same_bytes(
                c.path, offset, seen, stored_digest
            ):
                before = f"the bytes before offset {offset}" if offset and seen == offset else "the lines read before"
                altered[c.path] = (
                    f"{before} changed (the file was replaced): read again from its start, the points stored"
                    " from it kept"
                )
                offset, lines, seen, whole = 0, 0, 0, True
            starts[c.path] = (offset, lines, seen)
        if self.parser.overlapping and not whole:
            # a changed file that sorts before a file already read: the later file's points must keep winning
            read_before = [position[p] for p in files if resume.get(str(p), (0, 0, None))[0] > 0]
            whole = any(position[c.path] < max(read_before, default=-1) for c in changed)
        if whole and self.parser.overlapping:
            changed = _all_candidates(ctx, job, files, changed, rejected, self.kind)
            starts = {c.path: (0, 0, 0) for c in changed}
        # all the run's files read again: their stored points are replaced, unless one of them lost
        # bytes (then what the new reads give is added, as for every other log)
        job_read = _JobRead(job, job_id, whole and self.parser.overlapping and not altered)
        for c in sorted(changed, key=lambda c: position[c.path]):
            offset, lines, seen = starts[c.path]
            read = self._read_file(ctx, c, position[c.path], offset, lines, seen, rejected)
            if read is not None:
                if c.path in altered:
                    read.chunk.warnings.insert(0, altered[c.path])
                job_read.reads.append(read)
        if not job_read.reads:
            return None
        for read in job_read.reads:
            _clean_info(read.chunk.info, read.chunk.warnings)
            _merge_info(job_read.info, read.chunk.info)
        info, warnings = self.parser.job_info(job)
        if info is not None:
            _clean_info(info, warnings)
            _merge_info(job_read.info, info)
        job_read.info_warnings = warnings
        return job_read

    def _read_file(
        self, ctx: Context, c: Candidate, rank: int, offset: int, lines: int, seen: int, rejected: list[Rejection]
    ) -> _Read | None:
        grows = self.parser.grows(c.path)
        other = c.job.watched().get(c.path)
        watch = watch_text(other) if other is not None else None  # before the file it is read with
        try:
            with open(c.path, "rb") as f:
                f.seek(offset)
                data = f.read(max(0, c.stat.size - offset))  # what the run found: an append after is next run's
            final = grows and self.parser.reads_lines and _ends_in_a_final_line(c, offset, data)
        except OSError as error:
            rejected.append(Rejection(c, "failed", f"cannot read: {error}", retry=True))
            return None
        if offset == 0 and data.startswith(LFS_POINTER):
            rejected.append(Rejection(c, "failed", LFS_REASON))
            return None
        try:
            # a final line is given its newline: every parser reads lines up to the last one
            chunk = self.parser.read(c, data + b"\n" if final else data, offset, lines, seen)
        except NotYet as error:
            rejected.append(Rejection(c, "pending", str(error)))
            return None
        except NotAToolLog as error:
            rejected.append(Rejection(c, "failed", str(error)))
            return None
        chunk.consumed = min(chunk.consumed, len(data))  # the file holds no such newline
        waiting = grows and self.parser.reads_lines and chunk.consumed < len(data)
        ctx.summary.waiting += waiting
        read_to = chunk.consumed  # the end of the lines read: the ledger's digest is of the bytes before it
        if waiting and self.parser.reads_again:
            # its complete lines are stored, and read again by the next run: the offset stays
            chunk.consumed = chunk.lines = 0
        repeated = sum(offset <= p.order < seen for p in chunk.points) if seen > offset else 0
        if grows and chunk.consumed == 0 and offset > 0 and not chunk.warnings and chunk.count == 0:
            if not waiting and c.stat.fingerprint is not None:
                # read to its end before, unchanged since (its record lacked the fingerprint: read
                # within FRESH_SECONDS of a change): the next run need not open it
                ledger.fingerprint(ctx.con, str(c.path), c.stat)
            return None  # only a record still being written: the next run reads it whole
        if not grows:
            return _Read(c, rank, offset, lines, chunk, None, watch=watch)
        if read_to >= DIGEST_BYTES or offset == 0:
            before = data[max(0, read_to - DIGEST_BYTES) : read_to]
        else:
            try:
                before = bytes_before(c.path, offset + read_to)
            except OSError as error:
                rejected.append(Rejection(c, "failed", f"cannot read: {error}", retry=True))
                return None
        return _Read(c, rank, offset, lines, chunk, digest(before), waiting, repeated)

    def _merge(self, ctx: Context, batch: list[_JobRead]) -> None:
        con = ctx.con
        staged = _stage_points(batch)
        runs = [r for r in batch if r.job.is_tool_run]
        with db.atomic(con):
            whole = [r.job_id for r in batch if r.whole]
            if whole:
                con.execute(DELETE_WHOLE, {"source": self.kind, "job_ids": whole})
            _store_points(con, staged, self.kind)
            if runs:
                con.execute(STAGE_RUNS, _runs_columns(runs))
                _note_setting_problems(con, runs)
                con.execute(UPSERT_JOBS)
                con.execute(ROW_STEPS, {"job_ids": sorted({r.job_id for r in runs})})
                if any(r.info.start_unknown for r in runs):
                    con.execute(DROP_START)
                if any(r.info.status_final for r in runs):
                    con.execute(SETTLE_STATUS)
                if any(r.info.times_final for r in runs):
                    con.execute(SETTLE_TIMES)
            starts = [r for r in batch if not r.job.is_tool_run and (r.info.started_at or r.info.start_unknown)]
            if starts:
                con.execute(STAGE_STARTS, {
                    "job_id": [r.job_id for r in starts],
                    "started_at": [r.info.started_at for r in starts],
                    "start_unknown": [r.info.start_unknown for r in starts],
                })  # fmt: skip
                con.execute(TRAINER_STATE_START)
            moved = _retire_former(con, self.kind, batch)
            results.enqueue(con, {r.job_id for r in batch} | {m.former for m in moved.values()})
            ledger.record_many(
                con,
                self.kind,
                [
                    ledger.Outcome(
                        str(read.candidate.path),
                        # without its fingerprint while its last line waits: the next run opens it
                        replace(read.candidate.stat, fresh=True) if read.waiting else read.candidate.stat,
                        job_read.job_id,
                        read.lines + read.chunk.lines,
                        read.chunk.warnings
                        + (job_read.info_warnings if i == 0 else [])
                        + _moved_notes(moved, str(read.candidate.path)),
                        read.offset + read.chunk.consumed if read.digest is not None else None,
                        read.digest if read.digest is not None else read.watch,
                    )  # fmt: skip
                    for job_read in batch
                    for i, read in enumerate(job_read.reads)
                ],
            )
        summary = ctx.summary
        for job_read in batch:
            summary.job_ids.add(job_read.job_id)
            summary.ingested += len(job_read.reads)
            summary.points += job_read.points - sum(r.repeated for r in job_read.reads)
            summary.warnings += sum(len(r.chunk.warnings) for r in job_read.reads) + len(job_read.info_warnings)
        summary.job_ids |= {m.former for m in moved.values()}
        summary.warnings += len(moved)
        ctx.progress("merge", summary.ingested, summary.ingested)


@dataclass
class _Moved:
    """A file read before for another job (``former``) and now for ``job_id``."""

    former: str
    job_id: str
    left: bool  # the former job's points of this tool are deleted (it keeps no other file of the tool)
    removed: bool  # the former job keeps no tool log and is gone


def _retire_former(con: Any, kind: str, batch: list[_JobRead]) -> dict[str, _Moved]:
    """In the batch's transaction: the points of this tool that the batch's moved files gave their
    former jobs are deleted, and a former job that keeps no tool log in the ledger (the moved files
    are recorded for their new job in the same transaction) loses its job row: a warehouse fed
    while the run's folders appeared then equals one that read the final folders at once. A former
    job that keeps files of this tool (not seen to happen: a run folder's files move together)
    keeps its points, which can't be told apart by file."""
    moved = {path: (former, r.job_id) for r in batch for path, former in r.moved.items()}
    formers = sorted({former for former, _ in moved.values()} - {r.job_id for r in batch})
    if not formers:
        return {}
    params = {"job_ids": formers, "paths": sorted(moved), "kinds": list(TOOL_KINDS)}
    # the former jobs' other tool-log files in the ledger (the moved ones are recorded for their new job)
    files = con.execute(FORMER_KEPT, params).fetchall()
    partial = {job_id for job_id, of_kind in files if of_kind == kind}
    whole = [job_id for job_id in formers if job_id not in partial]
    if whole:
        con.execute(DELETE_WHOLE, {"source": kind, "job_ids": whole})
    kept = {job_id for job_id, _ in files}
    gone = [job_id for job_id in formers if job_id not in kept]
    if gone:
        con.execute(DELETE_FORMER_JOBS, {"job_ids": gone})
        for statement in DELETE_FORMER_ROWS:
            con.execute(statement, {"job_ids": gone})
    return {
        path: _Moved(former, job_id, former not in partial, former not in kept)
        for path, (former, job_id) in moved.items()
        if former in formers
    }


def _moved_notes(moved: dict[str, _Moved], path: str) -> list[str]:
    """The warning of a file read before for another job."""
    m = moved.get(path)
    if m is None:
        return []
    note = f"read before for job {m.former}, now job {m.job_id}'s (its folder became part of a job, or that job's "
    note += "id changed): "
    if not m.left:
        return [note + f"job {m.former} keeps the points it had (it has other files of this tool)"]
    note += "its points moved"
    return [note + (f"; job {m.former} is removed (no tool log of it is left)" if m.removed else "")]


WATCH_FRESH = "fresh"  # a watched file changed within FRESH_SECONDS: its record says so, read again next run


def watch_text(path: Path) -> str:
    """What a file's ledger record keeps of a file it is read with (``JobFolder.watched``): its size
    and time, ``absent``, or ``fresh`` while a writer may be at it (the next run reads again)."""
    try:
        st = ledger.stat(path)
    except FileNotFoundError:
        return "absent"
    except OSError as error:
        return f"unreadable ({error.strerror})"
    return WATCH_FRESH if st.fingerprint is None else f"{st.size}:{st.mtime_ns}"


def _watched_changes(
    ctx: Context, kind: str, owned: list[JobFolder], candidates: list[Candidate], resume: dict[str, Any]
) -> list[Candidate]:
    """The files found unchanged whose watched file (``JobFolder.watched``: an MLflow run's
    experiment meta.yaml) changed since their last read: read again, as a fresh read of the final
    files has them (the experiment renamed, deleted). A file whose record is not an ingested one
    (failed: its read gives the same) is left to its own changes."""
    watching = [(job, path, other) for job in owned for path, other in job.watched().items()]
    if not watching:
        return []
    known = ledger.load(ctx.con, kind)
    seen = {c.path for c in candidates}
    again: list[Candidate] = []
    for job, path, other in watching:
        record = known.get(str(path))
        if path in seen or record is None or record[1] != "ingested" or str(path) not in resume:
            continue
        stored, now = resume[str(path)][2], watch_text(other)
        if stored == now != WATCH_FRESH:
            continue
        if (candidate := read_again(ctx, kind, job, path)) is not None:
            again.append(candidate)
    return again


def _job_id(job: JobFolder, progress_job_ids: dict[str, str]) -> str:
    """A tool-log run's path below the root; a progress.json job's id; else the folder's name."""
    if job.is_tool_run and job.tool_job_id:
        return job.tool_job_id
    return progress_job_ids.get(str(job.progress)) or job.path.name


def _ends_in_a_final_line(c: Candidate, offset: int, data: bytes) -> bool:
    """Whether ``data``, the file's bytes from ``offset`` to its end as the run found it, ends in
    a line without its newline that is the file's last line, not one still being written: the
    file has settled and, once read, still has the stat that found it so."""
    return (
        bool(data) and not data.endswith(b"\n") and offset + len(data) == c.stat.size and ledger.final(c.path, c.stat)
    )


def same_prefix(path: Path, offset: int, stored: str | None) -> bool:
    """True when the bytes before ``offset`` are those read before (the file was not replaced)."""
    if stored is None:
        return True
    try:
        return digest(bytes_before(path, offset)) == stored
    except OSError:
        return False


def _same_bytes(path: Path, offset: int, seen: int, stored: str | None) -> bool:
    """True when the bytes the last read ended at are those read (``same_prefix``): the bytes
    before ``offset``, or before ``seen``, the end of the lines that read took from ``offset`` on
    where it kept its offset (``reads_again``; its digest is of those)."""
    return same_prefix(path, offset, stored) or (seen > offset and same_prefix(path, seen, stored))


def _end_of_lines(path: Path, start: int, end: int) -> int:
    """The offset after the file's last newline in [``start``, ``end``), ``start`` when there is none."""
    try:
        with open(path, "rb") as f:
            while end > start:
                begin = max(start, end - 64 * 1024)
                f.seek(begin)
                found = f.read(end - begin).rfind(b"\n")
                if found >= 0:
                    return begin + found + 1
                end = begin
    except OSError:
        pass
    return start


def bytes_before(path: Path, end: int, size: int = DIGEST_BYTES) -> bytes:
    """The ``size`` bytes (fewer at the file's start) before offset ``end``."""
    start = max(0, end - size)
    with open(path, "rb") as f:
        f.seek(start)
        return f.read(end - start)


def _all_candidates(
    ctx: Context, job: JobFolder, files: list[Path], changed: list[Candidate], rejected: list[Rejection], kind: str
) -> list[Candidate]:
    """Every file of the job (this tool), to be read whole: the changed ones and the others."""
    have = {c.path: c for c in changed}
    out = []
    for path in files:
        if path in have:
            out.append(have[path])
            continue
        try:
            st, problem = examine(path, job, ctx.max_file_bytes)
        except OSError:
            continue
        candidate = Candidate(path, job, st)
        if problem is not None:
            rejected.append(Rejection(candidate, "failed", problem, retry=True))
            continue
        out.append(candidate)
    return out


def _claims(
    ctx: Context, plans: list[tuple[JobFolder, str, list[Candidate]]], progress_job_ids: dict[str, str]
) -> tuple[list[tuple[JobFolder, str, list[Candidate]]], list[Rejection]]:
    """The plans whose job id no other folder holds (the first in path order keeps a new id); the
    others' files fail with the reason, read again every run. Checked for tool-log runs and for job
    folders named by their folder's name (no progress.json read: a trainer-state folder whose states
    can't be read), whose logs would otherwise join a same-named folder's job; a progress.json's
    folder holds its id (formats/progress.py), and a trainer-state folder that lost its id is in
    ``ctx.conflicts`` already."""
    claiming = [p for p in plans if _named_by_folder(p[0], progress_job_ids)]
    if not claiming:
        return plans, []
    stored = dict(ctx.con.execute(STORED_DIRS, {"job_ids": sorted({p[1] for p in claiming})}).fetchall())
    kept: list[tuple[JobFolder, str, list[Candidate]]] = []
    rejected: list[Rejection] = []
    first: dict[str, str] = {}
    for plan in plans:
        job, job_id, changed = plan
        if _named_by_folder(job, progress_job_ids):
            owner = stored.get(job_id)
            # a job folder moved elsewhere takes its job along (a tool-log run's id is its path: no move)
            if owner is not None and not job.is_tool_run:
                owner = stored_owner(owner)
            holder = owner or first.setdefault(job_id, str(job.path))
            if holder != str(job.path):
                reason = f"job id {job_id} belongs to another folder, {holder}: not read"
                rejected += [Rejection(c, "failed", reason, retry=True, conflict=True) for c in changed]
                continue
        kept.append(plan)
    return kept, rejected


def _named_by_folder(job: JobFolder, progress_job_ids: dict[str, str]) -> bool:
    """A tool-log run, or a job folder whose id is its name (no progress.json of it was read)."""
    return job.is_tool_run or not progress_job_ids.get(str(job.progress))


def _note_setting_problems(con: duckdb.DuckDBPyConnection, runs: list[_JobRead]) -> None:
    """The settings of a run's config that were dropped, as warnings of the file that gave the config
    (hparams.yaml, the only log whose config holds them; beside event files it is no file read)."""
    if not any(isinstance(r.info.config, dict) and r.info.config.keys() & CONFIG_SETTINGS for r in runs):
        return  # no run's config names a setting: the query (planned ~20 ms) is not run
    by_id = {r.job_id: r for r in runs}
    for job_id, problems in con.execute(SETTING_PROBLEMS).fetchall():
        if not problems:
            continue
        run = by_id[job_id]
        given = [r for r in run.reads if r.candidate.path.name == HPARAMS]
        if given:
            given[-1].chunk.warnings.extend(problems)
        else:
            run.info_warnings.extend(f"{HPARAMS}: {p}" for p in problems)


def _clean_info(info: RunInfo, warnings: list[str]) -> None:
    """A run's facts without lone surrogates (a parser that let one through: the warehouse refuses
    it, and the whole ingest run with it)."""
    for name in ("status", "config", "model_name"):
        setattr(info, name, clean_strings(getattr(info, name), f"{name}: ", warnings))


def _merge_info(into: RunInfo, new: RunInfo) -> None:
    """``new``'s facts over ``into``'s: the later status and config, the earliest start (the run's own
    times where ``new`` gives them: ``times_final``)."""
    if new.status is not None and (new.status != "unknown" or into.status is None or new.status_final):
        into.status = new.status
        into.status_final = new.status_final
        if new.status_final and new.status == "unknown":
            into.ended_at = None
    if new.config is not None:  # a config is read whole: the later one replaces the earlier
        into.config = new.config
    into.model_name = new.model_name or into.model_name
    if new.times_final:  # the run's own record of its times: as read
        into.started_at, into.ended_at, into.times_final = new.started_at, new.ended_at, True
    else:
        if new.started_at is not None:
            into.started_at = min(into.started_at or new.started_at, new.started_at)
        into.ended_at = new.ended_at or into.ended_at
    if new.current_step is not None:
        into.current_step = max(into.current_step or 0, new.current_step)
    into.total_steps = new.total_steps if new.total_steps is not None else into.total_steps
    into.start_unknown = into.start_unknown or new.start_unknown
    if new.updated_at is not None:
        into.updated_at = max(into.updated_at or new.updated_at, new.updated_at)


@dataclass
class _Staged:
    """A batch's points as arrays (``points``: job and name codes, step, ts, value), with the job
    ids and names the codes stand for."""

    points: dict[str, np.ndarray]
    job_ids: list[str]
    names: list[str]


def _stage_points(batch: list[_JobRead]) -> _Staged:
    """The batch's points, one per (job, name, step): the last written (the highest seq: the
    later file, then the later record or line; of one record, the first).

    Columns, not a tuple per point: numpy arrays that DuckDB scans natively (ten times faster
    than unnesting Python lists; pyarrow would import pandas), names and job ids as codes. Rows
    go in (job, name, step) order, so that a metric's history is stored together."""
    job_codes: list[np.ndarray] = []
    name_codes: list[np.ndarray] = []
    index: dict[str, int] = {}  # the batch's names, each its code
    steps: list[np.ndarray] = []
    seconds: list[np.ndarray] = []
    values: list[np.ndarray] = []
    seqs: list[np.ndarray] = []
    for code, job_read in enumerate(batch):
        for read in job_read.reads:
            chunk = read.chunk
            if chunk.count == 0:
                continue
            if chunk.events is not None:
                step, second, value, order = _event_columns(chunk.events)
                local, table = chunk.events.name_codes()
            else:
                step, second, value, order = _point_columns(chunk.points)
                table = list(dict.fromkeys(p.name for p in chunk.points))
                codes = {name: i for i, name in enumerate(table)}
                local = np.fromiter((codes[p.name] for p in chunk.points), np.int64, len(chunk.points))
            to_batch = np.fromiter((index.setdefault(n, len(index)) for n in table), np.int64, len(table))
            name_codes.append(to_batch[local])
            job_codes.append(np.full(len(step), code, dtype=np.int64))
            steps.append(step)
            seconds.append(second)
            values.append(value)
            seqs.append(order + (read.rank << ORDER_BITS))
    job = _joined(job_codes, np.int64)
    name = _joined(name_codes, np.int64)
    step = _joined(steps, np.int64)
    keep = _last_written(job * len(index) + name, step, _joined(seqs, np.int64))
    points = {
        "job": job[keep],
        "name": name[keep],
        "step": step[keep],
        "ts": _joined(seconds, np.float64)[keep],
        "value": _joined(values, np.float64)[keep],
    }
    return _Staged(points, [r.job_id for r in batch], list(index))


def _joined(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def _store_points(con: Any, staged: _Staged, source: str) -> None:
    """Store the staged points (in the caller's transaction): the batch's jobs' rows of the same
    (name, step) are replaced, the others added."""
    job_ids = {"job_ids": sorted(set(staged.job_ids))}
    first = con.execute(ANY_STORED, job_ids).fetchone() is None
    arrays = {
        "staged_points": staged.points,
        "staged_jobs": {"job": np.arange(len(staged.job_ids)), "job_id": np.array(staged.job_ids, dtype=object)},
        "staged_names": {"name": np.arange(len(staged.names)), "name_text": np.array(staged.names, dtype=object)},
    }
    with db.registered(con, arrays):
        if first:
            con.execute(INSERT_NEW_POINTS, {"source": source})
            return
        con.execute(STAGE_WINNERS)
    con.execute(KEEP_TIMES, {**job_ids, "source": source, "settled_by_later_lines": LLAMAFACTORY})
    con.execute(DELETE_REPLACED, job_ids)
    con.execute(INSERT_POINTS, {"source": source})


def _last_written(group: np.ndarray, step: np.ndarray, seq: np.ndarray) -> np.ndarray:
    """The rows to keep, in (group, step) order: of the rows of one (group, step), the highest seq,
    and of those the last read (a tag twice in one TensorBoard event: its later value).
    ``group``, ``step`` and ``seq`` are in the order read (seq ascending within a group), so a
    group whose steps only grow has no duplicate: one stable sort shows it."""
    order = np.argsort(_sort_key(group), kind="stable")
    g, s = group[order], step[order]
    again = (g[1:] == g[:-1]) & (s[1:] <= s[:-1])
    if not np.any(again):
        return order
    # steps logged again (or out of order) in some groups: only their rows sorted by (group, step,
    # seq, read order), each (group, step)'s last kept; the other groups' rows stay as they are
    redo = np.isin(g, g[1:][again])
    rows = order[redo]
    rows = rows[np.lexsort((rows, seq[rows], step[rows], group[rows]))]
    g, s = group[rows], step[rows]
    last = np.ones(len(rows), dtype=bool)
    last[:-1] = (g[1:] != g[:-1]) | (s[1:] != s[:-1])
    kept = np.concatenate([order[~redo], rows[last]])
    return kept[np.argsort(_sort_key(group[kept]), kind="stable")]


def _sort_key(group: np.ndarray) -> np.ndarray:
    """``group`` as 16-bit numbers when they fit: a stable sort of those is a radix sort, twice as
    fast as of int64."""
    return group.astype(np.uint16) if len(group) and group.min() >= 0 and group.max() < 2**16 else group


def _event_columns(events: Events) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Steps, times (epoch seconds, NaN for none), values and orders per point of TensorBoard events."""
    counts = np.frombuffer(events.counts, dtype=np.int64)
    return (
        np.repeat(np.frombuffer(events.steps, dtype=np.int64), counts),
        np.repeat(wall_seconds(np.frombuffer(events.walls, dtype=np.float64)), counts),
        np.frombuffer(events.values, dtype=np.float64).copy(),
        np.repeat(np.frombuffer(events.orders, dtype=np.int64), counts),
    )


def wall_seconds(walls: np.ndarray) -> np.ndarray:
    """Wall times as the seconds that ``(utc_from_wall(w) - EPOCH).total_seconds()`` gives, NaN
    for None (NaN, infinite, outside years 1-9999), without a datetime per point.

    timedelta(seconds=w) keeps w's whole seconds exactly and rounds its fraction times 1e6 to the
    microsecond, half to even; total_seconds divides the microseconds by 1e6."""
    out = np.full(len(walls), np.nan)
    with np.errstate(invalid="ignore"):
        near = np.abs(walls) < WALL_LIMIT  # finite, and whole seconds that fit in int64 microseconds
    whole = np.trunc(walls[near])
    micros = whole.astype(np.int64) * 1_000_000 + np.rint((walls[near] - whole) * 1e6).astype(np.int64)
    valid = (micros >= MIN_MICROS) & (micros < END_MICROS)
    seconds = micros / 1e6
    # beyond 2**53 microseconds a double cannot hold them exactly: divide as Python does
    for i in np.flatnonzero(np.abs(micros) >= 2**53):
        seconds[i] = int(micros[i]) / 10**6
    out[np.flatnonzero(near)[valid]] = seconds[valid]
    return out


def _point_columns(points: list[Point]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The same columns of Point tuples (the text logs)."""
    times: list[float] = []
    last_ts: datetime | None = None
    second = math.nan
    for point in points:
        if point.ts is not last_ts:  # the points of one line share their time
            last_ts = point.ts
            second = math.nan if last_ts is None else (last_ts - EPOCH).total_seconds()
        times.append(second)
    return (
        np.fromiter((p.step for p in points), dtype=np.int64, count=len(points)),
        np.array(times, dtype=np.float64),
        np.fromiter((p.value for p in points), dtype=np.float64, count=len(points)),
        np.fromiter((p.order for p in points), dtype=np.int64, count=len(points)),
    )


def _runs_columns(runs: list[_JobRead]) -> dict[str, list[Any]]:
    return {
        "job_id": [r.job_id for r in runs],
        "status": [r.info.status for r in runs],
        "config": [json.dumps(r.info.config, default=str) if r.info.config is not None else None for r in runs],
        "model_name": [r.info.model_name for r in runs],
        "started_at": [r.info.started_at for r in runs],
        "ended_at": [r.info.ended_at for r in runs],
        "current_step": [r.info.current_step for r in runs],
        "total_steps": [r.info.total_steps for r in runs],
        "source_dir": [str(r.job.path) for r in runs],
        "start_unknown": [r.info.start_unknown for r in runs],
        "updated_at": [r.info.updated_at for r in runs],
        "status_final": [r.info.status_final for r in runs],
        "times_final": [r.info.times_final for r in runs],
    }
