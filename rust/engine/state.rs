//! The scheduler's in-memory view of the runs it drives: a cache of what the database
//! holds, plus the tasks' context views, shared between parent and child so that
//! building a task's input costs what its ancestors wrote since, not the whole context.

use std::sync::Arc;

use tokio::sync::watch;

use super::executor::Recall;
use crate::context::{Delta, Map, View};
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
    /// build `output`).
    pub input: Option<View>,
    /// The task's writes, once completed (their values leave memory once no task
    /// depending on it directly is left to run: see `RunState::retire`).
    pub delta: Option<Arc<Delta>>,
    /// Successors not final yet.
    pub successors_left: u32,
    /// What the task's successors inherit from it (its input plus its writes), kept
    /// while some of them have yet to compute their input.
    pub output: Option<View>,
    /// How many successors have yet to compute their input.
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
    /// The view of the run's input alone: what a root task sees.
    pub base: View,
    /// Reads back the outputs evicted from memory.
    pub recall: Recall,
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
        recall: Recall,
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
                    successors_left: graph.successors(p).len() as u32,
                    output: None,
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
            base: View::of(&Delta::new(None, input)),
            recall,
            tasks,
            done,
            lease_until: 0,
        }
    }

    /// What the task at `position` sees: the input plus its ancestors' writes in
    /// merge order. With one dependency that is the parent's output view as it is; with
    /// several, the view of the parent that covers the most ancestors, plus the writes
    /// of the ancestors it does not cover. Each call counts as one successor served.
    pub fn input_for(&mut self, position: u32) -> View {
        let graph = &self.workflow.graph;
        let deps = graph.dependencies(position);
        let view = match deps {
            [] => self.base.clone(),
            [only] => match &self.tasks[*only as usize].output {
                Some(view) => view.clone(),
                None => self.rebuild(position, None),
            },
            _ => {
                let parent = deps
                    .iter()
                    .filter_map(|&d| Some((self.tasks[d as usize].output.clone()?, d, graph.ancestors(d))))
                    .max_by_key(|(_, _, ancestors)| ancestors.len())
                    .map(|(view, d, mut covered)| {
                        covered.push(d); // after its ancestors: still ascending
                        (view, covered)
                    });
                self.rebuild(position, parent)
            }
        };
        for &d in self.workflow.graph.dependencies(position) {
            let parent = &mut self.tasks[d as usize];
            parent.output_users = parent.output_users.saturating_sub(1);
            if parent.output_users == 0 {
                parent.output = None;
            }
        }
        view
    }

    /// The input of the task at `position`: `start` (a parent's output view, with the
    /// positions it covers, ascending) or else the run's input, plus the writes of every
    /// ancestor not covered.
    fn rebuild(&self, position: u32, start: Option<(View, Vec<u32>)>) -> View {
        let (mut view, covered) = start.unwrap_or_else(|| (self.base.clone(), Vec::new()));
        let mut covered = covered.into_iter().peekable();
        for a in self.workflow.graph.ancestors(position) {
            while covered.next_if(|&c| c < a).is_some() {}
            if covered.next_if_eq(&a).is_some() {
                continue;
            }
            if let Some(delta) = &self.tasks[a as usize].delta {
                view.add(i64::from(a), delta);
            }
        }
        view
    }

    /// Keeps `view` as what the successors of the task at `position` inherit: its input
    /// plus its writes, or only its input when it did not run (skipped or
    /// `upstream_failed`).
    pub fn pass_on(&mut self, position: u32, view: View) {
        let users = self.workflow.graph.successors(position).len() as u32;
        let task = &mut self.tasks[position as usize];
        if users > 0 {
            task.output = Some(view);
            task.output_users = users;
        }
    }

    /// Records the writes of the completed task at `position`.
    pub fn complete(&mut self, position: u32, delta: Arc<Delta>) {
        let task = &mut self.tasks[position as usize];
        let input = task.input.take();
        task.delta = Some(delta.clone());
        task.status = TaskStatus::Completed;
        if let Some(mut view) = input {
            view.add(i64::from(position), &delta);
            self.pass_on(position, view);
        }
    }

    /// The task at `position` became final. Adds to `evict` the writes that may leave
    /// memory once the batch recording this is committed: each dependency's, once its
    /// successors are all final, and the task's own if it has no successor. What a task
    /// reads most (its parents' writes) stays in memory while it may run; the rest is
    /// in the database, read back by what reads it.
    pub fn retire(&mut self, position: u32, evict: &mut Vec<Arc<Delta>>) {
        let graph = &self.workflow.graph;
        if graph.successors(position).is_empty() {
            evict.extend(self.evictable(position));
        }
        for &d in graph.dependencies(position) {
            let parent = &mut self.tasks[d as usize];
            parent.successors_left = parent.successors_left.saturating_sub(1);
            if parent.successors_left == 0 {
                evict.extend(self.evictable(d));
            }
        }
    }

    /// The writes of the task at `position`, if it has any and they may leave memory:
    /// not those holding a key a trigger rule reads (the scheduler reads those itself).
    pub fn evictable(&self, position: u32) -> Option<Arc<Delta>> {
        let delta = self.tasks[position as usize].delta.as_ref()?;
        (!delta.writes_any(&self.workflow.rule_keys)).then(|| delta.clone())
    }
}

/// The facts a trigger rule of the task at a position sees.
pub struct RuleFacts<'a> {
    pub run: &'a RunState,
    pub position: u32,
    pub context: &'a View,
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

    fn context_value(&self, key: &str) -> Option<serde_json::Value> {
        // Resident: writes holding a key a rule reads are never evicted (`retire`).
        self.context.get_resident(key)
    }

    fn cause_of(&self, task: &str) -> Option<&str> {
        let p = self.run.workflow.graph.position(task)?;
        self.run.tasks[p as usize].reason.as_deref()
    }
}
