//! JSON <-> Python conversions (pythonize), with errors that name the key at fault.

use pyo3::exceptions::PyTypeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::Value;

use crate::context::Map;
use crate::store::RunRecord;

/// A JSON map as a new Python dict.
pub fn map_to_py<'py>(py: Python<'py>, map: &Map) -> PyResult<Bound<'py, PyAny>> {
    pythonize::pythonize(py, map).map_err(|e| PyTypeError::new_err(e.to_string()))
}

/// One Python value as JSON, strictly: dict (str keys), list, tuple, str, int, finite
/// float, bool and None, as `json.dumps` accepts them. Sets, bytes, NaN, objects and the
/// like are refused (rather than silently converted); the error names where in the value
/// the offending part is.
pub fn value_from_py(value: &Bound<'_, PyAny>) -> Result<Value, String> {
    let mut path = String::new();
    json_from_py(value, &mut path, 0)
}

const MAX_DEPTH: usize = 512;

fn json_from_py(value: &Bound<'_, PyAny>, path: &mut String, depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!("the value is nested more than {MAX_DEPTH} levels deep (at {path})"));
    }
    if value.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = value.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if let Ok(i) = value.cast::<PyInt>() {
        if let Ok(v) = i.extract::<i64>() {
            return Ok(Value::from(v));
        }
        if let Ok(v) = i.extract::<u64>() {
            return Ok(Value::from(v));
        }
        return Err(format!("{}the integer {i} does not fit in 64 bits", at(path)));
    }
    if let Ok(f) = value.cast::<PyFloat>() {
        let v = f.value();
        return serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| format!("{}the float {v} is not a JSON number", at(path)));
    }
    if let Ok(s) = value.cast::<PyString>() {
        return Ok(Value::String(s.to_str().map_err(|e| e.to_string())?.to_owned()));
    }
    if let Ok(dict) = value.cast::<PyDict>() {
        let mut map = Map::with_capacity(dict.len());
        for (k, v) in dict.iter() {
            let key = match k.cast::<PyString>() {
                Ok(k) => k.to_str().map_err(|e| e.to_string())?.to_owned(),
                Err(_) => return Err(format!("{}a dict key must be a str, not {}", at(path), type_name(&k))),
            };
            let len = path.len();
            path.push_str(&format!("[{key:?}]"));
            let item = json_from_py(&v, path, depth + 1)?;
            path.truncate(len);
            map.insert(key, item);
        }
        return Ok(Value::Object(map));
    }
    if value.is_instance_of::<PyList>() || value.is_instance_of::<PyTuple>() {
        let mut items = Vec::new();
        for (i, item) in value.try_iter().map_err(|e| e.to_string())?.enumerate() {
            let item = item.map_err(|e| e.to_string())?;
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            items.push(json_from_py(&item, path, depth + 1)?);
            path.truncate(len);
        }
        return Ok(Value::Array(items));
    }
    Err(format!("{}a value of type '{}' is not JSON-serializable", at(path), type_name(value)))
}

fn at(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("at {path}: ")
    }
}

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value.get_type().qualname().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
}

/// A dict of str keys to JSON values; `what` names the dict in errors.
pub fn map_from_py(dict: &Bound<'_, PyAny>, what: &str) -> PyResult<Map> {
    let dict = dict.cast::<PyDict>().map_err(|_| PyTypeError::new_err(format!("{what} must be a dict")))?;
    let mut map = Map::with_capacity(dict.len());
    for (key, value) in dict.iter() {
        let key = key
            .cast::<PyString>()
            .map_err(|_| PyTypeError::new_err(format!("{what}: keys must be str, not {key:?}")))?
            .to_string();
        let value =
            value_from_py(&value).map_err(|e| PyTypeError::new_err(format!("{what}, key '{key}': {e}")))?;
        map.insert(key, value);
    }
    Ok(map)
}

/// A JSON value (a stored document such as hook errors or an event's detail) as Python.
fn json_to_py<'py>(py: Python<'py>, text: Option<&str>) -> PyResult<Bound<'py, PyAny>> {
    match text.and_then(|t| serde_json::from_str::<Value>(t).ok()) {
        Some(value) => pythonize::pythonize(py, &value).map_err(|e| PyTypeError::new_err(e.to_string())),
        None => Ok(py.None().into_bound(py)),
    }
}

/// A task or attempt status as a Python str; the known ones are interned, so a result
/// of hundreds of tasks does not create a string for each.
fn status_to_py<'py>(py: Python<'py>, status: &str) -> Bound<'py, PyString> {
    let known = match status {
        "completed" => intern!(py, "completed"),
        "failed" => intern!(py, "failed"),
        "pending" => intern!(py, "pending"),
        "ready" => intern!(py, "ready"),
        "running" => intern!(py, "running"),
        "skipped" => intern!(py, "skipped"),
        "upstream_failed" => intern!(py, "upstream_failed"),
        "cancelled" => intern!(py, "cancelled"),
        _ => return PyString::new(py, status),
    };
    known.clone()
}

/// A run record as a plain dict for the Python layer (times in integer microseconds).
/// Built directly, key by key: this runs once per finished run a caller waits for.
///
/// Each task's dict and each attempt's dict have exactly the fields of the Python
/// `TaskResult` and `Attempt` (times still in microseconds, `duration` None), so the
/// Python layer converts the times in place and adopts the dict as the instance's.
pub fn run_to_py<'py>(py: Python<'py>, run: &RunRecord) -> PyResult<Bound<'py, PyAny>> {
    let tasks = PyList::empty(py);
    for t in &run.tasks {
        let history = PyList::empty(py);
        for a in &t.history {
            let attempt = PyDict::new(py);
            attempt.set_item(intern!(py, "attempt"), a.attempt)?;
            attempt.set_item(intern!(py, "status"), status_to_py(py, &a.status))?;
            attempt.set_item(intern!(py, "started_at"), a.started_at)?;
            attempt.set_item(intern!(py, "finished_at"), a.finished_at)?;
            attempt.set_item(intern!(py, "duration"), py.None())?;
            attempt.set_item(intern!(py, "error"), &a.error)?;
            attempt.set_item(intern!(py, "traceback"), &a.traceback)?;
            history.append(attempt)?;
        }
        let next_attempt_at = if t.status == "ready" { t.ready_at } else { None };
        let mut hook_errors = json_to_py(py, t.hook_errors.as_deref())?;
        if hook_errors.is_none() {
            hook_errors = PyList::empty(py).into_any();
        }
        let task = PyDict::new(py);
        task.set_item(intern!(py, "task_id"), &t.task_id)?;
        task.set_item(intern!(py, "status"), status_to_py(py, &t.status))?;
        task.set_item(intern!(py, "attempts"), t.attempts)?;
        task.set_item(intern!(py, "started_at"), t.started_at)?;
        task.set_item(intern!(py, "finished_at"), t.finished_at)?;
        task.set_item(intern!(py, "duration"), py.None())?;
        task.set_item(intern!(py, "error"), &t.error)?;
        task.set_item(intern!(py, "traceback"), &t.traceback)?;
        task.set_item(intern!(py, "reason"), &t.reason)?;
        task.set_item(intern!(py, "history"), history)?;
        task.set_item(intern!(py, "next_attempt_at"), next_attempt_at)?;
        task.set_item(intern!(py, "hook_errors"), hook_errors)?;
        tasks.append(task)?;
    }
    let events = PyList::empty(py);
    for (at, kind, detail) in &run.events {
        let event = PyDict::new(py);
        event.set_item(intern!(py, "at"), at)?;
        event.set_item(intern!(py, "kind"), kind)?;
        event.set_item(intern!(py, "detail"), json_to_py(py, detail.as_deref())?)?;
        events.append(event)?;
    }
    let view = PyDict::new(py);
    view.set_item(intern!(py, "run_id"), &run.run_id)?;
    view.set_item(intern!(py, "workflow"), &run.workflow)?;
    view.set_item(intern!(py, "version"), &run.version)?;
    view.set_item(intern!(py, "status"), &run.status)?;
    view.set_item(intern!(py, "error"), &run.error)?;
    view.set_item(intern!(py, "created_at"), run.created_at)?;
    view.set_item(intern!(py, "started_at"), run.started_at)?;
    view.set_item(intern!(py, "finished_at"), run.finished_at)?;
    view.set_item(intern!(py, "context"), map_to_py(py, &run.context())?)?;
    view.set_item(intern!(py, "owner"), &run.owner)?;
    view.set_item(intern!(py, "idempotency_key"), &run.idempotency_key)?;
    view.set_item(intern!(py, "events"), events)?;
    view.set_item(intern!(py, "tasks"), tasks)?;
    Ok(view.into_any())
}
