//! The one tokio runtime of the process (pyo3-async-runtimes' awaitables run on it too,
//! so there is never a second), and the one blocking wait every synchronous entry point
//! uses.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use tokio::runtime::Runtime;

use crate::engine::workers::{spin_until, SPIN};
use crate::errors::{Error, Result};

/// The runtime of this process: built on first use, and built anew in a forked child
/// (the parent's threads do not exist there; its runtime is leaked, never dropped).
static RUNTIME: Mutex<Option<(u32, &'static Runtime)>> = Mutex::new(None);

/// The runtime of this process, built on first use (and again after a fork).
pub fn runtime() -> Result<&'static Runtime> {
    let pid = std::process::id();
    let mut slot = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
    match *slot {
        Some((owner, runtime)) if owner == pid => Ok(runtime),
        _ => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("cloacina-worker")
                .build()
                .map_err(|e| Error::Internal(format!("cannot start the tokio runtime: {e}")))?;
            let runtime: &'static Runtime = Box::leak(Box::new(runtime));
            *slot = Some((pid, runtime));
            Ok(runtime)
        }
    }
}

/// The engine's runtime as pyo3-async-runtimes sees it: futures handed to asyncio run
/// on `runtime()`, this process's (a global set once would still be the parent's after
/// a fork).
pub struct EngineRuntime;

impl pyo3_async_runtimes::generic::Runtime for EngineRuntime {
    type JoinError = tokio::task::JoinError;
    type JoinHandle = tokio::task::JoinHandle<()>;

    fn spawn<F>(fut: F) -> Self::JoinHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        runtime().expect("checked when the awaitable was made").spawn(fut)
    }

    fn spawn_blocking<F>(f: F) -> Self::JoinHandle
    where
        F: FnOnce() + Send + 'static,
    {
        runtime().expect("checked when the awaitable was made").spawn_blocking(f)
    }
}

impl pyo3_async_runtimes::generic::ContextExt for EngineRuntime {
    fn scope<F, R>(
        _locals: pyo3_async_runtimes::TaskLocals,
        fut: F,
    ) -> std::pin::Pin<Box<dyn Future<Output = R> + Send>>
    where
        F: Future<Output = R> + Send + 'static,
    {
        // The engine's futures never call back into asyncio: no task locals needed.
        Box::pin(fut)
    }

    fn get_task_locals() -> Option<pyo3_async_runtimes::TaskLocals> {
        None
    }
}

/// `fut` as a Python awaitable, run on the engine's runtime.
pub fn awaitable<F, T>(py: Python<'_>, fut: F) -> PyResult<Bound<'_, PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'py> IntoPyObject<'py> + Send + 'static,
{
    runtime()?;
    pyo3_async_runtimes::generic::future_into_py::<EngineRuntime, F, T>(py, fut)
}

/// How often a blocked caller wakes to let Python run signal handlers (Ctrl-C).
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// Whether a blocked caller is spinning (see `wait`).
static CALLER_SPINNING: AtomicBool = AtomicBool::new(false);

/// Wakes the thread that polls a future: sets `woken` (seen by a thread still
/// spinning) and unparks it (a thread already parked).
struct Unpark {
    thread: Thread,
    woken: AtomicBool,
}

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        self.thread.unpark();
    }
}

/// Runs `fut` to the end on the calling thread, inside the runtime's context, and
/// blocks without holding the GIL, waking every 100 ms so that KeyboardInterrupt gets
/// through. Returns Ok(None) if `timeout` passes first; the future is polled at least
/// once, so a zero timeout still sees an answer already there. The future is dropped
/// on a timeout, as it is when a signal handler raises. Nothing hops to another thread
/// to run it: an answer from the scheduler unparks this thread directly. The first time
/// the future is pending the thread spins briefly (yielding its core; one caller at a
/// time) before it parks: the scheduler's answer to a call usually comes within that,
/// and waking a parked thread costs more than the answer itself on a small machine.
/// Safe from any thread that may block, including a task running on one of the
/// runtime's blocking threads.
pub fn wait<T, F>(py: Python<'_>, fut: F, timeout: Option<Duration>) -> PyResult<Option<T>>
where
    T: Send,
    F: Future<Output = Result<T>> + Send,
{
    wait_spinning(py, fut, timeout, SPIN)
}

/// The spin of `wait_spinning` for a store that answers quickly (an embedded database)
/// or not (one a network round trip and a disk flush away).
pub fn spin_for(answers_quickly: bool) -> Duration {
    if answers_quickly {
        SPIN
    } else {
        Duration::ZERO
    }
}

/// `wait`, spinning at most `spin` before the thread parks: none for an engine whose
/// answers take a database round trip and a disk flush (PostgreSQL), which a spin of
/// `SPIN` never sees arrive, and whose CPU time the server needs on a small machine.
pub fn wait_spinning<T, F>(
    py: Python<'_>,
    fut: F,
    timeout: Option<Duration>,
    spin: Duration,
) -> PyResult<Option<T>>
where
    T: Send,
    F: Future<Output = Result<T>> + Send,
{
    let runtime = runtime()?;
    // Held until the future is dropped (declared before it, so dropped after it): a
    // future dropped unfinished (a timeout, a signal) may release resources that need
    // the runtime (a pooled database connection goes back to its pool on a task).
    let _runtime_context = runtime.enter();
    let mut fut = pin!(fut);
    let unpark = Arc::new(Unpark { thread: std::thread::current(), woken: AtomicBool::new(false) });
    let waker = Waker::from(unpark.clone());
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut spun = false;
    loop {
        let slice_end = Instant::now() + SIGNAL_CHECK;
        let slice_end = deadline.map_or(slice_end, |d| d.min(slice_end));
        let polled = py.detach(|| {
            let _context = runtime.enter();
            let mut cx = Context::from_waker(&waker);
            loop {
                let poll = catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx)));
                match poll {
                    Ok(Poll::Ready(result)) => return Some(result),
                    Err(panic) => {
                        let message = crate::engine::panic_message(&panic);
                        return Some(Err(Error::Internal(format!("the engine panicked: {message}"))));
                    }
                    Ok(Poll::Pending) => {}
                }
                // A wake-up sets `woken` and the thread's park token, so one that came
                // during the poll ends the spin or the park below at once: none is lost.
                if !spun && !spin.is_zero() {
                    spun = true;
                    // One caller spins at a time: many threads blocked in calls at once
                    // would otherwise take the cores the engine's own threads need.
                    if !CALLER_SPINNING.swap(true, Ordering::SeqCst) {
                        let limit = slice_end.saturating_duration_since(Instant::now()).min(spin);
                        let woken = spin_until(limit, || unpark.woken.swap(false, Ordering::SeqCst));
                        CALLER_SPINNING.store(false, Ordering::SeqCst);
                        if woken {
                            continue;
                        }
                    }
                }
                let now = Instant::now();
                if now >= slice_end {
                    return None;
                }
                std::thread::park_timeout(slice_end - now);
                unpark.woken.store(false, Ordering::SeqCst);
            }
        });
        if let Some(result) = polled {
            return result.map(Some).map_err(PyErr::from);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
        py.check_signals()?;
    }
}
