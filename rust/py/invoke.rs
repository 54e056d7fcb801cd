//! Running Python task bodies: sync functions on the runtime's blocking threads (the GIL
//! held only while Python runs), async functions on the runner's own asyncio loop.

use std::any::Any;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};
use tokio::sync::oneshot;

use super::convert::{map_to_py, value_from_py};
use crate::context::Map;
use crate::engine::{Executor, Job, Outcome};
use crate::registry::TaskBody;

/// A Python callable registered as a task body.
pub struct PyTaskBody {
    pub func: Py<PyAny>,
    pub is_async: bool,
}

impl TaskBody for PyTaskBody {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The Python-side helpers a runner hands to its engine.
pub struct PythonExecutor {
    /// `call_sync(func, task_id, data) -> (writes, touched)`
    call_sync: Py<PyAny>,
    /// `submit_async(func, task_id, data, completion)`: schedules on the runner's loop.
    submit_async: Py<PyAny>,
}

impl PythonExecutor {
    pub fn new(call_sync: Py<PyAny>, submit_async: Py<PyAny>) -> Self {
        PythonExecutor {
            call_sync,
            submit_async,
        }
    }
}

impl Executor for Arc<PythonExecutor> {
    fn execute(&self, job: Job) -> BoxFuture<'static, Outcome> {
        let this = self.clone();
        Box::pin(async move {
            let is_async = match job.body.as_any().downcast_ref::<PyTaskBody>() {
                Some(body) => body.is_async,
                None => return failed(format!("task '{}' has no Python body", job.task_id)),
            };
            if !is_async {
                let run = tokio::task::spawn_blocking(move || {
                    Python::attach(|py| this.run_sync(py, &job))
                });
                return run
                    .await
                    .unwrap_or_else(|e| failed(format!("internal error: {e}")));
            }
            let (tx, rx) = oneshot::channel();
            let scheduled = tokio::task::spawn_blocking(move || {
                Python::attach(|py| this.schedule_async(py, job, tx))
            });
            match scheduled.await {
                Ok(Ok(())) => {}
                Ok(Err(outcome)) => return outcome,
                Err(e) => return failed(format!("internal error: {e}")),
            }
            rx.await.unwrap_or_else(|_| {
                failed("the runner's asyncio loop stopped before the task finished".into())
            })
        })
    }
}

impl PythonExecutor {
    fn run_sync(&self, py: Python<'_>, job: &Job) -> Outcome {
        let body = job
            .body
            .as_any()
            .downcast_ref::<PyTaskBody>()
            .expect("checked by execute");
        let data = match map_to_py(py, &job.input) {
            Ok(d) => d,
            Err(e) => {
                return failed(format!(
                    "task '{}': cannot build its context: {e}",
                    job.task_id
                ))
            }
        };
        match self
            .call_sync
            .bind(py)
            .call1((body.func.bind(py), &*job.task_id, data))
        {
            Ok(result) => delta_from_py(&job.task_id, &job.input, &result),
            Err(err) => failure_from_pyerr(py, &err),
        }
    }

    fn schedule_async(
        &self,
        py: Python<'_>,
        job: Job,
        tx: oneshot::Sender<Outcome>,
    ) -> Result<(), Outcome> {
        let body = job
            .body
            .as_any()
            .downcast_ref::<PyTaskBody>()
            .expect("checked by execute");
        let data = map_to_py(py, &job.input).map_err(|e| {
            failed(format!(
                "task '{}': cannot build its context: {e}",
                job.task_id
            ))
        })?;
        let completion = Completion {
            task_id: job.task_id.clone(),
            input: job.input.clone(),
            sender: Mutex::new(Some(tx)),
        };
        self.submit_async
            .bind(py)
            .call1((body.func.bind(py), &*job.task_id, data, completion))
            .map(drop)
            .map_err(|err| failure_from_pyerr(py, &err))
    }
}

/// Handed to the asyncio side: called once, on the loop thread, with the task's result.
#[pyclass(frozen, module = "cloacina._native")]
pub struct Completion {
    task_id: Arc<str>,
    input: Arc<Map>,
    sender: Mutex<Option<oneshot::Sender<Outcome>>>,
}

#[pymethods]
impl Completion {
    /// The coroutine returned; `result` is `(writes, touched)` as from `call_sync`.
    fn ok(&self, result: &Bound<'_, PyAny>) {
        self.send(delta_from_py(&self.task_id, &self.input, result));
    }

    /// The coroutine raised `error`.
    fn fail(&self, error: &Bound<'_, PyAny>) {
        let err = PyErr::from_value(error.clone());
        self.send(failure_from_pyerr(error.py(), &err));
    }
}

impl Completion {
    fn send(&self, outcome: Outcome) {
        let sender = self.sender.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(sender) = sender {
            let _ = sender.send(outcome);
        }
    }
}

fn failed(error: String) -> Outcome {
    Outcome::Failed {
        error,
        traceback: None,
    }
}

/// Turns `(writes, touched)` into the task's delta. `writes` are keys the task assigned;
/// `touched` are keys whose mutable values it read, kept only if they changed.
fn delta_from_py(task_id: &str, input: &Map, result: &Bound<'_, PyAny>) -> Outcome {
    let pair = match result.cast::<PyTuple>() {
        Ok(t) if t.len() == 2 => t.clone(),
        _ => {
            return failed(format!(
                "internal error: task '{task_id}' returned an unexpected shape"
            ))
        }
    };
    let mut delta = Map::new();
    for (i, dict) in pair.iter().enumerate() {
        let Ok(dict) = dict.cast::<PyDict>().cloned() else {
            return failed(format!(
                "internal error: task '{task_id}' returned an unexpected shape"
            ));
        };
        for (key, value) in dict.iter() {
            let key = match key.cast::<PyString>() {
                Ok(k) => k.to_string(),
                Err(_) => {
                    return failed(format!(
                        "task '{task_id}' wrote a context key that is not a str: {key:?}"
                    ))
                }
            };
            let value = match value_from_py(&value) {
                Ok(v) => v,
                Err(e) => return failed(format!("task '{task_id}' wrote key '{key}': {e}")),
            };
            if i == 1 && input.get(&key) == Some(&value) {
                continue; // read but unchanged
            }
            delta.insert(key, value);
        }
    }
    Outcome::Completed(delta)
}

/// An exception as `"Type: message"` plus its formatted traceback (engine frames removed).
fn failure_from_pyerr(py: Python<'_>, err: &PyErr) -> Outcome {
    let value = err.value(py);
    if let Some(tb) = err.traceback(py) {
        let _ = value.setattr("__traceback__", tb);
    }
    let described = py
        .import("cloacina._invoke")
        .and_then(|m| m.call_method1("describe_failure", (value,)))
        .and_then(|pair| pair.extract::<(String, String)>());
    match described {
        Ok((error, traceback)) => Outcome::Failed {
            error,
            traceback: Some(traceback),
        },
        Err(_) => Outcome::Failed {
            error: err.to_string(),
            traceback: None,
        },
    }
}
