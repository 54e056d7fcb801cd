//! The SQLite store's reads: a small pool of read-only connections used synchronously
//! by the thread that asks, so a read costs its queries and no hop to another thread.
//!
//! Callers on tokio workers go through `spawn_blocking` (see `SqliteStore`); callers
//! that may block (a Python thread waiting with the GIL released) read in place.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
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
    conns: Mutex<Conns>,
    /// Notified when a connection in use is given back (or closed).
    returned: Condvar,
    /// Most idle connections kept.
    keep: usize,
    /// Closed: no read starts, and connections are closed after use instead of kept.
    closed: AtomicBool,
}

/// The idle connections, and how many are in use.
#[derive(Default)]
struct Conns {
    idle: Vec<Connection>,
    in_use: usize,
}

/// A read's hold on a connection (None until it is opened): given back when dropped,
/// however the read ends.
struct InUse<'a>(&'a Readers, Option<Connection>);

impl Drop for InUse<'_> {
    fn drop(&mut self) {
        self.0.give_back(self.1.take());
    }
}

/// The longest `close` waits for reads in progress (a read waits at most for its busy
/// timeout, and the engine's own writes have ended when it closes).
const CLOSE_WAIT: Duration = Duration::from_secs(5);

impl Readers {
    pub fn new(path: PathBuf, busy_timeout: Duration, keep: usize) -> Readers {
        Readers {
            path,
            busy_timeout,
            conns: Mutex::new(Conns::default()),
            returned: Condvar::new(),
            keep: keep.max(1),
            closed: AtomicBool::new(false),
        }
    }

    /// Runs `read` on an idle connection (or a new one), then keeps the connection.
    /// Blocking: call it off the tokio workers. Once closed, reads are refused.
    pub fn with<T>(&self, read: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let mut lease = {
            let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
            if self.closed.load(Ordering::SeqCst) {
                return Err(crate::errors::Error::Closed("the runner is closed".into()));
            }
            conns.in_use += 1;
            InUse(self, conns.idle.pop())
        };
        let conn = match &mut lease.1 {
            Some(conn) => conn,
            empty => empty.insert(self.connect()?),
        };
        let result = read(conn);
        if !conn.is_autocommit() {
            lease.1 = None; // a failed read left a transaction open: close the connection
        }
        result
    }

    /// Ends the use of a connection: kept for the next read, or closed (`None`, or the
    /// readers closed) before `close` hears of it.
    fn give_back(&self, conn: Option<Connection>) {
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(conn) = conn {
            if conns.idle.len() < self.keep && !self.closed.load(Ordering::SeqCst) {
                conns.idle.push(conn);
            }
        }
        conns.in_use -= 1;
        drop(conns);
        self.returned.notify_all();
    }

    /// Closes the connections: the idle ones at once, and waits (at most `CLOSE_WAIT`)
    /// for the reads in progress, whose connections are closed as they end. Once this
    /// returns, no connection of these readers holds the file (SQLite can remove its WAL).
    pub fn close(&self) {
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        self.closed.store(true, Ordering::SeqCst);
        conns.idle.clear();
        let (conns, waited) = self
            .returned
            .wait_timeout_while(conns, CLOSE_WAIT, |c| c.in_use > 0)
            .unwrap_or_else(PoisonError::into_inner);
        if waited.timed_out() {
            log::warn!(
                "closing the runner: {} read(s) of {} still running",
                conns.in_use,
                self.path.display()
            );
        }
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::Readers;

    #[test]
    fn close_waits_for_a_read_in_progress_and_refuses_later_ones() {
        super::super::library::bind(None).expect("a SQLite library");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        rusqlite::Connection::open(&path).unwrap().execute_batch("CREATE TABLE t (x)").unwrap();
        let readers = Arc::new(Readers::new(path, Duration::from_secs(1), 2));
        let (started, ended) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let reading = {
            let (readers, started, ended) = (readers.clone(), started.clone(), ended.clone());
            std::thread::spawn(move || {
                readers
                    .with(|conn| {
                        conn.query_row("SELECT count(*) FROM t", [], |_| Ok(())).unwrap();
                        started.store(true, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(300));
                        ended.store(true, Ordering::SeqCst);
                        Ok(())
                    })
                    .unwrap()
            })
        };
        while !started.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        readers.close();
        assert!(ended.load(Ordering::SeqCst), "close() returned while a read still held a connection");
        assert!(readers.with(|_| Ok(())).is_err(), "a read after close() opened a connection");
        reading.join().unwrap();
    }
}
