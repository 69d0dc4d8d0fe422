-- gpu_utilization_readings: every GPU utilization reading that has a time: the job's GPU samples when it has
-- any (those still kept raw: utilization_minutes reads the rollups), else the readings logged
-- with its steps, timed by the step's timestamp (as job_resources chooses: a job with rolled-up
-- samples has samples, kept or not).
SELECT g.job_id, 'gpu_samples' AS source, g.host, g.gpu_index, g.ts, g.utilization_percent
FROM gpu_samples g
UNION ALL
SELECT g.job_id, 'step_readings' AS source, '' AS host, g.gpu_index, s.ts, g.utilization_percent
FROM step_gpus g
JOIN steps s ON s.job_id = g.job_id AND s.step = g.step
WHERE s.ts IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM gpu_minutes x WHERE x.job_id = g.job_id)
