"""Mutation check: each figure's rule, changed on purpose, must make a test fail.

The figures: analytics.md's (FIGURES), each insight kind's of insights.md (INSIGHTS: its trigger,
value, reference, steps and severity) and the GPU views' of docs/views.md (GPU_FIGURES).

Run it with ``make mutations`` (or ``.venv/bin/python tests/mutations.py``); docs/testing.md
says when to add to the list. A script, not a test module: pytest does not collect it (its name
does not start with ``test_``, and tests/conftest.py ignores it by name too).

The repository is copied to a scratch folder once per worker (the files git knows, the built C
reader, and a link to ../shared); the copy comes first on PYTHONPATH, so its tests import its
code, and the working tree is never touched. For each mutation below the script edits the copy
(a view's edit goes to warehouse/sql and to the migration's frozen copy of the same text, which
is what builds the warehouse), runs the few tests named for it, and restores the files. A
mutation the tests do not notice "survives"; one whose text is not found is an error. Exit
status 0 when every mutation is killed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
ANALYTICS_MD = SHARED / "spec" / "analytics.md"
INSIGHTS_MD = SHARED / "spec" / "insights.md"
FROZEN = "migrations/versions/views"
RUN_TIMEOUT = 600  # seconds for one mutation's tests
# schemathesis and anyio load heavy modules at startup; no test listed here needs them
PYTEST = ["-x", "-q", "-p", "no:cacheprovider", "-p", "no:schemathesis", "-p", "no:anyio"]

# Every figure of shared/spec/analytics.md; each must be the figure of one mutation or more.
FIGURES = (
    *(
        f"job.{name}"
        for name in (
            "total_iterations", "total_samples", "average_samples_per_second", "peak_samples_per_second",
            "average_iteration_time", "start_time", "end_time", "total_seconds", "training_seconds",
            "overhead_seconds", "initial_loss", "final_loss", "best_loss", "loss_reduction_percent",
            "average_gpu_utilization", "average_gpu_memory_mb", "peak_gpu_memory_mb", "average_gpu_temp_celsius",
            "peak_gpu_temp_celsius", "total_checkpoints", "checkpoint_frequency_steps", "final_checkpoint",
            "best_checkpoint", "gpu_utilization_score", "throughput_score", "overall_score",
        )
    ),
    *(
        f"summary.{name}"
        for name in (
            "total_jobs", "jobs_by_status", "average_training_duration_seconds", "total_training_time_hours",
            "average_throughput_samples_per_sec", "top_performing_jobs", "resource_trends.average_gpu_utilization",
            "resource_trends.average_peak_memory_mb",
        )
    ),
    *(
        f"compare.{name}"
        for name in (
            "duration_seconds", "throughput", "final_loss", "gpu_utilization", "winner.best_throughput",
            "winner.best_loss", "winner.fastest", "winner.most_efficient",
        )
    ),
)  # fmt: skip

# Every insight kind of shared/spec/insights.md, each field a rule of its own (kind.field): what
# triggers it (its comparisons, windows, medians, grouping), its value and reference, its steps
# (the row kinds alone have them) and its severity; each must be the figure of one mutation or more.
ROW_KINDS = ("nonfinite_loss", "loss_spike", "loss_divergence", "overfitting", "throughput_drop", "stall")
OTHER_KINDS = (
    "slow_vs_peers", "gpu_idle", "gpu_straggler", "gpu_throttled", "low_gpu_utilization", "memory_headroom",
    "work_at_risk", "silent_running",
)  # fmt: skip
INSIGHTS = (
    *(f"{kind}.{field}" for kind in ROW_KINDS
      for field in ("trigger", "value", "reference", "first_step", "last_step", "severity")),
    *(f"{kind}.{field}" for kind in OTHER_KINDS for field in ("trigger", "value", "reference", "severity")),
)  # fmt: skip

# The GPU views' figures of docs/views.md (the idle and throttled shares, energy, GPU hours)
GPU_FIGURES = (
    "job_gpus.idle_share", "job_gpus.idle", "job_gpus.throttled_share", "job_gpus.energy_wh",
    "job_energy.total_energy_wh", "job_energy.energy_per_1000_samples_wh", "job_energy.idle_gpus",
    "job_energy.average_throttled_share", "job_gpu_hours.gpus", "job_gpu_hours.gpu_hours",
    "fleet_gpu_hours.gpu_hours", "fleet_gpu_hours.gpu_hours_jobs",
)  # fmt: skip
EVERY_FIGURE = (*FIGURES, *INSIGHTS, *GPU_FIGURES)


@dataclass(frozen=True)
class Edit:
    path: str  # relative to the repository
    old: str
    new: str
    nth: int = 0  # 0: ``old`` must occur exactly once; else the nth occurrence is replaced

    def apply(self, text: str) -> str:
        count = text.count(self.old)
        if self.nth == 0 and count != 1:
            raise LookupError(f"{self.path}: {self.old!r} occurs {count} times, not once")
        if count < max(self.nth, 1):
            raise LookupError(f"{self.path}: {self.old!r} occurs {count} times, not {self.nth}")
        at = -1
        for _ in range(max(self.nth, 1)):
            at = text.index(self.old, at + 1)
        return text[:at] + self.new + text[at + len(self.old) :]


@dataclass(frozen=True)
class Mutation:
    name: str
    figures: tuple[str, ...]
    edits: tuple[Edit, ...]
    tests: tuple[str, ...]  # pytest node ids: the few tests that must notice


def view(name: str, old: str, new: str, nth: int = 0) -> Edit:
    return Edit(f"warehouse/sql/{name}.sql", old, new, nth)


def fleet(old: str, new: str) -> Edit:
    return Edit("warehouse/fleet.py", old, new)


def m(name: str, figures: str, edits: Edit | tuple[Edit, ...], *tests: str) -> Mutation:
    return Mutation(name, tuple(figures.split()), edits if isinstance(edits, tuple) else (edits,), tests)


A = "tests/test_analytics.py::"
API = "tests/test_api.py::"
S23 = "tests/test_audit_s23.py::"
S24 = "tests/test_audit_s24.py::"
S26 = "tests/test_audit_s26.py::"
S27 = "tests/test_audit_s27.py::"
GPU = "tests/test_gpu_samples.py::"
HF = "tests/test_trainer_state.py::"
TF = "tests/test_trainer_figures.py::"
TR = "tests/test_timing_rows.py::"

FINITE = "FILTER (WHERE @finite({0}))"
# the columns of fleet.COMPARE, in the order compare() reads them
COMPARE_COLUMNS = (
    "SELECT job_id, total_seconds, average_samples_per_second, final_loss, average_gpu_utilization, overall_score"
)


# the GPU samples' per-minute aggregates that job_resources adds up (rollups.py writes one of each
# for every figure f over its finite values {f}_f): an aggregate's name -> its column's suffix
ROLLUP_AGGREGATES = {"@ordered_sum": "sum", "max": "max"}


def resource_rule(source: str, column: str, figure_sql: str, new_sql: str) -> Edit:
    """``figure_sql`` (an aggregate of ``column`` over its finite values) as ``new_sql`` where each
    source computes it: the GPU samples' per minute in their rollups (warehouse/rollups.py, which
    job_resources adds up; ``column``'s alone of the aggregate rollups.py writes for every figure),
    the step readings' in job_resources' second CTE (the only one that filters their values)."""
    if source == "samples":
        aggregate = figure_sql.split("(")[0]
        each = f"{aggregate}({{f}}_f)"
        alias = f"AS {{f}}_{ROLLUP_AGGREGATES[aggregate]}"
        return Edit("warehouse/rollups.py", f"{each} {alias}",
                    f"{{'{new_sql}' if f == '{column}' else f'{each}'}} {alias}")  # fmt: skip
    return view("job_resources", f"{figure_sql} {FINITE.format(column)}", new_sql)


def kept_non_finite(source: str, column: str, figure_sql: str) -> Edit:
    """``figure_sql`` (an aggregate of ``column`` over finite values) over every value instead."""
    return resource_rule(source, column, figure_sql, figure_sql)


def per_gpu_mean(column: str, alias: str) -> tuple[Edit, ...]:
    """The GPU samples' mean of ``column`` as the mean of per-GPU means (each GPU weighing the same),
    from their per-minute rollups (gpu_minutes)."""
    weight = f"sum({column}_n) OVER (PARTITION BY job_id, host, gpu_key)"
    return (
        view(
            "job_resources",
            "    FROM gpu_minutes\n    GROUP BY job_id",
            f"    FROM (SELECT *, 1.0 / {weight} AS w FROM gpu_minutes)\n    GROUP BY job_id",
        ),
        view(
            "job_resources",
            f"@fdiv(@ordered_fsum({column}_sum); nullif(sum({column}_n), 0)) AS {alias}",
            f"sum({column}_sum * w) / count(DISTINCT (host, gpu_key)) FILTER (WHERE {column}_n > 0) AS {alias}",
        ),
    )


FIGURE_MUTATIONS: tuple[Mutation, ...] = (
    # --- rows: seconds and samples (step_metrics) -------------------------------------------------
    m("row seconds are iteration_time without Δ", "job.training_seconds job.average_iteration_time",
      view("step_metrics", "THEN @fmul(o.iteration_time; o.delta)", "THEN o.iteration_time"),
      A + "test_worked_example", A + "test_seconds_from_iteration_time_else_timestamps_else_unknown"),
    m("row seconds never from timestamps", "job.training_seconds",
      view("step_metrics", "WHEN o.ts IS NOT NULL AND o.prev_ts IS NOT NULL AND o.ts >= o.prev_ts", "WHEN false"),
      A + "test_seconds_from_iteration_time_else_timestamps_else_unknown"),
    m("row seconds: timestamps beat iteration_time", "job.training_seconds",
      view("step_metrics", "WHEN @finite(o.iteration_time) THEN",
           "WHEN o.prev_ts IS NULL AND @finite(o.iteration_time) THEN"),
      A + "test_seconds_from_iteration_time_else_timestamps_else_unknown"),
    m("row samples: batch_size beats samples given", "job.total_samples",
      view("step_metrics",
           "WHEN t.samples IS NOT NULL THEN CAST(t.samples AS DOUBLE PRECISION)\n"
           "           WHEN j.batch_size IS NOT NULL THEN @fmul(j.batch_size; t.delta)",
           "WHEN j.batch_size IS NOT NULL THEN @fmul(j.batch_size; t.delta)\n"
           "           WHEN t.samples IS NOT NULL THEN CAST(t.samples AS DOUBLE PRECISION)"),
      A + "test_samples_given_beat_batch_size"),
    m("row samples: batch_size without Δ", "job.total_samples",
      view("step_metrics", "@fmul(j.batch_size; t.delta)", "j.batch_size"),
      A + "test_plain_mean_fallback_when_no_row_has_samples_and_seconds"),
    m("row samples: never samples_per_second × seconds", "job.total_samples",
      view("step_metrics", "THEN @fmul(t.samples_per_second; t.seconds)", "THEN NULL"),
      A + "test_samples_from_rate_times_seconds_without_batch_size"),
    # --- performance (job_performance) ---------------------------------------------------------------
    m("total_iterations ignores current_step", "job.total_iterations",
      view("job_performance", "ELSE greatest(max_step, current_step) END", "ELSE max_step END"),
      A + "test_total_iterations[duckdb-25-25]"),
    m("total_samples only over timed rows", "job.total_samples",
      view("job_performance", "@ordered_fsum(m.samples) AS total_samples",
           "@ordered_fsum(m.samples) FILTER (WHERE m.seconds IS NOT NULL) AS total_samples"),
      A + "test_average_throughput_only_over_rows_with_both_samples_and_seconds"),
    m("throughput: Σ samples ÷ Σ known seconds over all rows", "job.average_samples_per_second",
      (view("job_performance", "@ordered_fsum(m.samples) FILTER (WHERE m.seconds IS NOT NULL) AS timed_samples",
            "@ordered_fsum(m.samples) AS timed_samples"),
       view("job_performance", "@ordered_fsum(m.seconds) FILTER (WHERE m.samples IS NOT NULL) AS timed_seconds",
            "@ordered_fsum(m.seconds) AS timed_seconds")),
      A + "test_average_throughput_only_over_rows_with_both_samples_and_seconds"),
    m("throughput: the mean of per-row rates", "job.average_samples_per_second",
      view("job_performance", "THEN @fdiv(timed_samples; timed_seconds)", "THEN mean_samples_per_second"),
      A + "test_average_throughput_is_time_weighted"),
    m("throughput: no plain-mean fallback", "job.average_samples_per_second",
      view("job_performance", "ELSE mean_samples_per_second END AS average_samples_per_second",
           "END AS average_samples_per_second"),
      A + "test_plain_mean_fallback_when_no_row_has_samples_and_seconds"),
    m("row samples: the trainer's per-device train_batch_size as samples per iteration", "job.total_samples",
      view("job_settings", "SELECT j.job_id,\n       j.batch_size,",
           "SELECT j.job_id,\n"
           "       coalesce(j.batch_size, CAST(r.train_batch_size AS DOUBLE PRECISION)) AS batch_size,"),
      TF + "test_a_trainer_state_job_has_no_duration_samples_or_throughput[duckdb-mistral-translator]"),
    m("peak rate keeps non-finite rates", "job.peak_samples_per_second",
      view("job_performance", f"max(m.samples_per_second) {FINITE.format('m.samples_per_second')}",
           "max(m.samples_per_second)"),
      A + "test_average_throughput_is_time_weighted"),
    m("peak rate is the last rate", "job.peak_samples_per_second",
      view("job_performance", f"max(m.samples_per_second) {FINITE.format('m.samples_per_second')}",
           f"@first_by(m.samples_per_second; m.step DESC) {FINITE.format('m.samples_per_second')}"),
      A + "test_samples_from_rate_times_seconds_without_batch_size"),
    m("iteration time over every row's Δ", "job.average_iteration_time",
      view("job_performance", "sum(m.delta) FILTER (WHERE m.seconds IS NOT NULL) AS timed_iterations",
           "sum(m.delta) AS timed_iterations"),
      A + "test_average_throughput_only_over_rows_with_both_samples_and_seconds"),
    # --- duration (job_duration) -------------------------------------------------------------------
    m("start: never from the first row", "job.start_time",
      view("job_duration", "ELSE @seconds_between(TIMESTAMP '1970-01-01 00:00:00'; e.first_ts)"
           " - e.first_seconds END AS start_epoch", "END AS start_epoch"),
      A + "test_start_from_first_row_timestamp_minus_its_seconds"),
    m("start: the first row's timestamp, its seconds not taken off", "job.start_time",
      view("job_duration", "e.first_ts) - e.first_seconds END AS start_epoch", "e.first_ts) END AS start_epoch"),
      A + "test_start_from_first_row_timestamp_minus_its_seconds"),
    m("start: the first row beats started_at", "job.start_time",
      view("job_duration", "CASE WHEN j.started_at IS NOT NULL",
           "CASE WHEN e.first_ts IS NULL AND j.started_at IS NOT NULL"),
      A + "test_started_at_beats_first_row"),
    m("end: ended_at only for completed jobs", "job.end_time",
      view("job_duration", "j.status IN ('completed', 'failed', 'cancelled')", "j.status = 'completed'"),
      A + "test_end_of_job[duckdb-failed]"),
    m("end: updated_at beats a later row", "job.end_time",
      view("job_duration", "ELSE greatest(e.last_ts, j.updated_at) END", "ELSE coalesce(j.updated_at, e.last_ts) END"),
      A + "test_end_of_job[duckdb-paused-row-later]"),
    m("end: the last timing row's time, not the last row's", "job.end_time",
      view("job_duration", "greatest(max(ts) FILTER (WHERE row_no = row_count),",
           "greatest(max(ts) FILTER (WHERE timing_no = timing_count),"),
      TR + "test_the_end_and_the_silence_read_every_rows_time[duckdb]"),
    m("end: the latest timestamp of all rows, not the last row's", "job.end_time",
      view("job_duration", "greatest(max(ts) FILTER (WHERE row_no = row_count),\n"
           "                    max(ts) FILTER (WHERE timing_no = timing_count)) AS last_ts", "max(ts) AS last_ts"),
      TR + "test_the_end_is_the_last_rows_time_not_the_latest[duckdb]"),
    m("total_seconds is the training time", "job.total_seconds",
      view("job_duration", "CASE WHEN span_seconds >= 0 THEN span_seconds END AS total_seconds",
           "training_seconds AS total_seconds"),
      A + "test_end_of_job[duckdb-completed]"),
    m("training time leaves out the first row", "job.training_seconds",
      view("job_duration", "@ordered_fsum(seconds) AS timed_seconds",
           "@ordered_fsum(seconds) FILTER (WHERE timing_no > 1) AS timed_seconds"),
      A + "test_start_from_first_row_timestamp_minus_its_seconds"),
    m("total_seconds: the training time when start or end is unknown", "job.total_seconds",
      view("job_duration", "CASE WHEN span_seconds >= 0 THEN span_seconds END AS total_seconds",
           "coalesce(CASE WHEN span_seconds >= 0 THEN span_seconds END, training_seconds) AS total_seconds"),
      TF + "test_a_total_without_start_or_end_is_null_and_so_is_the_overhead[duckdb]"),
    m("overhead 0 when the total is unknown", "job.overhead_seconds",
      view("job_duration", "THEN greatest(0, span_seconds - training_seconds) END AS overhead_seconds",
           "THEN greatest(0, span_seconds - training_seconds)\n            WHEN training_seconds IS NOT NULL THEN 0"
           " END AS overhead_seconds"),
      TF + "test_a_total_without_start_or_end_is_null_and_so_is_the_overhead[duckdb]"),
    m("overhead not clamped at 0", "job.overhead_seconds",
      view("job_duration", "THEN greatest(0, span_seconds - training_seconds)", "THEN span_seconds - training_seconds"),
      A + "test_overhead_is_clamped_at_zero"),
    m("an end before the start gives a negative total", "job.total_seconds",
      view("job_duration", "CASE WHEN span_seconds >= 0 THEN span_seconds END AS total_seconds",
           "span_seconds AS total_seconds"),
      TR + "test_an_end_before_the_start_is_no_duration[duckdb]"),
    m("timing rows: a trainer state's steps cut progress.json's intervals", "job.training_seconds job.total_samples",
      view("step_metrics", "t AS (PARTITION BY f.job_id, f.from_progress ORDER BY f.step)",
           "t AS (PARTITION BY f.job_id ORDER BY f.step)"),
      TR + "test_a_trainer_state_or_tool_log_between_progress_rows_changes_no_timing[duckdb]"),
    # --- losses (job_losses) -------------------------------------------------------------------------
    m("initial loss keeps non-finite values", "job.initial_loss",
      view("job_losses", f"@first_by(s.loss; s.step) {FINITE.format('s.loss')}",
           "@first_by(s.loss; s.step) FILTER (WHERE s.loss IS NOT NULL)"),
      A + "test_losses_ignore_non_finite_values"),
    m("final loss keeps non-finite values", "job.final_loss",
      view("job_losses", f"@first_by(s.loss; s.step DESC) {FINITE.format('s.loss')}",
           "@first_by(s.loss; s.step DESC) FILTER (WHERE s.loss IS NOT NULL)"),
      A + "test_losses_ignore_non_finite_values"),
    m("best loss keeps non-finite values", "job.best_loss",
      view("job_losses", f"min(s.loss) {FINITE.format('s.loss')} AS best_loss", "min(s.loss) AS best_loss"),
      A + "test_losses_ignore_non_finite_values"),
    m("loss reduction null for a negative initial loss", "job.loss_reduction_percent",
      view("job_losses", "CASE WHEN initial_loss <> 0 THEN", "CASE WHEN initial_loss > 0 THEN"),
      A + "test_loss_reduction_of_a_negative_or_growing_loss",
      HF + "test_grpo_rewards_reduction_from_a_negative_initial_loss"),
    m("loss reduction divided by |initial|", "job.loss_reduction_percent",
      view("job_losses", "; initial_loss) END", "; abs(initial_loss)) END"),
      A + "test_loss_reduction_of_a_negative_or_growing_loss",
      HF + "test_grpo_rewards_reduction_from_a_negative_initial_loss"),
    m("loss reduction reversed", "job.loss_reduction_percent",
      view("job_losses", "@fsub(initial_loss; final_loss)", "@fsub(final_loss; initial_loss)"),
      A + "test_worked_example"),
    # --- resource utilization (job_resources): GPU samples (1st CTE), step readings (2nd) -----------
    m("samples: utilization as the mean of per-GPU means", "job.average_gpu_utilization",
      per_gpu_mean("utilization_percent", "util"),
      GPU + "test_each_sample_weighs_the_same_and_non_finite_ones_are_left_out"),
    m("samples: memory as the mean of per-GPU means", "job.average_gpu_memory_mb",
      per_gpu_mean("memory_used_mb", "mem"),
      GPU + "test_each_sample_weighs_the_same_and_non_finite_ones_are_left_out"),
    m("samples: temperature as the mean of per-GPU means", "job.average_gpu_temp_celsius",
      per_gpu_mean("temperature_c", "temp"),
      GPU + "test_each_sample_weighs_the_same_and_non_finite_ones_are_left_out"),
    # the same figures from each of job_resources' two sources, found by one test each: the GPU
    # samples' rules live in their per-minute rollups (a mean's sum, a peak's max), the step
    # readings' in job_resources
    *(
        mutation
        for source, mean, latest, latest_sql, test in (
            ("samples", "@ordered_sum", "the latest sample's", "arg_max({0}_f, ts)",
             GPU + "test_each_sample_weighs_the_same_and_non_finite_ones_are_left_out"),
            ("step readings", "@ordered_favg", "the last reading's", f"@first_by({{0}}; step DESC) {FINITE}",
             A + "test_step_readings_leave_out_non_finite_values_and_peak_at_the_maxima"),
        )
        for mutation in (
            *(
                m(f"{source}: {figure} keeps non-finite values", f"job.{figure}",
                  kept_non_finite(source, column, sql), test)
                for figure, column, sql in (
                    ("average_gpu_utilization", "utilization_percent", f"{mean}(utilization_percent)"),
                    ("average_gpu_memory_mb", "memory_used_mb", f"{mean}(memory_used_mb)"),
                    ("peak_gpu_memory_mb", "memory_used_mb", "max(memory_used_mb)"),
                    ("average_gpu_temp_celsius", "temperature_c", f"{mean}(temperature_c)"),
                    ("peak_gpu_temp_celsius", "temperature_c", "max(temperature_c)"),
                )
            ),
            *(
                m(f"{source}: {figure} is {latest}", f"job.{figure}",
                  resource_rule(source, column, f"max({column})", latest_sql.format(column)),
                  test)
                for figure, column in (
                    ("peak_gpu_memory_mb", "memory_used_mb"), ("peak_gpu_temp_celsius", "temperature_c")
                )
            ),
        )
    ),
    m("step readings beat GPU samples", "job.average_gpu_utilization",
      view("job_resources", "CASE WHEN s.n > 0 THEN s.util ELSE l.util END", "coalesce(l.util, s.util)"),
      GPU + "test_resource_utilization_comes_from_the_samples"),
    # --- checkpoints (job_checkpoints, checkpoint_scores) ------------------------------------------------
    m("total counts only checkpoints with a training loss", "job.total_checkpoints",
      view("job_checkpoints", "count(c.step) AS total_checkpoints", "count(c.train_loss) AS total_checkpoints"),
      A + "test_checkpoints_from_list_and_folders"),
    m("frequency: the median gap beats save_steps", "job.checkpoint_frequency_steps",
      view("job_checkpoints", "THEN CAST(save_steps AS DOUBLE PRECISION)",
           "THEN coalesce(median_gap, CAST(save_steps AS DOUBLE PRECISION))"),
      A + "test_save_steps_beats_the_median_gap"),
    m("frequency: a trainer's save_steps whatever its checkpoints", "job.checkpoint_frequency_steps",
      view("job_checkpoints", "OR off_schedule = 0)", "OR true)"),
      S26 + "test_a_trainers_save_steps_its_checkpoints_do_not_follow_is_no_frequency"),
    m("frequency: the trainer's last save must follow its save_steps too", "job.checkpoint_frequency_steps",
      view("job_checkpoints", "- CASE WHEN max(c.step) % nullif(j.save_steps, 0) <> 0 AND max(c.step) >= r.max_steps",
           "- CASE WHEN false"),
      S26 + "test_a_trainers_save_steps_its_checkpoints_do_not_follow_is_no_frequency"),
    m("frequency: the last checkpoint let off wherever it is", "job.checkpoint_frequency_steps",
      view("job_checkpoints", "<> 0 AND max(c.step) >= r.max_steps THEN 1", "<> 0 THEN 1"),
      S27 + "test_one_checkpoint_before_the_trainers_end_gives_no_frequency_of_the_trainers"),
    m("frequency: the last checkpoint let off only past the trainer's end", "job.checkpoint_frequency_steps",
      view("job_checkpoints", "max(c.step) >= r.max_steps THEN 1", "max(c.step) > r.max_steps THEN 1"),
      S27 + "test_one_checkpoint_before_the_trainers_end_gives_no_frequency_of_the_trainers"),
    m("frequency: the mean gap", "job.checkpoint_frequency_steps",
      view("job_checkpoints", "@median(c.gap)", "avg(c.gap)"),
      A + "test_checkpoints_from_list_and_folders"),
    m("final checkpoint is the first", "job.final_checkpoint",
      view("job_checkpoints", "max(c.step) AS final_step", "min(c.step) AS final_step"),
      A + "test_checkpoints_from_list_and_folders"),
    m("best: the training loss beats the eval loss", "job.best_checkpoint",
      view("job_checkpoints", "coalesce(best_eval_step, best_train_step)", "coalesce(best_train_step, best_eval_step)",
           nth=1),
      A + "test_best_checkpoint_by_eval_loss"),
    m("best: ties go to the later checkpoint", "job.best_checkpoint",
      view("job_checkpoints", "@first_by(c.step; c.eval_loss, c.step)", "@first_by(c.step; c.eval_loss, c.step DESC)"),
      A + "test_best_checkpoint_ties_go_to_the_earlier[duckdb-eval_loss]"),
    m("best: the trainer's own best ignored", "job.best_checkpoint",
      view("job_checkpoints", "coalesce(trainer_best_checkpoint,", "coalesce(NULL,"),
      HF + "test_whisper_last_checkpoint_folder"),
    m("best: the step row's eval loss beats the checkpoint's own", "job.best_checkpoint",
      view("checkpoint_scores",
           "WHEN @finite(c.eval_loss) THEN c.eval_loss\n            WHEN @finite(s.eval_loss) THEN s.eval_loss",
           "WHEN @finite(s.eval_loss) THEN s.eval_loss\n            WHEN @finite(c.eval_loss) THEN c.eval_loss"),
      A + "test_best_checkpoint_by_eval_loss"),
    m("best: the training loss read after the checkpoint too", "job.best_checkpoint",
      view("checkpoint_scores", "t.step <= c.step AND ", ""),
      A + "test_best_checkpoint_by_training_loss_at_or_before"),
    # --- efficiency (job_efficiency) -------------------------------------------------------------------
    m("GPU utilization score rounded", "job.gpu_utilization_score",
      view("job_efficiency", "r.average_gpu_utilization AS gpu_utilization_score",
           "round(r.average_gpu_utilization) AS gpu_utilization_score"),
      A + "test_worked_example"),
    m("throughput score not capped at 100", "job.throughput_score",
      view("job_efficiency", "THEN least(100, @fdiv(@fmul(100; average_samples_per_second); reference)) END",
           "THEN @fdiv(@fmul(100; average_samples_per_second); reference) END"),
      A + "test_throughput_score_is_capped_at_100"),
    m("throughput score: a zero target is a target", "job.throughput_score",
      view("job_efficiency", "CASE WHEN j.target_samples_per_second > 0 THEN j.target_samples_per_second",
           "CASE WHEN j.target_samples_per_second >= 0 THEN j.target_samples_per_second"),
      A + "test_zero_target_falls_back_to_peak"),
    m("throughput score: the peak beats the target", "job.throughput_score",
      view("job_efficiency", "CASE WHEN j.target_samples_per_second > 0 THEN j.target_samples_per_second",
           "CASE WHEN p.peak_samples_per_second > 0 THEN p.peak_samples_per_second"),
      A + "test_worked_example"),
    m("throughput score of an overflowed throughput", "job.throughput_score",
      view("job_efficiency", "CASE WHEN reference IS NOT NULL AND @finite(average_samples_per_second)",
           "CASE WHEN reference IS NOT NULL AND average_samples_per_second IS NOT NULL"),
      S23 + "test_a_throughput_that_overflows_is_null_with_a_warning_and_no_score"),
    m("total_samples that overflows kept", "job.total_samples",
      view("job_analytics", "CASE WHEN @finite(p.total_samples) THEN p.total_samples END AS total_samples",
           "p.total_samples AS total_samples"),
      S23 + "test_a_throughput_that_overflows_is_null_with_a_warning_and_no_score"),
    m("average throughput that overflows kept",
      "job.average_samples_per_second summary.average_throughput_samples_per_sec",
      view("job_analytics", "CASE WHEN @finite(p.average_samples_per_second) THEN p.average_samples_per_second END",
           "p.average_samples_per_second"),
      S23 + "test_the_job_list_and_the_summary_rank_an_overflowed_throughput_as_unknown"),
    m("a checkpoint entry's non-finite eval_loss not counted", "job.best_checkpoint",
      view("checkpoint_scores", "coalesce(NOT @finite(c.eval_loss), false) AS nonfinite_eval_loss",
           "false AS nonfinite_eval_loss"),
      S24 + "test_a_checkpoint_entrys_nonfinite_eval_loss_is_left_out_and_counted[duckdb]"),
    m("MLflow: the run's average train_loss ranks above loss", "job.initial_loss job.loss_reduction_percent",
      view("step_facts", "('mlflow', 'loss', 'loss', 2),\n        ('mlflow', 'train_loss', 'loss', 3),",
           "('mlflow', 'loss', 'loss', 3),\n        ('mlflow', 'train_loss', 'loss', 2),"),
      S24 + "test_an_hf_runs_mlflow_loss_is_its_per_step_loss_not_the_run_average"),
    m("Lightning CSV: the epoch means rank above the step series", "job.final_loss",
      view("step_facts", "('lightning_csv', 'train/loss_step', 'loss', 6),",
           "('lightning_csv', 'train/loss_step', 'loss', 8),"),
      S24 + "test_lightnings_step_and_epoch_names_give_the_loss_from_its_csv_logger"),
    m("tools' logs: a name two tools logged ranked by tool", "job.final_loss job.total_iterations",
      (view("step_facts", "SELECT job_id, field, name\n        FROM (",
            "SELECT job_id, field, name, best_tool\n        FROM ("),
       view("step_facts", "w.name = m.name", "w.name = m.name AND w.best_tool = m.source")),
      S27 + "test_a_name_two_tools_logged_gives_every_point_of_both"),
    m("tools' logs: a point logged again without a time loses the stored one's", "job.training_seconds",
      Edit("ingest/formats/tool_log.py", "    con.execute(KEEP_TIMES, {**job_ids,", "    ({**job_ids,"),
      S27 + "test_a_name_two_tools_logged_gives_every_point_of_both"),
    m("overall score: the higher of the two", "job.overall_score",
      view("job_efficiency", "THEN (gpu_utilization_score + throughput_score) / 2",
           "THEN greatest(gpu_utilization_score, throughput_score)"),
      A + "test_worked_example"),
    m("overall score: null unless both are known", "job.overall_score",
      view("job_efficiency", "ELSE coalesce(gpu_utilization_score, throughput_score) END AS overall_score",
           "END AS overall_score"),
      A + "test_no_gpu_readings_gives_null_utilization"),
    # --- all jobs (warehouse/fleet.py: SUMMARY, TOP_JOBS, summary()) -------------------------------------
    m("total_jobs counts started jobs only", "summary.total_jobs",
      fleet("SELECT count(*) AS total_jobs", "SELECT count(start_time) AS total_jobs"), API + "test_summary_figures"),
    m("jobs_by_status leaves out zeros", "summary.jobs_by_status",
      fleet("by_status = {s: counts.get(s, 0) for s in STATUSES}",
            "by_status = {s: counts[s] for s in STATUSES if s in counts}"),
      API + "test_summary_figures"),
    m("average duration over every job, not the completed", "summary.average_training_duration_seconds",
      fleet("@ordered_favg(total_seconds) FILTER (WHERE status = 'completed')", "@ordered_favg(total_seconds)"),
      API + "test_summary_figures"),
    m("training hours from total seconds", "summary.total_training_time_hours",
      fleet("@ordered_fsum(training_seconds) / 3600", "@ordered_fsum(total_seconds) / 3600"),
      API + "test_summary_figures"),
    m("average throughput counts an unknown one as 0", "summary.average_throughput_samples_per_sec",
      fleet("@ordered_favg(average_samples_per_second) AS",
            "@ordered_favg(coalesce(average_samples_per_second, 0)) AS"),
      API + "test_summary_figures"),
    m("top jobs rank jobs without a throughput", "summary.top_performing_jobs",
      fleet("  AND @finite(average_samples_per_second)\n", ""), API + "test_summary_figures"),
    m("top jobs: the total counts every job", "summary.top_performing_jobs",
      fleet('"top_performing_total": row["ranked_jobs"]', '"top_performing_total": row["total_jobs"]'),
      API + "test_summary_figures"),
    m("top jobs: ties by job id descending", "summary.top_performing_jobs",
      fleet("ORDER BY average_samples_per_second DESC, job_id\n",
            "ORDER BY average_samples_per_second DESC, job_id DESC\n"),
      API + "test_summary_figures"),
    m("top jobs: duration is the training time", "summary.top_performing_jobs",
      fleet("average_samples_per_second AS throughput, total_seconds AS duration",
            "average_samples_per_second AS throughput, training_seconds AS duration"),
      API + "test_summary_figures"),
    m("resource trends: utilization counts an unknown one as 0", "summary.resource_trends.average_gpu_utilization",
      fleet("@ordered_favg(average_gpu_utilization) AS", "@ordered_favg(coalesce(average_gpu_utilization, 0)) AS"),
      API + "test_summary_figures"),
    m("resource trends: the highest peak, not the mean", "summary.resource_trends.average_peak_memory_mb",
      fleet("@ordered_favg(peak_gpu_memory_mb) AS", "max(peak_gpu_memory_mb) AS"), API + "test_summary_figures"),
    # --- comparing jobs (warehouse/fleet.py: COMPARE, compare(), _winner(); api/routes/common.py) ---------
    *(
        m(f"compare: {figure} is {wrong.strip(' ,')}", f"compare.{figure}",
          fleet(COMPARE_COLUMNS, COMPARE_COLUMNS.replace(column, wrong)), API + "test_compare_in_the_order_asked")
        for figure, column, wrong in (
            ("duration_seconds", " total_seconds,", " training_seconds,"),
            ("throughput", " average_samples_per_second,", " peak_samples_per_second,"),
            ("final_loss", " final_loss,", " final_eval_loss,"),
            ("gpu_utilization", " average_gpu_utilization,", " average_gpu_memory_mb,"),
        )
    ),
    m("winner best_throughput: the lowest", "compare.winner.best_throughput",
      fleet('_winner(jobs, "throughput", highest=True)', '_winner(jobs, "throughput", highest=False)'),
      API + "test_compare_in_the_order_asked"),
    m("winner best_loss: the highest", "compare.winner.best_loss",
      fleet('_winner(jobs, "final_loss", highest=False)', '_winner(jobs, "final_loss", highest=True)'),
      API + "test_compare_in_the_order_asked"),
    m("winner fastest: the longest", "compare.winner.fastest",
      fleet('_winner(jobs, "duration_seconds", highest=False)', '_winner(jobs, "duration_seconds", highest=True)'),
      API + "test_compare_in_the_order_asked"),
    m("winner most_efficient by GPU utilization", "compare.winner.most_efficient",
      fleet('_winner(jobs, "overall_score", highest=True)', '_winner(jobs, "gpu_utilization", highest=True)'),
      API + "test_compare_in_the_order_asked"),
    m("winners: ties go to the job asked last",
      "compare.winner.best_throughput compare.winner.most_efficient",
      fleet("(value > best[key] if highest else value < best[key])",
            "(value >= best[key] if highest else value <= best[key])"),
      API + "test_compare_ties_go_to_the_job_asked_first"),
    m("winners: a job without the figure competes as 0",
      "compare.winner.best_throughput compare.winner.best_loss compare.winner.fastest compare.winner.most_efficient",
      fleet("        value = job[key]\n", "        value = 0.0 if job[key] is None else job[key]\n"),
      API + "test_compare_winner_is_null_when_no_job_has_the_figure"),
    m("compare: a repeated id counts twice", "compare.duration_seconds",
      Edit("warehouse/job_lists.py", "return list(dict.fromkeys(j for j in ids if j))",
           "return [j for j in ids if j]"),
      API + "test_compare_repeated_id_counts_once"),
    # --- times: UTC whatever the host's zone (warehouse/db.py) -------------------------------------------
    m("the warehouse's session in the host's zone", "job.start_time job.end_time",
      Edit("warehouse/db.py", "    con.execute(\"SET TimeZone = 'UTC'\")\n", ""),
      "tests/test_ingest_forms.py::test_timestamps_are_utc_whatever_the_host_zone"),
)  # fmt: skip


# --- insights (shared/spec/insights.md): each kind's trigger, value, reference, steps, severity ---------
# The rules live in the views insight_rows (a row's figures), insight_steps (the row kinds and the
# job kinds), insight_peers (slow_vs_peers), insight_gpus (the GPU kinds), insight_parameters
# (as_of, the thresholds) and the thresholds' defaults (warehouse/insights.py, DEFAULTS); the GPU
# kinds' shares come from the per-minute rollups (warehouse/rollups.py).


def steps(old: str, new: str) -> Edit:
    return view("insight_steps", old, new)


def gpus(old: str, new: str) -> Edit:
    return view("insight_gpus", old, new)


def peers(old: str, new: str) -> Edit:
    return view("insight_peers", old, new)


def rows(old: str, new: str) -> Edit:
    return view("insight_rows", old, new)


def rollup(old: str, new: str) -> Edit:
    return Edit("warehouse/rollups.py", old, new)


def default(name: str, old: str, new: str) -> Edit:
    """A threshold's default (what a new warehouse's insight_settings holds) as ``new``."""
    return Edit("warehouse/insights.py", f'"{name}": {old},', f'"{name}": {new},')


def severity(kind: str, old: str, new: str) -> Edit:
    """The row kinds' severity, written beside their kind in insight_steps."""
    return steps(f"'{kind}' AS kind, '{old}' AS severity", f"'{kind}' AS kind, '{new}' AS severity")


IN = "tests/test_insights.py::"
S19 = "tests/test_insight_mutants_s19.py::"
SEVERITIES = S19 + "test_each_kind_has_the_severity_insights_md_gives"
# the throttling mask of NVML's clocks-event reasons (0xEC) in the rollups
MASK = "(clocks_event_reasons & 236) <> 0"


def ti(name: str) -> str:
    """A test of tests/test_insights.py, its DuckDB case."""
    return f"{IN}{name}[duckdb]"


INSIGHT_MUTATIONS: tuple[Mutation, ...] = (
    # --- nonfinite_loss ------------------------------------------------------------------------------
    m("nonfinite_loss: a NULL loss counts", "nonfinite_loss.trigger nonfinite_loss.value",
      rows("s.loss IS NOT NULL AND NOT @finite(s.loss) AS nonfinite_loss",
           "NOT coalesce(@finite(s.loss), false) AS nonfinite_loss"),
      ti("test_nonfinite_loss_counts_nan_and_both_infinities_not_nulls")),
    m("nonfinite_loss: -Inf is no non-finite loss", "nonfinite_loss.trigger nonfinite_loss.last_step",
      rows("s.loss IS NOT NULL AND NOT @finite(s.loss) AS nonfinite_loss",
           "s.loss IS NOT NULL AND NOT @finite(s.loss) AND s.loss > 0 AS nonfinite_loss"),
      ti("test_nonfinite_loss_counts_nan_and_both_infinities_not_nulls")),
    m("nonfinite_loss: value counts the rows from the first to the last", "nonfinite_loss.value",
      steps("CAST(count(*) AS DOUBLE PRECISION) AS value",
            "CAST(max(row_no) - min(row_no) + 1 AS DOUBLE PRECISION) AS value"),
      ti("test_nonfinite_loss_counts_nan_and_both_infinities_not_nulls")),
    m("nonfinite_loss: reference is the job's first finite loss", "nonfinite_loss.reference",
      steps("JOIN finite_losses f ON f.job_id = n.job_id AND f.finite_no = n.finite_before",
            "JOIN finite_losses f ON f.job_id = n.job_id AND f.finite_no = 1"),
      ti("test_nonfinite_loss_counts_nan_and_both_infinities_not_nulls"),
      ti("test_nonfinite_loss_without_a_finite_loss_before_has_no_reference")),
    m("nonfinite_loss: reference is the last finite loss before the last such row", "nonfinite_loss.reference",
      steps("@first_by(finite_no; step) AS finite_before", "@first_by(finite_no; step DESC) AS finite_before"),
      ti("test_nonfinite_loss_counts_nan_and_both_infinities_not_nulls")),
    m("nonfinite_loss: first_step is the last such row", "nonfinite_loss.first_step",
      steps("SELECT job_id, min(step) AS first_step, max(step) AS last_step",
            "SELECT job_id, max(step) AS first_step, max(step) AS last_step"),
      ti("test_nonfinite_loss_counts_nan_and_both_infinities_not_nulls")),
    m("nonfinite_loss: last_step is the first such row", "nonfinite_loss.last_step",
      steps("SELECT job_id, min(step) AS first_step, max(step) AS last_step",
            "SELECT job_id, min(step) AS first_step, min(step) AS last_step"),
      ti("test_nonfinite_loss_counts_nan_and_both_infinities_not_nulls")),
    m("nonfinite_loss: a warning", "nonfinite_loss.severity", severity("nonfinite_loss", "critical", "warning"),
      SEVERITIES),
    # --- loss_spike ------------------------------------------------------------------------------------
    m("loss_spike: at m + 6·d is a spike", "loss_spike.trigger",
      steps("HAVING c.finite_loss > @fadd(c.spike_median;", "HAVING c.finite_loss >= @fadd(c.spike_median;"),
      ti("test_loss_spike_limit_is_strict")),
    m("loss_spike: at m + 0.5·|m| is a spike", "loss_spike.trigger",
      steps("WHERE c.finite_loss > @fadd(c.spike_median; @fmul(p.loss_spike_relative;",
            "WHERE c.finite_loss >= @fadd(c.spike_median; @fmul(p.loss_spike_relative;"),
      S19 + "test_loss_spike_relative_limit_is_half_the_absolute_median"),
    m("loss_spike: the limit m + 6·d alone (0.5·|m| left out)", "loss_spike.trigger",
      steps("    WHERE c.finite_loss > @fadd(c.spike_median; @fmul(p.loss_spike_relative; abs(c.spike_median)))\n", ""),
      S19 + "test_loss_spike_relative_limit_is_half_the_absolute_median"),
    m("loss_spike: the limit m + 0.5·|m| alone (6·d left out)", "loss_spike.trigger",
      steps("HAVING c.finite_loss > @fadd(c.spike_median; @fmul(p.loss_spike_mad_factor; "
            "@median(abs(@fsub(c.before; c.spike_median)))))", "HAVING count(*) > 0"),
      ti("test_loss_spike_limit_is_strict")),
    m("loss_spike: 0.5·m, not 0.5·|m|", "loss_spike.trigger",
      steps("@fmul(p.loss_spike_relative; abs(c.spike_median))", "@fmul(p.loss_spike_relative; c.spike_median)"),
      S19 + "test_loss_spike_relative_limit_is_half_the_absolute_median"),
    m("loss_spike: m is the mean of the 20", "loss_spike.trigger loss_spike.reference",
      steps("@median(c.before) OVER (PARTITION BY c.job_id, c.step) AS spike_median",
            "avg(c.before) OVER (PARTITION BY c.job_id, c.step) AS spike_median"),
      ti("test_adjacent_spike_rows_are_one_insight_and_a_row_without_finite_loss_separates")),
    m("loss_spike: d is the mean absolute deviation", "loss_spike.trigger",
      steps("@median(abs(@fsub(c.before; c.spike_median)))", "avg(abs(@fsub(c.before; c.spike_median)))"),
      ti("test_adjacent_spike_rows_are_one_insight_and_a_row_without_finite_loss_separates")),
    m("loss_spike: a window of the 19 losses before", "loss_spike.trigger loss_spike.reference",
      steps("generate_series(-20, -1)", "generate_series(-19, -1)"),
      ti("test_loss_spike_uses_the_20_losses_just_before")),
    m("loss_spike: a window of the 21 losses before", "loss_spike.trigger",
      steps("generate_series(-20, -1)", "generate_series(-21, -1)"),
      ti("test_loss_spike_uses_the_20_losses_just_before")),
    m("loss_spike: 19 earlier finite losses are enough", "loss_spike.trigger",
      steps("WHERE f.finite_no > 20", "WHERE f.finite_no > 19"),
      ti("test_loss_spike_needs_20_earlier_finite_losses")),
    m("loss_spike: 20 earlier rows, not finite losses", "loss_spike.trigger",
      steps("WHERE f.finite_no > 20", "WHERE f.row_no > 20"),
      ti("test_loss_spike_needs_20_earlier_finite_losses")),
    m("loss_spike: a row without a finite loss does not part two spikes", "loss_spike.first_step loss_spike.last_step",
      steps("SELECT c.job_id, c.step, c.ts, c.row_no, c.finite_loss, CAST(NULL AS DOUBLE PRECISION) AS lowest_before,",
            "SELECT c.job_id, c.step, c.ts, c.finite_no AS row_no, c.finite_loss, "
            "CAST(NULL AS DOUBLE PRECISION) AS lowest_before,"),
      ti("test_adjacent_spike_rows_are_one_insight_and_a_row_without_finite_loss_separates")),
    m("loss_spike: adjacent spike rows are apart", "loss_spike.first_step loss_spike.last_step",
      steps("c.row_no - row_number() OVER (PARTITION BY c.job_id ORDER BY c.row_no) AS run", "c.row_no AS run"),
      ti("test_adjacent_spike_rows_are_one_insight_and_a_row_without_finite_loss_separates")),
    m("loss_spike: a job's spikes are one insight", "loss_spike.first_step loss_spike.last_step",
      steps("c.row_no - row_number() OVER (PARTITION BY c.job_id ORDER BY c.row_no) AS run", "0 AS run"),
      ti("test_adjacent_spike_rows_are_one_insight_and_a_row_without_finite_loss_separates")),
    m("loss_spike: value is the first spike row's loss", "loss_spike.value",
      steps("max(finite_loss) AS value", "@first_by(finite_loss; step) AS value"),
      S19 + "test_loss_spike_value_is_the_highest_of_its_rows"),
    m("loss_spike: value is the last spike row's loss", "loss_spike.value",
      steps("max(finite_loss) AS value", "@first_by(finite_loss; step DESC) AS value"),
      ti("test_adjacent_spike_rows_are_one_insight_and_a_row_without_finite_loss_separates")),
    m("loss_spike: reference is m of the last spike row", "loss_spike.reference",
      steps("@first_by(spike_median; step) AS reference", "@first_by(spike_median; step DESC) AS reference"),
      ti("test_adjacent_spike_rows_are_one_insight_and_a_row_without_finite_loss_separates")),
    m("loss_spike: first_step is the last spike row's", "loss_spike.first_step",
      steps("min(step) AS first_step, max(step) AS last_step,\n"
            "           @first_by(ts; step) AS start_time, @first_by(ts; step DESC) AS end_time,\n"
            "           max(finite_loss)",
            "max(step) AS first_step, max(step) AS last_step,\n"
            "           @first_by(ts; step) AS start_time, @first_by(ts; step DESC) AS end_time,\n"
            "           max(finite_loss)"),
      ti("test_adjacent_spike_rows_are_one_insight_and_a_row_without_finite_loss_separates")),
    m("loss_spike: last_step is the first spike row's", "loss_spike.last_step",
      steps("min(step) AS first_step, max(step) AS last_step,\n"
            "           @first_by(ts; step) AS start_time, @first_by(ts; step DESC) AS end_time,\n"
            "           max(finite_loss)",
            "min(step) AS first_step, min(step) AS last_step,\n"
            "           @first_by(ts; step) AS start_time, @first_by(ts; step DESC) AS end_time,\n"
            "           max(finite_loss)"),
      ti("test_adjacent_spike_rows_are_one_insight_and_a_row_without_finite_loss_separates")),
    m("loss_spike: critical", "loss_spike.severity", severity("loss_spike", "warning", "critical"), SEVERITIES),
    m("loss_spike: mad_factor 5 by default", "loss_spike.trigger", default("loss_spike.mad_factor", "6", "5"),
      ti("test_loss_spike_limit_is_strict")),
    m("loss_spike: relative 0.4 by default", "loss_spike.trigger", default("loss_spike.relative", "0.5", "0.4"),
      ti("test_loss_spike_relative_branch_when_the_losses_do_not_vary")),
    # --- loss_divergence -------------------------------------------------------------------------------
    m("loss_divergence: r over 9 rows", "loss_divergence.trigger loss_divergence.first_step",
      steps("ROWS BETWEEN 9 PRECEDING AND CURRENT ROW) AS r", "ROWS BETWEEN 8 PRECEDING AND CURRENT ROW) AS r"),
      ti("test_loss_divergence_at_twice_the_lowest_median")),
    m("loss_divergence: r over 11 rows", "loss_divergence.trigger loss_divergence.first_step",
      steps("ROWS BETWEEN 9 PRECEDING AND CURRENT ROW) AS r", "ROWS BETWEEN 10 PRECEDING AND CURRENT ROW) AS r"),
      ti("test_loss_divergence_medians_are_over_the_finite_losses_of_the_last_10_rows")),
    m("loss_divergence: r from the first finite loss, not the 10th", "loss_divergence.trigger",
      steps("WHERE s.finite_no >= 10 AND s.r IS NOT NULL", "WHERE s.r IS NOT NULL"),
      S19 + "test_loss_divergence_r_b_and_its_figures"),
    m("loss_divergence: b is the lowest r of the whole job", "loss_divergence.trigger loss_divergence.reference",
      steps("ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS b",
            "ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS b"),
      ti("test_loss_divergence_at_most_one_and_never_when_b_is_not_positive")),
    m("loss_divergence: r = 2·b is no divergence", "loss_divergence.trigger",
      steps("AND l.r >= @fmul(p.loss_divergence_factor; l.b)", "AND l.r > @fmul(p.loss_divergence_factor; l.b)"),
      ti("test_loss_divergence_at_twice_the_lowest_median")),
    m("loss_divergence: a rise of exactly a tenth is not enough", "loss_divergence.trigger",
      steps("AND @fsub(l.r; l.b) >= @fmul(p.loss_divergence_rise;",
            "AND @fsub(l.r; l.b) > @fmul(p.loss_divergence_rise;"),
      ti("test_loss_divergence_rise_must_be_a_tenth_of_the_fall")),
    m("loss_divergence: the rise against r10, not r10 - b", "loss_divergence.trigger",
      steps("@fmul(p.loss_divergence_rise; @fsub(l.r_first; l.b))", "@fmul(p.loss_divergence_rise; l.r_first)"),
      ti("test_loss_divergence_rise_must_be_a_tenth_of_the_fall")),
    m("loss_divergence: b = 0 is enough", "loss_divergence.trigger",
      steps("WHERE l.b > 0 AND l.r >= l.b", "WHERE l.b >= 0 AND l.r >= l.b"),
      ti("test_loss_divergence_at_most_one_and_never_when_b_is_not_positive")),
    m("loss_divergence: one per row past the limit", "loss_divergence.trigger",
      steps("    GROUP BY l.job_id\n", "    GROUP BY l.job_id, l.step\n"),
      ti("test_loss_divergence_at_most_one_and_never_when_b_is_not_positive")),
    m("loss_divergence: first_step is the last row past the limit", "loss_divergence.first_step",
      steps("min(l.step) AS first_step", "max(l.step) AS first_step"),
      ti("test_loss_divergence_at_twice_the_lowest_median")),
    m("loss_divergence: last_step is where it diverged", "loss_divergence.last_step",
      steps("max(l.last_step) AS last_step", "min(l.step) AS last_step"),
      ti("test_loss_divergence_at_twice_the_lowest_median")),
    m("loss_divergence: value is r where it diverged", "loss_divergence.value",
      steps("max(l.r_last) AS value", "@first_by(l.r; l.step) AS value"),
      S19 + "test_loss_divergence_r_b_and_its_figures"),
    m("loss_divergence: reference is the lowest b of the rows past the limit", "loss_divergence.reference",
      steps("@first_by(l.b; l.step) AS reference", "min(l.b) AS reference"),
      S19 + "test_loss_divergence_r_b_and_its_figures"),
    m("loss_divergence: a warning", "loss_divergence.severity", severity("loss_divergence", "critical", "warning"),
      ti("test_loss_divergence_at_twice_the_lowest_median")),
    m("loss_divergence: factor 1.5 by default", "loss_divergence.trigger",
      default("loss_divergence.factor", "2", "1.5"), ti("test_loss_divergence_at_twice_the_lowest_median")),
    # --- overfitting -------------------------------------------------------------------------------------
    m("overfitting: the best is the last on ties", "overfitting.trigger overfitting.first_step",
      steps("@first_by(step; eval_loss, step) AS best_step", "@first_by(step; eval_loss, step DESC) AS best_step"),
      ti("test_overfitting_needs_three_evals_after_the_best_the_first_on_ties")),
    m("overfitting: more than 3 evals after the best", "overfitting.trigger",
      steps("WHERE a.evals_after >= p.overfitting_min_evals_after",
            "WHERE a.evals_after > p.overfitting_min_evals_after"),
      ti("test_overfitting_edge_of_the_eval_rise")),
    m("overfitting: min_evals_after 2 by default", "overfitting.trigger",
      default("overfitting.min_evals_after", "3", "2"),
      ti("test_overfitting_needs_three_evals_after_the_best_the_first_on_ties")),
    m("overfitting: the last eval at 1.05·e* is no rise", "overfitting.trigger",
      steps("AND a.last_loss >= @fmul(p.overfitting_eval_rise; a.best_loss)",
            "AND a.last_loss > @fmul(p.overfitting_eval_rise; a.best_loss)"),
      ti("test_overfitting_edge_of_the_eval_rise")),
    m("overfitting: the highest eval after the best, not the last", "overfitting.trigger overfitting.value",
      steps("@first_by(e.eval_loss; e.step DESC) AS last_loss", "max(e.eval_loss) AS last_loss"),
      S19 + "test_overfitting_reads_the_last_finite_eval"),
    m("overfitting: a flat training loss is enough", "overfitting.trigger",
      steps("AND a.last_train_median < a.best_train_median", "AND a.last_train_median <= a.best_train_median"),
      ti("test_overfitting_needs_the_training_loss_to_fall")),
    m("overfitting: the training median over every finite loss so far", "overfitting.trigger",
      steps("\n                      AND f.finite_no > r.finite_no - (SELECT overfitting_train_window FROM p)", ""),
      S19 + "test_overfitting_training_medians_are_of_the_last_10_finite_losses"),
    m("overfitting: the training losses' mean, not their median", "overfitting.trigger",
      steps("@median(f.finite_loss) AS train_median", "avg(f.finite_loss) AS train_median"),
      S19 + "test_overfitting_training_medians_are_of_the_last_10_finite_losses"),
    m("overfitting: the training window ends before the eval's row", "overfitting.trigger",
      steps("f.finite_no <= r.finite_no", "f.finite_no < r.finite_no"),
      S19 + "test_overfitting_training_medians_are_of_the_last_10_finite_losses"),
    m("overfitting: a non-finite eval loss is an eval", "overfitting.trigger",
      rows("CASE WHEN @finite(s.eval_loss) THEN s.eval_loss END AS finite_eval_loss",
           "s.eval_loss AS finite_eval_loss"),
      S19 + "test_overfitting_reads_the_last_finite_eval"),
    m("overfitting: first_step is the last eval's", "overfitting.first_step",
      steps("min(e.step) AS first_step, max(e.step) AS last_step",
            "max(e.step) AS first_step, max(e.step) AS last_step"),
      ti("test_overfitting_edge_of_the_eval_rise")),
    m("overfitting: last_step is the first eval after the best", "overfitting.last_step",
      steps("min(e.step) AS first_step, max(e.step) AS last_step",
            "min(e.step) AS first_step, min(e.step) AS last_step"),
      ti("test_overfitting_edge_of_the_eval_rise")),
    m("overfitting: value and reference swapped", "overfitting.value overfitting.reference",
      steps("a.last_loss AS value, a.best_loss AS reference", "a.best_loss AS value, a.last_loss AS reference"),
      ti("test_overfitting_edge_of_the_eval_rise")),
    m("overfitting: critical", "overfitting.severity", severity("overfitting", "warning", "critical"), SEVERITIES),
    # --- throughput_drop -----------------------------------------------------------------------------------
    m("throughput_drop: T is the mean throughput", "throughput_drop.trigger throughput_drop.reference",
      steps("@median(throughput) AS typical", "avg(throughput) AS typical"),
      ti("test_throughput_drop_needs_10_rows_below_0_7_of_the_median")),
    m("throughput_drop: T counts an unknown throughput as 0", "throughput_drop.trigger throughput_drop.reference",
      steps("@median(throughput) AS typical", "@median(coalesce(throughput, 0)) AS typical"),
      ti("test_throughput_drop_runs_count_unknown_rows_anywhere")),
    m("throughput_drop: 0.7·T is slow", "throughput_drop.trigger",
      (steps("WHERE s.throughput < @fmul(p.throughput_drop_fraction; j.typical)",
             "WHERE s.throughput <= @fmul(p.throughput_drop_fraction; j.typical)"),
       steps("WHERE s.throughput < @fmul(p.throughput_drop_fraction; d.typical)",
             "WHERE s.throughput <= @fmul(p.throughput_drop_fraction; d.typical)")),
      ti("test_throughput_drop_needs_10_rows_below_0_7_of_the_median")),
    m("throughput_drop: fraction 0.75 by default", "throughput_drop.trigger",
      default("throughput_drop.fraction", "0.7", "0.75"),
      ti("test_throughput_drop_needs_10_rows_below_0_7_of_the_median")),
    m("throughput_drop: a run of 9 rows", "throughput_drop.trigger",
      steps("WHERE s.run_rows >= p.throughput_drop_min_rows", "WHERE s.run_rows >= p.throughput_drop_min_rows - 1"),
      ti("test_throughput_drop_needs_10_rows_below_0_7_of_the_median")),
    m("throughput_drop: a row of unknown throughput ends a run", "throughput_drop.trigger throughput_drop.last_step",
      steps("WHERE s.throughput < @fmul(p.throughput_drop_fraction; d.typical) OR s.throughput IS NULL) u",
            "WHERE s.throughput < @fmul(p.throughput_drop_fraction; d.typical)) u"),
      ti("test_throughput_drop_runs_skip_unknown_rows_and_split_at_a_fast_one")),
    m("throughput_drop: rows of unknown throughput count in a run", "throughput_drop.trigger",
      steps("    WHERE u.throughput IS NOT NULL\n", ""),
      ti("test_throughput_drop_runs_count_unknown_rows_anywhere")),
    m("throughput: samples_per_second beats samples ÷ seconds", "throughput_drop.trigger throughput_drop.value",
      rows("CASE WHEN t.samples IS NOT NULL AND t.seconds IS NOT NULL AND t.seconds <> 0"
           " THEN @fdiv(t.samples; t.seconds)\n"
           "            WHEN @finite(t.samples_per_second) THEN t.samples_per_second END AS throughput",
           "CASE WHEN @finite(t.samples_per_second) THEN t.samples_per_second\n"
           "            WHEN t.samples IS NOT NULL AND t.seconds IS NOT NULL AND t.seconds <> 0"
           " THEN @fdiv(t.samples; t.seconds) END AS throughput"),
      S19 + "test_throughput_drop_median_and_value"),
    m("throughput_drop: value is the mean of its rows' throughput", "throughput_drop.value",
      steps("CASE WHEN @ordered_fsum(s.seconds) FILTER (WHERE s.samples IS NOT NULL) > 0",
            "CASE WHEN false"),
      S19 + "test_throughput_drop_median_and_value"),
    m("throughput_drop: value adds samples of rows without seconds", "throughput_drop.value",
      steps("@fdiv(@ordered_fsum(s.samples) FILTER (WHERE s.seconds IS NOT NULL);", "@fdiv(@ordered_fsum(s.samples);"),
      S19 + "test_throughput_drop_median_and_value"),
    m("throughput_drop: reference is 0.7·T", "throughput_drop.reference",
      steps("min(s.typical) AS reference", "min(@fmul(p.throughput_drop_fraction; s.typical)) AS reference"),
      ti("test_throughput_drop_needs_10_rows_below_0_7_of_the_median")),
    m("throughput_drop: first_step is the run's last", "throughput_drop.first_step",
      steps("min(s.step) AS first_step, max(s.step) AS last_step",
            "max(s.step) AS first_step, max(s.step) AS last_step"),
      ti("test_throughput_drop_needs_10_rows_below_0_7_of_the_median")),
    m("throughput_drop: last_step is the run's first", "throughput_drop.last_step",
      steps("min(s.step) AS first_step, max(s.step) AS last_step",
            "min(s.step) AS first_step, min(s.step) AS last_step"),
      ti("test_throughput_drop_needs_10_rows_below_0_7_of_the_median")),
    m("throughput_drop: critical", "throughput_drop.severity", severity("throughput_drop", "warning", "critical"),
      SEVERITIES),
    # --- stall -----------------------------------------------------------------------------------------------
    m("stall: a gap of 10·g is a stall", "stall.trigger",
      steps("WHERE x.gap > p.stall_factor * j.g", "WHERE x.gap >= p.stall_factor * j.g"),
      ti("test_stall_more_than_ten_median_gaps")),
    m("stall: a gap of 60 s is a stall", "stall.trigger",
      (steps("WHERE x.gap > p.stall_min_seconds", "WHERE x.gap >= p.stall_min_seconds"),
       steps("AND x.gap > p.stall_min_seconds", "AND x.gap >= p.stall_min_seconds")),
      ti("test_stall_at_least_60_seconds_and_zero_gaps_ignored_in_the_median")),
    m("stall: the limit 10·g alone (no 60 s)", "stall.trigger",
      # (stall_jobs' bound too: only a job with a gap above min_seconds has its g computed)
      (steps("WHERE x.gap > p.stall_min_seconds", "WHERE x.gap > 0"), steps(" AND x.gap > p.stall_min_seconds", "")),
      ti("test_stall_at_least_60_seconds_and_zero_gaps_ignored_in_the_median")),
    m("stall: the limit 60 s alone (no 10·g)", "stall.trigger",
      steps("WHERE x.gap > p.stall_factor * j.g AND", "WHERE"),
      ti("test_stall_more_than_ten_median_gaps")),
    m("stall: min_seconds 50 by default", "stall.trigger", default("stall.min_seconds", "60", "50"),
      ti("test_stall_at_least_60_seconds_and_zero_gaps_ignored_in_the_median")),
    m("stall: g counts the zero gaps", "stall.trigger stall.reference",
      steps("@median(x.gap) FILTER (WHERE x.gap > 0) AS g\n    FROM rows x\n    JOIN stall_jobs",
            "@median(x.gap) AS g\n    FROM rows x\n    JOIN stall_jobs"),
      ti("test_stall_at_least_60_seconds_and_zero_gaps_ignored_in_the_median")),
    m("stall: g is the mean gap", "stall.trigger stall.reference",
      steps("@median(x.gap) FILTER (WHERE x.gap > 0) AS g\n    FROM rows x\n    JOIN stall_jobs",
            "avg(x.gap) FILTER (WHERE x.gap > 0) AS g\n    FROM rows x\n    JOIN stall_jobs"),
      ti("test_stall_more_than_ten_median_gaps")),
    m("stall: the gap from the last row with a timestamp", "stall.trigger stall.value",
      rows("lag(s.ts) OVER t AS t_prev_ts",
           "last_value(s.ts IGNORE NULLS) OVER (t ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS t_prev_ts"),
      ti("test_stall_needs_both_rows_timestamped")),
    m("stall: first_step is row i's", "stall.first_step",
      steps("x.prev_step AS first_step, x.step AS last_step", "x.step AS first_step, x.step AS last_step"),
      ti("test_stall_more_than_ten_median_gaps")),
    m("stall: last_step is row i-1's", "stall.last_step",
      steps("x.prev_step AS first_step, x.step AS last_step", "x.prev_step AS first_step, x.prev_step AS last_step"),
      ti("test_stall_more_than_ten_median_gaps")),
    m("stall: value is the gap less g", "stall.value",
      steps("x.gap AS value, j.g AS reference", "x.gap - j.g AS value, j.g AS reference"),
      ti("test_stall_more_than_ten_median_gaps")),
    m("stall: reference is the limit 10·g", "stall.reference",
      steps("x.gap AS value, j.g AS reference", "x.gap AS value, p.stall_factor * j.g AS reference"),
      ti("test_stall_more_than_ten_median_gaps")),
    m("stall: critical", "stall.severity", severity("stall", "warning", "critical"), SEVERITIES),
    # --- slow_vs_peers (insight_peers) -------------------------------------------------------------------------
    m("slow_vs_peers: 0.7 × the median is slow", "slow_vs_peers.trigger",
      peers("AND c.throughput < @fmul(p.slow_vs_peers_fraction; c.peer_median)",
            "AND c.throughput <= @fmul(p.slow_vs_peers_fraction; c.peer_median)"),
      ti("test_slow_vs_peers_below_0_7_of_the_peers_median")),
    m("slow_vs_peers: fraction 0.75 by default", "slow_vs_peers.trigger",
      default("slow_vs_peers.fraction", "0.7", "0.75"), ti("test_slow_vs_peers_below_0_7_of_the_peers_median")),
    m("slow_vs_peers: two peers are enough", "slow_vs_peers.trigger",
      peers("WHERE c.peers >= p.slow_vs_peers_min_peers", "WHERE c.peers >= p.slow_vs_peers_min_peers - 1"),
      ti("test_slow_vs_peers_needs_three_completed_peers_of_the_same_model_and_gpus")),
    m("slow_vs_peers: a job is its own peer", "slow_vs_peers.trigger slow_vs_peers.reference",
      peers(" AND o.job_id <> c.job_id", ""),
      ti("test_slow_vs_peers_needs_three_completed_peers_of_the_same_model_and_gpus")),
    m("slow_vs_peers: the peers' mean", "slow_vs_peers.trigger slow_vs_peers.reference",
      peers("@median(o.throughput) AS peer_median", "avg(o.throughput) AS peer_median"),
      S19 + "test_slow_vs_peers_median_not_mean_and_the_configs_gpu_count_first"),
    m("slow_vs_peers: peers of any GPU count", "slow_vs_peers.trigger",
      peers(" AND o.gpus = c.gpus", ""),
      ti("test_slow_vs_peers_needs_three_completed_peers_of_the_same_model_and_gpus")),
    m("slow_vs_peers: peers of any model", "slow_vs_peers.trigger",
      peers("ON o.model_name = c.model_name AND", "ON"),
      ti("test_slow_vs_peers_needs_three_completed_peers_of_the_same_model_and_gpus")),
    m("slow_vs_peers: running jobs are peers", "slow_vs_peers.trigger",
      peers("WHERE a.status = 'completed'", "WHERE a.status IN ('completed', 'running')"),
      ti("test_slow_vs_peers_needs_three_completed_peers_of_the_same_model_and_gpus")),
    m("slow_vs_peers: the GPUs seen beat the config's gpu_count", "slow_vs_peers.trigger",
      peers("coalesce(j.gpu_count, r.gpus_seen) AS gpus", "coalesce(r.gpus_seen, j.gpu_count) AS gpus"),
      S19 + "test_slow_vs_peers_median_not_mean_and_the_configs_gpu_count_first"),
    m("slow_vs_peers: the peak throughput, not the average", "slow_vs_peers.trigger slow_vs_peers.value",
      peers("a.average_samples_per_second AS throughput", "a.peak_samples_per_second AS throughput"),
      ti("test_slow_vs_peers_below_0_7_of_the_peers_median")),
    m("slow_vs_peers: reference is 0.7 × the median", "slow_vs_peers.reference",
      peers("c.peer_median AS reference", "@fmul(p.slow_vs_peers_fraction; c.peer_median) AS reference"),
      ti("test_slow_vs_peers_below_0_7_of_the_peers_median")),
    m("slow_vs_peers: critical", "slow_vs_peers.severity",
      peers("'slow_vs_peers' AS kind, 'warning' AS severity", "'slow_vs_peers' AS kind, 'critical' AS severity"),
      SEVERITIES),
    # --- gpu_idle (insight_gpus; the idle time from the rollups) ----------------------------------------------
    m("gpu_idle: idle exactly half the time", "gpu_idle.trigger",
      gpus("WHERE g.idle_share > p.gpu_idle_share", "WHERE g.idle_share >= p.gpu_idle_share"),
      ti("test_gpu_idle_more_than_half_the_time_below_10")),
    m("gpu_idle: share 0.6 by default", "gpu_idle.trigger", default("gpu_idle.share", "0.5", "0.6"),
      ti("test_gpu_idle_more_than_half_the_time_below_10")),
    m("rollups: a utilization of 10 % is idle", "gpu_idle.trigger gpu_idle.value job_gpus.idle_share",
      rollup("AND utilization_percent < {IDLE_UTILIZATION} THEN",
             "AND utilization_percent <= {IDLE_UTILIZATION} THEN"),
      S19 + "test_gpu_idle_is_strictly_below_the_utilization_threshold"),
    m("gpu_idle at another threshold: a utilization at it is idle", "gpu_idle.trigger",
      gpus("AND g.utilization_percent < g.gpu_idle_utilization)",
           "AND g.utilization_percent <= g.gpu_idle_utilization)"),
      S19 + "test_gpu_idle_is_strictly_below_the_utilization_threshold"),
    m("gpu_idle from step readings: a utilization of 10 % is idle", "gpu_idle.trigger",
      gpus("AND g.utilization_percent < p.gpu_idle_utilization)",
           "AND g.utilization_percent <= p.gpu_idle_utilization)"),
      S19 + "test_gpu_idle_is_strictly_below_the_utilization_threshold"),
    m("rollups: the idle share counts samples, not time", "gpu_idle.value job_gpus.idle_share",
      (rollup("CASE WHEN @finite(utilization_percent) THEN interval_seconds END AS utilization_interval",
              "CASE WHEN @finite(utilization_percent) THEN 1.0 END AS utilization_interval"),
       rollup("< {IDLE_UTILIZATION} THEN interval_seconds END\n           AS idle_interval",
              "< {IDLE_UTILIZATION} THEN 1.0 END\n           AS idle_interval")),
      ti("test_gpu_idle_more_than_half_the_time_below_10")),
    m("rollups: -Infinity is idle time", "gpu_idle.value job_gpus.idle_share",
      rollup("@finite(utilization_percent) AND utilization_percent < {IDLE_UTILIZATION}",
             "utilization_percent < {IDLE_UTILIZATION}"),
      "tests/test_idle_mutants_s22.py::test_negative_infinity_is_no_idle_time_in_samples"),
    m("gpu_idle from step readings: -Infinity is idle", "gpu_idle.value",
      gpus("@finite(g.utilization_percent) AND g.utilization_percent < p.gpu_idle_utilization",
           "g.utilization_percent < p.gpu_idle_utilization"),
      "tests/test_idle_mutants_s22.py::test_negative_infinity_is_no_idle_time_in_step_readings"),
    m("gpu kinds: a job's step readings beside its samples", "gpu_idle.trigger gpu_straggler.trigger",
      gpus("    WHERE NOT EXISTS (SELECT 1 FROM gpu_minutes x WHERE x.job_id = g.job_id)\n", ""),
      S19 + "test_gpu_kinds_read_the_samples_of_a_job_that_has_them"),
    m("gpu_idle: value is the busy share", "gpu_idle.value",
      gpus("g.idle_share AS value", "1 - g.idle_share AS value"), ti("test_gpu_idle_more_than_half_the_time_below_10")),
    m("gpu_idle: reference is the idle utilization", "gpu_idle.reference",
      gpus("p.gpu_idle_share AS reference", "p.gpu_idle_utilization AS reference"),
      ti("test_gpu_idle_more_than_half_the_time_below_10")),
    m("gpu_idle: info", "gpu_idle.severity",
      gpus("SELECT job_id, kind, 'warning' AS severity,", "SELECT job_id, kind, 'info' AS severity,"),
      ti("test_gpu_idle_more_than_half_the_time_below_10")),
    # --- gpu_straggler ------------------------------------------------------------------------------------------
    m("gpu_straggler: exactly 20 points below", "gpu_straggler.trigger",
      gpus("AND g.mean_utilization < g.median_utilization - p.gpu_straggler_points",
           "AND g.mean_utilization <= g.median_utilization - p.gpu_straggler_points"),
      ti("test_gpu_straggler_from_step_readings_at_the_edge")),
    m("gpu_straggler: points 25 by default", "gpu_straggler.trigger", default("gpu_straggler.points", "20", "25"),
      ti("test_gpu_straggler_more_than_20_points_below_the_median")),
    m("gpu_straggler: idle GPUs left out of the median", "gpu_straggler.trigger gpu_straggler.reference",
      gpus("@median(u.mean_utilization) OVER (PARTITION BY u.job_id) AS median_utilization",
           "@median(CASE WHEN coalesce(u.idle_seconds, 0) / u.utilization_seconds > 0.5 THEN NULL"
           " ELSE u.mean_utilization END) OVER (PARTITION BY u.job_id)"
           " AS median_utilization"),
      ti("test_gpu_straggler_more_than_20_points_below_the_median")),
    m("gpu_straggler: the GPUs' mean, not their median", "gpu_straggler.trigger gpu_straggler.reference",
      gpus("@median(u.mean_utilization) OVER (PARTITION BY u.job_id) AS median_utilization",
           "avg(u.mean_utilization) OVER (PARTITION BY u.job_id) AS median_utilization"),
      ti("test_gpu_straggler_more_than_20_points_below_the_median")),
    m("gpu_straggler: an idle GPU is one", "gpu_straggler.trigger",
      gpus("      AND NOT coalesce(g.idle_share > p.gpu_idle_share, false)\n", ""),
      ti("test_gpu_straggler_more_than_20_points_below_the_median")),
    m("gpu_straggler: a GPU of unknown idleness is idle", "gpu_straggler.trigger",
      gpus("AND NOT coalesce(g.idle_share > p.gpu_idle_share, false)",
           "AND NOT coalesce(g.idle_share > p.gpu_idle_share, true)"),
      ti("test_gpu_straggler_whose_idleness_is_unknown_is_not_idle")),
    m("gpu_straggler: 3 GPUs needed", "gpu_straggler.trigger",
      gpus("WHERE g.gpus_with_utilization >= p.gpu_straggler_min_gpus",
           "WHERE g.gpus_with_utilization > p.gpu_straggler_min_gpus"),
      ti("test_gpu_straggler_whose_idleness_is_unknown_is_not_idle")),
    m("gpu_straggler: GPUs without utilization count", "gpu_straggler.trigger",
      gpus("count(u.mean_utilization) OVER (PARTITION BY u.job_id) AS gpus_with_utilization",
           "count(*) OVER (PARTITION BY u.job_id) AS gpus_with_utilization"),
      S19 + "test_gpu_straggler_counts_only_gpus_with_utilization"),
    m("gpu_straggler: value is the gap to the median", "gpu_straggler.value",
      gpus("g.mean_utilization AS value,", "g.median_utilization - g.mean_utilization AS value,"),
      ti("test_gpu_straggler_more_than_20_points_below_the_median")),
    m("gpu_straggler: reference is the median less 20", "gpu_straggler.reference",
      gpus("g.median_utilization AS reference", "g.median_utilization - p.gpu_straggler_points AS reference"),
      ti("test_gpu_straggler_more_than_20_points_below_the_median")),
    m("gpu_straggler: info", "gpu_straggler.severity",
      gpus("SELECT job_id, kind, 'warning', CAST(nullif(host, '') AS VARCHAR), gpu_index, gpu_key, value, reference,"
           " message FROM stragglers",
           "SELECT job_id, kind, 'info', CAST(nullif(host, '') AS VARCHAR), gpu_index, gpu_key, value, reference,"
           " message FROM stragglers"),
      SEVERITIES),
    # --- gpu_throttled -------------------------------------------------------------------------------------------
    m("gpu_throttled: throttled exactly a tenth of the time", "gpu_throttled.trigger",
      gpus("WHERE g.throttled_share > p.gpu_throttled_share", "WHERE g.throttled_share >= p.gpu_throttled_share"),
      ti("test_gpu_throttled_more_than_a_tenth_of_the_time")),
    m("gpu_throttled: share 0.12 by default", "gpu_throttled.trigger", default("gpu_throttled.share", "0.1", "0.12"),
      ti("test_gpu_throttled_more_than_a_tenth_of_the_time")),
    m("rollups: the GPU idle reason is throttling", "gpu_throttled.trigger job_gpus.throttled_share",
      rollup(MASK, MASK.replace("236", "237")), ti("test_gpu_throttled_more_than_a_tenth_of_the_time")),
    m("rollups: sync boost is throttling", "gpu_throttled.trigger job_gpus.throttled_share",
      rollup(MASK, MASK.replace("236", "252")),
      S19 + "test_gpu_throttled_reasons_are_the_0xec_mask_over_time_with_a_mask"),
    m("rollups: the HW power brake is no throttling", "gpu_throttled.trigger job_gpus.throttled_share",
      rollup(MASK, MASK.replace("236", "108")),
      S19 + "test_gpu_throttled_reasons_are_the_0xec_mask_over_time_with_a_mask"),
    m("rollups: the throttled share over intervals without a reasons mask too",
      "gpu_throttled.trigger gpu_throttled.value job_gpus.throttled_share",
      rollup("CASE WHEN clocks_event_reasons IS NOT NULL THEN interval_seconds END AS reasons_interval",
             "interval_seconds AS reasons_interval"),
      S19 + "test_gpu_throttled_reasons_are_the_0xec_mask_over_time_with_a_mask"),
    m("gpu_throttled: value is the throttled seconds", "gpu_throttled.value",
      gpus("g.throttled_share AS value", "g.throttled_seconds AS value"),
      ti("test_gpu_throttled_more_than_a_tenth_of_the_time")),
    m("gpu_throttled: reference is the idle share's", "gpu_throttled.reference",
      gpus("p.gpu_throttled_share AS reference", "p.gpu_idle_share AS reference"),
      ti("test_gpu_throttled_more_than_a_tenth_of_the_time")),
    m("gpu_throttled: info", "gpu_throttled.severity",
      gpus("SELECT job_id, kind, 'warning', CAST(nullif(host, '') AS VARCHAR), gpu_index, gpu_key, value, reference,"
           " message FROM throttled",
           "SELECT job_id, kind, 'info', CAST(nullif(host, '') AS VARCHAR), gpu_index, gpu_key, value, reference,"
           " message FROM throttled"),
      SEVERITIES),
    # --- low_gpu_utilization ---------------------------------------------------------------------------------------
    m("low_gpu_utilization: 50 is low", "low_gpu_utilization.trigger",
      gpus("WHERE a.average_gpu_utilization < p.low_gpu_utilization_percent",
           "WHERE a.average_gpu_utilization <= p.low_gpu_utilization_percent"),
      ti("test_low_gpu_utilization_below_50_after_600_seconds")),
    m("low_gpu_utilization: percent 49 by default", "low_gpu_utilization.trigger",
      default("low_gpu_utilization.percent", "50", "49"), ti("test_low_gpu_utilization_below_50_after_600_seconds")),
    m("low_gpu_utilization: more than 600 s of training", "low_gpu_utilization.trigger",
      gpus("AND a.training_seconds >= p.low_gpu_utilization_min_training_seconds",
           "AND a.training_seconds > p.low_gpu_utilization_min_training_seconds"),
      ti("test_low_gpu_utilization_below_50_after_600_seconds")),
    m("low_gpu_utilization: 600 s of total time", "low_gpu_utilization.trigger",
      gpus("AND a.training_seconds >= p.low_gpu_utilization_min_training_seconds",
           "AND a.total_seconds >= p.low_gpu_utilization_min_training_seconds"),
      ti("test_low_gpu_utilization_below_50_after_600_seconds")),
    m("low_gpu_utilization: value and reference swapped", "low_gpu_utilization.value low_gpu_utilization.reference",
      gpus("a.average_gpu_utilization AS value,\n           p.low_gpu_utilization_percent AS reference",
           "p.low_gpu_utilization_percent AS value,\n           a.average_gpu_utilization AS reference"),
      ti("test_low_gpu_utilization_below_50_after_600_seconds")),
    m("low_gpu_utilization: info", "low_gpu_utilization.severity",
      gpus("SELECT job_id, kind, 'warning', CAST(NULL AS VARCHAR), CAST(NULL AS INTEGER), CAST(NULL AS VARCHAR),"
           " value, reference, message\nFROM low_utilization",
           "SELECT job_id, kind, 'info', CAST(NULL AS VARCHAR), CAST(NULL AS INTEGER), CAST(NULL AS VARCHAR),"
           " value, reference, message\nFROM low_utilization"),
      SEVERITIES),
    # --- memory_headroom --------------------------------------------------------------------------------------------
    m("memory_headroom: 40 % is headroom", "memory_headroom.trigger",
      gpus("AND @fdiv(a.peak_gpu_memory_mb; t.memory_total_mb) < p.memory_headroom_fraction",
           "AND @fdiv(a.peak_gpu_memory_mb; t.memory_total_mb) <= p.memory_headroom_fraction"),
      ti("test_memory_headroom_below_40_percent_of_the_total")),
    m("memory_headroom: fraction 0.3 by default", "memory_headroom.trigger",
      default("memory_headroom.fraction", "0.4", "0.3"), ti("test_memory_headroom_below_40_percent_of_the_total")),
    m("memory_headroom: more than 600 s of training", "memory_headroom.trigger",
      gpus("AND a.training_seconds >= p.memory_headroom_min_training_seconds",
           "AND a.training_seconds > p.memory_headroom_min_training_seconds"),
      ti("test_memory_headroom_below_40_percent_of_the_total")),
    m("memory_headroom: the step readings' total beats the samples'", "memory_headroom.trigger memory_headroom.value",
      gpus("CASE WHEN s.n > 0 THEN s.total ELSE l.total END AS memory_total_mb",
           "coalesce(l.total, s.total) AS memory_total_mb"),
      S19 + "test_memory_headroom_reads_the_samples_largest_total_and_the_peak"),
    m("memory_headroom: the smallest total", "memory_headroom.trigger memory_headroom.value",
      (gpus("max(memory_total_mb_max) AS total", "min(memory_total_mb_max) AS total"),
       gpus("max(memory_total_mb) FILTER (WHERE @finite(memory_total_mb)) AS total",
            "min(memory_total_mb) FILTER (WHERE @finite(memory_total_mb)) AS total")),
      S19 + "test_memory_headroom_reads_the_samples_largest_total_and_the_peak"),
    m("memory_headroom: value from the mean memory", "memory_headroom.value",
      gpus("@fdiv(a.peak_gpu_memory_mb; t.memory_total_mb) AS value",
           "@fdiv(a.average_gpu_memory_mb; t.memory_total_mb) AS value"),
      S19 + "test_memory_headroom_reads_the_samples_largest_total_and_the_peak"),
    m("memory_headroom: reference in percent", "memory_headroom.reference",
      gpus("p.memory_headroom_fraction AS reference", "100 * p.memory_headroom_fraction AS reference"),
      ti("test_memory_headroom_below_40_percent_of_the_total")),
    m("memory_headroom: a warning", "memory_headroom.severity",
      gpus("SELECT job_id, kind, 'info', CAST(NULL AS VARCHAR)",
           "SELECT job_id, kind, 'warning', CAST(NULL AS VARCHAR)"),
      ti("test_memory_headroom_below_40_percent_of_the_total")),
    # --- work_at_risk -------------------------------------------------------------------------------------------------
    m("work_at_risk: exactly 2 × the frequency", "work_at_risk.trigger",
      steps("AND e.last_step - coalesce(c.last_checkpoint, 0) > @fmul(p.work_at_risk_factor;",
            "AND e.last_step - coalesce(c.last_checkpoint, 0) >= @fmul(p.work_at_risk_factor;"),
      ti("test_work_at_risk_more_than_twice_the_checkpoint_frequency")),
    m("work_at_risk: factor 3 by default", "work_at_risk.trigger", default("work_at_risk.factor", "2", "3"),
      ti("test_work_at_risk_more_than_twice_the_checkpoint_frequency")),
    m("work_at_risk: none without a checkpoint", "work_at_risk.trigger",
      steps("LEFT JOIN (SELECT job_id, max(step) AS last_checkpoint",
            "JOIN (SELECT job_id, max(step) AS last_checkpoint"),
      ti("test_work_at_risk_more_than_twice_the_checkpoint_frequency")),
    m("work_at_risk: failed jobs only", "work_at_risk.trigger",
      steps("WHERE a.status IN ('failed', 'cancelled')", "WHERE a.status = 'failed'"),
      ti("test_work_at_risk_more_than_twice_the_checkpoint_frequency")),
    m("work_at_risk: completed jobs too", "work_at_risk.trigger",
      steps("WHERE a.status IN ('failed', 'cancelled')", "WHERE a.status IN ('failed', 'cancelled', 'completed')"),
      ti("test_work_at_risk_more_than_twice_the_checkpoint_frequency")),
    m("work_at_risk: from the first checkpoint", "work_at_risk.trigger work_at_risk.value",
      steps("max(step) AS last_checkpoint", "min(step) AS last_checkpoint"),
      S19 + "test_work_at_risk_counts_from_the_last_checkpoint"),
    m("work_at_risk: value is the last step", "work_at_risk.value",
      steps("CAST(e.last_step - coalesce(c.last_checkpoint, 0) AS DOUBLE PRECISION) AS value",
            "CAST(e.last_step AS DOUBLE PRECISION) AS value"),
      ti("test_work_at_risk_more_than_twice_the_checkpoint_frequency")),
    m("work_at_risk: reference is 2 × the frequency", "work_at_risk.reference",
      steps("a.checkpoint_frequency_steps AS reference",
            "@fmul(p.work_at_risk_factor; a.checkpoint_frequency_steps) AS reference"),
      ti("test_work_at_risk_more_than_twice_the_checkpoint_frequency")),
    m("work_at_risk: critical", "work_at_risk.severity",
      steps("SELECT job_id, kind, 'warning', CAST(NULL AS BIGINT)",
            "SELECT job_id, kind, 'critical', CAST(NULL AS BIGINT)"),
      SEVERITIES),
    # --- silent_running -----------------------------------------------------------------------------------------------
    m("silent_running: silent exactly the limit", "silent_running.trigger",
      steps("WHERE s.silent_seconds > s.limit_seconds", "WHERE s.silent_seconds >= s.limit_seconds"),
      ti("test_silent_running_at_as_of")),
    m("silent_running: min_seconds 3600 by default", "silent_running.trigger silent_running.reference",
      default("silent_running.min_seconds", "1800", "3600"), ti("test_silent_running_at_as_of")),
    m("silent_running: the limit 20·g alone", "silent_running.trigger silent_running.reference",
      steps("THEN greatest(p.silent_running_min_seconds, p.silent_running_factor * e.g)",
            "THEN p.silent_running_factor * e.g"),
      ti("test_silent_running_at_as_of")),
    m("silent_running: the limit 30 min alone", "silent_running.trigger silent_running.reference",
      steps("THEN greatest(p.silent_running_min_seconds, p.silent_running_factor * e.g)",
            "THEN p.silent_running_min_seconds"),
      ti("test_silent_running_at_as_of")),
    m("silent_running: g counts the zero gaps", "silent_running.trigger silent_running.reference",
      steps("@median(x.gap) FILTER (WHERE x.gap > 0) AS g\n    FROM rows x\n    JOIN jobs j",
            "@median(x.gap) AS g\n    FROM rows x\n    JOIN jobs j"),
      S19 + "test_silent_running_latest_time_median_gap_and_status"),
    m("silent_running: updated_at beats a later row", "silent_running.trigger silent_running.value",
      steps("@seconds_between(greatest(e.last_ts, j.updated_at); p.as_of)",
            "@seconds_between(coalesce(j.updated_at, e.last_ts); p.as_of)"),
      S19 + "test_silent_running_latest_time_median_gap_and_status"),
    m("silent_running: the last row's time alone", "silent_running.trigger silent_running.value",
      steps("@seconds_between(greatest(e.last_ts, j.updated_at); p.as_of)", "@seconds_between(e.last_ts; p.as_of)"),
      ti("test_silent_running_at_as_of")),
    m("silent_running: the latest row time of all rows", "silent_running.value",
      steps("greatest(max(ts) FILTER (WHERE last_row), max(ts) FILTER (WHERE last_timing_row)) AS last_ts",
            "max(ts) AS last_ts"),
      TR + "test_the_end_is_the_last_rows_time_not_the_latest[duckdb]"),
    m("silent_running: a paused job too", "silent_running.trigger",
      steps("    WHERE j.status = 'running'\n),\nsilent AS",
            "    WHERE j.status IN ('running', 'paused')\n),\nsilent AS"),
      S19 + "test_silent_running_latest_time_median_gap_and_status"),
    m("silent_running: as_of is the first ingest run's start", "silent_running.value",
      view("insight_parameters",
           "(SELECT max(started_at) FROM ingest_runs)", "(SELECT min(started_at) FROM ingest_runs)"),
      ti("test_silent_running_at_as_of")),
    m("silent_running: value and reference swapped", "silent_running.value silent_running.reference",
      steps("s.silent_seconds AS value, s.limit_seconds AS reference",
            "s.limit_seconds AS value, s.silent_seconds AS reference"),
      ti("test_silent_running_at_as_of")),
    m("silent_running: critical", "silent_running.severity",
      steps("SELECT job_id, kind, 'warning', NULL, NULL, NULL, NULL, value, reference, message\nFROM silent",
            "SELECT job_id, kind, 'critical', NULL, NULL, NULL, NULL, value, reference, message\nFROM silent"),
      SEVERITIES),
)  # fmt: skip

GH = "tests/test_gpu_hours.py::"
GV = "tests/test_gpu_view_mutants_s19.py::"

# --- the GPU views' figures (docs/views.md: job_gpus, job_energy, job_gpu_hours, fleet_gpu_hours) ----------
GPU_VIEW_MUTATIONS: tuple[Mutation, ...] = (
    m("job_gpus: the idle share over intervals of unknown utilization too", "job_gpus.idle_share",
      view("job_gpus", "@ordered_fsum(utilization_seconds) AS utilization_seconds",
           "@ordered_fsum(interval_seconds) AS utilization_seconds"),
      GV + "test_idle_and_throttled_shares_count_the_time_they_are_known"),
    m("job_gpus: idle exactly half the time", "job_gpus.idle",
      view("job_gpus", "/ utilization_seconds > 0.5 END AS idle", "/ utilization_seconds >= 0.5 END AS idle"),
      GV + "test_idle_and_throttled_shares_count_the_time_they_are_known"),
    m("job_gpus: a GPU never throttled has no throttled share", "job_gpus.throttled_share",
      view("job_gpus", "THEN coalesce(throttled_seconds, 0) / reasons_seconds END AS throttled_share",
           "THEN throttled_seconds / reasons_seconds END AS throttled_share"),
      GV + "test_idle_and_throttled_shares_count_the_time_they_are_known"),
    m("rollups: energy as left rectangles", "job_gpus.energy_wh job_energy.total_energy_wh",
      rollup("(power_w + next_power_w) / 2 * interval_seconds", "power_w * interval_seconds"),
      GPU + "test_resource_utilization_comes_from_the_samples[duckdb]"),
    m("rollups: energy in joules", "job_gpus.energy_wh job_energy.total_energy_wh",
      rollup("@ordered_sum(energy_term) / 3600 AS energy_wh", "@ordered_sum(energy_term) AS energy_wh"),
      GPU + "test_resource_utilization_comes_from_the_samples[duckdb]"),
    m("job_energy: the total is the highest GPU's", "job_energy.total_energy_wh",
      view("job_energy", "@ordered_fsum(energy_wh) AS energy_wh,", "max(energy_wh) AS energy_wh,"),
      GPU + "test_resource_utilization_comes_from_the_samples[duckdb]"),
    m("job_energy: per sample, not per 1000", "job_energy.energy_per_1000_samples_wh",
      view("job_energy", "@fdiv(g.energy_wh; @fdiv(p.total_samples; 1000))", "@fdiv(g.energy_wh; p.total_samples)"),
      GPU + "test_resource_utilization_comes_from_the_samples[duckdb]"),
    m("job_energy: every GPU is counted idle", "job_energy.idle_gpus",
      view("job_energy", "count(*) FILTER (WHERE idle) END AS idle_gpus", "count(*) END AS idle_gpus"),
      GPU + "test_resource_utilization_comes_from_the_samples[duckdb]"),
    m("job_energy: idle GPUs are those idle at all", "job_energy.idle_gpus",
      view("job_energy",
           "count(*) FILTER (WHERE idle) END AS idle_gpus", "count(*) FILTER (WHERE idle_share > 0) END AS idle_gpus"),
      GV + "test_idle_and_throttled_shares_count_the_time_they_are_known"),
    m("job_energy: GPUs of unknown idleness count 0 idle", "job_energy.idle_gpus",
      view("job_energy", "CASE WHEN count(idle) > 0 THEN count(*) FILTER (WHERE idle) END AS idle_gpus",
           "count(*) FILTER (WHERE idle) AS idle_gpus"),
      S23 + "test_idle_gpus_is_unknown_where_no_gpu_has_a_utilization"),
    m("job_energy: a GPU without a reasons mask throttled 0", "job_energy.average_throttled_share",
      view("job_energy", "nullif(count(throttled_share), 0)) AS average_throttled_share",
           "nullif(count(*), 0)) AS average_throttled_share"),
      GV + "test_idle_and_throttled_shares_count_the_time_they_are_known"),
    m("job_gpu_hours: the config's gpu_count beats the GPUs seen", "job_gpu_hours.gpus job_gpu_hours.gpu_hours",
      view("job_gpu_hours",
           "CASE WHEN coalesce(s.gpus, l.gpus, 0) > 0 THEN coalesce(s.gpus, l.gpus) ELSE j.gpu_count END",
           "coalesce(j.gpu_count, s.gpus, l.gpus)"),
      GH + "test_each_job_holds_its_gpus_for_its_whole_duration[duckdb]"),
    m("job_gpu_hours: hours of training, not of the whole job", "job_gpu_hours.gpu_hours",
      view("job_gpu_hours", "           a.total_seconds\n", "           a.training_seconds AS total_seconds\n"),
      GH + "test_each_job_holds_its_gpus_for_its_whole_duration[duckdb]"),
    m("fleet_gpu_hours: the largest job's", "fleet_gpu_hours.gpu_hours",
      view("fleet_gpu_hours", "@ordered_fsum(gpu_hours) AS gpu_hours", "max(gpu_hours) AS gpu_hours"),
      GH + "test_the_endpoint_the_view_and_the_docs_agree[duckdb]"),
    m("fleet_gpu_hours: every job counted", "fleet_gpu_hours.gpu_hours_jobs",
      view("fleet_gpu_hours", "count(gpu_hours) AS gpu_hours_jobs", "count(*) AS gpu_hours_jobs"),
      GH + "test_the_endpoint_the_view_and_the_docs_agree[duckdb]"),
)  # fmt: skip

MUTATIONS: tuple[Mutation, ...] = (*FIGURE_MUTATIONS, *INSIGHT_MUTATIONS, *GPU_VIEW_MUTATIONS)


# --- the run ------------------------------------------------------------------------------------------


def check_list() -> list[str]:
    """Problems with the list itself: unknown figures, figures without a mutation, figures of
    analytics.md missing from FIGURES, kinds of insights.md missing from INSIGHTS."""
    problems = []
    names = [mu.name for mu in MUTATIONS]
    problems += [f"two mutations are named {n!r}" for n in sorted({n for n in names if names.count(n) > 1})]
    covered = {f for mu in MUTATIONS for f in mu.figures}
    problems += [f"{mu.name}: unknown figure {f!r}" for mu in MUTATIONS for f in mu.figures if f not in EVERY_FIGURE]
    problems += [f"no mutation for the figure {f}" for f in EVERY_FIGURE if f not in covered]
    if ANALYTICS_MD.exists():  # a figure defined there ("`name` = ...") must be on the list
        known = {f.rsplit(".", 1)[-1] for f in FIGURES}
        defined = set(re.findall(r"`(\w+)` =", ANALYTICS_MD.read_text()))
        problems += [f"analytics.md defines {n}, which FIGURES lacks" for n in sorted(defined - known)]
    if INSIGHTS_MD.exists():  # a kind defined there ("- **`kind`** (severity)") must be on the list
        kinds = {f.split(".", 1)[0] for f in INSIGHTS}
        defined = set(re.findall(r"^- \*\*`(\w+)`\*\*", INSIGHTS_MD.read_text(), re.M))
        problems += [f"insights.md defines the kind {n}, which INSIGHTS lacks" for n in sorted(defined - kinds)]
    return problems


def repository_files() -> list[str]:
    """The files of a checkout (tracked, and new ones git does not ignore), and the built C reader."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO, capture_output=True, check=True,
        ).stdout  # fmt: skip
        files = [f for f in out.decode().split("\0") if f]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: everything but what tools make
        skip = {".git", ".venv", "__pycache__", ".pytest_cache", ".hypothesis", ".mypy_cache", ".ruff_cache"}
        files = []
        for folder, dirs, names in os.walk(REPO):
            here = Path(folder)
            links = [d for d in dirs if (here / d).is_symlink()]  # runlytics/api -> ../api: a link, copied as one
            dirs[:] = [d for d in dirs if d not in skip and d not in links]
            files += [(here / n).relative_to(REPO).as_posix() for n in [*names, *links]]
    built = [p.relative_to(REPO).as_posix() for p in (REPO / "ingest").glob("_history*.so")]
    return sorted(set(files) | set(built))


def make_copy(target: Path, files: list[str]) -> None:
    for name in files:
        source = REPO / name
        if not source.exists() and not source.is_symlink():  # deleted in the working tree
            continue
        dest = target / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest, follow_symlinks=False)


def copy_env(copy: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(copy), env.get("PYTHONPATH")]))
    return env


def imports_the_copy(copy: Path) -> str | None:
    """None when the copy's tests import the copy's code; else where they import it from (an
    installed runlytics first on the path would make every mutation survive)."""
    code = "import runlytics.warehouse.fleet as f, runlytics.api.app as a; print(f.__file__); print(a.__file__)"
    done = subprocess.run([sys.executable, "-c", code], cwd=copy, env=copy_env(copy), capture_output=True, text=True)
    paths = done.stdout.split()
    inside = done.returncode == 0 and all(Path(p).resolve().is_relative_to(copy.resolve()) for p in paths)
    return None if inside else (done.stdout + done.stderr).strip()


def run_tests(copy: Path, tests: tuple[str, ...], basetemp: Path) -> tuple[int, str]:
    command = [sys.executable, "-m", "pytest", *PYTEST, f"--basetemp={basetemp}", *tests]
    try:
        done = subprocess.run(
            command, cwd=copy, env=copy_env(copy), capture_output=True, text=True, timeout=RUN_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        return -1, f"no answer in {RUN_TIMEOUT} s"
    return done.returncode, done.stdout[-3000:] + done.stderr[-2000:]


@contextmanager
def mutated(copy: Path, mutation: Mutation) -> Iterator[None]:
    """The copy with the mutation's edits; restored afterwards, whatever happens."""
    originals: dict[Path, str] = {}
    try:
        for edit in mutation.edits:
            path = copy / edit.path
            targets = [path]
            if edit.path.startswith("warehouse/sql/"):
                # the migrations build the views from frozen copies: edit those that hold this text
                text = path.read_text()
                targets += [p for p in sorted((copy / FROZEN).glob(f"*/{path.name}")) if p.read_text() == text]
                if len(targets) == 1:
                    raise LookupError(f"no frozen copy of {edit.path} holds its text (a migration to come?)")
            for target in targets:
                originals.setdefault(target, target.read_text())
                target.write_text(edit.apply(target.read_text()))
        yield
    finally:
        for target, text in originals.items():
            target.write_text(text)


@dataclass
class Outcome:
    mutation: Mutation
    verdict: str  # killed, SURVIVED, ERROR
    seconds: float
    detail: str = ""


def try_mutation(copy: Path, mutation: Mutation) -> Outcome:
    started = time.monotonic()
    try:
        with mutated(copy, mutation):
            code, output = run_tests(copy, mutation.tests, copy.parent / f"pytest-{copy.name}")
    except LookupError as error:
        return Outcome(mutation, "ERROR", time.monotonic() - started, str(error))
    seconds = time.monotonic() - started
    if code == 1:  # a test failed: the tests noticed (how: the first lines pytest marks "E")
        return Outcome(mutation, "killed", seconds, "\n".join(re.findall(r"^E .*$", output, re.M)[:3]))
    if code == 0:
        return Outcome(mutation, "SURVIVED", seconds, "its tests pass with the mutation")
    return Outcome(mutation, "ERROR", seconds, f"pytest exit {code}:\n{output}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", default=[], metavar="TEXT",
                        help="run the mutations whose name holds TEXT (repeatable)")  # fmt: skip
    parser.add_argument("--list", action="store_true", help="list the mutations and their figures, run nothing")
    parser.add_argument("--jobs", type=int, default=1, help="mutations tried at once, each in its own copy")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--why", action="store_true", help="show how the tests noticed each mutation")
    args = parser.parse_args(argv)

    problems = check_list()
    for problem in problems:
        print(f"list: {problem}")
    chosen = [mu for mu in MUTATIONS if not args.only or any(t in mu.name for t in args.only)]
    if args.list:
        for mu in chosen:
            print(f"{mu.name}  [{', '.join(mu.figures)}]\n    {' '.join(mu.tests)}")
        print(f"{len(chosen)} mutations, {len(EVERY_FIGURE)} figures")
        return 1 if problems else 0
    if not chosen:
        print("no mutation matches")
        return 1

    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="runlytics-mutations-"))
    try:
        files = repository_files()
        jobs = max(1, min(args.jobs, len(chosen)))
        copies = [scratch / f"copy{i}" / REPO.name for i in range(jobs)]
        for copy in copies:
            make_copy(copy, files)
            if SHARED.exists():  # the tests read ../shared (the real data) beside the repository
                (copy.parent / "shared").symlink_to(SHARED, target_is_directory=True)
        print(f"{len(chosen)} mutations of {len(MUTATIONS)}, {jobs} at a time, in {scratch}")

        wrong = imports_the_copy(copies[0])
        if wrong is not None:
            print(f"the copy's tests would not import the copy's code, but:\n{wrong}")
            return 1
        # the tests must pass before any mutation, or a failure proves nothing
        tests = tuple(dict.fromkeys(t for mu in chosen for t in mu.tests))
        code, output = run_tests(copies[0], tests, scratch / "pytest-baseline")
        if code != 0:
            print(f"baseline: the {len(tests)} tests fail without any mutation (pytest exit {code}):\n{output}")
            return 1
        print(f"baseline: {len(tests)} tests pass unmutated ({time.monotonic() - started:.0f} s)")

        free = list(copies)
        outcomes: list[Outcome] = []

        def attempt(mutation: Mutation) -> Outcome:
            copy = free.pop()
            try:
                outcome = try_mutation(copy, mutation)
            finally:
                free.append(copy)
            print(f"{outcome.verdict:9} {outcome.seconds:5.1f} s  {mutation.name}", flush=True)
            if outcome.detail and (outcome.verdict != "killed" or args.why):
                print("          " + outcome.detail.replace("\n", "\n          ")[:4000], flush=True)
            return outcome

        with ThreadPoolExecutor(jobs) as pool:
            outcomes = list(pool.map(attempt, chosen))
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)

    survived = [o.mutation.name for o in outcomes if o.verdict == "SURVIVED"]
    errors = [o.mutation.name for o in outcomes if o.verdict == "ERROR"]
    minutes, seconds = divmod(int(time.monotonic() - started), 60)
    print(
        f"{len(outcomes)} mutations: {len(outcomes) - len(survived) - len(errors)} killed, "
        f"{len(survived)} survived, {len(errors)} errors, in {minutes}m{seconds:02d}s"
    )
    for name in survived:
        print(f"survived: {name}")
    return 1 if survived or errors or problems else 0


if __name__ == "__main__":
    sys.exit(main())
