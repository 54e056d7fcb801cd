//! This process and others on the same host: the host name, whether a pid is alive,
//! and a process's start time (so that a reused pid is not taken for the original).

/// This host's name (':' replaced, as owner ids use it as a separator).
#[cfg(not(unix))]
pub fn hostname() -> String {
    std::env::var("COMPUTERNAME").unwrap_or_else(|_| "localhost".into()).replace(':', "_")
}

/// Whether a process with this pid exists (unknown here: assumed so).
#[cfg(not(unix))]
pub fn pid_exists(_pid: u32) -> bool {
    true // unknown: the lease decides
}

/// This host's name (':' replaced, as owner ids use it as a separator).
#[cfg(unix)]
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).replace(':', "_")
}

/// Whether a process with this pid exists.
#[cfg(unix)]
pub fn pid_exists(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The start time of `pid` in clock ticks since boot (Linux), else 0.
pub fn start_time(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0 };
    // The command name (field 2) may contain spaces: fields resume after the last ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return 0 };
    rest.split_whitespace().nth(19).and_then(|f| f.parse().ok()).unwrap_or(0)
}

/// Whether the process `pid` that started at `start` (see `start_time`; 0 if unknown)
/// is still running: false when the pid is gone or now belongs to a newer process.
pub fn is_running(pid: u32, start: u64) -> bool {
    if pid == std::process::id() {
        return start == 0 || start == start_time(pid);
    }
    if !pid_exists(pid) {
        return false;
    }
    let now = start_time(pid);
    start == 0 || now == 0 || now == start
}
