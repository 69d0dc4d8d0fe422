-- insight_rows: a job's step rows (step_metrics, one per distinct step, in step order) with what
-- the row rules of insights.md read: the finite training and eval losses, whether the loss is
-- NaN or +-Inf, the row's throughput (samples / seconds when both are known and the seconds
-- are not 0, else a finite samples_per_second), the previous row's step and timestamp, and the
-- running figures of the row order (one sort of a job's rows for all of them).
SELECT m.job_id, m.step, m.ts, m.row_no, m.row_count, m.samples, m.seconds,
       m.finite_loss, m.nonfinite_loss, m.finite_eval_loss, m.throughput, m.prev_step,
       lag(m.ts) OVER w AS prev_ts,
       -- the last finite loss before this row (nonfinite_loss's reference)
       @last_known(m.finite_loss) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
           AS previous_finite_loss,
       -- the lowest finite loss before this row: no median of earlier losses is below it
       min(m.finite_loss) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS lowest_before,
       -- finite losses up to this row: a row with a finite loss is the finite_no-th
       count(m.finite_loss) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS finite_no,
       -- rows with a known throughput up to this row (throughput_drop's runs)
       count(m.throughput) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS known_no,
       -- loss_divergence's r: the median of the finite losses of the 10 rows ending here (a
       -- frame whose size is read from a table costs DuckDB four times a fixed frame's)
       @median(m.finite_loss) OVER (w ROWS BETWEEN 9 PRECEDING AND CURRENT ROW) AS r
FROM (
    SELECT m.job_id, m.step, m.ts, m.row_no, m.row_count, m.samples, m.seconds,
           CASE WHEN @finite(m.loss) THEN m.loss END AS finite_loss,
           m.loss IS NOT NULL AND NOT @finite(m.loss) AS nonfinite_loss,
           CASE WHEN @finite(m.eval_loss) THEN m.eval_loss END AS finite_eval_loss,
           CASE WHEN m.samples IS NOT NULL AND m.seconds IS NOT NULL AND m.seconds <> 0 THEN m.samples / m.seconds
                WHEN @finite(m.samples_per_second) THEN m.samples_per_second END AS throughput,
           -- step_metrics' delta is the steps since the previous row's (its step on the first row)
           CASE WHEN m.row_no > 1 THEN m.step - m.delta END AS prev_step
    FROM step_metrics m
) m
WINDOW w AS (PARTITION BY m.job_id ORDER BY m.step)
