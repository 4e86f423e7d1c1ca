//! One run at a time per inventory: a lock file `<state dir>/locks/<inventory>.lock`
//! created atomically, holding who has it. A lock whose process is gone is reported as
//! stale with the command to break it, never broken silently; a run paused for approval
//! keeps its lock, and only a resume of that run takes it over.

use crate::hint::pony as hint;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What the lock file says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockInfo {
    pub inventory: String,
    pub run_id: String,
    pub pid: u32,
    pub host: String,
    pub user: String,
    pub started: String,
    /// True while the run is stopped at an `approve:` gate; it keeps the lock.
    #[serde(default)]
    pub awaiting_approval: bool,
}

impl LockInfo {
    fn describe(&self) -> String {
        format!(
            "run {} (pid {} on {}, user {}, since {})",
            self.run_id, self.pid, self.host, self.user, self.started
        )
    }
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("inventory `{}` is locked by {}\n  hint: wait for it to finish, or look at it with `{}`", .0.inventory, .0.describe(), hint(format_args!("status {}", .0.run_id)))]
    Held(Box<LockInfo>),
    #[error("inventory `{}` is locked by {}, paused awaiting approval\n  hint: continue it with `{}`, or break the lock with `{}`", .0.inventory, .0.describe(), hint(format_args!("resume {} --approve WAVE", .0.run_id)), hint(format_args!("unlock {}", .0.inventory)))]
    Paused(Box<LockInfo>),
    #[error("inventory `{}` has a stale lock: {} is no longer running\n  hint: check it with `{}`, resume it with `{}`, or break the lock with `{}`", .0.inventory, .0.describe(), hint(format_args!("status {}", .0.run_id)), hint(format_args!("resume {}", .0.run_id)), hint(format_args!("unlock {}", .0.inventory)))]
    Stale(Box<LockInfo>),
    #[error("cannot use the lock {path}: {error}", path = .0.display(), error = .1)]
    Io(PathBuf, std::io::Error),
    /// A lease in the state database whose holder stopped renewing it (`--state postgres://…`).
    #[error("inventory `{}` has an expired lease: {} stopped renewing it (expired {})\n  hint: check it with `{}`, resume it from any machine with `{}`, or break the lease with `{}`", .0.inventory, .0.describe(), .1, hint(format_args!("status {}", .0.run_id)), hint(format_args!("resume {}", .0.run_id)), hint(format_args!("unlock {}", .0.inventory)))]
    Expired(Box<LockInfo>, String),
    /// A region of a run split between controllers is held by a live controller.
    #[error("{0}")]
    RegionHeld(String),
    /// `pony unlock` of a lock whose run is alive, without `--force`.
    #[error("inventory `{}` is held by a live run: {}\n  hint: let it finish or stop it (Ctrl-C there, or `{}`); breaking a live lock lets a second run work the same hosts until its controller notices: only if you must, `{}`", .0.inventory, .0.describe(), hint(format_args!("abort {}", .0.run_id)), hint(format_args!("unlock {} --force", .0.inventory)))]
    Live(Box<LockInfo>),
    /// The state database could not be asked.
    #[error("{0}")]
    Database(String),
}

/// A held lock; dropping it releases the lock unless it was kept for approval.
#[derive(Debug)]
pub struct InventoryLock {
    path: PathBuf,
    info: LockInfo,
    keep: bool,
}

pub fn lock_path(state_dir: &Path, inventory: &str) -> PathBuf {
    state_dir.join("locks").join(format!("{inventory}.lock"))
}

/// Who holds the inventory's lock file, if anyone.
pub fn holder(state_dir: &Path, inventory: &str) -> Option<LockInfo> {
    read(&lock_path(state_dir, inventory))
}

fn read(path: &Path) -> Option<LockInfo> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// Whether a process with this pid runs on this machine.
pub fn alive(pid: u32, host: &str) -> bool {
    host == crate::process::hostname() && crate::process::pid_state(pid).exists()
}

/// Takes the inventory's lock for `run_id`. `resuming` lets a resume of the same run take
/// over a lock its earlier process left (paused for approval, crashed, interrupted).
pub fn acquire(
    state_dir: &Path,
    inventory: &str,
    run_id: &str,
    resuming: bool,
) -> Result<InventoryLock, LockError> {
    let path = lock_path(state_dir, inventory);
    let dir = path.parent().expect("has a parent");
    std::fs::create_dir_all(dir).map_err(|e| LockError::Io(path.clone(), e))?;
    let info = LockInfo {
        inventory: inventory.to_string(),
        run_id: run_id.to_string(),
        pid: std::process::id(),
        host: crate::process::hostname(),
        user: crate::process::current_user(),
        started: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        awaiting_approval: false,
    };
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut file) => {
                file.write_all(
                    serde_json::to_string_pretty(&info)
                        .expect("serializes")
                        .as_bytes(),
                )
                .and_then(|_| file.sync_all())
                .map_err(|e| LockError::Io(path.clone(), e))?;
                return Ok(InventoryLock {
                    path,
                    info,
                    keep: false,
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let Some(holder) = read(&path) else {
                    // Torn or empty: someone is writing it right now, or it is garbage.
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    if let Some(holder) = read(&path) {
                        return Err(LockError::Held(Box::new(holder)));
                    }
                    return Err(LockError::Stale(Box::new(LockInfo {
                        inventory: inventory.into(),
                        run_id: "unknown".into(),
                        pid: 0,
                        host: "unknown".into(),
                        user: "unknown".into(),
                        started: "unknown".into(),
                        awaiting_approval: false,
                    })));
                };
                let live = alive(holder.pid, &holder.host);
                if resuming && holder.run_id == run_id && !live {
                    // Our own run's lock (paused, crashed or interrupted): take it over.
                    std::fs::remove_file(&path).map_err(|e| LockError::Io(path.clone(), e))?;
                    continue;
                }
                return Err(if holder.awaiting_approval {
                    LockError::Paused(Box::new(holder))
                } else if live {
                    LockError::Held(Box::new(holder))
                } else {
                    LockError::Stale(Box::new(holder))
                });
            }
            Err(e) => return Err(LockError::Io(path, e)),
        }
    }
}

impl InventoryLock {
    /// Keeps the lock after this process exits: the run is paused for approval.
    pub fn keep_for_approval(mut self) {
        self.info.awaiting_approval = true;
        let _ = std::fs::write(
            &self.path,
            serde_json::to_string_pretty(&self.info).expect("serializes"),
        );
        self.keep = true;
    }

    /// Keeps the lock as it is (an interrupted or crashed run stays locked until resumed).
    pub fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for InventoryLock {
    fn drop(&mut self) {
        if !self.keep && read(&self.path).is_some_and(|holder| holder.run_id == self.info.run_id) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Breaks a lock; returns who held it.
pub fn unlock(state_dir: &Path, inventory: &str) -> std::io::Result<Option<LockInfo>> {
    let path = lock_path(state_dir, inventory);
    let holder = read(&path);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(holder),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_is_refused_and_release_frees() {
        let dir = std::env::temp_dir().join(format!("pony-lock-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let lock = acquire(&dir, "global", "run-1", false).unwrap();
        match acquire(&dir, "global", "run-2", false) {
            Err(LockError::Held(holder)) => assert_eq!(holder.run_id, "run-1"),
            other => panic!("expected Held, got {other:?}"),
        }
        drop(lock);
        let lock = acquire(&dir, "global", "run-2", false).unwrap();
        lock.keep_for_approval();
        assert!(matches!(
            acquire(&dir, "global", "run-3", false),
            Err(LockError::Paused(_))
        ));
        assert_eq!(unlock(&dir, "global").unwrap().unwrap().run_id, "run-2");
        std::fs::write(
            lock_path(&dir, "global"),
            serde_json::to_string(&LockInfo {
                inventory: "global".into(),
                run_id: "dead".into(),
                pid: 999_999_999,
                host: crate::process::hostname(),
                user: "u".into(),
                started: "t".into(),
                awaiting_approval: false,
            })
            .unwrap(),
        )
        .unwrap();
        let stale = acquire(&dir, "global", "run-4", false).unwrap_err();
        assert!(
            stale.to_string().contains("stale lock")
                && stale.to_string().contains("pony unlock global"),
            "{stale}"
        );
        assert!(
            acquire(&dir, "global", "dead", true).is_ok(),
            "a resume of the same run takes over"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
