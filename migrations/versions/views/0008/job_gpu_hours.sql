-- job_gpu_hours: GPU hours per job, the one definition of the figure (the fleet endpoint,
-- fleet_gpu_hours and the examples of docs/views.md all read this view). A job holds its GPUs
-- for its whole duration, so gpu_hours = total_seconds x GPUs / 3600: the cost of the
-- allocation, idle and overhead time included. Its GPUs are those seen in its GPU samples or
-- step readings (job_resources.gpus_seen), else its config's gpu_count. gpu_hours is NULL for a
-- job without a finite total_seconds or a positive GPU count.
-- total_seconds comes from job_results (job_analytics materialised at ingest, same figures), so
-- summing the fleet reads one row per job instead of computing every job's duration.
WITH counted AS (
    SELECT a.job_id,
           CASE WHEN r.gpus_seen > 0 THEN r.gpus_seen ELSE j.gpu_count END AS gpus,
           a.total_seconds
    FROM job_results a
    JOIN jobs j ON j.job_id = a.job_id
    JOIN job_resources r ON r.job_id = a.job_id
)
SELECT job_id,
       gpus,
       total_seconds,
       CASE WHEN @finite(total_seconds) AND gpus > 0 THEN total_seconds * gpus / 3600 END AS gpu_hours
FROM counted
