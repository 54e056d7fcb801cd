//! JSON <-> Python conversions (pythonize), with errors that name the key at fault.

use pyo3::exceptions::PyTypeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::Value;

use crate::context::{Map, MAX_DEPTH};
use crate::store::{RunRecord, RunSummary};

/// A run's final context as a new dict: its input, then every completed task's writes in
/// merge order. No merged copy is built, and each task's output is dropped once
/// converted, so the memory it held serves the Python values (the peak is about one
/// context, not three).
fn context_to_py<'py>(py: Python<'py>, run: &mut RunRecord) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for part in run.take_context_parts() {
        for (key, value) in part {
            dict.set_item(key, value_to_py(py, &value)?)?;
        }
    }
    Ok(dict)
}

/// A JSON value as a new Python object.
pub fn value_to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    pythonize::pythonize(py, value).map_err(|e| PyTypeError::new_err(e.to_string()))
}

/// One Python value as JSON, strictly: dict (str keys), list, tuple, str, int, finite
/// float, bool and None, as `json.dumps` accepts them, plus numpy scalars as the Python
/// numbers they hold. Sets, bytes, NaN, objects and the like are refused (rather than
/// silently converted), with what to store instead; the error names where in the value
/// the offending part is. Values nest at most `context::MAX_DEPTH` levels.
pub fn value_from_py(value: &Bound<'_, PyAny>) -> Result<Value, String> {
    let mut path = String::new();
    json_from_py(value, &mut path, 0)
}

fn json_from_py(value: &Bound<'_, PyAny>, path: &mut String, depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!(
            "{}the value is nested more than {MAX_DEPTH} levels deep (the most cloacina stores)",
            at(path)
        ));
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
        return Ok(Value::String(text_of(s).map_err(|e| format!("{}{e}", at(path)))?));
    }
    if let Ok(dict) = value.cast::<PyDict>() {
        // Iterate a copy: code run while converting a value (a list subclass's
        // __iter__, say) may change the dict, which must give an error, not a panic.
        let before = dict.len();
        let snapshot = dict.copy().map_err(|e| e.to_string())?;
        let mut map = Map::with_capacity(before);
        for (k, v) in snapshot.iter() {
            let key = match k.cast::<PyString>() {
                Ok(k) => text_of(k).map_err(|e| format!("{}a dict key {e}", at(path)))?,
                Err(_) => return Err(format!("{}a dict key must be a str, not {}", at(path), type_name(&k))),
            };
            let len = path.len();
            path.push_str(&format!("['{}']", key.replace('\\', "\\\\").replace('\'', "\\'")));
            let item = json_from_py(&v, path, depth + 1)?;
            path.truncate(len);
            map.insert(key, item);
        }
        if dict.len() != before {
            return Err(format!("{}the dict changed size while it was being converted", at(path)));
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
    if let Some(number) = numpy_scalar(value) {
        return json_from_py(&number, path, depth);
    }
    Err(format!(
        "{}a value of type '{}' is not JSON-serializable; {}",
        at(path),
        type_name(value),
        what_to_store(value)
    ))
}

/// A str's text, strictly: a lone surrogate (not valid UTF-8) is an error, never
/// replaced. A str subclass (a `(str, Enum)` member) gives its string value, not its
/// `__str__`.
fn text_of(s: &Bound<'_, PyString>) -> Result<String, String> {
    match s.to_str() {
        Ok(text) => Ok(text.to_owned()),
        Err(_) => Err(format!("{:?} is not valid text (it holds a lone surrogate)", s.to_string_lossy())),
    }
}

/// A numpy scalar (`np.int64(3)`, `np.bool_(True)`, `np.float32(0.5)`) as the Python
/// value it holds (`.item()`), found without importing numpy.
fn numpy_scalar<'py>(value: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
    let ty = value.get_type();
    if !ty.module().is_ok_and(|m| m.to_str().is_ok_and(|m| m == "numpy")) {
        return None;
    }
    let zero_dimensional = value.getattr(intern!(value.py(), "ndim")).and_then(|n| n.extract::<i64>());
    if zero_dimensional.ok() != Some(0) {
        return None;
    }
    let item = value.call_method0(intern!(value.py(), "item")).ok()?;
    // An item of another numpy type (no Python equivalent) is not unwrapped again.
    (!item.get_type().is(&ty)).then_some(item)
}

/// What to store instead of a value that is not JSON, by its type.
fn what_to_store(value: &Bound<'_, PyAny>) -> &'static str {
    let ty = value.get_type();
    let module = ty.module().map(|m| m.to_string()).unwrap_or_default();
    let name = ty.name().map(|n| n.to_string()).unwrap_or_default();
    match (module.split('.').next().unwrap_or(""), name.as_str()) {
        ("datetime", _) => "store value.isoformat() (a str) instead",
        ("decimal", _) => "store str(value), or float(value), instead",
        ("uuid", _) => "store str(value) instead",
        ("pathlib", _) => "store str(path) instead",
        ("builtins", "set" | "frozenset") => "store a list (sorted(value)) instead",
        ("builtins", "bytes" | "bytearray" | "memoryview") => {
            "store text (value.decode()) or base64, or write the bytes to a file and store its path"
        }
        ("builtins", "complex") => "store [value.real, value.imag] instead",
        ("pandas", _) => {
            "store df.to_dict(orient=\"records\") for small data, or write it to a file (Parquet, \
             CSV) and store the path"
        }
        ("numpy", _) => "store value.tolist() instead",
        _ if value.hasattr("__dataclass_fields__").unwrap_or(false) => {
            "store dataclasses.asdict(value) instead"
        }
        _ => "convert it to dict, list, str, int, float, bool or None first",
    }
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

/// A context key, strictly, as keys nested in values are read: a str's own text (a
/// `(str, Enum)` member gives its value), never renamed through `__str__`; `what` names
/// the dict in errors.
pub fn key_from_py(key: &Bound<'_, PyAny>, what: &str) -> Result<String, String> {
    match key.cast::<PyString>() {
        Ok(k) => text_of(k).map_err(|e| format!("{what}: the key {e}")),
        Err(_) => Err(format!("{what}: keys must be str, not {} ({key:?})", type_name(key))),
    }
}

/// A dict of str keys to JSON values (each nesting at most `MAX_DEPTH` levels, as a
/// task's writes do); `what` names the dict in errors.
pub fn map_from_py(dict: &Bound<'_, PyAny>, what: &str) -> PyResult<Map> {
    let dict = dict.cast::<PyDict>().map_err(|_| PyTypeError::new_err(format!("{what} must be a dict")))?;
    let before = dict.len();
    let mut map = Map::with_capacity(before);
    for (key, value) in dict.copy()?.iter() {
        let key = key_from_py(&key, what).map_err(PyTypeError::new_err)?;
        let value =
            value_from_py(&value).map_err(|e| PyTypeError::new_err(format!("{what}, key '{key}': {e}")))?;
        map.insert(key, value);
    }
    if dict.len() != before {
        return Err(PyTypeError::new_err(format!("{what} changed size while it was being converted")));
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

/// A run summary as a plain dict for the Python layer (times in integer microseconds;
/// `task_counts` maps a status to how many tasks have it).
pub fn summary_to_py<'py>(py: Python<'py>, run: &RunSummary) -> PyResult<Bound<'py, PyAny>> {
    let counts = PyDict::new(py);
    for (status, n) in &run.task_counts {
        counts.set_item(status_to_py(py, status), n)?;
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
    view.set_item(intern!(py, "idempotency_key"), &run.idempotency_key)?;
    view.set_item(intern!(py, "task_counts"), counts)?;
    Ok(view.into_any())
}

/// A run record as a plain dict for the Python layer (times in integer microseconds).
/// Built directly, key by key: this runs once per finished run a caller waits for.
///
/// Each task's dict and each attempt's dict have exactly the fields of the Python
/// `TaskResult` and `Attempt` (times still in microseconds, `duration` None), so the
/// Python layer converts the times in place and adopts the dict as the instance's.
pub fn run_to_py<'py>(py: Python<'py>, mut run: RunRecord) -> PyResult<Bound<'py, PyAny>> {
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
        task.set_item(intern!(py, "dependencies"), &t.dependencies)?;
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
    view.set_item(intern!(py, "context"), context_to_py(py, &mut run)?)?;
    view.set_item(intern!(py, "owner"), &run.owner)?;
    view.set_item(intern!(py, "idempotency_key"), &run.idempotency_key)?;
    view.set_item(intern!(py, "events"), events)?;
    view.set_item(intern!(py, "tasks"), tasks)?;
    Ok(view.into_any())
}
