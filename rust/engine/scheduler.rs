//! The scheduler: one task per engine that owns all run state and the writer side of
//! the store. It drains every pending message, applies them in memory, claims ready
//! tasks for free slots, commits everything as one transaction (group commit), and only
//! then starts the claimed attempts and wakes waiters. A finishing task sends a message,
//! so the next batch starts at once: there is no polling anywhere.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{mpsc, oneshot, watch};

use super::state::{RunState, TaskStatus};
use super::{lock, Command, EngineConfig, Executor, Job, Outcome, Shared};
use crate::context::Map;
use crate::errors::{Error, Result};
use crate::registry::{self, WorkflowDef};
use crate::store::{now_micros, Op};

/// Most messages folded into one transaction.
const MAX_BATCH: usize = 4096;

pub(crate) struct Scheduler {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
    inbox: mpsc::UnboundedReceiver<Command>,
    executor: Arc<dyn Executor>,
    max_concurrency: usize,
    runs: HashMap<Arc<str>, RunState>,
    /// Ready tasks waiting for a slot, in the order they became ready.
    queue: VecDeque<(Arc<str>, u32)>,
    running: usize,
    closing: Vec<oneshot::Sender<()>>,
}

/// Answers a submitter with the new run's id.
type SubmitReply = oneshot::Sender<Result<Arc<str>>>;

/// What a batch does once its transaction is committed.
#[derive(Default)]
struct Effects {
    accepted: Vec<(SubmitReply, Arc<str>)>,
    finished_runs: Vec<Arc<str>>,
    jobs: Vec<(Job, u32, i64)>,
    /// Tasks that became ready in this batch (persisted as `ready` unless claimed).
    became_ready: Vec<(Arc<str>, u32)>,
}

impl Scheduler {
    pub(crate) fn new(
        shared: Arc<Shared>,
        commands: mpsc::UnboundedSender<Command>,
        inbox: mpsc::UnboundedReceiver<Command>,
        executor: Arc<dyn Executor>,
        config: EngineConfig,
    ) -> Scheduler {
        Scheduler {
            shared,
            commands,
            inbox,
            executor,
            max_concurrency: config.max_concurrency.max(1),
            runs: HashMap::new(),
            queue: VecDeque::new(),
            running: 0,
            closing: Vec::new(),
        }
    }

    pub(crate) async fn run(mut self) {
        let mut ops: Vec<Op> = Vec::new();
        while let Some(first) = self.inbox.recv().await {
            let mut effects = Effects::default();
            self.handle(first, &mut ops, &mut effects);
            let mut handled = 1;
            while handled < MAX_BATCH {
                match self.inbox.try_recv() {
                    Ok(cmd) => self.handle(cmd, &mut ops, &mut effects),
                    Err(_) => break,
                }
                handled += 1;
            }
            self.claim(&mut ops, &mut effects);
            for (run_id, position) in std::mem::take(&mut effects.became_ready) {
                if let Some(run) = self.runs.get(&run_id) {
                    if run.tasks[position as usize].status == TaskStatus::Ready {
                        ops.push(Op::MarkTask {
                            run_id: run_id.clone(),
                            task_id: run.tasks[position as usize].id.clone(),
                            status: "ready",
                            reason: None,
                            at: None,
                        });
                    }
                }
            }
            if let Err(e) = self.commit(&ops).await {
                self.fail(e, effects);
                return;
            }
            ops.clear();
            self.deliver(effects);
            if !self.closing.is_empty() && self.running == 0 {
                break;
            }
        }
        // Closed: every waiter of an unfinished run learns it (its watch sender drops).
        self.runs.clear();
        lock(&self.shared.watches).clear();
        for reply in self.closing.drain(..) {
            let _ = reply.send(());
        }
    }

    fn handle(&mut self, cmd: Command, ops: &mut Vec<Op>, effects: &mut Effects) {
        match cmd {
            Command::Submit {
                workflow,
                input,
                reply,
            } => {
                if !self.closing.is_empty() {
                    let _ = reply.send(Err(Error::Closed("the runner is closed".into())));
                    return;
                }
                match self.submit(workflow, input, ops) {
                    Ok(run_id) => effects.accepted.push((reply, run_id)),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::Finished {
                run_id,
                position,
                attempt,
                started_at,
                outcome,
            } => {
                self.running = self.running.saturating_sub(1);
                self.record(
                    &run_id, position, attempt, started_at, outcome, ops, effects,
                );
            }
            Command::Shutdown { reply } => self.closing.push(reply),
        }
    }

    fn submit(
        &mut self,
        workflow: Arc<WorkflowDef>,
        input: Map,
        ops: &mut Vec<Op>,
    ) -> Result<Arc<str>> {
        let run_id: Arc<str> = uuid::Uuid::now_v7().to_string().into();
        let now = now_micros();
        let graph = &workflow.graph;
        ops.push(Op::InsertRun {
            run_id: run_id.clone(),
            workflow: workflow.name.as_str().into(),
            version: graph.version().into(),
            input: serde_json::to_string(&input).map_err(|e| Error::Internal(e.to_string()))?,
            owner: self.shared.owner.clone(),
            at: now,
        });
        let (done, watch) = watch::channel(false);
        let run = RunState::new(run_id.clone(), workflow.clone(), input, done);
        for (position, task) in run.tasks.iter().enumerate() {
            let deps: Vec<&str> = graph
                .dependencies(position as u32)
                .iter()
                .map(|&d| graph.id(d))
                .collect();
            ops.push(Op::InsertTask {
                run_id: run_id.clone(),
                task_id: task.id.clone(),
                position: position as u32,
                dependencies: serde_json::to_string(&deps).unwrap_or_else(|_| "[]".into()),
                status: if task.status == TaskStatus::Ready {
                    "ready"
                } else {
                    "pending"
                },
            });
            if task.status == TaskStatus::Ready {
                self.queue.push_back((run_id.clone(), position as u32));
            }
        }
        lock(&self.shared.watches).insert(run_id.clone(), watch);
        self.runs.insert(run_id.clone(), run);
        Ok(run_id)
    }

    /// Applies an attempt's outcome: the task row, its successors, maybe the run.
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
        match outcome {
            Outcome::Completed(delta) => {
                let output = serde_json::to_string(&delta).unwrap_or_else(|_| "{}".into());
                ops.push(Op::FinishTask {
                    run_id: run_id.clone(),
                    task_id,
                    attempt,
                    owner: self.shared.owner.clone(),
                    status: "completed",
                    started_at,
                    at: now,
                    output: Some(output),
                    error: None,
                    traceback: None,
                });
                run.complete(position, delta);
            }
            Outcome::Failed { error, traceback } => {
                log::debug!("task '{task_id}' of run {run_id} failed: {error}");
                ops.push(Op::FinishTask {
                    run_id: run_id.clone(),
                    task_id,
                    attempt,
                    owner: self.shared.owner.clone(),
                    status: "failed",
                    started_at,
                    at: now,
                    output: None,
                    error: Some(error.clone()),
                    traceback,
                });
                let task = &mut run.tasks[position as usize];
                task.status = TaskStatus::Failed;
                task.input = None;
                task.error = Some(error);
            }
        }
        run.unfinished -= 1;
        Self::release_successors(run, position, now, ops, &mut self.queue, effects);
        if run.unfinished == 0 {
            Self::finalize(run, now, ops);
            effects.finished_runs.push(run_id.clone());
        }
    }

    /// Decides every successor whose dependencies are now all final: ready when they all
    /// completed, skipped otherwise (and so on down the graph).
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
                succ.remaining -= 1;
                if succ.remaining > 0 {
                    continue;
                }
                let blocker = graph
                    .dependencies(s)
                    .iter()
                    .find(|&&d| run.tasks[d as usize].status != TaskStatus::Completed)
                    .copied();
                match blocker {
                    None => {
                        run.tasks[s as usize].status = TaskStatus::Ready;
                        queue.push_back((run.run_id.clone(), s));
                        effects.became_ready.push((run.run_id.clone(), s));
                    }
                    Some(d) => {
                        let why = match run.tasks[d as usize].status {
                            TaskStatus::Failed => "failed",
                            _ => "was skipped",
                        };
                        let reason = format!("upstream task '{}' {why}", graph.id(d));
                        let succ = &mut run.tasks[s as usize];
                        succ.status = TaskStatus::Skipped;
                        ops.push(Op::MarkTask {
                            run_id: run.run_id.clone(),
                            task_id: succ.id.clone(),
                            status: "skipped",
                            reason: Some(reason),
                            at: Some(now),
                        });
                        run.unfinished -= 1;
                        stack.push(s);
                    }
                }
            }
        }
    }

    fn finalize(run: &mut RunState, now: i64, ops: &mut Vec<Op>) {
        let failed = run.tasks.iter().find(|t| t.status == TaskStatus::Failed);
        let (status, error) = match failed {
            Some(t) => (
                "failed",
                Some(format!(
                    "task '{}' failed: {}",
                    t.id,
                    t.error.as_deref().unwrap_or("unknown error")
                )),
            ),
            None => ("completed", None),
        };
        ops.push(Op::FinishRun {
            run_id: run.run_id.clone(),
            status,
            error,
            at: now,
        });
    }

    /// Claims ready tasks for the free slots: each becomes `running` in this batch.
    fn claim(&mut self, ops: &mut Vec<Op>, effects: &mut Effects) {
        while self.running < self.max_concurrency && self.closing.is_empty() {
            let Some((run_id, position)) = self.queue.pop_front() else {
                break;
            };
            let Some(run) = self.runs.get_mut(&run_id) else {
                continue;
            };
            if run.tasks[position as usize].status != TaskStatus::Ready {
                continue;
            }
            let task_id = run.tasks[position as usize].id.clone();
            let Some(def) = registry::task(&task_id) else {
                let attempt = run.tasks[position as usize].attempts + 1;
                run.tasks[position as usize].attempts = attempt;
                let error = format!("task '{task_id}' is not defined in this process");
                let now = now_micros();
                self.record(
                    &run_id,
                    position,
                    attempt,
                    now,
                    Outcome::Failed {
                        error,
                        traceback: None,
                    },
                    ops,
                    effects,
                );
                continue;
            };
            let input = run.input_for(position);
            let now = now_micros();
            let task = &mut run.tasks[position as usize];
            task.status = TaskStatus::Running;
            task.attempts += 1;
            task.input = Some(input.clone());
            let attempt = task.attempts;
            ops.push(Op::StartTask {
                run_id: run_id.clone(),
                task_id: task_id.clone(),
                attempt,
                owner: self.shared.owner.clone(),
                at: now,
            });
            self.running += 1;
            let job = Job {
                run_id,
                task_id,
                attempt,
                body: def.body.clone(),
                input,
            };
            effects.jobs.push((job, position, now));
        }
    }

    async fn commit(&self, ops: &[Op]) -> Result<()> {
        let mut delay = Duration::from_millis(20);
        let mut attempt = 0;
        loop {
            match self.shared.store.commit(ops).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt < 5 => {
                    log::warn!("committing {} changes failed, retrying: {e}", ops.len());
                    attempt += 1;
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// After a commit: answer submitters, start attempts, wake waiters of final runs.
    fn deliver(&mut self, effects: Effects) {
        for (reply, run_id) in effects.accepted {
            let _ = reply.send(Ok(run_id));
        }
        for (job, position, started_at) in effects.jobs {
            self.spawn(job, position, started_at);
        }
        for run_id in effects.finished_runs {
            if let Some(run) = self.runs.remove(&run_id) {
                lock(&self.shared.watches).remove(&run_id);
                let _ = run.done.send(true);
            }
        }
    }

    fn spawn(&self, job: Job, position: u32, started_at: i64) {
        let commands = self.commands.clone();
        let executor = self.executor.clone();
        let run_id = job.run_id.clone();
        let attempt = job.attempt;
        tokio::spawn(async move {
            let outcome = match AssertUnwindSafe(executor.execute(job)).catch_unwind().await {
                Ok(outcome) => outcome,
                Err(panic) => Outcome::Failed {
                    error: format!("internal error: {}", panic_message(&panic)),
                    traceback: None,
                },
            };
            let _ = commands.send(Command::Finished {
                run_id,
                position,
                attempt,
                started_at,
                outcome,
            });
        });
    }

    /// The store failed for good: stop, and make every caller see why.
    fn fail(&mut self, e: Error, effects: Effects) {
        let message = e.to_string();
        log::error!("the cloacina engine stopped: {message}");
        *lock(&self.shared.failure) = Some(message.clone());
        for (reply, _) in effects.accepted {
            let _ = reply.send(Err(Error::Database(message.clone())));
        }
        self.runs.clear();
        lock(&self.shared.watches).clear();
        for reply in self.closing.drain(..) {
            let _ = reply.send(());
        }
    }
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
