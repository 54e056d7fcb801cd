//! WAL checkpoints, off the write path.
//!
//! SQLite normally checkpoints inside the commit that takes the WAL past 1,000 pages:
//! that commit copies the pages into the database file and syncs it, which on a small
//! virtual disk stalls the scheduler for milliseconds, tens of times a task's cost. The
//! write connection therefore has automatic checkpoints off, and asks this thread, every
//! `EVERY` commits, to run a passive checkpoint on a connection of its own. A passive
//! checkpoint never blocks the writer (or readers); the writer starts the WAL over
//! by itself once a checkpoint has copied all of it.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::errors::{Error, Result};

/// Commits between two checkpoint requests (a batch writes a few pages, so about the
/// 1,000 pages at which SQLite would checkpoint on its own).
pub(crate) const EVERY: u64 = 200;

#[derive(Default)]
struct Flags {
    requested: bool,
    stop: bool,
}

/// Handle to the checkpoint thread; dropping it stops the thread and waits for it (at
/// most one passive checkpoint), so that its connection is closed with the store's.
pub(crate) struct Checkpointer {
    flags: Arc<(Mutex<Flags>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// Opens a connection to the file at `path` and starts the thread.
    pub(crate) fn start(path: &Path, busy_timeout: Duration) -> Result<Checkpointer> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)?;
        conn.busy_timeout(busy_timeout)?;
        let shared = Arc::new((Mutex::new(Flags::default()), Condvar::new()));
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name("cloacina-checkpoint".into())
            .spawn(move || run(conn, &theirs))
            .map_err(|e| Error::Internal(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Checkpointer { flags: shared, thread: Some(thread) })
    }

    /// Asks for a checkpoint soon; returns at once.
    pub(crate) fn request(&self) {
        let (flags, wake) = &*self.flags;
        flags.lock().unwrap_or_else(PoisonError::into_inner).requested = true;
        wake.notify_one();
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (flags, wake) = &*self.flags;
        flags.lock().unwrap_or_else(PoisonError::into_inner).stop = true;
        wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(conn: Connection, shared: &(Mutex<Flags>, Condvar)) {
    let (flags, wake) = shared;
    loop {
        {
            let mut f = flags.lock().unwrap_or_else(PoisonError::into_inner);
            while !f.requested && !f.stop {
                f = wake.wait(f).unwrap_or_else(PoisonError::into_inner);
            }
            if f.stop {
                return;
            }
            f.requested = false;
        }
        // (busy, frames in the WAL, frames copied): a partial copy is fine, the next
        // request goes on from there.
        let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
        });
        match done {
            Ok((frames, copied)) => log::debug!("checkpoint: {copied} of {frames} WAL frames copied"),
            Err(e) => log::debug!("checkpoint failed (the next one retries): {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With automatic checkpoints off, the WAL stays small only if requests work.
    #[test]
    fn requested_checkpoints_keep_the_wal_small() {
        crate::store::sqlite::library::bind(None).expect("a SQLite library");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ck.db");
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0; \
                 CREATE TABLE t (v TEXT);",
            )
            .unwrap();
        let checkpointer = Checkpointer::start(&path, Duration::from_secs(5)).unwrap();
        let wal = path.with_extension("db-wal");
        let row = "x".repeat(3000);
        for round in 0..20 {
            for _ in 0..100 {
                writer.execute("INSERT INTO t (v) VALUES (?1)", [&row]).unwrap();
            }
            checkpointer.request();
            std::thread::sleep(Duration::from_millis(if round % 5 == 4 { 300 } else { 20 }));
        }
        // 2,000 commits of about one page each: without checkpoints the WAL would hold
        // some 2,000 frames (8 MB); restarted after each checkpoint it stays far smaller.
        let size = std::fs::metadata(&wal).unwrap().len();
        assert!(size < 3 * 1024 * 1024, "WAL is {size} bytes");
        drop(checkpointer);
        let count: i64 = writer.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(count, 2000);
    }
}
