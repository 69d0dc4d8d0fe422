-- insight_losses: the loss insights of insights.md, one row per insight: nonfinite_loss,
-- loss_spike, loss_divergence, overfitting. Thresholds come from insight_parameters, but for
-- the two windows (loss_spike's 20 finite losses, loss_divergence's 10 rows): a frame whose size
-- is read from a table costs DuckDB four times a fixed frame's (docs/decisions.md), so their
-- sizes are written here. A job's rows are sorted once (the CTE rows, materialised: DuckDB still
-- takes a filter on job_id into it); loss_spike's medians are computed only for the rows, and
-- loss_divergence's running lowest only for the jobs, that a bound read in that sort (the lowest
-- finite loss before each row) leaves possible (docs/decisions.md, "Insight rules computed
-- where they can hold"). A filter on job_id reaches every read of rows: the CTEs join on
-- job_id rather than test membership in a subquery, which would stop it.
WITH p AS (SELECT * FROM insight_parameters),
rows AS MATERIALIZED (
    SELECT r.job_id, r.step, r.ts, r.row_no, r.row_count, r.finite_loss, r.nonfinite_loss, r.finite_eval_loss,
           -- the last finite loss before this row (nonfinite_loss's reference)
           last_value(r.finite_loss IGNORE NULLS) OVER (PARTITION BY r.job_id ORDER BY r.step
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS previous_finite_loss,
           -- the lowest finite loss before this row: no median of earlier losses is below it
           min(r.finite_loss) OVER (PARTITION BY r.job_id ORDER BY r.step
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS lowest_before,
           -- finite losses up to this row: a row with a finite loss is the finite_no-th
           count(r.finite_loss) OVER (PARTITION BY r.job_id ORDER BY r.step
               ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS finite_no,
           -- loss_divergence's r: the median of the finite losses of the 10 rows ending here
           @median(r.finite_loss) OVER (PARTITION BY r.job_id ORDER BY r.step
               ROWS BETWEEN 9 PRECEDING AND CURRENT ROW) AS r,
           -- the job's last row, where a divergence ends
           last_value(r.step) OVER whole_job AS last_step,
           last_value(r.ts) OVER whole_job AS last_ts
    FROM insight_rows r
    WINDOW whole_job AS (PARTITION BY r.job_id ORDER BY r.step
                         ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
),
-- the rows with a finite loss, by their place among them (what the medians over finite losses join)
finite_losses AS (
    SELECT f.job_id, f.finite_no, f.finite_loss
    FROM rows f
    WHERE f.finite_loss IS NOT NULL
),
nonfinite AS (
    SELECT job_id, 'nonfinite_loss' AS kind, 'critical' AS severity,
           min(step) AS first_step, max(step) AS last_step,
           @first_by(ts; step) AS start_time, @first_by(ts; step DESC) AS end_time,
           CAST(count(*) AS DOUBLE) AS value,
           @first_by(previous_finite_loss; step) AS reference
    FROM rows
    WHERE nonfinite_loss
    GROUP BY job_id
),
-- a spike: a finite loss L above m + max(mad_factor * d, relative * |m|), m and d the median and
-- the median absolute deviation (from m) of the 20 finite losses just before it (20 at least).
-- m is at least the lowest finite loss before the row (a), so L > m + relative * |m| needs
-- L > a + relative * a when a >= 0, and L > a otherwise: m and d are computed for those rows only.
spike_candidates AS (
    SELECT f.job_id, f.step, f.ts, f.row_no, f.finite_loss, f.finite_no
    FROM rows f, p
    WHERE f.finite_no > 20
      AND f.finite_loss > CASE WHEN f.lowest_before >= 0 THEN f.lowest_before + p.loss_spike_relative * f.lowest_before
                               ELSE f.lowest_before END
),
-- each candidate with the 20 finite losses just before it, and their median m
spike_windows AS (
    SELECT c.job_id, c.step, c.ts, c.row_no, c.finite_loss, w.finite_loss AS before,
           @median(w.finite_loss) OVER (PARTITION BY c.job_id, c.step) AS spike_median
    FROM (SELECT c.job_id, c.step, c.ts, c.row_no, c.finite_loss, c.finite_no + k.back AS before_no
          FROM spike_candidates c, range(-20, 0) k(back)) c
    JOIN finite_losses w ON w.job_id = c.job_id AND w.finite_no = c.before_no
),
spike_rows AS (
    SELECT c.job_id, c.step, c.ts, c.row_no, c.finite_loss, c.spike_median,
           c.row_no - row_number() OVER (PARTITION BY c.job_id ORDER BY c.row_no) AS run
    FROM spike_windows c, p
    WHERE c.finite_loss > c.spike_median + p.loss_spike_relative * abs(c.spike_median)
    GROUP BY c.job_id, c.step, c.ts, c.row_no, c.finite_loss, c.spike_median, p.loss_spike_mad_factor
    HAVING c.finite_loss > c.spike_median + p.loss_spike_mad_factor * @median(abs(c.before - c.spike_median))
),
-- spike rows adjacent in row order (consecutive row_no) are one insight
spikes AS (
    SELECT job_id, 'loss_spike' AS kind, 'warning' AS severity,
           min(step) AS first_step, max(step) AS last_step,
           @first_by(ts; step) AS start_time, @first_by(ts; step DESC) AS end_time,
           max(finite_loss) AS value,
           @first_by(spike_median; step) AS reference
    FROM spike_rows
    GROUP BY job_id, run
),
-- divergence: r is defined from the row of the 10th finite loss on (where its window has a
-- finite loss); b = the lowest r of the rows before (so that the lowest was reached earlier);
-- the first row with r >= factor * b and r - b >= rise * (r10 - b), b > 0, r10 the first r.
-- b is at least the lowest finite loss before the row: only a job with a row whose r reaches
-- factor times that (or where it is not above 0) can diverge, and only those jobs are sorted again
diverging_jobs AS (
    SELECT DISTINCT s.job_id
    FROM rows s, p
    WHERE s.finite_no >= 10 AND s.r IS NOT NULL
      AND (s.lowest_before <= 0 OR s.r >= p.loss_divergence_factor * s.lowest_before)
),
lowest AS (
    SELECT s.job_id, s.step, s.ts, s.row_no, s.row_count, s.r,
           first_value(s.r) OVER (PARTITION BY s.job_id ORDER BY s.step) AS r_first,
           min(s.r) OVER (PARTITION BY s.job_id ORDER BY s.step
                          ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS b,
           -- r of the job's last row (NULL when it is not defined there)
           last_value(s.r) OVER (PARTITION BY s.job_id ORDER BY s.step
                          ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS r_last,
           max(s.row_no) OVER (PARTITION BY s.job_id) AS last_defined,
           s.last_step, s.last_ts
    FROM rows s
    JOIN diverging_jobs d ON d.job_id = s.job_id
    WHERE s.finite_no >= 10 AND s.r IS NOT NULL
),
divergence AS (
    SELECT l.job_id, 'loss_divergence' AS kind, 'critical' AS severity,
           min(l.step) AS first_step, max(l.last_step) AS last_step,
           @first_by(l.ts; l.step) AS start_time, max(l.last_ts) AS end_time,
           max(CASE WHEN l.last_defined = l.row_count THEN l.r_last END) AS value,
           @first_by(l.b; l.step) AS reference
    FROM lowest l, p
    WHERE l.b > 0 AND l.r >= l.b
      AND l.r >= p.loss_divergence_factor * l.b
      AND l.r - l.b >= p.loss_divergence_rise * (l.r_first - l.b)
    GROUP BY l.job_id
),
-- overfitting: e* = the lowest finite eval loss (the first, on ties) at step s*; each eval row
-- with the median of the last train_window finite losses at or before it
evals AS NOT MATERIALIZED (
    SELECT r.job_id, r.step, r.ts, r.finite_eval_loss AS eval_loss, @median(f.finite_loss) AS train_median
    FROM rows r
    LEFT JOIN finite_losses f ON f.job_id = r.job_id AND f.finite_no <= r.finite_no
                      AND f.finite_no > r.finite_no - (SELECT overfitting_train_window FROM p)
    WHERE r.finite_eval_loss IS NOT NULL
    GROUP BY r.job_id, r.step, r.ts, r.finite_eval_loss
),
best_eval AS (
    SELECT job_id,
           min(eval_loss) AS best_loss,
           @first_by(step; eval_loss, step) AS best_step,
           @first_by(train_median; eval_loss, step) AS best_train_median
    FROM evals
    GROUP BY job_id
),
after_best AS (
    SELECT b.job_id, b.best_loss, b.best_train_median,
           count(*) AS evals_after,
           min(e.step) AS first_step, max(e.step) AS last_step,
           @first_by(e.ts; e.step) AS start_time, @first_by(e.ts; e.step DESC) AS end_time,
           @first_by(e.eval_loss; e.step DESC) AS last_loss,
           @first_by(e.train_median; e.step DESC) AS last_train_median
    FROM best_eval b
    JOIN evals e ON e.job_id = b.job_id AND e.step > b.best_step
    GROUP BY b.job_id, b.best_loss, b.best_train_median
),
overfitting AS (
    SELECT a.job_id, 'overfitting' AS kind, 'warning' AS severity, a.first_step, a.last_step,
           a.start_time, a.end_time, a.last_loss AS value, a.best_loss AS reference
    FROM after_best a, p
    WHERE a.evals_after >= p.overfitting_min_evals_after
      AND a.last_loss >= p.overfitting_eval_rise * a.best_loss
      AND a.last_train_median < a.best_train_median
)
SELECT job_id, kind, severity, first_step, last_step, start_time, end_time, value, reference,
       printf('%d training loss value(s) are NaN or infinite, %s; the last finite loss before was %s.',
              CAST(value AS BIGINT),
              CASE WHEN first_step = last_step THEN printf('at step %d', first_step)
                   ELSE printf('from step %d to %d', first_step, last_step) END,
              coalesce(printf('%.6g', reference), 'none')) AS message
FROM nonfinite
UNION ALL
SELECT job_id, kind, severity, first_step, last_step, start_time, end_time, value, reference,
       printf('The loss spiked to %.6g at %s, against a median of %.6g over the 20 losses just before.',
              value,
              CASE WHEN first_step = last_step THEN printf('step %d', first_step)
                   ELSE printf('steps %d-%d', first_step, last_step) END,
              reference)
FROM spikes
UNION ALL
SELECT job_id, kind, severity, first_step, last_step, start_time, end_time, value, reference,
       printf('The smoothed loss diverged from step %d: %s at the last step, against a lowest %.6g.',
              first_step, coalesce(printf('%.6g', value), 'unknown'), reference)
FROM divergence
UNION ALL
SELECT job_id, kind, severity, first_step, last_step, start_time, end_time, value, reference,
       printf('The eval loss rose to %.6g by step %d while the training loss fell, against a best of %.6g.',
              value, last_step, reference)
FROM overfitting
