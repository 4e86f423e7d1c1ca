//! Durable state under the state directory: run folders with their snapshot, the
//! journal and per-host logs.

pub mod journal;
pub mod lock;
pub mod run_dir;
pub mod runs;
pub mod snapshot;

/// This machine's name, as recorded in journals and locks.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
