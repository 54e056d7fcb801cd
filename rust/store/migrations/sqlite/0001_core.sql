-- The core schema: one row per run, one per task of a run, one per finished attempt.
-- Times are integer microseconds since the Unix epoch (UTC).

CREATE TABLE runs (
    run_id            TEXT PRIMARY KEY NOT NULL,
    workflow          TEXT NOT NULL,
    version           TEXT NOT NULL,
    -- pending | running | completed | failed | cancelled | interrupted
    status            TEXT NOT NULL,
    input             TEXT NOT NULL,          -- JSON object: the run's input context
    error             TEXT,                   -- why the run failed, if it did
    owner             TEXT,                   -- the engine instance that drives the run
    lease_expires_at  INTEGER,                -- owner's lease (crash recovery)
    idempotency_key   TEXT UNIQUE,
    created_at        INTEGER NOT NULL,
    started_at        INTEGER,
    finished_at       INTEGER
);
CREATE INDEX runs_by_created ON runs (created_at);
CREATE INDEX runs_by_workflow ON runs (workflow, created_at);
CREATE INDEX runs_by_status ON runs (status, created_at);

CREATE TABLE run_tasks (
    run_id            TEXT NOT NULL REFERENCES runs (run_id),
    task_id           TEXT NOT NULL,
    position          INTEGER NOT NULL,       -- index in the topological order = merge order
    dependencies      TEXT NOT NULL,          -- JSON array of task ids, as the run was planned
    -- pending | ready | running | completed | failed | skipped | cancelled
    status            TEXT NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    ready_at          INTEGER,                -- earliest start (retry backoff)
    owner             TEXT,                   -- who runs the current attempt
    lease_expires_at  INTEGER,
    started_at        INTEGER,                -- start of the current or last attempt
    finished_at       INTEGER,
    output            TEXT,                   -- JSON object: this task's writes (its delta)
    error             TEXT,
    traceback         TEXT,
    reason            TEXT,                   -- why it was skipped or cancelled
    PRIMARY KEY (run_id, task_id)
) WITHOUT ROWID;

CREATE TABLE task_attempts (
    run_id            TEXT NOT NULL,
    task_id           TEXT NOT NULL,
    attempt           INTEGER NOT NULL,       -- 1-based
    status            TEXT NOT NULL,          -- completed | failed
    owner             TEXT,
    started_at        INTEGER NOT NULL,
    finished_at       INTEGER NOT NULL,
    error             TEXT,
    traceback         TEXT,
    PRIMARY KEY (run_id, task_id, attempt)
) WITHOUT ROWID;
