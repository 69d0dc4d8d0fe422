-- job_settings: a job's settings: its config's, else the trainer's own (batch size, save steps),
-- and the trainer's best checkpoint, runtime and throughput. The trainer's train_batch_size is
-- its per-device batch (no gradient accumulation, no other processes), not the samples per
-- iteration a progress.json's rows count: it stands in for the batch size only of a job that
-- has no progress.json (its facts are the trainer's own); a progress.json job without a config
-- batch_size takes its samples from samples_per_second x seconds (analytics.md).
SELECT j.job_id,
       CASE WHEN j.source_file LIKE '%progress.json' THEN j.batch_size
            ELSE coalesce(j.batch_size, CAST(r.train_batch_size AS DOUBLE PRECISION)) END AS batch_size,
       coalesce(j.save_steps, r.save_steps) AS save_steps,
       j.target_samples_per_second,
       r.best_model_checkpoint AS trainer_best_checkpoint,
       r.train_runtime,
       r.train_samples_per_second
FROM jobs j
LEFT JOIN trainer_runs r ON r.job_id = j.job_id
