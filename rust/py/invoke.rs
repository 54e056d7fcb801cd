//! Running Python task bodies: sync functions on the runtime's blocking threads (the GIL
//! held only while Python runs), async functions on the runner's own asyncio loop; and
//! the hooks, interrupts and retry decisions only Python can make.

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use super::convert::{key_from_py, value_from_py};
use super::exit_gate;
use super::view::ContextView;
use crate::context::Map;
use crate::engine::workers::ThreadWrapper;
use crate::engine::{Done, Executor, HookCall, HookKind, Interrupt, Job, Outcome, RetryHint, Workers};
use crate::registry::TaskBody;

/// A Python callable registered as a task body, with what only Python can evaluate:
/// which exceptions are retried, and the hooks.
pub struct PyTaskBody {
    pub func: Py<PyAny>,
    pub is_async: bool,
    /// A tuple of exception types that may be retried (None: any Exception).
    pub retry_on: Option<Py<PyAny>>,
    pub on_success: Option<Py<PyAny>>,
    pub on_failure: Option<Py<PyAny>>,
    pub on_retry: Option<Py<PyAny>>,
}

impl TaskBody for PyTaskBody {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn has_hook(&self, kind: HookKind) -> bool {
        match kind {
            HookKind::Success => self.on_success.is_some(),
            HookKind::Failure => self.on_failure.is_some(),
            HookKind::Retry => self.on_retry.is_some(),
        }
    }
}

/// The Python-side helpers a runner hands to its engine (see `cloacina._invoke`), and
/// the threads that call task bodies.
pub struct PythonExecutor {
    /// Threads that call sync bodies (and hand async ones to the loop). Each keeps its
    /// Python thread state for its whole life, so a call only takes and drops the GIL.
    workers: Workers,
    /// `call_sync(func, task_id, data, token) -> (writes, touched)`
    call_sync: Py<PyAny>,
    /// `submit_async(func, task_id, data, token, completion)`: schedules on the loop.
    submit_async: Py<PyAny>,
    /// `interrupt(token, why) -> bool`: stops a running attempt (`"timeout"` or
    /// `"cancel"`); true while a sync body of it is still running.
    interrupt: Py<PyAny>,
    /// `call_hook(hook, args)`: calls a hook, raising what it raises.
    call_hook: Py<PyAny>,
    /// Set when the runner closes: from then on no thread of it enters Python again
    /// (the interpreter may be finalizing, and a thread that needs the GIL then is
    /// killed inside Rust code, which crashes the process).
    closed: Arc<AtomicBool>,
}

impl PythonExecutor {
    pub fn new(
        call_sync: Py<PyAny>,
        submit_async: Py<PyAny>,
        interrupt: Py<PyAny>,
        call_hook: Py<PyAny>,
    ) -> Self {
        // Attaching once for the thread's life and detaching around its loop keeps one
        // thread state per thread instead of creating and destroying one per call.
        let closed = Arc::new(AtomicBool::new(false));
        let wrapper: ThreadWrapper = Arc::new(move |work: &mut (dyn FnMut() + Send)| {
            Python::attach(|py| {
                py.detach(|| {
                    work();
                    // Leaving `detach` takes the GIL back, which the interpreter's exit
                    // forbids: then the thread stays parked instead (see `exit_gate`).
                    if !exit_gate::pass() {
                        loop {
                            std::thread::park();
                        }
                    }
                })
            });
            exit_gate::out();
        });
        let workers = Workers::new("cloacina-task", Some(wrapper));
        PythonExecutor { workers, call_sync, submit_async, interrupt, call_hook, closed }
    }
}

fn body_of(job_body: &Arc<dyn TaskBody>) -> Option<&PyTaskBody> {
    job_body.as_any().downcast_ref::<PyTaskBody>()
}

impl Executor for Arc<PythonExecutor> {
    fn execute(&self, job: Job, done: Done) {
        let is_async = match body_of(&job.body) {
            Some(body) => body.is_async,
            None => return done.send(Outcome::failed(format!("task '{}' has no Python body", job.task_id))),
        };
        let this = self.clone();
        // The outcome is reported only after the thread has detached: once reported, the
        // run may end and the interpreter exit, and a thread that would still need the
        // GIL then is killed by CPython inside Rust code (the process aborts).
        self.workers.submit(Box::new(move || {
            if this.closed.load(Ordering::SeqCst) {
                return; // the runner closed: `done`, dropped, reports the attempt failed
            }
            if is_async {
                let failed = Python::attach(|py| this.schedule_async(py, job, done).err());
                if let Some((outcome, done)) = failed {
                    done.send(outcome);
                }
            } else {
                let outcome = Python::attach(|py| this.run_sync(py, &job));
                if job.followed {
                    this.workers.expect_work();
                }
                done.send(outcome);
            }
        }));
    }

    fn interrupt(&self, token: Arc<str>, why: Interrupt) {
        // Called from the scheduler's thread, inside the runtime. The first interrupt
        // is queued now, so that a runner closing right after still delivers it (closing
        // waits for queued work); the repeats follow from a timer.
        let first = self.send_interrupt(token.clone(), why, true);
        tokio::spawn(self.clone().keep_interrupting(token, why, first));
    }

    fn run_hook(&self, hook: HookCall) -> BoxFuture<'static, Result<(), String>> {
        if !hook.body.has_hook(hook.kind) {
            return Box::pin(async { Ok(()) });
        }
        let this = self.clone();
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.workers.submit(Box::new(move || {
            if this.closed.load(Ordering::SeqCst) {
                let _ = reply.send(Err("not called: the runner closed first".into()));
                return;
            }
            let result = Python::attach(|py| this.call_hook_now(py, &hook));
            let _ = reply.send(result);
        }));
        Box::pin(async move {
            answer.await.unwrap_or_else(|_| Err("internal error: the hook's thread stopped".into()))
        })
    }

    fn drain(&self, limit: Duration) -> bool {
        // First: nothing new enters Python (a job already running is waited for).
        self.closed.store(true, Ordering::SeqCst);
        let idle = self.workers.wait_idle(limit);
        // The threads end now, not after their idle time: a closed runner keeps none.
        self.workers.retire();
        idle
    }
}

/// How long an interrupted attempt may go on before a warning names it.
const STUBBORN_AFTER: Duration = Duration::from_secs(1);

impl PythonExecutor {
    /// Stops the attempt `token`, again and again while it still runs (a body that
    /// catches the interruption and goes on is interrupted anew, with a growing pause);
    /// one still running after `STUBBORN_AFTER` is named in a warning: it is blocked
    /// outside Python, and finishes in the background with its result discarded.
    async fn keep_interrupting(
        self: Arc<Self>,
        token: Arc<str>,
        why: Interrupt,
        first: tokio::sync::oneshot::Receiver<bool>,
    ) {
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(20);
        let mut warned = false;
        let mut still_running = first;
        loop {
            if !still_running.await.unwrap_or(false) {
                return;
            }
            if !warned && started.elapsed() >= STUBBORN_AFTER {
                warned = true;
                let mut parts = token.splitn(3, '/');
                let (run_id, task_id) = (parts.next().unwrap_or("?"), parts.next().unwrap_or("?"));
                let after = if why == Interrupt::Timeout { "it timed out" } else { "it was cancelled" };
                log::warn!(
                    "task '{task_id}' of run {run_id} is still running {:.1} s after {after}: it is \
                     probably blocked outside Python (in C code or I/O); it finishes in the \
                     background and its result is discarded",
                    started.elapsed().as_secs_f64()
                );
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
            if self.closed.load(Ordering::SeqCst) {
                return;
            }
            still_running = self.send_interrupt(token.clone(), why, false);
        }
    }

    /// Queues one interrupt of attempt `token` on the runner's threads (like everything
    /// that runs Python: closing waits for them, see `drain`); the answer is whether a
    /// sync body of it still runs. A repeat (`first` false) is dropped once the runner
    /// closed: the interpreter may be finalizing by then.
    fn send_interrupt(
        self: &Arc<Self>,
        token: Arc<str>,
        why: Interrupt,
        first: bool,
    ) -> tokio::sync::oneshot::Receiver<bool> {
        let word = match why {
            Interrupt::Timeout => "timeout",
            Interrupt::Cancel => "cancel",
        };
        let (reply, still_running) = tokio::sync::oneshot::channel();
        let this = self.clone();
        self.workers.submit(Box::new(move || {
            if !first && this.closed.load(Ordering::SeqCst) {
                let _ = reply.send(false);
                return;
            }
            let running = Python::attach(|py| {
                this.interrupt.bind(py).call1((&*token, word)).and_then(|r| r.is_truthy())
            });
            let _ = reply.send(running.unwrap_or_else(|e| {
                log::warn!("interrupting attempt {token} failed: {e}");
                false
            }));
        }));
        still_running
    }

    fn run_sync(&self, py: Python<'_>, job: &Job) -> Outcome {
        let body = body_of(&job.body).expect("checked by execute");
        let data = match Py::new(py, ContextView::new(&job.input, &job.recall, &job.task_id)) {
            Ok(d) => d,
            Err(e) => {
                return Outcome::failed(format!("task '{}': cannot build its context: {e}", job.task_id))
            }
        };
        match self.call_sync.bind(py).call1((body.func.bind(py), &*job.task_id, &data, &*job.token)) {
            Ok(result) => delta_from_py(&job.task_id, data.get(), &result),
            Err(err) => failure_from_pyerr(py, &err, body.retry_on.as_ref()),
        }
    }

    /// Hands an async body to the runner's loop; the loop reports through `Completion`.
    /// Err gives back `done` with the failure when the coroutine could not be scheduled.
    fn schedule_async(&self, py: Python<'_>, job: Job, done: Done) -> Result<(), (Outcome, Done)> {
        let body = body_of(&job.body).expect("checked by execute");
        let data = match Py::new(py, ContextView::new(&job.input, &job.recall, &job.task_id)) {
            Ok(data) => data,
            Err(e) => {
                let outcome =
                    Outcome::failed(format!("task '{}': cannot build its context: {e}", job.task_id));
                return Err((outcome, done));
            }
        };
        let completion = Py::new(
            py,
            Completion {
                task_id: job.task_id.clone(),
                view: data.clone_ref(py),
                retry_on: body.retry_on.as_ref().map(|r| r.clone_ref(py)),
                done: Mutex::new(Some(done)),
            },
        )
        // On failure the dropped Completion reports the attempt failed itself.
        .map_err(|e| (Outcome::failed(format!("internal error: {e}")), Done::new(drop)))?;
        match self.submit_async.bind(py).call1((
            body.func.bind(py),
            &*job.task_id,
            data,
            &*job.token,
            completion.clone_ref(py),
        )) {
            Ok(_) => Ok(()),
            Err(err) => {
                let outcome = failure_from_pyerr(py, &err, body.retry_on.as_ref());
                match completion.get().take_done() {
                    Some(done) => Err((outcome, done)),
                    None => Ok(()), // the loop already reported
                }
            }
        }
    }

    fn call_hook_now(&self, py: Python<'_>, hook: &HookCall) -> Result<(), String> {
        let Some(body) = body_of(&hook.body) else {
            return Ok(());
        };
        let func = match hook.kind {
            HookKind::Success => &body.on_success,
            HookKind::Failure => &body.on_failure,
            HookKind::Retry => &body.on_retry,
        };
        let Some(func) = func else { return Ok(()) };
        let task_id = &*hook.task_id;
        let error = hook.error.as_deref().unwrap_or("");
        // The context as tasks get it: a value is converted (and read back from the
        // database, if it left memory) only when the hook reads it.
        let context = |py| Bound::new(py, ContextView::new(&hook.context, &hook.recall, &hook.task_id));
        let result = (|| -> PyResult<()> {
            let args = match hook.kind {
                HookKind::Success => {
                    PyTuple::new(py, [task_id.into_pyobject(py)?.into_any(), context(py)?.into_any()])?
                }
                HookKind::Failure => PyTuple::new(
                    py,
                    [
                        task_id.into_pyobject(py)?.into_any(),
                        error.into_pyobject(py)?.into_any(),
                        context(py)?.into_any(),
                    ],
                )?,
                HookKind::Retry => PyTuple::new(
                    py,
                    [
                        task_id.into_pyobject(py)?.into_any(),
                        error.into_pyobject(py)?.into_any(),
                        hook.attempt.into_pyobject(py)?.into_any(),
                    ],
                )?,
            };
            self.call_hook.bind(py).call1((func.bind(py), args))?;
            Ok(())
        })();
        result.map_err(|err| match failure_from_pyerr(py, &err, None) {
            Outcome::Failed { error, .. } => error,
            Outcome::Completed(_) | Outcome::Skipped { .. } => err.to_string(),
        })
    }
}

/// Handed to the asyncio side: called once, on the loop thread, with the task's result.
/// If the loop drops it uncalled (it stopped first), the attempt is reported failed.
#[pyclass(frozen, module = "cloacina._native")]
pub struct Completion {
    task_id: Arc<str>,
    /// The attempt's context (where a value read and changed in place is compared).
    view: Py<ContextView>,
    retry_on: Option<Py<PyAny>>,
    done: Mutex<Option<Done>>,
}

#[pymethods]
impl Completion {
    /// The coroutine returned; `result` is `(writes, touched)` as from `call_sync`.
    fn ok(&self, result: &Bound<'_, PyAny>) {
        let outcome = delta_from_py(&self.task_id, self.view.get(), result);
        self.send(result.py(), outcome);
    }

    /// The coroutine raised `error`.
    fn fail(&self, error: &Bound<'_, PyAny>) {
        let err = PyErr::from_value(error.clone());
        let outcome = failure_from_pyerr(error.py(), &err, self.retry_on.as_ref());
        self.send(error.py(), outcome);
    }
}

impl Completion {
    fn take_done(&self) -> Option<Done> {
        self.done.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn send(&self, py: Python<'_>, outcome: Outcome) {
        if let Some(done) = self.take_done() {
            py.detach(|| done.send(outcome));
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if let Some(done) = self.take_done() {
            done.send(Outcome::failed("the runner's asyncio loop stopped before the task finished".into()));
        }
    }
}

/// Turns `(writes, touched)` into the task's delta. `writes` are keys the task assigned;
/// `touched` are keys whose mutable values it read, kept only if they changed.
fn delta_from_py(task_id: &str, input: &ContextView, result: &Bound<'_, PyAny>) -> Outcome {
    let pair = match result.cast::<PyTuple>() {
        Ok(t) if t.len() == 2 => t.clone(),
        _ => {
            return Outcome::failed(format!("internal error: task '{task_id}' returned an unexpected shape"))
        }
    };
    // Sized once: a delta lives as long as its run, and most hold one or two keys.
    let size = pair.iter().map(|d| d.len().unwrap_or(0)).sum();
    let mut delta = Map::with_capacity(size);
    for (i, dict) in pair.iter().enumerate() {
        let Ok(dict) = dict.cast::<PyDict>().cloned() else {
            return Outcome::failed(format!("internal error: task '{task_id}' returned an unexpected shape"));
        };
        for (key, value) in dict.iter() {
            let key = match key_from_py(&key, &format!("task '{task_id}' wrote a context key")) {
                Ok(k) => k,
                Err(e) => return never(e),
            };
            let value = match value_from_py(&value) {
                Ok(v) => v,
                Err(e) => return never(format!("task '{task_id}' wrote key '{key}': {e}")),
            };
            if i == 1 {
                // Read but unchanged? (What the task read was recalled already if it had
                // left memory: this reads no database.)
                let given = match input.lookup(result.py(), &key) {
                    Ok(given) => given,
                    Err(e) => return Outcome::failed(e.to_string()),
                };
                if given.as_ref().and_then(|m| m.get(&key)) == Some(&value) {
                    continue;
                }
            }
            delta.insert(key, value);
        }
    }
    Outcome::Completed(delta)
}

/// A failure that retrying cannot fix (the task produced something unusable).
fn never(error: String) -> Outcome {
    Outcome::Failed { error, traceback: None, hint: RetryHint::Never }
}

/// An exception as `"Type: message"`, its formatted traceback (engine frames removed),
/// and whether to retry it: `Fail` never, `Retry` always (within the budget), others if
/// they match `retry_on`. `Skip` is no failure: the task ends skipped with its reason.
fn failure_from_pyerr(py: Python<'_>, err: &PyErr, retry_on: Option<&Py<PyAny>>) -> Outcome {
    let value = err.value(py);
    if let Some(tb) = err.traceback(py) {
        let _ = value.setattr("__traceback__", tb);
    }
    let retry_on = retry_on.map(|r| r.bind(py).clone()).unwrap_or_else(|| py.None().into_bound(py));
    let described = py
        .import("cloacina._invoke")
        .and_then(|m| m.call_method1("describe_failure", (value, retry_on)))
        .and_then(|t| t.extract::<(String, String, String, Option<f64>)>());
    match described {
        Ok((error, traceback, hint, delay)) => {
            let hint = match hint.as_str() {
                "skip" => return Outcome::Skipped { reason: error },
                "never" => RetryHint::Never,
                "retry" => RetryHint::Requested(delay),
                _ => RetryHint::Policy,
            };
            Outcome::Failed { error, traceback: Some(traceback), hint }
        }
        Err(_) => Outcome::failed(err.to_string()),
    }
}
