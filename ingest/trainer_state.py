"""Reading Hugging Face Trainer ``trainer_state.json`` files (inputs.md section 3).

These files are small (the history of one run), so Python's ``json`` reads them; the rows are
then merged in SQL like the progress facts. Every checkpoint's copy holds the history up to
its step: a step is stored once, from the state with the highest ``global_step``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from . import json_text, ledger
from .discover import MAX_STEP, TRAINER_STATE

# log_history keys with a column of their own; every other numeric key goes to `metrics`.
COLUMNS = ("loss", "eval_loss", "learning_rate", "grad_norm", "epoch")
SUMMARY_KEYS = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss", "total_flos")
CHECKPOINT_NAME = re.compile(r"checkpoint-([0-9]+)$")  # ASCII digits only, as discover.CHECKPOINT_DIR
# The largest step or count kept: progress.json's bound (ingest/progress.py, 10^18), inside BIGINT.
MAX_WHOLE = MAX_STEP  # one bound (ingest/discover.py)
# A JSON escape of a UTF-16 surrogate (``\udcff``): Python's json reads a lone one into a str that
# can't be encoded as UTF-8 (nor stored); a file without such an escape holds none.
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


class NotATrainerState(ValueError):
    """The file is not a trainer state; the message says why."""


@dataclass
class TrainerState:
    path: Path
    job_id: str
    global_step: int | None
    max_steps: int | None
    save_steps: int | None
    logging_steps: int | None
    train_batch_size: int | None
    best_model_checkpoint: str | None
    best_metric: float | None
    summary: dict[str, float] | None
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def completed(self) -> bool:
        reached = self.global_step is not None and self.max_steps is not None and self.global_step >= self.max_steps
        return self.summary is not None or reached


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return json_text.as_float(value)  # an integer of 309+ digits: +-inf, as 1e400 is


def _whole(value: Any) -> int | None:
    """A whole number from 0 to ``MAX_WHOLE`` (an int compared as an int: 2^63-1 is no float)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if 0 <= value <= MAX_WHOLE else None
    number = _number(value)
    if number is None or not math.isfinite(number) or not 0 <= number <= MAX_WHOLE or number != int(number):
        return None
    return int(number)


def _whole_problem(value: Any) -> str:
    """Why ``_whole`` refused a value that is not null, for a warning."""
    number = _number(value)
    shown = _shown(value)
    if number is not None and math.isfinite(number) and number >= 0 and number == int(number):
        return f"{shown} is out of range (0 to 10^18)"
    return f"{shown} is not a whole number >= 0"


def _shown(value: Any) -> str:
    """A value as a warning quotes it: its first 40 characters (an int of any length is not formatted
    whole: Python refuses to format more than 4,300 digits)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**40:
        return f"{'-' if value < 0 else ''}1e{len(str(abs(value))) - 1 if abs(value) < 10**4000 else '4000+'}"
    return repr(str(value)[:40])


def _top_whole(doc: dict[str, Any], key: str, warnings: list[str]) -> int | None:
    """A top-level count of the state (a whole number from 0 to 10^18), with a warning when it is
    something else (inputs.md: a field that can't be read is dropped with a warning; null is the
    trainer's own "not set" and passes silently, as in log_history entries)."""
    value = doc.get(key)
    whole = _whole(value)
    if whole is None and value is not None:
        warnings.append(f"{key} {_whole_problem(value)}, ignored")
    return whole


def parse(path: Path, job_id: str, data: bytes) -> TrainerState:
    """A trainer state from the file's bytes; raises NotATrainerState with the reason."""
    # a UTF-8 byte order mark is no JSON, but progress.json and spool files are read with one
    body = data.removeprefix(json_text.UTF8_BOM)
    try:
        text, not_utf8 = body.decode("utf-8"), None  # as fast as the decode with errors="replace"
    except UnicodeDecodeError:  # read with U+FFFD in place of each such byte, and said
        text, not_utf8 = body.decode("utf-8", errors="replace"), json_text.not_utf8(body)
    if text.startswith("version https://git-lfs"):
        raise NotATrainerState("not JSON: a Git LFS pointer was committed in place of the file")
    try:
        doc = json_text.loads(text)  # a 4,300+ digit integer: a float, as DuckDB reads it
    except json.JSONDecodeError as error:
        raise NotATrainerState(f"invalid JSON at line {error.lineno} column {error.colno}: {error.msg}") from None
    except RecursionError:  # as progress.json's (progress.diagnose)
        raise NotATrainerState("invalid JSON: nested too deeply") from None
    try:
        state = _read(path, job_id, doc, SURROGATE_ESCAPE.search(text) is not None)
    except RecursionError:  # a value nested deep enough that quoting it in a warning recursed too far
        raise NotATrainerState("invalid JSON: nested too deeply") from None
    if not_utf8 is not None:  # the file's first warning, as progress.json's
        state.warnings.insert(0, not_utf8)
    return state


def _read(path: Path, job_id: str, doc: Any, surrogates: bool) -> TrainerState:
    if not isinstance(doc, dict):
        raise NotATrainerState(f"top-level JSON value is {type(doc).__name__}, not an object")
    history = doc.get("log_history")
    if not isinstance(history, list):
        raise NotATrainerState("no log_history list: not a trainer_state.json")
    warnings: list[str] = []
    best = doc.get("best_model_checkpoint")
    if best is not None and not (isinstance(best, str) and best):
        warnings.append(f"best_model_checkpoint {_shown(best)} is not a checkpoint path, ignored")
    elif surrogates and best is not None and json_text.LONE_SURROGATE.search(best):
        best = json_text.without_surrogates(best)
        warnings.append(f"best_model_checkpoint {best[:40]!r}: {LONE_WARNING}")
    state = TrainerState(
        path=path,
        job_id=job_id,
        global_step=_top_whole(doc, "global_step", warnings),
        # 0 is TrainerState's own default, "not set" (a run whose max_steps was 0 is none):
        # global_step >= 0 made any such state a completed run
        max_steps=_top_whole(doc, "max_steps", warnings) or None,
        save_steps=_top_whole(doc, "save_steps", warnings),
        logging_steps=_top_whole(doc, "logging_steps", warnings),
        train_batch_size=_top_whole(doc, "train_batch_size", warnings),
        best_model_checkpoint=best if isinstance(best, str) and best else None,
        best_metric=_number(doc.get("best_metric")),
        summary=None,
        warnings=warnings,
    )
    if doc.get("best_metric") is not None and state.best_metric is None:
        warnings.append(f"best_metric {_shown(doc['best_metric'])} is not a number, ignored")
    for i, entry in enumerate(history):
        _read_entry(state, i, entry, surrogates)
    if surrogates:  # warnings quote values: stored as text, they must be UTF-8 too
        state.warnings[:] = [json_text.without_surrogates(w) for w in state.warnings]
    return state


LONE_WARNING = "held an escaped lone UTF-16 surrogate (not a character), replaced by U+FFFD"


def _read_entry(state: TrainerState, i: int, entry: Any, surrogates: bool = False) -> None:
    place = f"log_history[{i}]"
    if not isinstance(entry, dict):
        state.warnings.append(f"{place}: not an object, skipped")
        return
    step = _whole(entry.get("step"))
    if step is None:
        if entry.get("step") is None:
            state.warnings.append(f"{place}: no valid step, skipped")
        else:
            state.warnings.append(f"{place}: step {_whole_problem(entry['step'])}, skipped")
        return
    if any(key in entry for key in ("train_runtime", "train_samples_per_second")):
        state.summary = {k: v for k in SUMMARY_KEYS if (v := _number(entry.get(k))) is not None}
        for key in SUMMARY_KEYS:  # said as a row's field is (before session 26: dropped silently)
            if entry.get(key) is not None and key not in state.summary:
                state.warnings.append(f"{place} (step {step}): {key} {_shown(entry[key])} is not a number, dropped")
    row = state.rows.setdefault(step, {"metrics": {}})
    for key, value in entry.items():
        if key == "step" or key in SUMMARY_KEYS:
            continue
        number = _number(value)
        if number is None:
            if value is not None:
                state.warnings.append(f"{place} (step {step}): {key} {_shown(value)} is not a number, dropped")
            continue
        if surrogates and json_text.LONE_SURROGATE.search(key):
            key = json_text.without_surrogates(key)
            state.warnings.append(f"{place} (step {step}): key {key[:40]!r} {LONE_WARNING}")
        if key in COLUMNS:
            row[key] = number
        else:
            row["metrics"][key] = number


def checkpoint_step(state: TrainerState, job_folder: Path) -> int | None:
    """The checkpoint a state stands for: a state in a subfolder is the checkpoint at its step."""
    if state.path.parent == job_folder:
        return None
    match = CHECKPOINT_NAME.search(state.path.parent.name)
    step = int(match.group(1)) if match else None
    return step if step is not None and step <= MAX_WHOLE else state.global_step


def rank_step(state: TrainerState, job_folder: Path) -> int | None:
    """Where a state ranks among its job's copies (the highest wins a step): its ``global_step``,
    else the step of the checkpoint it stands for (its ``checkpoint-<N>`` folder's N), else lowest."""
    return state.global_step if state.global_step is not None else checkpoint_step(state, job_folder)


def own_state(job_folder: Path) -> str:
    """The path of the job folder's own ``trainer_state.json`` (the final state): of two states at one
    ``global_step`` it wins over a copy in a subfolder (``checkpoint_step``'s checkpoint, whatever the
    subfolder's name: ``checkpoint-20/``, ``last-checkpoint/``, ``zz/``), then the path that sorts last."""
    return str(job_folder / TRAINER_STATE)


def best_checkpoint_name(path: str | None) -> str | None:
    """``checkpoint-2800`` from ``./results/checkpoint-2800`` (the trainer records a path)."""
    if not path:
        return None
    return Path(path.rstrip("/\\").replace("\\", "/")).name or None


STAGE_STEPS = """
CREATE OR REPLACE TEMP TABLE batch_trainer_steps AS
SELECT unnest($job_id) AS job_id, unnest($step) AS step, unnest($loss) AS loss, unnest($eval_loss) AS eval_loss,
       unnest($learning_rate) AS learning_rate, unnest($grad_norm) AS grad_norm, unnest($epoch) AS epoch,
       CAST(unnest($metrics) AS JSON) AS metrics, unnest($state_step) AS state_step,
       unnest($source_file) AS source_file, unnest($own_file) AS own_file, unnest($seq) AS seq
"""

STAGE_RUNS = """
CREATE OR REPLACE TEMP TABLE batch_trainer_runs AS
SELECT unnest($job_id) AS job_id, unnest($global_step) AS global_step, unnest($max_steps) AS max_steps,
       unnest($save_steps) AS save_steps, unnest($logging_steps) AS logging_steps,
       unnest($train_batch_size) AS train_batch_size, unnest($best_model_checkpoint) AS best_model_checkpoint,
       unnest($best_metric) AS best_metric, unnest($completed) AS completed,
       unnest($train_runtime) AS train_runtime, unnest($train_samples_per_second) AS train_samples_per_second,
       unnest($train_loss) AS train_loss, unnest($source_file) AS source_file, unnest($source_dir) AS source_dir,
       unnest($own_file) AS own_file, unnest($seq) AS seq
"""

# One row per (job, step) from the state with the highest global_step; of two at one global_step (the
# final trainer_state.json, which also holds the closing eval and summary at its step, and its
# checkpoint-<step>/ copy), the job folder's own state (own_file: a state in a subfolder is a
# checkpoint's copy, checkpoint_step, whatever the subfolder's name), then the path that sorts last,
# as the job's trainer_runs row (MERGE_RUNS): in the batch, and across runs, where a stored row of
# the same rank gives way unless the job's trainer_runs row (the state read with the highest
# global_step, and of those the one that ranks first so) stands at that rank and ranks before the
# new one: then the stored row is that state's, whatever the order the runs read them in. Unless
# the state that gave the stored rank no longer holds it (batch_trainer_outranked, from
# STORED_STATES: the job's trainer_runs file read again with a lower global_step, a new training
# of fewer steps into the same folder; or gone, a run resumed from an earlier checkpoint after
# the later ones were removed): the stored rows then give way to the batch's, as inputs.md
# has it for steps logged again without timestamps (the later ingest wins). trainer_runs keeps
# its rank (MERGE_RUNS): the run summary, status and step count of the furthest state read (an
# evaluation's save_state() rewrites the final state at global_step 0; the Trainer's cleanup at
# its end removes its newest checkpoint, and a jobs root moved makes every stored path gone).
# The batch's jobs' stored states, and whether the batch read that file again below its rank
STORED_STATES = """
SELECT r.job_id, r.source_file,
       bool_or(b.source_file = r.source_file AND r.global_step IS NOT NULL
               AND (b.global_step IS NULL OR b.global_step < r.global_step)) AS rewritten
FROM trainer_runs r JOIN batch_trainer_runs b ON b.job_id = r.job_id
GROUP BY r.job_id, r.source_file
"""
STAGE_OUTRANKED = (
    "CREATE OR REPLACE TEMP TABLE batch_trainer_outranked AS SELECT unnest(CAST($job_id AS VARCHAR[])) AS job_id"
)
MERGE_STEPS = """
CREATE OR REPLACE TEMP TABLE batch_trainer_winners AS
SELECT * FROM batch_trainer_steps
QUALIFY row_number() OVER (PARTITION BY job_id, step ORDER BY state_step DESC NULLS LAST,
                                                               source_file = own_file DESC, source_file DESC,
                                                               seq DESC) = 1;

DELETE FROM trainer_steps USING batch_trainer_winners w
WHERE trainer_steps.job_id = w.job_id AND trainer_steps.step = w.step
  AND (trainer_steps.state_step IS NULL OR w.state_step IS NULL OR w.state_step > trainer_steps.state_step
       OR w.job_id IN (SELECT job_id FROM batch_trainer_outranked)
       OR (w.state_step = trainer_steps.state_step
           AND NOT EXISTS (SELECT 1 FROM trainer_runs r
                           WHERE r.job_id = w.job_id AND r.global_step = w.state_step
                             AND ((r.source_file = w.own_file) > (w.source_file = w.own_file)
                                  OR ((r.source_file = w.own_file) = (w.source_file = w.own_file)
                                      AND r.source_file > w.source_file)))));

INSERT INTO trainer_steps (job_id, step, loss, eval_loss, learning_rate, grad_norm, epoch, metrics, state_step)
SELECT w.job_id, w.step, w.loss, w.eval_loss, w.learning_rate, w.grad_norm, w.epoch, w.metrics, w.state_step
FROM batch_trainer_winners w
WHERE NOT EXISTS (SELECT 1 FROM trainer_steps t WHERE t.job_id = w.job_id AND t.step = w.step);
"""

# The run summary follows the state that ranks first: the highest global_step (a state without one
# last); of two at one global_step (the final trainer_state.json and its checkpoint-<step>/ copy),
# the job folder's own trainer_state.json (own_file) over a copy in any subfolder, then the path that
# sorts last; in the batch and across runs alike, whatever the order they read the states in. Its
# completed flag and summary figures are that state's (a run continued with a larger max_steps is no
# longer completed by the first run's summary). Each of its settings (max_steps, save_steps,
# logging_steps, train_batch_size) is that state's, else, in the batch, the next state's in that
# order that has one (an old trainer writes none), and across runs the stored run's: a setting that
# only a state ranking between the two held is then the stored one's (the stored row keeps the
# setting, not which state gave it). Before session 22 a later run's older state replaced the
# settings, and `completed` once seen stayed.
MERGE_RUNS = """
CREATE OR REPLACE TEMP TABLE batch_trainer_run_winners AS
SELECT * EXCLUDE (max_steps, save_steps, logging_steps, train_batch_size),
       first_value(max_steps IGNORE NULLS) OVER ranked AS max_steps,
       first_value(save_steps IGNORE NULLS) OVER ranked AS save_steps,
       first_value(logging_steps IGNORE NULLS) OVER ranked AS logging_steps,
       first_value(train_batch_size IGNORE NULLS) OVER ranked AS train_batch_size
FROM batch_trainer_runs
WINDOW ranked AS (PARTITION BY job_id ORDER BY global_step DESC NULLS LAST, source_file = own_file DESC,
                                              source_file DESC, seq DESC
                  ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
QUALIFY row_number() OVER (PARTITION BY job_id ORDER BY global_step DESC NULLS LAST, source_file = own_file DESC,
                                                        source_file DESC, seq DESC) = 1;

-- the batch's state against the stored one (new: it ranks first, or nothing is stored)
INSERT OR REPLACE INTO trainer_runs (job_id, global_step, max_steps, save_steps, logging_steps, train_batch_size,
                                     best_model_checkpoint, best_metric, completed, train_runtime,
                                     train_samples_per_second, train_loss, source_file)
WITH ranked AS (
    SELECT w.job_id,
           coalesce(r.job_id IS NULL OR w.global_step > r.global_step
                    OR (r.global_step IS NULL AND w.global_step IS NOT NULL)
                    OR (w.global_step IS NOT DISTINCT FROM r.global_step
                        AND NOT ((r.source_file = w.own_file) > (w.source_file = w.own_file)
                                 OR ((r.source_file = w.own_file) = (w.source_file = w.own_file)
                                     AND r.source_file > w.source_file))), false) AS new
    FROM batch_trainer_run_winners w LEFT JOIN trainer_runs r ON r.job_id = w.job_id
)
SELECT w.job_id,
       CASE WHEN k.new THEN w.global_step ELSE r.global_step END,
       CASE WHEN k.new THEN coalesce(w.max_steps, r.max_steps) ELSE coalesce(r.max_steps, w.max_steps) END,
       CASE WHEN k.new THEN coalesce(w.save_steps, r.save_steps) ELSE coalesce(r.save_steps, w.save_steps) END,
       CASE WHEN k.new THEN coalesce(w.logging_steps, r.logging_steps)
            ELSE coalesce(r.logging_steps, w.logging_steps) END,
       CASE WHEN k.new THEN coalesce(w.train_batch_size, r.train_batch_size)
            ELSE coalesce(r.train_batch_size, w.train_batch_size) END,
       CASE WHEN k.new THEN w.best_model_checkpoint ELSE r.best_model_checkpoint END,
       CASE WHEN k.new THEN w.best_metric ELSE r.best_metric END,
       CASE WHEN k.new THEN w.completed ELSE r.completed END,
       CASE WHEN k.new THEN w.train_runtime ELSE r.train_runtime END,
       CASE WHEN k.new THEN w.train_samples_per_second ELSE r.train_samples_per_second END,
       CASE WHEN k.new THEN w.train_loss ELSE r.train_loss END,
       CASE WHEN k.new THEN w.source_file ELSE r.source_file END
FROM batch_trainer_run_winners w
JOIN ranked k ON k.job_id = w.job_id
LEFT JOIN trainer_runs r ON r.job_id = w.job_id;

-- A job known only from trainer states gets its job row from them; a progress.json's row wins.
-- Its batch_size stays NULL: jobs.batch_size is the config's samples per iteration (inputs.md),
-- and the trainer's train_batch_size is a per-device batch without gradient accumulation
-- (trainer_runs keeps it).
-- A trainer state carries no time: the start its folder's tool logs gave the row (formats/tool_log.py)
-- stays when the row is made again, as a run reading the final files at once has it. The row its
-- folder's tool logs made before the folder held a trainer state (a run folder of the same id:
-- source_file is the folder) gives way the same way: one read of the final files makes the
-- trainer-state row, which takes only the start from the logs.
CREATE OR REPLACE TEMP TABLE batch_trainer_job_starts AS
SELECT j.job_id, j.started_at FROM jobs j JOIN batch_trainer_run_winners w ON w.job_id = j.job_id
WHERE (j.source_file LIKE '%trainer_state.json' OR (j.source_file = j.source_dir AND j.source_dir = w.source_dir))
  AND j.started_at IS NOT NULL;

DELETE FROM jobs USING batch_trainer_run_winners w
WHERE jobs.job_id = w.job_id
  AND (jobs.source_file LIKE '%trainer_state.json'
       OR (jobs.source_file = jobs.source_dir AND jobs.source_dir = w.source_dir));

INSERT INTO jobs (job_id, status, config, batch_size, save_steps, current_step, total_steps, source_dir,
                  source_file, started_at, ingested_at)
SELECT r.job_id, CASE WHEN r.completed THEN 'completed' ELSE 'unknown' END, NULL, NULL,
       r.save_steps, r.global_step, r.max_steps, w.source_dir, r.source_file, k.started_at, now()::TIMESTAMP
FROM trainer_runs r
JOIN batch_trainer_run_winners w ON w.job_id = r.job_id
LEFT JOIN batch_trainer_job_starts k ON k.job_id = r.job_id
WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.job_id = r.job_id);
"""

# A checkpoint first seen as a bare folder (its trainer_state.json written last, after a run saw
# the folder) is completed by its state: source 'trainer_state', as a run reading both at once has
# it (trainer states are read before folders); a progress.json's 'list' stays. One known without a
# path (a `checkpoints` item naming none) takes the state's folder, as it would have the other way
# round.
# Whether a checkpoint's path is its checkpoint-<step>/ folder (a state's copy elsewhere, as
# last-checkpoint/ or a tmp-checkpoint-<step>/ renamed since, ranks below it)
OWN_FOLDER = "regexp_matches({path}, '/checkpoint-0*' || CAST({step} AS VARCHAR) || '$')"
# A state's checkpoint path replaces another state's that ranks below it (``_checkpoint_rank`` of
# ingest/formats/trainer_state.py, across runs: the path does not depend on the order of reads)
_STORED_OWN = OWN_FOLDER.format(path="checkpoints.path", step="checkpoints.step")
_NEW_OWN = OWN_FOLDER.format(path="excluded.path", step="checkpoints.step")
_OUTRANKS = (
    f"(checkpoints.source = 'trainer_state' AND (({_NEW_OWN} AND NOT {_STORED_OWN}) "
    f"OR ({_NEW_OWN} = {_STORED_OWN} AND excluded.path > checkpoints.path)))"
)
CHECKPOINTS = f"""
INSERT INTO checkpoints (job_id, step, path, saved_at, eval_loss, source)
SELECT DISTINCT unnest($job_id), unnest($step), unnest($path), NULL, NULL, 'trainer_state'
ON CONFLICT (job_id, step) DO UPDATE SET
    source = CASE WHEN checkpoints.source = 'folder' THEN 'trainer_state' ELSE checkpoints.source END,
    path = CASE WHEN checkpoints.path IS NULL OR {_OUTRANKS} THEN excluded.path ELSE checkpoints.path END
WHERE checkpoints.source = 'folder' OR checkpoints.path IS NULL OR {_OUTRANKS}
"""


def stage(con: duckdb.DuckDBPyConnection, states: list[TrainerState], source_dirs: list[str]) -> None:
    """Load parsed states into the batch tables ``batch_trainer_steps`` and ``batch_trainer_runs``."""
    steps: dict[str, list[Any]] = {
        k: [] for k in ("job_id", "step", *COLUMNS, "metrics", "state_step", "source_file", "own_file", "seq")
    }
    for seq, (state, source_dir) in enumerate(zip(states, source_dirs, strict=True)):
        rank = rank_step(state, Path(source_dir))
        own = own_state(Path(source_dir))
        for step, row in state.rows.items():
            steps["job_id"].append(state.job_id)
            steps["step"].append(step)
            for key in COLUMNS:
                steps[key].append(row.get(key))
            steps["metrics"].append(json.dumps(row["metrics"]) if row["metrics"] else None)
            steps["state_step"].append(rank)
            steps["source_file"].append(str(state.path))
            steps["own_file"].append(own)
            steps["seq"].append(seq)
    con.execute(STAGE_STEPS, steps)
    runs = {
        "job_id": [s.job_id for s in states],
        "global_step": [s.global_step for s in states],
        "max_steps": [s.max_steps for s in states],
        "save_steps": [s.save_steps for s in states],
        "logging_steps": [s.logging_steps for s in states],
        "train_batch_size": [s.train_batch_size for s in states],
        "best_model_checkpoint": [best_checkpoint_name(s.best_model_checkpoint) for s in states],
        "best_metric": [s.best_metric for s in states],
        "completed": [s.completed for s in states],
        "train_runtime": [(s.summary or {}).get("train_runtime") for s in states],
        "train_samples_per_second": [(s.summary or {}).get("train_samples_per_second") for s in states],
        "train_loss": [(s.summary or {}).get("train_loss") for s in states],
        "source_file": [str(s.path) for s in states],
        "source_dir": source_dirs,
        "own_file": [own_state(Path(d)) for d in source_dirs],
        "seq": list(range(len(states))),
    }
    con.execute(STAGE_RUNS, runs)


def merge(con: duckdb.DuckDBPyConnection) -> None:
    stored = con.execute(STORED_STATES).fetchall()
    outranked = sorted(job_id for job_id, path, rewritten in stored if rewritten or ledger.is_gone(path))
    con.execute(STAGE_OUTRANKED, {"job_id": outranked})
    con.execute(MERGE_STEPS)
    con.execute(MERGE_RUNS)
