-- job_analytics: one row per job, every section joined, with warnings: plain-language reasons why
-- figures are NULL or partial.
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
