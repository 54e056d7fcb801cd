//! Task threads ending, and the interpreter exiting: a thread must not take the GIL
//! once the interpreter finalizes (CPython then ends it inside Rust code, which aborts
//! the process), yet a thread that never takes it again can never end, and each closed
//! runner would leave its threads behind for good.
//!
//! A task thread passes the gate to end (`pass`): it may take the GIL, drop its Python
//! thread state, and then says it is out (`out`). At the interpreter's exit, an atexit
//! hook (`interpreter_exiting`, registered by `cloacina.runner` before the hook that
//! closes the open runners, so that it runs after it) closes the gate and waits, without
//! the GIL, for the threads already through it; a thread that comes later stays parked.

use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

/// Whether the interpreter is exiting, and how many threads are ending meanwhile.
struct Gate {
    exiting: bool,
    ending: usize,
}

static GATE: Mutex<Gate> = Mutex::new(Gate { exiting: false, ending: 0 });
static ALL_OUT: Condvar = Condvar::new();

/// The longest the exit waits for threads that are ending.
const EXIT_WAITS_AT_MOST: Duration = Duration::from_secs(2);

/// Asks to end the calling thread: true if it may take the GIL to do so (it must then
/// call `out` once it no longer needs it), false if the interpreter is exiting.
pub fn pass() -> bool {
    let mut gate = GATE.lock().unwrap_or_else(PoisonError::into_inner);
    if gate.exiting {
        return false;
    }
    gate.ending += 1;
    true
}

/// The calling thread, through the gate, no longer needs the GIL.
pub fn out() {
    let mut gate = GATE.lock().unwrap_or_else(PoisonError::into_inner);
    gate.ending -= 1;
    if gate.ending == 0 {
        ALL_OUT.notify_all();
    }
}

/// Closes the gate and waits (without the GIL, at most 2 s) for the threads through
/// it to be out. Called at the interpreter's exit (an atexit hook).
#[pyfunction]
pub fn interpreter_exiting(py: Python<'_>) {
    py.detach(|| {
        let deadline = Instant::now() + EXIT_WAITS_AT_MOST;
        let mut gate = GATE.lock().unwrap_or_else(PoisonError::into_inner);
        gate.exiting = true;
        while gate.ending > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            gate = ALL_OUT.wait_timeout(gate, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    });
}
