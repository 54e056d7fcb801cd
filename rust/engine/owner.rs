//! Who drives a run: an owner id naming this engine's host and process, and the test
//! of whether the owner of a run is still alive.
//!
//! Format: `host:pid:start:nonce`. `start` is the process's start time (Linux: clock
//! ticks since boot from /proc; elsewhere 0), so a reused pid is not mistaken for the
//! original process.

use crate::process::{hostname, pid_exists, start_time};

/// This engine's owner id (a new nonce per engine).
pub fn new_owner_id() -> String {
    let nonce = uuid::Uuid::now_v7().simple().to_string();
    format!("{}:{}:{}:{}", hostname(), std::process::id(), start_time(std::process::id()), &nonce[20..])
}

/// Whether the process behind `owner` is alive: Some(false) when it provably is not
/// (same host, and its pid is gone or belongs to a newer process), Some(true) when it
/// is, None when it cannot be told (another host: rely on its lease).
pub fn is_alive(owner: &str) -> Option<bool> {
    let mut parts = owner.rsplitn(4, ':');
    let _nonce = parts.next()?;
    let start: u64 = parts.next()?.parse().ok()?;
    let pid: u32 = parts.next()?.parse().ok()?;
    let host = parts.next()?;
    if host != hostname() {
        return None;
    }
    if pid == std::process::id() {
        return Some(start == start_time(pid));
    }
    if !pid_exists(pid) {
        return Some(false);
    }
    if start != 0 {
        let now = start_time(pid);
        if now != 0 && now != start {
            return Some(false);
        }
    }
    Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_owner_is_alive_and_a_dead_pid_is_not() {
        let me = new_owner_id();
        assert_eq!(is_alive(&me), Some(true));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let dead = format!("{}:{pid}:{}:abcd", hostname(), 12345);
        assert_eq!(is_alive(&dead), Some(false));
        assert_eq!(is_alive("elsewhere:1:0:abcd"), None);
    }
}
