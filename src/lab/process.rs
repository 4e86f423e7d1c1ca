//! Process-tree signalling for the lab: freeze, kill and resume one sshd together with
//! every process it started (per-connection sshd children and the commands they run), so
//! that "kill a host" also drops its open sessions and "pause a host" also hangs them.
//!
//! Only trees rooted at pids the lab itself started are ever signalled. Descendants are
//! found through the parent pid in `/proc/<pid>/stat`; a tree is frozen top-down (a stopped
//! parent can neither fork nor reap, so a pid found under it cannot be recycled while we
//! look at it).

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

/// Sends `signal` to `pid`; `false` if the process does not exist (or is not ours to signal).
pub(crate) fn signal(pid: u32, signal: libc::c_int) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // A positive pid names one process; 0 and negative ones would name groups.
    pid > 0 && crate::sys::kill(pid, signal).is_ok()
}

/// `(pid, ppid)` of every process visible in /proc (empty where /proc is missing).
fn process_table() -> Vec<(u32, u32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut table = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some((_, ppid)) = stat(pid) {
            table.push((pid, ppid));
        }
    }
    table
}

/// State letter and parent pid of `pid`, from /proc/<pid>/stat.
fn stat(pid: u32) -> Option<(char, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ..." — comm may hold spaces and parentheses, so split at the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// True while `pid` exists and is not a zombie (a zombie has let go of its ports and
/// sessions, which is what the lab waits for).
pub(crate) fn is_alive(pid: u32) -> bool {
    use crate::process::{pid_state, PidState};
    matches!(pid_state(pid), PidState::Running | PidState::OtherUser)
}

/// The NUL-separated command line of `pid` joined with spaces (empty for zombies).
pub(crate) fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(Path::new("/proc").join(pid.to_string()).join("cmdline")).ok()?;
    let parts: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    Some(parts.join(" "))
}

/// Every descendant of `roots` (not the roots themselves), found in one /proc scan.
fn descendants(roots: &HashSet<u32>) -> Vec<u32> {
    let table = process_table();
    let mut known: HashSet<u32> = roots.clone();
    let mut found = Vec::new();
    loop {
        let before = found.len();
        for &(pid, ppid) in &table {
            if known.contains(&ppid) && known.insert(pid) {
                found.push(pid);
            }
        }
        if found.len() == before {
            return found;
        }
    }
}

/// SIGSTOPs `roots` and then, top-down, every process below them, until every process
/// signalled has stopped and a /proc scan finds no new descendant. Returns every pid
/// stopped, roots first.
pub(crate) fn freeze_trees(roots: &[u32]) -> Vec<u32> {
    let mut all: Vec<u32> = Vec::new();
    let mut seen: HashSet<u32> = HashSet::new();
    for &pid in roots {
        if seen.insert(pid) {
            signal(pid, libc::SIGSTOP);
            all.push(pid);
        }
    }
    if all.is_empty() {
        return all;
    }
    // A process sent SIGSTOP may still fork before the signal takes (a loaded machine
    // runs it a little longer): the tree is frozen only once every process signalled is
    // stopped (or gone) and a scan finds no new one. Bounded: a frozen tree cannot grow.
    for _ in 0..2000 {
        let new: Vec<u32> = descendants(&seen)
            .into_iter()
            .filter(|p| !seen.contains(p))
            .collect();
        let settled = all
            .iter()
            .all(|&pid| stat(pid).is_none_or(|(state, _)| matches!(state, 'T' | 'Z' | 'X')));
        if new.is_empty() && settled {
            break;
        }
        for pid in new {
            signal(pid, libc::SIGSTOP);
            seen.insert(pid);
            all.push(pid);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    all
}

/// SIGCONTs `roots` and every process below them.
pub(crate) fn thaw_trees(roots: &[u32]) {
    let set: HashSet<u32> = roots.iter().copied().collect();
    let below = descendants(&set);
    for pid in roots.iter().chain(below.iter()) {
        signal(*pid, libc::SIGCONT);
    }
}

/// Freezes the trees under `roots`, then SIGKILLs every process in them. Returns the pids
/// signalled (roots first); reaping is the caller's business (see [`wait_gone`]).
pub(crate) fn kill_trees(roots: &[u32]) -> Vec<u32> {
    let all = freeze_trees(roots);
    for &pid in &all {
        signal(pid, libc::SIGKILL);
        // Not needed for SIGKILL, but leaves nothing stopped should a kill be refused.
        signal(pid, libc::SIGCONT);
    }
    all
}

/// Reaps whichever of `pids` are our own children and waits (up to `timeout`) until every
/// one is gone or a zombie. Returns the pids still alive at the deadline.
pub(crate) fn wait_gone(pids: &[u32], timeout: Duration) -> Vec<u32> {
    let deadline = Instant::now() + timeout;
    let mut pending: Vec<u32> = pids.to_vec();
    loop {
        pending.retain(|&pid| {
            // Fails with ECHILD for processes that are not our children, which is fine.
            crate::sys::reap(pid);
            is_alive(pid)
        });
        if pending.is_empty() || Instant::now() >= deadline {
            return pending;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
