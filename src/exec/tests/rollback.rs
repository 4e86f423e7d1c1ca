//! Paced rollbacks: at most the cluster's slots rolling back at once, `pace: all`, region
//! steps between host rollbacks, and no hang when rolled-back hosts wait on each other.
//! A failed rollback stops its host's rollbacks of what its task needed (also when it ran
//! on a `delegate:`), not other hosts' nor the region's.

use super::*;

/// One cluster of eight hosts: a region rollback must queue them for the slots.
const EIGHT: &str = r#"
name: t
defaults: { connection: local }
regions:
  r1:
    clusters:
      c1: { hosts: { "h[1:8]": } }
"#;

/// The most hosts of `cluster` rolling back at once: from a host's first rollback
/// command until its outcome (when it gives its slot back). Also the order in which
/// hosts began rolling back.
fn rollback_width(events: &[Event]) -> (usize, Vec<String>) {
    let mut out = std::collections::BTreeSet::new();
    let mut first = Vec::new();
    let mut most = 0;
    for event in events {
        match event {
            Event::RollbackTaskStarted { task } => {
                if !first.contains(&task.host) {
                    first.push(task.host.clone());
                }
                out.insert(task.host.clone());
            }
            Event::HostFinished { host, .. } => {
                out.remove(host);
            }
            _ => {}
        }
        most = most.max(out.len());
    }
    (most, first)
}

#[tokio::test]
async fn a_paced_region_rollback_never_has_more_hosts_rolling_back_than_slots() {
    let (report, events, run) = start_in(
        EIGHT,
        &playbook(
            "  max_unavailable: 2\n  on_failure: rollback-region\n",
            &failing_on("h8"),
        ),
    )
    .finish(Vec::new())
    .await;
    assert_eq!(report.exit, Exit::FailedRolledBack);
    let (most, first) = rollback_width(&events);
    assert_eq!(most, 2, "two slots: two hosts at once, never more");
    assert_eq!(
        first.len(),
        8,
        "every touched host is rolled back: {first:?}"
    );
    assert_eq!(
        first[0], "h8",
        "the failed host (holding a slot) goes first"
    );
    assert_eq!(
        run.read("h8", "log").as_deref(),
        Some("mark\ncheck\nundo-check\nundo-mark\n")
    );
    for h in 1..=7 {
        let host = format!("h{h}");
        assert_eq!(
            run.outcome(&report, &host),
            Some(HostOutcome::RolledBack),
            "{host}"
        );
        // h7 shares the slots with h8: h8's failure may stop the region before h7's
        // `check` starts (then it never ran and is not undone). Either way the undo is
        // the forward run reversed; h1..h6 finished before h8 started.
        let log = run.read(&host, "log");
        let cancelled_check = h == 7 && log.as_deref() == Some("mark\nundo-mark\n");
        if !cancelled_check {
            assert_eq!(
                log.as_deref(),
                Some("mark\ncheck\nundo-check\nundo-mark\n"),
                "{host}: reverse order within the host"
            );
        }
    }
}

#[tokio::test]
async fn pace_all_rolls_every_host_of_the_region_back_at_once() {
    let (report, events, run) = start_in(
        EIGHT,
        &playbook(
            "  max_unavailable: 2\n  rollback: { pace: all }\n",
            &failing_on("h8"),
        ),
    )
    .finish(Vec::new())
    .await;
    assert_eq!(report.exit, Exit::FailedRolledBack);
    let (most, first) = rollback_width(&events);
    assert_eq!(most, 8, "all eight at once");
    assert_eq!(first.len(), 8);
    for h in 1..=8 {
        let host = format!("h{h}");
        assert!(run.read(&host, "log").unwrap().ends_with("undo-mark\n"));
    }
}

#[tokio::test]
async fn a_region_steps_rollback_runs_between_the_paced_host_rollbacks_in_reverse_order() {
    let steps = r#"  - name: mark
    run: echo mark >> log
    rollback: echo "undo-mark {{ host.name }}" >> ../trail
  - name: migrate
    per: region
    needs: [mark]
    run: 'true'
    rollback: echo undo-migrate >> ../trail
  - name: check
    needs: [migrate]
    run: "case {{ host.name }} in h8) exit 1;; esac"
    rollback: echo "undo-check {{ host.name }}" >> ../trail
"#;
    let (report, events, run) = start_in(EIGHT, &playbook("  max_unavailable: 2\n", steps))
        .finish(Vec::new())
        .await;
    assert_eq!(report.exit, Exit::FailedRolledBack);
    let trail = std::fs::read_to_string(run.dir.path().join("hosts/trail")).unwrap();
    let lines: Vec<&str> = trail.lines().collect();
    // Reverse dependency order across hosts: every `check` (the failed host first), then
    // the region's `migrate` once, then every `mark`.
    assert_eq!(lines.len(), 17, "{trail}");
    let sorted = |part: &[&str]| -> Vec<String> {
        let mut part: Vec<String> = part.iter().map(|l| l.to_string()).collect();
        part.sort();
        part
    };
    let each = |what: &str| -> Vec<String> { (1..=8).map(|h| format!("{what} h{h}")).collect() };
    assert_eq!(sorted(&lines[..8]), each("undo-check"), "{trail}");
    assert_eq!(lines[8], "undo-migrate", "{trail}");
    assert_eq!(sorted(&lines[9..]), each("undo-mark"), "{trail}");
    // The failed host went first. (Each host keeps its slot until its `mark` is undone,
    // which waits for every `check`: the others are let in one by one rather than hang.)
    let (_, first) = rollback_width(&events);
    assert_eq!(first[0], "h8");
}

#[tokio::test]
async fn a_paced_rollback_whose_hosts_wait_on_each_other_lets_more_in_rather_than_hang() {
    // Every host's `check` needed every host's `mark`: undoing h1's `mark` waits for the
    // `check` rollback of every other host, which holds no slot yet.
    let steps = r#"  - name: mark
    run: echo mark >> log
    rollback: echo undo-mark >> log
  - name: check
    needs: [{ step: mark, scope: run }]
    run: "echo check >> log; case {{ host.name }} in h8) exit 1;; esac"
    rollback: echo undo-check >> log
"#;
    let (report, _events, run) = start_in(EIGHT, &playbook("  max_unavailable: 2\n", steps))
        .finish(Vec::new())
        .await;
    assert_eq!(report.exit, Exit::FailedRolledBack);
    for h in 1..=8 {
        let host = format!("h{h}");
        assert_eq!(run.outcome(&report, &host), Some(HostOutcome::RolledBack));
        assert!(
            run.read(&host, "log").unwrap().ends_with("undo-mark\n"),
            "{host}"
        );
    }
}

/// The not-attempted rollbacks of a run, `(label, blocked_by)`, sorted.
fn not_attempted(events: &[Event]) -> Vec<(String, String)> {
    let mut stopped: Vec<(String, String)> = events
        .iter()
        .filter_map(|e| match e {
            Event::RollbackNotAttempted {
                task, blocked_by, ..
            } => Some((task.label.clone(), blocked_by.clone())),
            _ => None,
        })
        .collect();
    stopped.sort();
    stopped
}

#[tokio::test]
async fn a_failed_rollback_stops_its_hosts_earlier_rollbacks_not_other_hosts_nor_the_regions() {
    // h8's `check` fails, and so does its rollback: h8's `mark` must stay (what `check`
    // sat on top of). The region's `migrate` and the other hosts' `mark` are undone.
    let steps = r#"  - name: mark
    run: echo mark >> log
    rollback: echo "undo-mark {{ host.name }}" >> ../trail
  - name: migrate
    per: region
    needs: [mark]
    run: 'true'
    rollback: echo undo-migrate >> ../trail
  - name: check
    needs: [migrate]
    run: "case {{ host.name }} in h8) exit 1;; esac"
    rollback: "echo 'undo-check {{ host.name }}' >> ../trail; case {{ host.name }} in h8) exit 1;; esac"
"#;
    let strategy = "  max_unavailable: 100%\n  max_failures: 0\n  on_failure: rollback-region\n";
    let (report, events, run) = start_in(EIGHT, &playbook(strategy, steps))
        .finish(Vec::new())
        .await;
    assert_eq!(report.exit, Exit::NeedsAttention);
    let trail = std::fs::read_to_string(run.dir.path().join("hosts/trail")).unwrap();
    assert!(trail.contains("undo-check h8\n"), "{trail}");
    assert!(!trail.contains("undo-mark h8\n"), "{trail}");
    assert!(trail.contains("undo-migrate\n"), "{trail}");
    for h in 1..=7 {
        assert!(trail.contains(&format!("undo-mark h{h}\n")), "{trail}");
        assert_eq!(
            run.outcome(&report, &format!("h{h}")),
            Some(HostOutcome::RolledBack)
        );
    }
    assert_eq!(
        not_attempted(&events),
        [("mark@h8".to_string(), "check@h8".to_string())]
    );
    assert_eq!(
        run.outcome(&report, "h8"),
        Some(HostOutcome::RollbackFailed)
    );
    // The event comes before the host's verdict, and only once.
    let at = |wanted: &dyn Fn(&Event) -> bool| events.iter().position(wanted).unwrap();
    assert!(
        at(&|e| matches!(e, Event::RollbackNotAttempted { .. }))
            < at(&|e| matches!(e, Event::HostFinished { host, .. } if host == "h8"))
    );
}

#[tokio::test]
async fn a_failed_delegated_rollback_stops_the_rollbacks_it_sat_on_for_its_target_host() {
    // `out` and `in` run on h8 (the balancer) for h1..h2; `in`'s rollback (taking the host
    // out of the pool again) fails for h1: h1's `restart` and `out` are not undone. h2,
    // whose `in` rollback succeeded, is fully rolled back. Paced, two at a time.
    let steps = r#"  - name: out
    hosts: "h1,h2"
    delegate: h8
    run: echo "out {{ host.name }}" >> pool
    rollback: echo "undo-out {{ host.name }}" >> pool
  - name: restart
    hosts: "h1,h2"
    needs: [out]
    run: echo restart >> log
    rollback: echo undo-restart >> log
  - name: in
    hosts: "h1,h2"
    needs: [restart]
    delegate: h8
    run: echo "in {{ host.name }}" >> pool
    rollback: "echo 'undo-in {{ host.name }}' >> pool; case {{ host.name }} in h1) exit 1;; esac"
  - name: check
    hosts: "h1,h2"
    needs: [in]
    run: exit 1
"#;
    let strategy = "  max_unavailable: 1\n  max_failures: 2\n";
    let (report, events, run) = start_in(EIGHT, &playbook(strategy, steps))
        .finish(Vec::new())
        .await;
    assert_eq!(report.exit, Exit::NeedsAttention);
    let pool = run.read("h8", "pool").unwrap();
    assert!(pool.contains("undo-in h1\n"), "{pool}");
    assert!(!pool.contains("undo-out h1\n"), "{pool}");
    assert!(
        pool.contains("undo-in h2\n") && pool.contains("undo-out h2\n"),
        "{pool}"
    );
    assert_eq!(
        run.read("h1", "log").unwrap(),
        "restart\n",
        "h1 not restarted back"
    );
    assert!(run.read("h2", "log").unwrap().ends_with("undo-restart\n"));
    assert_eq!(
        not_attempted(&events),
        [
            ("out@h1".to_string(), "in@h1".to_string()),
            ("restart@h1".to_string(), "in@h1".to_string()),
        ]
    );
    assert_eq!(
        run.outcome(&report, "h1"),
        Some(HostOutcome::RollbackFailed)
    );
    assert_eq!(run.outcome(&report, "h2"), Some(HostOutcome::RolledBack));
    // The balancer itself was never deployed nor rolled back.
    assert_eq!(run.outcome(&report, "h8"), None);
    // The summary names them too.
    let listed = events.iter().find_map(|e| match e {
        Event::Summary {
            rollbacks_not_attempted,
            rollback_failed,
            ..
        } => Some((rollbacks_not_attempted.clone(), *rollback_failed)),
        _ => None,
    });
    let (mut listed, rollback_failed) = listed.expect("a summary");
    listed.sort();
    assert_eq!(listed, ["out@h1", "restart@h1"]);
    assert_eq!(rollback_failed, 1);
}

#[tokio::test]
async fn a_rollback_that_cannot_be_rendered_stops_its_hosts_earlier_rollbacks() {
    // `check` fails on h1 before capturing `token`: its rollback cannot be rendered, so
    // h1's `mark` is not undone; h2's check has no failure and is rolled back in full.
    let steps = r#"  - name: mark
    run: echo mark >> log
    rollback: echo undo-mark >> log
  - name: check
    needs: [mark]
    run: "case {{ host.name }} in h1) exit 1;; esac; echo t-{{ host.name }}"
    capture: token
    rollback: echo "undo-check {{ token }}" >> log
"#;
    let strategy = "  max_unavailable: 100%\n  max_failures: 0\n  on_failure: rollback-region\n";
    let (report, events, run) = start_in(EIGHT, &playbook(strategy, steps))
        .finish(Vec::new())
        .await;
    assert_eq!(report.exit, Exit::NeedsAttention);
    assert_eq!(run.read("h1", "log").unwrap(), "mark\n");
    assert!(run.read("h2", "log").unwrap().ends_with("undo-mark\n"));
    assert_eq!(
        not_attempted(&events),
        [("mark@h1".to_string(), "check@h1".to_string())]
    );
    assert_eq!(
        run.outcome(&report, "h1"),
        Some(HostOutcome::RollbackFailed)
    );
    assert_eq!(run.outcome(&report, "h2"), Some(HostOutcome::RolledBack));
}
