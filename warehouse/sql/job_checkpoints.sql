-- job_checkpoints: the checkpoints section, one row per job: count, frequency, final and best
-- checkpoint. The trainer's own best_model_checkpoint wins when recorded; else the lowest eval
-- loss; else the lowest training loss. nonfinite_eval_losses: the checkpoint entries whose eval_loss
-- is NaN or infinite, left out of the choice (revision 0043).
-- The frequency is the config's save_steps when set; a trainer state's (a job without a config,
-- or whose config has none) only where every checkpoint is a multiple of it, but for a last one
-- at or past the trainer's max_steps (its save at the end of training): the Trainer writes its
-- save_steps (default 500) whatever its save_strategy, so a run saved once an epoch (checkpoints
-- 30, 60) named 500 (revision 0045), and one that failed after its first epoch's save still did
-- (revision 0046); else the median gap.
WITH agg AS (
    SELECT j.job_id,
           j.save_steps,
           -- a job's own save_steps is its config's, unless a trainer state gave it (no config)
           o.save_steps > 0 AND (o.config IS NOT NULL OR r.job_id IS NULL) AS save_steps_configured,
           j.trainer_best_checkpoint,
           -- the checkpoints that are no multiple of save_steps (nullif: no division by 0), less the
           -- last where it is the trainer's save at its end
           count(c.step) FILTER (WHERE c.step % nullif(j.save_steps, 0) <> 0)
               - CASE WHEN max(c.step) % nullif(j.save_steps, 0) <> 0 AND max(c.step) >= r.max_steps THEN 1 ELSE 0 END
               AS off_schedule,
           count(c.step) AS total_checkpoints,
           @median(c.gap) AS median_gap,
           max(c.step) AS final_step,
           @first_by(c.step; c.eval_loss, c.step) FILTER (WHERE c.eval_loss IS NOT NULL) AS best_eval_step,
           @first_by(c.step; c.train_loss, c.step) FILTER (WHERE c.train_loss IS NOT NULL) AS best_train_step,
           count(*) FILTER (WHERE c.nonfinite_eval_loss) AS nonfinite_eval_losses
    FROM job_settings j
    JOIN jobs o ON o.job_id = j.job_id
    LEFT JOIN trainer_runs r ON r.job_id = j.job_id
    LEFT JOIN checkpoint_scores c ON c.job_id = j.job_id
    GROUP BY j.job_id, j.save_steps, o.save_steps > 0 AND (o.config IS NOT NULL OR r.job_id IS NULL),
             j.trainer_best_checkpoint, r.max_steps
)
SELECT job_id,
       total_checkpoints,
       CASE WHEN save_steps > 0
                 AND (save_steps_configured OR off_schedule = 0)
                THEN CAST(save_steps AS DOUBLE PRECISION)
            ELSE median_gap END
           AS checkpoint_frequency_steps,
       'checkpoint-' || CAST(final_step AS VARCHAR) AS final_checkpoint,
       final_step AS final_checkpoint_step,
       coalesce(trainer_best_checkpoint,
                'checkpoint-' || CAST(coalesce(best_eval_step, best_train_step) AS VARCHAR))
           AS best_checkpoint,
       CASE WHEN trainer_best_checkpoint IS NOT NULL
                THEN @capture_bigint(trainer_best_checkpoint; 'checkpoint-([0-9]+)$')
            ELSE coalesce(best_eval_step, best_train_step) END AS best_checkpoint_step,
       CASE WHEN trainer_best_checkpoint IS NOT NULL THEN 'trainer'
            WHEN best_eval_step IS NOT NULL THEN 'eval_loss'
            WHEN best_train_step IS NOT NULL THEN 'training_loss' END AS best_checkpoint_by,
       nonfinite_eval_losses
FROM agg
