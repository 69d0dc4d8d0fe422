-- insight_peers: slow_vs_peers, the one insight that compares jobs. A completed job whose
-- average_samples_per_second is below fraction * the median of the same figure over its peers:
-- the other completed jobs with the same model_name and GPU count (the config's gpu_count,
-- else the GPUs seen in its readings), when at least min_peers peers have the figure.
-- The figures come from job_results (job_analytics materialised at ingest): comparing one job
-- with its peers then reads one row per peer.
WITH p AS (SELECT * FROM insight_parameters),
completed AS (
    SELECT a.job_id, a.model_name, a.average_samples_per_second AS throughput,
           coalesce(j.gpu_count, r.gpus_seen) AS gpus
    FROM job_results a
    JOIN jobs j ON j.job_id = a.job_id
    JOIN job_resources r ON r.job_id = a.job_id
    WHERE a.status = 'completed' AND a.model_name IS NOT NULL AND @finite(a.average_samples_per_second)
),
compared AS (
    SELECT c.job_id, min(c.throughput) AS throughput, @median(o.throughput) AS peer_median, count(*) AS peers
    FROM completed c
    JOIN completed o ON o.model_name = c.model_name AND o.gpus = c.gpus AND o.job_id <> c.job_id
    GROUP BY c.job_id
)
SELECT c.job_id, 'slow_vs_peers' AS kind, 'warning' AS severity,
       CAST(NULL AS BIGINT) AS first_step, CAST(NULL AS BIGINT) AS last_step,
       CAST(NULL AS TIMESTAMP) AS start_time, CAST(NULL AS TIMESTAMP) AS end_time,
       c.throughput AS value, c.peer_median AS reference,
       @printf('Throughput %s samples/s is below %.6g x the median %s samples/s of %d peer jobs (same model and GPU count).';
               @printf(@apart_format(c.throughput; @fmul(p.slow_vs_peers_fraction; c.peer_median); '%.6g'); c.throughput);
               p.slow_vs_peers_fraction;
               @printf(@apart_format(c.throughput; @fmul(p.slow_vs_peers_fraction; c.peer_median); '%.6g'); c.peer_median);
               c.peers) AS message
FROM compared c, p
WHERE c.peers >= p.slow_vs_peers_min_peers AND c.throughput < @fmul(p.slow_vs_peers_fraction; c.peer_median)
