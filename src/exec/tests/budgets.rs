//! Failure budgets beyond the cluster's: run-wide and per wave.

use super::*;

/// Twenty hosts in three clusters of one region.
const TWENTY: &str = r#"
name: t
defaults: { connection: local }
regions:
  r1:
    clusters:
      x: { hosts: { "x[1:7]": } }
      y: { hosts: { "y[1:7]": } }
      z: { hosts: { "z[1:6]": } }
"#;

#[tokio::test]
async fn the_run_wide_budget_stops_the_run_at_the_third_failure_across_clusters() {
    // The first wave fails one host in each cluster: within every cluster's budget of 1,
    // but the third failure is beyond 10% of 20 hosts.
    let playbook = format!(
        "name: p\nstrategy:\n  waves:\n    - {{ name: first, regions: [\"*\"], hosts: \"x1,y1,z1\" }}\n    - {{ name: rest, regions: [\"*\"] }}\n  max_failures: 1\n  max_failures_run: 10%\n  on_failure: rollback-region\nsteps:\n{}",
        failing_on("x1|y1|z1")
    );
    let (report, events, run) = start_in(TWENTY, &playbook).finish(Vec::new()).await;
    let crossed: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::RunBudgetExceeded {
                failed_hosts,
                max_failures_run,
                action,
            } => Some((*failed_hosts, *max_failures_run, action.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(crossed, vec![(3, 2, "rollback-region".to_string())]);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::BudgetExceeded { .. })),
        "no cluster went beyond its own budget"
    );
    for host in ["x1", "y1", "z1"] {
        assert_eq!(run.outcome(&report, host), Some(HostOutcome::RolledBack));
        assert!(run.read(host, "log").unwrap().ends_with("undo-mark\n"));
    }
    for host in ["x2", "y7", "z6"] {
        assert_eq!(run.outcome(&report, host), Some(HostOutcome::Cancelled));
        assert_eq!(run.read(host, "log"), None, "{host} never ran");
    }
    assert_eq!(report.exit, Exit::FailedRolledBack);
}

#[tokio::test]
async fn without_a_run_wide_budget_the_same_failures_stay_within_the_clusters_budgets() {
    let playbook = format!(
        "name: p\nstrategy:\n  waves:\n    - {{ name: first, regions: [\"*\"], hosts: \"x1,y1,z1\" }}\n    - {{ name: rest, regions: [\"*\"] }}\n  max_failures: 1\nsteps:\n{}",
        failing_on("x1|y1|z1")
    );
    let (report, _events, run) = start_in(TWENTY, &playbook).finish(Vec::new()).await;
    assert_eq!(run.outcome(&report, "x2"), Some(HostOutcome::Ok));
    assert_eq!(run.read("z6", "log").as_deref(), Some("mark\ncheck\n"));
}

#[tokio::test]
async fn a_waves_own_budget_stops_the_run_when_its_failures_spread_over_clusters() {
    // The canary wave of six hosts (two per cluster) allows 1 failure; every cluster
    // allows 1 too. The second failure, in another cluster, is beyond the wave's budget.
    let playbook = format!(
        "name: p\nstrategy:\n  waves:\n    - {{ name: canary, regions: [\"*\"], hosts: \"x1,x2,y1,y2,z1,z2\", max_failures: 1 }}\n    - {{ name: rest, regions: [\"*\"] }}\n  max_failures: 1\n  on_failure: rollback-region\nsteps:\n{}",
        failing_on("x1|y1")
    );
    let (report, events, run) = start_in(TWENTY, &playbook).finish(Vec::new()).await;
    let crossed: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::WaveBudgetExceeded {
                wave,
                failed_hosts,
                max_failures,
                ..
            } => Some((wave.clone(), *failed_hosts, *max_failures)),
            _ => None,
        })
        .collect();
    assert_eq!(crossed, vec![("canary".to_string(), 2, 1)]);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::BudgetExceeded { .. })),
        "no cluster went beyond its own budget"
    );
    for host in ["x1", "y1"] {
        assert_eq!(run.outcome(&report, host), Some(HostOutcome::RolledBack));
        assert!(run.read(host, "log").unwrap().ends_with("undo-mark\n"));
    }
    for host in ["x3", "y7", "z6"] {
        assert_eq!(
            run.read(host, "log"),
            None,
            "{host} of the next wave never ran"
        );
    }
    assert_eq!(report.exit, Exit::FailedRolledBack);
}

#[tokio::test]
async fn a_strategy_wide_wave_budget_is_every_waves_default_and_a_percentage_of_its_hosts() {
    // max_failures_wave: 50% of the six-host canary is 3: two failures stay within it.
    let playbook = format!(
        "name: p\nstrategy:\n  waves:\n    - {{ name: canary, regions: [\"*\"], hosts: \"x1,x2,y1,y2,z1,z2\" }}\n    - {{ name: rest, regions: [\"*\"] }}\n  max_failures: 1\n  max_failures_wave: 50%\nsteps:\n{}",
        failing_on("x1|y1")
    );
    let (_report, events, run) = start_in(TWENTY, &playbook).finish(Vec::new()).await;
    assert!(!events
        .iter()
        .any(|e| matches!(e, Event::WaveBudgetExceeded { .. })));
    assert_eq!(run.read("z6", "log").as_deref(), Some("mark\ncheck\n"));
}
