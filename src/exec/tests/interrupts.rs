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
        |e| matches!(e, Event::TaskInterrupted { task } if task.host == "a1" && task.step == "hold")
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
