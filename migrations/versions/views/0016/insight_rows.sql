-- insight_rows: a job's step rows (step_metrics, one per distinct step, in step order) with what
-- the row rules of insights.md read: the finite training and eval losses, whether the loss is
-- NaN or +-Inf, the row's throughput (samples / seconds when both are known and the seconds
-- are not 0, else a finite samples_per_second) and the previous row's step and timestamp.
SELECT m.job_id, m.step, m.ts, m.row_no, m.row_count, m.samples, m.seconds,
       CASE WHEN @finite(m.loss) THEN m.loss END AS finite_loss,
       m.loss IS NOT NULL AND NOT @finite(m.loss) AS nonfinite_loss,
       CASE WHEN @finite(m.eval_loss) THEN m.eval_loss END AS finite_eval_loss,
       CASE WHEN m.samples IS NOT NULL AND m.seconds IS NOT NULL AND m.seconds <> 0 THEN m.samples / m.seconds
            WHEN @finite(m.samples_per_second) THEN m.samples_per_second END AS throughput,
       -- step_metrics' delta is the steps since the previous row's (its step on the first row)
       CASE WHEN m.row_no > 1 THEN m.step - m.delta END AS prev_step,
       lag(m.ts) OVER w AS prev_ts
FROM step_metrics m
WINDOW w AS (PARTITION BY m.job_id ORDER BY m.step)
