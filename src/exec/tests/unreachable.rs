//! Unreachable hosts: skipped within `max_unreachable`, failed by default and beyond it.

use super::*;

/// Four local hosts and `dead` hosts over ssh to a closed loopback port (no retries) at
/// `addresses` (127.x).
fn with_dead_hosts(dead: &str, addresses: &str) -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!(
        r#"
name: t
defaults: {{ connection: local }}
regions:
  r1:
    clusters:
      c1: {{ hosts: {{ "a[1:4]": }} }}
      c2:
        connection: ssh
        ssh: {{ port: {port}, connect_retries: 0, connect_timeout: 5s }}
        hosts: {{ "{dead}": {{ address: "{addresses}" }} }}
"#
    )
}

fn outcomes_of(events: &[Event], wanted: &str) -> Vec<HostOutcome> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::HostFinished { host, outcome, .. } if host == wanted => Some(*outcome),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn an_unreachable_host_is_skipped_and_reported_and_the_run_goes_on() {
    let (report, events, run) = start_in(
        &with_dead_hosts("d1", "127.0.0.1"),
        &playbook("  unreachable: skip\n", &failing_on("none")),
    )
    .finish(Vec::new())
    .await;
    assert_eq!(outcomes_of(&events, "d1"), vec![HostOutcome::Unreachable]);
    assert!(
        !events.iter().any(|e| matches!(
            e,
            Event::BudgetExceeded { .. } | Event::RollbackStarted { .. }
        )),
        "outside the failure budget: nothing stops or rolls back"
    );
    for host in ["a1", "a2", "a3", "a4"] {
        assert_eq!(run.outcome(&report, host), Some(HostOutcome::Ok), "{host}");
        assert_eq!(run.read(host, "log").as_deref(), Some("mark\ncheck\n"));
    }
    // The dead host still runs the old release.
    assert_eq!(report.exit, Exit::NeedsAttention);
}

#[tokio::test]
async fn an_unreachable_host_fails_by_default_and_beyond_max_unreachable() {
    // By default (`unreachable: fail`) it spends the budget (0): the region rolls back.
    let (report, events, run) = start_in(
        &with_dead_hosts("d1", "127.0.0.1"),
        &playbook("", &failing_on("none")),
    )
    .finish(Vec::new())
    .await;
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::BudgetExceeded { .. })));
    assert_ne!(run.outcome(&report, "d1"), Some(HostOutcome::Unreachable));
    // Under `skip` with max_unreachable 1, the second dead host is a failure.
    let (report, events, run) = start_in(
        &with_dead_hosts("d[1:2]", "127.0.0.[1:2]"),
        &playbook(
            "  unreachable: skip\n  max_unreachable: 1\n  max_unavailable: 1\n",
            &failing_on("none"),
        ),
    )
    .finish(Vec::new())
    .await;
    let skipped: Vec<_> = ["d1", "d2"]
        .into_iter()
        .filter(|h| run.outcome(&report, h) == Some(HostOutcome::Unreachable))
        .collect();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    let budget: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::BudgetExceeded {
                cluster,
                failed_hosts,
                ..
            } => Some((cluster.clone(), *failed_hosts)),
            _ => None,
        })
        .collect();
    assert_eq!(budget, vec![("c2".to_string(), 1)]);
}
