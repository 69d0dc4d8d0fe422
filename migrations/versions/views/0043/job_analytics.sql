-- job_analytics: one row per job, every section joined (energy included), with warnings:
-- plain-language reasons why figures are NULL or partial: every NULL figure has one (a job
-- without step rows has the first for the figures read from step rows; analytics.md: a
-- figure that cannot be computed is null and the warnings say why). job_results materialises it
-- (warehouse/results.py): a change here needs a migration that refills job_results. The trainer's
-- own summary figures (trainer_runs) are named in a warning where the step rows leave the
-- durations and throughput unknown; they never stand in for them. A sum or ratio of finite values
-- that overflows a double (a samples of 1e308 times 10 s) is no figure: NULL, named in a warning
-- (revision 0042: it was Infinity, read as null by the API but ranked and scored as a number).
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
       CASE WHEN @finite(d.total_seconds) THEN d.total_seconds END AS total_seconds,
       CASE WHEN @finite(d.training_seconds) THEN d.training_seconds END AS training_seconds,
       -- (IS NOT FALSE: an unknown total or training time is job_duration's to say, NULL there)
       CASE WHEN @finite(d.total_seconds) IS NOT FALSE AND @finite(d.training_seconds) IS NOT FALSE
                THEN d.overhead_seconds END
           AS overhead_seconds,
       -- performance
       p.total_iterations,
       CASE WHEN @finite(p.total_samples) THEN p.total_samples END AS total_samples,
       CASE WHEN @finite(p.average_samples_per_second) THEN p.average_samples_per_second END
           AS average_samples_per_second,
       p.peak_samples_per_second,
       CASE WHEN @finite(p.average_iteration_time) THEN p.average_iteration_time END AS average_iteration_time,
       -- losses
       l.initial_loss,
       l.final_loss,
       l.best_loss,
       CASE WHEN @finite(l.loss_reduction_percent) THEN l.loss_reduction_percent END AS loss_reduction_percent,
       l.final_eval_loss,
       l.best_eval_loss,
       -- resource_utilization
       r.average_gpu_utilization,
       r.average_gpu_memory_mb,
       r.peak_gpu_memory_mb,
       r.average_gpu_temp_celsius,
       r.peak_gpu_temp_celsius,
       r.gpu_source,
       -- energy (GPU samples)
       en.total_energy_wh,
       en.energy_per_1000_samples_wh,
       en.gpus_with_power,
       en.idle_gpus,
       en.average_throttled_share,
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
           CASE WHEN p.step_rows = 0
                THEN 'no step rows: samples, throughput, iteration time, training_seconds, overhead_seconds'
                     || ' and losses are null'
                     || CASE WHEN p.total_iterations IS NULL THEN '; total_iterations too (no current_step)'
                             ELSE '' END
                     || CASE WHEN d.start_time IS NULL AND d.end_time IS NULL
                             THEN '; start_time, end_time and total_seconds too (no started_at, ended_at or updated_at)'
                             WHEN d.start_time IS NULL THEN '; start_time and total_seconds too (no started_at)'
                             WHEN d.end_time IS NULL THEN '; end_time and total_seconds too (no ended_at or updated_at)'
                             ELSE '' END END,
           CASE WHEN r.gpu_readings = 0
                THEN 'no GPU readings: resource_utilization and gpu_utilization_score are null' END,
           -- (NULL when the list is empty: concat_ws skips the figures that are finite or NULL)
           'null where a sum or ratio of finite values exceeds the largest double (about 1.8e308): '
               || nullif(concat_ws(', ',
                               CASE WHEN NOT @finite(d.total_seconds) THEN 'total_seconds' END,
                               CASE WHEN NOT @finite(d.training_seconds) THEN 'training_seconds' END,
                               CASE WHEN NOT @finite(d.total_seconds) OR NOT @finite(d.training_seconds)
                                    THEN 'overhead_seconds' END,
                               CASE WHEN NOT @finite(p.total_samples) THEN 'total_samples' END,
                               CASE WHEN NOT @finite(p.average_samples_per_second)
                                    THEN 'average_samples_per_second' END,
                               CASE WHEN NOT @finite(p.average_iteration_time) THEN 'average_iteration_time' END,
                               CASE WHEN NOT @finite(l.loss_reduction_percent) THEN 'loss_reduction_percent' END),
                         ''),
           -- a trainer's summary and per-device batch are its own figures, not analytics.md's
           CASE WHEN p.step_rows > 0 AND p.timed_rows = 0
                     AND (t.train_runtime IS NOT NULL OR t.train_samples_per_second IS NOT NULL)
                THEN 'the trainer''s train_runtime and train_samples_per_second (trainer_runs) are its'
                     || ' summary''s own figures, not used: durations and throughput come from the step rows,'
                     || ' and none has seconds (an iteration_time, or timestamps on it and on the row before)' END,
           CASE WHEN p.step_rows > 0 AND p.total_samples IS NULL AND j.batch_size IS NULL
                     AND t.train_batch_size IS NOT NULL
                THEN 'total_samples does not use the trainer''s train_batch_size ('
                     || CAST(t.train_batch_size AS VARCHAR) || '): a per-device batch, not the config''s'
                     || ' batch_size (samples per iteration)' END,
           CASE WHEN p.timing_rows > p.timed_rows
                THEN 'training time partly unknown: ' || CAST(p.timing_rows - p.timed_rows AS VARCHAR)
                     || ' of ' || CAST(p.timing_rows AS VARCHAR)
                     || CASE WHEN p.timing_rows < p.step_rows THEN ' progress.json' ELSE '' END
                     || ' step rows have no seconds (neither an iteration_time nor timestamps on them and on'
                     || ' the row before, not going backwards)' END,
           CASE WHEN p.throughput_is_plain_mean
                THEN 'average_samples_per_second is the plain mean of samples_per_second:'
                     || ' no step row has both samples and seconds' END,
           CASE WHEN p.step_rows > 0 AND d.start_time IS NULL
                THEN 'start unknown: no started_at, and the first'
                     || CASE WHEN p.timing_rows < p.step_rows THEN ' progress.json' ELSE '' END
                     || ' step row has no timestamp, or no seconds to go back from it' END,
           CASE WHEN d.end_time IS NULL AND p.step_rows > 0
                THEN 'end unknown: no ended_at (of a finished job) or updated_at, and the last step row has no timestamp' END,
           CASE WHEN d.start_time IS NOT NULL AND d.end_time IS NOT NULL AND d.total_seconds IS NULL
                THEN 'total_seconds and overhead_seconds are null: the end (end_time) is before the start'
                     || ' (start_time)' END,
           CASE WHEN l.nonfinite_losses > 0
                THEN CAST(l.nonfinite_losses AS VARCHAR) || ' non-finite loss value(s) left out' END,
           CASE WHEN l.nonfinite_eval_losses > 0
                THEN CAST(l.nonfinite_eval_losses AS VARCHAR) || ' non-finite eval_loss value(s) left out' END,
           CASE WHEN c.nonfinite_eval_losses > 0
                THEN CAST(c.nonfinite_eval_losses AS VARCHAR)
                     || ' non-finite eval_loss value(s) of checkpoint entries left out' END,
           CASE WHEN p.nonfinite_samples_per_second + p.nonfinite_iteration_time > 0
                THEN CAST(p.nonfinite_samples_per_second + p.nonfinite_iteration_time AS VARCHAR)
                     || ' non-finite samples_per_second or iteration_time value(s) left out' END,
           CASE WHEN r.nonfinite_gpu_readings > 0
                THEN CAST(r.nonfinite_gpu_readings AS VARCHAR) || ' GPU reading(s) with non-finite values left out' END,
           CASE WHEN r.gpu_samples > 0 AND en.gpus_with_power = 0
                THEN 'energy is null: no GPU sample and the next of its GPU both carry a finite power reading' END,
           CASE WHEN l.initial_loss = 0 THEN 'loss_reduction_percent is null: the initial loss is 0' END,
           CASE WHEN p.step_rows > 0 AND l.initial_loss IS NULL THEN 'no finite loss values' END,
           CASE WHEN c.total_checkpoints = 0 THEN 'no checkpoints' END,
           CASE WHEN e.throughput_score IS NULL AND @finite(p.average_samples_per_second)
                THEN 'throughput_score is null: no positive target_samples_per_second or peak' END,
           CASE WHEN p.step_rows > 0 AND p.total_samples IS NULL
                THEN 'total_samples is null: no step row has samples, the config no batch_size, and no row'
                     || ' both samples_per_second and seconds' END,
           CASE WHEN p.step_rows > 0 AND p.average_samples_per_second IS NULL
                THEN CASE WHEN p.peak_samples_per_second IS NOT NULL
                          THEN 'average_samples_per_second is null: the step rows with both samples and seconds'
                               || ' add up to 0 seconds'
                          ELSE 'average_samples_per_second is null: no step row has both samples and seconds'
                               || ' (or their seconds add up to 0), nor a finite samples_per_second' END END,
           CASE WHEN p.step_rows > 0 AND p.peak_samples_per_second IS NULL
                THEN 'peak_samples_per_second is null: no step row has a finite samples_per_second' END,
           CASE WHEN p.step_rows > 0 AND p.average_iteration_time IS NULL AND p.timed_rows > 0
                THEN 'average_iteration_time is null: the step rows with known seconds cover no iterations' END,
           CASE WHEN p.step_rows > 0 AND l.final_eval_loss IS NULL
                THEN 'final_eval_loss and best_eval_loss are null: no step row has a finite eval_loss' END,
           CASE WHEN r.gpu_readings > 0 AND r.average_gpu_utilization IS NULL
                THEN 'average_gpu_utilization and gpu_utilization_score are null: no '
                     || CASE WHEN r.gpu_samples > 0 THEN 'GPU sample (with samples, step readings are not used)'
                             ELSE 'GPU reading' END || ' has a finite'
                     || ' utilization' END,
           CASE WHEN r.gpu_readings > 0 AND r.average_gpu_memory_mb IS NULL
                THEN 'average_gpu_memory_mb and peak_gpu_memory_mb are null: no '
                     || CASE WHEN r.gpu_samples > 0 THEN 'GPU sample (with samples, step readings are not used)'
                             ELSE 'GPU reading' END || ' has a finite'
                     || ' memory used' END,
           CASE WHEN r.gpu_readings > 0 AND r.average_gpu_temp_celsius IS NULL
                THEN 'average_gpu_temp_celsius and peak_gpu_temp_celsius are null: no '
                     || CASE WHEN r.gpu_samples > 0 THEN 'GPU sample (with samples, step readings are not used)'
                             ELSE 'GPU reading' END || ' has a finite'
                     || ' temperature' END,
           CASE WHEN r.gpu_samples = 0
                THEN 'energy is null: no GPU samples (power and throttling are read from timed samples only)' END,
           CASE WHEN en.total_energy_wh IS NOT NULL AND en.energy_per_1000_samples_wh IS NULL
                THEN 'energy_per_1000_samples_wh is null: total_samples is unknown or 0' END,
           CASE WHEN r.gpu_samples > 0 AND en.idle_gpus IS NULL
                THEN 'idle_gpus is null: no GPU has time with a finite utilization (between two of its samples)' END,
           CASE WHEN r.gpu_samples > 0 AND en.average_throttled_share IS NULL
                THEN 'average_throttled_share is null: no GPU has time with known throttle reasons (a sample'
                     || ' carrying them, followed by another of its GPU)' END,
           CASE WHEN c.total_checkpoints > 0 AND c.best_checkpoint IS NULL
                THEN 'best_checkpoint is null: no eval_loss at any checkpoint and no finite training loss'
                     || ' at or before one' END,
           CASE WHEN e.throughput_score IS NULL AND NOT coalesce(@finite(p.average_samples_per_second), false)
                THEN 'throughput_score is null: average_samples_per_second is null' END,
           CASE WHEN e.overall_score IS NULL
                THEN 'overall_score is null: neither gpu_utilization_score nor throughput_score is known' END
       ) AS warnings
FROM jobs j
JOIN job_duration d ON d.job_id = j.job_id
JOIN job_performance p ON p.job_id = j.job_id
JOIN job_losses l ON l.job_id = j.job_id
JOIN job_resources r ON r.job_id = j.job_id
JOIN job_checkpoints c ON c.job_id = j.job_id
JOIN job_efficiency e ON e.job_id = j.job_id
JOIN job_energy en ON en.job_id = j.job_id
LEFT JOIN trainer_runs t ON t.job_id = j.job_id
