-- A task's latest finished attempt is recorded in its run_tasks row only (status,
-- attempts, owner, started_at, finished_at, error, traceback): finishing a task is one
-- row update, not an update and an insert. The table keeps the attempts that were
-- followed by another one (a retry, or a rerun after `resume`), and the view
-- `task_attempts` shows every finished attempt as before.

ALTER TABLE task_attempts RENAME TO earlier_attempts;

CREATE VIEW task_attempts AS
SELECT run_id, task_id, attempt, status, owner, started_at, finished_at, error, traceback
FROM earlier_attempts
UNION ALL
SELECT t.run_id, t.task_id, t.attempts, t.status, t.owner, t.started_at, t.finished_at,
       t.error, t.traceback
FROM run_tasks AS t
WHERE t.status IN ('completed', 'failed') AND t.attempts > 0
  AND t.started_at IS NOT NULL AND t.finished_at IS NOT NULL
  AND NOT EXISTS (
      SELECT 1 FROM earlier_attempts AS e
      WHERE e.run_id = t.run_id AND e.task_id = t.task_id AND e.attempt = t.attempts
  );
