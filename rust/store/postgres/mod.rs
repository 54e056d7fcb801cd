//! The PostgreSQL store: one database (and schema) shared by any number of engines in
//! any number of processes and hosts.
//!
//! Connection design: a few read connections (callers, background checks: `pool.rs`)
//! and one dedicated write connection per engine (`write.rs`), used by the engine's
//! scheduler thread, which waits for each round trip off the tokio workers. The write
//! connection also holds the engine's liveness lock: a session-level advisory lock
//! keyed by the schema and the engine's owner id, which the server releases the moment
//! the process dies or its connection drops, so other engines can tell a dead owner at
//! once (see `read::orphan_candidates`). A third connection listens for wake-ups
//! (`listen.rs`).
//!
//! Tenants: every connection's `search_path` is the tenant's schema (set in the startup
//! packet, checked after connecting, failing closed), so the SQL names no schema; the
//! schema is created and migrated on first use, one process at a time.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt};
use sqlx::{ConnectOptions, Connection};
use sqlx_postgres::{PgConnectOptions, PgConnection, PgPoolOptions};

use self::listen::Listener;
use self::pool::Conns;
use crate::errors::{Error, Result};
use crate::store::{Committed, Op, OrphanCandidate, Reads, RunFilter, RunRecord, RunSummary, Store, Writer};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("rust/store/migrations/postgres");

/// The longest schema name: a tenant's name plus the suffixes of its notification
/// channel must fit PostgreSQL's 63-byte identifiers.
pub const MAX_SCHEMA_LEN: usize = 40;

/// Where and how to open a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// The connection URL (`postgresql://user:password@host:port/database?...`).
    pub url: String,
    /// The URL as shown in messages (password masked).
    pub label: String,
    /// The tenant's schema; None: the URL's `options=-c search_path=...`, else `public`.
    pub schema: Option<String>,
    /// How long connecting may take before it fails.
    pub connect_timeout: Duration,
    /// Most connections of the read pool.
    pub pool_size: u32,
}

impl PostgresConfig {
    /// A configuration with the default settings.
    pub fn new(url: String, label: String, schema: Option<String>) -> Self {
        PostgresConfig { url, label, schema, connect_timeout: Duration::from_secs(10), pool_size: 4 }
    }
}

/// Checks a tenant's schema name: lowercase ASCII letters, digits and `_`, starting with
/// a letter or `_`, at most `MAX_SCHEMA_LEN` bytes, and not one of PostgreSQL's own.
pub fn validate_schema(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= MAX_SCHEMA_LEN
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.starts_with("pg_")
        && name != "information_schema";
    if valid {
        Ok(())
    } else {
        Err(Error::Configuration(format!(
            "invalid schema name {name:?}: a schema is 1 to {MAX_SCHEMA_LEN} lowercase letters, digits \
             and '_', starting with a letter or '_' (and not pg_* or information_schema)"
        )))
    }
}

/// What `open` settled: the connect options (search path included) and the schema.
#[derive(Clone)]
pub(crate) struct Target {
    pub options: PgConnectOptions,
    pub schema: Arc<str>,
    pub label: Arc<str>,
    pub connect_timeout: Duration,
}

impl Target {
    /// A new connection with the tenant's search path, checked.
    pub(crate) async fn connect(&self) -> Result<PgConnection> {
        let mut conn = self.connect_unchecked().await?;
        check_search_path(&mut conn, &self.schema).await.map_err(|e| self.error(&e))?;
        Ok(conn)
    }

    /// A new connection, its search path not checked (the schema may not exist yet).
    async fn connect_unchecked(&self) -> Result<PgConnection> {
        self.dial().await.map_err(|e| match e {
            sqlx::Error::PoolTimedOut => self.timed_out(),
            e => self.connect_error(&e),
        })
    }

    /// `connect_unchecked` with sqlx's error, a timeout as `PoolTimedOut` (as a pool
    /// reports it): for a caller that tries again when the failure is transient.
    pub(crate) async fn dial(&self) -> std::result::Result<PgConnection, sqlx::Error> {
        match tokio::time::timeout(self.connect_timeout, self.options.connect()).await {
            Ok(connected) => connected,
            Err(_) => Err(sqlx::Error::PoolTimedOut),
        }
    }

    fn connect_error(&self, e: &sqlx::Error) -> Error {
        Error::Database(format!("cannot connect to {}: {}", self.label, describe(e)))
    }

    fn timed_out(&self) -> Error {
        Error::Database(format!(
            "cannot connect to {}: no answer within {:.1} s (the connect timeout; set it with \
             connect_timeout=<seconds> in the URL)",
            self.label,
            self.connect_timeout.as_secs_f64()
        ))
    }

    fn error(&self, e: &dyn std::fmt::Display) -> Error {
        Error::Database(format!("{}: {e}", self.label))
    }
}

/// A sqlx error in words, without the URL (sqlx never prints the password, but its
/// configuration errors may quote parts of the URL).
fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Configuration(inner) => format!("invalid URL: {inner}"),
        sqlx::Error::Io(io) => format!("{io}"),
        other => other.to_string(),
    }
}

/// Fails closed unless the connection's tables resolve in `schema` only.
async fn check_search_path(conn: &mut PgConnection, schema: &str) -> std::result::Result<(), String> {
    let current: Option<String> = sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| e.to_string())?;
    match current {
        Some(current) if current == schema => Ok(()),
        other => Err(format!(
            "the connection's search_path does not select the schema {schema:?} (current schema: \
             {other:?}); refusing to use it"
        )),
    }
}

/// Parses the URL: the connect options, the schema (from `schema` or the URL's
/// `options=-c search_path=...`), and the connect timeout (`connect_timeout=` seconds).
fn target(config: &PostgresConfig) -> Result<Target> {
    let label: Arc<str> = config.label.as_str().into();
    let invalid = |why: String| Error::Configuration(format!("invalid PostgreSQL URL {label}: {why}"));
    let parsed = url::Url::parse(&config.url).map_err(|e| invalid(e.to_string()))?;
    let mut connect_timeout = config.connect_timeout;
    let mut url_schema = None;
    let mut kept = Vec::new();
    for (key, value) in parsed.query_pairs() {
        match &*key {
            "connect_timeout" => {
                let seconds: f64 = value.parse().map_err(|_| {
                    invalid(format!("connect_timeout must be a number of seconds, not {value:?}"))
                })?;
                connect_timeout = crate::duration::seconds("connect_timeout", seconds)
                    .map_err(|e| invalid(e.to_string()))?
                    .max(Duration::from_millis(1));
            }
            "options" => {
                let (schema, rest) = split_search_path(&value);
                url_schema = schema;
                if !rest.trim().is_empty() {
                    kept.push((key.into_owned(), rest));
                }
            }
            _ => kept.push((key.into_owned(), value.into_owned())),
        }
    }
    let mut url = parsed.clone();
    url.set_query(None);
    if !kept.is_empty() {
        url.query_pairs_mut().extend_pairs(kept.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    }
    let schema = match (&config.schema, url_schema) {
        (Some(given), Some(in_url)) if *given != in_url => {
            return Err(Error::Configuration(format!(
                "{label}: schema={given:?} differs from the URL's search_path {in_url:?}"
            )))
        }
        (Some(given), _) => given.clone(),
        (None, Some(in_url)) => in_url,
        (None, None) => "public".to_owned(),
    };
    validate_schema(&schema)?;
    let options = PgConnectOptions::from_str(url.as_str())
        .map_err(|e| invalid(describe(&e)))?
        .options([("search_path", schema.as_str())])
        .application_name("cloacina")
        .disable_statement_logging();
    Ok(Target { options, schema: schema.into(), label, connect_timeout })
}

/// `(search_path, the other options)` of a libpq `options` value such as
/// `-c search_path=tenant_a -c statement_timeout=5s` (also `-csearch_path=...`).
fn split_search_path(options: &str) -> (Option<String>, String) {
    let mut schema = None;
    let mut rest = Vec::new();
    let mut words = options.split_whitespace().peekable();
    while let Some(word) = words.next() {
        let setting = if word == "-c" {
            match words.next() {
                Some(setting) => setting,
                None => break,
            }
        } else if let Some(setting) = word.strip_prefix("-c") {
            setting
        } else if let Some(setting) = word.strip_prefix("--") {
            setting
        } else {
            rest.push(word.to_owned());
            continue;
        };
        match setting.split_once('=') {
            Some(("search_path", value)) => schema = Some(value.trim_matches('"').to_owned()),
            _ => rest.push(format!("-c {setting}")),
        }
    }
    (schema, rest.join(" "))
}

/// Runs `$read` (a future of `sqlx::Result<T>` using `$conn: &mut PgConnection`) on a
/// read connection of `$store`, trying again on a new one while the server cannot be
/// reached (see `PostgresStore::read_failed`). The connection is reused only if the
/// read finished.
macro_rules! read {
    ($store:expr, |$conn:ident| $read:expr) => {
        async {
            let store: &PostgresStore = $store;
            let started = Instant::now();
            let mut pause = Duration::from_millis(50);
            loop {
                let attempt = async {
                    let mut lease = store.conns.acquire().await?;
                    let $conn: &mut PgConnection = &mut lease;
                    let value = $read.await?;
                    lease.release();
                    Ok::<_, sqlx::Error>(value)
                };
                match attempt.await {
                    Ok(value) => break Ok::<_, Error>(value),
                    Err(e) => store.read_failed(e, started, &mut pause).await?,
                }
            }
        }
    };
}

/// A PostgreSQL database (one schema of it) holding runs.
pub struct PostgresStore {
    target: Target,
    conns: Arc<Conns>,
    /// Whether an engine took the writer (see `take_writer`).
    writer_taken: AtomicBool,
    listener: Arc<Listener>,
}

impl PostgresStore {
    /// Connects, creates the schema if missing and brings it up to date (one process at
    /// a time; the others wait), and refuses a schema written by a newer cloacina.
    pub async fn open(config: &PostgresConfig) -> Result<PostgresStore> {
        let target = target(config)?;
        let mut conn = target.connect_unchecked().await?;
        migrate(&mut conn, &target).await?;
        check_search_path(&mut conn, &target.schema).await.map_err(|e| target.error(&e))?;
        let _ = conn.close().await;
        // The listening connection comes from a pool of its own, as sqlx's listener wants.
        let listening = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(target.connect_timeout)
            .test_before_acquire(false)
            .connect_lazy_with(target.options.clone());
        let conns = Conns::new(target.clone(), config.pool_size);
        let listener = Listener::start(target.clone(), listening, conns.clone());
        Ok(PostgresStore { target, conns, writer_taken: AtomicBool::new(false), listener })
    }

    /// Drops the tenant's schema (`config.schema`, or the URL's) with everything in it,
    /// if it exists: for test fixtures that give each test a schema of its own.
    pub async fn drop_schema(config: &PostgresConfig) -> Result<()> {
        let target = target(config)?;
        let mut conn = target.connect_unchecked().await?;
        // Validated by `target` (`validate_schema`): a plain lowercase identifier.
        let dropped =
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {} CASCADE", target.schema)))
                .execute(&mut conn)
                .await
                .map_err(|e| target.error(&e));
        let _ = conn.close().await;
        dropped.map(|_| ())
    }

    /// The tenant's schema.
    pub fn schema(&self) -> &str {
        &self.target.schema
    }

    /// After a failed read: waits before the next try while the server cannot be reached
    /// or the connection broke (with backoff, for up to `READ_RETRY_FOR` since `started`:
    /// a server restarting is waited out, as the writer waits it out), else the error.
    async fn read_failed(&self, e: sqlx::Error, started: Instant, pause: &mut Duration) -> Result<()> {
        if is_transient(&e) && started.elapsed() < READ_RETRY_FOR {
            log::debug!("reading from {} failed ({e}); trying again", self.target.label);
            tokio::time::sleep(*pause).await;
            *pause = (*pause * 2).min(Duration::from_secs(1));
            return Ok(());
        }
        Err(self.read_error(e))
    }

    fn read_error(&self, e: sqlx::Error) -> Error {
        match e {
            sqlx::Error::PoolTimedOut => self.target.timed_out(),
            e @ (sqlx::Error::Io(_) | sqlx::Error::Tls(_)) => {
                Error::Database(format!("lost the connection to {}: {}", self.target.label, describe(&e)))
            }
            e => Error::Database(format!("{}: {e}", self.target.label)),
        }
    }
}

/// Creates the schema if missing and applies the migrations it lacks, under an advisory
/// lock of the schema's (sqlx adds one of the whole database's): processes starting
/// together on a fresh schema migrate it once, the others wait and find it done.
async fn migrate(conn: &mut PgConnection, target: &Target) -> Result<()> {
    let fail = |e: &dyn std::fmt::Display| {
        target.error(&format!("preparing the schema {:?} failed: {e}", target.schema))
    };
    let key = format!("cloacina-migrate:{}", target.schema);
    sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
        .bind(&key)
        .execute(&mut *conn)
        .await
        .map_err(|e| fail(&e))?;
    let result = async {
        // Validated above (`validate_schema`): a plain lowercase identifier.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA IF NOT EXISTS {}", target.schema)))
            .execute(&mut *conn)
            .await
            .map_err(|e| fail(&e))?;
        check_versions(conn, target).await?;
        MIGRATOR.run_direct(None, &mut *conn, false).await.map_err(|e| fail(&e))
    }
    .await;
    let _ = sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
        .bind(&key)
        .execute(&mut *conn)
        .await;
    result
}

/// Refuses a schema holding another application's tables, or migrated by a newer
/// cloacina.
async fn check_versions(conn: &mut PgConnection, target: &Target) -> Result<()> {
    let refuse = |why: String| {
        Error::Configuration(format!("cannot use the schema {:?} of {}: {why}", target.schema, target.label))
    };
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| target.error(&e))?;
    if tables.is_empty() {
        return Ok(());
    }
    if !tables.iter().any(|t| t == "_sqlx_migrations") {
        return Err(refuse(format!(
            "it holds the tables {} of another application; nothing was written to it",
            tables.join(", ")
        )));
    }
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| target.error(&e))?;
    let known = crate::store::latest_migration(&MIGRATOR);
    if let Some(newer) = applied.iter().find(|v| **v > known) {
        return Err(refuse(format!(
            "it was written by a newer version of cloacina (schema version {newer}; this version knows \
             up to {known}): upgrade cloacina to use it"
        )));
    }
    Ok(())
}

impl Store for PostgresStore {
    fn label(&self) -> &str {
        &self.target.label
    }

    fn take_writer(&self, owner: &str) -> Result<Box<dyn Writer>> {
        if self.writer_taken.swap(true, Ordering::SeqCst) {
            return Err(Error::Internal(format!("the store {} already has an engine", self.target.label)));
        }
        let writer = write::PgWriter::new(self.target.clone(), owner.into(), self.listener.clone())?;
        Ok(Box::new(writer))
    }

    fn orphan_candidates<'a>(&'a self, me: &'a str) -> BoxFuture<'a, Result<Vec<OrphanCandidate>>> {
        read!(self, |c| read::orphan_candidates(c, me)).boxed()
    }

    fn run_by_key<'a>(&'a self, key: &'a str, _reads: Reads) -> BoxFuture<'a, Result<Option<String>>> {
        read!(self, |c| read::run_by_key(c, key)).boxed()
    }

    fn schema_version(&self) -> i64 {
        crate::store::latest_migration(&MIGRATOR)
    }

    fn run_status<'a>(&'a self, run_id: &'a str, _reads: Reads) -> BoxFuture<'a, Result<Option<String>>> {
        read!(self, |c| read::run_status(c, run_id)).boxed()
    }

    fn task_output<'a>(
        &'a self,
        run_id: &'a str,
        task_id: &'a str,
        _reads: Reads,
    ) -> BoxFuture<'a, Result<Option<String>>> {
        read!(self, |c| read::task_output(c, run_id, task_id)).boxed()
    }

    fn run<'a>(&'a self, run_id: &'a str, _reads: Reads) -> BoxFuture<'a, Result<Option<RunRecord>>> {
        async move { read!(self, |c| read::run(c, run_id)).await? }.boxed()
    }

    fn run_summaries<'a>(
        &'a self,
        filter: &'a RunFilter,
        _reads: Reads,
    ) -> BoxFuture<'a, Result<Vec<RunSummary>>> {
        read!(self, |c| read::run_summaries(c, filter)).boxed()
    }

    fn has_queued<'a>(&'a self, workflows: &'a [String]) -> BoxFuture<'a, Result<bool>> {
        read!(self, |c| read::has_queued(c, workflows)).boxed()
    }

    fn cancel_requests<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<Vec<String>>> {
        read!(self, |c| read::cancel_requests(c, owner)).boxed()
    }

    fn changes(&self) -> Option<Arc<tokio::sync::Notify>> {
        Some(self.listener.changes())
    }

    fn inserts_beside_writer(&self) -> bool {
        true
    }

    fn insert_run<'a>(&'a self, ops: &'a [Op]) -> BoxFuture<'a, Result<Committed>> {
        async move {
            let Some(run) = write::NewRun::of(ops) else {
                return Err(Error::Internal("insert_run: the ops are not one new run".into()));
            };
            read!(self, |c| write::insert_run(c, &run)).await?
        }
        .boxed()
    }

    fn commit_gather(&self) -> Option<Duration> {
        Some(Duration::from_millis(1))
    }

    fn liveness_check(&self) -> Option<Duration> {
        Some(LIVENESS_CHECK)
    }

    fn close_readers(&self) {}

    fn close(&self) -> BoxFuture<'_, ()> {
        async move {
            self.listener.stop();
            self.conns.close().await;
        }
        .boxed()
    }
}

/// How long a read keeps trying while the server cannot be reached.
const READ_RETRY_FOR: Duration = Duration::from_secs(30);

/// True when the error means the server is (for now) out of reach, or the connection
/// broke, not that the statement was wrong: worth trying again.
pub(crate) fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // 08: connection exception; 57P01-03: admin shutdown, crash shutdown, cannot
            // connect now; 40001/40P01: serialization failure, deadlock (retry).
            code.starts_with("08") || code.starts_with("57P") || code == "40001" || code == "40P01"
        }
        _ => false,
    }
}

/// How often an engine on PostgreSQL looks for runs to take over (queued, or of a dead
/// owner), whether it drives runs or not: a dead owner is seen at once (its liveness
/// lock is gone), so this bounds the takeover time after a crash.
const LIVENESS_CHECK: Duration = Duration::from_millis(500);

/// The database clock in microseconds since the Unix epoch, as an SQL expression (a
/// literal, for `concat!`).
macro_rules! db_now {
    () => {
        "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"
    };
}

mod listen;
mod pool;
mod read;
mod write;
