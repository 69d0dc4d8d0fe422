-- step_facts: a job's step rows from every source, merged by (job, step): progress.json steps,
-- trainer_state.json trainer_steps, and the well-known metrics of trainers' own logs
-- (metric_values with a tool's source, through the mapping below). For the same step and field a
-- progress.json value wins over a trainer state's, which wins over a tool log's. A tool log
-- makes step rows only at the steps of its mapped metrics. The views of steps read it.
WITH field_names (source, name, field, rank) AS (
    -- (tool, metric name, step_facts column, rank): of the names of one column a job logged, the
    -- lowest rank gives the column's values. docs/ingest.md lists this table tool by tool. The
    -- names Lightning writes to every logger are in each of its tools' tables (revision 0043). In
    -- MLflow's, `loss` ranks above `train_loss`: the HF Trainer's MLflowCallback logs its per-step
    -- loss as `loss` and, once at the end, the run's average as `train_loss` (Lightning logs no
    -- `loss` of its own).
    VALUES
        ('tensorboard', 'train/loss', 'loss', 1),
        ('tensorboard', 'loss', 'loss', 2),
        ('tensorboard', 'train_loss', 'loss', 3),
        ('tensorboard', 'train_loss_step', 'loss', 4),
        ('tensorboard', 'train/loss_step', 'loss', 5),
        ('tensorboard', 'epoch_loss', 'loss', 6),
        ('tensorboard', 'train_loss_epoch', 'loss', 7),
        ('tensorboard', 'train/loss_epoch', 'loss', 8),
        ('tensorboard', 'eval/loss', 'eval_loss', 1),
        ('tensorboard', 'eval_loss', 'eval_loss', 2),
        ('tensorboard', 'val_loss', 'eval_loss', 3),
        ('tensorboard', 'val/loss', 'eval_loss', 4),
        ('tensorboard', 'valid_loss', 'eval_loss', 5),
        ('tensorboard', 'validation_loss', 'eval_loss', 6),
        ('tensorboard', 'ptl/val_loss', 'eval_loss', 7),
        ('tensorboard', 'val_loss_epoch', 'eval_loss', 8),
        ('tensorboard', 'train/learning_rate', 'learning_rate', 1),
        ('tensorboard', 'learning_rate', 'learning_rate', 2),
        ('tensorboard', 'lr', 'learning_rate', 3),
        ('tensorboard', 'train/lr', 'learning_rate', 4),
        ('tensorboard', 'lr-Adam', 'learning_rate', 5),
        ('tensorboard', 'lr-AdamW', 'learning_rate', 6),
        ('tensorboard', 'lr-SGD', 'learning_rate', 7),
        ('tensorboard', 'epoch_learning_rate', 'learning_rate', 8),
        ('tensorboard', 'train/grad_norm', 'grad_norm', 1),
        ('tensorboard', 'grad_norm', 'grad_norm', 2),
        ('tensorboard', 'train/epoch', 'epoch', 1),
        ('tensorboard', 'epoch', 'epoch', 2),
        ('tensorboard', 'train/samples_per_second', 'samples_per_second', 1),
        ('tensorboard', 'samples_per_second', 'samples_per_second', 2),
        ('tensorboard', 'train/samples_per_sec', 'samples_per_second', 3),
        ('tensorboard', 'samples_per_sec', 'samples_per_second', 4),
        ('tensorboard', 'throughput/samples_per_sec', 'samples_per_second', 5),
        ('lightning_csv', 'train_loss', 'loss', 1),
        ('lightning_csv', 'train_loss_step', 'loss', 2),
        ('lightning_csv', 'loss', 'loss', 3),
        ('lightning_csv', 'train/loss', 'loss', 4),
        ('lightning_csv', 'train_loss_epoch', 'loss', 5),
        ('lightning_csv', 'train/loss_step', 'loss', 6),
        ('lightning_csv', 'train/loss_epoch', 'loss', 7),
        ('lightning_csv', 'val_loss', 'eval_loss', 1),
        ('lightning_csv', 'valid_loss', 'eval_loss', 2),
        ('lightning_csv', 'val/loss', 'eval_loss', 3),
        ('lightning_csv', 'val_loss_epoch', 'eval_loss', 4),
        ('lightning_csv', 'eval_loss', 'eval_loss', 5),
        ('lightning_csv', 'eval/loss', 'eval_loss', 6),
        ('lightning_csv', 'validation_loss', 'eval_loss', 7),
        ('lightning_csv', 'ptl/val_loss', 'eval_loss', 8),
        ('lightning_csv', 'lr', 'learning_rate', 1),
        ('lightning_csv', 'learning_rate', 'learning_rate', 2),
        ('lightning_csv', 'lr-Adam', 'learning_rate', 3),
        ('lightning_csv', 'lr-AdamW', 'learning_rate', 4),
        ('lightning_csv', 'lr-SGD', 'learning_rate', 5),
        ('lightning_csv', 'train/lr', 'learning_rate', 6),
        ('lightning_csv', 'train/learning_rate', 'learning_rate', 7),
        ('lightning_csv', 'grad_norm', 'grad_norm', 1),
        ('lightning_csv', 'epoch', 'epoch', 1),
        ('lightning_csv', 'train/samples_per_sec', 'samples_per_second', 1),
        ('lightning_csv', 'samples_per_sec', 'samples_per_second', 2),
        ('lightning_csv', 'samples_per_second', 'samples_per_second', 3),
        ('lightning_csv', 'throughput/samples_per_sec', 'samples_per_second', 4),
        ('lightning_csv', 'train/samples_per_second', 'samples_per_second', 5),
        ('mlflow', 'train/loss', 'loss', 1),
        ('mlflow', 'loss', 'loss', 2),
        ('mlflow', 'train_loss', 'loss', 3),
        ('mlflow', 'train_loss_step', 'loss', 4),
        ('mlflow', 'train_loss_epoch', 'loss', 5),
        ('mlflow', 'train/loss_step', 'loss', 6),
        ('mlflow', 'train/loss_epoch', 'loss', 7),
        ('mlflow', 'val/loss', 'eval_loss', 1),
        ('mlflow', 'val_loss', 'eval_loss', 2),
        ('mlflow', 'eval_loss', 'eval_loss', 3),
        ('mlflow', 'eval/loss', 'eval_loss', 4),
        ('mlflow', 'valid_loss', 'eval_loss', 5),
        ('mlflow', 'validation_loss', 'eval_loss', 6),
        ('mlflow', 'ptl/val_loss', 'eval_loss', 7),
        ('mlflow', 'val_loss_epoch', 'eval_loss', 8),
        ('mlflow', 'learning_rate', 'learning_rate', 1),
        ('mlflow', 'lr', 'learning_rate', 2),
        ('mlflow', 'train/learning_rate', 'learning_rate', 3),
        ('mlflow', 'lr-Adam', 'learning_rate', 4),
        ('mlflow', 'lr-AdamW', 'learning_rate', 5),
        ('mlflow', 'train/lr', 'learning_rate', 6),
        ('mlflow', 'lr-SGD', 'learning_rate', 7),
        ('mlflow', 'grad_norm', 'grad_norm', 1),
        ('mlflow', 'epoch', 'epoch', 1),
        ('mlflow', 'samples_per_second', 'samples_per_second', 1),
        ('mlflow', 'train/samples_per_sec', 'samples_per_second', 2),
        ('mlflow', 'samples_per_sec', 'samples_per_second', 3),
        ('mlflow', 'throughput/samples_per_sec', 'samples_per_second', 4),
        ('mlflow', 'train/samples_per_second', 'samples_per_second', 5),
        ('llamafactory', 'loss', 'loss', 1),
        ('llamafactory', 'eval_loss', 'eval_loss', 1),
        ('llamafactory', 'lr', 'learning_rate', 1),
        ('llamafactory', 'learning_rate', 'learning_rate', 2),
        ('llamafactory', 'grad_norm', 'grad_norm', 1),
        ('llamafactory', 'epoch', 'epoch', 1)
), tool_fields AS (
    -- one series per job and column: the best-ranked name the job logged at all (a run's loss is
    -- its train_loss_step series, not that series with epoch means at the epochs' last steps), all
    -- of its points whichever tool wrote each: a name ranks as the best its tools rank it, and of
    -- names of one rank, the one of the tool first by name wins (a tool ranks each name of a column
    -- once; tool names, unlike metric names, sort alike in every collation). Revision 0046: two
    -- tools logging one name into a folder, as Lightning's TensorBoard and CSV loggers do, each
    -- (job, name, step) kept by its last writer, lost the points of the tool that ranked it lower.
    SELECT m.job_id, m.step, f.field, m.value, m.ts
    FROM metric_values m
    JOIN field_names f ON f.source = m.source AND f.name = m.name
    JOIN (
        SELECT job_id, field, name
        FROM (
            SELECT job_id, field, name,
                   row_number() OVER (PARTITION BY job_id, field ORDER BY name_best, best_tool) AS name_rank
            FROM (
                SELECT m.job_id, f.field, m.name, min(f.rank) AS name_best,
                       @first_by(m.source; f.rank, m.source) AS best_tool
                FROM metric_values m
                JOIN field_names f ON f.source = m.source AND f.name = m.name
                GROUP BY m.job_id, f.field, m.name
            ) named
        ) ranked
        WHERE name_rank = 1
    ) w ON w.job_id = m.job_id AND w.field = f.field AND w.name = m.name
), tool_steps AS (
    -- one value per job, step and column (one name, and one value per job, name and step): max()
    -- takes it on both engines (PostgreSQL 15 has no any_value)
    SELECT job_id, step, max(ts) AS ts,
           max(value) FILTER (WHERE field = 'loss') AS loss,
           max(value) FILTER (WHERE field = 'eval_loss') AS eval_loss,
           max(value) FILTER (WHERE field = 'learning_rate') AS learning_rate,
           max(value) FILTER (WHERE field = 'grad_norm') AS grad_norm,
           max(value) FILTER (WHERE field = 'epoch') AS epoch,
           max(value) FILTER (WHERE field = 'samples_per_second') AS samples_per_second
    FROM tool_fields
    GROUP BY job_id, step
), both_files AS (
    SELECT coalesce(s.job_id, t.job_id) AS job_id,
           coalesce(s.step, t.step) AS step,
           s.ts,
           coalesce(s.loss, t.loss) AS loss,
           coalesce(s.eval_loss, t.eval_loss) AS eval_loss,
           coalesce(s.learning_rate, t.learning_rate) AS learning_rate,
           s.samples_per_second,
           s.iteration_time,
           s.samples,
           t.grad_norm,
           t.epoch,
           t.metrics,
           CASE WHEN t.step IS NULL THEN 'progress' WHEN s.step IS NULL THEN 'trainer_state' ELSE 'both' END AS source
    FROM steps s
    FULL OUTER JOIN trainer_steps t ON t.job_id = s.job_id AND t.step = s.step
)
SELECT coalesce(b.job_id, l.job_id) AS job_id,
       coalesce(b.step, l.step) AS step,
       coalesce(b.ts, l.ts) AS ts,
       coalesce(b.loss, l.loss) AS loss,
       coalesce(b.eval_loss, l.eval_loss) AS eval_loss,
       coalesce(b.learning_rate, l.learning_rate) AS learning_rate,
       coalesce(b.samples_per_second, l.samples_per_second) AS samples_per_second,
       b.iteration_time,
       b.samples,
       coalesce(b.grad_norm, l.grad_norm) AS grad_norm,
       coalesce(b.epoch, l.epoch) AS epoch,
       b.metrics,
       CASE WHEN l.step IS NULL THEN b.source WHEN b.step IS NULL THEN 'tool_log' ELSE b.source || '+tool_log' END
           AS source
FROM both_files b
FULL OUTER JOIN tool_steps l ON l.job_id = b.job_id AND l.step = b.step
