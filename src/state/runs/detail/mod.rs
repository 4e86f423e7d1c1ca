//! A run's journal folded into its last known state: the summary, each task's and each
//! rollback's latest record, the gates passed and the wave that stopped the rollout.

mod folding;

use super::parse_time;
use super::summary::{Activity, Paused, RunSummary, WindowWait};
use crate::events::GateReason;
use crate::state::replay::TaskState;
pub(super) use folding::fold;
use serde::Serialize;

/// How a host's health check after its deploy is listed among the tasks (`health@HOST`;
/// after its rollback, among the rollbacks).
pub const HEALTH_PREFIX: &str = "health@";

/// The last known state of one task (by label, e.g. `switch@mx-gz-01`).
#[derive(Debug, Clone, Serialize)]
pub struct TaskRecord {
    pub label: String,
    /// `running` while started but not finished, else the journaled state.
    pub state: TaskStatus,
    pub exit_code: Option<i32>,
    pub duration_ms: Option<u64>,
    pub error: Option<String>,
    pub output_tail: String,
}

/// Where a task is, as its journal says: `running` while started and not finished, else
/// how it finished ([`TaskState`]); serialized snake_case (`pony status --json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Running,
    Succeeded,
    Skipped,
    Failed,
    Interrupted,
}

impl From<TaskState> for TaskStatus {
    fn from(state: TaskState) -> TaskStatus {
        match state {
            TaskState::Succeeded => TaskStatus::Succeeded,
            TaskState::Skipped => TaskStatus::Skipped,
            TaskState::Failed => TaskStatus::Failed,
            TaskState::Interrupted => TaskStatus::Interrupted,
        }
    }
}

/// The last known state of one task's rollback.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackRecord {
    pub label: String,
    /// `None` while started but not finished, or when not attempted.
    pub ok: Option<bool>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    /// Why it was not attempted (an earlier rollback of its host failed); absent when it
    /// ran or runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_attempted: Option<String>,
}

/// A command from another shell (`pony pause|continue|abort|approve`), as journaled.
#[derive(Debug, Clone, Serialize)]
pub struct ControlRecord {
    pub command: String,
    /// `user@host (pid N)` of the sender.
    pub by: String,
    pub time: String,
    pub accepted: bool,
    pub message: String,
}

/// A run with everything its journal says.
#[derive(Debug, Clone)]
pub struct RunDetail {
    pub summary: RunSummary,
    /// Tasks in the order they first appear in the journal.
    pub tasks: Vec<TaskRecord>,
    pub gates_passed: Vec<String>,
    /// Waves approved ahead of their gate from another shell (`pony approve RUN WAVE`
    /// before the wave was done) whose gate has not passed yet: a resume honours them.
    pub pre_approved: Vec<String>,
    /// The wave whose failure stopped the rollout and why (cleared once it passes).
    pub stopped_wave: Option<(String, String)>,
    pub rollbacks: Vec<RollbackRecord>,
    /// Commands from other shells, oldest first.
    pub controls: Vec<ControlRecord>,
    /// The gate the run waits at, and why (an approval, a soak or its checks), until it
    /// passes, stops or the run ends.
    pub gate_waiting: Option<(String, GateReason)>,
}

impl RunDetail {
    /// The tasks whose rollback ran and succeeded.
    pub fn rolled_back(&self) -> std::collections::HashSet<&str> {
        self.rollbacks
            .iter()
            .filter(|r| r.ok == Some(true))
            .map(|r| r.label.as_str())
            .collect()
    }
}

/// What a running run is doing, the most pressing first: stopping, paused, at a gate,
/// waiting for a change window that has not opened yet.
pub(super) fn activity(
    stopping: Option<Activity>,
    paused: Option<&Paused>,
    gate: Option<&(String, GateReason)>,
    soak_until: Option<String>,
    (checks_ok, checks_failed): (usize, usize),
    windows: Vec<(String, WindowWait)>,
) -> Option<Activity> {
    if stopping.is_some() {
        return stopping;
    }
    if let Some(paused) = paused {
        return Some(Activity::Paused {
            by: paused.by.clone(),
            since: paused.time.clone(),
            gate: gate
                .filter(|(_, reason)| *reason == GateReason::Approve)
                .map(|(wave, _)| wave.clone()),
        });
    }
    if let Some((wave, reason)) = gate {
        let wave = wave.clone();
        match reason {
            GateReason::Approve => return Some(Activity::Approval { wave }),
            GateReason::Verify => return Some(Activity::Checks { wave }),
            GateReason::Soak => {
                return Some(Activity::Soaking {
                    wave,
                    until: soak_until,
                    checks_ok,
                    checks_failed,
                })
            }
            GateReason::Window(_) => {}
        }
    }
    // A window that opened lets its hosts start: only one still closed holds them.
    let now = std::time::SystemTime::now();
    let closed: Vec<(String, WindowWait)> = windows
        .into_iter()
        .filter(|(_, w)| parse_time(&w.opens).is_some_and(|opens| opens > now))
        .collect();
    let wave = closed.first()?.0.clone();
    Some(Activity::Window {
        windows: closed
            .into_iter()
            .filter(|(w, _)| *w == wave)
            .map(|(_, wait)| wait)
            .collect(),
        wave,
    })
}

#[cfg(test)]
mod tests;
