"""Hugging Face ``trainer_state.json`` files (a job folder's and its checkpoints'), merged in one transaction."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from runlytics.ingest import ledger, progress, sql, trainer_state
from runlytics.ingest.discover import CHECKPOINT_DIR, TOOL_KINDS, JobFolder
from runlytics.warehouse import db, results

from .base import (
    STORED_DIRS,
    Candidate,
    Context,
    Rejection,
    changed_files,
    not_ingested,
    read_again,
    stored_owner,
)

KIND = "trainer_state"

# Every value of the merged trainer steps of the batch's jobs under its own name (the columns and
# the numeric keys of `metrics`), source 'trainer_state', into metric_values (revision 0012 copies
# the rows stored before it the same way): the batch's jobs' trainer-state points are replaced,
# another source's points are never touched.
METRIC_VALUES = [
    """
    DELETE FROM metric_values
    WHERE source = 'trainer_state' AND job_id IN (SELECT DISTINCT job_id FROM batch_trainer_steps)
    """,
    """
    CREATE OR REPLACE TEMP TABLE batch_state_metrics AS
    SELECT job_id, name, step, value
    FROM (
        SELECT job_id, step, 'loss' AS name, loss AS value FROM trainer_steps WHERE loss IS NOT NULL
        UNION ALL SELECT job_id, step, 'eval_loss', eval_loss FROM trainer_steps WHERE eval_loss IS NOT NULL
        UNION ALL SELECT job_id, step, 'learning_rate', learning_rate FROM trainer_steps WHERE learning_rate IS NOT NULL
        UNION ALL SELECT job_id, step, 'grad_norm', grad_norm FROM trainer_steps WHERE grad_norm IS NOT NULL
        UNION ALL SELECT job_id, step, 'epoch', epoch FROM trainer_steps WHERE epoch IS NOT NULL
        UNION ALL
        SELECT job_id, step, unnest(map_keys(m)), unnest(map_values(m))
        FROM (SELECT job_id, step, CAST(metrics AS MAP(VARCHAR, DOUBLE)) AS m FROM trainer_steps
              WHERE metrics IS NOT NULL)
    )
    WHERE job_id IN (SELECT DISTINCT job_id FROM batch_trainer_steps)
    """,
    # metric_values has no key (revision 0017): one point per (job, name, step). A tool log's point
    # there stays (one ingest of the final files reads tool logs after trainer states, so theirs win;
    # and it carries the time step_facts' rows take): only the (job, name, step) no other source
    # holds get the trainer state's point. Deleting the log's point lost it for good (the log is
    # read on from its offset) and, with it, the time of its step row (docs/decisions.md).
    # ``m.job_id IN (...)`` follows from ``m.job_id = b.job_id`` (b holds only the batch's jobs) but is
    # no dead weight: DuckDB filters metric_values' scan by it (its zone maps: rows are stored in job
    # order) before the anti-join, which otherwise reads every stored point (DuckDB 2.0.1, 20M points
    # stored in job order, a job's 3,000: 0.005 s with it, 0.74 s without).
    """
    INSERT INTO metric_values (job_id, name, step, ts, value, source)
    SELECT b.job_id, b.name, b.step, NULL, b.value, 'trainer_state'
    FROM batch_state_metrics b
    WHERE NOT EXISTS (
        SELECT 1 FROM metric_values m
        WHERE m.job_id = b.job_id AND m.name = b.name AND m.step = b.step
          AND m.job_id IN (SELECT DISTINCT job_id FROM batch_trainer_steps)
    )
    """,
]

# The job each trainer state was last ingested for (the ledger's record).
OWNERS = """
SELECT path, job_id FROM ingest_files WHERE kind = 'trainer_state' AND outcome = 'ingested' AND job_id IS NOT NULL
"""
# The former jobs (of states now read for another job) that still hold an ingested trainer state
# (the moved states are recorded for their new job in the same transaction, before this is asked).
FORMER_KEPT = """
SELECT DISTINCT job_id FROM ingest_files
WHERE kind = 'trainer_state' AND outcome = 'ingested' AND job_id IN (SELECT unnest($job_ids))
"""
# A former job left without trainer states loses what they gave it: its trainer rows, points and
# run summary, and its job row when the trainer states made it (a progress.json's row stays).
DELETE_FORMER = tuple(
    f"DELETE FROM {db.quote_identifier(table)} WHERE job_id IN (SELECT unnest($job_ids)){also}"
    for table, also in (
        ("trainer_steps", ""),
        ("trainer_runs", ""),
        ("metric_values", " AND source = 'trainer_state'"),
        ("jobs", " AND source_file LIKE '%trainer_state.json'"),
    )
)
# a removed job's other rows: the checkpoints its folder gave it, its insights (job_results follows
# the refresh of the queued jobs, which deletes each one's rows first)
DELETE_FORMER_ROWS = tuple(
    f"DELETE FROM {db.quote_identifier(table)} WHERE job_id IN (SELECT unnest($job_ids)) "
    "AND job_id NOT IN (SELECT job_id FROM jobs)"
    for table in ("checkpoints", "insight_results", "insight_jobs")
)
# The batch's jobs that have a row before the merge (KNOWN_JOBS), and the tool logs to read again
# from their start (READ_AGAIN) for each job whose row the merge made: logs read for the job while
# its trainer states were not readable yet (caught mid-write) gave their start to no row, and a
# later read from their offset gives a later one; read whole in this run (tool logs come after
# trainer states), they give the start a run reading the final files at once gives the new row.
KNOWN_JOBS = "SELECT job_id FROM jobs WHERE job_id IN (SELECT unnest($job_ids))"
NEW_STATE_JOBS = """
SELECT job_id FROM jobs
WHERE job_id IN (SELECT unnest($job_ids)) AND source_file LIKE '%trainer_state.json'
"""
READ_AGAIN = """
UPDATE ingest_files SET fingerprint = NULL, read_offset = NULL, read_digest = NULL, rows = 0
WHERE list_contains($kinds, kind) AND job_id IN (SELECT unnest($job_ids))
"""


class TrainerStateFormat:
    """The trainer states of every job folder: its own and its checkpoint folders'."""

    kind = KIND

    def files(self, job: JobFolder) -> list[Path]:
        return list(job.trainer_states)

    def prefetch(self, jobs: list[JobFolder], max_file_bytes: int) -> None:
        return None

    def ingest(self, ctx: Context, jobs: list[JobFolder]) -> None:
        # the job a folder's trainer states belong to: its progress.json's job_id, else the folder name
        progress_job_ids = ledger.progress_job_ids(ctx.con)
        parsed: list[tuple[trainer_state.TrainerState, Candidate]] = []
        rejected: list[Rejection] = []
        files = [(job, path) for job in jobs for path in self.files(job)]
        candidates = changed_files(ctx, KIND, files)
        owners = dict(ctx.con.execute(OWNERS).fetchall())
        moved = _moved(ctx, files, candidates, progress_job_ids, owners)
        for c in candidates:
            if c.job.path in ctx.conflicts:  # its progress.json claims another folder's job
                rejected.append(Rejection(c, "failed", ctx.conflicts[c.job.path], retry=True))
                continue
            try:
                data = c.path.read_bytes()
            except OSError as error:  # permission denied, vanished since: `failed` (to_retry), as progress.json
                rejected.append(Rejection(c, "failed", f"cannot read: {error}", retry=True))
                continue
            if not ledger.unchanged_since(c.path, c.stat):
                rejected.append(Rejection(c, "pending", "changed while being read"))
                continue
            job_id = progress_job_ids.get(str(c.job.progress), c.job.path.name)
            try:
                parsed.append((trainer_state.parse(c.path, job_id, data), c))
            except trainer_state.NotATrainerState as error:
                outcome = progress.diagnose(data)[0] if str(error).startswith("invalid JSON") else "failed"
                rejected.append(Rejection(c, outcome, str(error)))
        parsed = _claims(ctx, parsed, rejected, progress_job_ids)
        parsed = _staged(ctx, parsed, rejected)
        states = [s for s, _ in parsed]
        if states:
            _merge(ctx, states, [c for _, c in parsed], moved)
            ctx.summary.ingested += len(states)
            ctx.summary.job_ids.update(s.job_id for s in states)
            ctx.summary.rows += sum(len(s.rows) for s in states)
            ctx.summary.warnings += sum(len(s.warnings) for s in states)
        for r in rejected:
            not_ingested(ctx, r, KIND)
        _retire_vanished(ctx, _vanished(ctx, jobs, files, progress_job_ids, owners))


def _moved(
    ctx: Context,
    files: list[tuple[JobFolder, Path]],
    candidates: list[Candidate],
    progress_job_ids: dict[str, str],
    owners: dict[str, str],
) -> dict[str, str]:
    """path -> former job of each state ingested before for another job than its folder's now (a
    folder read before its progress.json existed, or while it was torn, went by its name; a
    progress.json whose job_id changed). Such a state is read again, changed or not, for the job
    it belongs to now (added to ``candidates`` in path order); ``_merge`` retires what it gave
    its former job: the warehouse then equals one that read the final files at once."""
    if not owners:
        return {}
    seen = {c.path for c in candidates}
    moved: dict[str, str] = {}
    added = False
    for job, path in files:
        former = owners.get(str(path))
        if former is None or job.path in ctx.conflicts:
            continue
        # only a progress.json on record names the folder's job now: a folder whose progress.json
        # was deleted (or is not read yet) keeps the ids it once held (docs/ingest.md); and a
        # state read as a job of its own folder's name, now a copy in a folder that became a job
        # (its own trainer state or checkpoints came later), belongs to that folder's job
        now = progress_job_ids.get(str(job.progress)) if job.progress is not None else None
        if now is None and path.parent != job.path and former == path.parent.name:
            now = job.path.name
        if now is None or former == now:
            continue
        moved[str(path)] = former
        if path in seen:
            continue
        if (candidate := read_again(ctx, KIND, job, path)) is not None:
            candidates.append(candidate)
            added = True
    if added:  # discovery's order (the claims and the later-file rule read it)
        order = {path: i for i, (_, path) in enumerate(files)}
        candidates.sort(key=lambda c: order[c.path])
    return moved


def _claims(
    ctx: Context,
    parsed: list[tuple[trainer_state.TrainerState, Candidate]],
    rejected: list[Rejection],
    progress_job_ids: dict[str, str],
) -> list[tuple[trainer_state.TrainerState, Candidate]]:
    """The states whose folder holds their job id; the others fail as conflicts (read again every run).

    One folder per job id, as for progress.json (formats/progress.py, ``_drop_conflicts``): the id
    belongs to the folder the warehouse has for it while that folder exists (a progress.json's
    folder among them: progress files are merged first), else to the first folder in path order
    whose states the run could read. A folder named like another job's folder would otherwise
    add its steps to that job, or lose its own to the state with the higher global_step.
    """
    if not parsed:
        return parsed
    job_ids = sorted({s.job_id for s, _ in parsed})
    stored = dict(ctx.con.execute(STORED_DIRS, {"job_ids": job_ids}).fetchall())
    holders: dict[str, str] = {}
    kept: list[tuple[trainer_state.TrainerState, Candidate]] = []
    for state, c in parsed:  # in path order: discovery's order of the folders
        folder = str(c.job.path)
        holder = holders.get(state.job_id)
        if holder is None:
            holder = holders[state.job_id] = stored_owner(stored.get(state.job_id)) or folder
        if holder == folder:
            kept.append((state, c))
            continue
        named = "" if str(c.job.progress) in progress_job_ids else " (the folder's name)"
        reason = (f"job id {state.job_id!r}{named} belongs to the folder {holder}: a second folder can't claim it "
                  "(rename one of them, or give this one a progress.json with another job_id)")  # fmt: skip
        ctx.conflicts.setdefault(c.job.path, reason)  # its checkpoint folders and tool logs are not read either
        rejected.append(Rejection(c, "failed", reason, retry=True, conflict=True))
    return kept


def _staged(
    ctx: Context, parsed: list[tuple[trainer_state.TrainerState, Candidate]], rejected: list[Rejection]
) -> list[tuple[trainer_state.TrainerState, Candidate]]:
    """The states staged into the batch tables. A state the parser let through but DuckDB refuses
    (a value no check foresaw) fails alone, with DuckDB's reason, instead of ending the run: the
    batch is staged again without it (staging writes temporary tables only)."""
    if not parsed:
        return parsed
    try:
        trainer_state.stage(ctx.con, [s for s, _ in parsed], [str(c.job.path) for _, c in parsed])
        return parsed
    except sql.READ_ERRORS:
        pass
    kept = []
    for state, c in parsed:
        try:
            trainer_state.stage(ctx.con, [state], [str(c.job.path)])
        except sql.READ_ERRORS as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            rejected.append(Rejection(c, "failed", f"could not be stored: {reason}"))
            continue
        kept.append((state, c))
    if kept:
        trainer_state.stage(ctx.con, [s for s, _ in kept], [str(c.job.path) for _, c in kept])
    return kept


def _checkpoint_rank(path: str, step: int) -> tuple[bool, str]:
    """Which of two folders holding a state of one checkpoint gives its path: the checkpoint-<step>/
    folder first, then the path that sorts last."""
    match = CHECKPOINT_DIR.match(Path(path).name)  # the whole name: tmp-checkpoint-<step>/ is a copy
    return (match is not None and int(match.group(1)) == step, path)


def _merge(
    ctx: Context, states: list[trainer_state.TrainerState], read: list[Candidate], moved: dict[str, str]
) -> None:
    con = ctx.con
    # one path per checkpoint: its checkpoint-<step>/ folder's where a state is in it (the path the
    # folder gives: checkpoint_folders.py), else the copy's (last-checkpoint/) that sorts last
    folders: dict[tuple[str, int], str] = {}
    for s, c in zip(states, read, strict=True):
        if (step := trainer_state.checkpoint_step(s, c.job.path)) is not None:
            folder = str(s.path.parent)
            former = folders.get((s.job_id, step))
            if former is None or _checkpoint_rank(folder, step) > _checkpoint_rank(former, step):
                folders[(s.job_id, step)] = folder
    checkpoints = [(job_id, step, folder) for (job_id, step), folder in folders.items()]
    state_jobs = sorted({s.job_id for s in states})
    with db.atomic(con):  # staged by ``_staged``
        known = {job_id for (job_id,) in con.execute(KNOWN_JOBS, {"job_ids": state_jobs}).fetchall()}
        trainer_state.merge(con)
        made = [j for (j,) in con.execute(NEW_STATE_JOBS, {"job_ids": sorted(set(state_jobs) - known)}).fetchall()]
        if made:
            con.execute(READ_AGAIN, {"kinds": list(TOOL_KINDS), "job_ids": made})
        for statement in METRIC_VALUES:
            con.execute(statement)
        results.enqueue(con, {s.job_id for s in states})
        if checkpoints:
            job_ids, steps, paths = (list(column) for column in zip(*checkpoints, strict=True))
            con.execute(trainer_state.CHECKPOINTS, {"job_id": job_ids, "step": steps, "path": paths})
        notes: dict[str, str] = {}
        for s, c in zip(states, read, strict=True):
            former = moved.get(str(c.path))
            warnings = s.warnings
            if former is not None and former != s.job_id:
                notes[str(c.path)] = former
                warnings = [*warnings, f"read before for job {former}, now job {s.job_id}'s (its folder's "
                            "progress.json appeared or changed its job_id): its rows moved"]  # fmt: skip
            ledger.record(con, str(s.path), KIND, c.stat, "ingested", None, s.job_id, len(s.rows), warnings)
        formers = _retire_former(con, set(notes.values()) - {s.job_id for s in states})
    ctx.summary.job_ids |= formers
    ctx.summary.warnings += len(notes)


def _vanished(
    ctx: Context,
    jobs: list[JobFolder],
    files: list[tuple[JobFolder, Path]],
    progress_job_ids: dict[str, str],
    owners: dict[str, str],
) -> dict[str, tuple[str, str]]:
    """path -> (former job, job now) of each state ingested for another job than its folder's
    progress.json names now, and gone since (a checkpoint rotated away while the progress.json
    was torn or not yet written): ``_moved`` can't read it again for the folder's job, and its
    record would keep the former job (its folder's name, say) a job for good (audit 25)."""
    if not owners:
        return {}
    present = {str(path) for _, path in files}
    folders = {str(job.path): job for job in jobs if job.progress is not None and job.path not in ctx.conflicts}
    gone: dict[str, tuple[str, str]] = {}
    for path, former in owners.items():
        if path in present:
            continue
        parent = Path(path).parent
        job = folders.get(str(parent)) or folders.get(str(parent.parent))  # its own state, a checkpoint's
        now = progress_job_ids.get(str(job.progress)) if job is not None else None
        if now is None or now == former or os.path.lexists(path):
            continue
        gone[path] = (former, now)
    return gone


def _retire_vanished(ctx: Context, gone: dict[str, tuple[str, str]]) -> None:
    """Record each vanished state for its folder's job now (nothing read: its rows went with the
    file) and retire what it gave its former job, as ``_merge`` does for a moved state."""
    if not gone:
        return
    with db.atomic(ctx.con):
        for path, (former, now) in sorted(gone.items()):
            warning = (f"gone since it was read for job {former}; its folder is job {now}'s now (its "
                       f"progress.json): what it gave job {former} is retired")  # fmt: skip
            ledger.record(ctx.con, path, KIND, None, "ingested", None, now, 0, [warning])
        formers = _retire_former(ctx.con, {former for former, _ in gone.values()})
    ctx.summary.job_ids |= formers
    ctx.summary.warnings += len(gone)


def _retire_former(con: duckdb.DuckDBPyConnection, formers: set[str]) -> set[str]:
    """In the batch's transaction: the former jobs of the moved states that keep no ingested trainer
    state lose the rows trainer states gave them (a former job's row made by trainer states goes,
    with its checkpoints and insights); each former job is owed a refresh."""
    if not formers:
        return formers
    params = {"job_ids": sorted(formers)}
    kept = {job_id for (job_id,) in con.execute(FORMER_KEPT, params).fetchall()}
    emptied = {"job_ids": sorted(formers - kept)}
    if emptied["job_ids"]:
        for statement in (*DELETE_FORMER, *DELETE_FORMER_ROWS):
            con.execute(statement, emptied)
    results.enqueue(con, formers)
    return formers
