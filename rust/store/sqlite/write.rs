//! The SQLite store's write connection and its transactions.
//!
//! An engine writes through exactly one connection, owned by its scheduler's thread and
//! used synchronously there: no tokio worker ever blocks on it, and a batch is executed
//! where it is built, with no hop to another thread. sqlx is not used for this: it runs
//! every statement as a round trip to its connection's worker thread, and on a small
//! virtual machine each such hop (about 30 us) costs more than the whole transaction's
//! commit (about 13 us in WAL with `synchronous=NORMAL`).
//!
//! Each method is one `BEGIN IMMEDIATE` transaction over prepared statements that the
//! connection caches, so a batch costs its statements' execution and one commit.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags};

use super::checkpoint::{self, Checkpointer};
use super::tx::CachedTx;
use crate::errors::Result;
use crate::store::{batch_runs, Committed, Op, Writer};

/// Outputs up to this many bytes (of JSON) stay in their task's row; larger ones are
/// appended to `outputs` (migration 7). In the row, an output costs no second page per
/// commit; past a few hundred bytes, the row's growth (page splits, then overflow pages
/// in this WITHOUT ROWID table) costs more than the appended row does.
const INLINE_OUTPUT_MAX: usize = 256;

/// How the write connection is opened.
pub(crate) struct WriterConfig {
    pub path: PathBuf,
    /// The `synchronous` pragma: `OFF`, `NORMAL` or `FULL`.
    pub synchronous: &'static str,
    pub busy_timeout: Duration,
}

/// The one connection an engine writes through (the file's schema must exist).
pub struct WriteConnection {
    conn: Connection,
    /// Runs the WAL checkpoints this connection no longer runs itself.
    checkpointer: Checkpointer,
    commits: u64,
}

impl WriteConnection {
    /// Opens the connection; synchronous file I/O, so call it off the tokio workers.
    pub(crate) fn open(config: &WriterConfig) -> Result<WriteConnection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&config.path, flags)?;
        if conn.is_readonly(rusqlite::MAIN_DB)? {
            return Err(crate::errors::Error::Configuration(format!(
                "the database {} can only be read by this process, and cloacina writes every step \
                 of a run to it",
                config.path.display()
            )));
        }
        conn.busy_timeout(config.busy_timeout)?;
        // Checkpoints happen on their own thread (`checkpoint.rs`), never in a commit.
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {}; PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 0;",
            config.synchronous
        ))?;
        conn.set_prepared_statement_cache_capacity(32);
        let checkpointer = Checkpointer::start(&config.path, config.busy_timeout)?;
        Ok(WriteConnection { conn, checkpointer, commits: 0 })
    }
}

impl Writer for WriteConnection {
    /// Applies `ops` in order as one transaction; see `SqliteStore` for ownership.
    fn commit(&mut self, ops: &[Op], owner: &str, verify: &HashSet<Arc<str>>) -> Result<Committed> {
        let mut done = Committed::default();
        let tx = CachedTx::immediate(&self.conn)?;
        let (inserted, driven) = batch_runs(ops);
        let touched: Vec<&str> = driven.into_iter().filter(|id| verify.contains(*id)).collect();
        let mut skip: HashSet<String> = HashSet::new();
        if !touched.is_empty() {
            let ids = serde_json::to_string(&touched)?;
            let mut lost = tx.prepare_cached(
                "SELECT run_id FROM runs WHERE run_id IN (SELECT value FROM json_each(?1)) \
                 AND owner IS NOT ?2",
            )?;
            let rows = lost.query_map(params![ids, owner], |row| row.get::<_, String>(0))?;
            for run_id in rows {
                let run_id = run_id?;
                done.lost.push(run_id.as_str().into());
                skip.insert(run_id);
            }
        }
        for op in ops {
            if let Some(id) = op.run_id() {
                if skip.contains(id) && (op.needs_ownership() || inserted.contains(id)) {
                    continue;
                }
            }
            if let Some(existing) = apply(&tx, op)? {
                if let Some(run_id) = op.run_id() {
                    skip.insert(run_id.to_string());
                    done.duplicates.push((run_id.into(), existing));
                }
            }
        }
        tx.commit()?;
        self.commits += 1;
        if self.commits % checkpoint::EVERY == 0 {
            self.checkpointer.request();
        }
        Ok(done)
    }

    /// Takes over run `run_id` if its owner is still `expected_owner` (compare and
    /// set); an interrupted run becomes `running` again.
    fn claim_run(
        &mut self,
        run_id: &str,
        expected_owner: Option<&str>,
        owner: &str,
        lease_until: i64,
    ) -> Result<bool> {
        let tx = CachedTx::immediate(&self.conn)?;
        let done = tx
            .prepare_cached(
                "UPDATE runs SET owner = ?1, lease_expires_at = ?2, \
                 status = CASE WHEN status IN ('interrupted', 'queued') THEN 'running' ELSE status END, \
                 started_at = COALESCE(started_at, ?5) \
                 WHERE run_id = ?3 AND owner IS ?4",
            )?
            .execute(params![owner, lease_until, run_id, expected_owner, crate::store::now_micros()])?;
        tx.commit()?;
        Ok(done > 0)
    }

    /// Marks a running run of a gone owner `interrupted` (once), recording the event.
    fn mark_interrupted(&mut self, run_id: &str, owner: Option<&str>, at: i64) -> Result<()> {
        let tx = CachedTx::immediate(&self.conn)?;
        let done = tx
            .prepare_cached(
                "UPDATE runs SET status = 'interrupted' \
                 WHERE run_id = ?1 AND owner IS ?2 AND status = 'running'",
            )?
            .execute(params![run_id, owner])?;
        if done > 0 {
            let detail = serde_json::json!({ "owner": owner }).to_string();
            tx.prepare_cached(
                "INSERT INTO run_events (run_id, at, kind, detail) VALUES (?1, ?2, 'interrupted', ?3)",
            )?
            .execute(params![run_id, at, detail])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Records a request to cancel run `run_id` for its owner to carry out; false when
    /// the run is unknown or final.
    fn request_cancel(&mut self, run_id: &str, at: i64) -> Result<bool> {
        let tx = CachedTx::immediate(&self.conn)?;
        // A queued run has no owner to carry a request out: it is cancelled here.
        let queued = tx
            .prepare_cached(
                "UPDATE runs SET status = 'cancelled', finished_at = ?1, cancel_requested_at = ?1 \
                 WHERE run_id = ?2 AND status = 'queued'",
            )?
            .execute(params![at, run_id])?;
        if queued > 0 {
            tx.prepare_cached(
                "UPDATE run_tasks SET status = 'cancelled', reason = 'the run was cancelled before it started', \
                 finished_at = ?1 WHERE run_id = ?2",
            )?
            .execute(params![at, run_id])?;
        }
        let done = tx
            .prepare_cached(
                "UPDATE runs SET cancel_requested_at = COALESCE(cancel_requested_at, ?1) \
                 WHERE run_id = ?2 AND status IN ('pending', 'running', 'interrupted')",
            )?
            .execute(params![at, run_id])?;
        tx.commit()?;
        Ok(queued + done > 0)
    }

    fn request_resume(&mut self, run_id: &str, at: i64) -> Result<bool> {
        let tx = CachedTx::immediate(&self.conn)?;
        let queued = tx
            .prepare_cached(
                "UPDATE runs SET status = 'queued', owner = NULL, lease_expires_at = NULL, \
                 error = NULL, finished_at = NULL, cancel_requested_at = NULL \
                 WHERE run_id = ?1 AND status IN ('failed', 'cancelled')",
            )?
            .execute(params![run_id])?;
        if queued > 0 {
            tx.prepare_cached(
                "INSERT INTO run_events (run_id, at, kind, detail) VALUES (?1, ?2, 'resume_requested', '{}')",
            )?
            .execute(params![run_id, at])?;
        }
        tx.commit()?;
        Ok(queued > 0)
    }

    fn purge(&mut self, before: i64, limit: usize) -> Result<usize> {
        let tx = CachedTx::immediate(&self.conn)?;
        let ids: Vec<String> = tx
            .prepare_cached(
                "SELECT run_id FROM runs WHERE finished_at < ?1 \
                 AND status IN ('completed', 'failed', 'cancelled') ORDER BY finished_at LIMIT ?2",
            )?
            .query_map(params![before, limit as i64], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        if !ids.is_empty() {
            let list = serde_json::to_string(&ids)?;
            tx.prepare_cached(
                "DELETE FROM outputs WHERE id IN (SELECT output_id FROM run_tasks \
                 WHERE run_id IN (SELECT value FROM json_each(?1)) AND output_id IS NOT NULL)",
            )?
            .execute(params![list])?;
            for table in ["run_events", "earlier_attempts", "run_tasks", "runs"] {
                tx.prepare_cached(&format!(
                    "DELETE FROM {table} WHERE run_id IN (SELECT value FROM json_each(?1))"
                ))?
                .execute(params![list])?;
            }
        }
        tx.commit()?;
        Ok(ids.len())
    }

    /// Claims queued runs, oldest first (one writer per file: no two claims race).
    fn claim_queued(
        &mut self,
        workflows: &[String],
        limit: usize,
        owner: &str,
        lease_until: i64,
    ) -> Result<Vec<String>> {
        if workflows.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let names = serde_json::to_string(workflows)?;
        let tx = CachedTx::immediate(&self.conn)?;
        let claimed = tx
            .prepare_cached(
                "UPDATE runs SET owner = ?1, lease_expires_at = ?2, status = 'running', \
                 started_at = COALESCE(started_at, ?4) \
                 WHERE run_id IN (SELECT run_id FROM runs WHERE status = 'queued' \
                   AND workflow IN (SELECT value FROM json_each(?3)) ORDER BY created_at, run_id LIMIT ?5) \
                 RETURNING run_id",
            )?
            .query_map(params![owner, lease_until, names, crate::store::now_micros(), limit as i64], |r| {
                r.get::<_, String>(0)
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        tx.commit()?;
        Ok(claimed)
    }
}

/// Applies one op; Some(existing run id) when an insert lost to an idempotency key.
fn apply(conn: &Connection, op: &Op) -> Result<Option<String>> {
    match op {
        Op::InsertRun { run_id, workflow, version, input, owner, at, lease_until, idempotency_key } => {
            // Without an owner the run is queued: no start, no lease.
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO runs (run_id, workflow, version, status, input, owner, created_at, \
                     started_at, lease_expires_at, idempotency_key) \
                     VALUES (?1, ?2, ?3, CASE WHEN ?5 IS NULL THEN 'queued' ELSE 'running' END, ?4, ?5, ?6, \
                     CASE WHEN ?5 IS NULL THEN NULL ELSE ?6 END, CASE WHEN ?5 IS NULL THEN NULL ELSE ?7 END, ?8) \
                     ON CONFLICT (idempotency_key) DO NOTHING",
                )?
                .execute(params![
                    &**run_id,
                    &**workflow,
                    &**version,
                    input,
                    owner.as_deref(),
                    at,
                    lease_until,
                    idempotency_key
                ])?;
            if inserted == 0 {
                let existing = conn
                    .prepare_cached("SELECT run_id FROM runs WHERE idempotency_key = ?1")?
                    .query_row(params![idempotency_key], |row| row.get::<_, String>(0))?;
                return Ok(Some(existing));
            }
        }
        Op::RenewLeases { owner, until } => {
            conn.prepare_cached(
                "UPDATE runs SET lease_expires_at = ?1 WHERE owner = ?2 AND status = 'running'",
            )?
            .execute(params![until, &**owner])?;
        }
        Op::AddEvent { run_id, kind, detail, at } => {
            conn.prepare_cached("INSERT INTO run_events (run_id, at, kind, detail) VALUES (?1, ?2, ?3, ?4)")?
                .execute(params![&**run_id, at, kind, detail])?;
        }
        Op::ReopenRun { run_id, owner, lease_until } => {
            conn.prepare_cached(
                "UPDATE runs SET status = 'running', error = NULL, finished_at = NULL, owner = ?1, \
                 lease_expires_at = ?2, cancel_requested_at = NULL WHERE run_id = ?3",
            )?
            .execute(params![&**owner, lease_until, &**run_id])?;
        }
        Op::ResetTask { run_id, task_id } => {
            // The latest attempt, kept in the task row, becomes an earlier one: the view
            // `task_attempts` (migration 4) says which row holds one.
            conn.prepare_cached(
                "INSERT OR IGNORE INTO earlier_attempts (run_id, task_id, attempt, status, owner, \
                 started_at, finished_at, error, traceback) \
                 SELECT run_id, task_id, attempt, status, owner, started_at, finished_at, error, traceback \
                 FROM task_attempts WHERE run_id = ?1 AND task_id = ?2",
            )?
            .execute(params![&**run_id, &**task_id])?;
            conn.prepare_cached(
                "DELETE FROM outputs WHERE id = \
                 (SELECT output_id FROM run_tasks WHERE run_id = ?1 AND task_id = ?2)",
            )?
            .execute(params![&**run_id, &**task_id])?;
            conn.prepare_cached(
                "UPDATE run_tasks SET status = 'pending', reason = NULL, error = NULL, traceback = NULL, \
                 output_inline = NULL, output_id = NULL, finished_at = NULL, ready_at = NULL \
                 WHERE run_id = ?1 AND task_id = ?2",
            )?
            .execute(params![&**run_id, &**task_id])?;
        }
        Op::PlanTask { run_id, task_id, position, dependencies } => {
            conn.prepare_cached(
                "UPDATE run_tasks SET position = ?1, dependencies = ?2 WHERE run_id = ?3 AND task_id = ?4",
            )?
            .execute(params![position, dependencies, &**run_id, &**task_id])?;
        }
        Op::SetRunVersion { run_id, version } => {
            conn.prepare_cached("UPDATE runs SET version = ?1 WHERE run_id = ?2")?
                .execute(params![&**version, &**run_id])?;
        }
        Op::InsertTask { run_id, task_id, position, dependencies, status } => {
            conn.prepare_cached(
                "INSERT INTO run_tasks (run_id, task_id, position, dependencies, status) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![&**run_id, &**task_id, position, dependencies, status])?;
        }
        Op::StartTask { run_id, task_id, attempt, owner, at } => {
            conn.prepare_cached(
                "UPDATE run_tasks SET status = 'running', attempts = ?1, owner = ?2, started_at = ?3, \
                 finished_at = NULL, ready_at = NULL WHERE run_id = ?4 AND task_id = ?5",
            )?
            .execute(params![attempt, &**owner, at, &**run_id, &**task_id])?;
        }
        Op::FinishTask { run_id, task_id, owner, status, at, output, error, traceback, reason } => {
            // A small output stays in the row, a large one is appended to `outputs`
            // (migration 7). The row is the attempt's record too (see `earlier_attempts`).
            let (inline, output_id) = match output.as_deref() {
                Some(text) if text.len() > INLINE_OUTPUT_MAX => {
                    conn.prepare_cached("INSERT INTO outputs (output) VALUES (?1)")?
                        .execute(params![text])?;
                    (None, Some(conn.last_insert_rowid()))
                }
                small => (small, None),
            };
            conn.prepare_cached(
                "UPDATE run_tasks SET status = ?1, output_inline = ?2, output_id = ?3, error = ?4, \
                 traceback = ?5, finished_at = ?6, owner = ?7, reason = ?8 WHERE run_id = ?9 AND task_id = ?10",
            )?
            .execute(params![
                status, inline, output_id, error, traceback, at, &**owner, reason, &**run_id, &**task_id
            ])?;
        }
        Op::RetryTask { run_id, task_id, attempt, owner, started_at, at, ready_at, error, traceback } => {
            conn.prepare_cached(
                "UPDATE run_tasks SET status = 'ready', ready_at = ?1, error = ?2, traceback = ?3, \
                 finished_at = ?4, owner = NULL WHERE run_id = ?5 AND task_id = ?6",
            )?
            .execute(params![ready_at, error, traceback, at, &**run_id, &**task_id])?;
            conn.prepare_cached(
                "INSERT INTO earlier_attempts (run_id, task_id, attempt, status, owner, started_at, \
                 finished_at, error, traceback) VALUES (?1, ?2, ?3, 'failed', ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![&**run_id, &**task_id, attempt, &**owner, started_at, at, error, traceback])?;
        }
        Op::AddHookError { run_id, task_id, entry } => {
            conn.prepare_cached(
                "UPDATE run_tasks SET hook_errors = json_insert(COALESCE(hook_errors, '[]'), '$[#]', json(?1)) \
                 WHERE run_id = ?2 AND task_id = ?3",
            )?
            .execute(params![entry, &**run_id, &**task_id])?;
        }
        Op::MarkTask { run_id, task_id, status, reason, at } => {
            conn.prepare_cached(
                "UPDATE run_tasks SET status = ?1, reason = ?2, finished_at = COALESCE(?3, finished_at) \
                 WHERE run_id = ?4 AND task_id = ?5",
            )?
            .execute(params![status, reason, at, &**run_id, &**task_id])?;
        }
        Op::FinishRun { run_id, status, error, at } => {
            conn.prepare_cached(
                "UPDATE runs SET status = ?1, error = ?2, finished_at = ?3, owner = NULL WHERE run_id = ?4",
            )?
            .execute(params![status, error, at, &**run_id])?;
        }
    }
    Ok(None)
}
