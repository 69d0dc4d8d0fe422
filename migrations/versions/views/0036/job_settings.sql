-- job_settings: a job's settings: its config's (batch size, save steps, target throughput), else
-- the trainer's own save steps; and the trainer's best checkpoint, train_runtime and
-- train_samples_per_second as it recorded them. batch_size is the config's alone (samples per
-- iteration, analytics.md): the trainer's train_batch_size (trainer_runs) is its per-device batch,
-- without gradient accumulation or other processes, so a job without a config batch_size takes
-- its samples from samples_per_second x seconds, or has none. The trainer's runtime and
-- throughput are its summary's own figures: job_analytics' durations and throughput come from
-- the step rows alone.
SELECT j.job_id,
       j.batch_size,
       coalesce(j.save_steps, r.save_steps) AS save_steps,
       j.target_samples_per_second,
       r.best_model_checkpoint AS trainer_best_checkpoint,
       r.train_runtime,
       r.train_samples_per_second
FROM jobs j
LEFT JOIN trainer_runs r ON r.job_id = j.job_id
