//! How the engine hands a task to whatever runs its body, and what comes back.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use futures::future::BoxFuture;

use crate::context::{Delta, Map, View};
use crate::errors::{Error, Result};
use crate::registry::TaskBody;
use crate::store::{parse_map, Reads, Store};

/// Most bytes (as stored) of read-back writes one engine keeps in memory again: a value
/// many tasks read (a configuration the first task wrote) is read from the database
/// once, not by each of them. Beyond it, what was read back first leaves memory again.
pub const RECALLED_BYTES: usize = 32 << 20;

/// The writes an engine read back from the database and keeps in memory again, in the
/// order they were read back, within [`RECALLED_BYTES`].
#[derive(Default)]
pub struct Recalled {
    kept: Mutex<Kept>,
}

/// Each delta kept (gone when its run ended) with its size, and the sizes' total.
type Kept = (VecDeque<(Weak<Delta>, usize)>, usize);

impl Recalled {
    fn keep(&self, delta: &Arc<Delta>, values: Arc<Map>, bytes: usize) {
        delta.readmit(values);
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        let (queue, total) = &mut *kept;
        queue.push_back((Arc::downgrade(delta), bytes));
        *total += bytes;
        while *total > RECALLED_BYTES {
            let Some((oldest, size)) = queue.pop_front() else { break };
            *total -= size;
            if let Some(oldest) = oldest.upgrade() {
                oldest.evict();
            }
        }
    }
}

/// Reads back from the database the writes the engine evicted from memory (see
/// [`Delta`]): what a task's body or hook reads of an older task's output.
#[derive(Clone)]
pub struct Recall {
    store: Arc<dyn Store>,
    run_id: Arc<str>,
    recalled: Arc<Recalled>,
}

impl Recall {
    /// Reads the outputs of run `run_id` from `store`, keeping what it read in
    /// `recalled`.
    pub fn new(store: Arc<dyn Store>, run_id: Arc<str>, recalled: Arc<Recalled>) -> Recall {
        Recall { store, run_id, recalled }
    }

    /// Whether its store answers within microseconds (`Store::answers_quickly`).
    pub fn answers_quickly(&self) -> bool {
        self.store.answers_quickly()
    }

    /// The values of `delta`: from memory, or else read back from its writer's stored
    /// output (`reads` says on which thread) and kept in memory for a while.
    pub async fn values(&self, delta: &Arc<Delta>, reads: Reads) -> Result<Arc<Map>> {
        if let Some(values) = delta.resident() {
            return Ok(values);
        }
        let Some(writer) = delta.writer() else {
            return Err(Error::Internal("the run's input left memory".into()));
        };
        let Some(text) = self.store.task_output(&self.run_id, writer, reads).await? else {
            return Err(Error::Internal(format!(
                "the output of task '{writer}' of run {} is not in the database",
                self.run_id
            )));
        };
        let values = Arc::new(parse_map(&text, || format!("the output of task '{writer}'"))?);
        self.recalled.keep(delta, values.clone(), text.len());
        Ok(values)
    }
}

/// One attempt of one task, ready to run.
pub struct Job {
    pub run_id: Arc<str>,
    pub task_id: Arc<str>,
    pub attempt: u32,
    /// Names this attempt for `Executor::interrupt`.
    pub token: Arc<str>,
    pub body: Arc<dyn TaskBody>,
    /// What the task sees: the run's input plus its ancestors' writes, in merge order.
    pub input: View,
    /// Reads back what `input` holds only in the database.
    pub recall: Recall,
    /// Whether a task is likely to start as soon as this attempt ends (a successor
    /// waiting for this task alone, after a commit short enough to wait for): the
    /// thread that ran the attempt may stay awake for it (`Workers::expect_work`).
    pub followed: bool,
}

/// What the body asked for when it failed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RetryHint {
    /// Retry if the task's policy allows (the error matched `retry_on`).
    Policy,
    /// Do not retry (`Fail` raised, or the error did not match `retry_on`).
    Never,
    /// The body asked for another attempt (`Retry`), after this many seconds if given.
    Requested(Option<f64>),
}

/// What an attempt produced.
#[derive(Debug)]
pub enum Outcome {
    /// The task's writes (its delta).
    Completed(Map),
    /// The attempt failed; `traceback` is the language's own traceback text, if any.
    Failed { error: String, traceback: Option<String>, hint: RetryHint },
    /// The body decided not to do its work (`raise Skip(reason)`): the task ends
    /// `skipped`, its writes discarded, and is not retried.
    Skipped { reason: String },
}

/// Most bytes of an error message (or a skip's reason) that are stored.
pub const MAX_ERROR_BYTES: usize = 16 * 1024;

/// Most bytes of a traceback that are stored (its start and its end, where the
/// failing line is).
pub const MAX_TRACEBACK_BYTES: usize = 64 * 1024;

impl Outcome {
    /// A failure that the policy may retry.
    pub fn failed(error: String) -> Outcome {
        Outcome::Failed { error, traceback: None, hint: RetryHint::Policy }
    }

    /// The outcome with its texts cut to what is stored: a huge exception message must
    /// not be written (twice: message and traceback) into the database.
    pub fn capped(self) -> Outcome {
        match self {
            Outcome::Failed { error, traceback, hint } => Outcome::Failed {
                error: cap_text(error, MAX_ERROR_BYTES, 0),
                traceback: traceback
                    .map(|t| cap_text(t, MAX_TRACEBACK_BYTES / 8, MAX_TRACEBACK_BYTES * 7 / 8)),
                hint,
            },
            Outcome::Skipped { reason } => Outcome::Skipped { reason: cap_text(reason, MAX_ERROR_BYTES, 0) },
            completed => completed,
        }
    }
}

/// `text` if it is at most `head + tail` bytes long; otherwise its first `head` and last
/// `tail` bytes (on character boundaries) around a note of how much was cut.
pub fn cap_text(text: String, head: usize, tail: usize) -> String {
    if text.len() <= head + tail {
        return text;
    }
    let mut start = head;
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = text.len() - tail;
    while !text.is_char_boundary(end) {
        end += 1;
    }
    format!("{} [... {} bytes truncated ...] {}", &text[..start], end - start, &text[end..])
}

/// Why a running attempt is interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    /// It ran past its timeout: stop it if the body can be stopped.
    Timeout,
    /// Its run was cancelled: stop it if it can be stopped without harm (async bodies).
    Cancel,
}

/// Which hook to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    Success,
    Failure,
    Retry,
}

impl HookKind {
    /// The hook's option name.
    pub fn name(self) -> &'static str {
        match self {
            HookKind::Success => "on_success",
            HookKind::Failure => "on_failure",
            HookKind::Retry => "on_retry",
        }
    }
}

/// A hook call, made after the transition it reports is committed.
pub struct HookCall {
    pub kind: HookKind,
    pub run_id: Arc<str>,
    pub task_id: Arc<str>,
    pub attempt: u32,
    pub error: Option<String>,
    /// The task's context: its input, plus its writes on success.
    pub context: View,
    /// Reads back what `context` holds only in the database.
    pub recall: Recall,
    pub body: Arc<dyn TaskBody>,
}

/// Where an attempt reports its outcome: straight into the scheduler's inbox, from
/// whichever thread the attempt ends on. Dropped unsent (the executor panicked or lost
/// the attempt), it reports a failure, so no attempt is ever left running forever.
pub struct Done {
    report: Option<Box<dyn FnOnce(Outcome) + Send>>,
}

impl Done {
    /// A `Done` that hands the outcome to `report`.
    pub fn new(report: impl FnOnce(Outcome) + Send + 'static) -> Done {
        Done { report: Some(Box::new(report)) }
    }

    /// Reports the attempt's outcome.
    pub fn send(mut self, outcome: Outcome) {
        if let Some(report) = self.report.take() {
            report(outcome);
        }
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        if let Some(report) = self.report.take() {
            report(Outcome::failed("internal error: the attempt ended without a result".into()));
        }
    }
}

/// Runs task bodies. The engine calls these from its scheduler thread; implementations
/// must return at once and run the body elsewhere (see `Workers`).
pub trait Executor: Send + Sync + 'static {
    /// Starts `job`; its outcome goes to `done`.
    fn execute(&self, job: Job, done: Done);

    /// Asks the attempt named `token` to stop; its outcome will be ignored anyway.
    fn interrupt(&self, _token: Arc<str>, _why: Interrupt) {}

    /// Calls a task's hook if it has one; Err carries what the hook raised.
    fn run_hook(&self, _hook: HookCall) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    /// Waits, for at most `limit`, until nothing started through this executor is still
    /// running (the engine is closing); false if something still was.
    fn drain(&self, _limit: Duration) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(task: &str) -> Arc<Delta> {
        let mut values = Map::new();
        values.insert("k".into(), task.into());
        let delta = Delta::new(Some(task.into()), values);
        delta.evict();
        delta
    }

    #[test]
    fn writes_read_back_stay_in_memory_within_the_budget_the_oldest_leaving_first() {
        let recalled = Recalled::default();
        let (a, b, c) = (delta("a"), delta("b"), delta("c"));
        let values = || Arc::new(Map::new());
        recalled.keep(&a, values(), RECALLED_BYTES / 2);
        recalled.keep(&b, values(), RECALLED_BYTES / 2);
        assert!(a.resident().is_some() && b.resident().is_some(), "both fit the budget");
        recalled.keep(&c, values(), 1);
        assert!(a.resident().is_none(), "the first read back leaves once the budget is passed");
        assert!(b.resident().is_some() && c.resident().is_some());
        drop(b); // its run ended: its bytes still count until they leave the queue
        let d = delta("d");
        recalled.keep(&d, values(), RECALLED_BYTES);
        assert!(c.resident().is_none() && d.resident().is_some());
    }
}
