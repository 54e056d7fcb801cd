//! The SQLite store.
//!
//! Connection design: one write connection (`sqlite_write.rs`), owned by the engine's
//! scheduler thread, which runs every write as one `BEGIN IMMEDIATE` transaction of
//! cached prepared statements; a separate sqlx pool of read-only connections for callers reading runs. In WAL mode
//! readers never block the writer nor each other, and no caller waiting for a run holds
//! a connection while it waits (waiting is an in-process notification), so the
//! scheduler, the executors and waiting callers cannot starve each other. The schema is
//! migrated by sqlx's embedded migrations when the store opens.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::{ConnectOptions, Connection, Row};
use sqlx_sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow};

use super::sqlite_write::{WriteConnection, WriterConfig};
use super::{AttemptRecord, OrphanCandidate, RunFilter, RunRecord, TaskRecord};
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
    /// The write connection, until an engine takes it (see `take_writer`).
    writer: Mutex<Option<WriteConnection>>,
    reader: SqlitePool,
    label: Arc<str>,
    /// For an in-memory store: the private file standing in for it, removed at close.
    scratch: Option<ScratchFile>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database and brings its schema up to date.
    ///
    /// An in-memory store is a private file in the temporary directory, written without
    /// syncing and removed when the store closes: SQLite's `:memory:` databases cannot be
    /// shared between the writer's connection and the readers'.
    pub async fn open(config: &SqliteConfig) -> Result<SqliteStore> {
        let (path, synchronous, scratch) = match &config.path {
            None => {
                let scratch = ScratchFile::new();
                (scratch.path.clone(), "OFF", Some(scratch))
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
                let synchronous = match config.durability {
                    Durability::Normal => "NORMAL",
                    Durability::Full => "FULL",
                };
                (path.clone(), synchronous, None)
            }
        };
        let label: Arc<str> = match &config.path {
            None => ":memory:".into(),
            Some(path) => path.display().to_string().into(),
        };
        let base = SqliteConnectOptions::new()
            .filename(&path)
            .busy_timeout(config.busy_timeout)
            .disable_statement_logging();
        prepare_file(&path, base.clone(), config.busy_timeout).await?;
        let writer_config = WriterConfig { path, synchronous, busy_timeout: config.busy_timeout };
        let writer = tokio::task::spawn_blocking(move || WriteConnection::open(&writer_config))
            .await
            .map_err(|e| Error::Internal(format!("opening the database panicked: {e}")))?
            .map_err(|e| Error::Configuration(format!("cannot open the database {label}: {e}")))?;
        let reader = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(config.readers.max(1))
            .min_connections(0)
            .connect_lazy_with(base.read_only(true));
        Ok(SqliteStore { writer: Mutex::new(Some(writer)), reader, label, scratch })
    }

    /// What the store is (the file path, or ":memory:"), for messages.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The connection every write goes through, for the one engine driving this store
    /// (it commits batches on its scheduler's thread). Once only.
    pub fn take_writer(&self) -> Result<WriteConnection> {
        self.writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or_else(|| Error::Internal(format!("the store {} already has an engine", self.label)))
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

    /// Closes every connection (a private in-memory store's file is removed).
    pub async fn close(&self) {
        drop(self.writer.lock().unwrap_or_else(PoisonError::into_inner).take());
        self.reader.close().await;
        if let Some(scratch) = &self.scratch {
            scratch.remove();
        }
    }
}

/// Creates the file if missing, switches it to WAL and brings its schema up to date,
/// over a short-lived sqlx connection.
async fn prepare_file(path: &Path, base: SqliteConnectOptions, busy_timeout: Duration) -> Result<()> {
    let options = base.create_if_missing(true).journal_mode(SqliteJournalMode::Wal);
    // Switching a new file to WAL needs an exclusive lock, for which SQLite does not
    // wait: while another process writes, retry until the busy timeout.
    let deadline = std::time::Instant::now() + busy_timeout;
    let mut conn = loop {
        match options.connect().await {
            Ok(conn) => break conn,
            Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err(e) => {
                return Err(Error::Configuration(format!("cannot open the database {}: {e}", path.display())))
            }
        }
    };
    // Two processes creating the same new file race here; the loser retries (until the
    // busy timeout) and then finds the schema in place.
    let deadline = std::time::Instant::now() + busy_timeout.max(Duration::from_secs(1));
    let migrated = loop {
        match MIGRATOR.run_direct(None, &mut conn, false).await {
            Ok(()) => break Ok(()),
            Err(e) if std::time::Instant::now() < deadline => {
                log::debug!("migrating the schema failed, retrying: {e}");
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err(e) => break Err(Error::from(e)),
        }
    };
    let _ = conn.close().await;
    migrated
}

/// The private file of an in-memory store, removed (with its WAL files) at close or drop.
struct ScratchFile {
    path: PathBuf,
}

impl ScratchFile {
    fn new() -> ScratchFile {
        let name = format!("cloacina-memory-{}.db", uuid::Uuid::now_v7().simple());
        ScratchFile { path: std::env::temp_dir().join(name) }
    }

    fn remove(&self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut path = self.path.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        self.remove();
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
