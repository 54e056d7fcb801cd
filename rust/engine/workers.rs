//! Threads that run blocking work (task bodies), handing work over without waking
//! sleeping threads where it can.
//!
//! On small virtual machines waking a parked thread is the dominant cost of a short
//! task: a futex wake-up costs tens of microseconds, more than a SQLite commit. An
//! idle worker therefore spins for a short while before parking, and only one at a
//! time, so the next job of a chain, submitted a few microseconds after the previous
//! one finished, is taken by a thread that is still awake. When a job is known to be
//! coming (an attempt whose successor waits for it alone ends: the successor starts
//! once the scheduler has committed the end), `expect_work` says so and the spinning
//! worker waits for it longer: a SQLite commit of a task writing 1 KB outlasts the
//! short spin, and the wake-up after it cost a chain of such tasks a third of its time
//! (a PostgreSQL commit, for a chain, lasts longer still). Threads are created when
//! every existing one is busy (a job may block for as long as its task runs) and exit
//! after a while without work.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// A piece of blocking work.
pub type Work = Box<dyn FnOnce() + Send>;

/// Wraps a worker thread's whole life (for example, to keep a Python thread state).
pub type ThreadWrapper = Arc<dyn Fn(&mut (dyn FnMut() + Send)) + Send + Sync>;

/// The longest wait without sleeping: a scheduler waiting for its next message, a
/// worker for a job it was told to expect.
pub(crate) const SPIN: Duration = Duration::from_micros(200);

/// How long an idle worker waits without sleeping for a job announced by `expect_work`:
/// the time a commit takes, which on PostgreSQL (a round trip and a disk flush) is
/// longer than `SPIN`.
pub(crate) const FOLLOW_SPIN: Duration = Duration::from_millis(1);

/// How long an idle worker spins when no job was announced.
const SHORT_SPIN: Duration = Duration::from_micros(20);

/// How long a parked worker waits for work before its thread exits.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// A growing pool of threads for blocking work.
#[derive(Clone)]
pub struct Workers {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    wake: Condvar,
    /// Signalled when the last running job ends with none queued.
    drained: Condvar,
    /// Jobs in the queue, readable without the lock (for spinning).
    queued: AtomicUsize,
    /// Whether an idle worker is spinning (it will take the next job).
    spinning: AtomicBool,
    /// Whether a job was announced (`expect_work`) and not yet submitted.
    expected: AtomicBool,
    /// Set by `retire`: threads end as soon as no job is queued.
    retired: AtomicBool,
    name: String,
    wrapper: Option<ThreadWrapper>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Work>,
    /// Threads not running a job (spinning, parked or between jobs).
    idle: usize,
    /// Idle threads waiting on the condition variable.
    parked: usize,
    /// Jobs taken from the queue and not yet finished.
    running: usize,
    /// Parked threads woken for a job (a job no spinning thread was there to take).
    wakeups: u64,
}

impl Workers {
    /// A pool whose threads are named `name`; `wrapper`, if given, runs each thread's
    /// loop (it must call the function it is given).
    pub fn new(name: &str, wrapper: Option<ThreadWrapper>) -> Workers {
        Workers {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
                drained: Condvar::new(),
                queued: AtomicUsize::new(0),
                spinning: AtomicBool::new(false),
                expected: AtomicBool::new(false),
                retired: AtomicBool::new(false),
                name: name.to_string(),
                wrapper,
            }),
        }
    }

    /// Runs `work` on a pool thread. A panic in `work` is caught (and logged); the
    /// work should report its own failure when it is dropped unfinished.
    pub fn submit(&self, work: Work) {
        let inner = &self.inner;
        let mut state = inner.lock();
        state.queue.push_back(work);
        inner.queued.fetch_add(1, Ordering::SeqCst);
        inner.expected.store(false, Ordering::SeqCst);
        if state.queue.len() > state.idle {
            state.idle += 1; // the new thread starts idle and takes a job at once
            drop(state);
            if let Err(e) = self.start_thread() {
                log::error!("cannot start a {} thread: {e}", inner.name);
                inner.lock().idle -= 1;
            }
            return;
        }
        if inner.spinning.load(Ordering::SeqCst) {
            return; // the spinning worker takes it without a wake-up
        }
        let parked = state.parked > 0;
        if parked {
            state.wakeups += 1;
        }
        drop(state);
        if parked {
            inner.wake.notify_one();
        }
    }

    /// Announces a job to come shortly (within `FOLLOW_SPIN`): a spinning worker waits
    /// for it instead of parking, which would cost a wake-up. The next `submit` ends it.
    pub fn expect_work(&self) {
        self.inner.expected.store(true, Ordering::SeqCst);
    }

    /// Waits until no job is queued or running, for at most `limit`; false if some
    /// still were then.
    pub fn wait_idle(&self, limit: Duration) -> bool {
        let inner = &self.inner;
        let state = inner.lock();
        let (state, _) = inner
            .drained
            .wait_timeout_while(state, limit, |s| s.running > 0 || !s.queue.is_empty())
            .unwrap_or_else(PoisonError::into_inner);
        state.running == 0 && state.queue.is_empty()
    }

    /// Ends the threads as soon as no job is queued for them (a running job is finished
    /// first), instead of after `KEEP_ALIVE` without work: for a pool that will get no
    /// more work. A job submitted later still runs, on a thread started for it.
    pub fn retire(&self) {
        let _state = self.inner.lock(); // a thread about to park sees it, or is woken
        self.inner.retired.store(true, Ordering::SeqCst);
        self.inner.wake.notify_all();
    }

    fn start_thread(&self) -> std::io::Result<()> {
        let inner = self.inner.clone();
        std::thread::Builder::new().name(self.inner.name.clone()).spawn(move || {
            let wrapper = inner.wrapper.clone();
            let mut body = || inner.work_until_idle();
            match wrapper {
                Some(wrapper) => wrapper(&mut body),
                None => body(),
            }
        })?;
        Ok(())
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The thread's loop: takes jobs until none came for `KEEP_ALIVE`.
    fn work_until_idle(&self) {
        while let Some(work) = self.next() {
            if catch_unwind(AssertUnwindSafe(work)).is_err() {
                log::error!("a job on a {} thread panicked", self.name);
            }
            let mut state = self.lock();
            state.idle += 1;
            state.running -= 1;
            if state.running == 0 && state.queue.is_empty() {
                self.drained.notify_all();
            }
        }
    }

    /// The next job, or None when the thread should exit (it is then no longer idle).
    fn next(&self) -> Option<Work> {
        if self.queued.load(Ordering::SeqCst) == 0
            && !self.retired.load(Ordering::SeqCst)
            && !self.spinning.swap(true, Ordering::SeqCst)
        {
            // The short spin, longer while a job is announced.
            let started = Instant::now();
            spin_until(FOLLOW_SPIN, || {
                self.queued.load(Ordering::SeqCst) > 0
                    || (started.elapsed() >= SHORT_SPIN && !self.expected.load(Ordering::SeqCst))
            });
            // An announced job that did not come (it went elsewhere): forgotten.
            self.expected.store(false, Ordering::SeqCst);
            self.spinning.store(false, Ordering::SeqCst);
        }
        let mut state = self.lock();
        loop {
            if let Some(work) = state.queue.pop_front() {
                self.queued.fetch_sub(1, Ordering::SeqCst);
                state.idle -= 1;
                state.running += 1;
                return Some(work);
            }
            if self.retired.load(Ordering::SeqCst) {
                state.idle -= 1;
                return None;
            }
            state.parked += 1;
            let (next, timeout) =
                self.wake.wait_timeout(state, KEEP_ALIVE).unwrap_or_else(PoisonError::into_inner);
            state = next;
            state.parked -= 1;
            if timeout.timed_out() && state.queue.is_empty() {
                state.idle -= 1;
                return None;
            }
        }
    }
}

/// Waits up to `limit` for `ready` without sleeping: a few busy iterations, then
/// yielding the core between checks, so that on a machine with few cores the threads the
/// awaited event depends on still get to run.
pub(crate) fn spin_until(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    for _ in 0..16 {
        if ready() {
            return true;
        }
        std::hint::spin_loop();
    }
    while Instant::now() < until {
        if ready() {
            return true;
        }
        std::thread::yield_now();
    }
    ready()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn runs_every_job_even_when_all_threads_block() {
        let workers = Workers::new("test-worker", None);
        let (tx, rx) = mpsc::channel();
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        // Ten jobs that block until the last one opens the gate: needs ten threads.
        for i in 0..10 {
            let (tx, gate) = (tx.clone(), gate.clone());
            workers.submit(Box::new(move || {
                let (open, cond) = &*gate;
                let mut open = open.lock().unwrap();
                if i == 9 {
                    *open = true;
                    cond.notify_all();
                }
                while !*open {
                    open = cond.wait(open).unwrap();
                }
                tx.send(i).unwrap();
            }));
        }
        let mut got: Vec<i32> = (0..10).map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap()).collect();
        got.sort();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn retired_threads_end_at_once_and_a_later_job_still_runs() {
        let live = Arc::new(AtomicUsize::new(0));
        let counted = live.clone();
        let wrapper: ThreadWrapper = Arc::new(move |body: &mut (dyn FnMut() + Send)| {
            counted.fetch_add(1, Ordering::SeqCst);
            body();
            counted.fetch_sub(1, Ordering::SeqCst);
        });
        let workers = Workers::new("test-worker", Some(wrapper));
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        for _ in 0..3 {
            let gate = gate.clone();
            workers.submit(Box::new(move || {
                let (open, cond) = &*gate;
                let mut open = open.lock().unwrap();
                while !*open {
                    open = cond.wait(open).unwrap();
                }
            }));
        }
        let (open, cond) = &*gate;
        *open.lock().unwrap() = true;
        cond.notify_all();
        assert!(workers.wait_idle(Duration::from_secs(10)));
        assert!(live.load(Ordering::SeqCst) > 0);
        workers.retire();
        // Well before KEEP_ALIVE (10 s): the idle threads end when retired.
        let deadline = Instant::now() + Duration::from_secs(5);
        while live.load(Ordering::SeqCst) > 0 {
            assert!(Instant::now() < deadline, "{} threads still alive", live.load(Ordering::SeqCst));
            std::thread::sleep(Duration::from_millis(10));
        }
        let (tx, rx) = mpsc::channel();
        workers.submit(Box::new(move || tx.send(()).unwrap()));
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
    }

    #[test]
    fn wait_idle_waits_for_running_and_queued_jobs() {
        let workers = Workers::new("test-worker", None);
        assert!(workers.wait_idle(Duration::ZERO));
        let finished = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let finished = finished.clone();
            workers.submit(Box::new(move || {
                std::thread::sleep(Duration::from_millis(200));
                finished.fetch_add(1, Ordering::SeqCst);
            }));
        }
        assert!(!workers.wait_idle(Duration::from_millis(20)));
        assert!(workers.wait_idle(Duration::from_secs(10)));
        assert_eq!(finished.load(Ordering::SeqCst), 3);
        // A panicking job counts as finished too.
        workers.submit(Box::new(|| panic!("boom")));
        assert!(workers.wait_idle(Duration::from_secs(10)));
    }

    /// Submits 200 jobs one after another, each `gap` after the previous one ended
    /// (announced first when `announce`); the parked threads woken for the last 100.
    fn wakeups_in_a_chain(announce: bool, gap: Duration) -> u64 {
        let workers = Workers::new("test-worker", None);
        let done = Arc::new(AtomicUsize::new(0));
        let mut before = 0;
        for i in 0..200 {
            if i == 100 {
                before = workers.inner.lock().wakeups;
            }
            let theirs = done.clone();
            workers.submit(Box::new(move || {
                theirs.fetch_add(1, Ordering::SeqCst);
            }));
            // Waiting without sleeping, so that the gap is the one below, not this
            // thread's own wake-up.
            assert!(spin_until(Duration::from_secs(10), || done.load(Ordering::SeqCst) > i));
            if announce {
                workers.expect_work();
            }
            // Sleeping, so that the worker has a core to spin (or park) on meanwhile.
            std::thread::sleep(gap);
        }
        let after = workers.inner.lock().wakeups;
        after - before
    }

    #[test]
    fn an_announced_job_is_taken_by_a_worker_still_awake() {
        // 50 us or a little more: longer than the short spin, as a local commit between
        // a task's end and its successor's start. Announced, (nearly) no job needs a
        // wake-up (a few are left to preemption); unannounced, nearly every one does.
        let announced = wakeups_in_a_chain(true, Duration::from_micros(50));
        assert!(announced <= 20, "{announced} of 100 announced jobs woke a parked thread");
        let unannounced = wakeups_in_a_chain(false, Duration::from_micros(50));
        assert!(unannounced >= 50, "only {unannounced} of 100 unannounced jobs woke a thread");
    }

    #[test]
    fn a_panicking_job_does_not_kill_the_pool() {
        let workers = Workers::new("test-worker", None);
        workers.submit(Box::new(|| panic!("boom")));
        let (tx, rx) = mpsc::channel();
        for i in 0..100 {
            let tx = tx.clone();
            workers.submit(Box::new(move || tx.send(i).unwrap()));
        }
        let total: i32 = (0..100).map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap()).sum();
        assert_eq!(total, (0..100).sum::<i32>());
    }
}
