"""The analytics views: every figure of ``shared/spec/analytics.md``, computed in SQL.

Each constant is one view. A migration that changes a view adds a new constant
(``JOB_LOSSES_V2`` …) and creates it; older revisions keep referring to the versions they
created, so upgrading from any revision replays history faithfully. ``CURRENT`` lists the
views of the head revision in dependency order; ``docs/views.md`` documents their columns.

Templates use the ``@macro(arg; arg)`` placeholders of ``warehouse/dialect.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .dialect import DUCKDB, render

TERMINAL_STATUSES = ("completed", "failed", "cancelled")
STATUSES = ("queued", "running", "paused", "completed", "failed", "cancelled")


@dataclass(frozen=True)
class View:
    name: str
    template: str

    def create_sql(self, dialect: dict[str, str] = DUCKDB) -> str:
        return f"CREATE OR REPLACE VIEW {self.name} AS\n{render(self.template, dialect)}"

    def drop_sql(self) -> str:
        return f"DROP VIEW IF EXISTS {self.name}"


# One row per step row, with what the row covers (analytics.md, "One job"):
# delta = iterations since the previous row, seconds and samples as the rules derive them.
STEP_METRICS_V1 = View(
    "step_metrics",
    """
WITH ordered AS (
    SELECT s.*,
           s.step - coalesce(lag(s.step) OVER w, 0) AS delta,
           lag(s.ts) OVER w AS prev_ts,
           row_number() OVER w AS row_no,
           count(*) OVER (PARTITION BY s.job_id) AS row_count
    FROM steps s
    WINDOW w AS (PARTITION BY s.job_id ORDER BY s.step)
), timed AS (
    SELECT o.*,
           CASE
               WHEN @finite(o.iteration_time) THEN o.iteration_time * o.delta
               WHEN o.ts IS NOT NULL AND o.prev_ts IS NOT NULL AND o.ts >= o.prev_ts
                   THEN @seconds_between(o.prev_ts; o.ts)
           END AS seconds
    FROM ordered o
)
SELECT t.job_id, t.step, t.ts, t.delta, t.seconds, t.row_no, t.row_count,
       CASE
           WHEN t.samples IS NOT NULL THEN CAST(t.samples AS DOUBLE)
           WHEN j.batch_size IS NOT NULL THEN j.batch_size * t.delta
           WHEN @finite(t.samples_per_second) AND t.seconds IS NOT NULL
               THEN t.samples_per_second * t.seconds
       END AS samples,
       t.loss, t.eval_loss, t.learning_rate, t.samples_per_second, t.iteration_time
FROM timed t
LEFT JOIN jobs j ON j.job_id = t.job_id
""",
)

JOB_PERFORMANCE_V1 = View(
    "job_performance",
    """
WITH agg AS (
    SELECT j.job_id,
           j.current_step,
           max(m.step) AS max_step,
           count(m.step) AS step_rows,
           count(m.seconds) AS timed_rows,
           sum(m.samples) AS total_samples,
           sum(m.samples) FILTER (WHERE m.seconds IS NOT NULL) AS timed_samples,
           sum(m.seconds) FILTER (WHERE m.samples IS NOT NULL) AS timed_seconds,
           sum(m.seconds) AS known_seconds,
           sum(m.delta) FILTER (WHERE m.seconds IS NOT NULL) AS timed_iterations,
           avg(m.samples_per_second) FILTER (WHERE @finite(m.samples_per_second)) AS mean_samples_per_second,
           max(m.samples_per_second) FILTER (WHERE @finite(m.samples_per_second)) AS peak_samples_per_second,
           count(*) FILTER (WHERE m.samples_per_second IS NOT NULL
                            AND NOT @finite(m.samples_per_second)) AS nonfinite_samples_per_second,
           count(*) FILTER (WHERE m.iteration_time IS NOT NULL
                            AND NOT @finite(m.iteration_time)) AS nonfinite_iteration_time
    FROM jobs j
    LEFT JOIN step_metrics m ON m.job_id = j.job_id
    GROUP BY j.job_id, j.current_step
)
SELECT job_id,
       step_rows,
       timed_rows,
       CASE WHEN max_step IS NULL THEN current_step
            WHEN current_step IS NULL THEN max_step
            ELSE greatest(max_step, current_step) END AS total_iterations,
       total_samples,
       CASE WHEN timed_seconds > 0 THEN timed_samples / timed_seconds
            ELSE mean_samples_per_second END AS average_samples_per_second,
       NOT coalesce(timed_seconds > 0, false) AND mean_samples_per_second IS NOT NULL
           AS throughput_is_plain_mean,
       peak_samples_per_second,
       CASE WHEN timed_iterations > 0 THEN known_seconds / timed_iterations END AS average_iteration_time,
       known_seconds,
       nonfinite_samples_per_second,
       nonfinite_iteration_time
FROM agg
""",
)

JOB_DURATION_V1 = View(
    "job_duration",
    """
WITH edges AS (
    SELECT job_id,
           max(ts) FILTER (WHERE row_no = row_count) AS last_ts,
           max(@seconds_between(TIMESTAMP '1970-01-01 00:00:00'; ts) - seconds)
               FILTER (WHERE row_no = 1) AS first_row_start_epoch,
           sum(seconds) AS training_seconds
    FROM step_metrics
    GROUP BY job_id
), bounds AS (
    SELECT j.job_id,
           CASE WHEN j.started_at IS NOT NULL
                    THEN @seconds_between(TIMESTAMP '1970-01-01 00:00:00'; j.started_at)
                ELSE e.first_row_start_epoch END AS start_epoch,
           CASE WHEN j.status IN ('completed', 'failed', 'cancelled') AND j.ended_at IS NOT NULL
                    THEN j.ended_at
                ELSE greatest(e.last_ts, j.updated_at) END AS end_ts,
           e.training_seconds
    FROM jobs j
    LEFT JOIN edges e ON e.job_id = j.job_id
)
SELECT job_id,
       @from_epoch(start_epoch) AS start_time,
       end_ts AS end_time,
       @seconds_between(TIMESTAMP '1970-01-01 00:00:00'; end_ts) - start_epoch AS total_seconds,
       training_seconds,
       -- greatest() skips NULLs in DuckDB, so unknown parts are tested first
       CASE WHEN end_ts IS NOT NULL AND start_epoch IS NOT NULL AND training_seconds IS NOT NULL
            THEN greatest(0, @seconds_between(TIMESTAMP '1970-01-01 00:00:00'; end_ts)
                             - start_epoch - training_seconds) END AS overhead_seconds
FROM bounds
""",
)

JOB_LOSSES_V1 = View(
    "job_losses",
    """
WITH agg AS (
    SELECT j.job_id,
           @first_by(s.loss; s.step) FILTER (WHERE @finite(s.loss)) AS initial_loss,
           @first_by(s.loss; s.step DESC) FILTER (WHERE @finite(s.loss)) AS final_loss,
           min(s.loss) FILTER (WHERE @finite(s.loss)) AS best_loss,
           @first_by(s.eval_loss; s.step DESC) FILTER (WHERE @finite(s.eval_loss)) AS final_eval_loss,
           min(s.eval_loss) FILTER (WHERE @finite(s.eval_loss)) AS best_eval_loss,
           count(*) FILTER (WHERE s.loss IS NOT NULL AND NOT @finite(s.loss)) AS nonfinite_losses,
           count(*) FILTER (WHERE s.eval_loss IS NOT NULL AND NOT @finite(s.eval_loss)) AS nonfinite_eval_losses
    FROM jobs j
    LEFT JOIN steps s ON s.job_id = j.job_id
    GROUP BY j.job_id
)
SELECT job_id, initial_loss, final_loss, best_loss,
       CASE WHEN initial_loss <> 0 THEN 100 * (initial_loss - final_loss) / initial_loss END
           AS loss_reduction_percent,
       final_eval_loss, best_eval_loss, nonfinite_losses, nonfinite_eval_losses
FROM agg
""",
)

# Until GPU samples exist (a later revision), the embedded per-step readings are the source.
JOB_RESOURCES_V1 = View(
    "job_resources",
    """
SELECT j.job_id,
       CASE WHEN count(g.gpu_index) > 0 THEN 'step_readings' END AS gpu_source,
       count(g.gpu_index) AS gpu_readings,
       count(DISTINCT g.gpu_index) AS gpus_seen,
       avg(g.utilization_percent) FILTER (WHERE @finite(g.utilization_percent)) AS average_gpu_utilization,
       avg(g.memory_used_mb) FILTER (WHERE @finite(g.memory_used_mb)) AS average_gpu_memory_mb,
       max(g.memory_used_mb) FILTER (WHERE @finite(g.memory_used_mb)) AS peak_gpu_memory_mb,
       avg(g.temperature_c) FILTER (WHERE @finite(g.temperature_c)) AS average_gpu_temp_celsius,
       max(g.temperature_c) FILTER (WHERE @finite(g.temperature_c)) AS peak_gpu_temp_celsius,
       count(*) FILTER (WHERE (g.utilization_percent IS NOT NULL AND NOT @finite(g.utilization_percent))
                           OR (g.memory_used_mb IS NOT NULL AND NOT @finite(g.memory_used_mb))
                           OR (g.temperature_c IS NOT NULL AND NOT @finite(g.temperature_c)))
           AS nonfinite_gpu_readings
FROM jobs j
LEFT JOIN step_gpus g ON g.job_id = j.job_id
GROUP BY j.job_id
""",
)

# Each checkpoint with what ranks it: its eval loss (its own entry's, else the step row's) and
# the training loss of the last step at or before it that has a finite loss.
CHECKPOINT_SCORES_V1 = View(
    "checkpoint_scores",
    """
SELECT c.job_id,
       c.step,
       'checkpoint-' || CAST(c.step AS VARCHAR) AS name,
       c.step - coalesce(lag(c.step) OVER (PARTITION BY c.job_id ORDER BY c.step), 0) AS gap,
       CASE WHEN @finite(c.eval_loss) THEN c.eval_loss
            WHEN @finite(s.eval_loss) THEN s.eval_loss END AS eval_loss,
       (SELECT @first_by(t.loss; t.step DESC)
          FROM steps t
         WHERE t.job_id = c.job_id AND t.step <= c.step AND @finite(t.loss)) AS train_loss
FROM checkpoints c
LEFT JOIN steps s ON s.job_id = c.job_id AND s.step = c.step
""",
)

JOB_CHECKPOINTS_V1 = View(
    "job_checkpoints",
    """
WITH agg AS (
    SELECT j.job_id,
           j.save_steps,
           count(c.step) AS total_checkpoints,
           @median(c.gap) AS median_gap,
           max(c.step) AS final_step,
           @first_by(c.step; c.eval_loss, c.step) FILTER (WHERE c.eval_loss IS NOT NULL) AS best_eval_step,
           @first_by(c.step; c.train_loss, c.step) FILTER (WHERE c.train_loss IS NOT NULL) AS best_train_step
    FROM jobs j
    LEFT JOIN checkpoint_scores c ON c.job_id = j.job_id
    GROUP BY j.job_id, j.save_steps
)
SELECT job_id,
       total_checkpoints,
       CASE WHEN save_steps > 0 THEN CAST(save_steps AS DOUBLE) ELSE median_gap END
           AS checkpoint_frequency_steps,
       'checkpoint-' || CAST(final_step AS VARCHAR) AS final_checkpoint,
       final_step AS final_checkpoint_step,
       'checkpoint-' || CAST(coalesce(best_eval_step, best_train_step) AS VARCHAR) AS best_checkpoint,
       coalesce(best_eval_step, best_train_step) AS best_checkpoint_step,
       CASE WHEN best_eval_step IS NOT NULL THEN 'eval_loss'
            WHEN best_train_step IS NOT NULL THEN 'training_loss' END AS best_checkpoint_by
FROM agg
""",
)

JOB_EFFICIENCY_V1 = View(
    "job_efficiency",
    """
WITH scores AS (
    SELECT j.job_id,
           r.average_gpu_utilization AS gpu_utilization_score,
           CASE WHEN j.target_samples_per_second > 0 THEN j.target_samples_per_second
                WHEN p.peak_samples_per_second > 0 THEN p.peak_samples_per_second END AS reference,
           CASE WHEN j.target_samples_per_second > 0 THEN 'target'
                WHEN p.peak_samples_per_second > 0 THEN 'peak' END AS throughput_reference,
           p.average_samples_per_second
    FROM jobs j
    JOIN job_performance p ON p.job_id = j.job_id
    JOIN job_resources r ON r.job_id = j.job_id
), scored AS (
    SELECT job_id, gpu_utilization_score, throughput_reference, reference,
           -- least() skips NULLs in DuckDB, so an unknown ratio is tested first
           CASE WHEN reference IS NOT NULL AND average_samples_per_second IS NOT NULL
                THEN least(100, 100 * average_samples_per_second / reference) END AS throughput_score
    FROM scores
)
SELECT job_id,
       gpu_utilization_score,
       throughput_score,
       CASE WHEN gpu_utilization_score IS NOT NULL AND throughput_score IS NOT NULL
                THEN (gpu_utilization_score + throughput_score) / 2
            ELSE coalesce(gpu_utilization_score, throughput_score) END AS overall_score,
       throughput_reference,
       reference AS throughput_reference_samples_per_second
FROM scored
""",
)

JOB_ANALYTICS_V1 = View(
    "job_analytics",
    """
SELECT j.job_id,
       j.status,
       j.model_name,
       j.created_at,
       j.started_at,
       j.ended_at,
       j.updated_at,
       -- duration
       d.start_time,
       d.end_time,
       d.total_seconds,
       d.training_seconds,
       d.overhead_seconds,
       -- performance
       p.total_iterations,
       p.total_samples,
       p.average_samples_per_second,
       p.peak_samples_per_second,
       p.average_iteration_time,
       -- losses
       l.initial_loss,
       l.final_loss,
       l.best_loss,
       l.loss_reduction_percent,
       l.final_eval_loss,
       l.best_eval_loss,
       -- resource_utilization
       r.average_gpu_utilization,
       r.average_gpu_memory_mb,
       r.peak_gpu_memory_mb,
       r.average_gpu_temp_celsius,
       r.peak_gpu_temp_celsius,
       r.gpu_source,
       -- checkpoints
       c.total_checkpoints,
       c.checkpoint_frequency_steps,
       c.final_checkpoint,
       c.best_checkpoint,
       -- efficiency
       e.gpu_utilization_score,
       e.throughput_score,
       e.overall_score,
       -- counts behind the warnings
       p.step_rows,
       p.timed_rows,
       l.nonfinite_losses,
       @compact_list(
           CASE WHEN p.step_rows = 0 THEN 'no step rows: performance, losses and durations are null' END,
           CASE WHEN r.gpu_readings = 0
                THEN 'no GPU readings: resource_utilization and gpu_utilization_score are null' END,
           CASE WHEN p.step_rows > p.timed_rows
                THEN 'training time partly unknown: ' || CAST(p.step_rows - p.timed_rows AS VARCHAR)
                     || ' of ' || CAST(p.step_rows AS VARCHAR)
                     || ' step rows have neither iteration_time nor timestamps to time them' END,
           CASE WHEN p.throughput_is_plain_mean
                THEN 'average_samples_per_second is the plain mean of samples_per_second:'
                     || ' no step row has both samples and seconds' END,
           CASE WHEN p.step_rows > 0 AND d.start_time IS NULL
                THEN 'start unknown: no started_at, and the first step row has no timestamp or seconds' END,
           CASE WHEN d.end_time IS NULL AND p.step_rows > 0
                THEN 'end unknown: no ended_at, updated_at or step timestamps' END,
           CASE WHEN l.nonfinite_losses > 0
                THEN CAST(l.nonfinite_losses AS VARCHAR) || ' non-finite loss value(s) left out' END,
           CASE WHEN l.nonfinite_eval_losses > 0
                THEN CAST(l.nonfinite_eval_losses AS VARCHAR) || ' non-finite eval_loss value(s) left out' END,
           CASE WHEN p.nonfinite_samples_per_second + p.nonfinite_iteration_time > 0
                THEN CAST(p.nonfinite_samples_per_second + p.nonfinite_iteration_time AS VARCHAR)
                     || ' non-finite samples_per_second or iteration_time value(s) left out' END,
           CASE WHEN r.nonfinite_gpu_readings > 0
                THEN CAST(r.nonfinite_gpu_readings AS VARCHAR) || ' GPU reading(s) with non-finite values left out' END,
           CASE WHEN l.initial_loss = 0 THEN 'loss_reduction_percent is null: the initial loss is 0' END,
           CASE WHEN p.step_rows > 0 AND l.initial_loss IS NULL THEN 'no finite loss values' END,
           CASE WHEN c.total_checkpoints = 0 THEN 'no checkpoints' END,
           CASE WHEN e.throughput_score IS NULL AND p.average_samples_per_second IS NOT NULL
                THEN 'throughput_score is null: no positive target_samples_per_second or peak' END
       ) AS warnings
FROM jobs j
JOIN job_duration d ON d.job_id = j.job_id
JOIN job_performance p ON p.job_id = j.job_id
JOIN job_losses l ON l.job_id = j.job_id
JOIN job_resources r ON r.job_id = j.job_id
JOIN job_checkpoints c ON c.job_id = j.job_id
JOIN job_efficiency e ON e.job_id = j.job_id
""",
)


# --- revision 0002: Hugging Face Trainer states -------------------------------------------

# A job's step rows from both sources, merged by (job, step): a progress.json field wins over
# the same field from a trainer state.
STEP_FACTS_V1 = View(
    "step_facts",
    """
SELECT coalesce(s.job_id, t.job_id) AS job_id,
       coalesce(s.step, t.step) AS step,
       s.ts,
       coalesce(s.loss, t.loss) AS loss,
       coalesce(s.eval_loss, t.eval_loss) AS eval_loss,
       coalesce(s.learning_rate, t.learning_rate) AS learning_rate,
       s.samples_per_second,
       s.iteration_time,
       s.samples,
       t.grad_norm,
       t.epoch,
       t.metrics,
       CASE WHEN t.step IS NULL THEN 'progress' WHEN s.step IS NULL THEN 'trainer_state' ELSE 'both' END AS source
FROM steps s
FULL OUTER JOIN trainer_steps t ON t.job_id = s.job_id AND t.step = s.step
""",
)

# Job settings with the trainer's own where the progress file has none.
JOB_SETTINGS_V1 = View(
    "job_settings",
    """
SELECT j.job_id,
       coalesce(j.batch_size, CAST(r.train_batch_size AS DOUBLE)) AS batch_size,
       coalesce(j.save_steps, r.save_steps) AS save_steps,
       j.target_samples_per_second,
       r.best_model_checkpoint AS trainer_best_checkpoint,
       r.train_runtime,
       r.train_samples_per_second
FROM jobs j
LEFT JOIN trainer_runs r ON r.job_id = j.job_id
""",
)

STEP_METRICS_V2 = View(
    "step_metrics",
    STEP_METRICS_V1.template.replace("FROM steps s\n", "FROM step_facts s\n")
    .replace("LEFT JOIN jobs j ON j.job_id = t.job_id", "LEFT JOIN job_settings j ON j.job_id = t.job_id")
    .replace(
        "t.loss, t.eval_loss, t.learning_rate, t.samples_per_second, t.iteration_time\n",
        "t.loss, t.eval_loss, t.learning_rate, t.samples_per_second, t.iteration_time,\n"
        "       t.grad_norm, t.epoch, t.metrics, t.source\n",
    ),
)

# Without timed rows, a trainer's final summary gives the throughput (train_samples_per_second).
JOB_PERFORMANCE_V2 = View(
    "job_performance",
    JOB_PERFORMANCE_V1.template.replace(
        "    FROM jobs j\n    LEFT JOIN step_metrics m ON m.job_id = j.job_id\n    GROUP BY j.job_id, j.current_step\n",
        "    FROM jobs j\n    LEFT JOIN step_metrics m ON m.job_id = j.job_id\n    GROUP BY j.job_id, j.current_step\n"
        "), trained AS (\n"
        "    SELECT a.*, s.train_samples_per_second FROM agg a LEFT JOIN job_settings s ON s.job_id = a.job_id\n",
    )
    .replace(
        "       CASE WHEN timed_seconds > 0 THEN timed_samples / timed_seconds\n"
        "            ELSE mean_samples_per_second END AS average_samples_per_second,\n"
        "       NOT coalesce(timed_seconds > 0, false) AND mean_samples_per_second IS NOT NULL\n"
        "           AS throughput_is_plain_mean,\n",
        "       CASE WHEN timed_seconds > 0 THEN timed_samples / timed_seconds\n"
        "            WHEN @finite(train_samples_per_second) THEN train_samples_per_second\n"
        "            ELSE mean_samples_per_second END AS average_samples_per_second,\n"
        "       NOT coalesce(timed_seconds > 0, false) AND NOT coalesce(@finite(train_samples_per_second), false)\n"
        "           AND mean_samples_per_second IS NOT NULL AS throughput_is_plain_mean,\n"
        "       NOT coalesce(timed_seconds > 0, false) AND coalesce(@finite(train_samples_per_second), false)\n"
        "           AS throughput_from_trainer,\n",
    )
    .replace("FROM agg\n", "FROM trained\n"),
)

# Without any timed row, a trainer's train_runtime is the training time (and the total).
JOB_DURATION_V2 = View(
    "job_duration",
    """
WITH edges AS (
    SELECT job_id,
           max(ts) FILTER (WHERE row_no = row_count) AS last_ts,
           max(@seconds_between(TIMESTAMP '1970-01-01 00:00:00'; ts) - seconds)
               FILTER (WHERE row_no = 1) AS first_row_start_epoch,
           sum(seconds) AS timed_seconds
    FROM step_metrics
    GROUP BY job_id
), bounds AS (
    SELECT j.job_id,
           CASE WHEN j.started_at IS NOT NULL
                    THEN @seconds_between(TIMESTAMP '1970-01-01 00:00:00'; j.started_at)
                ELSE e.first_row_start_epoch END AS start_epoch,
           CASE WHEN j.status IN ('completed', 'failed', 'cancelled') AND j.ended_at IS NOT NULL
                    THEN j.ended_at
                ELSE greatest(e.last_ts, j.updated_at) END AS end_ts,
           e.timed_seconds,
           CASE WHEN @finite(s.train_runtime) THEN s.train_runtime END AS train_runtime
    FROM jobs j
    LEFT JOIN edges e ON e.job_id = j.job_id
    LEFT JOIN job_settings s ON s.job_id = j.job_id
), spans AS (
    SELECT job_id, start_epoch, end_ts,
           @seconds_between(TIMESTAMP '1970-01-01 00:00:00'; end_ts) - start_epoch AS span_seconds,
           coalesce(timed_seconds, train_runtime) AS training_seconds,
           timed_seconds IS NULL AND train_runtime IS NOT NULL AS from_trainer_runtime
    FROM bounds
)
SELECT job_id,
       @from_epoch(start_epoch) AS start_time,
       end_ts AS end_time,
       CASE WHEN span_seconds IS NOT NULL THEN span_seconds
            WHEN from_trainer_runtime THEN training_seconds END AS total_seconds,
       training_seconds,
       -- greatest() skips NULLs in DuckDB, so unknown parts are tested first
       CASE WHEN span_seconds IS NOT NULL AND training_seconds IS NOT NULL
                THEN greatest(0, span_seconds - training_seconds)
            WHEN from_trainer_runtime THEN 0 END AS overhead_seconds,
       from_trainer_runtime
FROM spans
""",
)

# A start epoch no timestamp can hold (a first row whose iteration_time is absurd, say 1e308
# seconds, puts it before any date) gives no start_time, instead of failing every query.
JOB_DURATION_V3 = View(
    "job_duration",
    JOB_DURATION_V2.template.replace(
        "@from_epoch(start_epoch) AS start_time",
        "@from_epoch(CASE WHEN abs(start_epoch) < 1e12 THEN start_epoch END) AS start_time",
    ),
)

JOB_LOSSES_V2 = View("job_losses", JOB_LOSSES_V1.template.replace("LEFT JOIN steps s ON", "LEFT JOIN step_facts s ON"))

CHECKPOINT_SCORES_V2 = View(
    "checkpoint_scores",
    CHECKPOINT_SCORES_V1.template.replace("LEFT JOIN steps s ON", "LEFT JOIN step_facts s ON").replace(
        "FROM steps t\n", "FROM step_facts t\n"
    ),
)

# The trainer's own best_model_checkpoint wins when recorded.
JOB_CHECKPOINTS_V2 = View(
    "job_checkpoints",
    JOB_CHECKPOINTS_V1.template.replace(
        "    SELECT j.job_id,\n           j.save_steps,",
        "    SELECT j.job_id,\n           j.save_steps,\n           j.trainer_best_checkpoint,",
    )
    .replace(
        "    FROM jobs j\n    LEFT JOIN checkpoint_scores", "    FROM job_settings j\n    LEFT JOIN checkpoint_scores"
    )
    .replace("GROUP BY j.job_id, j.save_steps", "GROUP BY j.job_id, j.save_steps, j.trainer_best_checkpoint")
    .replace(
        "       'checkpoint-' || CAST(coalesce(best_eval_step, best_train_step) AS VARCHAR) AS best_checkpoint,\n"
        "       coalesce(best_eval_step, best_train_step) AS best_checkpoint_step,\n"
        "       CASE WHEN best_eval_step IS NOT NULL THEN 'eval_loss'\n",
        "       coalesce(trainer_best_checkpoint,\n"
        "                'checkpoint-' || CAST(coalesce(best_eval_step, best_train_step) AS VARCHAR))\n"
        "           AS best_checkpoint,\n"
        "       CASE WHEN trainer_best_checkpoint IS NOT NULL\n"
        "                THEN TRY_CAST(regexp_extract(trainer_best_checkpoint, 'checkpoint-([0-9]+)$', 1) AS BIGINT)\n"
        "            ELSE coalesce(best_eval_step, best_train_step) END AS best_checkpoint_step,\n"
        "       CASE WHEN trainer_best_checkpoint IS NOT NULL THEN 'trainer'\n"
        "            WHEN best_eval_step IS NOT NULL THEN 'eval_loss'\n",
    ),
)

JOB_ANALYTICS_V2 = View(
    "job_analytics",
    JOB_ANALYTICS_V1.template.replace(
        "           CASE WHEN p.step_rows > p.timed_rows\n",
        "           CASE WHEN d.from_trainer_runtime\n"
        "                THEN 'durations from the trainer''s train_runtime: its log has no timestamps' END,\n"
        "           CASE WHEN p.throughput_from_trainer\n"
        "                THEN 'average_samples_per_second is the trainer''s train_samples_per_second:'\n"
        "                     || ' its log has no timestamps' END,\n"
        "           CASE WHEN p.step_rows > p.timed_rows AND NOT d.from_trainer_runtime\n",
    ),
)

# The views of the head revision, in dependency order.
CURRENT_0002: tuple[View, ...] = (
    STEP_FACTS_V1,
    JOB_SETTINGS_V1,
    STEP_METRICS_V2,
    JOB_PERFORMANCE_V2,
    JOB_DURATION_V2,
    JOB_LOSSES_V2,
    JOB_RESOURCES_V1,
    CHECKPOINT_SCORES_V2,
    JOB_CHECKPOINTS_V2,
    JOB_EFFICIENCY_V1,
    JOB_ANALYTICS_V2,
)
CURRENT = CURRENT_0002


# --- revision 0004: GPU samples (NVML sampler spools, nvidia-smi logs) ----------------------

# NVML clocks-event reasons that mean the GPU was held back: SW power cap (0x4), HW slowdown
# (0x8), SW thermal (0x20), HW thermal (0x40), HW power brake (0x80). Idle (0x1), application
# clocks (0x2), sync boost (0x10) and display clocks (0x100) are not throttling.
THROTTLE_MASK = 0x4 | 0x8 | 0x20 | 0x40 | 0x80

# Each sample stands for the time until the same GPU's next sample (the last one for none).
GPU_SAMPLE_INTERVALS_V1 = View(
    "gpu_sample_intervals",
    """
SELECT g.*,
       @seconds_between(g.ts; lead(g.ts) OVER w) AS interval_seconds,
       lead(g.power_w) OVER w AS next_power_w
FROM gpu_samples g
WINDOW w AS (PARTITION BY g.job_id, g.host, g.gpu_index ORDER BY g.ts)
""",
)

# One row per GPU of a job (from its samples): averages, peaks, energy, throttling, idleness.
JOB_GPUS_V1 = View(
    "job_gpus",
    f"""
WITH per_gpu AS (
    SELECT job_id, host, gpu_index,
           max(gpu_uuid) AS gpu_uuid,
           count(*) AS samples,
           min(ts) AS first_sample,
           max(ts) AS last_sample,
           avg(utilization_percent) FILTER (WHERE @finite(utilization_percent)) AS average_utilization,
           avg(memory_used_mb) FILTER (WHERE @finite(memory_used_mb)) AS average_memory_mb,
           max(memory_used_mb) FILTER (WHERE @finite(memory_used_mb)) AS peak_memory_mb,
           avg(temperature_c) FILTER (WHERE @finite(temperature_c)) AS average_temp_celsius,
           max(temperature_c) FILTER (WHERE @finite(temperature_c)) AS peak_temp_celsius,
           avg(power_w) FILTER (WHERE @finite(power_w)) AS average_power_w,
           -- trapezoids between consecutive samples, in watt-hours
           sum((power_w + next_power_w) / 2 * interval_seconds)
               FILTER (WHERE @finite(power_w) AND @finite(next_power_w)) / 3600 AS energy_wh,
           sum(interval_seconds) FILTER (WHERE clocks_event_reasons IS NOT NULL) AS reasons_seconds,
           sum(interval_seconds) FILTER (WHERE (clocks_event_reasons & {THROTTLE_MASK}) <> 0) AS throttled_seconds,
           sum(interval_seconds) FILTER (WHERE @finite(utilization_percent)) AS utilization_seconds,
           sum(interval_seconds) FILTER (WHERE utilization_percent < 10) AS idle_seconds
    FROM gpu_sample_intervals
    GROUP BY job_id, host, gpu_index
)
SELECT job_id, host, gpu_index, gpu_uuid, samples, first_sample, last_sample,
       average_utilization, average_memory_mb, peak_memory_mb, average_temp_celsius, peak_temp_celsius,
       average_power_w, energy_wh,
       CASE WHEN reasons_seconds > 0 THEN coalesce(throttled_seconds, 0) / reasons_seconds END AS throttled_share,
       CASE WHEN utilization_seconds > 0 THEN coalesce(idle_seconds, 0) / utilization_seconds END AS idle_share,
       CASE WHEN utilization_seconds > 0 THEN coalesce(idle_seconds, 0) / utilization_seconds > 0.5 END AS idle
FROM per_gpu
""",
)

# Per figure: from the job's GPU samples when they carry it, else from the per-step readings.
JOB_RESOURCES_V2 = View(
    "job_resources",
    """
WITH sampled AS (
    SELECT job_id,
           count(*) AS n,
           count(DISTINCT (host, gpu_index)) AS gpus,
           avg(utilization_percent) FILTER (WHERE @finite(utilization_percent)) AS util,
           avg(memory_used_mb) FILTER (WHERE @finite(memory_used_mb)) AS mem,
           max(memory_used_mb) FILTER (WHERE @finite(memory_used_mb)) AS peak_mem,
           avg(temperature_c) FILTER (WHERE @finite(temperature_c)) AS temp,
           max(temperature_c) FILTER (WHERE @finite(temperature_c)) AS peak_temp,
           count(*) FILTER (WHERE (utilization_percent IS NOT NULL AND NOT @finite(utilization_percent))
                               OR (memory_used_mb IS NOT NULL AND NOT @finite(memory_used_mb))
                               OR (temperature_c IS NOT NULL AND NOT @finite(temperature_c))) AS nonfinite
    FROM gpu_samples
    GROUP BY job_id
), logged AS (
    SELECT job_id,
           count(*) AS n,
           count(DISTINCT gpu_index) AS gpus,
           avg(utilization_percent) FILTER (WHERE @finite(utilization_percent)) AS util,
           avg(memory_used_mb) FILTER (WHERE @finite(memory_used_mb)) AS mem,
           max(memory_used_mb) FILTER (WHERE @finite(memory_used_mb)) AS peak_mem,
           avg(temperature_c) FILTER (WHERE @finite(temperature_c)) AS temp,
           max(temperature_c) FILTER (WHERE @finite(temperature_c)) AS peak_temp,
           count(*) FILTER (WHERE (utilization_percent IS NOT NULL AND NOT @finite(utilization_percent))
                               OR (memory_used_mb IS NOT NULL AND NOT @finite(memory_used_mb))
                               OR (temperature_c IS NOT NULL AND NOT @finite(temperature_c))) AS nonfinite
    FROM step_gpus
    GROUP BY job_id
)
SELECT j.job_id,
       CASE WHEN s.n > 0 THEN 'gpu_samples' WHEN l.n > 0 THEN 'step_readings' END AS gpu_source,
       coalesce(s.n, 0) + coalesce(l.n, 0) AS gpu_readings,
       coalesce(s.n, 0) AS gpu_samples,
       coalesce(s.gpus, l.gpus, 0) AS gpus_seen,
       CASE WHEN s.util IS NOT NULL THEN s.util ELSE l.util END AS average_gpu_utilization,
       CASE WHEN s.mem IS NOT NULL THEN s.mem ELSE l.mem END AS average_gpu_memory_mb,
       CASE WHEN s.peak_mem IS NOT NULL THEN s.peak_mem ELSE l.peak_mem END AS peak_gpu_memory_mb,
       CASE WHEN s.temp IS NOT NULL THEN s.temp ELSE l.temp END AS average_gpu_temp_celsius,
       CASE WHEN s.peak_temp IS NOT NULL THEN s.peak_temp ELSE l.peak_temp END AS peak_gpu_temp_celsius,
       CASE WHEN s.n > 0 THEN s.nonfinite ELSE coalesce(l.nonfinite, 0) END AS nonfinite_gpu_readings
FROM jobs j
LEFT JOIN sampled s ON s.job_id = j.job_id
LEFT JOIN logged l ON l.job_id = j.job_id
""",
)

# A job's energy (power integrated over its GPU samples) and its GPUs' throttling and idleness.
JOB_ENERGY_V1 = View(
    "job_energy",
    """
WITH gpus AS (
    SELECT job_id,
           sum(energy_wh) AS energy_wh,
           count(*) FILTER (WHERE energy_wh IS NOT NULL) AS gpus_with_power,
           count(*) FILTER (WHERE idle) AS idle_gpus,
           sum(throttled_share * 1) FILTER (WHERE throttled_share IS NOT NULL)
               / nullif(count(throttled_share), 0) AS average_throttled_share
    FROM job_gpus
    GROUP BY job_id
)
SELECT j.job_id,
       g.energy_wh AS total_energy_wh,
       CASE WHEN p.total_samples > 0 THEN g.energy_wh / (p.total_samples / 1000) END AS energy_per_1000_samples_wh,
       coalesce(g.gpus_with_power, 0) AS gpus_with_power,
       coalesce(g.idle_gpus, 0) AS idle_gpus,
       g.average_throttled_share
FROM jobs j
JOIN job_performance p ON p.job_id = j.job_id
LEFT JOIN gpus g ON g.job_id = j.job_id
""",
)

# Each timed step row with every GPU's latest sample at or before the step's timestamp.
# ASOF JOIN is DuckDB's own; a PostgreSQL backend would use a LATERAL subquery.
STEP_GPU_ALIGNMENT_V1 = View(
    "step_gpu_alignment",
    """
WITH gpus AS (SELECT DISTINCT job_id, host, gpu_index FROM gpu_samples),
step_gpu AS (
    SELECT s.job_id, s.step, s.ts, g.host, g.gpu_index
    FROM step_facts s
    JOIN gpus g ON g.job_id = s.job_id
    WHERE s.ts IS NOT NULL
)
SELECT sg.job_id, sg.step, sg.ts, sg.host, sg.gpu_index,
       x.ts AS sample_ts, x.utilization_percent, x.memory_used_mb, x.temperature_c, x.power_w,
       x.sm_clock_mhz, x.clocks_event_reasons
FROM step_gpu sg
ASOF LEFT JOIN gpu_samples x
    ON sg.job_id = x.job_id AND sg.host = x.host AND sg.gpu_index = x.gpu_index AND sg.ts >= x.ts
""",
)

JOB_ANALYTICS_V3 = View(
    "job_analytics",
    JOB_ANALYTICS_V2.template.replace(
        "       r.gpu_source,\n",
        "       r.gpu_source,\n"
        "       -- energy (GPU samples)\n"
        "       en.total_energy_wh,\n"
        "       en.energy_per_1000_samples_wh,\n"
        "       en.gpus_with_power,\n"
        "       en.idle_gpus,\n"
        "       en.average_throttled_share,\n",
    )
    .replace(
        "JOIN job_efficiency e ON e.job_id = j.job_id\n",
        "JOIN job_efficiency e ON e.job_id = j.job_id\nJOIN job_energy en ON en.job_id = j.job_id\n",
    )
    .replace(
        "           CASE WHEN l.initial_loss = 0 THEN",
        "           CASE WHEN r.gpu_samples > 0 AND en.gpus_with_power = 0\n"
        "                THEN 'energy is null: the GPU samples carry no power readings' END,\n"
        "           CASE WHEN l.initial_loss = 0 THEN",
    ),
)

# Every GPU utilization reading that has a time: the job's GPU samples when it has any, else the
# readings logged with its steps, timed by the step's timestamp (as job_resources chooses).
GPU_UTILIZATION_READINGS_V1 = View(
    "gpu_utilization_readings",
    """
SELECT g.job_id, 'gpu_samples' AS source, g.host, g.gpu_index, g.ts, g.utilization_percent
FROM gpu_samples g
UNION ALL
SELECT g.job_id, 'step_readings' AS source, '' AS host, g.gpu_index, s.ts, g.utilization_percent
FROM step_gpus g
JOIN steps s ON s.job_id = g.job_id AND s.step = g.step
WHERE s.ts IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM gpu_samples x WHERE x.job_id = g.job_id)
""",
)

# The views of the head revision, in dependency order.
CURRENT_0004: tuple[View, ...] = (
    STEP_FACTS_V1,
    JOB_SETTINGS_V1,
    STEP_METRICS_V2,
    JOB_PERFORMANCE_V2,
    JOB_DURATION_V2,
    JOB_LOSSES_V2,
    GPU_SAMPLE_INTERVALS_V1,
    JOB_GPUS_V1,
    JOB_RESOURCES_V2,
    CHECKPOINT_SCORES_V2,
    JOB_CHECKPOINTS_V2,
    JOB_EFFICIENCY_V1,
    JOB_ENERGY_V1,
    STEP_GPU_ALIGNMENT_V1,
    JOB_ANALYTICS_V3,
)
CURRENT_0006 = (*CURRENT_0004, GPU_UTILIZATION_READINGS_V1)
CURRENT_0007 = tuple(JOB_DURATION_V3 if v is JOB_DURATION_V2 else v for v in CURRENT_0006)
CURRENT = CURRENT_0007
