//! Registering tasks and workflows from Python into the one global registry.

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::invoke::PyTaskBody;
use crate::graph::TaskSpec;
use crate::registry::{self, TaskDef};
use crate::store::sqlite_library;

/// Registers (or replaces) task `id` with body `func`.
#[pyfunction]
#[pyo3(signature = (id, func, *, is_async, dependencies, fingerprint))]
pub fn register_task(
    id: String,
    func: Py<PyAny>,
    is_async: bool,
    dependencies: Vec<String>,
    fingerprint: String,
) {
    registry::register_task(TaskDef {
        id,
        dependencies,
        fingerprint,
        body: Arc::new(PyTaskBody { func, is_async }),
    });
}

/// Validates and registers (or replaces) a workflow; returns `(topological_order, version)`.
/// `tasks` is a list of `(id, dependencies, fingerprint)`.
#[pyfunction]
#[pyo3(signature = (name, tasks, description = None))]
pub fn register_workflow(
    name: &str,
    tasks: Vec<(String, Vec<String>, String)>,
    description: Option<String>,
) -> PyResult<(Vec<String>, String)> {
    let specs: Vec<TaskSpec> = tasks
        .into_iter()
        .map(|(id, dependencies, fingerprint)| TaskSpec {
            id,
            dependencies,
            fingerprint,
        })
        .collect();
    let def = registry::register_workflow(name, description, &specs)?;
    Ok((def.graph.ids().to_vec(), def.graph.version().to_string()))
}

/// The version of the registered workflow `name`, if any.
#[pyfunction]
pub fn workflow_version(name: &str) -> Option<String> {
    registry::workflow(name).map(|w| w.graph.version().to_string())
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
