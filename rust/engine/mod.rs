//! The engine: accepts runs, drives them to the end through the scheduler, and answers
//! questions about runs. Holds no pyo3 types; `py/engine.rs` wraps it for Python.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::context::Map;
use crate::errors::{Error, Result};
use crate::registry::WorkflowDef;
use crate::store::{is_final_run_status, RunFilter, RunRecord, SqliteStore};

pub mod executor;
mod scheduler;
mod state;

pub use executor::{Executor, HookCall, HookKind, Interrupt, Job, Outcome, RetryHint};

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How many task attempts may run at once, across all runs of this engine.
    pub max_concurrency: usize,
}

/// State shared by the engine handle and its scheduler.
pub(crate) struct Shared {
    pub store: Arc<SqliteStore>,
    pub owner: Arc<str>,
    /// Runs this engine drives, each with a flag that turns true once it is final and
    /// committed. A run absent from the map is not driven here: ask the store.
    pub watches: Mutex<HashMap<Arc<str>, watch::Receiver<bool>>>,
    /// Why the scheduler stopped, if it stopped on an error.
    pub failure: Mutex<Option<String>>,
}

impl Shared {
    fn failure(&self) -> Option<Error> {
        lock(&self.failure).clone().map(Error::Database)
    }
}

/// Messages to the scheduler.
pub(crate) enum Command {
    Submit {
        workflow: Arc<WorkflowDef>,
        input: Map,
        reply: oneshot::Sender<Result<Arc<str>>>,
    },
    Finished {
        run_id: Arc<str>,
        position: u32,
        attempt: u32,
        started_at: i64,
        outcome: Outcome,
    },
    /// A timed-out attempt's deadline passed.
    TimedOut {
        run_id: Arc<str>,
        position: u32,
        attempt: u32,
        started_at: i64,
        seconds: f64,
    },
    /// A delayed retry is due.
    Wake {
        run_id: Arc<str>,
        position: u32,
    },
    Cancel {
        run_id: Arc<str>,
        reason: CancelReason,
        reply: Option<oneshot::Sender<bool>>,
    },
    HookFailed {
        run_id: Arc<str>,
        task_id: Arc<str>,
        kind: HookKind,
        attempt: u32,
        error: String,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// Why a run is cancelled.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CancelReason {
    /// Asked for (a handle, a runner, another process, Ctrl-C).
    User,
    /// The workflow's timeout (seconds) expired: the run ends failed.
    Timeout(f64),
}

/// A running engine over one store.
pub struct Engine {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
}

impl Engine {
    /// Starts an engine on `store`; must be called inside the tokio runtime.
    pub fn start(store: SqliteStore, executor: Arc<dyn Executor>, config: EngineConfig) -> Engine {
        let owner: Arc<str> = format!(
            "{}:{}",
            std::process::id(),
            &uuid::Uuid::now_v7().simple().to_string()[20..]
        )
        .into();
        let shared = Arc::new(Shared {
            store: Arc::new(store),
            owner,
            watches: Mutex::new(HashMap::new()),
            failure: Mutex::new(None),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let scheduler = scheduler::Scheduler::new(shared.clone(), tx.clone(), rx, executor, config);
        tokio::spawn(scheduler.run());
        tokio::spawn(watch_cancel_requests(
            Arc::downgrade(&shared),
            tx.downgrade(),
        ));
        Engine {
            shared,
            commands: tx,
        }
    }

    /// The store's label (file path or ":memory:").
    pub fn store_label(&self) -> &str {
        self.shared.store.label()
    }

    /// Starts a run of `workflow` with `input`; returns its id once it is committed.
    pub async fn submit(&self, workflow: Arc<WorkflowDef>, input: Map) -> Result<String> {
        if let Some(e) = self.shared.failure() {
            return Err(e);
        }
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Submit {
                workflow,
                input,
                reply,
            })
            .map_err(|_| closed())?;
        let run_id = rx
            .await
            .map_err(|_| self.shared.failure().unwrap_or_else(closed))??;
        Ok(run_id.to_string())
    }

    /// Waits until run `run_id` is final. Runs driven by this engine wake the waiter the
    /// moment they are committed; runs driven elsewhere are checked in the store.
    pub async fn wait(&self, run_id: &str) -> Result<()> {
        let mut pause = Duration::from_millis(10);
        loop {
            let watch = lock(&self.shared.watches).get(run_id).cloned();
            if let Some(mut rx) = watch {
                return match rx.wait_for(|done| *done).await {
                    Ok(_) => Ok(()),
                    Err(_) => Err(self.shared.failure().unwrap_or_else(|| {
                        Error::Closed(format!(
                            "the runner was closed before run {run_id} finished"
                        ))
                    })),
                };
            }
            match self.shared.store.run_status(run_id).await? {
                None => return Err(Error::Task(format!("no run with id '{run_id}'"))),
                Some(status) if is_final_run_status(&status) => return Ok(()),
                Some(_) => {
                    // Driven by another runner or process: no in-process signal to wait on.
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(250));
                }
            }
        }
    }

    /// Cancels run `run_id`. A run driven here is cancelled at once; a run driven by
    /// another runner or process gets a request that its owner carries out. Returns
    /// false when the run is unknown or already final.
    pub async fn cancel(&self, run_id: &str) -> Result<bool> {
        let driven_here = lock(&self.shared.watches).contains_key(run_id);
        if driven_here {
            let (reply, rx) = oneshot::channel();
            let cmd = Command::Cancel {
                run_id: run_id.into(),
                reason: CancelReason::User,
                reply: Some(reply),
            };
            self.commands.send(cmd).map_err(|_| closed())?;
            return rx.await.map_err(|_| closed());
        }
        self.shared
            .store
            .request_cancel(run_id, crate::store::now_micros())
            .await
    }

    /// Run `run_id` as stored, if it exists.
    pub async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>> {
        self.shared.store.run(run_id).await
    }

    /// Runs matching `filter`, newest first.
    pub async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>> {
        self.shared.store.runs(filter).await
    }

    /// Stops taking work, lets running attempts finish and commit, then closes the
    /// store. Runs still unfinished stay `running` in the database. Idempotent.
    pub async fn close(&self) {
        let (reply, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown { reply }).is_ok() {
            let _ = rx.await;
        }
        self.shared.store.close().await;
    }

    /// Asks the scheduler to stop without waiting (used when the handle is dropped).
    pub fn request_close(&self) {
        let (reply, _rx) = oneshot::channel();
        let _ = self.commands.send(Command::Shutdown { reply });
    }
}

/// How often an engine driving runs looks for cancellation requests from elsewhere.
const CANCEL_CHECK: Duration = Duration::from_millis(200);

/// Carries out cancellation requests written by other runners or processes for runs
/// this engine drives. (Not on the scheduling path: a cheap indexed read, only while
/// the engine drives runs.)
async fn watch_cancel_requests(
    shared: std::sync::Weak<Shared>,
    commands: mpsc::WeakUnboundedSender<Command>,
) {
    loop {
        tokio::time::sleep(CANCEL_CHECK).await;
        let (Some(shared), Some(commands)) = (shared.upgrade(), commands.upgrade()) else {
            return;
        };
        if commands.is_closed() {
            return;
        }
        if lock(&shared.watches).is_empty() {
            continue;
        }
        let Ok(requested) = shared.store.cancel_requests(&shared.owner).await else {
            continue;
        };
        for run_id in requested {
            let cmd = Command::Cancel {
                run_id: run_id.into(),
                reason: CancelReason::User,
                reply: None,
            };
            if commands.send(cmd).is_err() {
                return;
            }
        }
    }
}

fn closed() -> Error {
    Error::Closed("the runner is closed".into())
}

/// Locks a mutex, ignoring poisoning (the data is still consistent: every holder only
/// inserts or removes whole entries).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests;
