//! The bridge from Rust's `log` records to Python's `logging`: only the engine's own
//! records ("cloacina.*" loggers) go through; dependencies stay quiet.

use std::sync::OnceLock;

use log::LevelFilter;
use pyo3::prelude::*;
use pyo3_log::{Caching, Logger, ResetHandle};

static RESET: OnceLock<ResetHandle> = OnceLock::new();

/// Installs the bridge (once per process).
pub fn install(py: Python<'_>) {
    let Ok(logger) = Logger::new(py, Caching::LoggersAndLevels) else {
        return;
    };
    let logger = logger.filter(LevelFilter::Off).filter_target("cloacina".to_owned(), LevelFilter::Trace);
    if let Ok(handle) = logger.install() {
        let _ = RESET.set(handle);
    }
}

/// Forgets cached Python logger levels, so logging configured after import takes effect.
#[pyfunction]
pub fn reset_logging() {
    if let Some(handle) = RESET.get() {
        handle.reset();
    }
}
