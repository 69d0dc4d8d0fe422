-- fleet_gpu_hours: the fleet's GPU hours in one row, the figures GET /api/training/analytics/fleet
-- shows without filters: gpu_hours (summed over job_gpu_hours), gpu_hours_jobs (the jobs it
-- counts: a finite duration and a GPU count) and jobs (every job).
SELECT @ordered_fsum(gpu_hours) AS gpu_hours,
       count(gpu_hours) AS gpu_hours_jobs,
       count(*) AS jobs
FROM job_gpu_hours
