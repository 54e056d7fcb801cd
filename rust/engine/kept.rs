//! Runs kept for their waiters: the rows of each run this engine started, built from
//! the ops of the batches that committed them, so that a caller waiting for a run that
//! ended here gets it without reading it back from the database (on PostgreSQL, a round
//! trip and a query per run).
//!
//! A copy of committed rows, nothing more: an op is applied here only after its batch
//! committed, and a run whose rows this copy cannot follow exactly (adopted, planned
//! again, too big, lost to another owner) is not kept; its waiter reads the database as
//! before. Texts stay as the ops carry them (JSON is parsed by the caller, off the
//! scheduler's thread).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::errors::Result;
use crate::registry::WorkflowDef;
use crate::store::{parse_map, AttemptRecord, Op, RunRecord, TaskRecord};

/// The most a run kept while it runs may hold (its texts, plus a little per task,
/// attempt and event): a run past it is read from the database, like before.
const RUN_BUDGET: usize = 64 * 1024;
/// What a task, an attempt or an event costs besides its texts.
const ROW_COST: usize = 96;
/// Ended runs kept for a wait that has not come yet: at most this many...
const ENDED_RUNS: usize = 1024;
/// ...holding at most this many bytes; the oldest go first.
const ENDED_BYTES: usize = 8 * 1024 * 1024;

/// A task row as its run's ops left it.
struct KeptTask {
    task_id: Arc<str>,
    position: u32,
    dependencies: String,
    status: &'static str,
    attempts: u32,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    output: Option<String>,
    error: Option<String>,
    traceback: Option<String>,
    reason: Option<String>,
    ready_at: Option<i64>,
    hook_errors: Vec<String>,
}

/// A run's rows (the run, its tasks, earlier attempts and events) as its ops left them.
pub(crate) struct KeptRun {
    workflow: Arc<WorkflowDef>,
    run_id: Arc<str>,
    workflow_name: Arc<str>,
    version: Arc<str>,
    status: &'static str,
    input: String,
    error: Option<String>,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    owner: Option<Arc<str>>,
    idempotency_key: Option<String>,
    tasks: Vec<KeptTask>,
    earlier: Vec<(Arc<str>, AttemptRecord)>,
    events: Vec<(i64, &'static str, String)>,
    bytes: usize,
}

fn text_len(text: &Option<String>) -> usize {
    text.as_ref().map_or(0, String::len)
}

impl KeptRun {
    /// The run `op` (an `InsertRun` of this engine) creates, as that op stores it.
    fn new(workflow: Arc<WorkflowDef>, op: Op) -> Option<KeptRun> {
        let Op::InsertRun { run_id, workflow: name, version, input, owner, at, idempotency_key, .. } = op
        else {
            return None;
        };
        let owner = owner?;
        let bytes = input.len() + ROW_COST;
        (bytes <= RUN_BUDGET && workflow.graph.len() * ROW_COST <= RUN_BUDGET).then(|| KeptRun {
            workflow,
            run_id,
            workflow_name: name,
            version,
            status: "running",
            input,
            error: None,
            created_at: at,
            started_at: Some(at),
            finished_at: None,
            owner: Some(owner),
            idempotency_key,
            tasks: Vec::new(),
            earlier: Vec::new(),
            events: Vec::new(),
            bytes,
        })
    }

    /// The task row `task_id` names, if this run has it.
    fn task(&mut self, task_id: &str) -> Option<&mut KeptTask> {
        let position = self.workflow.graph.position(task_id)?;
        self.tasks.get_mut(position as usize).filter(|t| &*t.task_id == task_id)
    }

    /// Applies `op` as the stores do (`store/sqlite/write.rs`, and `cloacina_commit` in
    /// the PostgreSQL migrations). False when the copy cannot follow it, or has grown
    /// past its budget: the run is then no longer kept.
    fn apply(&mut self, op: Op) -> bool {
        match op {
            Op::InsertTask { task_id, position, dependencies, status, .. } => {
                if position as usize != self.tasks.len() {
                    return false;
                }
                self.bytes += ROW_COST + dependencies.len();
                self.tasks.push(KeptTask {
                    task_id,
                    position,
                    dependencies,
                    status,
                    attempts: 0,
                    started_at: None,
                    finished_at: None,
                    output: None,
                    error: None,
                    traceback: None,
                    reason: None,
                    ready_at: None,
                    hook_errors: Vec::new(),
                });
            }
            Op::StartTask { task_id, attempt, at, .. } => {
                let Some(task) = self.task(&task_id) else { return false };
                task.status = "running";
                task.attempts = attempt;
                task.started_at = Some(at);
                task.finished_at = None;
                task.ready_at = None;
            }
            Op::FinishTask { task_id, status, at, output, error, traceback, reason, .. } => {
                self.bytes += text_len(&output) + text_len(&error) + text_len(&traceback) + text_len(&reason);
                let Some(task) = self.task(&task_id) else { return false };
                task.status = status;
                task.output = output;
                task.error = error;
                task.traceback = traceback;
                task.finished_at = Some(at);
                task.reason = reason;
            }
            Op::RetryTask { task_id, attempt, started_at, at, ready_at, error, traceback, .. } => {
                self.bytes += ROW_COST + 2 * (error.len() + text_len(&traceback));
                let Some(task) = self.task(&task_id) else { return false };
                task.status = "ready";
                task.ready_at = Some(ready_at);
                task.error = Some(error.clone());
                task.traceback = traceback.clone();
                task.finished_at = Some(at);
                let attempt = AttemptRecord {
                    attempt,
                    status: "failed".into(),
                    started_at,
                    finished_at: at,
                    error: Some(error),
                    traceback,
                };
                self.earlier.push((task_id, attempt));
            }
            Op::AddHookError { task_id, entry, .. } => {
                self.bytes += entry.len();
                let Some(task) = self.task(&task_id) else { return false };
                task.hook_errors.push(entry);
            }
            Op::MarkTask { task_id, status, reason, at, .. } => {
                self.bytes += text_len(&reason);
                let Some(task) = self.task(&task_id) else { return false };
                task.status = status;
                task.reason = reason;
                task.finished_at = at.or(task.finished_at);
            }
            Op::FinishRun { status, error, at, .. } => {
                self.bytes += text_len(&error);
                self.status = status;
                self.error = error;
                self.finished_at = Some(at);
                self.owner = None;
            }
            Op::AddEvent { kind, detail, at, .. } => {
                self.bytes += ROW_COST + detail.len();
                self.events.push((at, kind, detail));
            }
            // Resuming and planning again happen to adopted runs, which are not kept;
            // a second insert would be a retried batch, which is not applied twice.
            Op::InsertRun { .. }
            | Op::ReopenRun { .. }
            | Op::ResetTask { .. }
            | Op::PlanTask { .. }
            | Op::SetRunVersion { .. } => return false,
            Op::RenewLeases { .. } => {}
        }
        self.bytes <= RUN_BUDGET
    }

    /// The run as a store's read returns it (`Store::run`). The lease is not kept: it
    /// is the database's business, and no caller of a run's end reads it.
    pub(crate) fn into_record(self) -> Result<RunRecord> {
        let run_id = self.run_id.to_string();
        let mut tasks = Vec::with_capacity(self.tasks.len());
        for t in self.tasks {
            let output = match t.output {
                Some(text) => Some(parse_map(&text, || format!("the output of task {}", t.task_id))?),
                None => None,
            };
            let hook_errors = (!t.hook_errors.is_empty()).then(|| format!("[{}]", t.hook_errors.join(",")));
            tasks.push(TaskRecord {
                task_id: t.task_id.to_string(),
                position: t.position,
                dependencies: serde_json::from_str(&t.dependencies)?,
                status: t.status.into(),
                attempts: t.attempts,
                started_at: t.started_at,
                finished_at: t.finished_at,
                output,
                error: t.error,
                traceback: t.traceback,
                reason: t.reason,
                ready_at: t.ready_at,
                hook_errors,
                history: Vec::new(),
            });
        }
        let mut record = RunRecord {
            input: parse_map(&self.input, || format!("the input of run {run_id}"))?,
            run_id,
            workflow: self.workflow_name.to_string(),
            version: self.version.to_string(),
            status: self.status.into(),
            error: self.error,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            owner: self.owner.map(|o| o.to_string()),
            lease_expires_at: None,
            idempotency_key: self.idempotency_key,
            tasks,
            events: self
                .events
                .into_iter()
                .map(|(at, kind, detail)| (at, kind.to_string(), Some(detail)))
                .collect(),
        };
        record.attach_attempts(self.earlier.into_iter().map(|(id, a)| (id.to_string(), a)).collect());
        Ok(record)
    }
}

/// The runs the scheduler keeps while they run (its thread only).
#[derive(Default)]
pub(crate) struct Keeper {
    runs: HashMap<Arc<str>, KeptRun>,
}

impl Keeper {
    /// Follows a committed op: a run this engine inserted (`workflow`, when it drives
    /// the run) starts being kept; an op of a kept run changes it.
    pub(crate) fn follow(&mut self, op: Op, workflow: impl FnOnce(&str) -> Option<Arc<WorkflowDef>>) {
        let Some(run_id) = op.run_id() else { return };
        if matches!(op, Op::InsertRun { .. }) && !self.runs.contains_key(run_id) {
            if let Some(kept) = workflow(run_id).and_then(|w| KeptRun::new(w, op)) {
                self.runs.insert(kept.run_id.clone(), kept);
            }
            return;
        }
        if let Some(kept) = self.runs.get_mut(run_id) {
            if !kept.apply(op) {
                let run_id = kept.run_id.clone();
                self.runs.remove(&run_id);
            }
        }
    }

    /// Stops keeping run `run_id`, handing over what was kept.
    pub(crate) fn take(&mut self, run_id: &str) -> Option<KeptRun> {
        self.runs.remove(run_id)
    }

    /// Keeps nothing any more (the engine closes or stopped).
    pub(crate) fn clear(&mut self) {
        self.runs.clear();
    }
}

/// Ended runs waiting for the caller that waits for them (shared with the engine's
/// callers). Bounded: a run nobody waits for is dropped once newer ones need the room,
/// and its waiter, if one comes, reads the database.
#[derive(Default)]
pub(crate) struct Ended {
    runs: HashMap<Arc<str>, KeptRun>,
    order: VecDeque<Arc<str>>,
    bytes: usize,
}

impl Ended {
    /// Keeps `run`, which ended and is committed, dropping the oldest past the bounds.
    pub(crate) fn put(&mut self, run: KeptRun) {
        self.bytes += run.bytes;
        self.order.push_back(run.run_id.clone());
        if let Some(old) = self.runs.insert(run.run_id.clone(), run) {
            self.bytes -= old.bytes;
        }
        while self.runs.len() > ENDED_RUNS || self.bytes > ENDED_BYTES {
            let Some(oldest) = self.order.pop_front() else { break };
            if let Some(old) = self.runs.remove(&oldest) {
                self.bytes -= old.bytes;
            }
        }
        if self.order.len() > 2 * ENDED_RUNS {
            // Ids of runs already taken: drop them from the order too.
            let runs = &self.runs;
            self.order.retain(|id| runs.contains_key(id));
        }
    }

    /// Whether run `run_id` ended here and is kept.
    pub(crate) fn holds(&self, run_id: &str) -> bool {
        self.runs.contains_key(run_id)
    }

    /// Hands over ended run `run_id`, if kept (a second wait reads the database).
    pub(crate) fn take(&mut self, run_id: &str) -> Option<KeptRun> {
        let run = self.runs.remove(run_id)?;
        self.bytes -= run.bytes;
        Some(run)
    }

    /// Drops everything kept (the engine closes).
    pub(crate) fn clear(&mut self) {
        self.runs.clear();
        self.order.clear();
        self.bytes = 0;
    }
}
