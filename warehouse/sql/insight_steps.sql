-- insight_steps: every insight of insights.md read from a job's step rows, one row per insight:
-- the loss rules (nonfinite_loss, loss_spike, loss_divergence, overfitting), the speed rules
-- (throughput_drop, stall) and the job rules (work_at_risk, silent_running). insight_losses,
-- insight_speed and insight_lifecycle are its kinds by family. One view, so that a job's rows
-- are derived (insight_rows) and sorted once for all of them: the CTE rows, materialised, holds
-- every running figure of the row order. The per-job medians are computed for the jobs whose
-- rule reads them (revision 0023): T for every job, g for the jobs with a gap long enough to be
-- a stall and for the running jobs.
-- Thresholds come from insight_parameters, but for the two windows (loss_spike's 20 finite
-- losses, loss_divergence's 10 rows): a frame whose size is read from a table costs
-- DuckDB four times a fixed frame's (docs/decisions.md), so their sizes are written here.
-- loss_spike's medians are computed only for the rows, loss_divergence's r and running lowest
-- only for the jobs, and throughput_drop's runs only for the jobs, that a bound read in that sort
-- or a cheap count leaves possible (revisions 0016, 0025; docs/decisions.md, "Insight rules
-- computed where they can hold", "Insight bounds before medians and sorts"). A filter
-- on job_id (one job, or a range of them) reaches every read of rows: the CTEs join on job_id
-- rather than test membership in a subquery, which would stop it.
WITH p AS (SELECT * FROM insight_parameters),
rows AS MATERIALIZED (
    SELECT r.*, @seconds_between(r.prev_ts; r.ts) AS gap
    FROM insight_rows r
),
-- per job: T (the median row throughput)
per_job AS NOT MATERIALIZED (
    SELECT job_id, @median(throughput) AS typical
    FROM rows
    GROUP BY job_id
),
-- each job's last row (where a divergence ends; what work_at_risk measures from)
last_rows AS NOT MATERIALIZED (
    SELECT job_id, step AS last_step, ts AS last_ts
    FROM rows
    WHERE last_row
),
-- each job's latest row time (silent_running's last log, as job_duration's end): the later of its
-- last row's and its last timing row's
latest_rows AS NOT MATERIALIZED (
    SELECT job_id, greatest(max(ts) FILTER (WHERE last_row), max(ts) FILTER (WHERE last_timing_row)) AS last_ts
    FROM rows
    GROUP BY job_id
),
-- g (the median positive gap between rows) of the jobs that may have a stall: a stall's gap is
-- above min_seconds, so only a job with such a gap needs its median
stall_jobs AS (
    SELECT DISTINCT x.job_id
    FROM rows x, p
    WHERE x.gap > p.stall_min_seconds
),
stall_gaps AS (
    SELECT x.job_id, @median(x.gap) FILTER (WHERE x.gap > 0) AS g
    FROM rows x
    JOIN stall_jobs s ON s.job_id = x.job_id
    GROUP BY x.job_id
),
-- g of the running jobs (silent_running's limit)
running_gaps AS (
    SELECT x.job_id, @median(x.gap) FILTER (WHERE x.gap > 0) AS g
    FROM rows x
    JOIN jobs j ON j.job_id = x.job_id
    WHERE j.status = 'running'
    GROUP BY x.job_id
),
-- the rows with a finite loss, by their place among them (what the medians over finite losses join)
finite_losses AS (
    SELECT f.job_id, f.finite_no, f.finite_loss, f.row_no
    FROM rows f
    WHERE f.finite_loss IS NOT NULL
),
nonfinite_rows AS (
    SELECT job_id, min(step) AS first_step, max(step) AS last_step,
           @first_by(ts; step) AS start_time, @first_by(ts; step DESC) AS end_time,
           CAST(count(*) AS DOUBLE PRECISION) AS value,
           -- the finite losses before the first such row: the last of them is its reference
           @first_by(finite_no; step) AS finite_before
    FROM rows
    WHERE nonfinite_loss
    GROUP BY job_id
),
nonfinite AS (
    SELECT n.job_id, 'nonfinite_loss' AS kind, 'critical' AS severity, n.first_step, n.last_step,
           n.start_time, n.end_time, n.value, max(n.reference) AS reference
    FROM (SELECT n.*, f.finite_loss AS reference
          FROM nonfinite_rows n
          JOIN finite_losses f ON f.job_id = n.job_id AND f.finite_no = n.finite_before
          UNION ALL
          SELECT n.*, CAST(NULL AS DOUBLE PRECISION) FROM nonfinite_rows n) n
    GROUP BY n.job_id, n.first_step, n.last_step, n.start_time, n.end_time, n.value
),
-- a spike: a finite loss L above m + max(mad_factor * d, relative * |m|), m and d the median and
-- the median absolute deviation (from m) of the 20 finite losses just before it (20 at least).
-- m is at least the lowest finite loss before the row (a), so L > m + relative * |m| needs
-- L > a + relative * a when a >= 0, and L > a otherwise: m and d are computed for those rows only.
spike_candidates AS (
    SELECT f.job_id, f.step, f.ts, f.row_no, f.finite_loss, f.finite_no
    FROM rows f, p
    WHERE f.finite_no > 20
      AND f.finite_loss > CASE WHEN f.lowest_before >= 0 THEN @fadd(f.lowest_before; @fmul(p.loss_spike_relative; f.lowest_before))
                               ELSE f.lowest_before END
),
-- the rows where loss_divergence may start (the bound is explained below)
divergence_candidates AS (
    SELECT f.job_id, f.row_no, f.finite_no, f.lowest_before
    FROM rows f, p
    WHERE f.finite_no >= 10
      AND f.recent_max + 1e-300 >= f.lowest_before - 1e-300
      AND f.recent_max + 1e-300 >= @fmul(p.loss_divergence_factor; (f.lowest_before - 1e-300))
),
-- the finite losses these medians read, found in one join: a spike candidate's 20 finite losses
-- just before it; a divergence candidate's finite losses of its own 10 rows (among the 10
-- numbered up to its finite_no, those in rows row_no - 9 .. row_no). Numbers below 1 match no
-- loss; saying so also tells DuckDB's planner that these rows are few, so that it builds the
-- join's hash table on them rather than on every finite loss (a sixth of the refresh's CPU time on the benchmark).
loss_windows AS MATERIALIZED (
    SELECT c.job_id, c.step, c.ts, c.row_no, c.finite_loss, c.lowest_before, c.spike,
           w.finite_loss AS before, w.row_no AS before_row
    FROM (SELECT c.job_id, c.step, c.ts, c.row_no, c.finite_loss, CAST(NULL AS DOUBLE PRECISION) AS lowest_before,
                 true AS spike, c.finite_no + k.back AS before_no
          FROM spike_candidates c, generate_series(-20, -1) k(back)
          UNION ALL
          SELECT c.job_id, CAST(NULL AS BIGINT), CAST(NULL AS TIMESTAMP), c.row_no, CAST(NULL AS DOUBLE PRECISION),
                 c.lowest_before, false, c.finite_no + k.back
          FROM divergence_candidates c, generate_series(-9, 0) k(back)) c
    JOIN finite_losses w ON w.job_id = c.job_id AND w.finite_no = c.before_no
    WHERE c.before_no > 0
),
-- each spike candidate with the 20 finite losses just before it, and their median m
spike_windows AS (
    SELECT c.job_id, c.step, c.ts, c.row_no, c.finite_loss, c.before,
           @median(c.before) OVER (PARTITION BY c.job_id, c.step) AS spike_median
    FROM loss_windows c
    WHERE c.spike
),
spike_rows AS (
    SELECT c.job_id, c.step, c.ts, c.row_no, c.finite_loss, c.spike_median,
           c.row_no - row_number() OVER (PARTITION BY c.job_id ORDER BY c.row_no) AS run
    FROM spike_windows c, p
    WHERE c.finite_loss > @fadd(c.spike_median; @fmul(p.loss_spike_relative; abs(c.spike_median)))
    GROUP BY c.job_id, c.step, c.ts, c.row_no, c.finite_loss, c.spike_median, p.loss_spike_mad_factor
    HAVING c.finite_loss > @fadd(c.spike_median; @fmul(p.loss_spike_mad_factor; @median(abs(@fsub(c.before; c.spike_median)))))
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
-- A median lies between the lowest and the highest of its values: r is at most the highest
-- finite loss of its 10 rows (recent_max), and b, a median of finite losses of earlier rows, at
-- least the lowest finite loss before the row (lowest_before). With factor >= 0, a row can start
-- a divergence only where r >= lowest_before and r >= factor * lowest_before, so only where
-- recent_max passes that test (divergence_candidates, few rows: a spike passes it) and then its
-- r, from the losses loss_windows found. Rounding keeps a median within its values' range but
-- for subnormal losses (below 2.2e-308), whose halves round: the 1e-300 covers those. Only the
-- jobs with such a row have r computed for every row (a sort of their rows with a median over
-- each 10) and are sorted again for b.
diverging_jobs AS (
    SELECT DISTINCT c.job_id
    FROM (SELECT c.job_id, c.row_no, c.lowest_before, @median(c.before) AS r
          FROM loss_windows c
          WHERE NOT c.spike AND c.before_row > c.row_no - 10
          GROUP BY c.job_id, c.row_no, c.lowest_before) c, p
    WHERE c.r >= c.lowest_before - 1e-300 AND c.r >= @fmul(p.loss_divergence_factor; (c.lowest_before - 1e-300))
),
smoothed AS (
    SELECT s.job_id, s.step, s.ts, s.row_no, s.last_row, s.finite_no,
           @median(s.finite_loss) OVER (PARTITION BY s.job_id ORDER BY s.step
                                        ROWS BETWEEN 9 PRECEDING AND CURRENT ROW) AS r
    FROM rows s
    JOIN diverging_jobs d ON d.job_id = s.job_id
),
lowest AS (
    SELECT s.job_id, s.step, s.ts, s.row_no, s.r,
           first_value(s.r) OVER (PARTITION BY s.job_id ORDER BY s.step) AS r_first,
           min(s.r) OVER (PARTITION BY s.job_id ORDER BY s.step
                          ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS b,
           -- r of the job's last row (NULL when it is not defined there)
           max(CASE WHEN s.last_row THEN s.r END) OVER (PARTITION BY s.job_id) AS r_last,
           e.last_step, e.last_ts
    FROM smoothed s
    JOIN last_rows e ON e.job_id = s.job_id
    WHERE s.finite_no >= 10 AND s.r IS NOT NULL
),
divergence AS (
    SELECT l.job_id, 'loss_divergence' AS kind, 'critical' AS severity,
           min(l.step) AS first_step, max(l.last_step) AS last_step,
           @first_by(l.ts; l.step) AS start_time, max(l.last_ts) AS end_time,
           max(l.r_last) AS value,
           @first_by(l.b; l.step) AS reference,
           @first_by(l.r; l.step) AS diverged_to
    FROM lowest l, p
    WHERE l.b > 0 AND l.r >= l.b
      AND l.r >= @fmul(p.loss_divergence_factor; l.b)
      AND @fsub(l.r; l.b) >= @fmul(p.loss_divergence_rise; @fsub(l.r_first; l.b))
    GROUP BY l.job_id
),
-- overfitting: e* = the lowest finite eval loss (the first, on ties) at step s*; each eval row
-- with the median of the last train_window finite losses at or before it
evals AS MATERIALIZED (
    SELECT r.job_id, r.step, r.ts, r.finite_eval_loss AS eval_loss, @median(f.finite_loss) AS train_median
    FROM rows r
    JOIN finite_losses f ON f.job_id = r.job_id AND f.finite_no <= r.finite_no
                      AND f.finite_no > r.finite_no - (SELECT overfitting_train_window FROM p)
    WHERE r.finite_eval_loss IS NOT NULL
    GROUP BY r.job_id, r.step, r.ts, r.finite_eval_loss
    UNION ALL
    -- an eval row whose window holds no finite loss (none yet, or a window of no rows) has no
    -- train median: its own branch rather than a LEFT JOIN, which a filter on job_id would not cross
    SELECT r.job_id, r.step, r.ts, r.finite_eval_loss, CAST(NULL AS DOUBLE PRECISION)
    FROM rows r, p
    WHERE r.finite_eval_loss IS NOT NULL
      AND NOT coalesce(r.finite_no > 0 AND p.overfitting_train_window > 0, false)
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
      AND a.last_loss >= @fmul(p.overfitting_eval_rise; a.best_loss)
      AND a.last_train_median < a.best_train_median
),
-- throughput_drop: among the rows with a known throughput, in row order, maximal runs of at
-- least min_rows rows each below fraction * T
slow_rows AS (
    SELECT s.job_id, s.row_no, j.typical
    FROM rows s
    JOIN per_job j ON j.job_id = s.job_id, p
    -- and the rows without a throughput (few or none), which a run steps over
    WHERE s.throughput < @fmul(p.throughput_drop_fraction; j.typical) OR s.throughput IS NULL
),
-- a run's rows and the rows without a throughput among them are min_rows rows at least with
-- consecutive row_no: they fill a whole block of (min_rows + 1) / 2 rows (rounded down) numbered
-- from a multiple of it. The jobs with such a block, few, are the only ones sorted for runs.
drop_jobs AS (
    SELECT b.job_id, max(b.typical) AS typical
    FROM (SELECT u.job_id, count(*) AS block_rows, max(u.typical) AS typical
          FROM slow_rows u, p
          GROUP BY u.job_id, floor((u.row_no - 1) / floor((p.throughput_drop_min_rows + 1) / 2))) b, p
    WHERE b.block_rows = floor((p.throughput_drop_min_rows + 1) / 2)
    GROUP BY b.job_id
),
-- a slow row's row_no less its place among the slow rows and the rows without a throughput
-- sorted together is the number of rows before it whose throughput is known and not slow: the
-- same along a run, one more at least after each such row
slow AS (
    SELECT u.job_id, u.step, u.ts, u.samples, u.seconds, u.throughput, u.typical, u.run
    FROM (SELECT s.job_id, s.step, s.ts, s.samples, s.seconds, s.throughput, d.typical,
                 s.row_no - row_number() OVER (PARTITION BY s.job_id ORDER BY s.step) AS run
          FROM rows s
          JOIN drop_jobs d ON d.job_id = s.job_id, p
          WHERE s.throughput < @fmul(p.throughput_drop_fraction; d.typical) OR s.throughput IS NULL) u
    WHERE u.throughput IS NOT NULL
),
drops AS (
    SELECT s.job_id, 'throughput_drop' AS kind, 'warning' AS severity,
           min(s.step) AS first_step, max(s.step) AS last_step,
           @first_by(s.ts; s.step) AS start_time, @first_by(s.ts; s.step DESC) AS end_time,
           CASE WHEN @ordered_fsum(s.seconds) FILTER (WHERE s.samples IS NOT NULL) > 0
                    THEN @fdiv(@ordered_fsum(s.samples) FILTER (WHERE s.seconds IS NOT NULL);
                               @ordered_fsum(s.seconds) FILTER (WHERE s.samples IS NOT NULL))
                ELSE @ordered_favg(s.throughput) END AS value,
           min(s.typical) AS reference
    -- each run's length first: most runs are a row or two, and the figures sort each run's values
    FROM (SELECT s.*, count(*) OVER (PARTITION BY s.job_id, s.run) AS run_rows FROM slow s) s, p
    WHERE s.run_rows >= p.throughput_drop_min_rows
    GROUP BY s.job_id, s.run
),
-- stall: a timing row (so not the first) later than the timing row before it by more than
-- max(factor * g, min_seconds)
stalls AS (
    SELECT x.job_id, 'stall' AS kind, 'warning' AS severity, x.prev_step AS first_step, x.step AS last_step,
           x.prev_ts AS start_time, x.ts AS end_time, x.gap AS value, j.g AS reference
    FROM rows x
    JOIN stall_gaps j ON j.job_id = x.job_id, p
    WHERE x.gap > p.stall_factor * j.g AND x.gap > p.stall_min_seconds
),
at_risk AS (
    SELECT a.job_id, 'work_at_risk' AS kind,
           CAST(e.last_step - coalesce(c.last_checkpoint, 0) AS DOUBLE PRECISION) AS value,
           a.checkpoint_frequency_steps AS reference,
           @printf('The job ended %s at step %d, %d steps after its last checkpoint, more than %.6g x the checkpoint frequency of %.6g steps.'; a.status; e.last_step; e.last_step - coalesce(c.last_checkpoint, 0); p.work_at_risk_factor; a.checkpoint_frequency_steps) AS message
    FROM job_results a
    JOIN last_rows e ON e.job_id = a.job_id
    LEFT JOIN (SELECT job_id, max(step) AS last_checkpoint FROM checkpoints GROUP BY job_id) c ON c.job_id = a.job_id, p
    WHERE a.status IN ('failed', 'cancelled')
      AND a.checkpoint_frequency_steps IS NOT NULL
      AND e.last_step - coalesce(c.last_checkpoint, 0) > @fmul(p.work_at_risk_factor; a.checkpoint_frequency_steps)
),
silence AS (
    SELECT j.job_id,
           -- greatest() skips NULLs in DuckDB: the later of those known
           @seconds_between(greatest(e.last_ts, j.updated_at); p.as_of) AS silent_seconds,
           CASE WHEN e.g IS NOT NULL THEN greatest(p.silent_running_min_seconds, p.silent_running_factor * e.g)
                ELSE p.silent_running_min_seconds END AS limit_seconds
    FROM jobs j
    -- each job's last row and g, NULL for a job without rows (an inner join and a union rather
    -- than a LEFT JOIN: a filter on job_id then reaches the rows through every read of them)
    JOIN (SELECT u.job_id, max(u.last_ts) AS last_ts, max(u.g) AS g
          FROM (SELECT job_id, last_ts, CAST(NULL AS DOUBLE PRECISION) AS g FROM latest_rows
                UNION ALL
                SELECT job_id, CAST(NULL AS TIMESTAMP), g FROM running_gaps
                UNION ALL
                SELECT job_id, CAST(NULL AS TIMESTAMP), CAST(NULL AS DOUBLE PRECISION) FROM jobs) u
          GROUP BY u.job_id) e ON e.job_id = j.job_id, p
    WHERE j.status = 'running'
),
silent AS (
    SELECT s.job_id, 'silent_running' AS kind, s.silent_seconds AS value, s.limit_seconds AS reference,
           @printf('The job is running but has logged nothing for %s s, longer than %s s.';
                   @printf(@apart_format(s.silent_seconds; s.limit_seconds; '%.6g'); s.silent_seconds);
                   @printf(@apart_format(s.silent_seconds; s.limit_seconds; '%.6g'); s.limit_seconds)) AS message
    FROM silence s
    WHERE s.silent_seconds > s.limit_seconds
)
SELECT job_id, kind, severity, first_step, last_step, start_time, end_time, value, reference,
       @printf('%d training loss value(s) are NaN or infinite, %s; the last finite loss before was %s.'; CAST(value AS BIGINT); CASE WHEN first_step = last_step THEN @printf('at step %d'; first_step)
                   ELSE @printf('from step %d to %d'; first_step; last_step) END; coalesce(@printf('%.6g'; reference), 'none')) AS message
FROM nonfinite
UNION ALL
SELECT job_id, kind, severity, first_step, last_step, start_time, end_time, value, reference,
       @printf('The loss spiked to %s at %s, against a median of %s over the 20 losses just before.'; @printf(@apart_format(value; reference; '%.6g'); value); CASE WHEN first_step = last_step THEN @printf('step %d'; first_step)
                   ELSE @printf('steps %d-%d'; first_step; last_step) END; @printf(@apart_format(value; reference; '%.6g'); reference))
FROM spikes
UNION ALL
SELECT job_id, kind, severity, first_step, last_step, start_time, end_time, value, reference,
       @printf('The smoothed loss (median of 10 rows) diverged at step %d: %s there, against a lowest %s before; %s at the last step.'; first_step;
               @printf(@apart_format(diverged_to; reference; '%.6g'); diverged_to); @printf(@apart_format(diverged_to; reference; '%.6g'); reference);
               coalesce(@printf('%.6g'; value), 'unknown'))
FROM divergence
UNION ALL
SELECT job_id, kind, severity, first_step, last_step, start_time, end_time, value, reference,
       @printf('The eval loss rose to %s by step %d while the training loss fell, against a best of %s.'; @printf(@apart_format(value; reference; '%.6g'); value); last_step; @printf(@apart_format(value; reference; '%.6g'); reference))
FROM overfitting
UNION ALL
SELECT job_id, kind, severity, first_step, last_step, start_time, end_time, value, reference,
       @printf('Throughput fell to %s samples/s over steps %d-%d, against a median of %s samples/s.'; @printf(@apart_format(value; reference; '%.6g'); value); first_step; last_step; @printf(@apart_format(value; reference; '%.6g'); reference)) AS message
FROM drops
UNION ALL
SELECT job_id, kind, severity, first_step, last_step, start_time, end_time, value, reference,
       @printf('No row was logged for %s s between steps %d and %d, against a median gap of %s s.'; @printf(@apart_format(value; reference; '%.6g'); value); first_step; last_step; @printf(@apart_format(value; reference; '%.6g'); reference))
FROM stalls
UNION ALL
SELECT job_id, kind, 'warning', CAST(NULL AS BIGINT), CAST(NULL AS BIGINT), CAST(NULL AS TIMESTAMP),
       CAST(NULL AS TIMESTAMP), value, reference, message
FROM at_risk
UNION ALL
SELECT job_id, kind, 'warning', NULL, NULL, NULL, NULL, value, reference, message
FROM silent
