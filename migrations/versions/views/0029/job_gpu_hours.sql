-- job_gpu_hours: GPU hours per job, the one definition of the figure (the fleet endpoint,
-- fleet_gpu_hours and the examples of docs/views.md all read this view). A job holds its GPUs
-- for its whole duration, so gpu_hours = total_seconds x GPUs / 3600: the cost of the
-- allocation, idle and overhead time included. Its GPUs are those seen in its GPU samples or
-- step readings (job_resources.gpus_seen), else its config's gpu_count. gpu_hours is NULL for a
-- job without a finite total_seconds or a positive GPU count.
-- total_seconds comes from job_results (job_analytics materialised at ingest, same figures), and
-- the GPUs of its samples from job_gpu_series (the distinct GPUs of gpu_minutes, kept at ingest:
-- job_resources.gpus_seen without grouping every minute of the fleet), so summing the fleet
-- reads a few rows per job. Step readings count as job_resources counts them, for the jobs
-- without samples only.
WITH sampled AS (
    SELECT job_id, count(*) AS gpus FROM job_gpu_series GROUP BY job_id
), logged AS (
    SELECT g.job_id, count(DISTINCT g.gpu_index) AS gpus
    FROM step_gpus g
    WHERE NOT EXISTS (SELECT 1 FROM job_gpu_series s WHERE s.job_id = g.job_id)
    GROUP BY g.job_id
), counted AS (
    SELECT a.job_id,
           CASE WHEN coalesce(s.gpus, l.gpus, 0) > 0 THEN coalesce(s.gpus, l.gpus) ELSE j.gpu_count END AS gpus,
           a.total_seconds
    FROM job_results a
    JOIN jobs j ON j.job_id = a.job_id
    LEFT JOIN sampled s ON s.job_id = a.job_id
    LEFT JOIN logged l ON l.job_id = a.job_id
)
SELECT job_id,
       gpus,
       total_seconds,
       CASE WHEN @finite(total_seconds) AND gpus > 0 THEN @fdiv(@fmul(total_seconds; gpus); 3600) END AS gpu_hours
FROM counted
