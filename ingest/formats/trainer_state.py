"""Hugging Face ``trainer_state.json`` files (a job folder's and its checkpoints'), merged in one transaction."""

from __future__ import annotations

from pathlib import Path

import duckdb

from runlytics.ingest import ledger, progress, trainer_state
from runlytics.ingest.discover import JobFolder
from runlytics.warehouse import db, results

from .base import STORED_DIRS, Candidate, Context, Rejection, changed_files, not_ingested, stored_owner

KIND = "trainer_state"

# Every value of the merged trainer steps of the batch's jobs under its own name (the columns and
# the numeric keys of `metrics`), source 'trainer_state', into metric_values (revision 0012 copies
# the rows stored before it the same way).
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
    # metric_values has no key (revision 0017): a stored (job, name, step) of another source gives way
    """
    DELETE FROM metric_values USING batch_state_metrics b
    WHERE metric_values.job_id = b.job_id AND metric_values.name = b.name AND metric_values.step = b.step
    """,
    """
    INSERT INTO metric_values (job_id, name, step, ts, value, source)
    SELECT job_id, name, step, NULL, value, 'trainer_state' FROM batch_state_metrics
    """,
]


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
        for c in changed_files(ctx, KIND, [(job, path) for job in jobs for path in self.files(job)]):
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
            _merge(ctx, states, [c for _, c in parsed])
            ctx.summary.ingested += len(states)
            ctx.summary.job_ids.update(s.job_id for s in states)
            ctx.summary.rows += sum(len(s.rows) for s in states)
            ctx.summary.warnings += sum(len(s.warnings) for s in states)
        for r in rejected:
            not_ingested(ctx, r, KIND)


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
    except duckdb.Error:
        pass
    kept = []
    for state, c in parsed:
        try:
            trainer_state.stage(ctx.con, [state], [str(c.job.path)])
        except duckdb.Error as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            rejected.append(Rejection(c, "failed", f"could not be stored: {reason}"))
            continue
        kept.append((state, c))
    if kept:
        trainer_state.stage(ctx.con, [s for s, _ in kept], [str(c.job.path) for _, c in kept])
    return kept


def _merge(ctx: Context, states: list[trainer_state.TrainerState], read: list[Candidate]) -> None:
    con = ctx.con
    checkpoints = [
        (s.job_id, step, str(s.path.parent))
        for s, c in zip(states, read, strict=True)
        if (step := trainer_state.checkpoint_step(s, c.job.path)) is not None
    ]
    with db.atomic(con):  # staged by ``_staged``
        trainer_state.merge(con)
        for statement in METRIC_VALUES:
            con.execute(statement)
        results.enqueue(con, {s.job_id for s in states})
        if checkpoints:
            job_ids, steps, paths = (list(column) for column in zip(*checkpoints, strict=True))
            con.execute(trainer_state.CHECKPOINTS, {"job_id": job_ids, "step": steps, "path": paths})
        for s, c in zip(states, read, strict=True):
            ledger.record(con, str(s.path), KIND, c.stat, "ingested", None, s.job_id, len(s.rows), s.warnings)
