//! SQLite transactions whose `BEGIN` and `COMMIT` statements are prepared once per
//! connection and cached, like every other statement of the store (rusqlite's own
//! `Transaction` parses them anew each time, which shows in a commit of a few
//! microseconds).

use rusqlite::Connection;

use crate::errors::Result;

/// An open transaction on `conn`, rolled back when dropped uncommitted.
pub(super) struct CachedTx<'c> {
    conn: &'c Connection,
    open: bool,
}

impl<'c> CachedTx<'c> {
    /// `BEGIN IMMEDIATE`: a write transaction, holding the write lock from the start.
    pub(super) fn immediate(conn: &'c Connection) -> Result<CachedTx<'c>> {
        Self::begin(conn, "BEGIN IMMEDIATE")
    }

    /// `BEGIN`: a read transaction, one snapshot for all its queries.
    pub(super) fn deferred(conn: &'c Connection) -> Result<CachedTx<'c>> {
        Self::begin(conn, "BEGIN")
    }

    fn begin(conn: &'c Connection, sql: &str) -> Result<CachedTx<'c>> {
        conn.prepare_cached(sql)?.execute([])?;
        Ok(CachedTx { conn, open: true })
    }

    /// Commits (for a read transaction: ends the snapshot).
    pub(super) fn commit(mut self) -> Result<()> {
        self.conn.prepare_cached("COMMIT")?.execute([])?;
        self.open = false;
        Ok(())
    }
}

impl std::ops::Deref for CachedTx<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for CachedTx<'_> {
    fn drop(&mut self) {
        if self.open && !self.conn.is_autocommit() {
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                log::warn!("rolling back an unfinished transaction failed: {e}");
            }
        }
    }
}
