//! Simulations kept for the runs they predict (`pony simulate --save`): the timeline
//! picture and the JSON report under `<state dir>/simulations/`, named by the sha256 of
//! the playbook's and the inventory's content. A run's snapshot holds the same two
//! hashes (`files.json`), so the run page of `pony serve` finds the simulation of
//! exactly the files the run read; the last one saved for them wins. A simulation with
//! `--set` edits is kept under the files' names too (it is the what-if someone chose to
//! keep).

use crate::state::snapshot::{sha256, Snapshot};
use std::path::{Path, PathBuf};

/// The folder of kept simulations.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("simulations")
}

/// The name a simulation of these two files' contents is kept under (no extension).
fn key(playbook_sha: &str, inventory_sha: &str) -> String {
    let short = |h: &str| h.chars().take(16).collect::<String>();
    format!("{}-{}", short(playbook_sha), short(inventory_sha))
}

/// Keeps the picture and the report of a simulation of `playbook` on `inventory`;
/// returns the picture's path.
pub fn save(
    state_dir: &Path,
    playbook: &Path,
    inventory: &Path,
    svg: &str,
    json: &str,
) -> std::io::Result<PathBuf> {
    let name = key(
        &sha256(&std::fs::read(playbook)?),
        &sha256(&std::fs::read(inventory)?),
    );
    let dir = dir(state_dir);
    std::fs::create_dir_all(&dir)?;
    let svg_path = dir.join(format!("{name}.svg"));
    for (path, text) in [
        (dir.join(format!("{name}.json")), json),
        (svg_path.clone(), svg),
    ] {
        // Written beside and renamed: a page never reads half a picture.
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(svg_path)
}

/// Where the kept picture of a simulation of the files the run in `run_path` read is,
/// if there is one.
pub fn for_run(state_dir: &Path, run_path: &Path) -> Option<PathBuf> {
    let files = Snapshot::load(run_path).ok()?.files?;
    let name = key(&files.playbook.sha256, &files.inventory.sha256);
    Some(dir(state_dir).join(format!("{name}.svg"))).filter(|p| p.is_file())
}
