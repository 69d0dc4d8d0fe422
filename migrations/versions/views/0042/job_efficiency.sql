-- job_efficiency: the efficiency section (0-100), one row per job: GPU utilization score,
-- throughput score against the target (else the peak), and their mean.
WITH scores AS (
    SELECT j.job_id,
           r.average_gpu_utilization AS gpu_utilization_score,
           CASE WHEN j.target_samples_per_second > 0 THEN j.target_samples_per_second
                WHEN p.peak_samples_per_second > 0 THEN p.peak_samples_per_second END AS reference,
           CASE WHEN j.target_samples_per_second > 0 THEN 'target'
                WHEN p.peak_samples_per_second > 0 THEN 'peak' END AS throughput_reference,
           p.average_samples_per_second
    FROM jobs j
    JOIN job_performance p ON p.job_id = j.job_id
    JOIN job_resources r ON r.job_id = j.job_id
), scored AS (
    SELECT job_id, gpu_utilization_score, throughput_reference, reference,
           -- least() skips NULLs in DuckDB, so an unknown ratio is tested first; a throughput that
           -- overflows a double is unknown (job_analytics), not a score of 100 (revision 0042)
           CASE WHEN reference IS NOT NULL AND @finite(average_samples_per_second)
                THEN least(100, @fdiv(@fmul(100; average_samples_per_second); reference)) END AS throughput_score
    FROM scores
)
SELECT job_id,
       gpu_utilization_score,
       throughput_score,
       CASE WHEN gpu_utilization_score IS NOT NULL AND throughput_score IS NOT NULL
                THEN (gpu_utilization_score + throughput_score) / 2
            ELSE coalesce(gpu_utilization_score, throughput_score) END AS overall_score,
       throughput_reference,
       reference AS throughput_reference_samples_per_second
FROM scored
