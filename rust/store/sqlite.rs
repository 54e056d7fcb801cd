//! The SQLite store.
//!
//! Connection design: one writer connection (a pool of one), used only by the engine's
//! scheduler for batch transactions started with `BEGIN IMMEDIATE`; a separate pool of
//! read-only connections for callers reading runs. In WAL mode readers never block the
//! writer nor each other, and no caller waiting for a run holds a connection while it
//! waits (waiting is an in-process notification), so the scheduler, the executors and
//! waiting callers cannot starve each other. An in-memory database has a single
//! connection shared by both roles, held only for the duration of one statement batch.

use std::collections::HashSet;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{ConnectOptions, Connection, Row};
use sqlx_sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};

use super::{AttemptRecord, Op, OrphanCandidate, RunFilter, RunRecord, TaskRecord};
use crate::context::Map;
use crate::errors::{Error, Result};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("rust/store/migrations/sqlite");

/// How hard a commit tries to reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// WAL with `synchronous=NORMAL`: survives a process crash; the last commits may be
    /// lost on power loss or an OS crash.
    Normal,
    /// WAL with `synchronous=FULL`: every commit is on disk before it returns.
    Full,
}

impl FromStr for Durability {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "normal" => Ok(Durability::Normal),
            "full" => Ok(Durability::Full),
            other => {
                Err(Error::Configuration(format!("durability must be \"normal\" or \"full\", not {other:?}")))
            }
        }
    }
}

/// Where and how to open a SQLite database.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// The database file; None for a private in-memory database.
    pub path: Option<PathBuf>,
    pub durability: Durability,
    /// How long a write waits for another process's lock before failing.
    pub busy_timeout: Duration,
    /// Read-only connections for callers (file databases only).
    pub readers: u32,
}

impl SqliteConfig {
    /// A file database (or in-memory for None) with the default settings.
    pub fn new(path: Option<PathBuf>) -> Self {
        SqliteConfig {
            path,
            durability: Durability::Normal,
            busy_timeout: Duration::from_secs(30),
            readers: 4,
        }
    }
}

/// What a commit did besides applying its ops.
#[derive(Debug, Default)]
pub struct Committed {
    /// Runs not inserted because their idempotency key was taken: (new id, existing id).
    pub duplicates: Vec<(Arc<str>, String)>,
    /// Runs whose ops were not applied because another runner owns them now.
    pub lost: Vec<Arc<str>>,
}

/// A SQLite database holding runs.
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    label: Arc<str>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database and brings its schema up to date.
    pub async fn open(config: &SqliteConfig) -> Result<SqliteStore> {
        let sync = match config.durability {
            Durability::Normal => SqliteSynchronous::Normal,
            Durability::Full => SqliteSynchronous::Full,
        };
        let (writer, reader, label) = match &config.path {
            None => {
                let opts = SqliteConnectOptions::from_str("sqlite::memory:")?
                    .synchronous(sync)
                    .disable_statement_logging();
                let pool = single_pool().connect_with(opts).await?;
                (pool.clone(), pool, Arc::<str>::from(":memory:"))
            }
            Some(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    if !parent.is_dir() {
                        return Err(Error::Configuration(format!(
                            "cannot open the database {}: the directory {} does not exist",
                            path.display(),
                            parent.display()
                        )));
                    }
                }
                let base = SqliteConnectOptions::new()
                    .filename(path)
                    .busy_timeout(config.busy_timeout)
                    .synchronous(sync)
                    .disable_statement_logging();
                let write_opts = base.clone().create_if_missing(true).journal_mode(SqliteJournalMode::Wal);
                // Switching a new file to WAL needs an exclusive lock, for which SQLite does
                // not wait: while another process writes, retry until the busy timeout.
                let deadline = std::time::Instant::now() + config.busy_timeout;
                let writer = loop {
                    match single_pool().connect_with(write_opts.clone()).await {
                        Ok(pool) => break pool,
                        Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                            tokio::time::sleep(Duration::from_millis(25)).await;
                        }
                        Err(e) => {
                            return Err(Error::Configuration(format!(
                                "cannot open the database {}: {e}",
                                path.display()
                            )))
                        }
                    }
                };
                let reader = SqlitePoolOptions::new()
                    .test_before_acquire(false)
                    .max_connections(config.readers.max(1))
                    .min_connections(0)
                    .connect_lazy_with(base.read_only(true));
                (writer, reader, Arc::<str>::from(path.display().to_string()))
            }
        };
        migrate(&writer, config.busy_timeout).await?;
        Ok(SqliteStore { writer, reader, label })
    }

    /// What the store is (the file path, or ":memory:"), for messages.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Commits `ops` as one `BEGIN IMMEDIATE` transaction.
    /// Returns the runs not inserted because their idempotency key was taken, each
    /// with the id of the run that holds the key.
    ///
    /// Ownership is checked in the same transaction: ops on a run that `owner` no longer
    /// owns (another runner took it over after this one's lease expired) are not applied,
    /// and the run is reported in `Committed::lost`.
    /// Only the runs in `verify` are checked (the caller knows the others' leases hold).
    pub async fn commit(&self, ops: &[Op], owner: &str, verify: &HashSet<Arc<str>>) -> Result<Committed> {
        let mut done = Committed::default();
        if ops.is_empty() {
            return Ok(done);
        }
        let mut conn = self.writer.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let inserted: HashSet<&str> =
            ops.iter().filter(|op| matches!(op, Op::InsertRun { .. })).filter_map(Op::run_id).collect();
        let touched: HashSet<&str> = ops
            .iter()
            .filter(|op| op.needs_ownership())
            .filter_map(Op::run_id)
            .filter(|id| !inserted.contains(id) && verify.contains(*id))
            .collect();
        let mut skip: HashSet<String> = HashSet::new();
        if !touched.is_empty() {
            let ids = serde_json::to_string(&touched.iter().collect::<Vec<_>>())?;
            let rows = sqlx::query(
                "SELECT run_id FROM runs WHERE run_id IN (SELECT value FROM json_each(?)) AND owner IS NOT ?",
            )
            .bind(ids)
            .bind(owner)
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                let run_id: String = row.try_get(0)?;
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
            if let Some(existing) = apply(&mut tx, op).await? {
                if let Some(run_id) = op.run_id() {
                    skip.insert(run_id.to_string());
                    done.duplicates.push((run_id.into(), existing));
                }
            }
        }
        tx.commit().await?;
        Ok(done)
    }

    /// Takes over run `run_id` if its owner is still `expected_owner` (compare and
    /// set, in its own transaction); with `reopen`, a final run becomes `running`.
    pub async fn claim_run(
        &self,
        run_id: &str,
        expected_owner: Option<&str>,
        owner: &str,
        lease_until: i64,
    ) -> Result<bool> {
        let mut conn = self.writer.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let done = sqlx::query(
            "UPDATE runs SET owner = ?, lease_expires_at = ?, \
             status = CASE WHEN status = 'interrupted' THEN 'running' ELSE status END \
             WHERE run_id = ? AND owner IS ?",
        )
        .bind(owner)
        .bind(lease_until)
        .bind(run_id)
        .bind(expected_owner)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(done > 0)
    }

    /// Runs not final and not owned by `me`: candidates for recovery.
    pub async fn orphan_candidates(&self, me: &str) -> Result<Vec<OrphanCandidate>> {
        let rows = sqlx::query(
            "SELECT run_id, workflow, status, owner, lease_expires_at FROM runs \
             WHERE status IN ('running', 'interrupted') AND (owner IS NULL OR owner != ?)",
        )
        .bind(me)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(OrphanCandidate {
                    run_id: r.try_get(0)?,
                    workflow: r.try_get(1)?,
                    status: r.try_get(2)?,
                    owner: r.try_get(3)?,
                    lease_expires_at: r.try_get(4)?,
                })
            })
            .collect()
    }

    /// Marks a running run whose owner is gone, and that nobody here can continue, as
    /// `interrupted` (once), recording the event.
    pub async fn mark_interrupted(&self, run_id: &str, owner: Option<&str>, at: i64) -> Result<()> {
        let mut conn = self.writer.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let done = sqlx::query(
            "UPDATE runs SET status = 'interrupted' WHERE run_id = ? AND owner IS ? AND status = 'running'",
        )
        .bind(run_id)
        .bind(owner)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done > 0 {
            sqlx::query("INSERT INTO run_events (run_id, at, kind, detail) VALUES (?, ?, 'interrupted', ?)")
                .bind(run_id)
                .bind(at)
                .bind(serde_json::json!({"owner": owner}).to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The run holding idempotency key `key`, if any.
    pub async fn run_by_key(&self, key: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT run_id FROM runs WHERE idempotency_key = ?")
            .bind(key)
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.map(|r| r.get::<String, _>(0)))
    }

    /// The status of run `run_id`, if it exists.
    pub async fn run_status(&self, run_id: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT status FROM runs WHERE run_id = ?")
            .bind(run_id)
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.map(|r| r.get::<String, _>(0)))
    }

    /// Run `run_id` with its tasks and their attempts, if it exists.
    pub async fn run(&self, run_id: &str) -> Result<Option<RunRecord>> {
        // One read transaction: the run, its tasks and attempts from a single snapshot.
        let mut conn = self.reader.acquire().await?;
        let mut tx = conn.begin().await?;
        let row = sqlx::query(RUN_COLUMNS_BY_ID).bind(run_id).fetch_optional(&mut *tx).await?;
        let Some(row) = row else { return Ok(None) };
        let mut run = run_from_row(&row)?;
        load_tasks(&mut tx, &mut run).await?;
        tx.commit().await?;
        Ok(Some(run))
    }

    /// Runs matching `filter`, newest first, with their tasks (one snapshot).
    pub async fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>> {
        let mut conn = self.reader.acquire().await?;
        let mut tx = conn.begin().await?;
        let rows = sqlx::query(LIST_RUNS)
            .bind(filter.workflow.as_deref())
            .bind(filter.status.as_deref())
            .bind(filter.limit as i64)
            .fetch_all(&mut *tx)
            .await?;
        let mut runs = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut run = run_from_row(row)?;
            load_tasks(&mut tx, &mut run).await?;
            runs.push(run);
        }
        tx.commit().await?;
        Ok(runs)
    }

    /// Asks the owner of run `run_id` to cancel it (the run is driven elsewhere).
    /// False when the run is unknown or already final.
    pub async fn request_cancel(&self, run_id: &str, at: i64) -> Result<bool> {
        let mut conn = self.writer.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let done = sqlx::query(
            "UPDATE runs SET cancel_requested_at = COALESCE(cancel_requested_at, ?) \
             WHERE run_id = ? AND status IN ('pending', 'running')",
        )
        .bind(at)
        .bind(run_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(done > 0)
    }

    /// Runs owned by `owner` that someone asked to cancel.
    pub async fn cancel_requests(&self, owner: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT run_id FROM runs WHERE owner = ? AND cancel_requested_at IS NOT NULL \
             AND status IN ('pending', 'running')",
        )
        .bind(owner)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

fn single_pool() -> SqlitePoolOptions {
    SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(Duration::from_secs(3600))
        .test_before_acquire(false)
}

async fn migrate(pool: &SqlitePool, busy_timeout: Duration) -> Result<()> {
    // Two processes creating the same new file race here; the loser retries (until the
    // busy timeout) and then finds the schema in place.
    let deadline = std::time::Instant::now() + busy_timeout.max(Duration::from_secs(1));
    loop {
        match MIGRATOR.run(pool).await {
            Ok(()) => return Ok(()),
            Err(e) if std::time::Instant::now() < deadline => {
                log::debug!("migrating the schema failed, retrying: {e}");
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err(e) => return Err(Error::from(e)),
        }
    }
}

/// True for SQLite's "database is locked" (SQLITE_BUSY) errors.
fn is_busy(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            db.code().is_some_and(|c| c == "5" || c.starts_with("5")) || db.message().contains("locked")
        }
        _ => false,
    }
}

/// Applies one op; Some(existing run id) when an insert lost to an idempotency key.
async fn apply(conn: &mut sqlx_sqlite::SqliteConnection, op: &Op) -> Result<Option<String>> {
    match op {
        Op::InsertRun { run_id, workflow, version, input, owner, at, lease_until, idempotency_key } => {
            let inserted = sqlx::query(
                "INSERT INTO runs (run_id, workflow, version, status, input, owner, created_at, started_at, \
                 lease_expires_at, idempotency_key) VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (idempotency_key) DO NOTHING",
            )
            .bind(&**run_id)
            .bind(&**workflow)
            .bind(&**version)
            .bind(input)
            .bind(&**owner)
            .bind(at)
            .bind(at)
            .bind(lease_until)
            .bind(idempotency_key.as_deref())
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if inserted == 0 {
                let existing = sqlx::query("SELECT run_id FROM runs WHERE idempotency_key = ?")
                    .bind(idempotency_key.as_deref())
                    .fetch_one(&mut *conn)
                    .await?;
                return Ok(Some(existing.try_get(0)?));
            }
        }
        Op::RenewLeases { owner, until } => {
            sqlx::query("UPDATE runs SET lease_expires_at = ? WHERE owner = ? AND status = 'running'")
                .bind(until)
                .bind(&**owner)
                .execute(&mut *conn)
                .await?;
        }
        Op::AddEvent { run_id, kind, detail, at } => {
            sqlx::query("INSERT INTO run_events (run_id, at, kind, detail) VALUES (?, ?, ?, ?)")
                .bind(&**run_id)
                .bind(at)
                .bind(*kind)
                .bind(detail)
                .execute(&mut *conn)
                .await?;
        }
        Op::ReopenRun { run_id, owner, lease_until } => {
            sqlx::query(
                "UPDATE runs SET status = 'running', error = NULL, finished_at = NULL, owner = ?, \
                 lease_expires_at = ?, cancel_requested_at = NULL WHERE run_id = ?",
            )
            .bind(&**owner)
            .bind(lease_until)
            .bind(&**run_id)
            .execute(&mut *conn)
            .await?;
        }
        Op::ResetTask { run_id, task_id } => {
            sqlx::query(
                "UPDATE run_tasks SET status = 'pending', reason = NULL, error = NULL, traceback = NULL, \
                 output = NULL, finished_at = NULL, ready_at = NULL WHERE run_id = ? AND task_id = ?",
            )
            .bind(&**run_id)
            .bind(&**task_id)
            .execute(&mut *conn)
            .await?;
        }
        Op::InsertTask { run_id, task_id, position, dependencies, status } => {
            sqlx::query(
                "INSERT INTO run_tasks (run_id, task_id, position, dependencies, status) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(&**run_id)
            .bind(&**task_id)
            .bind(*position as i64)
            .bind(dependencies)
            .bind(*status)
            .execute(&mut *conn)
            .await?;
        }
        Op::StartTask { run_id, task_id, attempt, owner, at } => {
            sqlx::query(
                "UPDATE run_tasks SET status = 'running', attempts = ?, owner = ?, started_at = ?, \
                 finished_at = NULL, ready_at = NULL WHERE run_id = ? AND task_id = ?",
            )
            .bind(*attempt as i64)
            .bind(&**owner)
            .bind(at)
            .bind(&**run_id)
            .bind(&**task_id)
            .execute(&mut *conn)
            .await?;
        }
        Op::FinishTask {
            run_id,
            task_id,
            attempt,
            owner,
            status,
            started_at,
            at,
            output,
            error,
            traceback,
        } => {
            sqlx::query(
                "UPDATE run_tasks SET status = ?, output = ?, error = ?, traceback = ?, finished_at = ?, \
                 owner = NULL WHERE run_id = ? AND task_id = ?",
            )
            .bind(*status)
            .bind(output.as_deref())
            .bind(error.as_deref())
            .bind(traceback.as_deref())
            .bind(at)
            .bind(&**run_id)
            .bind(&**task_id)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "INSERT INTO task_attempts (run_id, task_id, attempt, status, owner, started_at, finished_at, \
                 error, traceback) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&**run_id)
            .bind(&**task_id)
            .bind(*attempt as i64)
            .bind(*status)
            .bind(&**owner)
            .bind(started_at)
            .bind(at)
            .bind(error.as_deref())
            .bind(traceback.as_deref())
            .execute(&mut *conn)
            .await?;
        }
        Op::RetryTask { run_id, task_id, attempt, owner, started_at, at, ready_at, error, traceback } => {
            sqlx::query(
                "UPDATE run_tasks SET status = 'ready', ready_at = ?, error = ?, traceback = ?, finished_at = ?, \
                 owner = NULL WHERE run_id = ? AND task_id = ?",
            )
            .bind(ready_at)
            .bind(error)
            .bind(traceback.as_deref())
            .bind(at)
            .bind(&**run_id)
            .bind(&**task_id)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "INSERT INTO task_attempts (run_id, task_id, attempt, status, owner, started_at, finished_at, \
                 error, traceback) VALUES (?, ?, ?, 'failed', ?, ?, ?, ?, ?)",
            )
            .bind(&**run_id)
            .bind(&**task_id)
            .bind(*attempt as i64)
            .bind(&**owner)
            .bind(started_at)
            .bind(at)
            .bind(error)
            .bind(traceback.as_deref())
            .execute(&mut *conn)
            .await?;
        }
        Op::AddHookError { run_id, task_id, entry } => {
            sqlx::query(
                "UPDATE run_tasks SET hook_errors = json_insert(COALESCE(hook_errors, '[]'), '$[#]', json(?)) \
                 WHERE run_id = ? AND task_id = ?",
            )
            .bind(entry)
            .bind(&**run_id)
            .bind(&**task_id)
            .execute(&mut *conn)
            .await?;
        }
        Op::MarkTask { run_id, task_id, status, reason, at } => {
            sqlx::query(
                "UPDATE run_tasks SET status = ?, reason = ?, finished_at = COALESCE(?, finished_at) \
                 WHERE run_id = ? AND task_id = ?",
            )
            .bind(*status)
            .bind(reason.as_deref())
            .bind(*at)
            .bind(&**run_id)
            .bind(&**task_id)
            .execute(&mut *conn)
            .await?;
        }
        Op::FinishRun { run_id, status, error, at } => {
            sqlx::query(
                "UPDATE runs SET status = ?, error = ?, finished_at = ?, owner = NULL WHERE run_id = ?",
            )
            .bind(*status)
            .bind(error.as_deref())
            .bind(at)
            .bind(&**run_id)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(None)
}

const RUN_COLUMNS_BY_ID: &str =
    "SELECT run_id, workflow, version, status, input, error, created_at, started_at, \
     finished_at, owner, lease_expires_at, idempotency_key FROM runs WHERE run_id = ?";

const LIST_RUNS: &str =
    "SELECT run_id, workflow, version, status, input, error, created_at, started_at, \
     finished_at, owner, lease_expires_at, idempotency_key FROM runs WHERE (?1 IS NULL OR workflow = ?1) AND (?2 IS NULL OR status = ?2) \
     ORDER BY created_at DESC, run_id DESC LIMIT ?3";

const TASKS_OF_RUN: &str =
    "SELECT task_id, position, status, attempts, started_at, finished_at, output, error, \
     traceback, reason, ready_at, hook_errors, dependencies FROM run_tasks WHERE run_id = ? ORDER BY position";

const ATTEMPTS_OF_RUN: &str = "SELECT task_id, attempt, status, started_at, finished_at, error, traceback \
     FROM task_attempts WHERE run_id = ? ORDER BY task_id, attempt";

async fn load_tasks(conn: &mut sqlx_sqlite::SqliteConnection, run: &mut RunRecord) -> Result<()> {
    let rows = sqlx::query(TASKS_OF_RUN).bind(&run.run_id).fetch_all(&mut *conn).await?;
    run.tasks = rows.iter().map(task_from_row).collect::<Result<_>>()?;
    let attempts = sqlx::query(ATTEMPTS_OF_RUN).bind(&run.run_id).fetch_all(&mut *conn).await?;
    let index: std::collections::HashMap<String, usize> =
        run.tasks.iter().enumerate().map(|(i, t)| (t.task_id.clone(), i)).collect();
    for row in &attempts {
        let task_id: String = row.try_get(0)?;
        if let Some(&i) = index.get(&task_id) {
            run.tasks[i].history.push(AttemptRecord {
                attempt: row.try_get::<i64, _>(1)? as u32,
                status: row.try_get(2)?,
                started_at: row.try_get(3)?,
                finished_at: row.try_get(4)?,
                error: row.try_get(5)?,
                traceback: row.try_get(6)?,
            });
        }
    }
    let events = sqlx::query("SELECT at, kind, detail FROM run_events WHERE run_id = ? ORDER BY event_id")
        .bind(&run.run_id)
        .fetch_all(&mut *conn)
        .await?;
    run.events =
        events.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect::<Result<_>>()?;
    Ok(())
}

fn parse_map(text: &str, what: &str) -> Result<Map> {
    match serde_json::from_str::<serde_json::Value>(text)? {
        serde_json::Value::Object(m) => Ok(m),
        _ => Err(Error::Database(format!("{what} is not a JSON object"))),
    }
}

fn run_from_row(row: &SqliteRow) -> Result<RunRecord> {
    let run_id: String = row.try_get(0)?;
    let input: String = row.try_get(4)?;
    Ok(RunRecord {
        input: parse_map(&input, &format!("the input of run {run_id}"))?,
        run_id,
        workflow: row.try_get(1)?,
        version: row.try_get(2)?,
        status: row.try_get(3)?,
        error: row.try_get(5)?,
        created_at: row.try_get(6)?,
        started_at: row.try_get(7)?,
        finished_at: row.try_get(8)?,
        owner: row.try_get(9)?,
        lease_expires_at: row.try_get(10)?,
        idempotency_key: row.try_get(11)?,
        tasks: Vec::new(),
        events: Vec::new(),
    })
}

fn task_from_row(row: &SqliteRow) -> Result<TaskRecord> {
    let task_id: String = row.try_get(0)?;
    let output: Option<String> = row.try_get(6)?;
    Ok(TaskRecord {
        output: match output {
            Some(text) => Some(parse_map(&text, &format!("the output of task {task_id}"))?),
            None => None,
        },
        task_id,
        position: row.try_get::<i64, _>(1)? as u32,
        status: row.try_get(2)?,
        attempts: row.try_get::<i64, _>(3)? as u32,
        started_at: row.try_get(4)?,
        finished_at: row.try_get(5)?,
        error: row.try_get(7)?,
        traceback: row.try_get(8)?,
        reason: row.try_get(9)?,
        ready_at: row.try_get(10)?,
        hook_errors: row.try_get(11)?,
        dependencies: serde_json::from_str(&row.try_get::<String, _>(12)?)?,
        history: Vec::new(),
    })
}
