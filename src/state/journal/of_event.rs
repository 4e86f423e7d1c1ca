//! The journal's record of an event: the one place that says which events are facts a
//! resume, a rollback or `pony status` needs, and under which record.
//!
//! The facts that are one struct in both (`verify_check`, `wave_skipped`,
//! `health_checked`, `control`, `controller_lost`) are the event's own with a time. The
//! others keep the records journals have always had, so that older runs' journals and
//! older pony binaries keep reading them:
//! - a task's end is one `task_finished` with its `state` (whatever ended it) and the
//!   event's `TaskRecord`, keyed by the graph's node and the task's label, which the
//!   public event leaves out; so are a rollback command's `rollback_*` records;
//! - a gate's and a failed wave's records name the gate's node (`gate_passed`,
//!   `wave_stopped`), which the public event leaves out;
//! - a change window's wait holds the wave's hosts, not its gate: `window_waiting`;
//! - only the whole run's stop is a state (`stopping`): a region's leaves the run going
//!   elsewhere;
//! - the `summary` is the run's end: `run_finished`, its outcome and exit code.

use super::{Record, Stamped, TaskState};
use crate::events::{Event, GateReason, TaskRecord};

impl Record {
    /// The record of `event`, written at `time`; `None` for progress the journal does
    /// not keep (a wave's start, a host's end, budgets, a region's stop, …).
    pub fn of_event(event: &Event, time: String) -> Option<Record> {
        Some(match event {
            Event::VerifyCheck(check) => Record::VerifyCheck(Stamped::new(check, time)),
            Event::WaveSkipped(skip) => Record::WaveSkipped(Stamped::new(skip, time)),
            Event::HealthChecked(health) => Record::HealthChecked(Stamped::new(health, time)),
            Event::Control(control) => Record::Control(Stamped::new(control, time)),
            Event::ControllerLost(lost) => Record::ControllerLost(Stamped::new(lost, time)),
            Event::TaskStarted { task } => Record::TaskStarted {
                node: task.id,
                label: task.label.clone(),
                time,
            },
            Event::TaskFinished { .. }
            | Event::TaskFailed { .. }
            | Event::TaskSkipped { .. }
            | Event::TaskInterrupted { .. } => return task_end(event),
            Event::RollbackTaskStarted { .. }
            | Event::RollbackTask { .. }
            | Event::RollbackNotAttempted { .. } => return rollback(event),
            Event::GatePassed { .. } | Event::WaveFailed { .. } | Event::GateWaiting { .. } => {
                return gate(event, time)
            }
            Event::Stopped {
                reason,
                region: None,
                rollback,
            } => Record::Stopping {
                reason: reason.clone(),
                rollback: *rollback,
                time,
            },
            Event::Summary {
                outcome, exit_code, ..
            } => Record::run_finished(*outcome, *exit_code, time),
            _ => return None,
        })
    }
}

/// A task's end, whatever ended it: one `task_finished` with its state.
fn task_end(event: &Event) -> Option<Record> {
    let (task, state, exit_code, duration_ms, record) = match event {
        Event::TaskFinished {
            task,
            exit_code,
            duration_ms,
            record,
            ..
        }
        | Event::TaskFailed {
            task,
            exit_code,
            duration_ms,
            record,
            ..
        } => {
            let state = match event {
                Event::TaskFailed { .. } => TaskState::Failed,
                _ => TaskState::Succeeded,
            };
            (task, state, *exit_code, *duration_ms, record.clone())
        }
        // Skipped by its guard on its host; one never run (a dependency failed) has no
        // record and is not journaled.
        Event::TaskSkipped {
            task,
            record: Some(record),
            ..
        } => (task, TaskState::Skipped, None, 0, record.clone()),
        // Killed mid-way: it may have changed its host.
        Event::TaskInterrupted { task, kill } => {
            let error = match kill.as_str() {
                "" => "interrupted".to_string(),
                kill => format!("interrupted: {kill}"),
            };
            let record = TaskRecord {
                error: Some(error),
                changed: true,
                ..TaskRecord::default()
            };
            (task, TaskState::Interrupted, None, 0, record)
        }
        _ => return None,
    };
    Some(Record::TaskFinished {
        node: task.id,
        label: task.label.clone(),
        state,
        exit_code,
        duration_ms,
        record,
    })
}

/// A rollback command started, ended, or not attempted.
fn rollback(event: &Event) -> Option<Record> {
    let (node, label) = match event {
        Event::RollbackTaskStarted { task }
        | Event::RollbackTask { task, .. }
        | Event::RollbackNotAttempted { task, .. } => (task.id, task.label.clone()),
        _ => return None,
    };
    Some(match event {
        Event::RollbackTask {
            ok,
            exit_code,
            error,
            duration_ms,
            ..
        } => Record::RollbackFinished {
            node,
            label,
            ok: *ok,
            exit_code: *exit_code,
            error: error.clone(),
            duration_ms: *duration_ms,
        },
        Event::RollbackNotAttempted {
            blocked_by, reason, ..
        } => Record::RollbackNotAttempted {
            node,
            label,
            blocked_by: blocked_by.clone(),
            reason: reason.clone(),
        },
        _ => Record::RollbackStarted { node, label },
    })
}

/// A gate waiting, passed, or its wave failed; a change window's wait.
fn gate(event: &Event, time: String) -> Option<Record> {
    Some(match event {
        Event::GatePassed { wave, node } => Record::GatePassed {
            node: *node,
            wave: wave.clone(),
        },
        Event::WaveFailed { wave, reason, node } => Record::WaveStopped {
            node: *node,
            wave: wave.clone(),
            reason: reason.clone(),
        },
        Event::GateWaiting {
            wave,
            reason: GateReason::Window(window),
            until: Some(opens),
            zone: Some(zone),
            ..
        } => Record::WindowWaiting {
            wave: wave.clone(),
            window: window.clone(),
            zone: zone.clone(),
            opens: opens.clone(),
            time,
        },
        Event::GateWaiting {
            wave,
            reason,
            until,
            ..
        } if !matches!(reason, GateReason::Window(_)) => Record::GateWaiting {
            wave: wave.clone(),
            reason: reason.clone(),
            time,
            until: until.clone(),
        },
        _ => return None,
    })
}
