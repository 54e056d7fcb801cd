//! Registering tasks and workflows from Python into the one global registry.

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::convert::value_from_py;
use super::invoke::PyTaskBody;
use crate::errors::Error;
use crate::policy::TaskPolicy;
use crate::registry::{self, TaskDef};
use crate::rules::Rule;
use crate::store::sqlite::library as sqlite_library;

/// `(on_success, on_failure, on_retry)`, each optional.
type Hooks = (Option<Py<PyAny>>, Option<Py<PyAny>>, Option<Py<PyAny>>);

/// Registers (or replaces) task `id` with body `func`. `policy` holds the execution
/// options as JSON data (retries, backoff, timeout, trigger rule...); `hooks` is
/// `(on_success, on_failure, on_retry)`; `retry_on` a tuple of exception types.
#[pyfunction]
#[pyo3(signature = (id, func, *, is_async, dependencies, fingerprint, pull_in = Vec::new(), policy = None, retry_on = None, hooks = (None, None, None)))]
#[allow(clippy::too_many_arguments)]
pub fn register_task(
    id: String,
    func: Py<PyAny>,
    is_async: bool,
    dependencies: Vec<String>,
    fingerprint: String,
    pull_in: Vec<String>,
    policy: Option<&Bound<'_, PyAny>>,
    retry_on: Option<Py<PyAny>>,
    hooks: Hooks,
) -> PyResult<()> {
    let policy = match policy {
        Some(p) => {
            let value = value_from_py(p).map_err(|e| Error::Task(format!("task '{id}': options: {e}")))?;
            TaskPolicy::parse(&id, &value)?
        }
        None => TaskPolicy::default(),
    };
    let (on_success, on_failure, on_retry) = hooks;
    registry::register_task(TaskDef {
        id,
        dependencies,
        pull_in,
        fingerprint,
        policy,
        body: Arc::new(PyTaskBody { func, is_async, retry_on, on_success, on_failure, on_retry }),
    });
    Ok(())
}

/// Validates a trigger rule given as JSON data; raises WorkflowError if it is invalid.
#[pyfunction]
pub fn validate_rule(rule: &Bound<'_, PyAny>) -> PyResult<()> {
    let value = value_from_py(rule).map_err(|e| Error::Workflow(format!("invalid trigger rule: {e}")))?;
    Rule::parse(&value)?;
    Ok(())
}

/// Resolves, validates and registers (or replaces) workflow `name` listing the task ids
/// `listed`; returns `(topological_order, version)`.
#[pyfunction]
#[pyo3(signature = (name, listed, description = None, timeout = None))]
pub fn register_workflow(
    name: &str,
    listed: Vec<String>,
    description: Option<String>,
    timeout: Option<f64>,
) -> PyResult<(Vec<String>, String)> {
    let def = registry::register_workflow(name, description, &listed, timeout)?;
    Ok((def.graph.ids().to_vec(), def.graph.version().to_string()))
}

/// Workflow `name` as its tasks are defined now: `(topological_order, version)`, after
/// making this definition (`listed`, `description`, `timeout`) the registered one if
/// another one replaced it. Raises WorkflowError when an edit broke it.
#[pyfunction]
#[pyo3(signature = (name, listed, description = None, timeout = None))]
pub fn current_workflow(
    name: &str,
    listed: Vec<String>,
    description: Option<String>,
    timeout: Option<f64>,
) -> PyResult<(Vec<String>, String)> {
    let same = registry::workflow(name)
        .is_some_and(|w| w.listed == listed && w.description == description && w.timeout == timeout);
    let def = if same {
        registry::current_workflow(name)?
    } else {
        registry::register_workflow(name, description, &listed, timeout)?
    };
    Ok((def.graph.ids().to_vec(), def.graph.version().to_string()))
}

/// Binds the engine to the SQLite library of Python's `_sqlite3` module (its file, or
/// None when built in); returns a dict describing the library in use.
#[pyfunction]
#[pyo3(signature = (python_module = None))]
pub fn bind_sqlite(py: Python<'_>, python_module: Option<PathBuf>) -> PyResult<Bound<'_, PyDict>> {
    let lib = sqlite_library::bind(python_module)?;
    let out = PyDict::new(py);
    out.set_item("version", lib.version)?;
    out.set_item("source", lib.source)?;
    out.set_item("shared_with_python", lib.shared_with_python)?;
    Ok(out)
}

/// The registry's definitions at one moment (see `registry_snapshot`).
#[pyclass(frozen, name = "RegistrySnapshot", module = "cloacina._native")]
pub struct PyRegistrySnapshot(registry::Snapshot);

/// Every task and workflow definition now, to put back with `registry_restore`.
#[pyfunction]
pub fn registry_snapshot() -> PyRegistrySnapshot {
    PyRegistrySnapshot(registry::snapshot())
}

/// Puts back the definitions of `snapshot` (tasks and workflows defined since are
/// forgotten).
#[pyfunction]
pub fn registry_restore(snapshot: &PyRegistrySnapshot) {
    registry::restore(&snapshot.0);
}

/// Drops the PostgreSQL schema `schema` of the database `url` (`label`: the URL with
/// its password masked) with everything in it, if it exists (the pytest plugin's
/// per-test schemas).
#[pyfunction]
pub fn drop_postgres_schema(py: Python<'_>, url: String, label: String, schema: String) -> PyResult<()> {
    let config = crate::store::PostgresConfig::new(url, label, Some(schema));
    super::runtime::wait(py, async move { crate::store::PostgresStore::drop_schema(&config).await }, None)?;
    Ok(())
}
