//! The one global registry of the process: task id -> definition (body + options),
//! workflow name -> validated graph. Defining again under the same id replaces.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// The dependencies that were given as task objects: a workflow that does not list
    /// them pulls them in (a dependency given by id must be listed).
    pub pull_in: Vec<String>,
    /// A digest of the task's code and options: it feeds the workflow's version.
    pub fingerprint: String,
    pub policy: TaskPolicy,
    pub body: Arc<dyn TaskBody>,
}

/// A registered workflow: its name, the task ids it lists, and the graph resolved from
/// the current definitions of those tasks (and of the tasks they pull in).
pub struct WorkflowDef {
    pub name: String,
    pub description: Option<String>,
    /// The task ids the workflow was defined with.
    pub listed: Vec<String>,
    pub graph: Graph,
    /// Longest a run may take, in seconds; its expiry cancels what is left.
    pub timeout: Option<f64>,
    /// The context keys the tasks' trigger rules read: the scheduler reads them itself,
    /// so their values are never evicted from memory.
    pub rule_keys: Vec<Arc<str>>,
    /// The task definitions' generation the graph was resolved at.
    generation: u64,
}

#[derive(Default)]
struct Registry {
    tasks: HashMap<String, Arc<TaskDef>>,
    workflows: HashMap<String, Arc<WorkflowDef>>,
}

static REGISTRY: LazyLock<RwLock<Registry>> = LazyLock::new(Default::default);

/// Bumped whenever a task is (re)defined: a workflow resolved at an older generation
/// is resolved again before it runs.
static GENERATION: AtomicU64 = AtomicU64::new(0);

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
    GENERATION.fetch_add(1, Ordering::SeqCst);
    if replaced.is_some() {
        log::debug!("task '{}' redefined", def.id);
    }
    def
}

/// The current definition of task `id`.
pub fn task(id: &str) -> Option<Arc<TaskDef>> {
    read().tasks.get(id).cloned()
}

/// Resolves, validates and registers (or replaces) workflow `name` listing the tasks
/// `listed`: its graph is built from the current definitions of those tasks and of the
/// tasks they pull in. Trigger rules that name a task must name one upstream of the
/// task that has the rule.
pub fn register_workflow(
    name: &str,
    description: Option<String>,
    listed: &[String],
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
    let def = Arc::new(resolve(name, description, listed, timeout)?);
    write().workflows.insert(name.to_string(), def.clone());
    Ok(def)
}

/// Builds workflow `name` from the current task definitions.
fn resolve(
    name: &str,
    description: Option<String>,
    listed: &[String],
    timeout: Option<f64>,
) -> Result<WorkflowDef> {
    let generation = GENERATION.load(Ordering::SeqCst);
    let mut specs: Vec<TaskSpec> = Vec::with_capacity(listed.len());
    let mut seen: HashSet<&str> = HashSet::with_capacity(listed.len());
    let registry = read();
    let mut pending: std::collections::VecDeque<(&str, Option<&str>)> =
        listed.iter().map(|id| (id.as_str(), None)).collect();
    while let Some((id, needed_by)) = pending.pop_front() {
        if !seen.insert(id) {
            if needed_by.is_none() {
                return Err(Error::Workflow(format!(
                    "workflow '{name}' lists task id '{id}' more than once"
                )));
            }
            continue;
        }
        let Some(def) = registry.tasks.get(id) else {
            return Err(Error::Workflow(match needed_by {
                None => format!("workflow '{name}' lists task '{id}', which is not defined"),
                Some(by) => {
                    format!("in workflow '{name}', task '{by}' depends on task '{id}', which is not defined")
                }
            }));
        };
        specs.push(TaskSpec {
            id: def.id.clone(),
            dependencies: def.dependencies.clone(),
            fingerprint: def.fingerprint.clone(),
        });
        pending.extend(def.pull_in.iter().map(|d| (d.as_str(), Some(def.id.as_str()))));
    }
    let graph = Graph::build(name, &specs)?;
    for position in 0..graph.len() as u32 {
        let Some(def) = registry.tasks.get(graph.id(position)) else { continue };
        let named_tasks = def.policy.trigger.named_tasks();
        if named_tasks.is_empty() {
            continue; // ancestors cost O(n) each: computed only where a rule names a task
        }
        let ancestors = graph.ancestors(position);
        for named in named_tasks {
            let upstream = graph.position(named).is_some_and(|p| ancestors.contains(&p));
            if !upstream {
                return Err(Error::Workflow(format!(
                    "in workflow '{name}', the trigger rule of task '{}' names '{named}', which is not upstream of it",
                    def.id
                )));
            }
        }
    }
    let rule_keys = rule_keys(&registry, &graph);
    Ok(WorkflowDef {
        name: name.to_string(),
        description,
        listed: listed.to_vec(),
        graph,
        timeout,
        rule_keys,
        generation,
    })
}

/// The context keys the trigger rules of `graph`'s tasks read.
fn rule_keys(registry: &Registry, graph: &Graph) -> Vec<Arc<str>> {
    let mut keys = Vec::new();
    for position in 0..graph.len() as u32 {
        if let Some(def) = registry.tasks.get(graph.id(position)) {
            def.policy.trigger.context_keys(&mut keys);
        }
    }
    keys
}

/// The registered workflow `name` as its tasks are defined now: resolved again when a
/// task was (re)defined since, so a run always uses each task's current code,
/// dependencies and options (and the version says so). An edit that breaks it (a
/// cycle, an unknown dependency) is a `Workflow` error naming the task.
pub fn current_workflow(name: &str) -> Result<Arc<WorkflowDef>> {
    let def = workflow(name)
        .ok_or_else(|| Error::Workflow(format!("workflow '{name}' is not defined in this process")))?;
    if def.generation == GENERATION.load(Ordering::SeqCst) {
        return Ok(def);
    }
    let again = resolve(name, def.description.clone(), &def.listed, def.timeout).map_err(|e| {
        Error::Workflow(format!("workflow '{name}' cannot run with its tasks as they are defined now: {e}"))
    })?;
    let again = Arc::new(again);
    let mut registry = write();
    // Keep a newer definition made meanwhile by another thread.
    match registry.workflows.get(name) {
        Some(now) if !Arc::ptr_eq(now, &def) => Ok(now.clone()),
        _ => {
            registry.workflows.insert(name.to_string(), again.clone());
            Ok(again)
        }
    }
}

/// The names of the registered workflows.
pub fn workflow_names() -> Vec<String> {
    read().workflows.keys().cloned().collect()
}

/// The registered workflow `name`, if any (as last resolved; see `current_workflow`).
pub fn workflow(name: &str) -> Option<Arc<WorkflowDef>> {
    read().workflows.get(name).cloned()
}

/// A workflow not in the registry, for a run whose graph differs from the current
/// definition (a recovered run's stored plan).
pub fn unregistered_workflow(name: &str, graph: Graph, timeout: Option<f64>) -> WorkflowDef {
    WorkflowDef {
        name: name.to_string(),
        description: None,
        listed: Vec::new(),
        rule_keys: rule_keys(&read(), &graph),
        graph,
        timeout,
        generation: 0,
    }
}

/// Every task and workflow definition at one moment (shared, not copied), to put back
/// with `restore`: lets a test define tasks without leaking them into the next one.
pub struct Snapshot {
    tasks: HashMap<String, Arc<TaskDef>>,
    workflows: HashMap<String, Arc<WorkflowDef>>,
}

/// The registry as it is now.
pub fn snapshot() -> Snapshot {
    let registry = read();
    Snapshot { tasks: registry.tasks.clone(), workflows: registry.workflows.clone() }
}

/// Puts back the definitions of `snapshot`: tasks and workflows defined since are
/// forgotten, redefined ones get their earlier definition back.
pub fn restore(snapshot: &Snapshot) {
    let mut registry = write();
    registry.tasks = snapshot.tasks.clone();
    registry.workflows = snapshot.workflows.clone();
    GENERATION.fetch_add(1, Ordering::SeqCst);
}
