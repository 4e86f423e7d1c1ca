//! Reading past and current runs back: the run folders under `<state dir>/runs/`, their
//! journals folded into a summary (`pony history`) or a detailed state (`pony status`),
//! and the plan rebuilt from a run's snapshot to know how many tasks are still pending.
//!
//! - [`summary`]: one run in a line (`pony history`);
//! - [`detail`]: a journal folded into the run's last known state (`pony status`);
//! - [`counts`]: task counts per wave and region, pending included when the plan rebuilds;
//! - [`timing`]: when tasks and gates happened (the ETA, the real timeline).

pub mod counts;
pub mod detail;
pub mod summary;
pub mod timing;

pub use counts::{count_tasks, Group, TaskBreakdown, TaskCounts, RUN_WIDE, UNKNOWN};
pub use detail::{ControlRecord, RollbackRecord, RunDetail, TaskRecord, TaskStatus};
pub use summary::{
    outcome_words, result_words, Activity, Resumed, RunState, RunSummary, WindowWait,
};

use super::journal::{self, Record};
use super::replay::TaskState;
use super::snapshot::{Secrets, Snapshot, SnapshotError};
use crate::plan::Plan;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The runs folder of a state directory.
pub fn runs_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("runs")
}

/// Run ids under the state directory, newest first: by the start time in the id, then by
/// when the snapshot was written, then by id.
pub fn list(state_dir: &Path) -> std::io::Result<Vec<String>> {
    let dir = runs_dir(state_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut runs: Vec<(String, Option<SystemTime>, String)> = Vec::new();
    for entry in entries {
        let entry = entry?;
        if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let Some(id) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let written = ["run.json", "vars.json", "journal.jsonl"]
            .iter()
            .find_map(|f| std::fs::metadata(entry.path().join(f)).ok())
            .and_then(|m| m.modified().ok());
        let stamp: String = id.chars().take(15).collect();
        runs.push((stamp, written, id));
    }
    runs.sort_by(|a, b| b.cmp(a));
    Ok(runs.into_iter().map(|(_, _, id)| id).collect())
}

/// Why a run given on the command line does not name one run.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("cannot read the runs under {}: {source}", dir.display())]
    Read {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no run `{run}` under {}", dir.display())]
    NotFound { run: String, dir: PathBuf },
    #[error("`{run}` matches {} runs: {}{}; give more of the id", matches.len(), matches.iter().take(AMBIGUOUS_SHOWN).cloned().collect::<Vec<_>>().join(", "), if matches.len() > AMBIGUOUS_SHOWN { ", …" } else { "" })]
    Ambiguous { run: String, matches: Vec<String> },
}

/// How many of the runs an ambiguous prefix matches its error lists.
const AMBIGUOUS_SHOWN: usize = 10;

/// Resolves a run given on the command line: an exact id or a unique prefix of one.
pub fn resolve(state_dir: &Path, run: &str) -> Result<String, ResolveError> {
    let ids = list(state_dir).map_err(|source| ResolveError::Read {
        dir: runs_dir(state_dir),
        source,
    })?;
    resolve_among(ids, run, runs_dir(state_dir))
}

/// [`resolve`] among `ids`, listed from `place` (a runs folder or a database).
pub fn resolve_among(ids: Vec<String>, run: &str, place: PathBuf) -> Result<String, ResolveError> {
    if ids.iter().any(|id| id == run) {
        return Ok(run.to_string());
    }
    let mut matching: Vec<String> = ids.into_iter().filter(|id| id.starts_with(run)).collect();
    match matching.len() {
        1 => Ok(matching.remove(0)),
        0 => Err(ResolveError::NotFound {
            run: run.to_string(),
            dir: place,
        }),
        _ => {
            // Oldest first reads best next to the id typed.
            matching.sort();
            Err(ResolveError::Ambiguous {
                run: run.to_string(),
                matches: matching,
            })
        }
    }
}

/// Reads a run's journal and folds it into its state.
pub fn read(state_dir: &Path, id: &str) -> RunDetail {
    let path = runs_dir(state_dir).join(id);
    let (records, problem) = read_journal(&path.join("journal.jsonl"));
    detail::fold(id, path, &records, problem)
}

/// Folds records read elsewhere (the state database) into a run's state; `path` is the
/// run's folder on this machine.
pub fn fold_records(
    id: &str,
    path: PathBuf,
    records: &[Record],
    problem: Option<String>,
) -> RunDetail {
    detail::fold(id, path, records, problem)
}

/// Reads a journal; a torn last line is ignored, and a damaged line elsewhere is skipped
/// and reported rather than hiding the whole run.
fn read_journal(path: &Path) -> (Vec<Record>, Option<String>) {
    match journal::read_lenient(path) {
        Ok(read) if read.bad_lines.is_empty() => (read.records, None),
        Ok(read) => {
            let lines: Vec<String> = read.bad_lines.iter().map(|(n, _)| n.to_string()).collect();
            let problem = format!(
                "{}: skipped unreadable line(s) {}",
                path.display(),
                lines.join(", ")
            );
            (read.records, Some(problem))
        }
        Err(e) => (Vec::new(), Some(e.to_string())),
    }
}

/// Rebuilds the plan a run used from its snapshot, secret vars as
/// [`super::snapshot::SECRET_PLACEHOLDER`]: for counting what is pending.
pub fn snapshot_plan(run_path: &Path) -> Result<Plan, SnapshotError> {
    Snapshot::load(run_path)?.plan(Secrets::Placeholder)
}

/// The `(task label, milliseconds)` of every succeeded task in the latest `runs` runs of
/// `playbook` whose journal reads (newest by run id first): what `pony plan --estimate`
/// and `pony simulate` learn step durations from.
pub fn succeeded_durations(state_dir: &Path, playbook: &str, runs: usize) -> Vec<(String, u64)> {
    step_samples(state_dir, playbook, runs).0
}

/// `(task label, milliseconds)` pairs.
pub type Samples = Vec<(String, u64)>;

/// [`succeeded_durations`], and the `(task label, milliseconds)` of the rollback commands
/// that succeeded in the same runs (journals that record their duration).
pub fn step_samples(state_dir: &Path, playbook: &str, runs: usize) -> (Samples, Samples) {
    let mut folders: Vec<PathBuf> = std::fs::read_dir(runs_dir(state_dir))
        .map(|dir| dir.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    folders.sort();
    let mut samples = Vec::new();
    let mut rollbacks = Vec::new();
    let mut used = 0;
    for run in folders.iter().rev() {
        if used == runs {
            break;
        }
        let Ok(records) = journal::read(&run.join("journal.jsonl")) else {
            continue;
        };
        let same = records
            .iter()
            .any(|r| matches!(r, Record::RunStarted { playbook: p, .. } if p == playbook));
        if !same {
            continue;
        }
        for record in records {
            match record {
                Record::TaskFinished {
                    label,
                    state: TaskState::Succeeded,
                    duration_ms,
                    ..
                } => samples.push((label, duration_ms)),
                Record::RollbackFinished {
                    label,
                    ok: true,
                    duration_ms,
                    ..
                } if duration_ms > 0 => rollbacks.push((label, duration_ms)),
                _ => {}
            }
        }
        used += 1;
    }
    (samples, rollbacks)
}

/// `1.3s`, `42s`, `1h 2m 5s`: a run's length ([`crate::duration::full`]).
pub fn format_duration(ms: u64) -> String {
    crate::duration::full(Duration::from_millis(ms))
}

/// `2026-11-21T20:42:46.651Z` → `2026-11-21 20:42:46 UTC`.
pub fn format_time(text: &str) -> String {
    match parse_time(text) {
        Some(t) => {
            let s = humantime::format_rfc3339_seconds(t).to_string();
            format!("{} UTC", s.trim_end_matches('Z').replace('T', " "))
        }
        None => text.to_string(),
    }
}

pub fn parse_time(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(text)
        .or_else(|_| humantime::parse_rfc3339_weak(text))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times_and_durations() {
        assert_eq!(
            format_time("2026-11-21T20:42:46.651Z"),
            "2026-11-21 20:42:46 UTC"
        );
        assert_eq!(
            format_time("2026-11-21T20:42:46Z"),
            "2026-11-21 20:42:46 UTC"
        );
        assert_eq!(format_duration(1300), "1.3s");
        assert_eq!(format_duration(3_725_000), "1h 2m 5s");
    }
}
