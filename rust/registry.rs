//! The one global registry of the process: task id -> definition (body + options),
//! workflow name -> validated graph. Defining again under the same id replaces.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

use crate::errors::{Error, Result};
use crate::graph::{Graph, TaskSpec};
use crate::policy::TaskPolicy;

/// A task's executable body. The engine never calls it; an `Executor` (for Python
/// callables, `py::invoke`) downcasts it to the concrete type it knows how to run.
pub trait TaskBody: Send + Sync + 'static {
    /// The body as `Any`, for the executor to downcast.
    fn as_any(&self) -> &dyn Any;

    /// Whether the task has this hook (the engine prepares hook calls only then).
    fn has_hook(&self, _kind: crate::engine::HookKind) -> bool {
        false
    }
}

/// A registered task.
pub struct TaskDef {
    pub id: String,
    pub dependencies: Vec<String>,
    pub fingerprint: String,
    pub policy: TaskPolicy,
    pub body: Arc<dyn TaskBody>,
}

/// A registered workflow: its name, description and validated graph.
pub struct WorkflowDef {
    pub name: String,
    pub description: Option<String>,
    pub graph: Graph,
    /// Longest a run may take, in seconds; its expiry cancels what is left.
    pub timeout: Option<f64>,
}

#[derive(Default)]
struct Registry {
    tasks: HashMap<String, Arc<TaskDef>>,
    workflows: HashMap<String, Arc<WorkflowDef>>,
}

static REGISTRY: LazyLock<RwLock<Registry>> = LazyLock::new(Default::default);

fn read() -> std::sync::RwLockReadGuard<'static, Registry> {
    REGISTRY.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write() -> std::sync::RwLockWriteGuard<'static, Registry> {
    REGISTRY.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Registers (or replaces) a task definition.
pub fn register_task(def: TaskDef) -> Arc<TaskDef> {
    let def = Arc::new(def);
    let replaced = write().tasks.insert(def.id.clone(), def.clone());
    if replaced.is_some() {
        log::debug!("task '{}' redefined", def.id);
    }
    def
}

/// The current definition of task `id`.
pub fn task(id: &str) -> Option<Arc<TaskDef>> {
    read().tasks.get(id).cloned()
}

/// Validates and registers (or replaces) a workflow. Trigger rules that name a task must
/// name one upstream of the task that has the rule.
pub fn register_workflow(
    name: &str,
    description: Option<String>,
    tasks: &[TaskSpec],
    timeout: Option<f64>,
) -> Result<Arc<WorkflowDef>> {
    if name.trim().is_empty() {
        return Err(Error::Workflow("a workflow needs a non-empty name".into()));
    }
    if let Some(t) = timeout {
        crate::duration::seconds(&format!("workflow '{name}': timeout"), t)?;
        if t <= 0.0 {
            return Err(Error::InvalidArgument(format!(
                "workflow '{name}': timeout must be more than 0 seconds"
            )));
        }
    }
    let graph = Graph::build(name, tasks)?;
    for position in 0..graph.len() as u32 {
        let Some(def) = task(graph.id(position)) else {
            continue;
        };
        let ancestors = graph.ancestors(position);
        for named in def.policy.trigger.named_tasks() {
            let upstream = graph.position(named).is_some_and(|p| ancestors.contains(&p));
            if !upstream {
                return Err(Error::Workflow(format!(
                    "in workflow '{name}', the trigger rule of task '{}' names '{named}', which is not upstream of it",
                    def.id
                )));
            }
        }
    }
    let def = Arc::new(WorkflowDef { name: name.to_string(), description, graph, timeout });
    write().workflows.insert(name.to_string(), def.clone());
    Ok(def)
}

/// The current definition of workflow `name`.
pub fn workflow(name: &str) -> Option<Arc<WorkflowDef>> {
    read().workflows.get(name).cloned()
}
