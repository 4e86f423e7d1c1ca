//! The one module that calls libc directly: small safe functions over the system calls
//! pony needs (user ids and names, signals, waiting without reaping, polling stdin, the
//! hangup handler). Every `unsafe` block of the crate is here (`lib.rs` denies
//! `unsafe_code` everywhere else), each with the reason it is sound, so the rest of the
//! code reads as ordinary Rust and a reviewer checks the unsafe in one place.
//!
//! User names are looked up with the re-entrant `getpwuid_r`/`getpwnam_r`: the plain
//! `getpwuid` returns static storage that another thread's call may overwrite.

#![allow(unsafe_code)]

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

/// The real user id of this process.
pub fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// The effective user id of this process (what the kernel checks permissions against).
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The password-database entry's (name, uid, gid) fields, through the re-entrant lookups.
struct Entry {
    name: String,
    uid: u32,
    gid: u32,
}

/// Runs a `getpw*_r` lookup with buffers owned here; `None` when not found or on error.
fn lookup(
    call: impl Fn(
        *mut libc::passwd,
        *mut libc::c_char,
        libc::size_t,
        *mut *mut libc::passwd,
    ) -> libc::c_int,
) -> Option<Entry> {
    let mut buffer = vec![0 as libc::c_char; 4096];
    // SAFETY: passwd is a plain C struct of integers and pointers; all-zero is valid.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // The call writes into `entry` and `buffer`, both owned here and of the sizes given
    // (a too-small buffer is ERANGE, handled as not found).
    let status = call(&mut entry, buffer.as_mut_ptr(), buffer.len(), &mut found);
    if status != 0 || found.is_null() || entry.pw_name.is_null() {
        return None;
    }
    // SAFETY: on success pw_name points into `buffer`, NUL-terminated, and `buffer`
    // lives until the end of this function.
    let name = unsafe { std::ffi::CStr::from_ptr(entry.pw_name) }
        .to_string_lossy()
        .into_owned();
    Some(Entry {
        name,
        uid: entry.pw_uid,
        gid: entry.pw_gid,
    })
}

/// The login name of `uid`, if the password database has one.
pub fn user_name(uid: u32) -> Option<String> {
    lookup(|entry, buffer, len, found| {
        // SAFETY: every pointer is valid for the call (see `lookup`), len is buffer's length.
        unsafe { libc::getpwuid_r(uid, entry, buffer, len, found) }
    })
    .map(|e| e.name)
}

/// The (uid, gid) of the user called `name`, if there is one.
pub fn user_ids(name: &str) -> Option<(u32, u32)> {
    let name = std::ffi::CString::new(name).ok()?;
    lookup(|entry, buffer, len, found| {
        // SAFETY: `name` is NUL-terminated and outlives the call; see `lookup` for the rest.
        unsafe { libc::getpwnam_r(name.as_ptr(), entry, buffer, len, found) }
    })
    .map(|e| (e.uid, e.gid))
}

/// kill(2): sends `signal` (0: none, only the existence and permission checks) to `pid`,
/// which as in kill(2) is a process group when negative. The error is the errno
/// (`ESRCH`: no such process, `EPERM`: not ours to signal).
pub fn kill(pid: libc::pid_t, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sends `signal` to the process group whose leader is `leader` (a child started in a
/// group of its own); errors are ignored, as a group already gone needs nothing.
pub fn kill_group(leader: u32, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(leader) {
        if pid > 0 {
            let _ = kill(-pid, signal);
        }
    }
}

/// Reaps `pid` if it is our child and has exited (waitpid with WNOHANG); does nothing
/// for other processes (ECHILD) or a child still running.
pub fn reap(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        let mut status = 0;
        // SAFETY: `status` is owned here; waitpid only writes it.
        unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    }
}

/// Whether our child `pid` has exited, asked without reaping it (WNOWAIT), so that its
/// id (and its process group's) cannot be reused while we still act on it.
pub fn exited_unreaped(pid: libc::id_t) -> bool {
    // SAFETY: siginfo_t is a plain C struct; all-zero is valid, and waitid fills it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is owned here and lives across the call.
    let status = unsafe {
        libc::waitid(
            libc::P_PID,
            pid,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: si_pid reads the union member waitid sets (0 when no child changed state).
    status == 0 && unsafe { info.si_pid() } != 0
}

/// Whether stdin has something to read (a line, or its end) within `timeout_ms`.
pub fn stdin_readable(timeout_ms: i32) -> bool {
    let mut poll = libc::pollfd {
        fd: libc::STDIN_FILENO,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd, owned here, for the process's own stdin.
    unsafe { libc::poll(&mut poll, 1, timeout_ms) > 0 }
}

/// Set by the SIGHUP handler [`survive_hangup`] installs.
static HUNG_UP: AtomicBool = AtomicBool::new(false);

/// Installs a SIGHUP handler that points stdin, stdout and stderr at `/dev/null` and
/// records the hangup ([`hung_up`]) instead of ending the process.
pub fn survive_hangup() {
    // SAFETY: installs a handler that only calls async-signal-safe functions (open,
    // dup2, close) and stores an atomic; `action` is owned and fully initialised.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_hangup as extern "C" fn(libc::c_int) as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGHUP, &action, std::ptr::null_mut());
    }
}

extern "C" fn on_hangup(_: libc::c_int) {
    // SAFETY: async-signal-safe calls on the process's own standard descriptors.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in [libc::STDIN_FILENO, libc::STDOUT_FILENO, libc::STDERR_FILENO] {
                libc::dup2(null, fd);
            }
            if null > libc::STDERR_FILENO {
                libc::close(null);
            }
        }
    }
    HUNG_UP.store(true, Ordering::SeqCst);
}

/// Whether a SIGHUP arrived after [`survive_hangup`].
pub fn hung_up() -> bool {
    HUNG_UP.load(Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids_round_trip_through_the_password_database() {
        // root is in every password database pony runs on.
        assert_eq!(user_name(0).as_deref(), Some("root"));
        assert_eq!(user_ids("root"), Some((0, 0)));
        assert_eq!(user_ids("no-such-user-pony-test"), None);
        assert_eq!(user_ids("nul\0inside"), None);
    }

    #[test]
    fn signal_zero_tells_existence_and_errno() {
        let me = std::process::id() as libc::pid_t;
        assert!(kill(me, 0).is_ok());
        // pid_max is at most 2^22 on Linux, so this pid cannot exist.
        let error = kill(i32::MAX, 0).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::ESRCH));
    }
}
