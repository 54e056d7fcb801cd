-- Crash safety: what happened to a run beyond its tasks (recovery, version changes,
-- resumes), and fast lookups of runs by owner.

CREATE TABLE run_events (
    event_id  INTEGER PRIMARY KEY,
    run_id    TEXT NOT NULL,
    at        INTEGER NOT NULL,
    kind      TEXT NOT NULL,   -- recovered | version_mismatch | resumed | interrupted
    detail    TEXT             -- JSON object
);
CREATE INDEX run_events_by_run ON run_events (run_id, event_id);
CREATE INDEX runs_by_owner ON runs (owner) WHERE status IN ('running', 'interrupted');
