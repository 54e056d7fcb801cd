-- `task_outputs`: every completed task's output (its writes, a JSON object), the same
-- view the SQLite schema has (there, outputs are kept apart from the task rows).
CREATE VIEW task_outputs AS
SELECT run_id, task_id, output FROM run_tasks WHERE status = 'completed';
