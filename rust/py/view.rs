//! `ContextView`: a task's context as the engine holds it, handed to Python without
//! copying. A value becomes a Python object only when the task reads it.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use super::convert::value_to_py;
use crate::context::View;

/// The engine's view of a task's context (read-only). `cloacina.Context` wraps it,
/// converting each value once, on first read.
#[pyclass(frozen, module = "cloacina._native", name = "ContextView")]
pub struct ContextView {
    pub view: View,
}

/// `f` of `key` as a str; None for a key that is not a `str` (never in a context).
fn with_str<T>(key: &Bound<'_, PyAny>, f: impl FnOnce(&str) -> T) -> PyResult<Option<T>> {
    match key.cast::<PyString>() {
        Ok(key) => Ok(Some(f(key.to_str()?))),
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
        match with_str(key, |k| self.view.get(k))?.flatten() {
            Some(value) => value_to_py(py, value),
            None => Ok(default.unwrap_or_else(|| py.None().into_bound(py))),
        }
    }

    fn __contains__(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(with_str(key, |k| self.view.contains_key(k))?.unwrap_or(false))
    }

    fn __len__(&self) -> usize {
        self.view.len()
    }

    /// The keys, in order (a new list).
    fn keys<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.view.keys())
    }
}

/// A view as a new dict, in its order.
pub fn view_to_py<'py>(py: Python<'py>, view: &View) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (key, value) in view.iter() {
        dict.set_item(key, value_to_py(py, value)?)?;
    }
    Ok(dict)
}
