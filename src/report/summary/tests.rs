use super::*;
use crate::events::{RegionSummary, TaskRef};

fn finished(step: &str, host: &str, ms: u64) -> Event {
    Event::TaskFinished {
        task: TaskRef {
            id: 0,
            step: step.into(),
            host: host.into(),
            region: "r1".into(),
            cluster: "c1".into(),
            wave: "w".into(),
            label: format!("{step}@{host}"),
        },
        changed: true,
        exit_code: Some(0),
        duration_ms: ms,
        attempts: 1,
        record: Default::default(),
    }
}

#[test]
fn summary_has_regions_slowest_steps_verdict_and_paths() {
    let mut notes = SummaryNotes::default();
    for (step, host, ms) in [("stage", "a", 10), ("stage", "b", 30), ("drain", "a", 9000)] {
        notes.observe(&finished(step, host, ms));
    }
    let region = |name: &str, ok, rb| RegionSummary {
        region: name.into(),
        hosts: 2,
        ok,
        failed: 0,
        rolled_back: rb,
        cancelled: 0,
        duration_ms: 1500,
    };
    let summary = Event::Summary {
        run_id: "RUN".into(),
        outcome: RunOutcome::FailedRolledBack,
        exit_code: 1,
        hosts: 4,
        ok: 3,
        failed: 0,
        rolled_back: 1,
        cancelled: 0,
        rollback_failed: 0,
        incomplete: Vec::new(),
        stopped_wave: None,
        rollbacks_not_attempted: Vec::new(),
        duration_ms: 2500,
        regions: vec![region("eu-west", 2, 0), region("cn-south", 1, 1)],
        run_dir: "/state/runs/RUN".into(),
        interrupts_taken: 0,
    };
    notes.observe(&Event::TaskFailed {
        task: TaskRef {
            id: 1,
            step: "switch".into(),
            host: "c".into(),
            region: "cn-south".into(),
            cluster: "c1".into(),
            wave: "w".into(),
            label: "switch@c".into(),
        },
        exit_code: Some(7),
        error: "exited with 7".into(),
        stderr_tail: String::new(),
        duration_ms: 5,
        attempts: 1,
        record: Default::default(),
    });
    notes.observe(&Event::HostFinished {
        host: "c".into(),
        region: "cn-south".into(),
        cluster: "c1".into(),
        outcome: HostOutcome::RolledBack,
    });
    let text = render(&summary, &notes, &Palette::new(false)).join("\n");
    assert!(text.contains("REGION"), "{text}");
    assert!(text.contains("cn-south"), "{text}");
    assert!(text.contains("total"), "{text}");
    let drain = text.lines().find(|l| l.starts_with("drain")).unwrap();
    assert!(drain.contains("9.0s") && drain.contains(" a "), "{drain}");
    assert!(
        text.contains("run RUN failed; rollback complete in 2.5s: 4 hosts, 3 ok, 1 failed (rolled back), 1 rolled back, 0 not run (exit 1)"),
        "{text}"
    );
    assert!(text.contains("journal: /state/runs/RUN/journal.jsonl"));
}

#[test]
fn a_halted_runs_total_counts_what_its_regions_count_and_says_incomplete() {
    let region = |name: &str, not_done| RegionSummary {
        region: name.into(),
        hosts: 2,
        ok: 2 - not_done,
        failed: 0,
        rolled_back: 0,
        cancelled: not_done,
        duration_ms: 10,
    };
    // a and b were halted in flight, c never started.
    let summary = Event::Summary {
        run_id: "RUN".into(),
        outcome: RunOutcome::NeedsAttention,
        exit_code: 3,
        hosts: 4,
        ok: 1,
        failed: 0,
        rolled_back: 0,
        cancelled: 1,
        rollback_failed: 0,
        incomplete: vec!["a".into(), "b".into()],
        stopped_wave: None,
        rollbacks_not_attempted: Vec::new(),
        duration_ms: 10,
        regions: vec![region("r1", 2), region("r2", 1)],
        run_dir: "/state/runs/RUN".into(),
        interrupts_taken: 0,
    };
    let text = render(&summary, &SummaryNotes::default(), &Palette::new(false)).join("\n");
    let total = text.lines().find(|l| l.starts_with("total")).unwrap();
    let columns: Vec<&str> = total.split_whitespace().collect();
    assert_eq!(columns[..6], ["total", "4", "1", "0", "0", "3"], "{text}");
    assert!(
        text.contains("4 hosts, 1 ok, 0 failed, 0 rolled back, 2 incomplete, 1 not run (exit 3)"),
        "{text}"
    );
}

#[test]
fn summary_counts_verify_checks_and_names_the_failed_one() {
    let mut notes = SummaryNotes::default();
    for ok in [true, true, false] {
        notes.observe(&Event::VerifyCheck(crate::events::VerifyCheck {
            wave: "canary".into(),
            check: "errors".into(),
            host: "mx-1".into(),
            ok,
            detail: if ok {
                "3".into()
            } else {
                "canary median 50 vs baseline median 10".into()
            },
        }));
    }
    let summary = Event::Summary {
        run_id: "RUN".into(),
        outcome: RunOutcome::FailedRolledBack,
        exit_code: 1,
        hosts: 2,
        ok: 1,
        failed: 1,
        rolled_back: 1,
        cancelled: 0,
        rollback_failed: 0,
        incomplete: Vec::new(),
        stopped_wave: Some("canary".into()),
        rollbacks_not_attempted: Vec::new(),
        duration_ms: 2500,
        regions: Vec::new(),
        run_dir: "/state/runs/RUN".into(),
        interrupts_taken: 0,
    };
    let text = render(&summary, &notes, &Palette::new(false)).join("\n");
    assert!(
        text.contains("checks:  2 passed, 1 failed (wave canary check errors failed on mx-1: canary median 50 vs baseline median 10)"),
        "{text}"
    );
    assert!(
        text.contains(
            "stopped: wave canary failed its verify checks; its gate did not pass (a later wave never starts)"
        ),
        "{text}"
    );
}
