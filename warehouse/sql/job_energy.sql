-- job_energy: a job's energy (power integrated over its GPU samples) and its GPUs' throttling
-- and idleness. All NULL for a job without GPU samples (its GPUs' counts too: 0 idle GPUs would
-- say what the samples never measured; revision 0040); idle_gpus NULL too where no GPU's idleness
-- is known (no time with a finite utilization: an nvidia-smi log of power alone; revision 0042).
WITH gpus AS (
    SELECT job_id,
           @ordered_fsum(energy_wh) AS energy_wh,
           count(*) FILTER (WHERE energy_wh IS NOT NULL) AS gpus_with_power,
           CASE WHEN count(idle) > 0 THEN count(*) FILTER (WHERE idle) END AS idle_gpus,
           @fdiv(@ordered_fsum(throttled_share) FILTER (WHERE throttled_share IS NOT NULL);
                 nullif(count(throttled_share), 0)) AS average_throttled_share
    FROM job_gpus
    GROUP BY job_id
)
SELECT j.job_id,
       g.energy_wh AS total_energy_wh,
       -- a total of samples that overflows a double is unknown (job_analytics), not a 0 Wh per 1000
       CASE WHEN p.total_samples > 0 AND @finite(p.total_samples)
                THEN @fdiv(g.energy_wh; @fdiv(p.total_samples; 1000)) END AS energy_per_1000_samples_wh,
       g.gpus_with_power,
       g.idle_gpus,
       g.average_throttled_share
FROM jobs j
JOIN job_performance p ON p.job_id = j.job_id
LEFT JOIN gpus g ON g.job_id = j.job_id
