//! A run's folder: `<state dir>/runs/<run id>/` with the snapshot of the playbook,
//! inventory and vars it used (see [`super::snapshot`]), `journal.jsonl` and
//! `logs/<host>.log`.

use super::snapshot::{Snapshot, SnapshotError, SnapshotVars};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct RunDir {
    pub id: String,
    pub path: PathBuf,
}

/// A new run id: UTC time plus a short random suffix, sortable by start time.
pub fn new_run_id() -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let compact: String = now.chars().filter(|c| c.is_ascii_digit()).collect();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!(
        "{}-{}-{:04x}",
        &compact[..8],
        &compact[8..14],
        (nanos ^ std::process::id()) & 0xffff
    )
}

impl RunDir {
    /// Creates the folder and writes the snapshot of `plan` (built from `inventory`
    /// and `playbook`); from then on the plan reads its template and upload sources
    /// from the snapshot, as a resume of the run will.
    pub fn create(
        id: String,
        state_dir: &Path,
        inventory: &Path,
        playbook: &Path,
        vars: SnapshotVars,
        plan: &crate::plan::Plan,
    ) -> Result<RunDir, SnapshotError> {
        let path = state_dir.join("runs").join(&id);
        let logs = path.join("logs");
        std::fs::create_dir_all(&logs)
            .map_err(|source| SnapshotError::Write { path: logs, source })?;
        let snapshot = Snapshot::write(&path, inventory, playbook, vars, plan, &id)?;
        if let Some(held) = snapshot.held_files(true) {
            // Set once: a plan is snapshotted by one run.
            let _ = plan.playbook.held.set(held);
        }
        Ok(RunDir { id, path })
    }

    /// An existing run's folder.
    pub fn open(state_dir: &Path, id: &str) -> Option<RunDir> {
        let path = state_dir.join("runs").join(id);
        path.join("journal.jsonl").is_file().then(|| RunDir {
            id: id.to_string(),
            path,
        })
    }

    pub fn journal_path(&self) -> PathBuf {
        self.path.join("journal.jsonl")
    }

    pub fn log_path(&self, host: &str) -> PathBuf {
        self.path.join("logs").join(format!("{host}.log"))
    }
}
