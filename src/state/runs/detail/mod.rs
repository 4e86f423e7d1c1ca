//! A run's journal folded into its last known state: the summary, each task's and each
//! rollback's latest record, the gates passed and the wave that stopped the rollout.

use super::parse_time;
use super::summary::{
    controller_alive, result_words, who, Activity, Paused, Resumed, RunState, RunSummary,
    WindowWait,
};
use crate::events::GateReason;
use crate::state::journal::{Record, RunKind};
use crate::state::replay::TaskState;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

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

pub(super) fn fold(
    id: &str,
    path: PathBuf,
    records: &[Record],
    problem: Option<String>,
) -> RunDetail {
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
        paused: None,
        activity: None,
        awaiting_wave: None,
    };
    // What the latest controller is doing, beyond working through tasks (see `Activity`).
    let mut stopping: Option<Activity> = None;
    let mut aborted = false;
    let mut windows: Vec<(String, WindowWait)> = Vec::new();
    let mut soak_until: Option<String> = None;
    let mut soak_checks = (0usize, 0usize);
    let mut tasks: Vec<TaskRecord> = Vec::new();
    let mut task_index: BTreeMap<String, usize> = BTreeMap::new();
    let mut rollbacks: Vec<RollbackRecord> = Vec::new();
    let mut rollback_index: BTreeMap<String, usize> = BTreeMap::new();
    let mut gates_passed: Vec<String> = Vec::new();
    let mut stopped_wave: Option<(String, String)> = None;
    let mut controls: Vec<ControlRecord> = Vec::new();
    let mut gate_waiting: Option<(String, GateReason)> = None;
    let mut pre_approved: Vec<String> = Vec::new();
    let mut started_any = false;
    // Where the latest controller runs (its pid is only checkable there).
    let mut controller_host = String::new();
    for record in records {
        // A gate waits no more once it passed or stopped, or its controller went away.
        match record {
            Record::GatePassed { wave, .. } | Record::WaveStopped { wave, .. }
                if gate_waiting.as_ref().is_some_and(|(w, _)| w == wave) =>
            {
                gate_waiting = None
            }
            Record::RunStarted { .. } | Record::RunResumed { .. } | Record::RunFinished { .. } => {
                // An approval the run stopped at (exit 10) is what it awaits.
                if let (Record::RunFinished { .. }, Some((wave, reason))) = (record, &gate_waiting)
                {
                    summary.awaiting_wave = (record.outcome()
                        == Some(crate::events::RunOutcome::AwaitingApproval)
                        && *reason == GateReason::Approve)
                        .then(|| wave.clone());
                } else {
                    summary.awaiting_wave = None;
                }
                gate_waiting = None;
                stopping = None;
                aborted = false;
                windows.clear();
            }
            _ => {}
        }
        match record {
            Record::GateWaiting {
                wave,
                reason,
                until,
                ..
            } => {
                // Journals written before the soak was so named say `pause`: read as a soak
                // (`GateReason`'s text).
                gate_waiting = Some((wave.clone(), reason.clone()));
                soak_until = until.clone();
                soak_checks = (0, 0);
            }
            Record::WindowWaiting {
                wave,
                window,
                zone,
                opens,
                ..
            } => {
                windows.retain(|(w, wait)| !(w == wave && &wait.zone == zone));
                windows.push((
                    wave.clone(),
                    WindowWait {
                        window: window.clone(),
                        zone: zone.clone(),
                        opens: opens.clone(),
                    },
                ));
            }
            Record::Stopping {
                reason,
                rollback,
                time,
            } => {
                let rolling_back =
                    matches!(stopping, Some(Activity::Stopping { rollback: true, .. }));
                let cause = if aborted || reason.starts_with("interrupted") {
                    "abort"
                } else {
                    "run"
                };
                stopping = Some(Activity::Stopping {
                    rollback: *rollback || rolling_back,
                    cause: cause.into(),
                    reason: reason.clone(),
                    since: time.clone(),
                });
            }
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
                going_again(&mut summary, *pid);
                controller_host = host.clone();
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
                    command: *command,
                    time: time.clone(),
                    who: who(user, host),
                    pid: *pid,
                });
                going_again(&mut summary, *pid);
                controller_host = host.clone();
                if *command == RunKind::Rollback {
                    stopping = Some(Activity::Stopping {
                        rollback: true,
                        cause: "rollback".into(),
                        reason: format!("`pony rollback` by {} (pid {pid})", who(user, host)),
                        since: time.clone(),
                    });
                }
            }
            Record::TaskStarted { label, .. } => {
                let task = TaskRecord {
                    label: label.clone(),
                    state: TaskStatus::Running,
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
                    state: TaskStatus::from(*state),
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
                    not_attempted: None,
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
                    not_attempted: None,
                };
                upsert(&mut rollbacks, &mut rollback_index, label, rollback);
            }
            Record::RollbackNotAttempted { label, reason, .. } => {
                let rollback = RollbackRecord {
                    label: label.clone(),
                    ok: None,
                    exit_code: None,
                    error: None,
                    not_attempted: Some(reason.clone()),
                };
                upsert(&mut rollbacks, &mut rollback_index, label, rollback);
            }
            // A host whose health did not come back after its rollback is a failed
            // rollback, listed as `health@HOST`; a later pass (a `pony rollback`) clears it.
            Record::HealthChecked {
                host,
                ok,
                error,
                checked: true,
                after: crate::events::HealthAfter::Rollback,
                ..
            } => {
                let label = format!("health@{host}");
                if !*ok || rollback_index.contains_key(&label) {
                    let rollback = RollbackRecord {
                        label: label.clone(),
                        ok: Some(*ok),
                        exit_code: None,
                        error: error.clone(),
                        not_attempted: None,
                    };
                    upsert(&mut rollbacks, &mut rollback_index, &label, rollback);
                }
            }
            // A host whose health does not pass after its deploy failed there: shown
            // among the failed tasks as `health@HOST`.
            Record::HealthChecked {
                host,
                ok,
                error,
                duration_ms,
                after: crate::events::HealthAfter::Deploy,
                checked: true,
                ..
            } => {
                let label = format!("health@{host}");
                let task = TaskRecord {
                    label: label.clone(),
                    state: if *ok {
                        TaskStatus::Succeeded
                    } else {
                        TaskStatus::Failed
                    },
                    exit_code: None,
                    duration_ms: Some(*duration_ms),
                    error: error.clone(),
                    output_tail: String::new(),
                };
                upsert(&mut tasks, &mut task_index, &label, task);
            }
            Record::HealthChecked { .. } => {}
            // The failing check is named in the wave's `WaveStopped` reason; passing
            // checks are in the journal for `pony log`-style reading.
            Record::VerifyCheck { wave, ok, .. } => {
                if gate_waiting
                    .as_ref()
                    .is_some_and(|(w, reason)| w == wave && *reason == GateReason::Soak)
                {
                    if *ok {
                        soak_checks.0 += 1;
                    } else {
                        soak_checks.1 += 1;
                    }
                }
            }
            // `pony status` shows a split run's controllers from their leases as they
            // are now (a lost controller's regions may have been taken over since).
            Record::ControllerLost { .. } => {}
            Record::Control {
                command,
                user,
                host,
                pid,
                accepted,
                message,
                time,
            } => {
                controls.push(ControlRecord {
                    command: command.clone(),
                    by: format!("{} (pid {pid})", who(user, host)),
                    time: time.clone(),
                    accepted: *accepted,
                    message: message.clone(),
                });
                if !*accepted {
                    continue;
                }
                if let Some(wave) = command.strip_prefix("approve ") {
                    if !pre_approved.iter().any(|w| w == wave) {
                        pre_approved.push(wave.to_string());
                    }
                }
                if command.starts_with("abort") {
                    aborted = true;
                    let rollback = command == "abort --rollback";
                    let by = format!("{} (pid {pid})", who(user, host));
                    match &mut stopping {
                        Some(Activity::Stopping {
                            rollback: r, cause, ..
                        }) => {
                            *r |= rollback;
                            *cause = "abort".into();
                        }
                        _ => {
                            stopping = Some(Activity::Stopping {
                                rollback,
                                cause: "abort".into(),
                                reason: format!("aborted by {by}"),
                                since: time.clone(),
                            })
                        }
                    }
                }
                match command.as_str() {
                    "pause" => {
                        summary.paused.get_or_insert(Paused {
                            by: format!("{} (pid {pid})", who(user, host)),
                            time: time.clone(),
                        });
                    }
                    "continue" | "abort" | "abort --rollback" => summary.paused = None,
                    _ => {}
                }
            }
            Record::RunFinished {
                exit_code, time, ..
            } => {
                summary.paused = None;
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
    if summary.state == RunState::Running {
        summary.activity = activity(
            stopping,
            summary.paused.as_ref(),
            gate_waiting.as_ref(),
            soak_until,
            soak_checks,
            windows,
        );
    }
    summary.result = result_words(&summary);
    pre_approved.retain(|wave| !gates_passed.contains(wave));
    RunDetail {
        summary,
        tasks,
        pre_approved,
        gates_passed,
        stopped_wave,
        rollbacks,
        controls,
        gate_waiting,
    }
}

/// What a running run is doing, the most pressing first: stopping, paused, at a gate,
/// waiting for a change window that has not opened yet.
fn activity(
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

fn upsert<T>(items: &mut Vec<T>, index: &mut BTreeMap<String, usize>, label: &str, item: T) {
    match index.get(label) {
        Some(&i) => items[i] = item,
        None => {
            index.insert(label.to_string(), items.len());
            items.push(item);
        }
    }
}

/// A run started again (a resume, or an older pony's second start) by process `pid`:
/// it is no longer paused or finished, and its outcome is to come.
fn going_again(summary: &mut RunSummary, pid: u32) {
    summary.pid = Some(pid);
    summary.paused = None;
    summary.finished = None;
    summary.outcome = None;
    summary.exit_code = None;
}

#[cfg(test)]
mod tests;
