//! The one tokio runtime of the process, handed to pyo3-async-runtimes so there is never
//! a second, and the one blocking wait every synchronous entry point uses.

use std::future::Future;
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use tokio::runtime::Runtime;

use crate::errors::{Error, Result};

struct Owned {
    runtime: Runtime,
    pid: u32,
}

static RUNTIME: OnceLock<Owned> = OnceLock::new();

/// The runtime, built on first use. In a forked child it is an error: the parent's
/// threads do not exist there.
pub fn runtime() -> Result<&'static Runtime> {
    let owned = RUNTIME.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("cloacina-worker")
            .build()
            .expect("building the tokio runtime");
        Owned { runtime, pid: std::process::id() }
    });
    let pid = std::process::id();
    if owned.pid != pid {
        return Err(Error::Forked { parent: owned.pid, child: pid });
    }
    // Only the first call installs it; later ones find it in place.
    let _ = pyo3_async_runtimes::tokio::init_with_runtime(&owned.runtime);
    Ok(&owned.runtime)
}

/// How often a blocked caller wakes to let Python run signal handlers (Ctrl-C).
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// Runs `fut` on the runtime and blocks the calling thread until it ends, without
/// holding the GIL, waking every 100 ms so that KeyboardInterrupt gets through.
/// Returns Ok(None) if `timeout` passes first. Safe from any thread, including a task
/// running on one of the runtime's blocking threads.
pub fn wait<T, F>(py: Python<'_>, fut: F, timeout: Option<Duration>) -> PyResult<Option<T>>
where
    T: Send + 'static,
    F: Future<Output = Result<T>> + Send + 'static,
{
    let runtime = runtime()?;
    let (tx, mut rx) = mpsc::sync_channel::<Result<T>>(1);
    let handle = runtime.spawn(async move {
        let _ = tx.send(fut.await);
    });
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let slice = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    handle.abort();
                    return Ok(None);
                }
                left.min(SIGNAL_CHECK)
            }
            None => SIGNAL_CHECK,
        };
        // The receiver moves into the GIL-free closure and back (it is not Sync).
        let (received, back) = py.detach(move || (rx.recv_timeout(slice), rx));
        rx = back;
        match received {
            Ok(result) => return result.map(Some).map_err(PyErr::from),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Err(e) = py.check_signals() {
                    handle.abort();
                    return Err(e);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(
                    Error::Internal("the engine task ended without an answer (it panicked)".into()).into()
                )
            }
        }
    }
}
