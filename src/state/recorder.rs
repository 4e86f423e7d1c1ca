//! The journal as the first consumer of the run's events: each event that is a fact of
//! the run becomes a journal record (synced before the scheduler is told it is durable),
//! command output goes to the host's log, and then the event goes on to the reporters.

use super::journal::{Journal, Record};
use super::replay::TaskState;
use super::run_dir::RunDir;
use crate::events::{Emitted, Event, GateReason, TaskRecord};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// Consumes the executor's events until it ends.
pub async fn record(
    mut events: UnboundedReceiver<Emitted>,
    journal: Journal,
    run_dir: RunDir,
    reporters: UnboundedSender<Event>,
) {
    while let Some(Emitted { event, durable }) = events.recv().await {
        if let Some((host, text)) = host_log(&event) {
            journal.log(&run_dir.log_path(host), text.to_string());
        }
        match record_of(&event) {
            Some(record) => journal.append_then(&record, durable),
            None => {
                if let Some(ack) = durable {
                    let _ = ack.send(());
                }
            }
        }
        let _ = reporters.send(event);
    }
}

fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// The host log text an event carries.
fn host_log(event: &Event) -> Option<(&str, &str)> {
    let (task, log) = match event {
        Event::TaskFinished { task, record, .. } | Event::TaskFailed { task, record, .. } => {
            (task, &record.log)
        }
        Event::TaskSkipped {
            task,
            record: Some(record),
            ..
        } => (task, &record.log),
        Event::RollbackTask { task, log, .. } | Event::RollbackNotAttempted { task, log, .. } => {
            (task, log)
        }
        _ => return None,
    };
    Some((&task.host, log))
}

fn finished(
    node: usize,
    label: &str,
    state: TaskState,
    exit_code: Option<i32>,
    duration_ms: u64,
    record: &TaskRecord,
) -> Record {
    Record::TaskFinished {
        node,
        label: label.to_string(),
        state,
        exit_code,
        duration_ms,
        captures: record.captures.clone(),
        output_tail: record.output_tail.clone(),
        error: record.error.clone(),
        changed: record.changed,
    }
}

/// The journal record of an event, if it is a fact a resume or rollback needs.
pub fn record_of(event: &Event) -> Option<Record> {
    Some(match event {
        Event::TaskStarted { task } => Record::TaskStarted {
            node: task.id,
            label: task.label.clone(),
            time: now(),
        },
        Event::TaskFinished {
            task,
            exit_code,
            duration_ms,
            record,
            ..
        } => finished(
            task.id,
            &task.label,
            TaskState::Succeeded,
            *exit_code,
            *duration_ms,
            record,
        ),
        Event::TaskSkipped {
            task,
            record: Some(record),
            ..
        } => finished(task.id, &task.label, TaskState::Skipped, None, 0, record),
        Event::TaskFailed {
            task,
            exit_code,
            duration_ms,
            record,
            ..
        } => finished(
            task.id,
            &task.label,
            TaskState::Failed,
            *exit_code,
            *duration_ms,
            record,
        ),
        Event::TaskInterrupted { task, kill } => Record::TaskFinished {
            node: task.id,
            label: task.label.clone(),
            state: TaskState::Interrupted,
            exit_code: None,
            duration_ms: 0,
            captures: Vec::new(),
            output_tail: String::new(),
            error: Some(if kill.is_empty() {
                "interrupted".into()
            } else {
                format!("interrupted: {kill}")
            }),
            changed: true,
        },
        Event::GatePassed { wave, node } => Record::GatePassed {
            node: *node,
            wave: wave.clone(),
        },
        // A window's wait holds the wave's hosts, not its gate: a record of its own.
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
            time: now(),
        },
        Event::GateWaiting {
            wave,
            reason,
            until,
            ..
        } if !matches!(reason, GateReason::Window(_)) => Record::GateWaiting {
            wave: wave.clone(),
            reason: reason.clone(),
            time: now(),
            until: until.clone(),
        },
        // A region's stop leaves the run going elsewhere; only the run's own is a state.
        Event::Stopped {
            reason,
            region: None,
            rollback,
        } => Record::Stopping {
            reason: reason.clone(),
            rollback: *rollback,
            time: now(),
        },
        Event::WaveFailed { wave, reason, node } => Record::WaveStopped {
            node: *node,
            wave: wave.clone(),
            reason: reason.clone(),
        },
        Event::VerifyCheck {
            wave,
            check,
            host,
            ok,
            detail,
        } => Record::VerifyCheck {
            wave: wave.clone(),
            check: check.clone(),
            host: host.clone(),
            ok: *ok,
            detail: detail.clone(),
            time: now(),
        },
        Event::WaveSkipped { wave, user } => Record::WaveSkipped {
            wave: wave.clone(),
            user: user.clone(),
            time: now(),
        },
        Event::RollbackTaskStarted { task } => Record::RollbackStarted {
            node: task.id,
            label: task.label.clone(),
        },
        Event::RollbackTask {
            task,
            ok,
            exit_code,
            error,
            duration_ms,
            ..
        } => Record::RollbackFinished {
            node: task.id,
            label: task.label.clone(),
            ok: *ok,
            exit_code: *exit_code,
            error: error.clone(),
            duration_ms: *duration_ms,
        },
        Event::RollbackNotAttempted {
            task,
            blocked_by,
            reason,
            ..
        } => Record::RollbackNotAttempted {
            node: task.id,
            label: task.label.clone(),
            blocked_by: blocked_by.clone(),
            reason: reason.clone(),
        },
        Event::HealthChecked {
            host,
            after,
            checked,
            ok,
            error,
            duration_ms,
            ..
        } => Record::HealthChecked {
            host: host.clone(),
            after: *after,
            checked: *checked,
            ok: *ok,
            error: error.clone(),
            duration_ms: *duration_ms,
            time: now(),
        },
        Event::Control {
            command,
            user,
            host,
            pid,
            accepted,
            message,
        } => Record::Control {
            command: command.clone(),
            user: user.clone(),
            host: host.clone(),
            pid: *pid,
            accepted: *accepted,
            message: message.clone(),
            time: now(),
        },
        Event::ControllerLost {
            lost_controller,
            machine,
            pid,
            regions,
            policy,
            ..
        } => Record::ControllerLost {
            lost_controller: lost_controller.clone(),
            machine: machine.clone(),
            pid: *pid,
            regions: regions.clone(),
            policy: policy.clone(),
            time: now(),
        },
        Event::Summary {
            outcome, exit_code, ..
        } => Record::run_finished(*outcome, *exit_code, now()),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verify_check_is_journaled() {
        let event = Event::VerifyCheck {
            wave: "canary".into(),
            check: "errors".into(),
            host: "mx-1".into(),
            ok: false,
            detail: "canary median 50 vs baseline median 10".into(),
        };
        match record_of(&event) {
            Some(Record::VerifyCheck {
                wave,
                check,
                host,
                ok,
                detail,
                ..
            }) => {
                assert_eq!(
                    (wave.as_str(), check.as_str(), host.as_str(), ok),
                    ("canary", "errors", "mx-1", false)
                );
                assert!(detail.contains("median 50"));
            }
            other => panic!("{other:?}"),
        }
    }
}
