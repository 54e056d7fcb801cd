//! `ContextView`: a task's context as the engine holds it, handed to Python without
//! copying. A value becomes a Python object only when the task reads it; a value the
//! engine evicted from memory is read back from the database then (once per attempt).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};

use super::convert::value_to_py;
use super::runtime::{spin_for, wait_spinning};
use crate::context::{Delta, Found, Map, View};
use crate::engine::{Reads, Recall};
use crate::errors::Error;

/// The engine's view of a task's context (read-only). `cloacina.Context` wraps it,
/// converting each value once, on first read.
#[pyclass(frozen, module = "cloacina._native", name = "ContextView")]
pub struct ContextView {
    view: View,
    recall: Recall,
    /// The task whose context this is (for messages).
    task_id: Arc<str>,
    /// Writes read back from the database during this attempt, by their `Delta`'s
    /// address (the view holds every `Delta` it names, so an address is never reused).
    recalled: Mutex<HashMap<usize, Arc<Map>>>,
}

impl ContextView {
    /// Task `task_id`'s context `view`, reading evicted writes back through `recall`.
    pub fn new(view: &View, recall: &Recall, task_id: &Arc<str>) -> ContextView {
        ContextView {
            view: view.clone(),
            recall: recall.clone(),
            task_id: task_id.clone(),
            recalled: Mutex::new(HashMap::new()),
        }
    }

    /// The writes holding the value of `key` (the value is `map[key]`), read back from
    /// the database if they left memory; None when `key` is not there.
    pub fn lookup(&self, py: Python<'_>, key: &str) -> PyResult<Option<Arc<Map>>> {
        match self.view.find(key) {
            None => Ok(None),
            Some(Found::Resident(map)) => Ok(Some(map)),
            Some(Found::Stored(delta)) => self.recall(py, key, &delta).map(Some),
        }
    }

    fn recall(&self, py: Python<'_>, key: &str, delta: &Arc<Delta>) -> PyResult<Arc<Map>> {
        let address = Arc::as_ptr(delta) as usize;
        if let Some(map) = self.recalled.lock().unwrap_or_else(PoisonError::into_inner).get(&address) {
            return Ok(map.clone());
        }
        let recall = self.recall.clone();
        let read = {
            let delta = delta.clone();
            async move { Ok::<_, Error>(recall.values(&delta, Reads::Inline).await) }
        };
        let spin = spin_for(self.recall.answers_quickly());
        let map = wait_spinning(py, read, None, spin)?.expect("no timeout");
        let map = match map {
            Ok(map) => map,
            Err(e) => {
                let writer = delta.writer().map_or("?", |w| &**w);
                let e = Error::Database(format!(
                    "task '{}' read key '{key}', written by task '{writer}': reading it back from the database failed: {e}",
                    self.task_id
                ));
                return Err(e.into());
            }
        };
        self.recalled.lock().unwrap_or_else(PoisonError::into_inner).insert(address, map.clone());
        Ok(map)
    }
}

/// `key` as a str; None for a key that is not a `str` (never in a context).
fn as_str<'a>(key: &'a Bound<'_, PyAny>) -> PyResult<Option<&'a str>> {
    match key.cast::<PyString>() {
        Ok(key) => Ok(Some(key.to_str()?)),
        Err(_) => Ok(None),
    }
}

#[pymethods]
impl ContextView {
    /// The value of `key` (a new Python object), or `default` when it is absent.
    #[pyo3(signature = (key, default=None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let Some(key) = as_str(key)? else {
            return Ok(default.unwrap_or_else(|| py.None().into_bound(py)));
        };
        match self.lookup(py, key)?.as_ref().and_then(|map| map.get(key)) {
            Some(value) => value_to_py(py, value),
            None => Ok(default.unwrap_or_else(|| py.None().into_bound(py))),
        }
    }

    fn __contains__(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(as_str(key)?.is_some_and(|k| self.view.contains_key(k)))
    }

    fn __len__(&self) -> usize {
        self.view.len()
    }

    /// The keys, in order (a new list).
    fn keys<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.view.keys())
    }
}
