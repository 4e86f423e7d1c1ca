use super::*;
use crate::events::{self, RunOutcome};
use crate::state::journal::Record;
use crate::state::runs::summary::RunState;
use std::path::PathBuf;

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
        record: events::TaskRecord {
            changed: true,
            ..events::TaskRecord::default()
        },
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
    assert_eq!(detail.tasks[0].state, TaskStatus::Succeeded);
}
