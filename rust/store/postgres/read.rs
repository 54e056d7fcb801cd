//! The PostgreSQL store's reads, over its pool. A run and its tasks are read in one
//! repeatable-read snapshot; listing reads run rows without their input.

use std::collections::HashMap;

use sqlx::Row;
use sqlx_postgres::{PgPool, PgRow};

use crate::context::Map;
use crate::errors::Result;
use crate::store::{AttemptRecord, OrphanCandidate, RunFilter, RunRecord, RunSummary, TaskRecord};

type Sql<T> = std::result::Result<T, sqlx::Error>;

/// Run `run_id` with its tasks, their attempts and its events, from one snapshot. The
/// outer error is the database's; the inner one a stored value that does not parse.
pub(super) async fn run(pool: &PgPool, run_id: &str) -> Sql<Result<Option<RunRecord>>> {
    let mut tx = pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY").await?;
    let row = sqlx::query(
        "SELECT run_id, workflow, version, status, input, error, created_at, started_at, finished_at, \
         owner, lease_expires_at, idempotency_key FROM runs WHERE run_id = $1",
    )
    .bind(run_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else { return Ok(Ok(None)) };
    let input: String = row.try_get(4)?;
    let input = match crate::store::parse_map(&input, || format!("the input of run {run_id}")) {
        Ok(input) => input,
        Err(e) => return Ok(Err(e)),
    };
    let mut run = RunRecord {
        run_id: row.try_get(0)?,
        workflow: row.try_get(1)?,
        version: row.try_get(2)?,
        status: row.try_get(3)?,
        input,
        error: row.try_get(5)?,
        created_at: row.try_get(6)?,
        started_at: row.try_get(7)?,
        finished_at: row.try_get(8)?,
        owner: row.try_get(9)?,
        lease_expires_at: row.try_get(10)?,
        idempotency_key: row.try_get(11)?,
        tasks: Vec::new(),
        events: Vec::new(),
    };
    let rows = sqlx::query(
        "SELECT task_id, position, status, attempts, started_at, finished_at, output, error, traceback, \
         reason, ready_at, hook_errors, dependencies FROM run_tasks WHERE run_id = $1",
    )
    .bind(run_id)
    .fetch_all(&mut *tx)
    .await?;
    for row in &rows {
        match task_from_row(row)? {
            Ok(task) => run.tasks.push(task),
            Err(e) => return Ok(Err(e)),
        }
    }
    run.tasks.sort_unstable_by_key(|t| t.position);
    let earlier = sqlx::query(
        "SELECT task_id, attempt, status, started_at, finished_at, error, traceback \
         FROM earlier_attempts WHERE run_id = $1 ORDER BY task_id, attempt",
    )
    .bind(run_id)
    .fetch_all(&mut *tx)
    .await?;
    if !earlier.is_empty() {
        let index: HashMap<String, usize> =
            run.tasks.iter().enumerate().map(|(i, t)| (t.task_id.clone(), i)).collect();
        for row in &earlier {
            let task_id: String = row.try_get(0)?;
            if let Some(&i) = index.get(&task_id) {
                run.tasks[i].history.push(AttemptRecord {
                    attempt: row.try_get::<i32, _>(1)? as u32,
                    status: row.try_get(2)?,
                    started_at: row.try_get(3)?,
                    finished_at: row.try_get(4)?,
                    error: row.try_get(5)?,
                    traceback: row.try_get(6)?,
                });
            }
        }
    }
    for task in &mut run.tasks {
        if let Some(latest) = crate::store::latest_attempt(task) {
            task.history.push(latest);
        }
    }
    let events = sqlx::query("SELECT at, kind, detail FROM run_events WHERE run_id = $1 ORDER BY event_id")
        .bind(run_id)
        .fetch_all(&mut *tx)
        .await?;
    for row in &events {
        run.events.push((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
    }
    tx.commit().await?;
    Ok(Ok(Some(run)))
}

/// Runs matching `filter`, newest first, with their task counts (one statement).
pub(super) async fn run_summaries(pool: &PgPool, filter: &RunFilter) -> Sql<Vec<RunSummary>> {
    let rows = sqlx::query(
        "SELECT r.run_id, r.workflow, r.version, r.status, r.error, r.created_at, r.started_at, \
         r.finished_at, r.idempotency_key, \
         (SELECT coalesce(json_agg(json_build_array(c.status, c.n))::text, '[]') FROM \
            (SELECT status, count(*) AS n FROM run_tasks t WHERE t.run_id = r.run_id GROUP BY status) c) \
         FROM runs r \
         WHERE ($1::text IS NULL OR r.workflow = $1) AND ($2::text IS NULL OR r.status = $2) \
         ORDER BY r.created_at DESC, r.run_id DESC LIMIT $3",
    )
    .bind(filter.workflow.as_deref())
    .bind(filter.status.as_deref())
    .bind(filter.limit as i64)
    .fetch_all(pool)
    .await?;
    let mut runs = Vec::with_capacity(rows.len());
    for row in &rows {
        let counts: String = row.try_get(9)?;
        let counts: Vec<(String, u32)> = serde_json::from_str(&counts).unwrap_or_default();
        runs.push(RunSummary {
            run_id: row.try_get(0)?,
            workflow: row.try_get(1)?,
            version: row.try_get(2)?,
            status: row.try_get(3)?,
            error: row.try_get(4)?,
            created_at: row.try_get(5)?,
            started_at: row.try_get(6)?,
            finished_at: row.try_get(7)?,
            idempotency_key: row.try_get(8)?,
            task_counts: counts,
        });
    }
    Ok(runs)
}

/// The run holding idempotency key `key`, if any.
pub(super) async fn run_by_key(pool: &PgPool, key: &str) -> Sql<Option<String>> {
    sqlx::query_scalar("SELECT run_id FROM runs WHERE idempotency_key = $1")
        .bind(key)
        .fetch_optional(pool)
        .await
}

/// The status of run `run_id`, if it exists.
pub(super) async fn run_status(pool: &PgPool, run_id: &str) -> Sql<Option<String>> {
    sqlx::query_scalar("SELECT status FROM runs WHERE run_id = $1").bind(run_id).fetch_optional(pool).await
}

/// Runs another engine may take over: unfinished ones whose owner is gone (queued runs
/// are claimed with `Writer::claim_queued`). An owner is gone when its lease expired on the database's clock, or
/// when its liveness lock (a session advisory lock its write connection holds, see
/// `write.rs`) is no longer held: its process died or lost its connection. Right after
/// the server restarted every engine is reconnecting, so for a grace period only
/// leases count. Oldest first, at most 1,000.
pub(super) async fn orphan_candidates(pool: &PgPool, me: &str) -> Sql<Vec<OrphanCandidate>> {
    let rows = sqlx::query(concat!(
        "WITH live AS (SELECT (l.classid::bigint << 32) | l.objid::bigint AS key FROM pg_locks l \
           WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted \
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())), \
         restarted AS (SELECT pg_postmaster_start_time() > clock_timestamp() - interval '10 seconds' AS recent) \
         SELECT r.run_id, r.workflow, r.status, r.owner, r.lease_expires_at FROM runs r \
         WHERE r.status IN ('running', 'interrupted') AND (r.owner IS NULL OR r.owner <> $1) \
           AND (r.owner IS NULL OR r.lease_expires_at IS NULL OR r.lease_expires_at < ",
        db_now!(),
        " OR (NOT (SELECT recent FROM restarted) AND NOT EXISTS \
              (SELECT 1 FROM live WHERE live.key = hashtextextended(current_schema() || ':' || r.owner, 0)))) \
         ORDER BY r.created_at, r.run_id LIMIT 1000"
    ))
    .bind(me)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(OrphanCandidate {
                run_id: r.try_get(0)?,
                workflow: r.try_get(1)?,
                status: r.try_get(2)?,
                owner: r.try_get(3)?,
                lease_expires_at: r.try_get(4)?,
                gone: Some(true),
            })
        })
        .collect()
}

/// Whether a queued run of one of `workflows` waits (over the partial index `runs_queued`).
pub(super) async fn has_queued(pool: &PgPool, workflows: &[String]) -> Sql<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM runs WHERE status = 'queued' AND workflow = ANY($1))")
        .bind(workflows)
        .fetch_one(pool)
        .await
}

/// Runs owned by `owner` that someone asked to cancel.
pub(super) async fn cancel_requests(pool: &PgPool, owner: &str) -> Sql<Vec<String>> {
    sqlx::query_scalar(
        "SELECT run_id FROM runs WHERE owner = $1 AND cancel_requested_at IS NOT NULL \
         AND status IN ('queued', 'running')",
    )
    .bind(owner)
    .fetch_all(pool)
    .await
}

fn task_from_row(row: &PgRow) -> Sql<Result<TaskRecord>> {
    let task_id: String = row.try_get(0)?;
    let output: Option<String> = row.try_get(6)?;
    let dependencies: String = row.try_get(12)?;
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
        position: row.try_get::<i32, _>(1)? as u32,
        status: row.try_get(2)?,
        attempts: row.try_get::<i32, _>(3)? as u32,
        started_at: row.try_get(4)?,
        finished_at: row.try_get(5)?,
        error: row.try_get(7)?,
        traceback: row.try_get(8)?,
        reason: row.try_get(9)?,
        ready_at: row.try_get(10)?,
        hook_errors: row.try_get(11)?,
        dependencies,
        history: Vec::new(),
        task_id,
    }))
}
