//! Durable state under the state directory: run folders with their snapshot, the
//! journal and per-host logs.

pub mod backend;
pub mod deadline;
pub mod journal;
pub mod local;
pub mod lock;
pub mod pg;
pub mod recorder;
pub mod replay;
pub mod run_dir;
pub mod runs;
pub mod snapshot;
pub mod split;
pub mod store;

/// This machine's name, as recorded in journals and locks.
/// This process as MACHINE:PID: a controller's default name, and how the inventory lease
/// of a run with one controller names its holder.
pub fn this_process() -> String {
    format!("{}:{}", hostname(), std::process::id())
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
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
    let uid = unsafe { libc::getuid() };
    let passwd = unsafe { libc::getpwuid(uid) };
    if passwd.is_null() {
        return format!("uid {uid}");
    }
    unsafe { std::ffi::CStr::from_ptr((*passwd).pw_name) }
        .to_string_lossy()
        .into_owned()
}
