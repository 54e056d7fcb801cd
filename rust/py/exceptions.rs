//! The Python exception hierarchy and the one mapping from engine errors to it.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

use crate::errors::Error;

create_exception!(cloacina, CloacinaError, PyException, "Base class of every cloacina error.");
create_exception!(cloacina, WorkflowError, CloacinaError, "A workflow definition is invalid.");
create_exception!(
    cloacina,
    WorkflowFailed,
    CloacinaError,
    "A run ended failed (raised by RunResult.raise_for_status)."
);
create_exception!(cloacina, TaskError, CloacinaError, "A task is invalid or produced something unusable.");
create_exception!(cloacina, DatabaseError, CloacinaError, "The database failed or holds unreadable data.");
create_exception!(
    cloacina,
    ConfigurationError,
    CloacinaError,
    "A bad or unsupported setting, such as a database URL."
);

impl From<Error> for PyErr {
    fn from(err: Error) -> PyErr {
        let message = err.to_string();
        match err {
            Error::Configuration(_) => ConfigurationError::new_err(message),
            Error::InvalidArgument(_) => pyo3::exceptions::PyValueError::new_err(message),
            Error::Workflow(_) => WorkflowError::new_err(message),
            Error::Task(_) => TaskError::new_err(message),
            Error::Database(_) => DatabaseError::new_err(message),
            Error::Closed(_) | Error::Forked { .. } | Error::Internal(_) => CloacinaError::new_err(message),
        }
    }
}

/// Adds the exception classes to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("CloacinaError", py.get_type::<CloacinaError>())?;
    m.add("WorkflowError", py.get_type::<WorkflowError>())?;
    m.add("WorkflowFailed", py.get_type::<WorkflowFailed>())?;
    m.add("TaskError", py.get_type::<TaskError>())?;
    m.add("DatabaseError", py.get_type::<DatabaseError>())?;
    m.add("ConfigurationError", py.get_type::<ConfigurationError>())?;
    Ok(())
}
