//! This process's identity (machine, pid, user, a unique token) and whether another
//! process is alive. A low module: journals, locks, leases, the transport's hands token
//! and the lab all ask here, so none of them imports another for it.

use crate::sys;
use std::path::Path;

/// This machine's name, as recorded in journals and locks.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// This process as MACHINE:PID: a controller's default name, and how the inventory lease
/// of a run with one controller names its holder.
pub fn this_process() -> String {
    format!("{}:{}", hostname(), std::process::id())
}

/// A token no other process has: machine, pid and the time it was made (a lease's
/// holder, a controller's hands on its task commands).
pub fn unique_token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{}:{}:{nanos:x}", hostname(), std::process::id())
}

/// Who runs pony, as recorded in journals and locks: `$USER`, else `$LOGNAME`, else the
/// name of the process's uid (CI containers often set neither variable).
pub fn current_user() -> String {
    for var in ["USER", "LOGNAME"] {
        if let Ok(user) = std::env::var(var) {
            if !user.is_empty() {
                return user;
            }
        }
    }
    let uid = sys::uid();
    sys::user_name(uid).unwrap_or_else(|| format!("uid {uid}"))
}

/// What the system says about a pid. Callers differ in what counts as alive, each for
/// a reason, so this tells all of it and each decides:
///
/// - a lock or a run's controller on this machine is alive unless [`Gone`](Self::Gone)
///   (a process of another user still holds what it took; a zombie has not released it
///   in any sense the journal could see);
/// - an ssh control folder's owner is gone only when [`Gone`](Self::Gone);
/// - a lab daemon is alive while it is ours to signal ([`Running`](Self::Running) or
///   [`Zombie`](Self::Zombie)): a pid of another user is a recycled one;
/// - a lab process tree member is alive while it runs, not as a zombie
///   ([`Running`](Self::Running) or [`OtherUser`](Self::OtherUser)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PidState {
    /// No such process (or not a valid pid: 0, or above the kernel's range).
    Gone,
    /// It exited and its parent has not reaped it yet; we may signal it.
    Zombie,
    /// It runs and we may signal it.
    Running,
    /// It exists but belongs to another user (signal 0 says EPERM).
    OtherUser,
}

impl PidState {
    /// Whether a process with the pid exists in any state.
    pub fn exists(self) -> bool {
        self != PidState::Gone
    }
}

/// The state of `pid`, asked with signal 0 (nothing is sent) and, for a process we may
/// signal, its state letter in /proc (Z or X: a zombie).
pub fn pid_state(pid: u32) -> PidState {
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return PidState::Gone;
    };
    if raw <= 0 {
        // 0 and negative pids name process groups in kill(2), never one process.
        return PidState::Gone;
    }
    match sys::kill(raw, 0) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => return PidState::OtherUser,
        Err(_) => return PidState::Gone,
    }
    match state_letter(pid) {
        Some('Z' | 'X') => PidState::Zombie,
        Some(_) => PidState::Running,
        // It ended between the two looks; without /proc, signal 0 is all there is.
        None if Path::new("/proc/self").exists() => PidState::Gone,
        None => PidState::Running,
    }
}

/// The state letter of `pid` from /proc/<pid>/stat.
fn state_letter(pid: u32) -> Option<char> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ..." — comm may hold spaces and parentheses, so split at the last ')'.
    text[text.rfind(')')? + 1..]
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_runs_and_a_pid_out_of_range_is_gone() {
        assert_eq!(pid_state(std::process::id()), PidState::Running);
        assert_eq!(pid_state(0), PidState::Gone);
        assert_eq!(pid_state(u32::MAX), PidState::Gone);
        assert_eq!(pid_state(i32::MAX as u32), PidState::Gone);
    }

    #[test]
    fn an_exited_child_is_a_zombie_until_reaped_then_gone() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Wait for the exit without reaping, so the zombie stays for the look.
        while !sys::exited_unreaped(pid) {
            std::thread::yield_now();
        }
        assert_eq!(pid_state(pid), PidState::Zombie);
        assert!(pid_state(pid).exists());
        child.wait().unwrap();
        assert_eq!(pid_state(pid), PidState::Gone);
    }

    #[test]
    fn identity_names_this_machine_and_pid() {
        let me = this_process();
        assert_eq!(me, format!("{}:{}", hostname(), std::process::id()));
        assert!(unique_token().starts_with(&format!("{me}:")));
        assert!(!current_user().is_empty());
    }
}
