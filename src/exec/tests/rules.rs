//! The scheduler's core rules: `max_unavailable` slots, `on_failure` (halt, rollback-
//! region, rollback-all), rollback order, wave order, `per: region`/`per: run` steps.

use super::*;

#[tokio::test]
async fn a_cluster_never_has_more_hosts_out_of_service_than_its_slots() {
    let (report, events, _run) = run_to_end(&playbook(
        "  max_unavailable: 50%\n",
        "  - { name: one, run: 'true' }\n  - { name: two, needs: [one], run: 'true' }\n",
    ))
    .await;
    assert_eq!(report.exit, Exit::Success);
    // Hosts of c1 (4 hosts, 50% = 2 slots) between their first task and their end.
    let mut out = std::collections::BTreeSet::new();
    let mut most = 0;
    for event in &events {
        match event {
            Event::TaskStarted { task } if task.cluster == "c1" => {
                out.insert(task.host.clone());
            }
            Event::HostFinished { host, cluster, .. } if cluster == "c1" => {
                out.remove(host);
            }
            _ => {}
        }
        most = most.max(out.len());
    }
    assert!(most <= 2, "at most 2 of c1's 4 hosts at once, saw {most}");
    assert!(most >= 1);
}

#[tokio::test]
async fn a_failure_within_budget_rolls_back_only_that_host_in_reverse_order() {
    let (report, events, run) =
        run_to_end(&playbook("  max_failures: 1\n", &failing_on("a2"))).await;
    assert_eq!(report.exit, Exit::FailedRolledBack);
    assert_eq!(rolled_back_hosts(&events), vec!["a2"]);
    assert_eq!(run.outcome(&report, "a2"), Some(HostOutcome::RolledBack));
    for host in ["a1", "a3", "a4", "b1", "b2"] {
        assert_eq!(run.outcome(&report, host), Some(HostOutcome::Ok), "{host}");
        assert_eq!(run.read(host, "log").as_deref(), Some("mark\ncheck\n"));
    }
    // The failed step is undone first, then what it needed.
    assert_eq!(
        run.read("a2", "log").as_deref(),
        Some("mark\ncheck\nundo-check\nundo-mark\n")
    );
}

#[tokio::test]
async fn halt_stops_starting_tasks_and_rolls_nothing_back() {
    let (report, events, run) = run_to_end(&playbook(
        "  max_unavailable: 1\n  max_failures: 0\n  on_failure: halt\n",
        &failing_on("a1"),
    ))
    .await;
    assert_eq!(report.exit, Exit::NeedsAttention);
    assert!(rolled_back_hosts(&events).is_empty());
    assert_eq!(run.outcome(&report, "a1"), Some(HostOutcome::Failed));
    assert_eq!(run.read("a1", "log").as_deref(), Some("mark\ncheck\n"));
    // c1 takes one host at a time: a2..a4 never started.
    for host in ["a2", "a3", "a4"] {
        assert!(!run.host_dir(host).exists(), "{host} was never started");
        assert_eq!(run.outcome(&report, host), Some(HostOutcome::Cancelled));
    }
}

#[tokio::test]
async fn a_halt_reports_a_host_in_flight_whose_next_task_it_cancelled_incomplete() {
    // a1 holds in `hold` until the test's `go`; b1 fails once a1 has started, and the
    // halt cancels a1's `after` before it starts.
    let steps = "  - name: hold\n    run: 'echo hold >> log; case {{ host.name }} in b1) while [ ! -f ../a1/log ]; do sleep 0.02; done; exit 1;; esac; while [ ! -f ../go ]; do sleep 0.02; done'\n  - name: after\n    needs: [hold]\n    run: echo after >> log\n";
    let mut run = start(&playbook(
        "  max_unavailable: 1\n  max_failures: 0\n  on_failure: halt\n",
        steps,
    ));
    let mut seen = Vec::new();
    run.until(&mut seen, |e| matches!(e, Event::Stopped { .. }))
        .await;
    std::fs::write(run.dir.path().join("hosts/go"), "").unwrap();
    let (report, events, run) = run.finish(seen).await;
    assert_eq!(report.exit, Exit::NeedsAttention);
    assert_eq!(run.read("a1", "log").as_deref(), Some("hold\n"));
    assert_eq!(run.outcome(&report, "b1"), Some(HostOutcome::Failed));
    assert_eq!(
        run.outcome(&report, "a1"),
        Some(HostOutcome::Incomplete),
        "a1 never ran `after`: {events:#?}"
    );
    assert!(events.iter().any(|e| matches!(
        e,
        Event::HostFinished { host, outcome: HostOutcome::Incomplete, .. } if host == "a1"
    )));
}

#[tokio::test]
async fn rollback_region_rolls_back_the_region_and_the_other_region_goes_on() {
    let (report, events, run) = run_to_end(&playbook(
        "  max_failures: 0\n  on_failure: rollback-region\n",
        &failing_on("b1"),
    ))
    .await;
    assert_eq!(report.exit, Exit::FailedRolledBack);
    let rolled = rolled_back_hosts(&events);
    assert!(rolled.contains(&"b1".to_string()), "{rolled:?}");
    assert!(rolled.iter().all(|h| h.starts_with('b')), "{rolled:?}");
    for host in ["a1", "a2", "a3", "a4"] {
        assert_eq!(run.outcome(&report, host), Some(HostOutcome::Ok), "{host}");
    }
}

#[tokio::test]
async fn rollback_all_rolls_back_every_touched_host() {
    let (report, events, run) = run_to_end(&playbook(
        "  max_failures: 0\n  on_failure: rollback-all\n",
        &failing_on("b1"),
    ))
    .await;
    assert_eq!(report.exit, Exit::FailedRolledBack);
    let touched: Vec<String> = ["a1", "a2", "a3", "a4", "b1", "b2"]
        .iter()
        .filter(|h| run.host_dir(h).exists())
        .map(|h| h.to_string())
        .collect();
    assert_eq!(rolled_back_hosts(&events), touched);
    for host in &touched {
        let log = run.read(host, "log").unwrap_or_default();
        assert!(log.ends_with("undo-mark\n"), "{host}: {log}");
    }
}

#[tokio::test]
async fn a_wave_starts_only_after_every_host_of_the_previous_one_finished() {
    let text = "name: p\nstrategy:\n  waves:\n    - { name: first, regions: [r2] }\n    - { name: rest, regions: [\"*\"] }\nsteps:\n  - { name: one, run: 'true' }\n";
    let (report, events, _run) = run_to_end(text).await;
    assert_eq!(report.exit, Exit::Success);
    let last_first = events
        .iter()
        .rposition(|e| matches!(e, Event::HostFinished { region, .. } if region == "r2"))
        .unwrap();
    let gate = events
        .iter()
        .position(|e| matches!(e, Event::GatePassed { wave, .. } if wave == "first"))
        .unwrap();
    let first_rest = events
        .iter()
        .position(|e| matches!(e, Event::TaskStarted { task } if task.region == "r1"))
        .unwrap();
    assert!(last_first < gate && gate < first_rest, "{events:#?}");
}

#[tokio::test]
async fn per_region_and_per_run_steps_run_once_where_they_belong() {
    let steps = "  - { name: each, run: 'true' }\n  - { name: migrate, per: region, needs: [each], run: 'true' }\n  - { name: announce, per: run, needs: [migrate], run: 'true' }\n";
    let (report, events, _run) = run_to_end(&playbook("", steps)).await;
    assert_eq!(report.exit, Exit::Success);
    let started: Vec<(&str, &str)> = events.iter().filter_map(step_of).collect();
    assert_eq!(started.iter().filter(|(s, _)| *s == "each").count(), 6);
    assert_eq!(started.iter().filter(|(s, _)| *s == "migrate").count(), 2);
    assert_eq!(started.iter().filter(|(s, _)| *s == "announce").count(), 1);
    // `announce` starts after both regions' `migrate` finished.
    let announce = events
        .iter()
        .position(|e| matches!(step_of(e), Some(("announce", _))))
        .unwrap();
    let migrated = events
        .iter()
        .filter(|e| matches!(e, Event::TaskFinished { task, .. } if task.step == "migrate"))
        .count();
    let migrated_before = events[..announce]
        .iter()
        .filter(|e| matches!(e, Event::TaskFinished { task, .. } if task.step == "migrate"))
        .count();
    assert_eq!((migrated, migrated_before), (2, 2));
}
