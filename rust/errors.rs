//! The engine's one error type. No pyo3 here: `py/exceptions.rs` maps it to Python.

/// Everything that can go wrong inside the engine, by what the user has to do about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Bad or unsupported configuration (a database URL, an option value).
    #[error("{0}")]
    Configuration(String),
    /// An argument out of range (a duration, a count): Python's `ValueError`.
    #[error("{0}")]
    InvalidArgument(String),
    /// A workflow definition that cannot run (cycle, unknown dependency, duplicate id...).
    #[error("{0}")]
    Workflow(String),
    /// A task-level problem detected by the engine (for example, an unknown task id).
    #[error("{0}")]
    Task(String),
    /// The database failed or holds something the engine cannot read.
    #[error("database error: {0}")]
    Database(String),
    /// The runner was closed, or its engine stopped.
    #[error("{0}")]
    Closed(String),
    /// The process forked after the engine started: the child cannot use it.
    #[error("cloacina cannot be used in a forked child process (pid {child}) of the process that started it (pid {parent}); create the Runner after the fork")]
    Forked { parent: u32, child: u32 },
    /// An engine bug: a panic or a broken internal invariant.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Shorthand used across the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        Error::Database(err.to_string())
    }
}

impl From<rusqlite::Error> for Error {
    fn from(err: rusqlite::Error) -> Self {
        Error::Database(err.to_string())
    }
}

impl From<sqlx::migrate::MigrateError> for Error {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        Error::Database(format!("migrating the schema failed: {err}"))
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Error::Database(format!("stored JSON is invalid: {err}"))
    }
}
