-- The task status `upstream_failed`: a task that did not run because a dependency
-- failed (or itself did not run for that reason), under a rule that needs success.
-- `skipped` now means only "chosen not to run". Files written before this stored such
-- tasks as `skipped`, with the reason "upstream task 'x' failed" (rule all_success) or
-- "trigger rule none_failed: upstream task 'x' failed", and the tasks after them as
-- `skipped` with "upstream task 'y' was skipped": those become `upstream_failed` too.
WITH RECURSIVE blocked (run_id, task_id) AS (
    SELECT run_id, task_id FROM run_tasks
    WHERE status = 'skipped'
      AND (reason GLOB 'upstream task ''*'' failed'
           OR reason GLOB 'trigger rule none_failed: upstream task ''*'' failed')
    UNION
    SELECT t.run_id, t.task_id
    FROM blocked AS b JOIN run_tasks AS t ON t.run_id = b.run_id
    WHERE t.status = 'skipped' AND t.reason = 'upstream task ''' || b.task_id || ''' was skipped'
)
UPDATE run_tasks SET status = 'upstream_failed'
WHERE (run_id, task_id) IN (SELECT run_id, task_id FROM blocked);

-- A task may skip itself while running (`raise Skip(...)`): that attempt is listed too.
DROP VIEW task_attempts;
CREATE VIEW task_attempts AS
SELECT run_id, task_id, attempt, status, owner, started_at, finished_at, error, traceback
FROM earlier_attempts
UNION ALL
SELECT t.run_id, t.task_id, t.attempts, t.status, t.owner, t.started_at, t.finished_at,
       t.error, t.traceback
FROM run_tasks AS t
WHERE t.status IN ('completed', 'failed', 'skipped') AND t.attempts > 0
  AND t.started_at IS NOT NULL AND t.finished_at IS NOT NULL
  AND NOT EXISTS (
      SELECT 1 FROM earlier_attempts AS e
      WHERE e.run_id = t.run_id AND e.task_id = t.task_id AND e.attempt = t.attempts
  );
