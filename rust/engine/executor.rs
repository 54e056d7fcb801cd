//! How the engine hands a task to whatever runs its body, and what comes back.

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::context::Map;
use crate::registry::TaskBody;

/// One attempt of one task, ready to run.
pub struct Job {
    pub run_id: Arc<str>,
    pub task_id: Arc<str>,
    pub attempt: u32,
    pub body: Arc<dyn TaskBody>,
    /// What the task sees: the run's input plus its ancestors' writes, in merge order.
    pub input: Arc<Map>,
}

/// What an attempt produced.
#[derive(Debug)]
pub enum Outcome {
    /// The task's writes (its delta).
    Completed(Map),
    /// The attempt failed; `traceback` is the language's own traceback text, if any.
    Failed {
        error: String,
        traceback: Option<String>,
    },
}

/// Runs task bodies. The engine calls `execute` from a tokio worker; implementations
/// must not block it (run blocking work with `spawn_blocking` or elsewhere).
pub trait Executor: Send + Sync + 'static {
    /// Runs `job` to completion and reports its outcome.
    fn execute(&self, job: Job) -> BoxFuture<'static, Outcome>;
}
