-- job_settings: a job's settings: its config's, else the trainer's own (batch size, save steps),
-- and the trainer's best checkpoint, runtime and throughput.
SELECT j.job_id,
       coalesce(j.batch_size, CAST(r.train_batch_size AS DOUBLE PRECISION)) AS batch_size,
       coalesce(j.save_steps, r.save_steps) AS save_steps,
       j.target_samples_per_second,
       r.best_model_checkpoint AS trainer_best_checkpoint,
       r.train_runtime,
       r.train_samples_per_second
FROM jobs j
LEFT JOIN trainer_runs r ON r.job_id = j.job_id
