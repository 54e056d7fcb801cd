//! cloacina's native core: a durable workflow engine for Python tasks.
//!
//! The engine (`graph`, `context`, `registry`, `store`, `engine`) holds no pyo3 types
//! and is tested with `cargo test`; `py` binds it to Python as `cloacina._native`.

pub mod context;
pub mod duration;
pub mod engine;
pub mod errors;
pub mod graph;
pub mod policy;
pub mod process;
pub mod py;
pub mod registry;
pub mod rules;
pub mod store;

use pyo3::prelude::*;

/// The `cloacina._native` module: wiring only.
#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    py::logging::install(m.py());
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<py::engine::PyEngine>()?;
    m.add_class::<py::invoke::Completion>()?;
    m.add_class::<py::view::ContextView>()?;
    m.add_function(wrap_pyfunction!(py::registry::register_task, m)?)?;
    m.add_function(wrap_pyfunction!(py::registry::register_workflow, m)?)?;
    m.add_function(wrap_pyfunction!(py::registry::current_workflow, m)?)?;
    m.add_class::<py::registry::PyRegistrySnapshot>()?;
    m.add_function(wrap_pyfunction!(py::registry::registry_snapshot, m)?)?;
    m.add_function(wrap_pyfunction!(py::registry::registry_restore, m)?)?;
    m.add_function(wrap_pyfunction!(py::registry::validate_rule, m)?)?;
    m.add_function(wrap_pyfunction!(py::registry::bind_sqlite, m)?)?;
    m.add_function(wrap_pyfunction!(py::registry::drop_postgres_schema, m)?)?;
    m.add_function(wrap_pyfunction!(py::logging::reset_logging, m)?)?;
    m.add_function(wrap_pyfunction!(py::exit_gate::interpreter_exiting, m)?)?;
    Ok(())
}
