-- insight_parameters: one row, what every insight view compares with: as_of (the start of the
-- latest ingest run, the run computing insights while it runs; now, in UTC, before any run)
-- and each threshold of insight_settings as a column (docs/insights.md lists their names).
-- A threshold missing from insight_settings is NULL, and the rule reading it finds nothing.
SELECT coalesce((SELECT max(started_at) FROM ingest_runs), now() AT TIME ZONE 'UTC') AS as_of,
       max(value) FILTER (WHERE name = 'loss_spike.mad_factor') AS loss_spike_mad_factor,
       max(value) FILTER (WHERE name = 'loss_spike.relative') AS loss_spike_relative,
       max(value) FILTER (WHERE name = 'loss_divergence.factor') AS loss_divergence_factor,
       max(value) FILTER (WHERE name = 'loss_divergence.rise') AS loss_divergence_rise,
       max(value) FILTER (WHERE name = 'overfitting.min_evals_after') AS overfitting_min_evals_after,
       max(value) FILTER (WHERE name = 'overfitting.eval_rise') AS overfitting_eval_rise,
       max(value) FILTER (WHERE name = 'overfitting.train_window') AS overfitting_train_window,
       max(value) FILTER (WHERE name = 'throughput_drop.min_rows') AS throughput_drop_min_rows,
       max(value) FILTER (WHERE name = 'throughput_drop.fraction') AS throughput_drop_fraction,
       max(value) FILTER (WHERE name = 'stall.factor') AS stall_factor,
       max(value) FILTER (WHERE name = 'stall.min_seconds') AS stall_min_seconds,
       max(value) FILTER (WHERE name = 'slow_vs_peers.fraction') AS slow_vs_peers_fraction,
       max(value) FILTER (WHERE name = 'slow_vs_peers.min_peers') AS slow_vs_peers_min_peers,
       max(value) FILTER (WHERE name = 'gpu_idle.utilization') AS gpu_idle_utilization,
       max(value) FILTER (WHERE name = 'gpu_idle.share') AS gpu_idle_share,
       max(value) FILTER (WHERE name = 'gpu_straggler.min_gpus') AS gpu_straggler_min_gpus,
       max(value) FILTER (WHERE name = 'gpu_straggler.points') AS gpu_straggler_points,
       max(value) FILTER (WHERE name = 'gpu_throttled.share') AS gpu_throttled_share,
       max(value) FILTER (WHERE name = 'low_gpu_utilization.percent') AS low_gpu_utilization_percent,
       max(value) FILTER (WHERE name = 'low_gpu_utilization.min_training_seconds') AS low_gpu_utilization_min_training_seconds,
       max(value) FILTER (WHERE name = 'memory_headroom.fraction') AS memory_headroom_fraction,
       max(value) FILTER (WHERE name = 'memory_headroom.min_training_seconds') AS memory_headroom_min_training_seconds,
       max(value) FILTER (WHERE name = 'work_at_risk.factor') AS work_at_risk_factor,
       max(value) FILTER (WHERE name = 'silent_running.min_seconds') AS silent_running_min_seconds,
       max(value) FILTER (WHERE name = 'silent_running.factor') AS silent_running_factor
FROM insight_settings
