//! The SQLite store's reads: a small pool of read-only connections used synchronously
//! by the thread that asks, so a read costs its queries and no hop to another thread.
//!
//! Callers on tokio workers go through `spawn_blocking` (see `SqliteStore`); callers
//! that may block (a Python thread waiting with the GIL released) read in place.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};

use super::tx::CachedTx;
use crate::context::Map;
use crate::errors::Result;
use crate::store::{AttemptRecord, OrphanCandidate, RunFilter, RunRecord, RunSummary, TaskRecord};

/// Read-only connections to one file, opened on demand and kept for reuse.
pub(crate) struct Readers {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    /// Most idle connections kept.
    keep: usize,
    /// Closed: connections are dropped after use instead of kept.
    closed: AtomicBool,
}

impl Readers {
    pub fn new(path: PathBuf, busy_timeout: Duration, keep: usize) -> Readers {
        Readers {
            path,
            busy_timeout,
            idle: Mutex::new(Vec::new()),
            keep: keep.max(1),
            closed: AtomicBool::new(false),
        }
    }

    /// Runs `read` on an idle connection (or a new one), then keeps the connection.
    /// Blocking: call it off the tokio workers.
    pub fn with<T>(&self, read: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let mut conn = match idle {
            Some(conn) => conn,
            None => self.connect()?,
        };
        let result = read(&mut conn);
        if !conn.is_autocommit() {
            return result; // a failed read left a transaction open: drop the connection
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.keep && !self.closed.load(Ordering::SeqCst) {
            idle.push(conn);
        }
        result
    }

    /// Closes the idle connections; a connection in use is closed when its read ends.
    pub fn close(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        self.closed.store(true, Ordering::SeqCst);
        idle.clear();
    }

    fn connect(&self) -> Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags)?;
        conn.busy_timeout(self.busy_timeout)?;
        conn.set_prepared_statement_cache_capacity(16);
        Ok(conn)
    }
}

/// A query of `runs` selecting the columns `run_from_row` reads, then `$rest`: a
/// literal, so each query is one constant string (no formatting per read).
macro_rules! select_runs {
    ($rest:literal) => {
        concat!(
            "SELECT run_id, workflow, version, status, input, error, created_at, started_at, \
             finished_at, owner, lease_expires_at, idempotency_key FROM runs ",
            $rest
        )
    };
}

/// Run `run_id` with its tasks, their attempts and its events, from one snapshot.
pub(crate) fn run(conn: &mut Connection, run_id: &str) -> Result<Option<RunRecord>> {
    let tx = CachedTx::deferred(conn)?;
    let found = tx
        .prepare_cached(select_runs!("WHERE run_id = ?1"))?
        .query_row(params![run_id], run_from_row)
        .optional()?;
    let Some(run) = found else { return Ok(None) };
    let mut run = run?;
    load_tasks(&tx, &mut run)?;
    tx.commit()?;
    Ok(Some(run))
}

/// Runs matching `filter`, newest first, as summaries (one snapshot). Reads the run
/// rows' columns before `input` (migration 6), and the task rows' statuses: never a
/// context or an output, so listing costs the same whatever the runs hold.
pub(crate) fn run_summaries(conn: &mut Connection, filter: &RunFilter) -> Result<Vec<RunSummary>> {
    let tx = CachedTx::deferred(conn)?;
    let mut runs = Vec::new();
    {
        let mut query = tx.prepare_cached(
            "SELECT run_id, workflow, version, status, error, created_at, started_at, finished_at, \
             idempotency_key FROM runs \
             WHERE (?1 IS NULL OR workflow = ?1) AND (?2 IS NULL OR status = ?2) \
             AND (?4 IS NULL OR run_id = ?4) \
             ORDER BY created_at DESC, run_id DESC LIMIT ?3",
        )?;
        let rows = query.query_map(
            params![
                filter.workflow.as_deref(),
                filter.status.as_deref(),
                filter.limit as i64,
                filter.run_id.as_deref()
            ],
            |row| {
                Ok(RunSummary {
                    run_id: row.get(0)?,
                    workflow: row.get(1)?,
                    version: row.get(2)?,
                    status: row.get(3)?,
                    error: row.get(4)?,
                    created_at: row.get(5)?,
                    started_at: row.get(6)?,
                    finished_at: row.get(7)?,
                    idempotency_key: row.get(8)?,
                    task_counts: Vec::new(),
                })
            },
        )?;
        for row in rows {
            runs.push(row?);
        }
    }
    {
        let mut counts =
            tx.prepare_cached("SELECT status, count(*) FROM run_tasks WHERE run_id = ?1 GROUP BY status")?;
        for run in &mut runs {
            let rows =
                counts.query_map(params![run.run_id], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u32)))?;
            run.task_counts = rows.collect::<rusqlite::Result<_>>()?;
        }
    }
    tx.commit()?;
    Ok(runs)
}

/// The run holding idempotency key `key`, if any.
pub(crate) fn run_by_key(conn: &mut Connection, key: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT run_id FROM runs WHERE idempotency_key = ?1")?
        .query_row(params![key], |row| row.get(0))
        .optional()?)
}

/// The status of run `run_id`, if it exists.
pub(crate) fn run_status(conn: &mut Connection, run_id: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT status FROM runs WHERE run_id = ?1")?
        .query_row(params![run_id], |row| row.get(0))
        .optional()?)
}

/// The output of completed task `task_id` of run `run_id`.
pub(crate) fn task_output(conn: &mut Connection, run_id: &str, task_id: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT output FROM task_outputs WHERE run_id = ?1 AND task_id = ?2")?
        .query_row(params![run_id, task_id], |row| row.get(0))
        .optional()?)
}

/// Runs not final and not owned by `me`: candidates for recovery.
pub(crate) fn orphan_candidates(conn: &mut Connection, me: &str) -> Result<Vec<OrphanCandidate>> {
    let mut query = conn.prepare_cached(
        "SELECT run_id, workflow, status, owner, lease_expires_at FROM runs \
         WHERE status IN ('running', 'interrupted') AND (owner IS NULL OR owner != ?1)",
    )?;
    let rows = query.query_map(params![me], |r| {
        Ok(OrphanCandidate {
            run_id: r.get(0)?,
            workflow: r.get(1)?,
            status: r.get(2)?,
            owner: r.get(3)?,
            lease_expires_at: r.get(4)?,
            gone: None,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Whether a queued run of one of the workflows named in `names` (a JSON array) waits.
pub(crate) fn has_queued(conn: &mut Connection, names: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM runs WHERE status = 'queued' \
             AND workflow IN (SELECT value FROM json_each(?1)))",
        )?
        .query_row(params![names], |r| r.get(0))?)
}

/// Runs owned by `owner` that someone asked to cancel.
pub(crate) fn cancel_requests(conn: &mut Connection, owner: &str) -> Result<Vec<String>> {
    let mut query = conn.prepare_cached(
        "SELECT run_id FROM runs WHERE owner = ?1 AND cancel_requested_at IS NOT NULL \
         AND status IN ('pending', 'running')",
    )?;
    let rows = query.query_map(params![owner], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn load_tasks(conn: &Connection, run: &mut RunRecord) -> Result<()> {
    {
        let mut query = conn.prepare_cached(
            "SELECT t.task_id, t.position, t.status, t.attempts, t.started_at, t.finished_at, \
             CASE WHEN t.status = 'completed' THEN COALESCE(t.output_inline, o.output, '{}') END, t.error, \
             t.traceback, t.reason, t.ready_at, t.hook_errors, t.dependencies \
             FROM run_tasks AS t LEFT JOIN outputs AS o ON o.id = t.output_id \
             WHERE t.run_id = ?1",
        )?;
        let rows = query.query_map(params![run.run_id], task_from_row)?;
        for row in rows {
            run.tasks.push(row??);
        }
        // Sorted here rather than by SQLite, which would copy every row into a sorter.
        run.tasks.sort_unstable_by_key(|t| t.position);
    }
    {
        // Attempts followed by another one; most runs have none.
        let mut query = conn.prepare_cached(
            "SELECT task_id, attempt, status, started_at, finished_at, error, traceback \
             FROM earlier_attempts WHERE run_id = ?1 ORDER BY task_id, attempt",
        )?;
        let rows = query.query_map(params![run.run_id], |row| {
            Ok((
                row.get::<_, String>(0)?,
                AttemptRecord {
                    attempt: row.get::<_, i64>(1)? as u32,
                    status: row.get(2)?,
                    started_at: row.get(3)?,
                    finished_at: row.get(4)?,
                    error: row.get(5)?,
                    traceback: row.get(6)?,
                },
            ))
        })?;
        let earlier = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        run.attach_attempts(earlier);
    }
    let mut query =
        conn.prepare_cached("SELECT at, kind, detail FROM run_events WHERE run_id = ?1 ORDER BY event_id")?;
    let rows = query.query_map(params![run.run_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    run.events = rows.collect::<rusqlite::Result<_>>()?;
    Ok(())
}

/// A run row; the inner Result carries a stored value that does not parse.
fn run_from_row(row: &Row<'_>) -> rusqlite::Result<Result<RunRecord>> {
    let run_id: String = row.get(0)?;
    let input: String = row.get(4)?;
    let input = match crate::store::parse_map(&input, || format!("the input of run {run_id}")) {
        Ok(input) => input,
        Err(e) => return Ok(Err(e)),
    };
    Ok(Ok(RunRecord {
        input,
        run_id,
        workflow: row.get(1)?,
        version: row.get(2)?,
        status: row.get(3)?,
        error: row.get(5)?,
        created_at: row.get(6)?,
        started_at: row.get(7)?,
        finished_at: row.get(8)?,
        owner: row.get(9)?,
        lease_expires_at: row.get(10)?,
        idempotency_key: row.get(11)?,
        tasks: Vec::new(),
        events: Vec::new(),
    }))
}

/// A task row; the inner Result carries a stored value that does not parse.
fn task_from_row(row: &Row<'_>) -> rusqlite::Result<Result<TaskRecord>> {
    let task_id: String = row.get(0)?;
    let output: Option<String> = row.get(6)?;
    let dependencies: String = row.get(12)?;
    let parsed = (|| -> Result<(Option<Map>, Vec<String>)> {
        let output = match output {
            Some(text) => Some(crate::store::parse_map(&text, || format!("the output of task {task_id}"))?),
            None => None,
        };
        Ok((output, serde_json::from_str(&dependencies)?))
    })();
    let (output, dependencies) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => return Ok(Err(e)),
    };
    Ok(Ok(TaskRecord {
        output,
        task_id,
        position: row.get::<_, i64>(1)? as u32,
        status: row.get(2)?,
        attempts: row.get::<_, i64>(3)? as u32,
        started_at: row.get(4)?,
        finished_at: row.get(5)?,
        error: row.get(7)?,
        traceback: row.get(8)?,
        reason: row.get(9)?,
        ready_at: row.get(10)?,
        hook_errors: row.get(11)?,
        dependencies,
        history: Vec::new(),
    }))
}
