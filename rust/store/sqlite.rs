//! The SQLite store.
//!
//! Connection design: one write connection (`sqlite_write.rs`), owned by the engine's
//! scheduler thread, which runs every write as one `BEGIN IMMEDIATE` transaction of
//! cached prepared statements; and a few read-only connections (`sqlite_read.rs`) that
//! callers use from their own thread. In WAL mode readers never block the writer nor
//! each other, and no caller waiting for a run holds a connection while it waits
//! (waiting is an in-process notification), so the scheduler, the executors and waiting
//! callers cannot starve each other. The schema is migrated by sqlx's embedded
//! migrations when the store opens; the engine's own statements use rusqlite, which runs
//! them on the calling thread, where sqlx would make a round trip to a connection thread
//! per statement (see `sqlite_write.rs`).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::{ConnectOptions, Connection};
use sqlx_sqlite::{SqliteConnectOptions, SqliteJournalMode};

use super::sqlite_read::{self, Readers};
use super::sqlite_write::{WriteConnection, WriterConfig};
use super::{OrphanCandidate, Reads, RunFilter, RunRecord};
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
    /// Most idle read-only connections kept for callers.
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
    readers: Arc<Readers>,
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
        prepare_file(&path, base, config.busy_timeout).await?;
        let writer_config =
            WriterConfig { path: path.clone(), synchronous, busy_timeout: config.busy_timeout };
        let writer = tokio::task::spawn_blocking(move || WriteConnection::open(&writer_config))
            .await
            .map_err(|e| Error::Internal(format!("opening the database panicked: {e}")))?
            .map_err(|e| Error::Configuration(format!("cannot open the database {label}: {e}")))?;
        let readers = Arc::new(Readers::new(path, config.busy_timeout, config.readers as usize));
        Ok(SqliteStore { writer: Mutex::new(Some(writer)), readers, label, scratch })
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

    /// Runs `read` on a read connection: on a blocking thread of the runtime, or on the
    /// polling thread itself (see `Reads`).
    async fn read<T, F>(&self, reads: Reads, read: F) -> Result<T>
    where
        F: FnOnce(&mut rusqlite::Connection) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        if reads == Reads::Inline {
            return self.readers.with(read);
        }
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || readers.with(read))
            .await
            .map_err(|e| Error::Internal(format!("a database read panicked: {e}")))?
    }

    /// Runs not final and not owned by `me`: candidates for recovery.
    pub async fn orphan_candidates(&self, me: &str) -> Result<Vec<OrphanCandidate>> {
        let me = me.to_owned();
        self.read(Reads::Offloaded, move |c| sqlite_read::orphan_candidates(c, &me)).await
    }

    /// The run holding idempotency key `key`, if any.
    pub async fn run_by_key(&self, key: &str, reads: Reads) -> Result<Option<String>> {
        let key = key.to_owned();
        self.read(reads, move |c| sqlite_read::run_by_key(c, &key)).await
    }

    /// The status of run `run_id`, if it exists.
    pub async fn run_status(&self, run_id: &str, reads: Reads) -> Result<Option<String>> {
        let run_id = run_id.to_owned();
        self.read(reads, move |c| sqlite_read::run_status(c, &run_id)).await
    }

    /// Run `run_id` with its tasks and their attempts, if it exists (one snapshot).
    pub async fn run(&self, run_id: &str, reads: Reads) -> Result<Option<RunRecord>> {
        let run_id = run_id.to_owned();
        self.read(reads, move |c| sqlite_read::run(c, &run_id)).await
    }

    /// Runs matching `filter`, newest first, with their tasks (one snapshot).
    pub async fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>> {
        let filter = filter.clone();
        self.read(Reads::Offloaded, move |c| sqlite_read::runs(c, &filter)).await
    }

    /// Runs owned by `owner` that someone asked to cancel.
    pub async fn cancel_requests(&self, owner: &str) -> Result<Vec<String>> {
        let owner = owner.to_owned();
        self.read(Reads::Offloaded, move |c| sqlite_read::cancel_requests(c, &owner)).await
    }

    /// Closes the read connections (idle ones now, busy ones when their read ends).
    /// Done before the write connection closes: only a writer closing last can
    /// checkpoint the WAL and remove it.
    pub fn close_readers(&self) {
        self.readers.close();
    }

    /// Closes every connection (a private in-memory store's file is removed).
    pub async fn close(&self) {
        drop(self.writer.lock().unwrap_or_else(PoisonError::into_inner).take());
        self.readers.close();
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
