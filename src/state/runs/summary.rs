//! One run in a line, as `pony history` lists it: who started it, when, how it ended or
//! whether its controller still runs.

use crate::events::RunOutcome;
use serde::Serialize;
use std::path::PathBuf;

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
    /// Set while the run is paused (`pony pause`) and not continued, aborted or ended.
    pub paused: Option<Paused>,
    /// What a running run is doing, when it is more than working through its tasks:
    /// stopping, paused, soaking, waiting for a change window, for a gate's checks or
    /// for approval; `null` otherwise (and unless `state` is `running`).
    pub activity: Option<Activity>,
    /// The wave whose `approve:` gate a run that ended `awaiting_approval` stopped at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub awaiting_wave: Option<String>,
}

/// What a running run is doing, as its journal tells: `pony status` names it on its
/// `state:` line, and `--output json` gives it as `activity` (`state` says which).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Activity {
    /// No new host starts (`pony abort`, Ctrl-C, a halt, a failed wave, a gate that
    /// stops the run) and hosts in flight finish; with `rollback`, every host the run
    /// touched rolls back (`pony abort --rollback`, `rollback-all`, `pony rollback`).
    Stopping {
        rollback: bool,
        /// `abort`: a person stopped it (`pony abort`, Ctrl-C, SIGTERM); `rollback`:
        /// `pony rollback`; `run`: the run stopped itself (a budget, a failed wave).
        cause: String,
        /// Why, as the run said it.
        reason: String,
        since: String,
    },
    /// `pony pause`: no new host starts until `pony continue`; `gate`: the wave whose
    /// `approve:` gate waits for an answer meanwhile.
    Paused {
        by: String,
        since: String,
        gate: Option<String>,
    },
    /// A wave's soak (its `pause:`), with its `verify:` rounds so far.
    Soaking {
        wave: String,
        /// When the soak ends (RFC 3339, UTC; absent in journals of older runs).
        until: Option<String>,
        checks_ok: usize,
        checks_failed: usize,
    },
    /// A gate without a soak runs its `verify:` checks before its approval question.
    Checks { wave: String },
    /// A wave's `approve:` gate waits for a person (`pony approve RUN WAVE`).
    Approval { wave: String },
    /// A wave's hosts wait for its change window (one entry per time zone).
    Window {
        wave: String,
        windows: Vec<WindowWait>,
    },
}

/// A change window a wave's hosts wait for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowWait {
    /// As the playbook gives it (`02:00-06:00 Asia/Shanghai`).
    pub window: String,
    pub zone: String,
    /// When it opens (RFC 3339, UTC).
    pub opens: String,
}

impl Activity {
    /// In words, for `pony status`'s `state:` line (the `waiting:` line says more).
    pub fn words(&self) -> String {
        let time = super::format_time;
        match self {
            Activity::Stopping { rollback: true, .. } => "stopping: rollback in progress".into(),
            Activity::Stopping { cause, .. } if cause == "abort" => {
                "stopping: abort in progress".into()
            }
            Activity::Stopping { reason, .. } => format!("stopping: {reason}"),
            Activity::Paused { by, since, gate } => {
                let mut words = format!("paused by {by} since {}", time(since));
                if let Some(wave) = gate {
                    words.push_str(&format!(", and waiting for approval of {wave}"));
                }
                words
            }
            Activity::Soaking {
                wave,
                until,
                checks_ok,
                checks_failed,
            } => {
                let mut words = match until {
                    Some(until) => format!("soaking until {} (wave {wave})", time(until)),
                    None => format!("soaking (wave {wave})"),
                };
                if checks_ok + checks_failed > 0 {
                    words.push_str(&format!(
                        ", checks so far {checks_ok} ok, {checks_failed} failed"
                    ));
                }
                words
            }
            Activity::Checks { wave } => {
                format!("checking {wave} before approval (its verify checks)")
            }
            Activity::Approval { wave } => format!("waiting for approval of {wave}"),
            Activity::Window { wave, windows } => {
                let zones: Vec<String> = windows
                    .iter()
                    .map(|w| format!("{}, opens at {}", w.zone, time(&w.opens)))
                    .collect();
                format!(
                    "waiting for the change window ({}) (wave {wave})",
                    zones.join("; ")
                )
            }
        }
    }
}

/// Who paused a run, and when.
#[derive(Debug, Clone, Serialize)]
pub struct Paused {
    /// `user@host (pid N)` of the `pony pause`.
    pub by: String,
    pub time: String,
}

/// A `run_resumed` record: the run was continued or rolled back.
#[derive(Debug, Clone, Serialize)]
pub struct Resumed {
    /// `resume`, `rollback`, or `join` (a controller joining a run split by region).
    pub command: crate::state::journal::RunKind,
    pub time: String,
    pub who: String,
    pub pid: u32,
}

pub(super) fn who(user: &str, host: &str) -> String {
    if user.is_empty() {
        host.to_string()
    } else {
        format!("{user}@{host}")
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

pub fn result_words(summary: &RunSummary) -> String {
    match summary.state {
        RunState::Finished => {
            let mut words = summary
                .outcome
                .map(outcome_words)
                .unwrap_or("finished")
                .to_string();
            if let Some(wave) = &summary.awaiting_wave {
                words.push_str(&format!(" of wave {wave}"));
            }
            match summary.exit_code {
                Some(code) => format!("{words} (exit {code})"),
                None => words.to_string(),
            }
        }
        RunState::Running => match &summary.activity {
            Some(activity) => activity.words(),
            None => "running".into(),
        },
        RunState::Stopped => "stopped (resumable)".into(),
        RunState::Unknown => "unknown (no journal)".into(),
    }
}

/// Whether the controller that wrote `run_started` still runs: same host, and its pid
/// is alive and (where /proc says) a pony process.
pub(super) fn controller_alive(pid: Option<u32>, host: &str) -> bool {
    let Some(pid) = pid else { return false };
    if !host.is_empty() && host != crate::process::hostname() {
        return false;
    }
    if !crate::process::pid_state(pid).exists() {
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
