//! The scheduler: one per engine, on a thread of its own, owning all run state and the
//! store's write connection. It drains every pending message, applies them in memory, claims ready
//! tasks for free slots, commits everything as one transaction (group commit), and only
//! then starts the claimed attempts, wakes waiters and calls hooks. A finishing task, a
//! retry falling due, a timeout or a cancellation each arrive as a message, so the next
//! batch starts at once: there is no polling on the scheduling path.

use std::collections::{HashMap, HashSet, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{mpsc, oneshot, watch};

use super::executor::{Done, HookCall, HookKind, Interrupt, Recall, RetryHint};
use super::kept::Keeper;
use super::state::{RuleFacts, RunState, TaskStatus};
use super::workers::{spin_until, FOLLOW_SPIN, SPIN};
use super::{lock, AdoptMode, CancelReason, Command, EngineConfig, Executor, Job, Outcome, Shared};
use crate::context::{Delta, Map};
use crate::duration::{micros_after, saturating};
use crate::errors::{Error, Result};
use crate::graph::{Graph, TaskSpec};
use crate::policy::TaskPolicy;
use crate::registry::{self, WorkflowDef};
use crate::rules::Verdict;
use crate::store::{now_micros, Committed, Op, RunRecord, Writer};

/// Most messages folded into one transaction.
const MAX_BATCH: usize = 4096;

/// How long closing waits for the executor's threads to leave what they run (attempts
/// are interrupted first; a body blocked outside Python is not waited for longer).
const DRAIN_LIMIT: Duration = Duration::from_secs(1);

/// Answers a submitter with the new run's id.
type SubmitReply = oneshot::Sender<Result<Arc<str>>>;

/// One attempt: run, task position, attempt number.
type AttemptKey = (Arc<str>, u32, u32);

pub(crate) struct Scheduler {
    shared: Arc<Shared>,
    /// The store's write connection, where batches are committed synchronously on the
    /// scheduler's own thread; None once closed.
    writer: Option<Box<dyn Writer>>,
    commands: mpsc::UnboundedSender<Command>,
    inbox: mpsc::UnboundedReceiver<Command>,
    executor: Arc<dyn Executor>,
    max_concurrency: usize,
    /// A submit-only engine (`max_concurrency` 0): it queues runs for other engines to
    /// claim and drives none itself.
    queue_only: bool,
    /// The longest wait for more results before a commit (`gather`); None: no wait.
    gather_limit: Option<Duration>,
    /// How long the last commit took.
    last_commit: Duration,
    /// Set by `Command::Drain`: no attempt starts any more.
    draining: bool,
    /// Answered once draining and no attempt runs.
    drained: Vec<oneshot::Sender<()>>,
    runs: HashMap<Arc<str>, RunState>,
    /// Ready tasks waiting for a slot, in the order they became ready.
    queue: VecDeque<(Arc<str>, u32)>,
    /// Attempts holding a slot. An attempt that timed out gives its slot back at once; a
    /// cancelled sync attempt keeps it until its thread returns.
    slots: HashSet<AttemptKey>,
    /// Slots lent by running attempts that wait for another run of this engine.
    lent: usize,
    /// Hooks called and not yet returned, per run.
    hooks_pending: HashMap<Arc<str>, u32>,
    /// Final runs whose hooks are still running: `run()` returns a run with its hooks'
    /// outcomes, so their waiters wake when the last hook returned.
    finishing: HashMap<Arc<str>, watch::Sender<bool>>,
    /// The rows of the runs this engine started, as committed: handed to their waiters
    /// when they end (`kept.rs`).
    kept: Keeper,
    closing: Vec<oneshot::Sender<()>>,
}

/// What a batch does once its transaction is committed.
#[derive(Default)]
struct Effects {
    accepted: Vec<(SubmitReply, Arc<str>)>,
    finished_runs: Vec<Arc<str>>,
    jobs: Vec<(Job, u32, i64, Option<f64>)>,
    /// Final runs whose last hook returned in this batch: their waiters wake once it is
    /// committed (with the hook's error, if any).
    released: Vec<Arc<str>>,
    /// Tasks that became ready in this batch (persisted as `ready` unless claimed).
    became_ready: Vec<(Arc<str>, u32)>,
    hooks: Vec<HookCall>,
    interrupts: Vec<(Arc<str>, Interrupt)>,
    timers: Vec<(Duration, Command)>,
    cancel_replies: Vec<(oneshot::Sender<bool>, bool)>,
    /// The lease this batch renews every run to, once committed.
    renewed_until: Option<i64>,
    /// Writes whose values leave memory once this batch is committed (see
    /// `RunState::retire`).
    evict: Vec<Arc<Delta>>,
}

/// How long before its lease expires a run's ownership is checked at every commit.
const LEASE_MARGIN_MICROS: i64 = 2_000_000;

impl Scheduler {
    pub(crate) fn new(
        shared: Arc<Shared>,
        commands: mpsc::UnboundedSender<Command>,
        inbox: mpsc::UnboundedReceiver<Command>,
        writer: Box<dyn Writer>,
        executor: Arc<dyn Executor>,
        config: EngineConfig,
    ) -> Scheduler {
        let gather_limit = shared.store.commit_gather();
        Scheduler {
            shared,
            writer: Some(writer),
            commands,
            inbox,
            executor,
            max_concurrency: config.max_concurrency.max(1),
            queue_only: config.max_concurrency == 0,
            gather_limit,
            last_commit: Duration::ZERO,
            draining: false,
            drained: Vec::new(),
            runs: HashMap::new(),
            queue: VecDeque::new(),
            slots: HashSet::new(),
            lent: 0,
            hooks_pending: HashMap::new(),
            finishing: HashMap::new(),
            kept: Keeper::default(),
            closing: Vec::new(),
        }
    }

    /// The scheduler thread's loop, until the engine closes or the store fails.
    pub(crate) fn run(mut self) {
        let mut ops: Vec<Op> = Vec::new();
        while let Some(first) = self.next_command() {
            let mut effects = Effects::default();
            self.handle_guarded(first, &mut ops, &mut effects);
            let mut handled = 1;
            while handled < MAX_BATCH {
                match self.inbox.try_recv() {
                    Ok(cmd) => self.handle_guarded(cmd, &mut ops, &mut effects),
                    Err(_) => break,
                }
                handled += 1;
            }
            self.gather(&mut handled, &mut ops, &mut effects);
            self.claim(&mut ops, &mut effects);
            for (run_id, position) in std::mem::take(&mut effects.became_ready) {
                if let Some(run) = self.runs.get(&run_id) {
                    let task = &run.tasks[position as usize];
                    if task.status == TaskStatus::Ready && task.not_before.is_none() {
                        ops.push(Op::MarkTask {
                            run_id: run_id.clone(),
                            task_id: task.id.clone(),
                            status: "ready",
                            reason: None,
                            at: None,
                        });
                    }
                }
            }
            let committed = match self.commit(&ops) {
                Ok(committed) => committed,
                Err(e) => {
                    self.fail(e, effects);
                    return;
                }
            };
            if !committed.duplicates.is_empty() {
                self.drop_duplicates(&committed.duplicates, &mut effects);
            }
            if !committed.lost.is_empty() {
                self.drop_lost(&committed.lost, &mut effects);
            }
            self.keep(&mut ops);
            self.shared.busy.store(
                !self.slots.is_empty() && self.closing.is_empty(),
                std::sync::atomic::Ordering::Relaxed,
            );
            if let Some(until) = effects.renewed_until.take() {
                for run in self.runs.values_mut() {
                    run.lease_until = run.lease_until.max(until);
                }
            }
            self.deliver(effects);
            if self.draining && self.slots.is_empty() {
                for reply in self.drained.drain(..) {
                    let _ = reply.send(());
                }
            }
            if !self.closing.is_empty() && self.slots.is_empty() {
                break;
            }
        }
        // Closing returns only once no thread of the executor still runs anything (the
        // tail of an attempt, a hook, an interrupt): a thread still in Python when the
        // interpreter exits would be killed inside it, which aborts the process.
        if !self.closing.is_empty() && !self.executor.drain(DRAIN_LIMIT) {
            log::warn!(
                "closing the runner: task threads were still busy after {} s (an attempt \
                 that timed out or was cancelled, or a hook, still running)",
                DRAIN_LIMIT.as_secs()
            );
        }
        // The file is closed (its write and checkpoint connections) before anyone hears
        // that the runner is: a caller may delete or move it as soon as close() returns.
        self.shared.store.close_readers();
        self.writer = None;
        // Closed: every waiter of an unfinished run learns it (its watch sender drops);
        // a final run whose hooks still run is final in the store, where waiters look.
        self.runs.clear();
        self.finishing.clear();
        self.kept.clear();
        lock(&self.shared.ended).clear();
        lock(&self.shared.watches).clear();
        for reply in self.closing.drain(..) {
            let _ = reply.send(());
        }
    }

    /// Group commit for a store whose commits are slow (a network round trip and a
    /// disk flush: `Store::commit_gather`): while attempts are still running, waits a
    /// little (half the last commit's time, at most the store's limit) for more of them
    /// to report, so that one commit records several. A chain (one attempt at a time)
    /// never waits: nothing else is running when its attempt reports, and neither does a
    /// batch that holds a submission, whose caller waits for this commit (runs started
    /// one after another each paid the gathering, about a third of their start).
    fn gather(&mut self, handled: &mut usize, ops: &mut Vec<Op>, effects: &mut Effects) {
        let Some(limit) = self.gather_limit else { return };
        if self.slots.is_empty() || !self.closing.is_empty() || !effects.accepted.is_empty() {
            return;
        }
        let deadline = tokio::time::Instant::now() + (self.last_commit / 2).min(limit);
        // Blocks on the inbox until the deadline (the runtime's timer wakes this thread):
        // polling would cost a system call every few microseconds.
        let runtime = tokio::runtime::Handle::current();
        while *handled < MAX_BATCH && !self.slots.is_empty() {
            let next = match self.inbox.try_recv() {
                Ok(cmd) => Some(cmd),
                Err(mpsc::error::TryRecvError::Disconnected) => return,
                Err(mpsc::error::TryRecvError::Empty) => {
                    runtime.block_on(tokio::time::timeout_at(deadline, self.inbox.recv())).ok().flatten()
                }
            };
            let Some(cmd) = next else { return };
            self.handle_guarded(cmd, ops, effects);
            *handled += 1;
            if !effects.accepted.is_empty() {
                return;
            }
        }
    }

    /// Waits for the next message. One is expected soon, so the thread spins a little
    /// before it sleeps: waking a sleeping thread costs more than a short task. That
    /// holds while attempts run, and also once the last one ended: a caller that has
    /// just had its run's result usually submits the next run at once (200 sequential
    /// runs of a 3-task chain: 27% faster per run than with a scheduler asleep at each
    /// submission). On a store with slow commits (`gather_limit`) it spins only for a
    /// single attempt (a chain's) or none: with several running, the time it would burn
    /// belongs to them and to the database server on the same machine.
    fn next_command(&mut self) -> Option<Command> {
        if self.slots.len() <= 1 || self.gather_limit.is_none() {
            let mut next = None;
            spin_until(SPIN, || match self.inbox.try_recv() {
                Ok(cmd) => {
                    next = Some(Some(cmd));
                    true
                }
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    next = Some(None);
                    true
                }
                Err(mpsc::error::TryRecvError::Empty) => false,
            });
            if let Some(next) = next {
                return next;
            }
        }
        self.inbox.blocking_recv()
    }

    /// Handles one message; an engine bug (a panic) is logged, never the end of the
    /// scheduler and of every run it drives.
    fn handle_guarded(&mut self, cmd: Command, ops: &mut Vec<Op>, effects: &mut Effects) {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| self.handle(cmd, ops, effects))) {
            log::error!("the scheduler caught an internal error and goes on: {}", panic_message(&panic));
        }
    }

    fn handle(&mut self, cmd: Command, ops: &mut Vec<Op>, effects: &mut Effects) {
        match cmd {
            Command::Submit { workflow, input, idempotency_key, reply } => {
                if !self.closing.is_empty() {
                    let _ = reply.send(Err(Error::Closed("the runner is closed".into())));
                    return;
                }
                match self.submit(workflow, input, idempotency_key, ops, effects) {
                    Ok(run_id) => effects.accepted.push((reply, run_id)),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::Inserted { run_id, workflow, input, at, mut rows, done, watch } => {
                if !self.closing.is_empty() {
                    // Committed, and left `running` for the next runner, like every run
                    // unfinished when the engine closes.
                    lock(&self.shared.watches).remove(&run_id);
                    return;
                }
                if let Some(writer) = self.writer.as_mut() {
                    writer.track(&run_id);
                }
                self.begin(run_id, workflow, input, at, (done, watch), ops, effects);
                self.keep(&mut rows);
            }
            Command::Finished { run_id, position, attempt, started_at, outcome } => {
                let held = self.slots.remove(&(run_id.clone(), position, attempt));
                if self.is_current(&run_id, position, attempt) {
                    self.record(&run_id, position, attempt, started_at, outcome.capped(), ops, effects);
                } else if held {
                    log::debug!(
                        "discarding the result of a stale attempt {attempt} of a task of run {run_id}"
                    );
                }
            }
            Command::TimedOut { run_id, position, attempt, started_at, seconds } => {
                if !self.is_current(&run_id, position, attempt) {
                    return;
                }
                self.slots.remove(&(run_id.clone(), position, attempt));
                let Some(run) = self.runs.get(&run_id) else {
                    return;
                };
                let task_id = run.tasks[position as usize].id.clone();
                let retry_on_timeout = registry::task(&task_id).is_none_or(|d| d.policy.retry_on_timeout);
                effects.interrupts.push((token(&run_id, &task_id, attempt), Interrupt::Timeout));
                let outcome = Outcome::Failed {
                    error: format!(
                        "TaskTimeout: task '{task_id}' timed out after {} s",
                        trim_seconds(seconds)
                    ),
                    traceback: None,
                    hint: if retry_on_timeout { RetryHint::Policy } else { RetryHint::Never },
                };
                self.record(&run_id, position, attempt, started_at, outcome, ops, effects);
            }
            Command::Wake { run_id, position } => {
                if let Some(run) = self.runs.get_mut(&run_id) {
                    let task = &mut run.tasks[position as usize];
                    if task.status == TaskStatus::Ready && task.not_before.take().is_some() {
                        self.queue.push_back((run_id, position));
                    }
                }
            }
            Command::Cancel { run_id, reason, reply } => {
                let found = self.cancel(&run_id, reason, ops, effects);
                if let Some(reply) = reply {
                    effects.cancel_replies.push((reply, found));
                }
            }
            Command::HookDone { run_id, task_id, kind, attempt, error } => {
                if let Some(error) = error {
                    log::warn!("the {} hook of task '{task_id}' (run {run_id}) raised: {error}", kind.name());
                    let entry = serde_json::json!({"hook": kind.name(), "attempt": attempt, "error": error});
                    ops.push(Op::AddHookError { run_id: run_id.clone(), task_id, entry: entry.to_string() });
                }
                let left = self.hooks_pending.get_mut(&run_id).map(|n| {
                    *n -= 1;
                    *n
                });
                if left == Some(0) {
                    self.hooks_pending.remove(&run_id);
                    if self.finishing.contains_key(&run_id) {
                        effects.released.push(run_id);
                    }
                }
            }
            Command::Heartbeat => {
                if !self.runs.is_empty() {
                    let until = micros_after(now_micros(), self.shared.lease);
                    ops.push(Op::RenewLeases { owner: self.shared.owner.clone(), until });
                    effects.renewed_until = Some(until);
                }
            }
            Command::Adopt { record, mode, reply } => {
                let result = self.adopt(*record, mode, ops, effects);
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                } else if let Err(e) = result {
                    log::warn!("recovering a run failed: {e}");
                }
            }
            Command::Shutdown { reply } => {
                if self.closing.is_empty() {
                    self.stop_running_attempts(ops, effects);
                }
                self.closing.push(reply);
            }
            Command::Lend { slots } => self.lent = self.lent.saturating_add_signed(slots),
            Command::Drain { reply } => {
                self.draining = true;
                self.drained.push(reply);
            }
            Command::Write(job) => match self.writer.as_mut() {
                Some(writer) => job(writer.as_mut()),
                None => log::warn!("a write arrived after the store was closed"),
            },
        }
    }

    fn is_current(&self, run_id: &Arc<str>, position: u32, attempt: u32) -> bool {
        self.runs.get(run_id).is_some_and(|run| {
            let task = &run.tasks[position as usize];
            task.status == TaskStatus::Running && task.attempts == attempt
        })
    }

    fn submit(
        &mut self,
        workflow: Arc<WorkflowDef>,
        input: Map,
        idempotency_key: Option<String>,
        ops: &mut Vec<Op>,
        effects: &mut Effects,
    ) -> Result<Arc<str>> {
        let run_id: Arc<str> = uuid::Uuid::now_v7().to_string().into();
        let now = now_micros();
        let owner = (!self.queue_only).then(|| self.shared.owner.clone());
        let lease_until = micros_after(now, self.shared.lease);
        ops.extend(new_run_ops(&workflow, &run_id, &input, owner, now, lease_until, idempotency_key)?);
        if self.queue_only {
            log::info!(
                "run {run_id} of workflow '{}' queued ({} tasks)",
                workflow.name,
                workflow.graph.len()
            );
            return Ok(run_id);
        }
        let (done, watch) = watch::channel(false);
        self.begin(run_id.clone(), workflow, input, now, (done, watch), ops, effects);
        Ok(run_id)
    }

    /// Starts driving a new run whose rows are committed (or are in this batch): its
    /// root tasks become ready, its timeout starts, its waiters can wait.
    #[allow(clippy::too_many_arguments)]
    fn begin(
        &mut self,
        run_id: Arc<str>,
        workflow: Arc<WorkflowDef>,
        input: Map,
        now: i64,
        (done, watch): (watch::Sender<bool>, watch::Receiver<bool>),
        ops: &mut Vec<Op>,
        effects: &mut Effects,
    ) {
        let graph = &workflow.graph;
        log::info!("run {run_id} of workflow '{}' started ({} tasks)", workflow.name, graph.len());
        let recall = Recall::new(self.shared.store.clone(), run_id.clone(), self.shared.recalled.clone());
        let mut run = RunState::new(run_id, workflow.clone(), input, done, recall);
        run.lease_until = micros_after(now, self.shared.lease);
        let roots: Vec<u32> = (0..graph.len() as u32).filter(|&p| graph.dependencies(p).is_empty()).collect();
        for position in roots {
            Self::settle(&mut run, position, now, ops, &mut self.queue, effects);
        }
        let timeout = workflow.timeout.map(|seconds| (seconds, seconds));
        self.install(run, watch, timeout, now, ops, effects);
    }

    /// Applies an attempt's outcome: the task row, a retry or its successors, the run.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        run_id: &Arc<str>,
        position: u32,
        attempt: u32,
        started_at: i64,
        outcome: Outcome,
        ops: &mut Vec<Op>,
        effects: &mut Effects,
    ) {
        let Some(run) = self.runs.get_mut(run_id) else {
            return;
        };
        let now = now_micros();
        let task_id = run.tasks[position as usize].id.clone();
        let def = registry::task(&task_id);
        match outcome {
            Outcome::Completed(delta) => {
                let output = serde_json::to_string(&delta).unwrap_or_else(|_| "{}".into());
                let delta = Delta::new(Some(task_id.clone()), delta);
                ops.push(Op::FinishTask {
                    run_id: run_id.clone(),
                    task_id: task_id.clone(),
                    owner: self.shared.owner.clone(),
                    status: "completed",
                    at: now,
                    output: Some(output),
                    error: None,
                    traceback: None,
                    reason: None,
                });
                log::debug!("task '{task_id}' of run {run_id} completed (attempt {attempt})");
                if let Some(def) = def.as_ref().filter(|d| d.body.has_hook(HookKind::Success)) {
                    let base = run.tasks[position as usize].input.clone().unwrap_or_else(|| run.base.clone());
                    effects.hooks.push(HookCall {
                        kind: HookKind::Success,
                        run_id: run_id.clone(),
                        task_id: task_id.clone(),
                        attempt,
                        error: None,
                        context: base.with(i64::from(position), &delta),
                        recall: run.recall.clone(),
                        body: def.body.clone(),
                    });
                }
                run.complete(position, delta);
            }
            Outcome::Failed { error, traceback, hint } => {
                let default_policy = TaskPolicy::default();
                let policy = def.as_ref().map_or(&default_policy, |d| &d.policy);
                let budget = policy.may_retry_after(attempt);
                let retry_in = match hint {
                    RetryHint::Never => None,
                    RetryHint::Policy if budget => Some(policy.delay(attempt)),
                    RetryHint::Requested(Some(seconds)) if budget => Some(saturating(seconds)),
                    RetryHint::Requested(None) if budget => Some(policy.delay(attempt)),
                    _ => None,
                };
                let error = match hint {
                    RetryHint::Requested(_) if retry_in.is_none() => {
                        format!(
                            "{error} (a retry was requested, but no retries are left: retries={})",
                            policy.retries
                        )
                    }
                    _ => error,
                };
                let input = run.tasks[position as usize].input.clone().unwrap_or_else(|| run.base.clone());
                if let Some(delay) = retry_in {
                    log::debug!("task '{task_id}' of run {run_id} failed (attempt {attempt}), retrying in {delay:?}: {error}");
                    let ready_at = micros_after(now, delay);
                    ops.push(Op::RetryTask {
                        run_id: run_id.clone(),
                        task_id: task_id.clone(),
                        attempt,
                        owner: self.shared.owner.clone(),
                        started_at,
                        at: now,
                        ready_at,
                        error: error.clone(),
                        traceback,
                    });
                    let task = &mut run.tasks[position as usize];
                    task.status = TaskStatus::Ready;
                    if delay.is_zero() {
                        self.queue.push_back((run_id.clone(), position));
                    } else {
                        task.not_before = Some(ready_at);
                        effects.timers.push((delay, Command::Wake { run_id: run_id.clone(), position }));
                    }
                    if let Some(def) = def.as_ref().filter(|d| d.body.has_hook(HookKind::Retry)) {
                        effects.hooks.push(HookCall {
                            kind: HookKind::Retry,
                            run_id: run_id.clone(),
                            task_id,
                            attempt,
                            error: Some(error),
                            context: input,
                            recall: run.recall.clone(),
                            body: def.body.clone(),
                        });
                    }
                    return;
                }
                log::debug!("task '{task_id}' of run {run_id} failed: {error}");
                ops.push(Op::FinishTask {
                    run_id: run_id.clone(),
                    task_id: task_id.clone(),
                    owner: self.shared.owner.clone(),
                    status: "failed",
                    at: now,
                    output: None,
                    error: Some(error.clone()),
                    traceback,
                    reason: None,
                });
                if let Some(def) = def.as_ref().filter(|d| d.body.has_hook(HookKind::Failure)) {
                    effects.hooks.push(HookCall {
                        kind: HookKind::Failure,
                        run_id: run_id.clone(),
                        task_id: task_id.clone(),
                        attempt,
                        error: Some(error.clone()),
                        context: input,
                        recall: run.recall.clone(),
                        body: def.body.clone(),
                    });
                }
                let task = &mut run.tasks[position as usize];
                task.status = TaskStatus::Failed;
                task.input = None;
                task.error = Some(error);
            }
            Outcome::Skipped { reason } => {
                log::debug!("task '{task_id}' of run {run_id} skipped itself: {reason}");
                ops.push(Op::FinishTask {
                    run_id: run_id.clone(),
                    task_id: task_id.clone(),
                    owner: self.shared.owner.clone(),
                    status: "skipped",
                    at: now,
                    output: None,
                    error: None,
                    traceback: None,
                    reason: Some(reason.clone()),
                });
                let task = &mut run.tasks[position as usize];
                task.status = TaskStatus::Skipped;
                task.input = None;
                task.reason = Some(reason.into());
            }
        }
        run.unfinished -= 1;
        run.retire(position, &mut effects.evict);
        Self::release_successors(run, position, now, ops, &mut self.queue, effects);
        if run.unfinished == 0 {
            Self::finalize(run, now, ops);
            effects.finished_runs.push(run_id.clone());
        }
    }

    /// Decides a task whose dependencies are all final by its trigger rule: ready, or
    /// final without running (`skipped` or `upstream_failed`, with the reason). Returns
    /// true when it is ready.
    fn decide(
        run: &mut RunState,
        position: u32,
        now: i64,
        ops: &mut Vec<Op>,
        queue: &mut VecDeque<(Arc<str>, u32)>,
        effects: &mut Effects,
    ) -> bool {
        let task_id = run.tasks[position as usize].id.clone();
        let def = registry::task(&task_id);
        let default_policy = TaskPolicy::default();
        let trigger = &def.as_ref().map_or(&default_policy, |d| &d.policy).trigger;
        let input = run.input_for(position);
        let verdict = trigger.verdict(&RuleFacts { run, position, context: &input });
        let task = &mut run.tasks[position as usize];
        let (status, label, reason) = match verdict {
            Verdict::Run => {
                task.status = TaskStatus::Ready;
                task.input = Some(input);
                queue.push_back((run.run_id.clone(), position));
                effects.became_ready.push((run.run_id.clone(), position));
                return true;
            }
            Verdict::Skip(reason) => (TaskStatus::Skipped, "skipped", reason),
            Verdict::UpstreamFailed(reason) => (TaskStatus::UpstreamFailed, "upstream_failed", reason),
        };
        log::debug!("task '{task_id}' of run {}: {label} ({reason})", run.run_id);
        task.status = status;
        task.reason = Some(reason.as_str().into());
        ops.push(Op::MarkTask {
            run_id: run.run_id.clone(),
            task_id,
            status: label,
            reason: Some(reason),
            at: Some(now),
        });
        run.pass_on(position, input);
        run.unfinished -= 1;
        run.retire(position, &mut effects.evict);
        false
    }

    /// Decides a task whose dependencies are all final and, if it does not run, goes on
    /// down the graph.
    fn settle(
        run: &mut RunState,
        position: u32,
        now: i64,
        ops: &mut Vec<Op>,
        queue: &mut VecDeque<(Arc<str>, u32)>,
        effects: &mut Effects,
    ) {
        if !Self::decide(run, position, now, ops, queue, effects) {
            Self::release_successors(run, position, now, ops, queue, effects);
        }
    }

    /// Decides every successor whose dependencies are now all final (and so on down the
    /// graph, through tasks that do not run).
    fn release_successors(
        run: &mut RunState,
        position: u32,
        now: i64,
        ops: &mut Vec<Op>,
        queue: &mut VecDeque<(Arc<str>, u32)>,
        effects: &mut Effects,
    ) {
        let workflow = run.workflow.clone();
        let graph = &workflow.graph;
        let mut stack = vec![position];
        while let Some(p) = stack.pop() {
            for &s in graph.successors(p) {
                let succ = &mut run.tasks[s as usize];
                if succ.status != TaskStatus::Pending {
                    continue;
                }
                succ.remaining -= 1;
                if succ.remaining > 0 {
                    continue;
                }
                if !Self::decide(run, s, now, ops, queue, effects) {
                    stack.push(s);
                }
            }
        }
    }

    fn finalize(run: &mut RunState, now: i64, ops: &mut Vec<Op>) {
        let failed = run.tasks.iter().find(|t| t.status == TaskStatus::Failed);
        let (status, error) = match failed {
            Some(t) => (
                "failed",
                Some(format!("task '{}' failed: {}", t.id, t.error.as_deref().unwrap_or("unknown error"))),
            ),
            None => ("completed", None),
        };
        match &error {
            Some(error) => {
                log::info!("run {} of workflow '{}' failed: {error}", run.run_id, run.workflow.name)
            }
            None => log::info!("run {} of workflow '{}' completed", run.run_id, run.workflow.name),
        }
        ops.push(Op::FinishRun { run_id: run.run_id.clone(), status, error, at: now });
    }

    /// Cancels a run this engine drives: pending and ready tasks become `cancelled`,
    /// running ones too (their bodies are interrupted, and their slots are free at once;
    /// a body that cannot be stopped finishes in the background, its result discarded),
    /// and the run ends at once.
    fn cancel(
        &mut self,
        run_id: &Arc<str>,
        reason: CancelReason,
        ops: &mut Vec<Op>,
        effects: &mut Effects,
    ) -> bool {
        let Some(run) = self.runs.get_mut(run_id) else {
            return false;
        };
        let now = now_micros();
        let why = match reason {
            CancelReason::User => "the run was cancelled".to_string(),
            CancelReason::Timeout(s) => format!("the run timed out after {} s", trim_seconds(s)),
        };
        log::info!("run {run_id} of workflow '{}': {why}", run.workflow.name);
        for (position, task) in run.tasks.iter_mut().enumerate() {
            match task.status {
                TaskStatus::Pending | TaskStatus::Ready | TaskStatus::Running => {
                    if task.status == TaskStatus::Running {
                        // Stopped where it runs; its slot is free at once.
                        effects.interrupts.push((token(run_id, &task.id, task.attempts), Interrupt::Cancel));
                        self.slots.remove(&(run_id.clone(), position as u32, task.attempts));
                    }
                    task.status = TaskStatus::Cancelled;
                    ops.push(Op::MarkTask {
                        run_id: run_id.clone(),
                        task_id: task.id.clone(),
                        status: "cancelled",
                        reason: Some(why.clone()),
                        at: Some(now),
                    });
                }
                _ => {}
            }
        }
        let (status, error) = match reason {
            CancelReason::User => ("cancelled", None),
            CancelReason::Timeout(_) => ("failed", Some(why)),
        };
        ops.push(Op::FinishRun { run_id: run_id.clone(), status, error, at: now });
        run.unfinished = 0;
        effects.finished_runs.push(run_id.clone());
        true
    }

    /// Closing: the attempts running now are interrupted instead of waited for, and the
    /// runs this engine drives are released (their lease ends now), so that a runner
    /// opened later, here or in another process, continues them at once. Their
    /// interrupted attempts then count as lost, as after a crash.
    fn stop_running_attempts(&mut self, ops: &mut Vec<Op>, effects: &mut Effects) {
        for (run_id, position, attempt) in self.slots.drain() {
            if let Some(run) = self.runs.get(&run_id) {
                let task_id = &run.tasks[position as usize].id;
                effects.interrupts.push((token(&run_id, task_id, attempt), Interrupt::Cancel));
            }
        }
        if !self.runs.is_empty() {
            ops.push(Op::RenewLeases { owner: self.shared.owner.clone(), until: 0 });
        }
    }

    /// Claims ready tasks for the free slots: each becomes `running` in this batch. A
    /// task waiting for a run of this engine lends its slot to it (`Command::Lend`).
    fn claim(&mut self, ops: &mut Vec<Op>, effects: &mut Effects) {
        while self.slots.len() < self.max_concurrency.saturating_add(self.lent)
            && self.closing.is_empty()
            && !self.draining
        {
            let Some((run_id, position)) = self.queue.pop_front() else {
                break;
            };
            let Some(run) = self.runs.get_mut(&run_id) else {
                continue;
            };
            let task = &run.tasks[position as usize];
            if task.status != TaskStatus::Ready || task.not_before.is_some() {
                continue;
            }
            let task_id = task.id.clone();
            let Some(def) = registry::task(&task_id) else {
                let attempt = task.attempts + 1;
                run.tasks[position as usize].attempts = attempt;
                run.tasks[position as usize].status = TaskStatus::Running;
                let error = format!("task '{task_id}' is not defined in this process");
                let outcome = Outcome::Failed { error, traceback: None, hint: RetryHint::Never };
                self.record(&run_id, position, attempt, now_micros(), outcome, ops, effects);
                continue;
            };
            let input = match &run.tasks[position as usize].input {
                Some(input) => input.clone(),
                None => {
                    let input = run.input_for(position);
                    run.tasks[position as usize].input = Some(input.clone());
                    input
                }
            };
            let now = now_micros();
            let task = &mut run.tasks[position as usize];
            task.status = TaskStatus::Running;
            task.attempts += 1;
            let attempt = task.attempts;
            ops.push(Op::StartTask {
                run_id: run_id.clone(),
                task_id: task_id.clone(),
                attempt,
                owner: self.shared.owner.clone(),
                at: now,
            });
            self.slots.insert((run_id.clone(), position, attempt));
            let quick = worth_following(self.last_commit, self.slots.len());
            let followed = quick
                && run.workflow.graph.successors(position).iter().any(|&s| {
                    let successor = &run.tasks[s as usize];
                    successor.status == TaskStatus::Pending && successor.remaining == 1
                });
            let job = Job {
                token: token(&run_id, &task_id, attempt),
                run_id,
                task_id,
                attempt,
                body: def.body.clone(),
                input,
                recall: run.recall.clone(),
                followed,
            };
            effects.jobs.push((job, position, now, def.policy.timeout));
        }
    }

    /// Runs whose ownership the commit must check: those whose committed lease is near
    /// its end (only then could another runner have taken one over).
    fn runs_to_verify(&self, ops: &[Op]) -> HashSet<Arc<str>> {
        let horizon = now_micros() + LEASE_MARGIN_MICROS;
        let mut verify = HashSet::new();
        for op in ops.iter().filter(|op| op.needs_ownership()) {
            let Some(run_id) = op.run_id() else { continue };
            match self.runs.get_key_value(run_id) {
                Some((_, run)) if run.lease_until > horizon => {}
                Some((key, _)) => {
                    verify.insert(key.clone());
                }
                None => {
                    verify.insert(Arc::from(run_id));
                }
            }
        }
        verify
    }

    /// Commits a batch, retrying a failed commit a few times (blocking this thread, which
    /// nothing else runs on while a batch is pending).
    fn commit(&mut self, ops: &[Op]) -> Result<Committed> {
        if ops.is_empty() {
            return Ok(Committed::default());
        }
        let verify = self.runs_to_verify(ops);
        let mut delay = Duration::from_millis(20);
        let mut attempt = 0;
        loop {
            let writer = self.writer.as_mut().ok_or_else(|| Error::Closed("the store is closed".into()))?;
            let started = std::time::Instant::now();
            match writer.commit(ops, &self.shared.owner, &verify) {
                Ok(committed) => {
                    self.last_commit = started.elapsed();
                    return Ok(committed);
                }
                Err(e) if attempt < 5 => {
                    log::warn!("committing {} changes failed, retrying: {e}", ops.len());
                    attempt += 1;
                    std::thread::sleep(delay);
                    delay *= 2;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Follows the ops of a committed batch (emptying `ops`): the runs this engine
    /// started are kept as committed, for their waiters (`kept.rs`).
    fn keep(&mut self, ops: &mut Vec<Op>) {
        let runs = &self.runs;
        for op in ops.drain(..) {
            self.kept.follow(op, |run_id| runs.get(run_id).map(|run| run.workflow.clone()));
        }
    }

    /// Runs whose idempotency key was already taken were not inserted: forget them,
    /// give back their slots, and answer their submitters with the existing run.
    fn drop_duplicates(&mut self, duplicates: &[(Arc<str>, String)], effects: &mut Effects) {
        for (run_id, existing) in duplicates {
            self.runs.remove(run_id);
            lock(&self.shared.watches).remove(run_id);
            self.slots.retain(|(r, _, _)| r != run_id);
            effects.jobs.retain(|(job, ..)| &job.run_id != run_id);
            effects.finished_runs.retain(|r| r != run_id);
            effects.hooks.retain(|h| &h.run_id != run_id);
            for (_, accepted) in effects.accepted.iter_mut() {
                if accepted == run_id {
                    *accepted = existing.as_str().into();
                }
            }
        }
    }

    /// Runs another runner took over (this engine's lease had expired, say because the
    /// process was paused): nothing of this batch was written for them. Forget them;
    /// attempts still running here finish and are discarded. Waiters follow the run in
    /// the store.
    fn drop_lost(&mut self, lost: &[Arc<str>], effects: &mut Effects) {
        for run_id in lost {
            log::warn!("run {run_id} was taken over by another runner (this runner's lease expired)");
            self.runs.remove(run_id);
            self.kept.take(run_id);
            lock(&self.shared.watches).remove(run_id);
            for (job, position, ..) in effects.jobs.iter().filter(|(job, ..)| &job.run_id == run_id) {
                self.slots.remove(&(run_id.clone(), *position, job.attempt));
            }
            effects.jobs.retain(|(job, ..)| &job.run_id != run_id);
            effects.finished_runs.retain(|r| r != run_id);
            effects.hooks.retain(|h| &h.run_id != run_id);
            effects.timers.retain(|(_, cmd)| !cmd.is_about(run_id));
        }
    }

    /// Takes over a run read from the store (already claimed for this engine):
    /// `Recover` continues it after its owner died (an attempt that was running is
    /// recorded as interrupted and tried again); `Resume` also runs its failed,
    /// `upstream_failed` and cancelled tasks again, and decides its skipped ones anew.
    /// Completed tasks keep their outputs and never run again.
    ///
    /// When the workflow's current definition differs from the run's (its version), the
    /// run is planned again on the current definition: tasks still in it keep what they
    /// did, new tasks run, tasks no longer in it are skipped with that reason unless they
    /// completed (a completed one keeps its writes, merged before every current task's),
    /// and a `version_mismatch` event records the change.
    fn adopt(
        &mut self,
        record: RunRecord,
        mode: AdoptMode,
        ops: &mut Vec<Op>,
        effects: &mut Effects,
    ) -> Result<()> {
        let run_id: Arc<str> = record.run_id.as_str().into();
        if self.runs.contains_key(&run_id) {
            return Err(Error::Task(format!("run {run_id} is already being driven by this runner")));
        }
        // Kept from when it last ended here: it runs again, so that end is over.
        lock(&self.shared.ended).take(&run_id);
        let now = now_micros();
        let current = registry::current_workflow(&record.workflow).ok();
        let replan = current.as_ref().filter(|c| c.graph.version() != record.version);
        let stored_ids: HashSet<&str> = record.tasks.iter().map(|t| t.task_id.as_str()).collect();
        let (graph, added, removed) = match replan {
            None => {
                let specs: Vec<TaskSpec> = record
                    .tasks
                    .iter()
                    .map(|t| TaskSpec {
                        id: t.task_id.clone(),
                        dependencies: t.dependencies.clone(),
                        fingerprint: String::new(),
                    })
                    .collect();
                let graph = Graph::build(&record.workflow, &specs)?;
                if graph.ids().iter().zip(&record.tasks).any(|(id, t)| *id != t.task_id) {
                    return Err(Error::Database(format!(
                        "run {run_id}: its stored tasks are not in a consistent order"
                    )));
                }
                (graph, Vec::new(), Vec::new())
            }
            Some(current) => {
                // The tasks the current plan no longer has, placed first (a completed
                // one keeps its writes, which the current tasks' writes then override),
                // then the current plan in its order.
                let now_graph = &current.graph;
                let removed: Vec<String> = record
                    .tasks
                    .iter()
                    .filter(|t| now_graph.position(&t.task_id).is_none())
                    .map(|t| t.task_id.clone())
                    .collect();
                let mut specs: Vec<TaskSpec> = removed
                    .iter()
                    .map(|id| TaskSpec {
                        id: id.clone(),
                        dependencies: Vec::new(),
                        fingerprint: String::new(),
                    })
                    .collect();
                specs.extend((0..now_graph.len() as u32).map(|p| TaskSpec {
                    id: now_graph.id(p).to_string(),
                    dependencies:
                        now_graph.dependencies(p).iter().map(|&d| now_graph.id(d).to_string()).collect(),
                    fingerprint: String::new(),
                }));
                let added: Vec<String> = (0..now_graph.len() as u32)
                    .map(|p| now_graph.id(p))
                    .filter(|id| !stored_ids.contains(id))
                    .map(str::to_string)
                    .collect();
                (Graph::build(&record.workflow, &specs)?, added, removed)
            }
        };
        let timeout = current.as_ref().and_then(|w| w.timeout);
        let workflow = Arc::new(registry::unregistered_workflow(&record.workflow, graph, timeout));
        let (done, watch) = watch::channel(false);
        let recall = Recall::new(self.shared.store.clone(), run_id.clone(), self.shared.recalled.clone());
        let mut run = RunState::new(run_id.clone(), workflow.clone(), record.input.clone(), done, recall);
        run.lease_until = record.lease_expires_at.unwrap_or(0);
        let reopen = matches!(mode, AdoptMode::Resume);
        let mut interrupted = Vec::new();
        // The attempt that was running belonged to the previous owner.
        let lost_owner: Arc<str> = record.owner.as_deref().unwrap_or("unknown").into();
        let mut reset = Vec::new();
        if let Some(current) = replan {
            for (position, task) in run.tasks.iter_mut().enumerate() {
                let graph = &workflow.graph;
                let deps: Vec<&str> =
                    graph.dependencies(position as u32).iter().map(|&d| graph.id(d)).collect();
                let dependencies = serde_json::to_string(&deps).unwrap_or_else(|_| "[]".into());
                if stored_ids.contains(&*task.id) {
                    ops.push(Op::PlanTask {
                        run_id: run_id.clone(),
                        task_id: task.id.clone(),
                        position: position as u32,
                        dependencies,
                    });
                } else {
                    task.status = TaskStatus::Pending; // new: decided by its rule below
                    ops.push(Op::InsertTask {
                        run_id: run_id.clone(),
                        task_id: task.id.clone(),
                        position: position as u32,
                        dependencies,
                        status: "pending",
                    });
                }
            }
            ops.push(Op::SetRunVersion { run_id: run_id.clone(), version: current.graph.version().into() });
            let detail = serde_json::json!({
                "from": record.version,
                "to": current.graph.version(),
                "added_tasks": added,
                "removed_tasks": removed,
            });
            ops.push(Op::AddEvent {
                run_id: run_id.clone(),
                kind: "version_mismatch",
                detail: detail.to_string(),
                at: now,
            });
            log::info!(
                "run {run_id} of workflow '{}' is planned again on its current definition (version {} -> {})",
                record.workflow,
                record.version,
                current.graph.version()
            );
        }
        let gone = |id: &str| replan.is_some() && removed.iter().any(|r| r == id);
        for t in &record.tasks {
            let Some(position) = workflow.graph.position(&t.task_id) else { continue };
            let position = position as usize;
            let task = &mut run.tasks[position];
            task.attempts = t.attempts;
            task.status = match t.status.as_str() {
                "completed" => {
                    task.delta =
                        Some(Delta::new(Some(task.id.clone()), t.output.clone().unwrap_or_default()));
                    TaskStatus::Completed
                }
                _ if gone(&t.task_id) => {
                    // Not part of the plan any more: whatever it did (its attempts stay
                    // in its history), it is skipped, and fails nothing.
                    if t.attempts > 0 {
                        ops.push(Op::ResetTask { run_id: run_id.clone(), task_id: task.id.clone() });
                    }
                    let reason =
                        format!("task '{}' is no longer in workflow '{}'", t.task_id, record.workflow);
                    ops.push(Op::MarkTask {
                        run_id: run_id.clone(),
                        task_id: task.id.clone(),
                        status: "skipped",
                        reason: Some(reason.clone()),
                        at: Some(now),
                    });
                    task.reason = Some(reason.into());
                    TaskStatus::Skipped
                }
                "failed" | "upstream_failed" | "skipped" | "cancelled" if reopen => {
                    reset.push(position as u32);
                    ops.push(Op::ResetTask { run_id: run_id.clone(), task_id: task.id.clone() });
                    TaskStatus::Pending
                }
                "failed" => {
                    task.error = t.error.clone();
                    TaskStatus::Failed
                }
                "skipped" => TaskStatus::Skipped,
                "upstream_failed" => {
                    task.reason = t.reason.as_deref().map(Arc::from);
                    TaskStatus::UpstreamFailed
                }
                "cancelled" => TaskStatus::Cancelled,
                "running" => {
                    interrupted.push(t.task_id.clone());
                    ops.push(Op::RetryTask {
                        run_id: run_id.clone(),
                        task_id: task.id.clone(),
                        attempt: t.attempts.max(1),
                        owner: lost_owner.clone(),
                        started_at: t.started_at.unwrap_or(now),
                        at: now,
                        ready_at: now,
                        error: "interrupted: the process running this attempt stopped".into(),
                        traceback: None,
                    });
                    TaskStatus::Ready
                }
                "ready" => {
                    if let Some(at) = t.ready_at.filter(|&at| at > now) {
                        task.not_before = Some(at);
                        let delay = Duration::from_micros((at - now) as u64);
                        effects.timers.push((
                            delay,
                            Command::Wake { run_id: run_id.clone(), position: position as u32 },
                        ));
                    }
                    TaskStatus::Ready
                }
                _ => TaskStatus::Pending,
            };
        }
        // What is left must still be defined here (the workflow may be undefined, or
        // broken by an edit, in this process: the stored plan is then followed).
        let missing: Vec<String> = run
            .tasks
            .iter()
            .filter(|t| t.status.upstream().is_none())
            .filter(|t| registry::task(&t.id).is_none())
            .map(|t| t.id.to_string())
            .collect();
        let current_version = current.as_ref().map(|w| w.graph.version().to_string());
        if replan.is_none() && current_version.as_deref() != Some(record.version.as_str()) {
            let detail =
                serde_json::json!({"from": record.version, "to": current_version, "missing_tasks": missing});
            ops.push(Op::AddEvent {
                run_id: run_id.clone(),
                kind: "version_mismatch",
                detail: detail.to_string(),
                at: now,
            });
        }
        if !missing.is_empty() {
            let error = format!(
                "cannot continue run {run_id}: workflow '{}' changed (version {} -> {}) and no longer defines task(s) {}",
                record.workflow,
                record.version,
                current_version.as_deref().unwrap_or("none"),
                missing.join(", ")
            );
            for task in run.tasks.iter_mut() {
                if matches!(task.status, TaskStatus::Pending | TaskStatus::Ready) {
                    task.status = TaskStatus::Cancelled;
                    ops.push(Op::MarkTask {
                        run_id: run_id.clone(),
                        task_id: task.id.clone(),
                        status: "cancelled",
                        reason: Some("the workflow no longer defines what is left".into()),
                        at: Some(now),
                    });
                }
            }
            if reopen {
                ops.push(Op::ReopenRun {
                    run_id: run_id.clone(),
                    owner: self.shared.owner.clone(),
                    lease_until: now,
                });
            }
            ops.push(Op::FinishRun {
                run_id: run_id.clone(),
                status: "failed",
                error: Some(error.clone()),
                at: now,
            });
            return Err(Error::Workflow(error));
        }
        let kind = match mode {
            AdoptMode::Resume => "resumed",
            AdoptMode::Recover => "recovered",
            AdoptMode::Claim => "claimed",
        };
        let detail = serde_json::json!({
            "owner": self.shared.owner.as_ref(),
            "previous_owner": record.owner,
            "interrupted_tasks": interrupted,
            "rerun_tasks": reset.iter().map(|&p| run.tasks[p as usize].id.to_string()).collect::<Vec<_>>(),
        });
        ops.push(Op::AddEvent { run_id: run_id.clone(), kind, detail: detail.to_string(), at: now });
        if reopen {
            let lease_until = micros_after(now, self.shared.lease);
            ops.push(Op::ReopenRun { run_id: run_id.clone(), owner: self.shared.owner.clone(), lease_until });
        }
        // Count what is left, queue what is ready, then decide tasks whose inputs are final.
        let graph = &workflow.graph;
        run.unfinished = 0;
        for position in 0..graph.len() as u32 {
            let status = run.tasks[position as usize].status;
            if status.upstream().is_some() {
                continue; // final
            }
            run.unfinished += 1;
            let remaining = graph
                .dependencies(position)
                .iter()
                .filter(|&&d| run.tasks[d as usize].status.upstream().is_none())
                .count() as u32;
            run.tasks[position as usize].remaining = remaining;
            if status == TaskStatus::Ready && run.tasks[position as usize].not_before.is_none() {
                self.queue.push_back((run_id.clone(), position));
            }
        }
        // Completed tasks no live task depends on directly: their writes stay in the
        // database only.
        for position in 0..graph.len() as u32 {
            let left = graph
                .successors(position)
                .iter()
                .filter(|&&s| run.tasks[s as usize].status.upstream().is_none())
                .count() as u32;
            run.tasks[position as usize].successors_left = left;
            if left == 0 {
                effects.evict.extend(run.evictable(position));
            }
        }
        for position in 0..graph.len() as u32 {
            let task = &run.tasks[position as usize];
            if task.status == TaskStatus::Pending && task.remaining == 0 {
                Self::settle(&mut run, position, now, ops, &mut self.queue, effects);
            }
        }
        let timeout = match (workflow.timeout, record.started_at) {
            (Some(seconds), Some(started)) => {
                Some((seconds, (seconds - (now - started) as f64 / 1e6).max(0.0)))
            }
            _ => None,
        };
        log::info!("{kind} run {run_id} of workflow '{}'", record.workflow);
        self.install(run, watch, timeout, now, ops, effects);
        Ok(())
    }

    /// Makes `run` one this engine drives: arms its workflow timeout (`(total, left)`
    /// seconds), lets waiters find it, and finalizes it at once if nothing is left.
    fn install(
        &mut self,
        mut run: RunState,
        watch: watch::Receiver<bool>,
        timeout: Option<(f64, f64)>,
        now: i64,
        ops: &mut Vec<Op>,
        effects: &mut Effects,
    ) {
        let run_id = run.run_id.clone();
        if let Some((seconds, left)) = timeout {
            let cmd = Command::Cancel {
                run_id: run_id.clone(),
                reason: CancelReason::Timeout(seconds),
                reply: None,
            };
            effects.timers.push((saturating(left), cmd));
        }
        lock(&self.shared.watches).insert(run_id.clone(), watch);
        self.shared.activity.notify_one();
        if run.unfinished == 0 {
            Self::finalize(&mut run, now, ops);
            effects.finished_runs.push(run_id.clone());
        }
        self.runs.insert(run_id, run);
    }

    /// After a commit: answer submitters, start attempts and timers, interrupt, wake
    /// waiters of final runs, call hooks.
    fn deliver(&mut self, effects: Effects) {
        for delta in &effects.evict {
            delta.evict();
        }
        for (reply, run_id) in effects.accepted {
            let _ = reply.send(Ok(run_id));
        }
        for (job, position, started_at, timeout) in effects.jobs {
            if let Some(seconds) = timeout {
                let cmd = Command::TimedOut {
                    run_id: job.run_id.clone(),
                    position,
                    attempt: job.attempt,
                    started_at,
                    seconds,
                };
                self.after(saturating(seconds), cmd);
            }
            self.spawn(job, position, started_at);
        }
        for (delay, cmd) in effects.timers {
            self.after(delay, cmd);
        }
        for (token, why) in effects.interrupts {
            self.executor.interrupt(token, why);
        }
        for hook in &effects.hooks {
            *self.hooks_pending.entry(hook.run_id.clone()).or_default() += 1;
        }
        // An ended run is kept for its waiters before its watch goes: a waiter that
        // finds no watch finds the run kept, or reads it from the store.
        for run_id in effects.finished_runs {
            if let Some(run) = self.runs.remove(&run_id) {
                if self.hooks_pending.contains_key(&run_id) {
                    self.finishing.insert(run_id, run.done);
                } else {
                    self.hand_over(&run_id);
                    let _ = run.done.send(true);
                }
            }
        }
        for run_id in effects.released {
            if let Some(done) = self.finishing.remove(&run_id) {
                self.hand_over(&run_id);
                let _ = done.send(true);
            }
        }
        for (reply, found) in effects.cancel_replies {
            let _ = reply.send(found);
        }
        for hook in effects.hooks {
            let commands = self.commands.clone();
            let (run_id, task_id, kind, attempt) =
                (hook.run_id.clone(), hook.task_id.clone(), hook.kind, hook.attempt);
            let call = self.executor.run_hook(hook);
            tokio::spawn(async move {
                let result = match AssertUnwindSafe(call).catch_unwind().await {
                    Ok(r) => r,
                    Err(panic) => Err(format!("internal error: {}", panic_message(&panic))),
                };
                let error = result.err();
                let _ = commands.send(Command::HookDone { run_id, task_id, kind, attempt, error });
            });
        }
    }

    /// Run `run_id` ended and is committed: what was kept of it goes where its waiters
    /// look (`Shared::ended`), and it is no longer driven here.
    fn hand_over(&mut self, run_id: &Arc<str>) {
        if let Some(kept) = self.kept.take(run_id) {
            lock(&self.shared.ended).put(kept);
        }
        lock(&self.shared.watches).remove(run_id);
        if self.shared.backlog.load(std::sync::atomic::Ordering::Relaxed) {
            self.shared.room.notify_one();
        }
    }

    /// Sends `cmd` to this scheduler after `delay`.
    fn after(&self, delay: Duration, cmd: Command) {
        let commands = self.commands.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = commands.send(cmd);
        });
    }

    fn spawn(&self, job: Job, position: u32, started_at: i64) {
        let commands = self.commands.clone();
        let run_id = job.run_id.clone();
        let attempt = job.attempt;
        let done = Done::new(move |outcome| {
            let _ = commands.send(Command::Finished { run_id, position, attempt, started_at, outcome });
        });
        // A panic drops `done`, which reports the attempt failed.
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| self.executor.execute(job, done))) {
            log::error!("starting an attempt failed: {}", panic_message(&panic));
        }
    }

    /// The store failed for good: stop, and make every caller see why.
    fn fail(&mut self, e: Error, effects: Effects) {
        log::error!("the cloacina engine stopped: {e}");
        *lock(&self.shared.failure) = Some(e.clone());
        for (reply, _) in effects.accepted {
            let _ = reply.send(Err(e.clone()));
        }
        self.runs.clear();
        self.kept.clear();
        lock(&self.shared.watches).clear();
        for reply in self.closing.drain(..) {
            let _ = reply.send(());
        }
    }
}

/// Whether the worker that runs an attempt whose successor waits for it alone should
/// stay awake for that successor (`Job.followed`), given how long the last commit took
/// and how many attempts hold a slot: while commits end within a spin (SQLite), or,
/// when they take longer (PostgreSQL: a round trip and a disk flush), while this is the
/// only attempt running (a chain); with several, the core the worker would spin on
/// belongs to them and to the server.
pub(super) fn worth_following(last_commit: Duration, running: usize) -> bool {
    last_commit < SPIN || (running == 1 && last_commit < FOLLOW_SPIN)
}

/// The rows of a new run of `workflow`: the run (owned by `owner`, or queued without
/// one) and each of its tasks, pending.
pub(super) fn new_run_ops(
    workflow: &WorkflowDef,
    run_id: &Arc<str>,
    input: &Map,
    owner: Option<Arc<str>>,
    at: i64,
    lease_until: i64,
    idempotency_key: Option<String>,
) -> Result<Vec<Op>> {
    let graph = &workflow.graph;
    let mut ops = Vec::with_capacity(1 + graph.len());
    ops.push(Op::InsertRun {
        run_id: run_id.clone(),
        workflow: workflow.name.as_str().into(),
        version: graph.version().into(),
        input: serde_json::to_string(input).map_err(|e| Error::Internal(e.to_string()))?,
        owner,
        at,
        lease_until,
        idempotency_key,
    });
    for position in 0..graph.len() as u32 {
        let deps: Vec<&str> = graph.dependencies(position).iter().map(|&d| graph.id(d)).collect();
        ops.push(Op::InsertTask {
            run_id: run_id.clone(),
            task_id: graph.id(position).into(),
            position,
            dependencies: serde_json::to_string(&deps).unwrap_or_else(|_| "[]".into()),
            status: "pending",
        });
    }
    Ok(ops)
}

/// The name of one attempt, for interrupts: `run_id/task_id/attempt`.
fn token(run_id: &str, task_id: &str, attempt: u32) -> Arc<str> {
    format!("{run_id}/{task_id}/{attempt}").into()
}

fn trim_seconds(s: f64) -> String {
    let text = format!("{s:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The text of a panic payload.
pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        format!("panic: {s}")
    } else if let Some(s) = panic.downcast_ref::<String>() {
        format!("panic: {s}")
    } else {
        "panic".to_string()
    }
}
