//! Interrupts: the first lets hosts in flight finish, the second kills running tasks.

use super::*;

/// One host of c1 at a time; `hold` waits for a `go` file beside the hosts' folders.
const HELD: &str = "  - name: hold\n    run: 'echo hold >> log; while [ ! -f ../go ]; do sleep 0.02; done'\n  - name: after\n    needs: [hold]\n    run: echo after >> log\n";

fn held_playbook() -> String {
    format!(
        "name: p\nstrategy:\n  waves: [{{ name: all, regions: [r1] }}, {{ name: rest, regions: [\"*\"] }}]\n  max_unavailable: 1\nsteps:\n{HELD}"
    )
}

#[tokio::test]
async fn a_first_interrupt_lets_hosts_in_flight_finish_every_task_and_starts_no_other() {
    let mut run = start(&held_playbook());
    let mut seen = Vec::new();
    run.until(&mut seen, |e| matches!(step_of(e), Some(("hold", "a1"))))
        .await;
    run.interrupts.send(1).unwrap();
    run.until(&mut seen, |e| matches!(e, Event::Stopped { .. }))
        .await;
    std::fs::write(run.dir.path().join("hosts/go"), "").unwrap();
    let (report, events, run) = run.finish(seen).await;
    assert_eq!(report.exit, Exit::Interrupted);
    assert_eq!(run.read("a1", "log").as_deref(), Some("hold\nafter\n"));
    assert_eq!(run.outcome(&report, "a1"), Some(HostOutcome::Ok));
    for host in ["a2", "a3", "a4", "b1", "b2"] {
        assert!(!run.host_dir(host).exists(), "{host} must not start");
        assert_eq!(run.outcome(&report, host), Some(HostOutcome::Cancelled));
    }
    assert!(!events
        .iter()
        .any(|e| matches!(e, Event::TaskInterrupted { .. })));
}

#[tokio::test]
async fn a_second_interrupt_kills_running_tasks_and_reports_their_hosts_incomplete() {
    let mut run = start(&held_playbook());
    let mut seen = Vec::new();
    run.until(&mut seen, |e| matches!(step_of(e), Some(("hold", "a1"))))
        .await;
    run.wait_for_file("a1", "log").await;
    run.interrupts.send(1).unwrap();
    run.interrupts.send(2).unwrap();
    let (report, events, run) = run.finish(seen).await;
    assert_eq!(report.exit, Exit::Interrupted);
    assert!(events.iter().any(
        |e| matches!(e, Event::TaskInterrupted { task, .. } if task.host == "a1" && task.step == "hold")
    ));
    assert_eq!(run.outcome(&report, "a1"), Some(HostOutcome::Incomplete));
    assert_eq!(
        run.read("a1", "log").as_deref(),
        Some("hold\n"),
        "after never ran"
    );
    let summary = events
        .iter()
        .find_map(|e| match e {
            Event::Summary { incomplete, .. } => Some(incomplete.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(summary, vec!["a1".to_string()]);
}

#[tokio::test]
async fn a_journal_that_cannot_be_written_stops_the_run_before_an_unrecorded_task_starts() {
    // The journal takes the first three facts (a1's and b1's starts, a1's end), then
    // the disk is full.
    let steps = "  - name: one\n    run: echo one >> log\n  - name: two\n    needs: [one]\n    run: echo two >> log\n";
    let run = start_journaling(
        INVENTORY,
        &playbook("  max_unavailable: 1\n", steps),
        chrono::Utc::now,
        3,
    );
    let (report, events, run) = run.finish(Vec::new()).await;
    assert_eq!(report.exit, Exit::NeedsAttention, "{events:#?}");
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::Stopped { reason, .. } if reason.contains("the journal cannot be written")
        )),
        "{events:#?}"
    );
    // Every command that ran had its start journaled: three durable facts, so at most the
    // two first starts ran their command; no host finished both steps.
    let ran: usize = ["a1", "a2", "a3", "a4", "b1", "b2"]
        .iter()
        .map(|h| run.read(h, "log").map_or(0, |log| log.lines().count()))
        .sum();
    assert!(ran <= 2, "{ran} commands ran with 3 facts journaled");
    for host in ["a1", "a2", "a3", "a4", "b1", "b2"] {
        assert_ne!(run.outcome(&report, host), Some(HostOutcome::Ok), "{host}");
    }
}
