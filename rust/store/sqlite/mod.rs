//! The SQLite store.
//!
//! Connection design: one write connection (`write.rs`), owned by the engine's
//! scheduler thread, which runs every write as one `BEGIN IMMEDIATE` transaction of
//! cached prepared statements; and a few read-only connections (`read.rs`) that
//! callers use from their own thread. In WAL mode readers never block the writer nor
//! each other, and no caller waiting for a run holds a connection while it waits
//! (waiting is an in-process notification), so the scheduler, the executors and waiting
//! callers cannot starve each other. The schema is migrated by sqlx's embedded
//! migrations when the store opens; the engine's own statements use rusqlite, which runs
//! them on the calling thread, where sqlx would make a round trip to a connection thread
//! per statement (see `write.rs`).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};

use futures::future::{BoxFuture, FutureExt};

mod api_table;
mod checkpoint;
pub mod library;
mod read;
mod tx;
mod write;

use std::time::Duration;
pub use write::WriteConnection;

use sqlx::{ConnectOptions, Connection};
use sqlx_sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode};

use self::read::Readers;
use self::write::WriterConfig;
use crate::errors::{Error, Result};
use crate::store::{OrphanCandidate, Reads, RunFilter, RunRecord, RunSummary, Store, Writer};

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
                let scratch = ScratchFile::new()?;
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
                check_writable(path)?;
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
            .map_err(|e| match e {
                Error::Configuration(_) => e,
                e => Error::Configuration(format!("cannot open the database {label}: {e}")),
            })?;
        let readers = Arc::new(Readers::new(path, config.busy_timeout, config.readers as usize));
        Ok(SqliteStore { writer: Mutex::new(Some(writer)), readers, label, scratch })
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
}

impl Store for SqliteStore {
    fn label(&self) -> &str {
        &self.label
    }

    fn take_writer(&self, _owner: &str) -> Result<Box<dyn Writer>> {
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or_else(|| Error::Internal(format!("the store {} already has an engine", self.label)))?;
        Ok(Box::new(writer))
    }

    fn orphan_candidates<'a>(&'a self, me: &'a str) -> BoxFuture<'a, Result<Vec<OrphanCandidate>>> {
        let me = me.to_owned();
        self.read(Reads::Offloaded, move |c| read::orphan_candidates(c, &me)).boxed()
    }

    fn run_by_key<'a>(&'a self, key: &'a str, reads: Reads) -> BoxFuture<'a, Result<Option<String>>> {
        let key = key.to_owned();
        self.read(reads, move |c| read::run_by_key(c, &key)).boxed()
    }

    fn schema_version(&self) -> i64 {
        crate::store::latest_migration(&MIGRATOR)
    }

    fn run_status<'a>(&'a self, run_id: &'a str, reads: Reads) -> BoxFuture<'a, Result<Option<String>>> {
        let run_id = run_id.to_owned();
        self.read(reads, move |c| read::run_status(c, &run_id)).boxed()
    }

    fn task_output<'a>(
        &'a self,
        run_id: &'a str,
        task_id: &'a str,
        reads: Reads,
    ) -> BoxFuture<'a, Result<Option<String>>> {
        let (run_id, task_id) = (run_id.to_owned(), task_id.to_owned());
        self.read(reads, move |c| read::task_output(c, &run_id, &task_id)).boxed()
    }

    fn run<'a>(&'a self, run_id: &'a str, reads: Reads) -> BoxFuture<'a, Result<Option<RunRecord>>> {
        let run_id = run_id.to_owned();
        self.read(reads, move |c| read::run(c, &run_id)).boxed()
    }

    fn run_summaries<'a>(
        &'a self,
        filter: &'a RunFilter,
        reads: Reads,
    ) -> BoxFuture<'a, Result<Vec<RunSummary>>> {
        let filter = filter.clone();
        self.read(reads, move |c| read::run_summaries(c, &filter)).boxed()
    }

    fn has_queued<'a>(&'a self, workflows: &'a [String]) -> BoxFuture<'a, Result<bool>> {
        let names = serde_json::to_string(workflows).unwrap_or_else(|_| "[]".into());
        self.read(Reads::Offloaded, move |c| read::has_queued(c, &names)).boxed()
    }

    fn cancel_requests<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<Vec<String>>> {
        let owner = owner.to_owned();
        self.read(Reads::Offloaded, move |c| read::cancel_requests(c, &owner)).boxed()
    }

    /// Closes the read connections (idle ones now, busy ones when their read ends).
    /// Done before the write connection closes: only a writer closing last can
    /// checkpoint the WAL and remove it.
    fn close_readers(&self) {
        self.readers.close();
    }

    /// Closes every connection (a private in-memory store's file is removed).
    fn close(&self) -> BoxFuture<'_, ()> {
        drop(self.writer.lock().unwrap_or_else(PoisonError::into_inner).take());
        self.readers.close();
        if let Some(scratch) = &self.scratch {
            scratch.remove();
        }
        Box::pin(async {})
    }
}

/// Creates the file if missing, switches it to WAL and brings its schema up to date,
/// over a short-lived sqlx connection. A file of another application, or one written by
/// a newer cloacina, is refused before anything is written to it.
async fn prepare_file(path: &Path, base: SqliteConnectOptions, busy_timeout: Duration) -> Result<()> {
    let probe_options = base.clone().read_only(true);
    let options = base.create_if_missing(true).journal_mode(SqliteJournalMode::Wal);
    let refuse = |e: &dyn std::fmt::Display| {
        Error::Configuration(format!("cannot open the database {}: {e}", path.display()))
    };
    // Whose file it is, read before anything (switching to WAL, migrating) writes.
    if path.exists() {
        let mut probe =
            loop_until_not_busy(busy_timeout, || probe_options.connect()).await.map_err(|e| refuse(&e))?;
        let checked = check_owner(&mut probe, path).await;
        let _ = probe.close().await;
        checked?;
    }
    // Switching a new file to WAL needs an exclusive lock, for which SQLite does not
    // wait: while another process writes, retry until the busy timeout.
    let mut conn = loop_until_not_busy(busy_timeout, || options.connect()).await.map_err(|e| refuse(&e))?;
    // Two processes creating the same new file race here; the loser retries while the
    // winner holds the lock (or after it applied a migration the loser was applying
    // too), and then finds the schema in place. Other errors are retried briefly.
    let started = std::time::Instant::now();
    let migrated = loop {
        match MIGRATOR.run_direct(None, &mut conn, false).await {
            Ok(()) => break Ok(()),
            Err(e)
                if started.elapsed()
                    < if migration_is_busy(&e) { busy_timeout } else { Duration::from_secs(2) } =>
            {
                log::debug!("migrating the schema failed, retrying: {e}");
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err(e) => break Err(Error::from(e)),
        }
    };
    let _ = conn.close().await;
    migrated
}

/// Refuses a database this process may not write (the file, or the directory where
/// SQLite keeps its `-wal` and `-shm` files): cloacina records every step, so a
/// read-only database would fail at the first one.
fn check_writable(path: &Path) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let read_only = |what: &Path| {
        Error::Configuration(format!(
            "cannot open the database {}: {} is read-only for this process, and cloacina \
             writes every step of a run to the database",
            path.display(),
            what.display()
        ))
    };
    if path.exists() && !may_write(path) {
        return Err(read_only(path));
    }
    if !may_write(dir) {
        return Err(read_only(dir));
    }
    Ok(())
}

#[cfg(unix)]
fn may_write(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return true };
    // SAFETY: access() only reads the NUL-terminated path.
    unsafe { libc::access(c_path.as_ptr(), libc::W_OK) == 0 }
}

#[cfg(not(unix))]
fn may_write(path: &Path) -> bool {
    std::fs::metadata(path).map(|m| !m.permissions().readonly()).unwrap_or(true)
}

/// Connects, retrying while the database is locked (up to `busy_timeout`).
async fn loop_until_not_busy<F, Fut>(
    busy_timeout: Duration,
    connect: F,
) -> Result<SqliteConnection, sqlx::Error>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<SqliteConnection, sqlx::Error>>,
{
    let deadline = std::time::Instant::now() + busy_timeout;
    loop {
        match connect().await {
            Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            other => return other,
        }
    }
}

/// Refuses a file that is not cloacina's (tables of another application, or another
/// migration history) or that a newer cloacina wrote (schema versions unknown here).
async fn check_owner(conn: &mut SqliteConnection, path: &Path) -> Result<()> {
    let refuse =
        |why: String| Error::Configuration(format!("cannot open the database {}: {why}", path.display()));
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| refuse(e.to_string()))?;
    if tables.is_empty() {
        return Ok(()); // a new, empty database
    }
    if !tables.iter().any(|t| t == "_sqlx_migrations") {
        return Err(refuse(format!(
            "it is not a cloacina database (it holds the tables {} of another application); \
             nothing was written to it",
            tables.join(", ")
        )));
    }
    let applied: Vec<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| refuse(e.to_string()))?;
    let known = crate::store::latest_migration(&MIGRATOR);
    for (version, checksum) in applied {
        match MIGRATOR.iter().find(|m| m.version == version) {
            None if version > known => {
                return Err(refuse(format!(
                    "it was written by a newer version of cloacina (schema version {version}; this \
                     version knows up to {known}): upgrade cloacina to open it"
                )))
            }
            Some(m) if *m.checksum == *checksum => {}
            _ => {
                return Err(refuse(
                    "it is not a cloacina database (its migration history is another application's); \
                     nothing was written to it"
                        .into(),
                ))
            }
        }
    }
    Ok(())
}

/// True when a migration failed because the database was locked.
fn migration_is_busy(e: &sqlx::migrate::MigrateError) -> bool {
    match e {
        sqlx::migrate::MigrateError::Execute(inner)
        | sqlx::migrate::MigrateError::ExecuteMigration(inner, _) => is_busy(inner),
        _ => false,
    }
}

/// The private file of an in-memory store, removed (with its WAL files) at close or drop.
///
/// It lives in a directory of this user's only (mode 0700 in the temporary directory),
/// is created with mode 0600 (SQLite gives its `-wal` and `-shm` files the same), and is
/// named after this process (pid and start time): files left by processes that died are
/// removed when the next in-memory store is made.
struct ScratchFile {
    path: PathBuf,
}

impl ScratchFile {
    fn new() -> Result<ScratchFile> {
        let dir = private_temp_dir()?;
        let me = format!("memory-{}-{}-", std::process::id(), crate::process::start_time(std::process::id()));
        remove_leftovers(&dir);
        let path = dir.join(format!("{me}{}.db", uuid::Uuid::now_v7().simple()));
        let mut open = std::fs::OpenOptions::new();
        open.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
        open.open(&path).map_err(|e| {
            Error::Configuration(format!(
                "cannot create the in-memory database's file {}: {e}",
                path.display()
            ))
        })?;
        Ok(ScratchFile { path })
    }

    fn remove(&self) {
        remove_with_journals(&self.path);
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        self.remove();
    }
}

/// `<temp>/cloacina-<uid>`, created with mode 0700; refused if another user owns it or
/// others may enter it.
fn private_temp_dir() -> Result<PathBuf> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        let dir = std::env::temp_dir().join(format!("cloacina-{uid}"));
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
        let meta = std::fs::symlink_metadata(&dir)
            .map_err(|e| Error::Configuration(format!("cannot create {}: {e}", dir.display())))?;
        if !meta.is_dir() || meta.uid() != uid {
            return Err(Error::Configuration(format!(
                "{} is not a directory of this user's: refusing to keep an in-memory database there",
                dir.display()
            )));
        }
        if meta.mode() & 0o077 != 0 {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::Configuration(format!("cannot restrict {}: {e}", dir.display())))?;
        }
        Ok(dir)
    }
    #[cfg(not(unix))]
    {
        let dir = std::env::temp_dir().join("cloacina");
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::Configuration(format!("cannot create {}: {e}", dir.display())))?;
        Ok(dir)
    }
}

/// Removes the in-memory databases of processes that no longer run.
fn remove_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix("memory-").filter(|n| n.ends_with(".db")) else { continue };
        let mut parts = rest.splitn(3, '-');
        let (Some(pid), Some(start)) = (parts.next(), parts.next()) else { continue };
        let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else { continue };
        if !crate::process::is_running(pid, start) {
            remove_with_journals(&entry.path());
        }
    }
}

/// Removes a database file and its journal files.
fn remove_with_journals(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.to_path_buf().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
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
