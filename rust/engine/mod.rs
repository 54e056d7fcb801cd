//! The engine: accepts runs, drives them to the end through the scheduler, and answers
//! questions about runs. Holds no pyo3 types; `py/engine.rs` wraps it for Python.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::context::Map;
use crate::errors::{Error, Result};
use crate::registry::WorkflowDef;
use crate::store::{is_final_run_status, Op, RunFilter, RunRecord, RunSummary, Store, Writer};

pub mod executor;
mod kept;
mod owner;
mod scheduler;
mod state;
pub mod workers;

pub(crate) use scheduler::panic_message;

pub use executor::{Done, Executor, HookCall, HookKind, Interrupt, Job, Outcome, Recall, RetryHint};
pub use workers::Workers;

pub use crate::store::Reads;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How many task attempts may run at once, across all runs of this engine.
    pub max_concurrency: usize,
    /// How long a run stays owned without a heartbeat; renewed every third of it.
    pub lease: Duration,
    /// Continue runs whose owner died, when their workflow is defined here.
    pub recover: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig { max_concurrency: 8, lease: Duration::from_secs(30), recover: true }
    }
}

/// How `Adopt` takes over a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AdoptMode {
    /// Its owner died: continue it.
    Recover,
    /// Explicit `resume`: also run failed, skipped and cancelled tasks again.
    Resume,
    /// A queued run, claimed: drive it from its start.
    Claim,
}

/// Engines alive in this process (a run owned by this pid but by none of these is
/// orphaned: its runner was closed or dropped).
static LIVE_OWNERS: std::sync::LazyLock<Mutex<std::collections::HashSet<String>>> =
    std::sync::LazyLock::new(Default::default);

/// Whether the owner of a run is gone (Some(true)), alive (Some(false)), or unknown.
fn owner_gone(owner: &str) -> Option<bool> {
    let mine = owner.split(':').nth(1) == Some(&std::process::id().to_string());
    if mine {
        return Some(!lock(&LIVE_OWNERS).contains(owner));
    }
    owner::is_alive(owner).map(|alive| !alive)
}

/// State shared by the engine handle and its scheduler.
pub(crate) struct Shared {
    pub store: Arc<dyn Store>,
    pub owner: Arc<str>,
    pub lease: Duration,
    /// Runs this engine drives, each with a flag that turns true once it is final and
    /// committed. A run absent from the map is not driven here: ask the store.
    pub watches: Mutex<HashMap<Arc<str>, watch::Receiver<bool>>>,
    /// Why the scheduler stopped, if it stopped on an error.
    pub failure: Mutex<Option<Error>>,
    /// Notified when a run starts being driven here, and when the engine closes: the
    /// background checks wake for it instead of polling at a fixed rate while idle.
    pub activity: Arc<tokio::sync::Notify>,
    /// Most runs driven here at once that claiming queued runs may reach (the engine's
    /// `max_concurrency`; 0 for a submit-only engine, which claims none).
    pub max_runs: usize,
    /// Whether the engine claims queued runs (turned off to drain before stopping).
    pub claiming: std::sync::atomic::AtomicBool,
    /// Held while claiming queued runs: two claims at once (the check at start and the
    /// background one) would each count the same room.
    pub claim_lock: tokio::sync::Mutex<()>,
    /// Writes read back from the database and kept in memory again.
    pub recalled: Arc<executor::Recalled>,
    /// Whether attempts are running, as the scheduler's last batch left it (false once
    /// closing): a run submitted now would wait behind the batch they report to.
    pub busy: std::sync::atomic::AtomicBool,
    /// Runs that ended here, kept as committed for the callers waiting for them
    /// (`kept.rs`); a run not there is read from the store.
    pub ended: Mutex<kept::Ended>,
    /// Set while queued runs may be waiting for room here (the last claim took all the
    /// room there was): a run ending here then wakes `room`, so that the next claim
    /// comes at once, not at the next background check.
    pub backlog: std::sync::atomic::AtomicBool,
    /// Woken when a run ends here while `backlog` is set.
    pub room: Arc<tokio::sync::Notify>,
}

impl Shared {
    fn failure(&self) -> Option<Error> {
        lock(&self.failure).clone()
    }
}

/// Messages to the scheduler.
pub(crate) enum Command {
    Submit {
        workflow: Arc<WorkflowDef>,
        input: Map,
        idempotency_key: Option<String>,
        reply: oneshot::Sender<Result<Arc<str>>>,
    },
    /// A new run of this engine, committed by its submitter beside the scheduler's
    /// batches (`Store::insert_run`): drive it. Its waiters already hold `watch`.
    Inserted {
        run_id: Arc<str>,
        workflow: Arc<WorkflowDef>,
        input: Map,
        at: i64,
        /// The ops that inserted it, committed.
        rows: Vec<Op>,
        done: watch::Sender<bool>,
        watch: watch::Receiver<bool>,
    },
    /// Renew the leases of the runs this engine drives.
    Heartbeat,
    /// Drive a run read from the store and already claimed for this engine.
    Adopt {
        record: Box<RunRecord>,
        mode: AdoptMode,
        reply: Option<oneshot::Sender<Result<()>>>,
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
    /// A hook returned (`error`: what it raised, if it did).
    HookDone {
        run_id: Arc<str>,
        task_id: Arc<str>,
        kind: HookKind,
        attempt: u32,
        error: Option<String>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
    /// A running attempt starts (+1) or stops (-1) waiting for another run of this
    /// engine: while it waits, its slot is lent to the runs it waits for.
    Lend {
        slots: isize,
    },
    /// Start no attempt any more; answer once none runs (see `Engine::drain`).
    Drain {
        reply: oneshot::Sender<()>,
    },
    /// A write outside the batches (claiming a run, marking one interrupted, asking
    /// another runner to cancel one), run on the scheduler's connection between batches.
    Write(WriteJob),
}

/// A one-off transaction for the scheduler's write connection; it sends its own reply.
pub(crate) type WriteJob = Box<dyn FnOnce(&mut dyn Writer) + Send>;

/// Runs `work` on the engine's write connection and returns its result.
async fn write<T, F>(commands: &mpsc::UnboundedSender<Command>, work: F) -> Result<T>
where
    F: FnOnce(&mut dyn Writer) -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    let (reply, answer) = oneshot::channel();
    let job: WriteJob = Box::new(move |conn| {
        let _ = reply.send(work(conn));
    });
    commands.send(Command::Write(job)).map_err(|_| closed())?;
    answer.await.map_err(|_| closed())?
}

impl Command {
    /// Whether the command is about run `run_id` (timers for a forgotten run are dropped).
    pub(crate) fn is_about(&self, run_id: &str) -> bool {
        match self {
            Command::Wake { run_id: r, .. }
            | Command::TimedOut { run_id: r, .. }
            | Command::Cancel { run_id: r, .. } => &**r == run_id,
            _ => false,
        }
    }
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
    ///
    /// The scheduler runs on a thread of its own and commits its batches there, on the
    /// store's write connection. Attempts report straight into its inbox, and while it
    /// expects work it spins briefly instead of sleeping: a task finishing is taken up,
    /// committed and followed by the next attempt without waking a sleeping thread.
    /// Timers and the store's background checks run on the tokio runtime `start` is
    /// called in; hooks and interrupts go to the executor, like attempts.
    pub fn start(store: Arc<dyn Store>, executor: Arc<dyn Executor>, config: EngineConfig) -> Result<Engine> {
        let owner: Arc<str> = owner::new_owner_id().into();
        let writer = store.take_writer(&owner)?;
        let runtime = tokio::runtime::Handle::current();
        let shared = Arc::new(Shared {
            store,
            owner,
            lease: config.lease,
            watches: Mutex::new(HashMap::new()),
            failure: Mutex::new(None),
            activity: Arc::new(tokio::sync::Notify::new()),
            max_runs: config.max_concurrency,
            claiming: std::sync::atomic::AtomicBool::new(config.max_concurrency > 0),
            claim_lock: tokio::sync::Mutex::new(()),
            recalled: Default::default(),
            busy: std::sync::atomic::AtomicBool::new(false),
            ended: Mutex::new(kept::Ended::default()),
            backlog: std::sync::atomic::AtomicBool::new(false),
            room: Arc::new(tokio::sync::Notify::new()),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let recover = config.recover;
        let scheduler = scheduler::Scheduler::new(shared.clone(), tx.clone(), rx, writer, executor, config);
        std::thread::Builder::new()
            .name("cloacina-scheduler".into())
            .spawn(move || {
                let _runtime = runtime.enter();
                scheduler.run();
            })
            .map_err(|e| Error::Internal(format!("cannot start the scheduler thread: {e}")))?;
        lock(&LIVE_OWNERS).insert(shared.owner.to_string());
        let (activity, room) = (shared.activity.clone(), shared.room.clone());
        tokio::spawn(watch_store(Arc::downgrade(&shared), tx.downgrade(), activity, room, recover));
        Ok(Engine { shared, commands: tx })
    }

    /// Whether the store answers within microseconds (an embedded database), so that a
    /// caller expecting an answer may spin for it rather than sleep.
    pub fn answers_quickly(&self) -> bool {
        self.shared.store.answers_quickly()
    }

    /// The store's label (file path or ":memory:").
    pub fn store_label(&self) -> &str {
        self.shared.store.label()
    }

    /// Starts a run of `workflow` with `input`; returns its id once it is committed.
    /// With an `idempotency_key`, a run already submitted with it (by any runner or
    /// process on the store) is returned instead of starting another. The scheduler
    /// commits the run with its next batch, unless attempts are running and the store
    /// inserts beside the writer (`Store::inserts_beside_writer`): then the caller
    /// commits it.
    pub async fn submit(
        &self,
        workflow: Arc<WorkflowDef>,
        input: Map,
        idempotency_key: Option<String>,
        reads: Reads,
    ) -> Result<String> {
        if let Some(e) = self.shared.failure() {
            return Err(e);
        }
        if let Some(key) = &idempotency_key {
            if let Some(existing) = self.shared.store.run_by_key(key, reads).await? {
                return Ok(existing);
            }
        }
        if self.shared.max_runs > 0
            && self.shared.busy.load(std::sync::atomic::Ordering::Relaxed)
            && self.shared.store.inserts_beside_writer()
        {
            let run_id: Arc<str> = uuid::Uuid::now_v7().to_string().into();
            let at = crate::store::now_micros();
            let lease_until = crate::duration::micros_after(at, self.shared.lease);
            let owner = Some(self.shared.owner.clone());
            let ops = scheduler::new_run_ops(
                &workflow,
                &run_id,
                &input,
                owner,
                at,
                lease_until,
                idempotency_key.clone(),
            )?;
            let committed = self.shared.store.insert_run(&ops).await?;
            return self.inserted(committed, run_id, workflow, input, at, ops);
        }
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Submit { workflow, input, idempotency_key, reply })
            .map_err(|_| closed())?;
        let run_id = rx.await.map_err(|_| self.shared.failure().unwrap_or_else(closed))??;
        Ok(run_id.to_string())
    }

    /// After the submitter committed a new run itself (while attempts run, the
    /// scheduler's batch in flight would make it wait one commit more): hands it to the
    /// scheduler, which starts its first tasks in its next batch. The run's waiters wait
    /// on the scheduler from now on, and a command about the run (cancel) reaches the
    /// scheduler after it.
    fn inserted(
        &self,
        committed: crate::store::Committed,
        run_id: Arc<str>,
        workflow: Arc<WorkflowDef>,
        input: Map,
        at: i64,
        rows: Vec<Op>,
    ) -> Result<String> {
        if let Some((_, existing)) = committed.duplicates.into_iter().next() {
            return Ok(existing);
        }
        log::debug!("run {run_id} was committed by its submitter, beside the scheduler's batches");
        let (done, watch) = watch::channel(false);
        lock(&self.shared.watches).insert(run_id.clone(), watch.clone());
        let cmd = Command::Inserted { run_id: run_id.clone(), workflow, input, at, rows, done, watch };
        if self.commands.send(cmd).is_err() {
            lock(&self.shared.watches).remove(&run_id);
            return Err(self.shared.failure().unwrap_or_else(closed));
        }
        Ok(run_id.to_string())
    }

    /// Waits until run `run_id` is final, like `wait`, for a caller that is itself a
    /// running attempt of this engine: its slot is lent meanwhile, so that a task that
    /// runs another workflow on its own runner cannot deadlock on the slots it holds.
    pub async fn wait_lending(&self, run_id: &str, reads: Reads) -> Result<()> {
        struct Lent<'a>(&'a mpsc::UnboundedSender<Command>);
        impl Drop for Lent<'_> {
            fn drop(&mut self) {
                let _ = self.0.send(Command::Lend { slots: -1 });
            }
        }
        self.commands.send(Command::Lend { slots: 1 }).map_err(|_| closed())?;
        let _lent = Lent(&self.commands);
        self.wait(run_id, reads).await
    }

    /// Waits until run `run_id` is final. Runs driven by this engine wake the waiter the
    /// moment they are committed; runs driven elsewhere are checked in the store.
    pub async fn wait(&self, run_id: &str, reads: Reads) -> Result<()> {
        let mut pause = Duration::from_millis(10);
        let changes = self.shared.store.changes();
        loop {
            let watch = lock(&self.shared.watches).get(run_id).cloned();
            if let Some(mut rx) = watch {
                if rx.wait_for(|done| *done).await.is_ok() {
                    return Ok(());
                }
                // The run is no longer driven here: the engine stopped, or another
                // runner took it over; in the latter case follow it in the store.
                if let Some(e) = self.shared.failure() {
                    return Err(e);
                }
            } else if lock(&self.shared.ended).holds(run_id) {
                // It ended here (before this wait), and is kept for its waiter.
                return Ok(());
            }
            if self.commands.is_closed() {
                return Err(Error::Closed(format!("the runner was closed before run {run_id} finished")));
            }
            // Driven by another runner or process: woken by the store's hint that
            // something changed where it has one (registered before reading, so that
            // no hint is missed), else by the pause.
            let hint = changes.as_ref().map(|c| c.notified());
            tokio::pin!(hint);
            if let Some(hint) = hint.as_mut().as_pin_mut() {
                hint.enable();
            }
            match self.shared.store.run_status(run_id, reads).await? {
                None => return Err(Error::Task(format!("no run with id '{run_id}'"))),
                Some(status) if is_final_run_status(&status) => return Ok(()),
                Some(_) => {
                    match hint.as_mut().as_pin_mut() {
                        Some(hint) => {
                            tokio::select! {
                                _ = tokio::time::sleep(pause) => {}
                                _ = hint => {}
                            }
                        }
                        None => tokio::time::sleep(pause).await,
                    }
                    let most =
                        if changes.is_some() { Duration::from_secs(1) } else { Duration::from_millis(250) };
                    pause = (pause * 2).min(most);
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
            let cmd =
                Command::Cancel { run_id: run_id.into(), reason: CancelReason::User, reply: Some(reply) };
            self.commands.send(cmd).map_err(|_| closed())?;
            return rx.await.map_err(|_| closed());
        }
        let run_id = run_id.to_owned();
        write(&self.commands, move |w| w.request_cancel(&run_id, crate::store::now_micros())).await
    }

    /// Whether run `run_id` is final now, as stored (false if unknown).
    pub async fn is_final(&self, run_id: &str, reads: Reads) -> Result<bool> {
        let status = self.run_status(run_id, reads).await?;
        Ok(status.is_some_and(|s| is_final_run_status(&s)))
    }

    /// The database's schema version (its latest migration).
    pub fn schema_version(&self) -> i64 {
        self.shared.store.schema_version()
    }

    /// Run `run_id`'s status as stored (one row read: no tasks, no contexts), if it exists.
    pub async fn run_status(&self, run_id: &str, reads: Reads) -> Result<Option<String>> {
        self.shared.store.run_status(run_id, reads).await
    }

    /// Run `run_id` as stored, if it exists.
    pub async fn get_run(&self, run_id: &str, reads: Reads) -> Result<Option<RunRecord>> {
        self.shared.store.run(run_id, reads).await
    }

    /// Run `run_id` once `wait` returned: as this engine committed its end when it
    /// ended here (kept in memory, handed over once), else as stored.
    pub async fn ended_run(&self, run_id: &str, reads: Reads) -> Result<Option<RunRecord>> {
        let kept = lock(&self.shared.ended).take(run_id);
        if let Some(kept) = kept {
            match kept.into_record() {
                Ok(record) => return Ok(Some(record)),
                Err(e) => {
                    log::warn!("run {run_id} as kept could not be read back, reading it from the store: {e}")
                }
            }
        }
        self.shared.store.run(run_id, reads).await
    }

    /// Runs matching `filter`, newest first, as summaries.
    pub async fn list_runs(&self, filter: &RunFilter, reads: Reads) -> Result<Vec<RunSummary>> {
        self.shared.store.run_summaries(filter, reads).await
    }

    /// Stops taking work, interrupts the running attempts (a body that cannot be
    /// stopped is left to finish in the background, its result discarded), releases
    /// the runs it drives, then closes the store. Runs still unfinished stay `running`
    /// in the database, for the next runner to continue. Idempotent.
    pub async fn close(&self) {
        self.shared.busy.store(false, std::sync::atomic::Ordering::SeqCst);
        let (reply, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown { reply }).is_ok() {
            let _ = rx.await;
        }
        self.shared.activity.notify_one();
        lock(&LIVE_OWNERS).remove(&*self.shared.owner);
        self.shared.store.close().await;
    }

    /// Takes over every run whose owner is gone (its lease expired, or its process
    /// provably no longer exists) and whose workflow is defined in this process; runs
    /// of workflows not defined here are marked `interrupted` and left alone. Returns
    /// the ids of the runs taken over.
    pub async fn recover_orphans(&self) -> Result<Vec<String>> {
        recover_orphans(&self.shared, &self.commands).await
    }

    /// Runs `run_id` again from where it stopped: an interrupted run continues; a
    /// failed or cancelled one runs its failed, skipped and cancelled tasks again with
    /// the current definitions, keeping every completed task's output.
    pub async fn resume(&self, run_id: &str) -> Result<()> {
        if self.shared.max_runs == 0 {
            return self.queue_resume(run_id).await;
        }
        if lock(&self.shared.watches).contains_key(run_id) {
            return Err(Error::Task(format!("run {run_id} is already running in this runner")));
        }
        // An end kept from before must not answer a wait on the run resumed.
        lock(&self.shared.ended).take(run_id);
        let record = self
            .shared
            .store
            .run(run_id, Reads::Offloaded)
            .await?
            .ok_or_else(|| Error::Task(format!("no run with id '{run_id}'")))?;
        let mode = match record.status.as_str() {
            "completed" => return Err(Error::Task(format!("run {run_id} already completed"))),
            "failed" | "cancelled" => AdoptMode::Resume,
            _ => {
                let leased = record.lease_expires_at.is_some_and(|l| l > crate::store::now_micros());
                if leased && record.owner.as_deref().is_some_and(|o| owner_gone(o) != Some(true)) {
                    return Err(Error::Task(format!(
                        "run {run_id} is still being run by {}",
                        record.owner.as_deref().unwrap_or("another runner")
                    )));
                }
                AdoptMode::Recover
            }
        };
        let until = crate::duration::micros_after(crate::store::now_micros(), self.shared.lease);
        let (id, expected, me) = (run_id.to_owned(), record.owner.clone(), self.shared.owner.clone());
        if !write(&self.commands, move |w| w.claim_run(&id, expected.as_deref(), &me, until)).await? {
            return Err(Error::Task(format!("run {run_id} was taken over by another runner meanwhile")));
        }
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Adopt { record: Box::new(record), mode, reply: Some(reply) };
        self.commands.send(cmd).map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    /// Queues the failed or cancelled run `run_id` for an engine serving its workflow to
    /// claim and resume (what `resume` does on an engine that only submits runs).
    async fn queue_resume(&self, run_id: &str) -> Result<()> {
        let (id, at) = (run_id.to_owned(), crate::store::now_micros());
        if write(&self.commands, move |w| w.request_resume(&id, at)).await? {
            return Ok(());
        }
        Err(Error::Task(match self.run_status(run_id, Reads::Offloaded).await?.as_deref() {
            None => format!("no run with id '{run_id}'"),
            Some("completed") => format!("run {run_id} already completed"),
            Some(status) => format!(
                "run {run_id} is {status}: only a failed or cancelled run is queued to be resumed \
                 (an interrupted one is taken over by a runner serving its workflow)"
            ),
        }))
    }

    /// Stops claiming queued runs and starting attempts, and returns once no attempt
    /// runs (before `close`, to stop serving without interrupting work). The runs left
    /// unfinished are continued by other engines: on PostgreSQL as soon as this one
    /// closes (its liveness lock is released), elsewhere after its lease.
    pub async fn drain(&self) -> Result<()> {
        self.shared.claiming.store(false, std::sync::atomic::Ordering::SeqCst);
        let (reply, rx) = oneshot::channel();
        self.commands.send(Command::Drain { reply }).map_err(|_| closed())?;
        rx.await.map_err(|_| closed())
    }

    /// Deletes the runs that finished before `before` (microseconds since the epoch),
    /// with all their rows, in batches of `PURGE_BATCH` runs, each its own transaction
    /// between the scheduler's batches (running work is not held up); returns how many.
    pub async fn purge(&self, before: i64) -> Result<usize> {
        let mut total = 0;
        loop {
            let deleted = write(&self.commands, move |w| w.purge(before, PURGE_BATCH)).await?;
            total += deleted;
            if deleted < PURGE_BATCH {
                return Ok(total);
            }
        }
    }

    /// How many runs this engine drives now.
    pub fn driving(&self) -> usize {
        lock(&self.shared.watches).len()
    }

    /// Asks the scheduler to stop without waiting (used when the handle is dropped).
    pub fn request_close(&self) {
        self.shared.busy.store(false, std::sync::atomic::Ordering::SeqCst);
        lock(&LIVE_OWNERS).remove(&*self.shared.owner);
        let (reply, _rx) = oneshot::channel();
        let _ = self.commands.send(Command::Shutdown { reply });
        self.shared.activity.notify_one();
    }
}

/// How often an engine looks for cancellation requests for the runs it drives.
const CANCEL_CHECK: Duration = Duration::from_millis(200);

/// How often an engine that drives runs looks for orphaned runs it could continue.
const RECOVERY_CHECK: Duration = Duration::from_secs(2);

/// The longest pause between looks for orphaned runs while the engine is idle: the
/// pause doubles from `RECOVERY_CHECK` while nothing is found (a dead process's runs
/// are also taken over at once by the next runner opened on the database).
const IDLE_RECOVERY_CHECK: Duration = Duration::from_secs(30);

/// The engine's background duties against the store, none on the scheduling path:
/// carry out cancellation requests written by other runners or processes (a cheap
/// indexed read, only while runs are driven here), renew leases (a third of the lease),
/// and take over orphaned runs (when `recover` is on). While no run is driven here it
/// sleeps until a run starts (`activity`), waking only for the recovery check, at a
/// pause that grows: an idle runner costs no measurable CPU.
async fn watch_store(
    shared: std::sync::Weak<Shared>,
    commands: mpsc::WeakUnboundedSender<Command>,
    activity: Arc<tokio::sync::Notify>,
    room: Arc<tokio::sync::Notify>,
    recover: bool,
) {
    let mut last_heartbeat = std::time::Instant::now();
    let mut last_recovery = std::time::Instant::now();
    let mut idle_recovery = RECOVERY_CHECK;
    // A store that tells a dead owner at once is checked at its own pace, idle or not;
    // its hints (a run queued elsewhere, a cancel requested) wake the checks at once.
    let (fast, changes) = match shared.upgrade() {
        Some(s) => (s.store.liveness_check(), s.store.changes()),
        None => return,
    };
    loop {
        let driving_before = shared.upgrade().is_some_and(|s| !lock(&s.watches).is_empty());
        let pause = match (driving_before, recover, fast) {
            (_, true, Some(fast)) => fast.saturating_sub(last_recovery.elapsed()).min(CANCEL_CHECK),
            (true, _, _) => CANCEL_CHECK,
            (false, true, None) => idle_recovery.saturating_sub(last_recovery.elapsed()).max(CANCEL_CHECK),
            (false, false, _) => Duration::from_secs(3600),
        };
        let hinted = async {
            match &changes {
                Some(changes) => changes.notified().await,
                None => std::future::pending().await,
            }
        };
        let (mut hint, mut roomy) = (false, false);
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = activity.notified() => idle_recovery = RECOVERY_CHECK,
            _ = hinted => hint = true,
            _ = room.notified() => roomy = true,
        }
        let (Some(shared), Some(commands)) = (shared.upgrade(), commands.upgrade()) else { return };
        if commands.is_closed() {
            return;
        }
        let driving = !lock(&shared.watches).is_empty();
        if driving && last_heartbeat.elapsed() >= shared.lease / 3 {
            last_heartbeat = std::time::Instant::now();
            if commands.send(Command::Heartbeat).is_err() {
                return;
            }
        }
        let due = match fast {
            Some(fast) => fast,
            None if driving => RECOVERY_CHECK,
            None => idle_recovery,
        };
        if recover && (hint || last_recovery.elapsed() >= due) {
            last_recovery = std::time::Instant::now();
            match recover_orphans(&shared, &commands).await {
                Ok(taken) if !taken.is_empty() => idle_recovery = RECOVERY_CHECK,
                Ok(_) if !driving => idle_recovery = (idle_recovery * 2).min(IDLE_RECOVERY_CHECK),
                Ok(_) => {}
                Err(e) => log::debug!("looking for runs to recover failed: {e}"),
            }
        } else if recover && roomy {
            // A run ended with runs queued: claim them now (the rest of the recovery,
            // orphaned runs, keeps its own pace).
            if let Err(e) = claim_queued(&shared, &commands).await {
                log::debug!("claiming queued runs failed: {e}");
            }
        }
        if !driving {
            continue;
        }
        let Ok(requested) = shared.store.cancel_requests(&shared.owner).await else { continue };
        for run_id in requested {
            let cmd = Command::Cancel { run_id: run_id.into(), reason: CancelReason::User, reply: None };
            if commands.send(cmd).is_err() {
                return;
            }
        }
    }
}

async fn recover_orphans(shared: &Shared, commands: &mpsc::UnboundedSender<Command>) -> Result<Vec<String>> {
    let mut taken = claim_queued(shared, commands).await?;
    let now = crate::store::now_micros();
    for candidate in shared.store.orphan_candidates(&shared.owner).await? {
        let expired = candidate.lease_expires_at.is_none_or(|l| l < now);
        // Recoverable: the lease expired, or the owner provably no longer exists (the
        // store's verdict where it has one).
        let gone = candidate.gone.unwrap_or_else(|| {
            expired || candidate.owner.as_deref().is_none_or(|o| owner_gone(o) == Some(true))
        });
        if !gone {
            continue;
        }
        if crate::registry::workflow(&candidate.workflow).is_none() {
            if candidate.status == "running" {
                let (id, owner) = (candidate.run_id.clone(), candidate.owner.clone());
                write(commands, move |w| w.mark_interrupted(&id, owner.as_deref(), now)).await?;
            }
            continue;
        }
        let until = crate::duration::micros_after(now, shared.lease);
        let (id, expected, me) = (candidate.run_id.clone(), candidate.owner.clone(), shared.owner.clone());
        if !write(commands, move |w| w.claim_run(&id, expected.as_deref(), &me, until)).await? {
            continue; // another runner got there first
        }
        let Some(mut record) = shared.store.run(&candidate.run_id, Reads::Offloaded).await? else { continue };
        record.owner = candidate.owner.clone(); // read after the claim: keep who had it

        let (reply, rx) = oneshot::channel();
        let cmd = Command::Adopt { record: Box::new(record), mode: AdoptMode::Recover, reply: Some(reply) };
        commands.send(cmd).map_err(|_| closed())?;
        match rx.await.map_err(|_| closed())? {
            Ok(()) => taken.push(candidate.run_id),
            Err(e) => log::warn!("could not recover run {}: {e}", candidate.run_id),
        }
    }
    Ok(taken)
}

/// Claims queued runs of the workflows defined here, while fewer runs than
/// `max_concurrency` are driven here, and drives them. Returns their ids.
async fn claim_queued(shared: &Shared, commands: &mpsc::UnboundedSender<Command>) -> Result<Vec<String>> {
    use std::sync::atomic::Ordering;
    let _claiming = shared.claim_lock.lock().await;
    let mut taken = Vec::new();
    loop {
        let driving = lock(&shared.watches).len();
        let room = shared.max_runs.saturating_sub(driving).min(CLAIM_BATCH);
        if room == 0 || !shared.claiming.load(Ordering::SeqCst) {
            // Out of room with runs claimed just now: more may be queued, for the room
            // the next run to end here leaves (`Shared::backlog`).
            if !taken.is_empty() {
                shared.backlog.store(true, Ordering::SeqCst);
            }
            return Ok(taken);
        }
        let names = crate::registry::workflow_names();
        if names.is_empty() || !shared.store.has_queued(&names).await? {
            shared.backlog.store(false, Ordering::SeqCst);
            return Ok(taken);
        }
        let until = crate::duration::micros_after(crate::store::now_micros(), shared.lease);
        let me = shared.owner.clone();
        let claimed = write(commands, move |w| w.claim_queued(&names, room, &me, until)).await?;
        if claimed.is_empty() {
            shared.backlog.store(false, Ordering::SeqCst);
            return Ok(taken);
        }
        let full = claimed.len() < room;
        shared.backlog.store(!full, Ordering::SeqCst);
        for run_id in claimed {
            let Some(mut record) = shared.store.run(&run_id, Reads::Offloaded).await? else { continue };
            // A run queued by `request_resume` is resumed; any other was never started.
            let resume = record.events.last().is_some_and(|(_, kind, _)| kind == "resume_requested");
            record.owner = None; // read after the claim: a queued run had no owner
            let mode = if resume { AdoptMode::Resume } else { AdoptMode::Claim };
            let (reply, rx) = oneshot::channel();
            let cmd = Command::Adopt { record: Box::new(record), mode, reply: Some(reply) };
            commands.send(cmd).map_err(|_| closed())?;
            match rx.await.map_err(|_| closed())? {
                Ok(()) => taken.push(run_id),
                Err(e) => log::warn!("could not start the claimed run {run_id}: {e}"),
            }
        }
        if full {
            return Ok(taken);
        }
    }
}

/// Most runs deleted by one transaction of `Engine::purge`.
const PURGE_BATCH: usize = 1000;

/// Most queued runs claimed by one statement.
const CLAIM_BATCH: usize = 32;

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
