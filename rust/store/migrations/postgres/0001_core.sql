-- The PostgreSQL schema, in one step: the shape the SQLite schema reached through its
-- migrations 1-6 (the corrected task state machine with `upstream_failed`), plus what
-- sharing one database between processes needs: queued runs without an owner, an owner
-- epoch fencing every owner write, and settings that keep the hot tables small.
-- Tables are unqualified: they are created in the schema the connection's search_path
-- names (the tenant's). Times are integer microseconds since the Unix epoch (UTC); the
-- leases are on the database's clock.

CREATE TABLE runs (
    run_id               TEXT PRIMARY KEY,
    workflow             TEXT NOT NULL,
    version              TEXT NOT NULL,
    -- queued | running | completed | failed | cancelled | interrupted
    status               TEXT NOT NULL,
    error                TEXT,
    owner                TEXT,             -- the engine that drives the run
    owner_epoch          BIGINT NOT NULL DEFAULT 0, -- +1 at every change of owner
    lease_expires_at     BIGINT,           -- the owner's lease (database clock)
    idempotency_key      TEXT UNIQUE,
    created_at           BIGINT NOT NULL,
    started_at           BIGINT,
    finished_at          BIGINT,
    cancel_requested_at  BIGINT,
    input                TEXT NOT NULL     -- JSON object: the run's input context
) WITH (fillfactor = 85, autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 100,
        autovacuum_analyze_scale_factor = 0.05);
CREATE INDEX runs_by_created ON runs (created_at);
CREATE INDEX runs_by_workflow ON runs (workflow, created_at);
CREATE INDEX runs_by_status ON runs (status, created_at);
CREATE INDEX runs_cancel_requests ON runs (owner) WHERE cancel_requested_at IS NOT NULL;
CREATE INDEX runs_by_owner ON runs (owner) WHERE status IN ('running', 'interrupted');
-- The claim of queued runs: oldest first, matching `WHERE status = 'queued' ORDER BY
-- created_at, run_id`.
CREATE INDEX runs_queued ON runs (created_at, run_id) WHERE status = 'queued';
-- Purging finished runs, oldest first.
CREATE INDEX runs_finished ON runs (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE run_tasks (
    run_id            TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    task_id           TEXT NOT NULL,
    position          INTEGER NOT NULL,    -- index in the topological order = merge order
    dependencies      TEXT NOT NULL,       -- JSON array of task ids, as the run was planned
    -- pending | ready | running | completed | failed | skipped | upstream_failed | cancelled
    status            TEXT NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    ready_at          BIGINT,              -- earliest start (retry backoff)
    owner             TEXT,                -- who ran the latest attempt
    lease_expires_at  BIGINT,
    started_at        BIGINT,              -- start of the current or latest attempt
    finished_at       BIGINT,
    error             TEXT,
    traceback         TEXT,
    reason            TEXT,                -- why it was skipped or cancelled
    hook_errors       TEXT,                -- JSON array of {hook, attempt, error}
    output            TEXT,                -- JSON object: this task's writes (its delta)
    PRIMARY KEY (run_id, task_id)
) WITH (fillfactor = 85, autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 100,
        autovacuum_analyze_scale_factor = 0.05);

-- Attempts followed by another one (a retry, or a rerun after `resume`); a task's latest
-- attempt is recorded in its run_tasks row.
CREATE TABLE earlier_attempts (
    run_id            TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    task_id           TEXT NOT NULL,
    attempt           INTEGER NOT NULL,    -- 1-based
    status            TEXT NOT NULL,
    owner             TEXT,
    started_at        BIGINT NOT NULL,
    finished_at       BIGINT NOT NULL,
    error             TEXT,
    traceback         TEXT,
    PRIMARY KEY (run_id, task_id, attempt)
);

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

CREATE TABLE run_events (
    event_id  BIGSERIAL PRIMARY KEY,
    run_id    TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    at        BIGINT NOT NULL,
    kind      TEXT NOT NULL,   -- recovered | version_mismatch | resumed | interrupted | ...
    detail    TEXT             -- JSON object
);
CREATE INDEX run_events_by_run ON run_events (run_id, event_id);
