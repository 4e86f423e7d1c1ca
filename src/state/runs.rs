//! Reading past and current runs back: the run folders under `<state dir>/runs/`, their
//! journals folded into a summary (`pony history`) or a detailed state (`pony status`),
//! and the plan rebuilt from a run's snapshot to know how many tasks are still pending.

use super::journal::{self, Record, TaskState};
use super::snapshot::{Secrets, Snapshot, SnapshotError};
use crate::events::RunOutcome;
use crate::plan::Plan;
use crate::playbook::Per;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// The journal ends with `run_finished` (see `outcome`).
    Finished,
    /// No `run_finished` yet and the controller's pid is alive on this host.
    Running,
    /// No `run_finished` and no live controller: crashed or killed; `pony resume` goes on.
    Stopped,
    /// The journal is missing, empty or unreadable.
    Unknown,
}

/// One run as `pony history` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub run_id: String,
    pub playbook: Option<String>,
    pub inventory: Option<String>,
    /// `user@host` of the controller that started the run.
    pub who: Option<String>,
    pub user: Option<String>,
    pub host: Option<String>,
    /// The pid of the controller that last started or resumed the run.
    pub pid: Option<u32>,
    /// RFC 3339, from the first `run_started`.
    pub started: Option<String>,
    /// RFC 3339, from the last `run_finished` (none while running or stopped).
    pub finished: Option<String>,
    /// `finished − started` in milliseconds.
    pub duration_ms: Option<u64>,
    pub state: RunState,
    /// As journaled, spelt as in the `summary` event (`failed_rolled_back`); none unless
    /// `state` is finished.
    pub outcome: Option<RunOutcome>,
    /// The process exit code the run ended with (none unless finished).
    pub exit_code: Option<i32>,
    /// The outcome or state in words: `succeeded`, `failed, rolled back`, `running`, …
    pub result: String,
    /// The run folder.
    pub path: PathBuf,
    /// Each `pony resume` / `pony rollback` of the run, oldest first.
    pub resumes: Vec<Resumed>,
    /// Why the journal could not be read, or which of its lines were skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal_problem: Option<String>,
}

/// A `run_resumed` record: the run was continued or rolled back.
#[derive(Debug, Clone, Serialize)]
pub struct Resumed {
    /// `resume` or `rollback`.
    pub command: String,
    pub time: String,
    pub who: String,
    pub pid: u32,
}

fn who(user: &str, host: &str) -> String {
    if user.is_empty() {
        host.to_string()
    } else {
        format!("{user}@{host}")
    }
}

/// The last known state of one task (by label, e.g. `switch@mx-gz-01`).
#[derive(Debug, Clone, Serialize)]
pub struct TaskRecord {
    pub label: String,
    /// `running` while started but not finished, else the journaled state.
    pub state: String,
    pub exit_code: Option<i32>,
    pub duration_ms: Option<u64>,
    pub error: Option<String>,
    pub output_tail: String,
}

/// The last known state of one task's rollback.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackRecord {
    pub label: String,
    /// `None` while started but not finished.
    pub ok: Option<bool>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
}

/// A run with everything its journal says.
#[derive(Debug, Clone)]
pub struct RunDetail {
    pub summary: RunSummary,
    /// Tasks in the order they first appear in the journal.
    pub tasks: Vec<TaskRecord>,
    pub gates_passed: Vec<String>,
    /// The wave whose failure stopped the rollout and why (cleared once it passes).
    pub stopped_wave: Option<(String, String)>,
    pub rollbacks: Vec<RollbackRecord>,
}

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
    if ids.iter().any(|id| id == run) {
        return Ok(run.to_string());
    }
    let mut matching: Vec<String> = ids.into_iter().filter(|id| id.starts_with(run)).collect();
    match matching.len() {
        1 => Ok(matching.remove(0)),
        0 => Err(ResolveError::NotFound {
            run: run.to_string(),
            dir: runs_dir(state_dir),
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
    fold(id, path, &records, problem)
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

fn fold(id: &str, path: PathBuf, records: &[Record], problem: Option<String>) -> RunDetail {
    let mut summary = RunSummary {
        run_id: id.to_string(),
        playbook: None,
        inventory: None,
        who: None,
        user: None,
        host: None,
        pid: None,
        started: None,
        finished: None,
        duration_ms: None,
        state: RunState::Unknown,
        outcome: None,
        exit_code: None,
        result: String::new(),
        path,
        resumes: Vec::new(),
        journal_problem: problem,
    };
    let mut tasks: Vec<TaskRecord> = Vec::new();
    let mut task_index: BTreeMap<String, usize> = BTreeMap::new();
    let mut rollbacks: Vec<RollbackRecord> = Vec::new();
    let mut rollback_index: BTreeMap<String, usize> = BTreeMap::new();
    let mut gates_passed: Vec<String> = Vec::new();
    let mut stopped_wave: Option<(String, String)> = None;
    let mut started_any = false;
    // Where the latest controller runs (its pid is only checkable there).
    let mut controller_host = String::new();
    for record in records {
        match record {
            Record::RunStarted {
                playbook,
                inventory,
                time,
                pid,
                user,
                host,
                ..
            } => {
                if !started_any {
                    started_any = true;
                    summary.playbook = Some(playbook.clone());
                    summary.inventory = Some(inventory.clone());
                    summary.started = Some(time.clone());
                    summary.user = Some(user.clone());
                    summary.host = Some(host.clone());
                    summary.who = Some(who(user, host));
                }
                // A second start (older resumes): the run is going again.
                summary.pid = Some(*pid);
                controller_host = host.clone();
                summary.finished = None;
                summary.outcome = None;
                summary.exit_code = None;
            }
            // A resume or rollback: the run is going again.
            Record::RunResumed {
                command,
                time,
                pid,
                user,
                host,
            } => {
                summary.resumes.push(Resumed {
                    command: command.clone(),
                    time: time.clone(),
                    who: who(user, host),
                    pid: *pid,
                });
                summary.pid = Some(*pid);
                controller_host = host.clone();
                summary.finished = None;
                summary.outcome = None;
                summary.exit_code = None;
            }
            Record::TaskStarted { label, .. } => {
                let task = TaskRecord {
                    label: label.clone(),
                    state: "running".into(),
                    exit_code: None,
                    duration_ms: None,
                    error: None,
                    output_tail: String::new(),
                };
                upsert(&mut tasks, &mut task_index, label, task);
            }
            Record::TaskFinished {
                label,
                state,
                exit_code,
                duration_ms,
                output_tail,
                error,
                ..
            } => {
                let task = TaskRecord {
                    label: label.clone(),
                    state: task_state_name(*state).into(),
                    exit_code: *exit_code,
                    duration_ms: Some(*duration_ms),
                    error: error.clone(),
                    output_tail: output_tail.clone(),
                };
                upsert(&mut tasks, &mut task_index, label, task);
            }
            Record::GatePassed { wave, .. } => {
                if !gates_passed.contains(wave) {
                    gates_passed.push(wave.clone());
                }
                if stopped_wave.as_ref().is_some_and(|(w, _)| w == wave) {
                    stopped_wave = None;
                }
            }
            Record::WaveStopped { wave, reason, .. } => {
                stopped_wave = Some((wave.clone(), reason.clone()));
            }
            Record::WaveSkipped { wave, user, .. } => {
                stopped_wave = None;
                let skipped = format!("{wave} (failed; skipped by {user})");
                if !gates_passed.contains(&skipped) {
                    gates_passed.push(skipped);
                }
            }
            Record::RollbackStarted { label, .. } => {
                let rollback = RollbackRecord {
                    label: label.clone(),
                    ok: None,
                    exit_code: None,
                    error: None,
                };
                upsert(&mut rollbacks, &mut rollback_index, label, rollback);
            }
            Record::RollbackFinished {
                label,
                ok,
                exit_code,
                error,
                ..
            } => {
                let rollback = RollbackRecord {
                    label: label.clone(),
                    ok: Some(*ok),
                    exit_code: *exit_code,
                    error: error.clone(),
                };
                upsert(&mut rollbacks, &mut rollback_index, label, rollback);
            }
            Record::RunFinished {
                exit_code, time, ..
            } => {
                summary.outcome = record.outcome();
                summary.exit_code = Some(*exit_code);
                summary.finished = Some(time.clone());
            }
        }
    }
    summary.state = if summary.outcome.is_some() {
        RunState::Finished
    } else if !started_any {
        RunState::Unknown
    } else if controller_alive(summary.pid, &controller_host) {
        RunState::Running
    } else {
        RunState::Stopped
    };
    summary.duration_ms = match (&summary.started, &summary.finished) {
        (Some(start), Some(end)) => match (parse_time(start), parse_time(end)) {
            (Some(s), Some(e)) => Some(e.duration_since(s).unwrap_or_default().as_millis() as u64),
            _ => None,
        },
        _ => None,
    };
    summary.result = result_words(&summary);
    RunDetail {
        summary,
        tasks,
        gates_passed,
        stopped_wave,
        rollbacks,
    }
}

fn upsert<T>(items: &mut Vec<T>, index: &mut BTreeMap<String, usize>, label: &str, item: T) {
    match index.get(label) {
        Some(&i) => items[i] = item,
        None => {
            index.insert(label.to_string(), items.len());
            items.push(item);
        }
    }
}

pub fn task_state_name(state: TaskState) -> &'static str {
    match state {
        TaskState::Succeeded => "succeeded",
        TaskState::Skipped => "skipped",
        TaskState::Failed => "failed",
        TaskState::Interrupted => "interrupted",
    }
}

/// The outcome in words, for tables and headers.
pub fn outcome_words(outcome: RunOutcome) -> &'static str {
    match outcome {
        RunOutcome::Succeeded => "succeeded",
        RunOutcome::FailedRolledBack => "failed, rolled back",
        RunOutcome::NeedsAttention => "FAILED, needs attention",
        RunOutcome::AwaitingApproval => "awaiting approval",
        RunOutcome::Interrupted => "interrupted",
        RunOutcome::RolledBack => "rolled back",
    }
}

fn result_words(summary: &RunSummary) -> String {
    match summary.state {
        RunState::Finished => {
            let words = summary.outcome.map(outcome_words).unwrap_or("finished");
            match summary.exit_code {
                Some(code) => format!("{words} (exit {code})"),
                None => words.to_string(),
            }
        }
        RunState::Running => "running".into(),
        RunState::Stopped => "stopped (resumable)".into(),
        RunState::Unknown => "unknown (no journal)".into(),
    }
}

pub fn parse_time(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(text)
        .or_else(|_| humantime::parse_rfc3339_weak(text))
        .ok()
}

/// Whether the controller that wrote `run_started` still runs: same host, and its pid
/// is alive and (where /proc says) a pony process.
fn controller_alive(pid: Option<u32>, host: &str) -> bool {
    let Some(pid) = pid else { return false };
    if !host.is_empty() && host != super::hostname() {
        return false;
    }
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    let exists = unsafe { libc::kill(raw, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !exists {
        return false;
    }
    // Guard against the pid being reused by something else after a crash.
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => {
            let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
            String::from_utf8_lossy(argv0).contains("pony")
        }
        Err(_) => true,
    }
}

/// Rebuilds the plan a run used from its snapshot, secret vars as
/// [`super::snapshot::SECRET_PLACEHOLDER`]: for counting what is pending.
pub fn snapshot_plan(run_path: &Path) -> Result<Plan, SnapshotError> {
    Snapshot::load(run_path)?.plan(Secrets::Placeholder)
}

/// Task counts of one group (a wave, a region, or the whole run).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// Tasks in the plan; `None` when the plan could not be rebuilt.
    pub total: Option<usize>,
    pub succeeded: usize,
    pub skipped: usize,
    pub failed: usize,
    pub interrupted: usize,
    /// Started and not finished (when the run is stopped: were running when it stopped).
    pub running: usize,
    /// Not started yet; `None` when the plan could not be rebuilt.
    pub pending: Option<usize>,
    /// Of the tasks above, those whose rollback ran and succeeded.
    pub rolled_back: usize,
}

impl Counts {
    fn add(&mut self, state: &str, rolled_back: bool) {
        self.rolled_back += usize::from(rolled_back);
        match state {
            "succeeded" => self.succeeded += 1,
            "skipped" => self.skipped += 1,
            "failed" => self.failed += 1,
            "interrupted" => self.interrupted += 1,
            _ => self.running += 1,
        }
    }

    fn seen(&self) -> usize {
        self.succeeded + self.skipped + self.failed + self.interrupted + self.running
    }

    fn close(&mut self) {
        self.pending = self.total.map(|t| t.saturating_sub(self.seen()));
    }
}

/// Counts of one wave or region.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub name: String,
    #[serde(flatten)]
    pub counts: Counts,
}

/// Per-wave and per-region task counts of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Tally {
    /// Whether the totals come from the plan rebuilt from the snapshot.
    pub plan_rebuilt: bool,
    /// Why the plan could not be rebuilt (then counts come from the journal alone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan_error: Option<String>,
    pub total: Counts,
    /// Empty when the plan could not be rebuilt (the journal does not name waves).
    pub waves: Vec<Group>,
    pub regions: Vec<Group>,
}

/// The region row name of `per: run` tasks.
pub const RUN_WIDE: &str = "(run)";
/// The row name of journal labels the plan (or inventory) does not know.
pub const UNKNOWN: &str = "(unknown)";

/// Counts tasks per wave and region. With a plan, every task of the plan is counted (so
/// pending is known); without, only what the journal shows, regions found through the
/// snapshot inventory when it loads.
pub fn tally(detail: &RunDetail, plan: Result<&Plan, &str>) -> Tally {
    let state_of: BTreeMap<&str, &str> = detail
        .tasks
        .iter()
        .map(|t| (t.label.as_str(), t.state.as_str()))
        .collect();
    let rolled_back: std::collections::HashSet<&str> = detail
        .rollbacks
        .iter()
        .filter(|r| r.ok == Some(true))
        .map(|r| r.label.as_str())
        .collect();
    let mut total = Counts::default();
    match plan {
        Ok(plan) => {
            let regions = &plan.inventory.regions;
            let mut waves: Vec<Group> =
                plan.waves.iter().map(|w| group(&w.name, Some(0))).collect();
            let mut by_region: Vec<Group> = regions
                .iter()
                .map(|r| group(&r.name, Some(0)))
                .chain([group(RUN_WIDE, Some(0))])
                .collect();
            let mut known = 0usize;
            total.total = Some(0);
            for (node, task) in plan.tasks() {
                let region = match task.per {
                    Per::Run => regions.len(),
                    _ => plan.inventory.hosts[task.host].region,
                };
                let label = plan.label(node);
                let state = state_of.get(label.as_str()).copied();
                for counts in [
                    &mut total,
                    &mut waves[task.wave].counts,
                    &mut by_region[region].counts,
                ] {
                    *counts.total.as_mut().expect("set above") += 1;
                    if let Some(state) = state {
                        counts.add(state, rolled_back.contains(label.as_str()));
                    }
                }
                known += usize::from(state.is_some());
            }
            if known < state_of.len() {
                // Labels the rebuilt plan does not have (the snapshot changed?).
                let mut other = group(UNKNOWN, None);
                let labels: std::collections::HashSet<String> =
                    plan.tasks().map(|(n, _)| plan.label(n)).collect();
                for t in detail.tasks.iter().filter(|t| !labels.contains(&t.label)) {
                    let undone = rolled_back.contains(t.label.as_str());
                    other.counts.add(&t.state, undone);
                    total.add(&t.state, undone);
                }
                by_region.push(other);
            }
            for g in waves.iter_mut().chain(by_region.iter_mut()) {
                g.counts.close();
            }
            total.close();
            Tally {
                plan_rebuilt: true,
                plan_error: None,
                total,
                waves,
                regions: by_region
                    .into_iter()
                    .filter(|g| g.counts.total != Some(0) || g.counts.seen() > 0)
                    .collect(),
            }
        }
        Err(error) => {
            let inventory =
                crate::inventory::load(&detail.summary.path.join(super::snapshot::INVENTORY_FILE))
                    .ok();
            let mut order: Vec<String> = Vec::new();
            let mut by_region: BTreeMap<String, Counts> = BTreeMap::new();
            for t in &detail.tasks {
                let target = t.label.rsplit_once('@').map(|(_, t)| t).unwrap_or("");
                let region = if target == "run" {
                    RUN_WIDE.to_string()
                } else {
                    match &inventory {
                        Some(inv) => match inv.host_id(target) {
                            Some(h) => inv.region_of(h).name.clone(),
                            None if inv.regions.iter().any(|r| r.name == target) => {
                                target.to_string()
                            }
                            None => UNKNOWN.to_string(),
                        },
                        None => UNKNOWN.to_string(),
                    }
                };
                if !by_region.contains_key(&region) {
                    order.push(region.clone());
                }
                let undone = rolled_back.contains(t.label.as_str());
                by_region.entry(region).or_default().add(&t.state, undone);
                total.add(&t.state, undone);
            }
            let regions = match &inventory {
                Some(inv) => inv
                    .regions
                    .iter()
                    .map(|r| r.name.clone())
                    .chain([RUN_WIDE.to_string(), UNKNOWN.to_string()])
                    .filter(|r| by_region.contains_key(r))
                    .collect(),
                None => order,
            };
            Tally {
                plan_rebuilt: false,
                plan_error: Some(error.to_string()),
                total,
                waves: Vec::new(),
                regions: regions
                    .into_iter()
                    .map(|r| Group {
                        counts: by_region.remove(&r).unwrap_or_default(),
                        name: r,
                    })
                    .collect(),
            }
        }
    }
}

fn group(name: &str, total: Option<usize>) -> Group {
    Group {
        name: name.to_string(),
        counts: Counts {
            total,
            ..Counts::default()
        },
    }
}

/// `1.3s`, `42s`, `1h 2m 5s`.
pub fn format_duration(ms: u64) -> String {
    if ms < 10_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        humantime::format_duration(Duration::from_secs(ms / 1000)).to_string()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_a_resumed_journal() {
        let started = |pid, time: &str| Record::RunStarted {
            run_id: "r".into(),
            playbook: "p".into(),
            inventory: "i".into(),
            time: time.into(),
            pid,
            user: "ann".into(),
            host: "ctl".into(),
        };
        let finished = |label: &str, state| Record::TaskFinished {
            node: 0,
            label: label.into(),
            state,
            exit_code: Some(0),
            duration_ms: 5,
            captures: Vec::new(),
            output_tail: String::new(),
            error: None,
            changed: true,
        };
        let records = vec![
            started(1, "2026-01-01T00:00:00Z"),
            finished("a@h1", TaskState::Failed),
            Record::run_finished(RunOutcome::Interrupted, 130, "2026-01-01T00:00:05Z".into()),
            started(2, "2026-01-01T01:00:00Z"),
            finished("a@h1", TaskState::Succeeded),
            Record::run_finished(RunOutcome::Succeeded, 0, "2026-01-01T01:00:01.500Z".into()),
        ];
        let detail = fold("r", PathBuf::from("/nowhere"), &records, None);
        assert_eq!(detail.summary.state, RunState::Finished);
        assert_eq!(detail.summary.who.as_deref(), Some("ann@ctl"));
        assert_eq!(
            detail.summary.started.as_deref(),
            Some("2026-01-01T00:00:00Z")
        );
        assert_eq!(detail.summary.duration_ms, Some(3_601_500));
        assert_eq!(detail.summary.result, "succeeded (exit 0)");
        assert_eq!(detail.summary.outcome, Some(RunOutcome::Succeeded));
        assert_eq!(detail.tasks.len(), 1);
        assert_eq!(detail.tasks[0].state, "succeeded");
    }

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
