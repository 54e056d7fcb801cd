//! The Python exception hierarchy and the one mapping from engine errors to it.

use pyo3::import_exception;
use pyo3::prelude::*;

use crate::errors::Error;

// The classes are defined in Python (`cloacina/errors.py`), so that `import cloacina`
// does not need this module: the engine raises them by importing them when it has to.
import_exception!(cloacina.errors, CloacinaError);
import_exception!(cloacina.errors, WorkflowError);
import_exception!(cloacina.errors, TaskError);
import_exception!(cloacina.errors, DatabaseError);
import_exception!(cloacina.errors, ConfigurationError);

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
