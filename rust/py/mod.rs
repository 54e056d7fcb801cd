//! Everything pyo3: the only place Python types appear.

pub mod convert;
pub mod engine;
pub mod exceptions;
pub mod exit_gate;
pub mod invoke;
pub mod logging;
pub mod registry;
pub mod runtime;
pub mod view;
