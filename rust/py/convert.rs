//! JSON <-> Python conversions (pythonize), with errors that name the key at fault.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use serde_json::{json, Value};

use crate::context::Map;
use crate::store::RunRecord;

/// A JSON map as a new Python dict.
pub fn map_to_py<'py>(py: Python<'py>, map: &Map) -> PyResult<Bound<'py, PyAny>> {
    pythonize::pythonize(py, map).map_err(|e| PyTypeError::new_err(e.to_string()))
}

/// One Python value as JSON; the error text says what could not be converted.
pub fn value_from_py(value: &Bound<'_, PyAny>) -> Result<Value, String> {
    pythonize::depythonize::<Value>(value).map_err(|e| {
        let type_name = value
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".into());
        format!("a value of type '{type_name}' is not JSON-serializable ({e})")
    })
}

/// A dict of str keys to JSON values; `what` names the dict in errors.
pub fn map_from_py(dict: &Bound<'_, PyAny>, what: &str) -> PyResult<Map> {
    let dict = dict
        .cast::<PyDict>()
        .map_err(|_| PyTypeError::new_err(format!("{what} must be a dict")))?;
    let mut map = Map::with_capacity(dict.len());
    for (key, value) in dict.iter() {
        let key = key
            .cast::<PyString>()
            .map_err(|_| PyTypeError::new_err(format!("{what}: keys must be str, not {key:?}")))?
            .to_string();
        let value = value_from_py(&value)
            .map_err(|e| PyTypeError::new_err(format!("{what}, key '{key}': {e}")))?;
        map.insert(key, value);
    }
    Ok(map)
}

/// A run record as a plain dict for the Python layer (times in integer microseconds).
pub fn run_to_py<'py>(py: Python<'py>, run: &RunRecord) -> PyResult<Bound<'py, PyAny>> {
    let tasks: Vec<Value> = run
        .tasks
        .iter()
        .map(|t| {
            json!({
                "task_id": t.task_id,
                "position": t.position,
                "status": t.status,
                "attempts": t.attempts,
                "started_at": t.started_at,
                "finished_at": t.finished_at,
                "error": t.error,
                "traceback": t.traceback,
                "reason": t.reason,
            })
        })
        .collect();
    let view = json!({
        "run_id": run.run_id,
        "workflow": run.workflow,
        "version": run.version,
        "status": run.status,
        "error": run.error,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "context": Value::Object(run.context()),
        "tasks": tasks,
    });
    pythonize::pythonize(py, &view).map_err(|e| PyTypeError::new_err(e.to_string()))
}
