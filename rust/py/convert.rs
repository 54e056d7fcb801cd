//! JSON <-> Python conversions (pythonize), with errors that name the key at fault.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{json, Value};

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
                "ready_at": t.ready_at,
                "hook_errors": t.hook_errors.as_deref().and_then(|h| serde_json::from_str::<Value>(h).ok()),
                "history": t.history.iter().map(|a| json!({
                    "attempt": a.attempt,
                    "status": a.status,
                    "started_at": a.started_at,
                    "finished_at": a.finished_at,
                    "error": a.error,
                    "traceback": a.traceback,
                })).collect::<Vec<_>>(),
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
        "owner": run.owner,
        "idempotency_key": run.idempotency_key,
        "events": run.events.iter().map(|(at, kind, detail)| json!({
            "at": at,
            "kind": kind,
            "detail": detail.as_deref().and_then(|d| serde_json::from_str::<Value>(d).ok()),
        })).collect::<Vec<_>>(),
        "tasks": tasks,
    });
    pythonize::pythonize(py, &view).map_err(|e| PyTypeError::new_err(e.to_string()))
}
