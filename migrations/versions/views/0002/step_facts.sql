-- step_facts: a job's step rows from both sources (progress.json steps, trainer_state.json
-- trainer_steps), merged by (job, step): a progress.json field wins over the same field from a
-- trainer state. The views of steps read it.
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
