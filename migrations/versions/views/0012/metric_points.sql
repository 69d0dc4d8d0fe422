-- metric_points: every scalar a job logged, under its own name (a TensorBoard tag, a CSV column,
-- an MLflow metric, a trainer-state key), one value per (job, name, step): the last written.
SELECT job_id, name, step, ts, value
FROM metric_values
