//! The PostgreSQL store's reads, each on a read connection (`pool.rs`). A run and its
//! tasks are read in one repeatable-read snapshot; listing reads run rows without their
//! input.

use sqlx::Row;
use sqlx_postgres::PgConnection;

use crate::context::Map;
use crate::errors::Result;
use crate::store::{AttemptRecord, OrphanCandidate, RunFilter, RunRecord, RunSummary, TaskRecord};

type Sql<T> = std::result::Result<T, sqlx::Error>;

/// Run `run_id` with its tasks, their attempts and its events: one statement (one round
/// trip, one snapshot), the rows of the other tables aggregated as JSON arrays. The
/// outer error is the database's; the inner one a stored value that does not parse.
pub(super) async fn run(conn: &mut PgConnection, run_id: &str) -> Sql<Result<Option<RunRecord>>> {
    let row = sqlx::query(
        "SELECT r.run_id, r.workflow, r.version, r.status, r.input, r.error, r.created_at, r.started_at, \
         r.finished_at, r.owner, r.lease_expires_at, r.idempotency_key, \
         (SELECT coalesce(json_agg(json_build_array(t.task_id, t.position, t.status, t.attempts, \
            t.started_at, t.finished_at, t.output, t.error, t.traceback, t.reason, t.ready_at, \
            t.hook_errors, t.dependencies) ORDER BY t.position), '[]')::text \
          FROM run_tasks t WHERE t.run_id = r.run_id), \
         (SELECT coalesce(json_agg(json_build_array(e.task_id, e.attempt, e.status, e.started_at, \
            e.finished_at, e.error, e.traceback) ORDER BY e.task_id, e.attempt), '[]')::text \
          FROM earlier_attempts e WHERE e.run_id = r.run_id), \
         (SELECT coalesce(json_agg(json_build_array(v.at, v.kind, v.detail) ORDER BY v.event_id), '[]')::text \
          FROM run_events v WHERE v.run_id = r.run_id) \
         FROM runs r WHERE r.run_id = $1",
    )
    .bind(run_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(Ok(None)) };
    let input: String = row.try_get(4)?;
    let (tasks, earlier, events): (String, String, String) =
        (row.try_get(12)?, row.try_get(13)?, row.try_get(14)?);
    let mut run = RunRecord {
        input: Map::new(),
        run_id: row.try_get(0)?,
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
    };
    Ok(fill(&mut run, &input, &tasks, &earlier, &events).map(|()| Some(run)))
}

/// A task row as `run` aggregates it.
type TaskRow = (
    String,
    i64,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    String,
);

/// Parses what `run` read into `run`: its input, tasks (with their earlier attempts and
/// latest one) and events.
fn fill(run: &mut RunRecord, input: &str, tasks: &str, earlier: &str, events: &str) -> Result<()> {
    run.input = crate::store::parse_map(input, || format!("the input of run {}", run.run_id))?;
    let tasks: Vec<TaskRow> = serde_json::from_str(tasks)?;
    for (
        task_id,
        position,
        status,
        attempts,
        started_at,
        finished_at,
        output,
        error,
        traceback,
        reason,
        ready_at,
        hook_errors,
        dependencies,
    ) in tasks
    {
        let output = match output {
            Some(text) => Some(crate::store::parse_map(&text, || format!("the output of task {task_id}"))?),
            None => None,
        };
        run.tasks.push(TaskRecord {
            output,
            position: position as u32,
            status,
            attempts: attempts as u32,
            started_at,
            finished_at,
            error,
            traceback,
            reason,
            ready_at,
            hook_errors,
            dependencies: serde_json::from_str(&dependencies)?,
            history: Vec::new(),
            task_id,
        });
    }
    type AttemptRow = (String, i64, String, i64, i64, Option<String>, Option<String>);
    let earlier: Vec<AttemptRow> = serde_json::from_str(earlier)?;
    run.attach_attempts(
        earlier
            .into_iter()
            .map(|(task_id, attempt, status, started_at, finished_at, error, traceback)| {
                let attempt = attempt as u32;
                (task_id, AttemptRecord { attempt, status, started_at, finished_at, error, traceback })
            })
            .collect(),
    );
    run.events = serde_json::from_str(events)?;
    Ok(())
}

/// Runs matching `filter`, newest first, with their task counts (one statement).
pub(super) async fn run_summaries(conn: &mut PgConnection, filter: &RunFilter) -> Sql<Vec<RunSummary>> {
    let rows = sqlx::query(
        "SELECT r.run_id, r.workflow, r.version, r.status, r.error, r.created_at, r.started_at, \
         r.finished_at, r.idempotency_key, \
         (SELECT coalesce(json_agg(json_build_array(c.status, c.n))::text, '[]') FROM \
            (SELECT status, count(*) AS n FROM run_tasks t WHERE t.run_id = r.run_id GROUP BY status) c) \
         FROM runs r \
         WHERE ($1::text IS NULL OR r.workflow = $1) AND ($2::text IS NULL OR r.status = $2) \
         AND ($4::text IS NULL OR r.run_id = $4) \
         ORDER BY r.created_at DESC, r.run_id DESC LIMIT $3",
    )
    .bind(filter.workflow.as_deref())
    .bind(filter.status.as_deref())
    .bind(filter.limit as i64)
    .bind(filter.run_id.as_deref())
    .fetch_all(&mut *conn)
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
pub(super) async fn run_by_key(conn: &mut PgConnection, key: &str) -> Sql<Option<String>> {
    sqlx::query_scalar("SELECT run_id FROM runs WHERE idempotency_key = $1")
        .bind(key)
        .fetch_optional(&mut *conn)
        .await
}

/// The status of run `run_id`, if it exists.
pub(super) async fn run_status(conn: &mut PgConnection, run_id: &str) -> Sql<Option<String>> {
    sqlx::query_scalar("SELECT status FROM runs WHERE run_id = $1")
        .bind(run_id)
        .fetch_optional(&mut *conn)
        .await
}

/// The stored output (a JSON object's text) of completed task `task_id` of run `run_id`.
pub(super) async fn task_output(conn: &mut PgConnection, run_id: &str, task_id: &str) -> Sql<Option<String>> {
    sqlx::query_scalar("SELECT output FROM task_outputs WHERE run_id = $1 AND task_id = $2")
        .bind(run_id)
        .bind(task_id)
        .fetch_optional(&mut *conn)
        .await
}

/// Runs another engine may take over: unfinished ones whose owner is gone (queued runs
/// are claimed with `Writer::claim_queued`). An owner is gone when its lease expired on the database's clock, or
/// when its liveness lock (a session advisory lock its write connection holds, see
/// `write.rs`) is no longer held: its process died or lost its connection. Right after
/// the server restarted every engine is reconnecting, so for a grace period only
/// leases count. Oldest first, at most 1,000.
pub(super) async fn orphan_candidates(conn: &mut PgConnection, me: &str) -> Sql<Vec<OrphanCandidate>> {
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
    .fetch_all(&mut *conn)
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
pub(super) async fn has_queued(conn: &mut PgConnection, workflows: &[String]) -> Sql<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM runs WHERE status = 'queued' AND workflow = ANY($1))")
        .bind(workflows)
        .fetch_one(&mut *conn)
        .await
}

/// Runs owned by `owner` that someone asked to cancel.
pub(super) async fn cancel_requests(conn: &mut PgConnection, owner: &str) -> Sql<Vec<String>> {
    sqlx::query_scalar(
        "SELECT run_id FROM runs WHERE owner = $1 AND cancel_requested_at IS NOT NULL \
         AND status IN ('queued', 'running')",
    )
    .bind(owner)
    .fetch_all(&mut *conn)
    .await
}
