-- Failure handling: cancellation requests from other processes, hook errors.

ALTER TABLE runs ADD COLUMN cancel_requested_at INTEGER;
CREATE INDEX runs_cancel_requests ON runs (owner) WHERE cancel_requested_at IS NOT NULL;

ALTER TABLE run_tasks ADD COLUMN hook_errors TEXT;  -- JSON array of {hook, attempt, error}
