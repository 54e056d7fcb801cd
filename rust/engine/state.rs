//! The scheduler's in-memory view of the runs it drives: a cache of what the database
//! holds, plus the materialised contexts that make building a task's input cheap.

use std::sync::Arc;

use tokio::sync::watch;

use crate::context::{self, Map};
use crate::registry::WorkflowDef;
use crate::rules::{Facts, Upstream};

/// A task's status, as in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    Pending,
    Ready,
    Running,
    Completed,
    Failed,
    Skipped,
    /// Did not run because a dependency failed (or itself did not run for that reason).
    UpstreamFailed,
    Cancelled,
}

impl TaskStatus {
    /// As a dependency's outcome for trigger rules (None while not final).
    pub fn upstream(self) -> Option<Upstream> {
        match self {
            TaskStatus::Completed => Some(Upstream::Completed),
            TaskStatus::Failed => Some(Upstream::Failed),
            TaskStatus::Skipped => Some(Upstream::Skipped),
            TaskStatus::UpstreamFailed => Some(Upstream::UpstreamFailed),
            TaskStatus::Cancelled => Some(Upstream::Cancelled),
            _ => None,
        }
    }
}

/// One task of a run.
pub struct TaskState {
    pub id: Arc<str>,
    pub status: TaskStatus,
    /// Dependencies not final yet; the task is decided when this reaches zero.
    pub remaining: u32,
    pub attempts: u32,
    /// A retry may not start before this time (microseconds), if set.
    pub not_before: Option<i64>,
    /// The task's input, computed when it became ready (kept for retries and to
    /// materialise `output_context`).
    pub input: Option<Arc<Map>>,
    /// The task's writes, once completed.
    pub delta: Option<Arc<Map>>,
    /// input + delta, kept while successors with this task as their only dependency
    /// have yet to start: their input is exactly this.
    pub output_context: Option<Arc<Map>>,
    /// How many such successors have yet to start.
    pub output_users: u32,
    pub error: Option<String>,
    /// Why a skipped or `upstream_failed` task did not run (for an `upstream_failed`
    /// one, it names the task that failed, and its successors inherit it).
    pub reason: Option<Arc<str>>,
}

/// A run this engine drives.
pub struct RunState {
    pub run_id: Arc<str>,
    pub workflow: Arc<WorkflowDef>,
    pub input: Arc<Map>,
    pub tasks: Vec<TaskState>,
    /// Tasks not final yet.
    pub unfinished: usize,
    pub done: watch::Sender<bool>,
    /// The lease this engine last committed for the run (microseconds): until shortly
    /// before it, no other runner can have taken the run over.
    pub lease_until: i64,
}

impl RunState {
    /// A new run: every task pending, roots ready.
    pub fn new(
        run_id: Arc<str>,
        workflow: Arc<WorkflowDef>,
        input: Map,
        done: watch::Sender<bool>,
    ) -> RunState {
        let graph = &workflow.graph;
        let tasks = (0..graph.len() as u32)
            .map(|p| {
                let remaining = graph.dependencies(p).len() as u32;
                TaskState {
                    id: Arc::from(graph.id(p)),
                    status: if remaining == 0 { TaskStatus::Ready } else { TaskStatus::Pending },
                    remaining,
                    attempts: 0,
                    not_before: None,
                    input: None,
                    delta: None,
                    output_context: None,
                    output_users: 0,
                    error: None,
                    reason: None,
                }
            })
            .collect();
        RunState {
            run_id,
            unfinished: graph.len(),
            workflow,
            input: Arc::new(input),
            tasks,
            done,
            lease_until: 0,
        }
    }

    /// What the task at `position` sees: the input plus its ancestors' writes in order.
    pub fn input_for(&mut self, position: u32) -> Arc<Map> {
        let graph = &self.workflow.graph;
        let deps = graph.dependencies(position);
        match deps {
            [] => self.input.clone(),
            [only] => {
                let parent = &mut self.tasks[*only as usize];
                let ctx = parent.output_context.clone();
                parent.output_users = parent.output_users.saturating_sub(1);
                if parent.output_users == 0 {
                    parent.output_context = None;
                }
                ctx.unwrap_or_else(|| self.rebuild(position))
            }
            _ => self.rebuild(position),
        }
    }

    fn rebuild(&self, position: u32) -> Arc<Map> {
        let ancestors = self.workflow.graph.ancestors(position);
        Arc::new(context::fold(
            &self.input,
            ancestors.iter().filter_map(|&a| self.tasks[a as usize].delta.as_deref()),
        ))
    }

    /// Records the writes of the completed task at `position`.
    pub fn complete(&mut self, position: u32, delta: Map) {
        let graph = &self.workflow.graph;
        let users =
            graph.successors(position).iter().filter(|&&s| graph.dependencies(s).len() == 1).count() as u32;
        let task = &mut self.tasks[position as usize];
        let input = task.input.take();
        if users > 0 {
            let base = input.unwrap_or_else(|| self.input.clone());
            let task = &mut self.tasks[position as usize];
            task.output_context = Some(Arc::new(context::merged(&base, &delta)));
            task.output_users = users;
        }
        let task = &mut self.tasks[position as usize];
        task.delta = Some(Arc::new(delta));
        task.status = TaskStatus::Completed;
    }
}

/// The facts a trigger rule of the task at a position sees.
pub struct RuleFacts<'a> {
    pub run: &'a RunState,
    pub position: u32,
    pub context: &'a Map,
}

impl Facts for RuleFacts<'_> {
    fn dependencies(&self) -> Vec<(&str, Upstream)> {
        let graph = &self.run.workflow.graph;
        graph
            .dependencies(self.position)
            .iter()
            .map(|&d| {
                let status = self.run.tasks[d as usize].status.upstream().unwrap_or(Upstream::Skipped);
                (graph.id(d), status)
            })
            .collect()
    }

    fn status_of(&self, task: &str) -> Option<Upstream> {
        let p = self.run.workflow.graph.position(task)?;
        self.run.tasks[p as usize].status.upstream()
    }

    fn context(&self) -> &Map {
        self.context
    }

    fn cause_of(&self, task: &str) -> Option<&str> {
        let p = self.run.workflow.graph.position(task)?;
        self.run.tasks[p as usize].reason.as_deref()
    }
}
