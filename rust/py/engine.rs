//! `Engine`: the native object behind `cloacina.Runner`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyList;

use super::convert::{map_from_py, run_to_py, summary_to_py};
use super::invoke::PythonExecutor;
use super::runtime::{awaitable, spin_for, wait, wait_spinning};
use crate::engine::{Engine, EngineConfig, Reads};
use crate::errors::Error;
use crate::registry;
use crate::store::{Durability, PostgresConfig, PostgresStore, RunFilter, SqliteConfig, SqliteStore, Store};

/// How long a timed-out `wait` gives its last look at the run (see `PyEngine::wait`).
const LAST_LOOK: Duration = Duration::from_secs(1);

/// A running engine over one database. Methods without `_async` block without the GIL.
#[pyclass(frozen, name = "Engine", module = "cloacina._native")]
pub struct PyEngine {
    engine: Arc<Engine>,
    /// The process that started the engine: in a forked child its threads do not exist.
    pid: u32,
    /// How long a caller spins for an answer before it sleeps (see `wait_spinning`).
    spin: Duration,
}

fn workflow_def(name: &str) -> PyResult<Arc<registry::WorkflowDef>> {
    Ok(registry::current_workflow(name)?)
}

#[pymethods]
impl PyEngine {
    /// Opens the SQLite database at `path` (None: in memory), or the PostgreSQL database
    /// `postgres` = (URL, URL with its password masked, schema), and starts the engine.
    #[new]
    #[pyo3(signature = (path, *, durability, max_concurrency, call_sync, submit_async, interrupt, call_hook, recover = true, lease = 30.0, postgres = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: Option<PathBuf>,
        durability: &str,
        max_concurrency: usize,
        call_sync: Py<PyAny>,
        submit_async: Py<PyAny>,
        interrupt: Py<PyAny>,
        call_hook: Py<PyAny>,
        recover: bool,
        lease: f64,
        postgres: Option<(String, String, Option<String>)>,
    ) -> PyResult<Self> {
        let lease = crate::duration::seconds("lease", lease)?;
        if lease < Duration::from_secs(1) {
            return Err(PyValueError::new_err("lease must be at least 1 second"));
        }
        // max_concurrency 0: a submit-only engine, which queues runs and takes none.
        let recover = recover && max_concurrency > 0;
        let durability = durability.parse::<Durability>()?;
        let executor = Arc::new(PythonExecutor::new(call_sync, submit_async, interrupt, call_hook));
        let engine = wait(
            py,
            async move {
                let store: Arc<dyn Store> = match postgres {
                    Some((url, label, schema)) => {
                        Arc::new(PostgresStore::open(&PostgresConfig::new(url, label, schema)).await?)
                    }
                    None => {
                        let mut config = SqliteConfig::new(path);
                        config.durability = durability;
                        Arc::new(SqliteStore::open(&config).await?)
                    }
                };
                let engine_config = EngineConfig { max_concurrency, lease, recover };
                let engine = Engine::start(store, Arc::new(executor), engine_config)?;
                if recover {
                    // Runs interrupted by a crash continue now, not after the first check.
                    if let Err(e) = engine.recover_orphans().await {
                        log::warn!("recovering interrupted runs failed: {e}");
                    }
                }
                Ok(engine)
            },
            None,
        )?
        .expect("no timeout");
        let spin = spin_for(engine.answers_quickly());
        Ok(PyEngine { engine: Arc::new(engine), pid: std::process::id(), spin })
    }

    /// Starts a run of the registered workflow `workflow`; returns the run id (of the
    /// existing run, if `idempotency_key` was used before).
    #[pyo3(signature = (workflow, input, idempotency_key = None))]
    fn submit(
        &self,
        py: Python<'_>,
        workflow: &str,
        input: &Bound<'_, PyAny>,
        idempotency_key: Option<String>,
    ) -> PyResult<String> {
        let def = workflow_def(workflow)?;
        let input = map_from_py(input, "the run's input")?;
        let submit = self.engine()?.submit(def, input, idempotency_key, Reads::Inline);
        Ok(self.block(py, submit, None)?.expect("no timeout"))
    }

    /// Continues an interrupted run, or re-executes a failed or cancelled one.
    fn resume(&self, py: Python<'_>, run_id: String) -> PyResult<()> {
        let engine = self.engine()?.clone();
        self.block(py, async move { engine.resume(&run_id).await }, None)?;
        Ok(())
    }

    /// Takes over runs whose owner is gone; returns their ids.
    fn recover(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let engine = self.engine()?.clone();
        Ok(self.block(py, async move { engine.recover_orphans().await }, None)?.expect("no timeout"))
    }

    /// Awaitable twin of `submit`.
    #[pyo3(signature = (workflow, input, idempotency_key = None))]
    fn submit_async<'py>(
        &self,
        py: Python<'py>,
        workflow: &str,
        input: &Bound<'_, PyAny>,
        idempotency_key: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let def = workflow_def(workflow)?;
        let input = map_from_py(input, "the run's input")?;
        let engine = self.engine()?.clone();
        awaitable(py, async move { Ok(engine.submit(def, input, idempotency_key, Reads::Offloaded).await?) })
    }

    /// Blocks until run `run_id` is final; False if `timeout` seconds pass first. With
    /// `lend`, the caller is a running attempt of this engine, whose slot is lent to
    /// the engine's other runs while it waits.
    #[pyo3(signature = (run_id, timeout = None, lend = false))]
    fn wait(&self, py: Python<'_>, run_id: String, timeout: Option<f64>, lend: bool) -> PyResult<bool> {
        let timeout = timeout.map(|t| crate::duration::seconds("timeout", t)).transpose()?;
        let done = if lend {
            self.block(py, self.engine()?.wait_lending(&run_id, Reads::Inline), timeout)?
        } else {
            self.block(py, self.engine()?.wait(&run_id, Reads::Inline), timeout)?
        };
        if done.is_none() {
            // Timed out (a zero timeout included): the run may have ended meanwhile, or
            // before a read over the network could answer. One last look decides, for at
            // most `LAST_LOOK`: a database that does not answer (down, or the row locked)
            // must not hold the caller past its timeout for longer than that.
            let last_look =
                self.block(py, self.engine()?.is_final(&run_id, Reads::Inline), Some(LAST_LOOK))?;
            return Ok(last_look.unwrap_or(false));
        }
        Ok(true)
    }

    /// Awaitable twin of `wait` (no timeout: use asyncio.wait_for).
    #[pyo3(signature = (run_id, lend = false))]
    fn wait_async<'py>(&self, py: Python<'py>, run_id: String, lend: bool) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        awaitable(py, async move {
            if lend {
                Ok(engine.wait_lending(&run_id, Reads::Offloaded).await?)
            } else {
                Ok(engine.wait(&run_id, Reads::Offloaded).await?)
            }
        })
    }

    /// Cancels run `run_id` (here, or by asking its owner); False if unknown or final.
    fn cancel(&self, py: Python<'_>, run_id: String) -> PyResult<bool> {
        let engine = self.engine()?.clone();
        Ok(self.block(py, async move { engine.cancel(&run_id).await }, None)?.expect("no timeout"))
    }

    /// Awaitable twin of `cancel`.
    fn cancel_async<'py>(&self, py: Python<'py>, run_id: String) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        awaitable(py, async move { Ok(engine.cancel(&run_id).await?) })
    }

    /// Run `run_id` as a dict, or None.
    fn get_run(&self, py: Python<'_>, run_id: String) -> PyResult<Option<Py<PyAny>>> {
        // Read on this thread with the GIL released: no hop to another thread.
        let run = self.block(py, self.engine()?.get_run(&run_id, Reads::Inline), None)?.expect("no timeout");
        run.map(|r| run_to_py(py, r).map(Bound::unbind)).transpose()
    }

    /// Run `run_id` as a dict once `wait` returned True: as this engine ended it when it
    /// ran here (no database read), else as stored; None if there is no such run.
    fn ended_run(&self, py: Python<'_>, run_id: String) -> PyResult<Option<Py<PyAny>>> {
        let run =
            self.block(py, self.engine()?.ended_run(&run_id, Reads::Inline), None)?.expect("no timeout");
        run.map(|r| run_to_py(py, r).map(Bound::unbind)).transpose()
    }

    /// Awaitable twin of `ended_run`.
    fn ended_run_async<'py>(&self, py: Python<'py>, run_id: String) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        awaitable(py, async move {
            let run = engine.ended_run(&run_id, Reads::Offloaded).await?;
            Python::attach(|py| run.map(|r| run_to_py(py, r).map(Bound::unbind)).transpose())
        })
    }

    /// The database's schema version (its latest migration).
    fn schema_version(&self) -> PyResult<i64> {
        Ok(self.engine()?.schema_version())
    }

    /// Run `run_id`'s status as stored, or None; reads one row, not the run's tasks.
    fn run_status(&self, py: Python<'_>, run_id: String) -> PyResult<Option<String>> {
        Ok(self.block(py, self.engine()?.run_status(&run_id, Reads::Inline), None)?.expect("no timeout"))
    }

    /// Stops claiming runs and starting attempts; returns once no attempt runs.
    fn drain(&self, py: Python<'_>) -> PyResult<()> {
        let engine = self.engine()?.clone();
        self.block(py, async move { engine.drain().await }, None)?;
        Ok(())
    }

    /// Deletes the runs that finished before `before` (microseconds since the epoch),
    /// with all their rows; returns how many.
    fn purge(&self, py: Python<'_>, before: i64) -> PyResult<usize> {
        let engine = self.engine()?.clone();
        Ok(self.block(py, async move { engine.purge(before).await }, None)?.expect("no timeout"))
    }

    /// How many runs this engine drives now.
    fn driving(&self) -> PyResult<usize> {
        Ok(self.engine()?.driving())
    }

    /// The first task (in merge order) of run `run_id`, other than `task_id`, that
    /// completed having written `key`: named when a task reads a key missing from its
    /// context. None when there is none.
    fn writer_of(
        &self,
        py: Python<'_>,
        run_id: String,
        task_id: String,
        key: String,
    ) -> PyResult<Option<String>> {
        let run = self.block(py, self.engine()?.get_run(&run_id, Reads::Inline), None)?.expect("no timeout");
        Ok(run.and_then(|run| {
            run.tasks
                .into_iter()
                .filter(|t| t.task_id != task_id && t.status == "completed")
                .find(|t| t.output.as_ref().is_some_and(|o| o.contains_key(&key)))
                .map(|t| t.task_id)
        }))
    }

    /// Awaitable twin of `get_run`.
    fn get_run_async<'py>(&self, py: Python<'py>, run_id: String) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        awaitable(py, async move {
            let run = engine.get_run(&run_id, Reads::Offloaded).await?;
            Python::attach(|py| run.map(|r| run_to_py(py, r).map(Bound::unbind)).transpose())
        })
    }

    /// Runs as summary dicts (no context, no tasks), newest first.
    #[pyo3(signature = (workflow = None, status = None, limit = 50, run_id = None))]
    fn list_runs<'py>(
        &self,
        py: Python<'py>,
        workflow: Option<String>,
        status: Option<String>,
        limit: u32,
        run_id: Option<String>,
    ) -> PyResult<Bound<'py, PyList>> {
        let engine = self.engine()?.clone();
        let filter = RunFilter { workflow, status, run_id, limit };
        let runs = self
            .block(py, async move { engine.list_runs(&filter, Reads::Inline).await }, None)?
            .expect("no timeout");
        let items = runs.iter().map(|r| summary_to_py(py, r)).collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items)
    }

    /// Lets running attempts finish, then closes the database. Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let engine = self.engine()?.clone();
        wait(
            py,
            async move {
                engine.close().await;
                Ok(())
            },
            None,
        )?;
        Ok(())
    }

    /// The database file (or ":memory:").
    #[getter]
    fn store(&self) -> String {
        self.engine.store_label().to_string()
    }
}

impl PyEngine {
    /// Waits for `fut` without the GIL (`runtime::wait`), spinning as suits the store.
    fn block<T: Send>(
        &self,
        py: Python<'_>,
        fut: impl std::future::Future<Output = crate::errors::Result<T>> + Send,
        timeout: Option<Duration>,
    ) -> PyResult<Option<T>> {
        wait_spinning(py, fut, timeout, self.spin)
    }

    /// The engine, unless this is a forked child of the process that started it.
    fn engine(&self) -> PyResult<&Arc<Engine>> {
        let pid = std::process::id();
        if pid != self.pid {
            return Err(Error::Forked { parent: self.pid, child: pid }.into());
        }
        Ok(&self.engine)
    }
}

impl Drop for PyEngine {
    fn drop(&mut self) {
        if std::process::id() == self.pid {
            self.engine.request_close();
        }
    }
}
