-- insight_speed: the speed insights of insights.md read from a job's rows, one row per
-- insight: throughput_drop and stall (slow_vs_peers compares jobs: insight_peers). Computed
-- with every other insight of a job's rows by insight_steps.
SELECT job_id, kind, severity, first_step, last_step, start_time, end_time, value, reference, message
FROM insight_steps
WHERE kind IN ('throughput_drop', 'stall')
