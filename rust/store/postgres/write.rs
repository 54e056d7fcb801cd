//! The PostgreSQL store's write connection: one per engine, used by the engine's
//! scheduler thread, which waits for each round trip there (`Handle::block_on` on a
//! thread of its own, never a tokio worker).
//!
//! Each method is one statement, so one READ COMMITTED transaction, and one round trip:
//! a writer that stalls between two round trips (frozen, or cut off) never holds a lock.
//! Every batch is fenced (`cloacina_commit`, migration 2): the runs it drives are checked
//! to be still this engine's, at the epoch it claimed them at, under a shared advisory
//! lock per run that a claim takes exclusively; a run another engine took meanwhile (this
//! one froze past its lease, or lost its connection) is reported lost and none of its
//! ops are applied.
//!
//! The connection holds the engine's liveness lock (see `read::orphan_candidates`). When
//! it breaks (the server restarted, the network failed) the writer reconnects with
//! backoff, takes the lock again and retries the transaction; every statement can be
//! applied twice without effect, in case a commit went through but its answer was lost.

use std::cell::OnceCell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx_postgres::PgConnection;

use super::listen::{Listener, Wake};
use super::Target;
use crate::errors::{Error, Result};
use crate::store::{batch_runs, now_micros, Committed, Op, Writer};

/// How long the writer keeps reconnecting before a write fails.
const RECONNECT_FOR: Duration = Duration::from_secs(60);

/// The one connection an engine writes through.
pub(super) struct PgWriter {
    /// The connection, once it holds the liveness lock; None after it broke.
    conn: Option<PgConnection>,
    target: Target,
    owner: Arc<str>,
    /// A runtime of the writer's own (one thread: the scheduler's, which blocks on it),
    /// so that the connection's I/O is driven on the thread waiting for it, with no
    /// wake-up of another thread per round trip. Made on first use, on that thread.
    runtime: Option<tokio::runtime::Runtime>,
    /// Runs to fence at their next batch whatever their lease: those driven when the
    /// connection was lost (and with it the liveness lock, see `commit`).
    suspect: HashSet<Arc<str>>,
    /// The epoch at which this engine owns each run it drives (0 for the runs it made).
    epochs: HashMap<Arc<str>, i64>,
    listener: Arc<Listener>,
}

impl PgWriter {
    /// A writer for the engine `owner`; it connects (and takes the liveness lock)
    /// before the first write, on the thread that writes.
    pub(super) fn new(target: Target, owner: Arc<str>, listener: Arc<Listener>) -> Result<Self> {
        Ok(PgWriter {
            conn: None,
            target,
            owner,
            runtime: None,
            suspect: HashSet::new(),
            epochs: HashMap::new(),
            listener,
        })
    }

    /// Ends a failed transaction: Ok(()) to try again after reconnecting, or the error.
    fn after_failure(&mut self, failure: Failure, started: Instant, pause: &mut Duration) -> Result<()> {
        let e = match failure {
            Failure::Sql(e) if super::is_transient(&e) => e.to_string(),
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

/// Runs `$body` (an async block using `$conn: &mut PgConnection` and `$fresh`, true
/// when the connection was made for this call,
/// giving a `Result<T, sqlx::Error>`) on `$writer`'s connection, reconnecting (with
/// backoff, for up to `RECONNECT_FOR`) and trying again when the connection breaks; the
/// writer's thread waits.
macro_rules! retrying {
    ($writer:expr, |$conn:ident, $fresh:ident| $body:expr) => {{
        let writer: &mut PgWriter = $writer;
        let started = Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            // Taken out while it runs, so that the writer's fields stay borrowable.
            let runtime = match writer.runtime.take() {
                Some(runtime) => runtime,
                None => match local_runtime() {
                    Ok(runtime) => runtime,
                    Err(e) => break Err(e),
                },
            };
            let result = runtime.block_on(async {
                let (conn, $fresh) = connected(&mut writer.conn, &writer.target, &writer.owner).await?;
                if $fresh {
                    // Without the liveness lock another engine may have taken any run:
                    // each is fenced at its next batch.
                    writer.suspect.extend(writer.epochs.keys().cloned());
                }
                let $conn = conn;
                $body.await.map_err(Failure::Sql)
            });
            writer.runtime = Some(runtime);
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
    target: &Target,
    owner: &str,
) -> std::result::Result<(&'a mut PgConnection, bool), Failure> {
    let fresh = conn.is_none();
    if fresh {
        let mut new = target.connect().await.map_err(Failure::Connect)?;
        sqlx::query("SELECT pg_advisory_lock(hashtextextended(current_schema() || ':' || $1, 0))")
            .bind(owner)
            .execute(&mut new)
            .await
            .map_err(Failure::Sql)?;
        *conn = Some(new);
    }
    Ok((conn.as_mut().expect("connected above"), fresh))
}

/// A runtime for the writer (see `PgWriter::runtime`).
fn local_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the writer's runtime: {e}")))
}

impl Drop for PgWriter {
    fn drop(&mut self) {
        // The connection belongs to the writer's runtime: dropped first, inside it.
        if let Some(runtime) = self.runtime.take() {
            let conn = self.conn.take();
            let _guard = runtime.enter();
            drop(conn);
            drop(_guard);
            runtime.shutdown_background();
        }
    }
}

/// Why a transaction did not happen.
enum Failure {
    Sql(sqlx::Error),
    Connect(Error),
}

/// Microseconds from now (host clock) to `until`: leases are stored on the database's
/// clock as its now plus this.
fn from_now(until: i64) -> i64 {
    until.saturating_sub(now_micros()).max(0)
}

impl Writer for PgWriter {
    fn commit(&mut self, ops: &[Op], owner: &str, verify: &HashSet<Arc<str>>) -> Result<Committed> {
        // The runs the batch drives. While the connection lasts this engine's liveness
        // lock is held, so its runs can only be taken once their lease runs out, which
        // the scheduler foresees (`verify`): those are fenced, and so are the runs driven
        // when a connection was lost (`suspect`), and all of them when the connection is
        // made again during this very commit.
        let touched: Vec<String> = batch_runs(ops).1.into_iter().map(str::to_owned).collect();
        let epochs: serde_json::Map<String, serde_json::Value> = touched
            .iter()
            .filter_map(|id| self.epochs.get(id.as_str()).map(|e| (id.clone(), (*e).into())))
            .collect();
        let epochs = serde_json::Value::Object(epochs).to_string();
        let expiring: Vec<String> = touched
            .iter()
            .filter(|id| verify.contains(id.as_str()) || self.suspect.contains(id.as_str()))
            .cloned()
            .collect();
        // Encoded only for `cloacina_commit`, once however often the batch is retried.
        let batch = OnceCell::new();
        let new_run = NewRun::of(ops);
        // One statement: one round trip, one transaction (see migration 2), or a plain
        // statement (`insert_run`, `plain_batch`), which loses no run.
        let done = retrying!(self, |conn, fresh| async {
            if let Some(run) = &new_run {
                return insert_run(&mut *conn, run).await; // a new run has nothing to fence
            }
            if !fresh && expiring.is_empty() {
                if let Some(query) = plain_batch(ops, owner) {
                    return query.execute(&mut *conn).await.map(|_| Ok(Committed::default()));
                }
            }
            sqlx::query_scalar("SELECT cloacina_commit($1::jsonb, $2, $3, $4::jsonb)::text")
                .bind(batch.get_or_init(|| encode(ops)))
                .bind(owner)
                .bind(if fresh { &touched } else { &expiring })
                .bind(&epochs)
                .fetch_one(&mut *conn)
                .await
                .map(|answer: String| decode(&answer))
        })??;
        if !self.suspect.is_empty() {
            for id in &touched {
                self.suspect.remove(id.as_str());
            }
        }
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

    fn track(&mut self, run_id: &Arc<str>) {
        self.epochs.entry(run_id.clone()).or_insert(0);
        if self.conn.is_none() {
            // The liveness lock may have been missing since the run was committed.
            self.suspect.insert(run_id.clone());
        }
    }

    fn claim_run(
        &mut self,
        run_id: &str,
        expected_owner: Option<&str>,
        owner: &str,
        lease_until: i64,
    ) -> Result<bool> {
        let lease = from_now(lease_until);
        // One statement (see `cloacina_claim`, migration 2).
        let epoch: Option<i64> = retrying!(self, |conn, _fresh| async {
            sqlx::query_scalar("SELECT cloacina_claim($1, $2, $3, $4)")
                .bind(run_id)
                .bind(expected_owner)
                .bind(owner)
                .bind(lease)
                .fetch_one(&mut *conn)
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
        retrying!(self, |conn, _fresh| async {
            sqlx::query(
                "WITH u AS (UPDATE runs SET status = 'interrupted' \
                   WHERE run_id = $1 AND owner IS NOT DISTINCT FROM $2 AND status = 'running' \
                   RETURNING run_id) \
                 INSERT INTO run_events (run_id, at, kind, detail) \
                 SELECT run_id, $3, 'interrupted', $4 FROM u",
            )
            .bind(run_id)
            .bind(owner)
            .bind(at)
            .bind(&detail)
            .execute(&mut *conn)
            .await
        })?;
        Ok(())
    }

    fn purge(&mut self, before: i64, limit: usize) -> Result<usize> {
        // Task rows are deleted here with their run (they have no foreign key: migration
        // 4); attempts and events go with it (ON DELETE CASCADE). Rows locked by a claim
        // or a batch are left for the next round.
        let deleted = retrying!(self, |conn, _fresh| async {
            sqlx::query(
                "WITH doomed AS MATERIALIZED (SELECT run_id FROM runs WHERE finished_at < $1 \
                 AND status IN ('completed', 'failed', 'cancelled') ORDER BY finished_at LIMIT $2 \
                 FOR UPDATE SKIP LOCKED), \
                 tasks AS (DELETE FROM run_tasks WHERE run_id IN (SELECT run_id FROM doomed)) \
                 DELETE FROM runs WHERE run_id IN (SELECT run_id FROM doomed)",
            )
            .bind(before)
            .bind(limit as i64)
            .execute(&mut *conn)
            .await
        })?;
        Ok(deleted.rows_affected() as usize)
    }

    /// Claims queued runs with one statement: the oldest `limit` queued runs of the given
    /// workflows, skipping rows other engines are claiming (`FOR UPDATE SKIP LOCKED`, over
    /// the partial index `runs_queued`), each at a new owner epoch.
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
        let lease = from_now(lease_until);
        let claimed: Vec<(String, i64)> = retrying!(self, |conn, _fresh| async {
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

    fn request_cancel(&mut self, run_id: &str, at: i64) -> Result<bool> {
        // A queued run has no owner to carry a request out: it is cancelled here. The
        // two updates of the run's row exclude each other (queued, or running).
        let changed: i64 = retrying!(self, |conn, _fresh| async {
            sqlx::query_scalar(
                "WITH q AS (UPDATE runs SET status = 'cancelled', finished_at = $1, cancel_requested_at = $1 \
                   WHERE run_id = $2 AND status = 'queued' RETURNING run_id), \
                 t AS (UPDATE run_tasks SET status = 'cancelled', \
                   reason = 'the run was cancelled before it started', finished_at = $1 \
                   WHERE run_id IN (SELECT run_id FROM q)), \
                 r AS (UPDATE runs SET cancel_requested_at = COALESCE(cancel_requested_at, $1) \
                   WHERE run_id = $2 AND status IN ('running', 'interrupted') RETURNING run_id) \
                 SELECT (SELECT count(*) FROM q) + (SELECT count(*) FROM r)",
            )
            .bind(at)
            .bind(run_id)
            .fetch_one(&mut *conn)
            .await
        })?;
        if changed > 0 {
            self.listener.announce(Wake { cancel: true, ..Wake::default() });
        }
        Ok(changed > 0)
    }

    fn request_resume(&mut self, run_id: &str, at: i64) -> Result<bool> {
        let queued: i64 = retrying!(self, |conn, _fresh| async {
            sqlx::query_scalar(
                "WITH q AS (UPDATE runs SET status = 'queued', owner = NULL, lease_expires_at = NULL, \
                   error = NULL, finished_at = NULL, cancel_requested_at = NULL \
                   WHERE run_id = $2 AND status IN ('failed', 'cancelled') RETURNING run_id), \
                 e AS (INSERT INTO run_events (run_id, at, kind, detail) \
                   SELECT run_id, $1, 'resume_requested', '{}' FROM q) \
                 SELECT count(*) FROM q",
            )
            .bind(at)
            .bind(run_id)
            .fetch_one(&mut *conn)
            .await
        })?;
        if queued > 0 {
            self.listener.announce(Wake { queued: true, ..Wake::default() });
        }
        Ok(queued > 0)
    }
}

/// The statement of `insert_run`: the run (owned, or queued without an owner), then its
/// task rows from arrays, with `$columns` after `status` read from `$arrays` after the
/// statuses' ($13 on). Inserts nothing when the run exists (see `insert_run`).
macro_rules! insert_run_sql {
    ($columns:literal, $arrays:literal) => {
        concat!(
            "WITH r AS (INSERT INTO runs (run_id, workflow, version, status, input, owner, created_at, \
               started_at, lease_expires_at, idempotency_key) \
             VALUES ($1, $2, $3, CASE WHEN $5::text IS NULL THEN 'queued' ELSE 'running' END, $4, $5, $6, \
               CASE WHEN $5::text IS NULL THEN NULL ELSE $6 END, \
               CASE WHEN $5::text IS NULL THEN NULL ELSE ",
            db_now!(),
            " + $7 END, $8) \
             ON CONFLICT DO NOTHING RETURNING run_id), \
             t AS (INSERT INTO run_tasks (run_id, task_id, position, dependencies, status",
            $columns,
            ") SELECT r.run_id, x.* FROM r, unnest($9::text[], $10::int[], $11::text[], $12::text[]",
            $arrays,
            ") AS x(task_id, position, dependencies, status",
            $columns,
            ")) SELECT run_id FROM r"
        )
    };
}

/// A batch that is one new run and nothing else, as the rows `insert_run` writes: its
/// `Op::InsertRun`, its `Op::InsertTask`s, and `Op::StartTask`s of those tasks (the first
/// attempts the scheduler started in the batch that inserts the run), each start folded
/// into its task's row.
pub(super) struct NewRun<'a> {
    run_id: &'a Arc<str>,
    workflow: &'a str,
    version: &'a str,
    input: &'a str,
    owner: Option<&'a str>,
    at: i64,
    lease_until: i64,
    idempotency_key: Option<&'a str>,
    task_ids: Vec<&'a str>,
    positions: Vec<i32>,
    dependencies: Vec<&'a str>,
    statuses: Vec<&'static str>,
    attempts: Vec<i32>,
    started_by: Vec<Option<&'a str>>,
    started_at: Vec<Option<i64>>,
}

impl<'a> NewRun<'a> {
    /// The new run `ops` are; None when they are anything else.
    pub(super) fn of(ops: &'a [Op]) -> Option<Self> {
        let Some(Op::InsertRun { run_id, workflow, version, input, owner, at, lease_until, idempotency_key }) =
            ops.first()
        else {
            return None;
        };
        let mut run = NewRun {
            run_id,
            workflow,
            version,
            input,
            owner: owner.as_deref(),
            at: *at,
            lease_until: *lease_until,
            idempotency_key: idempotency_key.as_deref(),
            task_ids: vec![],
            positions: vec![],
            dependencies: vec![],
            statuses: vec![],
            attempts: vec![],
            started_by: vec![],
            started_at: vec![],
        };
        let mut index: HashMap<&str, usize> = HashMap::new();
        for op in &ops[1..] {
            match op {
                Op::InsertTask { run_id: of, task_id, position, dependencies, status } if of == run_id => {
                    index.insert(task_id, run.task_ids.len());
                    run.task_ids.push(task_id);
                    run.positions.push(*position as i32);
                    run.dependencies.push(dependencies);
                    run.statuses.push(status);
                    run.attempts.push(0);
                    run.started_by.push(None);
                    run.started_at.push(None);
                }
                Op::StartTask { run_id: of, task_id, attempt, owner, at } if of == run_id => {
                    let &i = index.get(&**task_id)?; // a start before its row
                    run.statuses[i] = "running";
                    run.attempts[i] = *attempt as i32;
                    run.started_by[i] = Some(owner);
                    run.started_at[i] = Some(*at);
                }
                _ => return None,
            }
        }
        Some(run)
    }
}

/// Commits a new run (see `NewRun`): one plain statement, cheaper on the server than
/// `cloacina_commit`'s op-by-op loop (about 0.1 ms a run here), with nothing to fence.
/// The scheduler's writer commits a lone new run with it, and a submitter beside the
/// writer on a read connection. The outer error is the database's. Applied twice (an
/// answer lost, the statement retried) it inserts once; a run whose idempotency key
/// another run holds is reported in `duplicates`, and none of its rows are written.
pub(super) async fn insert_run(
    conn: &mut PgConnection,
    run: &NewRun<'_>,
) -> std::result::Result<Result<Committed>, sqlx::Error> {
    let run_id = run.run_id;
    // Task rows with no attempt started (a submitter's, beside the writer) leave the
    // start columns to their defaults, and bind no arrays for them.
    let started = run.started_at.iter().any(Option::is_some);
    let sql = if started {
        insert_run_sql!(", attempts, owner, started_at", ", $13::int[], $14::text[], $15::bigint[]")
    } else {
        insert_run_sql!("", "")
    };
    let mut query = sqlx::query_scalar::<_, String>(sql)
        .bind(&**run_id)
        .bind(run.workflow)
        .bind(run.version)
        .bind(run.input)
        .bind(run.owner)
        .bind(run.at)
        .bind(from_now(run.lease_until))
        .bind(run.idempotency_key)
        .bind(&run.task_ids)
        .bind(&run.positions)
        .bind(&run.dependencies)
        .bind(&run.statuses);
    if started {
        query = query.bind(&run.attempts).bind(&run.started_by).bind(&run.started_at);
    }
    let inserted: Option<String> = query.fetch_optional(&mut *conn).await?;
    if inserted.is_some() {
        return Ok(Ok(Committed::default()));
    }
    // Not inserted: this very run (a statement retried after its answer was lost), or
    // another run holding the key (a statement of its own, whose snapshot sees it).
    let existing: Option<String> = sqlx::query_scalar(
        "SELECT run_id FROM runs WHERE run_id = $1 OR idempotency_key = $2 \
         ORDER BY (run_id = $1) DESC LIMIT 1",
    )
    .bind(&**run_id)
    .bind(run.idempotency_key)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(Ok(match existing {
        Some(existing) if existing != **run_id => {
            Committed { duplicates: vec![(run_id.clone(), existing)], ..Committed::default() }
        }
        Some(_) => Committed::default(),
        None => return Ok(Err(Error::Database(format!("run {run_id} was neither inserted nor found")))),
    }))
}

/// A batch as one plain statement, for the two commonest batches when no run of theirs
/// needs fencing: a chain's step (a task's attempt finishes and its successor's starts,
/// on two different rows) and a run's last step (its last task finishes and the run
/// ends). The server runs it without the per-transaction setup of the function's
/// PL/pgSQL expressions, about 40 us less per commit here. The statements update the
/// same columns as `cloacina_commit`'s `ft`, `st` and `fr`. None for any other batch.
fn plain_batch<'q>(
    ops: &'q [Op],
    me: &'q str,
) -> Option<sqlx::query::Query<'q, sqlx_postgres::Postgres, sqlx_postgres::PgArguments>> {
    let [Op::FinishTask { run_id, task_id, owner, status, at, output, error, traceback, reason }, next] = ops
    else {
        return None;
    };
    // Both statements open with the finished task's row, $1 to $9.
    macro_rules! finish_then {
        ($then:literal) => {
            concat!(
                "WITH f AS (UPDATE run_tasks SET status = $3, output = $4, error = $5, traceback = $6, \
                   finished_at = $7, owner = $8, reason = $9 WHERE run_id = $1 AND task_id = $2) ",
                $then
            )
        };
    }
    let finish = |sql: &'static str| {
        sqlx::query(sql)
            .bind(&**run_id)
            .bind(&**task_id)
            .bind(*status)
            .bind(output.as_deref())
            .bind(error.as_deref())
            .bind(traceback.as_deref())
            .bind(*at)
            .bind(&**owner)
            .bind(reason.as_deref())
    };
    match next {
        Op::StartTask {
            run_id: next_run,
            task_id: next_task,
            attempt,
            owner: next_owner,
            at: started_at,
        } if (next_run, next_task) != (run_id, task_id) => Some(
            finish(finish_then!(
                "UPDATE run_tasks SET status = 'running', attempts = $12, owner = $13, started_at = $14, \
                 finished_at = NULL, ready_at = NULL WHERE run_id = $10 AND task_id = $11"
            ))
            .bind(&**next_run)
            .bind(&**next_task)
            .bind(*attempt as i32)
            .bind(&**next_owner)
            .bind(*started_at),
        ),
        Op::FinishRun { run_id: run, status: run_status, error: run_error, at: finished_at }
            if run == run_id =>
        {
            Some(
                finish(finish_then!(
                    "UPDATE runs SET status = $10, error = $11, finished_at = $12, owner = NULL \
                     WHERE run_id = $1 AND (owner = $13 OR owner IS NULL)"
                ))
                .bind(*run_status)
                .bind(run_error.as_deref())
                .bind(*finished_at)
                .bind(me),
            )
        }
        _ => None,
    }
}

/// The batch as `cloacina_commit` reads it: a JSON array of ops, each an object whose
/// `k` names its kind (see migration 2). Leases become microseconds from now.
fn encode(ops: &[Op]) -> String {
    use serde_json::json;
    let encoded: Vec<serde_json::Value> = ops
        .iter()
        .map(|op| match op {
            Op::InsertRun { run_id, workflow, version, input, owner, at, lease_until, idempotency_key } => json!({
                "k": "ir", "run": &**run_id, "wf": &**workflow, "ver": &**version, "input": input,
                "owner": owner.as_deref(), "at": at, "lease": from_now(*lease_until), "key": idempotency_key,
            }),
            Op::RenewLeases { owner, until } => json!({"k": "rl", "owner": &**owner, "lease": from_now(*until)}),
            Op::AddEvent { run_id, kind, detail, at } => {
                json!({"k": "ev", "run": &**run_id, "kind": kind, "detail": detail, "at": at})
            }
            Op::ReopenRun { run_id, owner, lease_until } => {
                json!({"k": "ro", "run": &**run_id, "owner": &**owner, "lease": from_now(*lease_until)})
            }
            Op::ResetTask { run_id, task_id } => json!({"k": "rt", "run": &**run_id, "task": &**task_id}),
            Op::PlanTask { run_id, task_id, position, dependencies } => json!({
                "k": "pt", "run": &**run_id, "task": &**task_id, "pos": position, "deps": dependencies,
            }),
            Op::SetRunVersion { run_id, version } => json!({"k": "sv", "run": &**run_id, "ver": &**version}),
            Op::InsertTask { run_id, task_id, position, dependencies, status } => json!({
                "k": "it", "run": &**run_id, "task": &**task_id, "pos": position, "deps": dependencies,
                "status": status,
            }),
            Op::StartTask { run_id, task_id, attempt, owner, at } => json!({
                "k": "st", "run": &**run_id, "task": &**task_id, "attempt": attempt, "owner": &**owner, "at": at,
            }),
            Op::FinishTask { run_id, task_id, owner, status, at, output, error, traceback, reason } => json!({
                "k": "ft", "run": &**run_id, "task": &**task_id, "owner": &**owner, "status": status, "at": at,
                "output": output, "error": error, "tb": traceback, "reason": reason,
            }),
            Op::RetryTask { run_id, task_id, attempt, owner, started_at, at, ready_at, error, traceback } => json!({
                "k": "rty", "run": &**run_id, "task": &**task_id, "attempt": attempt, "owner": &**owner,
                "started_at": started_at, "at": at, "ready_at": ready_at, "error": error, "tb": traceback,
            }),
            Op::AddHookError { run_id, task_id, entry } => {
                json!({"k": "he", "run": &**run_id, "task": &**task_id, "entry": entry})
            }
            Op::MarkTask { run_id, task_id, status, reason, at } => json!({
                "k": "mt", "run": &**run_id, "task": &**task_id, "status": status, "reason": reason, "at": at,
            }),
            Op::FinishRun { run_id, status, error, at } => {
                json!({"k": "fr", "run": &**run_id, "status": status, "error": error, "at": at})
            }
        })
        .collect();
    serde_json::Value::Array(encoded).to_string()
}

/// `cloacina_commit`'s answer: `{"lost": [run ids], "dups": [[new id, existing id]]}`.
fn decode(answer: &str) -> Result<Committed> {
    #[derive(serde::Deserialize)]
    struct Answer {
        lost: Vec<String>,
        dups: Vec<(String, String)>,
    }
    let answer: Answer = serde_json::from_str(answer)
        .map_err(|e| Error::Internal(format!("cloacina_commit answered {answer:?}: {e}")))?;
    Ok(Committed {
        lost: answer.lost.into_iter().map(|r| r.as_str().into()).collect(),
        duplicates: answer.dups.into_iter().map(|(new, existing)| (new.as_str().into(), existing)).collect(),
    })
}
