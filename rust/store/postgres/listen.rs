//! Wake-ups between processes: LISTEN/NOTIFY as a hint, never as the truth.
//!
//! Each store listens on one channel, `cloacina_<schema>` (so tenants never wake each
//! other), on a connection of its own, and signals `changes` for every notification and
//! whenever that connection was lost (something may have been missed: look now). Waiters
//! then read the store; a poll covers whatever a lost notification would have told.
//!
//! Notifications are sent after the commit that made the news, outside it (NOTIFY takes
//! a database-wide lock at commit), by a task of their own that coalesces them: at most
//! one NOTIFY per `MIN_GAP` per process, whatever the rate of runs finishing.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx_postgres::{PgListener, PgPool};
use tokio::sync::Notify;

use super::pool::Conns;
use super::Target;

/// The shortest pause between two notifications sent by one process.
const MIN_GAP: Duration = Duration::from_millis(10);

/// What a commit has to tell other processes.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Wake {
    /// A run finished: callers waiting on it elsewhere look again.
    pub finished: bool,
    /// A run was queued: engines with free capacity look for work.
    pub queued: bool,
    /// A cancel was requested: the run's owner looks.
    pub cancel: bool,
}

impl Wake {
    fn bits(self) -> u8 {
        (self.finished as u8) | (self.queued as u8) << 1 | (self.cancel as u8) << 2
    }
}

/// The store's listening and notifying tasks.
pub(crate) struct Listener {
    changes: Arc<Notify>,
    outbox: Arc<Outbox>,
    stopped: AtomicBool,
    tasks: std::sync::Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Listener {
    /// Starts listening on the schema's channel and the task that sends notifications.
    /// Must be called inside the runtime.
    pub(crate) fn start(target: Target, pool: PgPool, conns: Arc<Conns>) -> Arc<Listener> {
        let listener = Arc::new(Listener {
            changes: Arc::new(Notify::new()),
            outbox: Arc::new(Outbox { pending: AtomicU8::new(0), ready: Notify::new() }),
            stopped: AtomicBool::new(false),
            tasks: std::sync::Mutex::new(Vec::new()),
        });
        let channel = channel(&target.schema);
        // Names this store's own notifications, which it does not need to hear.
        let sender = format!("{:016x}", fastrand::u64(..));
        let listen =
            tokio::spawn(listen(Arc::downgrade(&listener), pool.clone(), channel.clone(), sender.clone()));
        let send = tokio::spawn(send(listener.outbox.clone(), conns, channel, sender));
        *crate::engine::lock(&listener.tasks) = vec![listen.abort_handle(), send.abort_handle()];
        listener
    }

    /// Signalled at every notification on the channel, and when listening was
    /// interrupted (look again: a notification may have been missed).
    pub(crate) fn changes(&self) -> Arc<Notify> {
        self.changes.clone()
    }

    /// Tells the other processes `wake` soon (coalesced, never in a transaction).
    pub(crate) fn announce(&self, wake: Wake) {
        let bits = wake.bits();
        if bits != 0 {
            self.outbox.pending.fetch_or(bits, Ordering::SeqCst);
            self.outbox.ready.notify_one();
        }
    }

    /// Stops both tasks.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        for task in crate::engine::lock(&self.tasks).drain(..) {
            task.abort();
        }
        self.changes.notify_waiters();
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop();
    }
}

/// News waiting to be sent.
struct Outbox {
    /// Kinds of news not yet sent (`Wake::bits`).
    pending: AtomicU8,
    ready: Notify,
}

/// The schema's notification channel.
pub(crate) fn channel(schema: &str) -> String {
    format!("cloacina_{schema}")
}

async fn listen(listener: std::sync::Weak<Listener>, pool: PgPool, channel: String, me: String) {
    let mut pause = Duration::from_millis(100);
    loop {
        let connected = async {
            let mut conn = PgListener::connect_with(&pool).await?;
            conn.listen(&channel).await?;
            Ok::<_, sqlx::Error>(conn)
        }
        .await;
        let mut conn = match connected {
            Ok(conn) => conn,
            Err(e) => {
                log::debug!("listening on {channel} failed: {e}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        pause = Duration::from_millis(100);
        loop {
            let received = conn.try_recv().await;
            let Some(listener) = listener.upgrade() else { return };
            if listener.stopped.load(Ordering::SeqCst) {
                return;
            }
            match &received {
                // Its own news: nothing this store waits for.
                Ok(Some(n)) if n.payload().split_once(':').is_some_and(|(_, from)| from == me) => continue,
                _ => listener.changes.notify_waiters(),
            }
            match received {
                Ok(Some(_)) => {}
                // The connection was lost: sqlx reconnects at the next receive.
                Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => {
                    log::debug!("listening on {channel} failed: {e}");
                    break;
                }
            }
        }
    }
}

async fn send(outbox: Arc<Outbox>, conns: Arc<Conns>, channel: String, me: String) {
    loop {
        let bits = outbox.pending.swap(0, Ordering::SeqCst);
        if bits == 0 {
            outbox.ready.notified().await;
            continue;
        }
        let payload = format!("{bits}:{me}");
        let sent = async {
            let mut conn = conns.acquire().await?;
            sqlx::query("SELECT pg_notify($1, $2)").bind(&channel).bind(&payload).execute(&mut *conn).await?;
            conn.release();
            Ok::<_, sqlx::Error>(())
        };
        if let Err(e) = sent.await {
            log::debug!("notifying {channel} failed: {e}");
        }
        tokio::time::sleep(MIN_GAP).await;
    }
}
