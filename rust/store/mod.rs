//! Persistence, the seam between the engine and a database: the records the engine
//! writes and reads, independent of the backend, and the two traits a backend
//! implements (`Store` for reads, `Writer` for the one connection an engine writes
//! through). Every write is a batch of `Op`s committed as one transaction. The engine
//! names no backend type; `sqlite/` is the embedded backend.

use std::collections::HashSet;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::context::{self, Map};
use crate::errors::{Error, Result};

pub mod postgres;
pub mod sqlite;

pub use postgres::{PostgresConfig, PostgresStore};
pub use sqlite::{Durability, SqliteConfig, SqliteStore};

/// A database holding runs, as the engine reads it. Reads take where they run
/// (`Reads`); the one `Writer` is taken by the engine that drives the store.
pub trait Store: Send + Sync + 'static {
    /// What the store is (a file path, ":memory:", a masked URL), for messages.
    fn label(&self) -> &str;

    /// The connection every write goes through, for the one engine driving this store
    /// (it commits batches on its scheduler's thread), whose owner id is `owner`. Once
    /// only.
    fn take_writer(&self, owner: &str) -> Result<Box<dyn Writer>>;

    /// Runs not final and not owned by `me`: candidates for recovery.
    fn orphan_candidates<'a>(&'a self, me: &'a str) -> BoxFuture<'a, Result<Vec<OrphanCandidate>>>;

    /// The run holding idempotency key `key`, if any.
    fn run_by_key<'a>(&'a self, key: &'a str, reads: Reads) -> BoxFuture<'a, Result<Option<String>>>;

    /// The database's schema version: its latest migration, which opening the store
    /// applied or found applied.
    fn schema_version(&self) -> i64;

    /// The status of run `run_id`, if it exists.
    fn run_status<'a>(&'a self, run_id: &'a str, reads: Reads) -> BoxFuture<'a, Result<Option<String>>>;

    /// The output (writes, a JSON object's text) of task `task_id` of run `run_id`, if
    /// it completed: how a value evicted from memory is read back.
    fn task_output<'a>(
        &'a self,
        run_id: &'a str,
        task_id: &'a str,
        reads: Reads,
    ) -> BoxFuture<'a, Result<Option<String>>>;

    /// Run `run_id` with its tasks, their attempts and its events, if it exists (one
    /// snapshot).
    fn run<'a>(&'a self, run_id: &'a str, reads: Reads) -> BoxFuture<'a, Result<Option<RunRecord>>>;

    /// Runs matching `filter`, newest first, as summaries (one snapshot, no contexts).
    fn run_summaries<'a>(
        &'a self,
        filter: &'a RunFilter,
        reads: Reads,
    ) -> BoxFuture<'a, Result<Vec<RunSummary>>>;

    /// Whether a queued run of one of `workflows` waits to be claimed (a read, before
    /// the write that claims).
    fn has_queued<'a>(&'a self, workflows: &'a [String]) -> BoxFuture<'a, Result<bool>>;

    /// Runs owned by `owner` that someone asked to cancel.
    fn cancel_requests<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<Vec<String>>>;

    /// Signalled when another process may have changed something this process waits
    /// for (a run queued or finished, a cancel requested): a hint to look again now. None
    /// when the store has no such signal (waits poll).
    fn changes(&self) -> Option<Arc<tokio::sync::Notify>> {
        None
    }

    /// How often to look for runs to take over, when the store tells a dead owner at
    /// once (its own liveness test, `OrphanCandidate::gone`); None: the engine's default
    /// pace, slower while idle.
    fn liveness_check(&self) -> Option<std::time::Duration> {
        None
    }

    /// How long the scheduler may wait for more results of running attempts before a
    /// commit, when commits are slow enough that recording several at once pays (a
    /// network round trip and the server's disk flush); None: commit at once.
    fn commit_gather(&self) -> Option<std::time::Duration> {
        None
    }

    /// Whether the store answers within microseconds (an embedded database), so that a
    /// caller expecting an answer may spin for it rather than sleep.
    fn answers_quickly(&self) -> bool {
        self.commit_gather().is_none()
    }

    /// Whether `insert_run` can commit a new run beside the writer; false: runs are
    /// submitted in the writer's batches.
    fn inserts_beside_writer(&self) -> bool {
        false
    }

    /// Commits the rows of a new run (its `Op::InsertRun` and `Op::InsertTask`s, in
    /// `ops`) on a connection of the store's own, beside the writer: for a submitter
    /// that would otherwise wait behind the writer's batch in flight. Only for a store
    /// that `inserts_beside_writer`.
    fn insert_run<'a>(&'a self, _ops: &'a [Op]) -> BoxFuture<'a, Result<Committed>> {
        Box::pin(async { Err(Error::Internal("this store commits new runs through its writer only".into())) })
    }

    /// Closes the read side (before the writer closes).
    fn close_readers(&self);

    /// Closes everything still open.
    fn close(&self) -> BoxFuture<'_, ()>;
}

/// The one connection an engine writes through, used synchronously by its scheduler's
/// thread (never a tokio worker). Each method is one transaction.
pub trait Writer: Send + 'static {
    /// Applies `ops` in order as one transaction. Ops that need ownership of a run in
    /// `verify` are applied only if `owner` still owns it (the others are reported
    /// `lost`); a new run whose idempotency key is taken is dropped with its rows.
    fn commit(&mut self, ops: &[Op], owner: &str, verify: &HashSet<Arc<str>>) -> Result<Committed>;

    /// Drives from now on run `run_id`, which its submitter committed for this engine
    /// through `Store::insert_run` (a writer that fences its runs starts fencing it).
    fn track(&mut self, _run_id: &Arc<str>) {}

    /// Takes over run `run_id` if its owner is still `expected_owner` (compare and
    /// set); an interrupted run becomes `running` again.
    fn claim_run(
        &mut self,
        run_id: &str,
        expected_owner: Option<&str>,
        owner: &str,
        lease_until: i64,
    ) -> Result<bool>;

    /// Marks a running run of a gone owner `interrupted` (once), recording the event.
    fn mark_interrupted(&mut self, run_id: &str, owner: Option<&str>, at: i64) -> Result<()>;

    /// Records a request to cancel run `run_id` for its owner to carry out; false when
    /// the run is unknown or final.
    fn request_cancel(&mut self, run_id: &str, at: i64) -> Result<bool>;

    /// Queues the failed or cancelled run `run_id` for an engine serving its workflow to
    /// resume: status `queued`, no owner, no error, and a `resume_requested` event, which
    /// tells the engine that claims it to resume it. False when the run is unknown or not
    /// failed or cancelled.
    fn request_resume(&mut self, run_id: &str, at: i64) -> Result<bool>;

    /// Deletes up to `limit` runs that finished before `before` (microseconds), oldest
    /// first, with every row of theirs; returns how many.
    fn purge(&mut self, before: i64, limit: usize) -> Result<usize>;

    /// Claims up to `limit` queued runs of the workflows named `workflows`, oldest first,
    /// for `owner` (status `running`, leased until `lease_until`); skips runs another
    /// engine is claiming at the same moment. Returns their ids.
    fn claim_queued(
        &mut self,
        workflows: &[String],
        limit: usize,
        owner: &str,
        lease_until: i64,
    ) -> Result<Vec<String>>;
}

/// What a commit did besides applying its ops.
#[derive(Debug, Default)]
pub struct Committed {
    /// Runs not inserted because their idempotency key was taken: (new id, existing id).
    pub duplicates: Vec<(Arc<str>, String)>,
    /// Runs whose ops were not applied because another runner owns them now.
    pub lost: Vec<Arc<str>>,
}

/// Where a store read runs when a future asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// On the thread polling the future, which may block (a caller waiting on its own
    /// thread, never a tokio worker): no hop to another thread.
    Inline,
    /// On a blocking thread of the runtime (for futures polled by tokio workers).
    Offloaded,
}

/// Microseconds since the Unix epoch, the unit of every stored time.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// One state change, written inside a batch transaction.
#[derive(Debug, Clone)]
pub enum Op {
    /// A new run: started by its owner, or queued (no owner) for an engine to claim.
    InsertRun {
        run_id: Arc<str>,
        workflow: Arc<str>,
        version: Arc<str>,
        input: String,
        owner: Option<Arc<str>>,
        at: i64,
        lease_until: i64,
        /// With a key, a run already holding it wins: this run and its rows are dropped
        /// and `commit` reports the existing run's id.
        idempotency_key: Option<String>,
    },
    /// Extends the lease of every running run of `owner`.
    RenewLeases { owner: Arc<str>, until: i64 },
    /// Appends to the run's event log.
    AddEvent { run_id: Arc<str>, kind: &'static str, detail: String, at: i64 },
    /// A final run runs again (resume): status running, owned by `owner`.
    ReopenRun { run_id: Arc<str>, owner: Arc<str>, lease_until: i64 },
    /// A task goes back to `pending` to run again (resume).
    ResetTask { run_id: Arc<str>, task_id: Arc<str> },
    /// A task's place in a run planned again (resume or recovery on a changed workflow).
    PlanTask { run_id: Arc<str>, task_id: Arc<str>, position: u32, dependencies: String },
    /// The workflow version a run follows (after it was planned again).
    SetRunVersion { run_id: Arc<str>, version: Arc<str> },
    /// One task row of a new run.
    InsertTask {
        run_id: Arc<str>,
        task_id: Arc<str>,
        position: u32,
        dependencies: String,
        status: &'static str,
    },
    /// An attempt starts: the task is `running`, owned by `owner`.
    StartTask { run_id: Arc<str>, task_id: Arc<str>, attempt: u32, owner: Arc<str>, at: i64 },
    /// The task's last attempt ended (`completed`, `failed`, or `skipped` by the body
    /// itself): the task row takes its outcome, and is that attempt's record too (its
    /// number and start came with `StartTask`).
    FinishTask {
        run_id: Arc<str>,
        task_id: Arc<str>,
        owner: Arc<str>,
        status: &'static str,
        at: i64,
        output: Option<String>,
        error: Option<String>,
        traceback: Option<String>,
        reason: Option<String>,
    },
    /// An attempt failed and the task will be tried again at `ready_at`; the attempt
    /// is recorded in `earlier_attempts`.
    RetryTask {
        run_id: Arc<str>,
        task_id: Arc<str>,
        attempt: u32,
        owner: Arc<str>,
        started_at: i64,
        at: i64,
        ready_at: i64,
        error: String,
        traceback: Option<String>,
    },
    /// A hook raised: `entry` is a JSON object appended to the task's `hook_errors`.
    AddHookError { run_id: Arc<str>, task_id: Arc<str>, entry: String },
    /// A task changes status without running (ready, skipped, upstream_failed, cancelled).
    MarkTask {
        run_id: Arc<str>,
        task_id: Arc<str>,
        status: &'static str,
        reason: Option<String>,
        at: Option<i64>,
    },
    /// The run reached a final status.
    FinishRun { run_id: Arc<str>, status: &'static str, error: Option<String>, at: i64 },
}

impl Op {
    /// Whether the op may only be applied by the run's owner: everything that drives
    /// a run (hook errors and events are records, harmless from anyone).
    pub fn needs_ownership(&self) -> bool {
        !matches!(
            self,
            Op::InsertRun { .. } | Op::AddHookError { .. } | Op::AddEvent { .. } | Op::RenewLeases { .. }
        )
    }

    /// The run the op writes to, if it is about one run.
    pub fn run_id(&self) -> Option<&str> {
        match self {
            Op::InsertRun { run_id, .. }
            | Op::InsertTask { run_id, .. }
            | Op::StartTask { run_id, .. }
            | Op::FinishTask { run_id, .. }
            | Op::RetryTask { run_id, .. }
            | Op::AddHookError { run_id, .. }
            | Op::MarkTask { run_id, .. }
            | Op::FinishRun { run_id, .. }
            | Op::AddEvent { run_id, .. }
            | Op::ReopenRun { run_id, .. }
            | Op::ResetTask { run_id, .. }
            | Op::PlanTask { run_id, .. }
            | Op::SetRunVersion { run_id, .. } => Some(run_id),
            Op::RenewLeases { .. } => None,
        }
    }
}

/// A task of a run, as stored.
#[derive(Debug, Clone)]
pub struct TaskRecord {
    pub task_id: String,
    pub position: u32,
    /// The ids it depends on, as the run was planned.
    pub dependencies: Vec<String>,
    pub status: String,
    pub attempts: u32,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub output: Option<Map>,
    pub error: Option<String>,
    pub traceback: Option<String>,
    pub reason: Option<String>,
    /// When a retry may start (microseconds), while one is scheduled.
    pub ready_at: Option<i64>,
    /// Errors raised by the task's hooks, as a JSON array.
    pub hook_errors: Option<String>,
    /// Every finished attempt, oldest first.
    pub history: Vec<AttemptRecord>,
}

/// One finished attempt of a task, as stored.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub status: String,
    pub started_at: i64,
    pub finished_at: i64,
    pub error: Option<String>,
    pub traceback: Option<String>,
}

/// A run, as stored, with its tasks in merge order.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub run_id: String,
    pub workflow: String,
    pub version: String,
    pub status: String,
    pub input: Map,
    pub error: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub owner: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub idempotency_key: Option<String>,
    pub tasks: Vec<TaskRecord>,
    /// The run's event log: `(at, kind, detail JSON)`, oldest first.
    pub events: Vec<(i64, String, Option<String>)>,
}

impl RunRecord {
    /// Fills the tasks' histories: `earlier` (task id, attempt) are the attempts followed
    /// by another one, as stored (oldest first per task); then each task's latest
    /// attempt, recorded in its row (`latest_attempt`). The tasks must be loaded.
    pub(crate) fn attach_attempts(&mut self, earlier: Vec<(String, AttemptRecord)>) {
        if !earlier.is_empty() {
            let index: std::collections::HashMap<String, usize> =
                self.tasks.iter().enumerate().map(|(i, t)| (t.task_id.clone(), i)).collect();
            for (task_id, attempt) in earlier {
                if let Some(&i) = index.get(&task_id) {
                    self.tasks[i].history.push(attempt);
                }
            }
        }
        for task in &mut self.tasks {
            if let Some(latest) = latest_attempt(task) {
                task.history.push(latest);
            }
        }
    }

    /// Takes out of the record the maps whose merge (later writes winning) is the run's
    /// context, in merge order: its input, then each completed task's writes.
    pub fn take_context_parts(&mut self) -> impl Iterator<Item = Map> + '_ {
        let input = std::mem::take(&mut self.input);
        let outputs = self.tasks.iter_mut().filter(|t| in_context(t)).filter_map(|t| t.output.take());
        std::iter::once(input).chain(outputs)
    }

    /// The run's context as one map: the same parts as `take_context_parts`, merged.
    pub fn context(&self) -> Map {
        context::fold(
            &self.input,
            self.tasks.iter().filter(|t| in_context(t)).filter_map(|t| t.output.as_ref()),
        )
    }
}

/// Whether `task`'s writes are part of its run's context (only a completed task's are).
fn in_context(task: &TaskRecord) -> bool {
    task.status == "completed"
}

/// A store's schema version: the latest of its migrations.
pub(crate) fn latest_migration(migrator: &sqlx::migrate::Migrator) -> i64 {
    migrator.iter().map(|m| m.version).max().unwrap_or(0)
}

/// A run as `list_runs` shows it: its row and how many of its tasks are in each
/// status; no context, task outputs or errors of tasks (read with `run`).
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub run_id: String,
    pub workflow: String,
    pub version: String,
    pub status: String,
    pub error: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub idempotency_key: Option<String>,
    /// `(status, number of tasks)`.
    pub task_counts: Vec<(String, u32)>,
}

/// A run that may need recovering: not final, not driven by the asking engine.
#[derive(Debug, Clone)]
pub struct OrphanCandidate {
    pub run_id: String,
    pub workflow: String,
    pub status: String,
    pub owner: Option<String>,
    pub lease_expires_at: Option<i64>,
    /// The store's verdict on the owner, when it can tell (PostgreSQL: its liveness lock
    /// and its lease on the database clock); None: the engine decides from the lease and
    /// the owner's process.
    pub gone: Option<bool>,
}

/// Which runs `list_runs` returns.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub workflow: Option<String>,
    pub status: Option<String>,
    /// One run only (a summary of it: its task counts, for progress displays).
    pub run_id: Option<String>,
    pub limit: u32,
}

/// The task's latest attempt, recorded in its row, once it finished (completed, failed,
/// or skipped by the body itself) and unless `earlier_attempts` holds it (files written
/// before migration 4, and a task skipped by its rule after `resume`).
/// The view `task_attempts` states the same rule in SQL; reading the task rows already
/// loaded here avoids querying that view (a union and a probe per task) on every read.
fn latest_attempt(task: &TaskRecord) -> Option<AttemptRecord> {
    if !matches!(task.status.as_str(), "completed" | "failed" | "skipped") || task.attempts == 0 {
        return None;
    }
    if task.history.last().is_some_and(|a| a.attempt >= task.attempts) {
        return None;
    }
    Some(AttemptRecord {
        attempt: task.attempts,
        status: task.status.clone(),
        started_at: task.started_at?,
        finished_at: task.finished_at?,
        error: task.error.clone(),
        traceback: task.traceback.clone(),
    })
}

/// A stored JSON object; `what` names it in the error if it is not one.
pub(crate) fn parse_map(text: &str, what: impl FnOnce() -> String) -> Result<Map> {
    match serde_json::from_str::<serde_json::Value>(text)? {
        serde_json::Value::Object(m) => Ok(m),
        _ => Err(Error::Database(format!("{} is not a JSON object", what()))),
    }
}

/// The runs a batch creates, and the other runs it drives (ops that need ownership):
/// the ones a writer checks are still its own.
pub(crate) fn batch_runs(ops: &[Op]) -> (HashSet<&str>, Vec<&str>) {
    let inserted: HashSet<&str> =
        ops.iter().filter(|op| matches!(op, Op::InsertRun { .. })).filter_map(Op::run_id).collect();
    let driven: HashSet<&str> = ops
        .iter()
        .filter(|op| op.needs_ownership())
        .filter_map(Op::run_id)
        .filter(|id| !inserted.contains(id))
        .collect();
    (inserted, driven.into_iter().collect())
}

/// True for a run status that will not change again.
pub fn is_final_run_status(status: &str) -> bool {
    matches!(status, "completed" | "failed" | "cancelled")
}
