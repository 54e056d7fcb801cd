-- no-transaction
-- Listing runs reads run rows only, never their input. SQLite stores a row's columns in
-- order, and a large value spills into a chain of overflow pages that must be walked to
-- reach the columns after it: with `input` (a run's whole input context, possibly
-- megabytes) in the middle of the row, listing runs read every input. The table is
-- rebuilt with `input` last (SQLite's documented procedure for changing a table's
-- shape: foreign keys off, one transaction, then the indexes again).
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;
CREATE TABLE runs_new (
    run_id               TEXT PRIMARY KEY NOT NULL,
    workflow             TEXT NOT NULL,
    version              TEXT NOT NULL,
    -- pending | running | completed | failed | cancelled | interrupted
    status               TEXT NOT NULL,
    error                TEXT,
    owner                TEXT,
    lease_expires_at     INTEGER,
    idempotency_key      TEXT UNIQUE,
    created_at           INTEGER NOT NULL,
    started_at           INTEGER,
    finished_at          INTEGER,
    cancel_requested_at  INTEGER,
    input                TEXT NOT NULL          -- JSON object: the run's input context
);
INSERT INTO runs_new (run_id, workflow, version, status, error, owner, lease_expires_at,
                      idempotency_key, created_at, started_at, finished_at,
                      cancel_requested_at, input)
SELECT run_id, workflow, version, status, error, owner, lease_expires_at, idempotency_key,
       created_at, started_at, finished_at, cancel_requested_at, input
FROM runs;
DROP TABLE runs;
ALTER TABLE runs_new RENAME TO runs;
CREATE INDEX runs_by_created ON runs (created_at);
CREATE INDEX runs_by_workflow ON runs (workflow, created_at);
CREATE INDEX runs_by_status ON runs (status, created_at);
CREATE INDEX runs_cancel_requests ON runs (owner) WHERE cancel_requested_at IS NOT NULL;
CREATE INDEX runs_by_owner ON runs (owner) WHERE status IN ('running', 'interrupted');
COMMIT;
PRAGMA foreign_keys = ON;
