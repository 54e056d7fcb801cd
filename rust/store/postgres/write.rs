//! The PostgreSQL store's write connection: one per engine, used by the engine's
//! scheduler thread, which waits for each round trip there (`Handle::block_on` on a
//! thread of its own, never a tokio worker).
//!
//! Each method is one READ COMMITTED transaction. Every batch is fenced: the runs it
//! drives are locked (`FOR NO KEY UPDATE`) and checked to be still this engine's, at the
//! epoch it claimed them at; a run another engine took meanwhile (this one froze past its
//! lease, or lost its connection) is reported lost and none of its ops are applied.
//! The lock also orders the batch before any claim of the run that follows it.
//!
//! The connection holds the engine's liveness lock (see `read::orphan_candidates`). When
//! it breaks (the server restarted, the network failed) the writer reconnects with
//! backoff, takes the lock again and retries the transaction; every statement can be
//! applied twice without effect, in case a commit went through but its answer was lost.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{Connection, Row};
use sqlx_postgres::PgConnection;

use super::listen::{Listener, Wake};
use super::Target;
use crate::errors::{Error, Result};
use crate::store::{now_micros, Committed, Op, Writer};

/// How long the writer keeps reconnecting before a write fails.
const RECONNECT_FOR: Duration = Duration::from_secs(60);

type Sql<T> = std::result::Result<T, sqlx::Error>;

/// The one connection an engine writes through.
pub(super) struct PgWriter {
    /// The connection, once it holds the liveness lock; None after it broke.
    conn: Option<PgConnection>,
    /// The connection the store opened, until the first write takes the lock on it.
    fresh: Option<PgConnection>,
    target: Target,
    owner: Arc<str>,
    runtime: tokio::runtime::Handle,
    /// The epoch at which this engine owns each run it drives (0 for the runs it made).
    epochs: HashMap<Arc<str>, i64>,
    listener: Arc<Listener>,
}

impl PgWriter {
    /// Wraps `conn`; the liveness lock is taken before the first write.
    pub(super) fn new(
        conn: PgConnection,
        target: Target,
        owner: Arc<str>,
        listener: Arc<Listener>,
    ) -> Result<Self> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::Internal("the PostgreSQL writer needs the engine's runtime".into()))?;
        Ok(PgWriter {
            conn: None,
            fresh: Some(conn),
            target,
            owner,
            runtime,
            epochs: HashMap::new(),
            listener,
        })
    }

    /// Ends a failed transaction: Ok(()) to try again after reconnecting, or the error.
    fn after_failure(&mut self, failure: Failure, started: Instant, pause: &mut Duration) -> Result<()> {
        let e = match failure {
            Failure::Sql(e) if is_connection_error(&e) => e.to_string(),
            Failure::Connect(e) => e.to_string(),
            Failure::Sql(e) => return Err(Error::Database(format!("{}: {e}", self.target.label))),
        };
        self.conn = None;
        if started.elapsed() >= RECONNECT_FOR {
            return Err(Error::Database(format!(
                "{}: the connection broke and could not be restored within {} s: {e}",
                self.target.label,
                RECONNECT_FOR.as_secs()
            )));
        }
        log::warn!("the write connection to {} broke ({e}); reconnecting", self.target.label);
        std::thread::sleep(*pause);
        *pause = (*pause * 2).min(Duration::from_secs(2));
        Ok(())
    }
}

/// Runs `$body` (an async block using `$conn: &mut PgConnection` and `$ctx: &Ctx`) as
/// one transaction of `$writer`'s connection, reconnecting (with backoff, for up to
/// `RECONNECT_FOR`) and retrying when the connection breaks; the writer's thread waits.
macro_rules! transact {
    ($writer:expr, |$conn:ident, $ctx:ident| $body:expr) => {{
        let writer: &mut PgWriter = $writer;
        let started = Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            let runtime = writer.runtime.clone();
            let result = runtime.block_on(async {
                let conn =
                    connected(&mut writer.conn, &mut writer.fresh, &writer.target, &writer.owner).await?;
                let $ctx = Ctx { owner: &writer.owner, epochs: &writer.epochs };
                let mut tx = conn.begin().await.map_err(Failure::Sql)?;
                let value = {
                    let $conn: &mut PgConnection = &mut *tx;
                    $body.await.map_err(Failure::Sql)?
                };
                tx.commit().await.map_err(Failure::Sql)?;
                Ok::<_, Failure>(value)
            });
            match result {
                Ok(value) => break Ok(value),
                Err(failure) => {
                    if let Err(e) = writer.after_failure(failure, started, &mut pause) {
                        break Err(e);
                    }
                }
            }
        }
    }};
}

/// The connection, connected and holding the engine's liveness lock.
async fn connected<'a>(
    conn: &'a mut Option<PgConnection>,
    fresh: &mut Option<PgConnection>,
    target: &Target,
    owner: &str,
) -> std::result::Result<&'a mut PgConnection, Failure> {
    if conn.is_none() {
        let mut new = match fresh.take() {
            Some(new) => new,
            None => target.connect().await.map_err(Failure::Connect)?,
        };
        sqlx::query("SELECT pg_advisory_lock(hashtextextended(current_schema() || ':' || $1, 0))")
            .bind(owner)
            .execute(&mut new)
            .await
            .map_err(Failure::Sql)?;
        *conn = Some(new);
    }
    Ok(conn.as_mut().expect("connected above"))
}

/// Why a transaction did not happen.
enum Failure {
    Sql(sqlx::Error),
    Connect(Error),
}

/// What the statements of a transaction need of the writer.
struct Ctx<'a> {
    owner: &'a str,
    epochs: &'a HashMap<Arc<str>, i64>,
}

/// True when the error means the connection is gone (or the server is going away), not
/// that the statement was wrong.
fn is_connection_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolClosed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // 08: connection exception; 57P01-03: admin shutdown, crash shutdown, cannot
            // connect now; 40001/40P01: serialization failure, deadlock (retry).
            code.starts_with("08") || code.starts_with("57P") || code == "40001" || code == "40P01"
        }
        _ => false,
    }
}

/// Microseconds from now (host clock) to `until`: leases are stored on the database's
/// clock as its now plus this.
fn from_now(until: i64) -> i64 {
    until.saturating_sub(now_micros()).max(0)
}

impl Writer for PgWriter {
    fn commit(&mut self, ops: &[Op], owner: &str, _verify: &HashSet<Arc<str>>) -> Result<Committed> {
        let inserted: HashSet<&str> =
            ops.iter().filter(|op| matches!(op, Op::InsertRun { .. })).filter_map(Op::run_id).collect();
        // Every run driven by the batch is fenced, not only those whose lease may have
        // run out: on PostgreSQL a run is also taken when its owner's connection drops.
        let touched: Vec<String> = ops
            .iter()
            .filter(|op| op.needs_ownership())
            .filter_map(Op::run_id)
            .filter(|id| !inserted.contains(id))
            .collect::<HashSet<_>>()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let done = transact!(self, |conn, ctx| async {
            let mut done = Committed::default();
            let mut skip: HashSet<String> = HashSet::new();
            if !touched.is_empty() {
                let rows = sqlx::query(
                    "SELECT run_id, owner, owner_epoch FROM runs WHERE run_id = ANY($1) \
                         ORDER BY run_id FOR NO KEY UPDATE",
                )
                .bind(&touched)
                .fetch_all(&mut *conn)
                .await?;
                for row in &rows {
                    let run_id: String = row.try_get(0)?;
                    let run_owner: Option<String> = row.try_get(1)?;
                    let epoch: i64 = row.try_get(2)?;
                    let mine = run_owner.as_deref() == Some(ctx.owner)
                        && ctx.epochs.get(run_id.as_str()).is_none_or(|e| *e == epoch);
                    if !mine {
                        done.lost.push(run_id.as_str().into());
                        skip.insert(run_id);
                    }
                }
            }
            for op in ops {
                if let Some(id) = op.run_id() {
                    if skip.contains(id) && (op.needs_ownership() || inserted.contains(id)) {
                        continue;
                    }
                }
                if let Some(existing) = apply(conn, op, owner).await? {
                    if let Some(run_id) = op.run_id() {
                        skip.insert(run_id.to_string());
                        done.duplicates.push((run_id.into(), existing));
                    }
                }
            }
            Ok::<_, sqlx::Error>(done)
        })?;
        let mut wake = Wake::default();
        for op in ops {
            match op {
                Op::InsertRun { run_id, owner: Some(_), .. } => {
                    self.epochs.entry(run_id.clone()).or_insert(0);
                }
                Op::InsertRun { owner: None, .. } => wake.queued = true,
                Op::FinishRun { run_id, .. } => {
                    self.epochs.remove(run_id);
                    wake.finished = true;
                }
                _ => {}
            }
        }
        for lost in &done.lost {
            self.epochs.remove(lost);
        }
        for (run_id, _) in &done.duplicates {
            self.epochs.remove(run_id);
        }
        self.listener.announce(wake);
        Ok(done)
    }

    fn claim_run(
        &mut self,
        run_id: &str,
        expected_owner: Option<&str>,
        owner: &str,
        lease_until: i64,
    ) -> Result<bool> {
        let lease = from_now(lease_until);
        let epoch = transact!(self, |conn, _ctx| async {
            sqlx::query_scalar::<_, i64>(concat!(
                "UPDATE runs SET owner = $1, owner_epoch = owner_epoch + 1, lease_expires_at = ",
                db_now!(),
                " + $2, status = CASE WHEN status IN ('interrupted', 'queued') THEN 'running' \
                     ELSE status END, started_at = COALESCE(started_at, ",
                db_now!(),
                ") WHERE run_id = $3 AND owner IS NOT DISTINCT FROM $4 RETURNING owner_epoch"
            ))
            .bind(owner)
            .bind(lease)
            .bind(run_id)
            .bind(expected_owner)
            .fetch_optional(&mut *conn)
            .await
        })?;
        match epoch {
            Some(epoch) => {
                self.epochs.insert(run_id.into(), epoch);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn mark_interrupted(&mut self, run_id: &str, owner: Option<&str>, at: i64) -> Result<()> {
        let detail = serde_json::json!({ "owner": owner }).to_string();
        let (run, detail) = (run_id, &detail);
        transact!(self, |conn, _ctx| async {
            let done = sqlx::query(
                "UPDATE runs SET status = 'interrupted' \
                     WHERE run_id = $1 AND owner IS NOT DISTINCT FROM $2 AND status = 'running'",
            )
            .bind(run)
            .bind(owner)
            .execute(&mut *conn)
            .await?;
            if done.rows_affected() > 0 {
                sqlx::query(
                    "INSERT INTO run_events (run_id, at, kind, detail) VALUES ($1, $2, 'interrupted', $3)",
                )
                .bind(run)
                .bind(at)
                .bind(detail)
                .execute(&mut *conn)
                .await?;
            }
            Ok::<_, sqlx::Error>(())
        })
    }

    fn purge(&mut self, before: i64, limit: usize) -> Result<usize> {
        // Child rows go with their run (ON DELETE CASCADE); rows locked by a claim or a
        // batch are left for the next round.
        let deleted = transact!(self, |conn, _ctx| async {
            sqlx::query(
                "DELETE FROM runs WHERE run_id IN (SELECT run_id FROM runs WHERE finished_at < $1 \
                 AND status IN ('completed', 'failed', 'cancelled') ORDER BY finished_at LIMIT $2 \
                 FOR UPDATE SKIP LOCKED)",
            )
            .bind(before)
            .bind(limit as i64)
            .execute(&mut *conn)
            .await
        })?;
        Ok(deleted.rows_affected() as usize)
    }

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
        self.claim_queued_runs(workflows, limit, owner, lease_until)
    }

    fn request_cancel(&mut self, run_id: &str, at: i64) -> Result<bool> {
        let run = run_id;
        let done = transact!(self, |conn, _ctx| async {
            // A queued run has no owner to carry a request out: it is cancelled here.
            let queued = sqlx::query(
                "UPDATE runs SET status = 'cancelled', finished_at = $1, cancel_requested_at = $1 \
                     WHERE run_id = $2 AND status = 'queued'",
            )
            .bind(at)
            .bind(run)
            .execute(&mut *conn)
            .await?;
            if queued.rows_affected() > 0 {
                sqlx::query(
                        "UPDATE run_tasks SET status = 'cancelled', \
                         reason = 'the run was cancelled before it started', finished_at = $1 WHERE run_id = $2",
                    )
                    .bind(at)
                    .bind(run)
                    .execute(&mut *conn)
                    .await?;
            }
            let done = sqlx::query(
                "UPDATE runs SET cancel_requested_at = COALESCE(cancel_requested_at, $1) \
                     WHERE run_id = $2 AND status IN ('running', 'interrupted')",
            )
            .bind(at)
            .bind(run)
            .execute(&mut *conn)
            .await?;
            Ok::<_, sqlx::Error>(queued.rows_affected() + done.rows_affected() > 0)
        })?;
        if done {
            self.listener.announce(Wake { cancel: true, ..Wake::default() });
        }
        Ok(done)
    }
}

impl PgWriter {
    /// Claims queued runs with one statement: the oldest `limit` queued runs of the given
    /// workflows, skipping rows other engines are claiming (`FOR UPDATE SKIP LOCKED`, over
    /// the partial index `runs_queued`), each at a new owner epoch.
    fn claim_queued_runs(
        &mut self,
        workflows: &[String],
        limit: usize,
        owner: &str,
        lease_until: i64,
    ) -> Result<Vec<String>> {
        let lease = from_now(lease_until);
        let claimed: Vec<(String, i64)> = transact!(self, |conn, _ctx| async {
            sqlx::query_as(concat!(
                "WITH c AS MATERIALIZED (SELECT run_id FROM runs WHERE status = 'queued' \
                   AND workflow = ANY($1) ORDER BY created_at, run_id LIMIT $2 FOR UPDATE SKIP LOCKED) \
                 UPDATE runs r SET status = 'running', owner = $3, owner_epoch = r.owner_epoch + 1, \
                   started_at = COALESCE(r.started_at, ",
                db_now!(),
                "), lease_expires_at = ",
                db_now!(),
                " + $4 FROM c WHERE r.run_id = c.run_id RETURNING r.run_id, r.owner_epoch"
            ))
            .bind(workflows)
            .bind(limit as i64)
            .bind(owner)
            .bind(lease)
            .fetch_all(&mut *conn)
            .await
        })?;
        Ok(claimed
            .into_iter()
            .map(|(run_id, epoch)| {
                self.epochs.insert(run_id.as_str().into(), epoch);
                run_id
            })
            .collect())
    }
}

/// Applies one op; Some(existing run id) when an insert lost to an idempotency key.
async fn apply(conn: &mut PgConnection, op: &Op, me: &str) -> Sql<Option<String>> {
    match op {
        Op::InsertRun { run_id, workflow, version, input, owner, at, lease_until, idempotency_key } => {
            // Without an owner the run is queued: no start, no lease.
            let inserted = sqlx::query(concat!(
                "INSERT INTO runs (run_id, workflow, version, status, input, owner, created_at, started_at, \
                 lease_expires_at, idempotency_key) VALUES ($1, $2, $3, \
                 CASE WHEN $5::text IS NULL THEN 'queued' ELSE 'running' END, $4, $5, $6, \
                 CASE WHEN $5::text IS NULL THEN NULL ELSE $6 END, \
                 CASE WHEN $5::text IS NULL THEN NULL ELSE ",
                db_now!(),
                " + $7 END, $8) ON CONFLICT DO NOTHING"
            ))
            .bind(&**run_id)
            .bind(&**workflow)
            .bind(&**version)
            .bind(input)
            .bind(owner.as_deref())
            .bind(at)
            .bind(from_now(*lease_until))
            .bind(idempotency_key)
            .execute(&mut *conn)
            .await?;
            if inserted.rows_affected() == 0 {
                // Either this very run (a retried transaction whose first commit went
                // through) or another run holding the key.
                let existing: Option<String> = sqlx::query_scalar(
                    "SELECT run_id FROM runs WHERE run_id = $1 OR (idempotency_key = $2) \
                     ORDER BY (run_id = $1) DESC LIMIT 1",
                )
                .bind(&**run_id)
                .bind(idempotency_key)
                .fetch_optional(&mut *conn)
                .await?;
                if let Some(existing) = existing.filter(|e| e != &**run_id) {
                    return Ok(Some(existing));
                }
            }
        }
        Op::RenewLeases { owner, until } => {
            sqlx::query(concat!(
                "UPDATE runs SET lease_expires_at = ",
                db_now!(),
                " + $1 WHERE owner = $2 AND status = 'running'"
            ))
            .bind(from_now(*until))
            .bind(&**owner)
            .execute(&mut *conn)
            .await?;
        }
        Op::AddEvent { run_id, kind, detail, at } => {
            sqlx::query("INSERT INTO run_events (run_id, at, kind, detail) VALUES ($1, $2, $3, $4)")
                .bind(&**run_id)
                .bind(at)
                .bind(*kind)
                .bind(detail)
                .execute(&mut *conn)
                .await?;
        }
        Op::ReopenRun { run_id, owner, lease_until } => {
            sqlx::query(concat!(
                "UPDATE runs SET status = 'running', error = NULL, finished_at = NULL, owner = $1, \
                 lease_expires_at = ",
                db_now!(),
                " + $2, cancel_requested_at = NULL WHERE run_id = $3"
            ))
            .bind(&**owner)
            .bind(from_now(*lease_until))
            .bind(&**run_id)
            .execute(&mut *conn)
            .await?;
        }
        Op::ResetTask { run_id, task_id } => {
            sqlx::query(
                "INSERT INTO earlier_attempts (run_id, task_id, attempt, status, owner, started_at, \
                 finished_at, error, traceback) \
                 SELECT run_id, task_id, attempt, status, owner, started_at, finished_at, error, traceback \
                 FROM task_attempts WHERE run_id = $1 AND task_id = $2 ON CONFLICT DO NOTHING",
            )
            .bind(&**run_id)
            .bind(&**task_id)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "UPDATE run_tasks SET status = 'pending', reason = NULL, error = NULL, traceback = NULL, \
                 output = NULL, finished_at = NULL, ready_at = NULL WHERE run_id = $1 AND task_id = $2",
            )
            .bind(&**run_id)
            .bind(&**task_id)
            .execute(&mut *conn)
            .await?;
        }
        Op::PlanTask { run_id, task_id, position, dependencies } => {
            sqlx::query(
                "UPDATE run_tasks SET position = $1, dependencies = $2 WHERE run_id = $3 AND task_id = $4",
            )
            .bind(*position as i32)
            .bind(dependencies)
            .bind(&**run_id)
            .bind(&**task_id)
            .execute(&mut *conn)
            .await?;
        }
        Op::SetRunVersion { run_id, version } => {
            sqlx::query("UPDATE runs SET version = $1 WHERE run_id = $2")
                .bind(&**version)
                .bind(&**run_id)
                .execute(&mut *conn)
                .await?;
        }
        Op::InsertTask { run_id, task_id, position, dependencies, status } => {
            sqlx::query(
                "INSERT INTO run_tasks (run_id, task_id, position, dependencies, status) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(&**run_id)
            .bind(&**task_id)
            .bind(*position as i32)
            .bind(dependencies)
            .bind(*status)
            .execute(&mut *conn)
            .await?;
        }
        Op::StartTask { run_id, task_id, attempt, owner, at } => {
            sqlx::query(
                "UPDATE run_tasks SET status = 'running', attempts = $1, owner = $2, started_at = $3, \
                 finished_at = NULL, ready_at = NULL WHERE run_id = $4 AND task_id = $5",
            )
            .bind(*attempt as i32)
            .bind(&**owner)
            .bind(at)
            .bind(&**run_id)
            .bind(&**task_id)
            .execute(&mut *conn)
            .await?;
        }
        Op::FinishTask { run_id, task_id, owner, status, at, output, error, traceback, reason } => {
            sqlx::query(
                "UPDATE run_tasks SET status = $1, output = $2, error = $3, traceback = $4, finished_at = $5, \
                 owner = $6, reason = $7 WHERE run_id = $8 AND task_id = $9",
            )
            .bind(*status)
            .bind(output)
            .bind(error)
            .bind(traceback)
            .bind(at)
            .bind(&**owner)
            .bind(reason)
            .bind(&**run_id)
            .bind(&**task_id)
            .execute(&mut *conn)
            .await?;
        }
        Op::RetryTask { run_id, task_id, attempt, owner, started_at, at, ready_at, error, traceback } => {
            sqlx::query(
                "UPDATE run_tasks SET status = 'ready', ready_at = $1, error = $2, traceback = $3, \
                 finished_at = $4, owner = NULL WHERE run_id = $5 AND task_id = $6",
            )
            .bind(ready_at)
            .bind(error)
            .bind(traceback)
            .bind(at)
            .bind(&**run_id)
            .bind(&**task_id)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "INSERT INTO earlier_attempts (run_id, task_id, attempt, status, owner, started_at, \
                 finished_at, error, traceback) VALUES ($1, $2, $3, 'failed', $4, $5, $6, $7, $8) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&**run_id)
            .bind(&**task_id)
            .bind(*attempt as i32)
            .bind(&**owner)
            .bind(started_at)
            .bind(at)
            .bind(error)
            .bind(traceback)
            .execute(&mut *conn)
            .await?;
        }
        Op::AddHookError { run_id, task_id, entry } => {
            sqlx::query(
                "UPDATE run_tasks SET hook_errors = \
                 (COALESCE(hook_errors, '[]')::jsonb || jsonb_build_array($1::jsonb))::text \
                 WHERE run_id = $2 AND task_id = $3",
            )
            .bind(entry)
            .bind(&**run_id)
            .bind(&**task_id)
            .execute(&mut *conn)
            .await?;
        }
        Op::MarkTask { run_id, task_id, status, reason, at } => {
            sqlx::query(
                "UPDATE run_tasks SET status = $1, reason = $2, finished_at = COALESCE($3, finished_at) \
                 WHERE run_id = $4 AND task_id = $5",
            )
            .bind(*status)
            .bind(reason)
            .bind(at)
            .bind(&**run_id)
            .bind(&**task_id)
            .execute(&mut *conn)
            .await?;
        }
        Op::FinishRun { run_id, status, error, at } => {
            sqlx::query(
                "UPDATE runs SET status = $1, error = $2, finished_at = $3, owner = NULL \
                 WHERE run_id = $4 AND (owner = $5 OR owner IS NULL)",
            )
            .bind(*status)
            .bind(error)
            .bind(at)
            .bind(&**run_id)
            .bind(me)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(None)
}
