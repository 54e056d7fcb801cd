//! The read connections: a few connections kept for reuse by callers (reads, a run
//! committed beside the writer) and background checks.
//!
//! Not sqlx's pool: that one pings the server whenever a connection goes back to it (a
//! round trip, and a thread and a server process woken, after every read), which cost a
//! busy engine about a tenth of its CPU. Here a connection goes back as it is when the
//! statement using it finished; one whose statement did not finish (an error, or its
//! caller gave up waiting: the future was dropped) may be mid-protocol and is closed
//! instead. Connections idle for `IDLE_FOR` are closed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx_postgres::PgConnection;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{check_search_path, Target};

/// How long an unused connection stays open.
const IDLE_FOR: Duration = Duration::from_secs(60);

/// How often connections idle for `IDLE_FOR` are looked for.
const REAP_EVERY: Duration = Duration::from_secs(15);

/// At most `size` connections, opened when needed.
pub(crate) struct Conns {
    target: Target,
    idle: Mutex<Vec<(PgConnection, Instant)>>,
    permits: Arc<Semaphore>,
    closed: AtomicBool,
}

/// A connection taken from `Conns`: `release` gives it back; dropped, it is closed.
pub(crate) struct Lease {
    conns: Arc<Conns>,
    conn: Option<PgConnection>,
    _permit: OwnedSemaphorePermit,
}

impl Conns {
    /// An empty set of at most `size` connections to `target`; connections idle too
    /// long are closed by a task on the runtime (so this must be called inside it).
    pub(crate) fn new(target: Target, size: u32) -> Arc<Conns> {
        let conns = Arc::new(Conns {
            target,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size.max(1) as usize)),
            closed: AtomicBool::new(false),
        });
        tokio::spawn(reap(Arc::downgrade(&conns)));
        conns
    }

    /// A connection: an idle one, else a new one (search path checked), waiting at most
    /// the connect timeout for one to be free and for the server to answer.
    pub(crate) async fn acquire(self: &Arc<Self>) -> Result<Lease, sqlx::Error> {
        let waiting = self.permits.clone().acquire_owned();
        let permit = match tokio::time::timeout(self.target.connect_timeout, waiting).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(sqlx::Error::PoolClosed),
            Err(_) => return Err(sqlx::Error::PoolTimedOut),
        };
        if self.closed.load(Ordering::SeqCst) {
            return Err(sqlx::Error::PoolClosed);
        }
        let reused = crate::engine::lock(&self.idle).pop().map(|(conn, _)| conn);
        let conn = match reused {
            Some(conn) => conn,
            None => {
                let mut conn = self.target.dial().await?;
                check_search_path(&mut conn, &self.target.schema)
                    .await
                    .map_err(|e| sqlx::Error::Configuration(e.into()))?;
                conn
            }
        };
        Ok(Lease { conns: self.clone(), conn: Some(conn), _permit: permit })
    }

    /// Closes the idle connections; from now on none is opened or kept.
    pub(crate) async fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.permits.close();
        let idle = std::mem::take(&mut *crate::engine::lock(&self.idle));
        for (conn, _) in idle {
            let _ = conn.close().await;
        }
    }
}

impl Lease {
    /// Gives the connection back for reuse: only after its statement finished.
    pub(crate) fn release(mut self) {
        if let Some(conn) = self.conn.take() {
            if !self.conns.closed.load(Ordering::SeqCst) {
                crate::engine::lock(&self.conns.idle).push((conn, Instant::now()));
            }
        }
    }
}

impl std::ops::Deref for Lease {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.conn.as_ref().expect("a lease holds its connection until released")
    }
}

impl std::ops::DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect("a lease holds its connection until released")
    }
}

/// Closes connections idle for `IDLE_FOR`, until the set is dropped or closed.
async fn reap(conns: Weak<Conns>) {
    loop {
        tokio::time::sleep(REAP_EVERY).await;
        let Some(conns) = conns.upgrade() else { return };
        if conns.closed.load(Ordering::SeqCst) {
            return;
        }
        let stale: Vec<PgConnection> = {
            let mut idle = crate::engine::lock(&conns.idle);
            let (stale, kept) = std::mem::take(&mut *idle)
                .into_iter()
                .partition::<Vec<_>, _>(|(_, since)| since.elapsed() >= IDLE_FOR);
            *idle = kept;
            stale.into_iter().map(|(conn, _)| conn).collect()
        };
        drop(conns);
        for conn in stale {
            let _ = conn.close().await;
        }
    }
}
