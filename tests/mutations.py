"""Mutation check: each figure's rule, changed on purpose, must make a test fail.

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


MUTATIONS: tuple[Mutation, ...] = (
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
      view("job_checkpoints",
           "CASE WHEN save_steps > 0 THEN CAST(save_steps AS DOUBLE PRECISION) ELSE median_gap END",
           "coalesce(median_gap, CAST(save_steps AS DOUBLE PRECISION))"),
      A + "test_save_steps_beats_the_median_gap"),
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


# --- the run ------------------------------------------------------------------------------------------


def check_list() -> list[str]:
    """Problems with the list itself: unknown figures, figures without a mutation, figures of
    analytics.md missing from FIGURES."""
    problems = []
    names = [mu.name for mu in MUTATIONS]
    problems += [f"two mutations are named {n!r}" for n in sorted({n for n in names if names.count(n) > 1})]
    covered = {f for mu in MUTATIONS for f in mu.figures}
    problems += [f"{mu.name}: unknown figure {f!r}" for mu in MUTATIONS for f in mu.figures if f not in FIGURES]
    problems += [f"no mutation for the figure {f}" for f in FIGURES if f not in covered]
    if ANALYTICS_MD.exists():  # a figure defined there ("`name` = ...") must be on the list
        known = {f.rsplit(".", 1)[-1] for f in FIGURES}
        defined = set(re.findall(r"`(\w+)` =", ANALYTICS_MD.read_text()))
        problems += [f"analytics.md defines {n}, which FIGURES lacks" for n in sorted(defined - known)]
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
        print(f"{len(chosen)} mutations, {len(FIGURES)} figures")
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
