//! The journal as the first consumer of the run's events: each event that is a fact of
//! the run becomes a journal record (synced before the scheduler is told it is durable),
//! command output goes to the host's log, and then the event goes on to the reporters.

use super::journal::{Journal, Record};
use super::run_dir::RunDir;
use crate::events::{Emitted, Event};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// Consumes the executor's events until it ends.
pub async fn record(
    mut events: UnboundedReceiver<Emitted>,
    journal: Journal,
    run_dir: RunDir,
    reporters: UnboundedSender<Event>,
) {
    // Tasks journaled as started with no end yet: one of them skipped (a chain cut
    // before its turn) is journaled as not run, so that no reader takes it for running.
    let mut open: std::collections::HashSet<usize> = std::collections::HashSet::new();
    while let Some(Emitted { event, durable }) = events.recv().await {
        if let Some((host, text)) = host_log(&event) {
            journal.log(&run_dir.log_path(host), text.to_string());
        }
        let record = match &event {
            Event::TaskStarted { task } => {
                open.insert(task.id);
                Record::of_event(&event, now())
            }
            Event::TaskSkipped {
                task,
                reason,
                record: None,
            } if open.remove(&task.id) => Some(Record::TaskNotRun {
                node: task.id,
                label: task.label.clone(),
                reason: reason.clone(),
                time: now(),
            }),
            Event::TaskFinished { task, .. }
            | Event::TaskFailed { task, .. }
            | Event::TaskSkipped { task, .. }
            | Event::TaskInterrupted { task, .. } => {
                open.remove(&task.id);
                Record::of_event(&event, now())
            }
            _ => Record::of_event(&event, now()),
        };
        match record {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::VerifyCheck;
    use crate::state::journal::Stamped;

    #[test]
    fn a_verify_check_is_journaled() {
        let event = Event::VerifyCheck(VerifyCheck {
            wave: "canary".into(),
            check: "errors".into(),
            host: "mx-1".into(),
            ok: false,
            detail: "canary median 50 vs baseline median 10".into(),
        });
        match Record::of_event(&event, now()) {
            Some(Record::VerifyCheck(Stamped {
                fact:
                    VerifyCheck {
                        wave,
                        check,
                        host,
                        ok,
                        detail,
                    },
                ..
            })) => {
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
