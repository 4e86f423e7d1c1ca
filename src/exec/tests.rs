//! The scheduler's rules, in process, over `connection: local` hosts in a temp dir: the
//! `max_unavailable` slots, failure budgets and every `on_failure`, rollback order, waves,
//! `per: region`/`per: run`, and interrupts. Each run takes milliseconds; the order of
//! events (not the clock) is what is checked, plus the hosts' files.

use super::hosts::HostPool;
use super::{ExecOptions, Mode, RunReport};
use crate::events::{Event, EventSink, HostOutcome};
use crate::exit::Exit;
use crate::plan::{Plan, PlanOptions};
use crate::secret::Redactor;
use crate::transport::ssh::SshOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

const INVENTORY: &str = r#"
name: t
defaults: { connection: local }
regions:
  r1:
    clusters:
      c1: { hosts: { "a[1:4]": } }
  r2:
    clusters:
      c2: { hosts: { "b[1:2]": } }
"#;

struct Run {
    dir: tempfile::TempDir,
    plan: Arc<Plan>,
    interrupts: watch::Sender<u32>,
    events: mpsc::UnboundedReceiver<Event>,
    report: tokio::task::JoinHandle<RunReport>,
}

fn plan(inventory: &str, playbook: &str) -> Arc<Plan> {
    let inventory =
        crate::inventory::parse(Path::new("inv.yaml"), inventory).unwrap_or_else(|e| panic!("{e}"));
    let playbook =
        crate::playbook::parse(Path::new("pb.yaml"), playbook).unwrap_or_else(|e| panic!("{e}"));
    Arc::new(
        crate::plan::build(
            Arc::new(inventory),
            Arc::new(playbook),
            &PlanOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{e}")),
    )
}

/// Starts a run; its events arrive in order on `events` (each acknowledged as durable).
fn start(playbook: &str) -> Run {
    start_in(INVENTORY, playbook)
}

/// Starts a run over another inventory.
fn start_in(inventory: &str, playbook: &str) -> Run {
    start_with(inventory, playbook, chrono::Utc::now)
}

/// Starts a run over `inventory` with the scheduler's clock starting at `clock()`.
fn start_with(
    inventory: &str,
    playbook: &str,
    clock: fn() -> chrono::DateTime<chrono::Utc>,
) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan(inventory, playbook);
    let pool = HostPool::new(
        plan.clone(),
        SshOptions::new(dir.path(), false),
        dir.path().join("hosts"),
    )
    .prepare();
    let (interrupts, watched) = watch::channel(0);
    let (sink, mut emitted) = EventSink::new();
    let (forward, events) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(e) = emitted.recv().await {
            if let Some(ack) = e.durable {
                let _ = ack.send(());
            }
            let _ = forward.send(e.event);
        }
    });
    let options = ExecOptions {
        run_id: "test-run".into(),
        run_dir_display: String::new(),
        redactor: Redactor::new(std::iter::empty(), std::iter::empty()),
        approvals: Vec::new(),
        connections: plan.playbook.strategy.connections,
        interrupts: watched,
        approver: None,
        approval_wait: None,
        control: None,
        replay: None,
        mode: Mode::Deploy,
        clock: crate::exec::clock::Clock::starting_at(clock()),
        skip_failed_wave: None,
        rollback_pace: plan.playbook.strategy.rollback_pace,
        split: None,
    };
    let report = tokio::spawn(super::run(plan.clone(), pool, options, sink));
    Run {
        dir,
        plan,
        interrupts,
        events,
        report,
    }
}

impl Run {
    fn host_dir(&self, host: &str) -> PathBuf {
        self.dir.path().join("hosts").join(host)
    }

    /// Waits until the host's command has really started (its first line is written).
    async fn wait_for_file(&self, host: &str, file: &str) {
        let path = self.host_dir(host).join(file);
        for _ in 0..3000 {
            if std::fs::metadata(&path).is_ok_and(|m| m.len() > 0) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("{} never appeared", path.display());
    }

    fn read(&self, host: &str, file: &str) -> Option<String> {
        std::fs::read_to_string(self.host_dir(host).join(file)).ok()
    }

    /// Waits for the first event that matches.
    async fn until(&mut self, seen: &mut Vec<Event>, wanted: impl Fn(&Event) -> bool) {
        while let Some(event) = self.events.recv().await {
            let hit = wanted(&event);
            seen.push(event);
            if hit {
                return;
            }
        }
        panic!("the run ended before the awaited event: {seen:#?}");
    }

    async fn finish(mut self, mut seen: Vec<Event>) -> (RunReport, Vec<Event>, Run) {
        let report = (&mut self.report).await.unwrap();
        while let Some(event) = self.events.recv().await {
            seen.push(event);
        }
        (report, seen, self)
    }

    fn outcome(&self, report: &RunReport, host: &str) -> Option<HostOutcome> {
        report.hosts[self.plan.inventory.host_id(host).unwrap()]
    }
}

async fn run_to_end(playbook: &str) -> (RunReport, Vec<Event>, Run) {
    start(playbook).finish(Vec::new()).await
}

fn step_of(event: &Event) -> Option<(&str, &str)> {
    match event {
        Event::TaskStarted { task } => Some((&task.step, &task.host)),
        _ => None,
    }
}

fn rolled_back_hosts(events: &[Event]) -> Vec<String> {
    let mut hosts: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::RollbackTask { task, ok: true, .. } => Some(task.host.clone()),
            _ => None,
        })
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

const ONE_WAVE: &str = "  waves: [{ name: all, regions: [\"*\"] }]\n";

fn playbook(strategy: &str, steps: &str) -> String {
    format!("name: p\nstrategy:\n{ONE_WAVE}{strategy}steps:\n{steps}")
}

/// A step that fails on the named hosts and records every run and rollback in `log`.
fn failing_on(hosts: &str) -> String {
    format!(
        r#"  - name: mark
    run: echo mark >> log
    rollback: echo undo-mark >> log
  - name: check
    needs: [mark]
    run: "echo check >> log; case {{{{ host.name }}}} in {hosts}) exit 1;; esac"
    rollback: echo undo-check >> log
"#
    )
}

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

// ----- verify: soak gates that watch -----

fn verify_events(events: &[Event]) -> Vec<(String, String, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::VerifyCheck {
                check, host, ok, ..
            } => Some((check.clone(), host.clone(), *ok)),
            _ => None,
        })
        .collect()
}

fn started_hosts(events: &[Event]) -> Vec<String> {
    let mut hosts: Vec<String> = events
        .iter()
        .filter_map(|e| step_of(e).map(|(_, h)| h.to_string()))
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

/// Wave `canary` (a1) soaks for an hour with a check every 10ms; wave `rest` follows.
fn canary_playbook(verify: &str, pause: &str) -> String {
    format!(
        r#"name: p
strategy:
  max_failures: 0
  waves:
    - name: canary
      regions: [r1]
      hosts: a1
      pause: {pause}
      verify:
{verify}
    - {{ name: rest, regions: ["*"] }}
steps:
  - name: deploy
    run: echo deploy >> log
    rollback: echo undo-deploy >> log
  - name: health
    needs: [deploy]
    run: "true"
"#
    )
}

#[tokio::test]
async fn a_check_failing_during_the_soak_fails_the_wave_and_rolls_the_canary_back() {
    // The canary passes its own health step; its check reads a marker the test flips
    // after two passing checks.
    let verify = "        - { name: healthy, run: \"test ! -e unhealthy\", every: 10ms }\n";
    let mut run = start(&canary_playbook(verify, "1h"));
    let mut seen = Vec::new();
    for _ in 0..2 {
        run.until(
            &mut seen,
            |e| matches!(e, Event::VerifyCheck { ok: true, host, .. } if host == "a1"),
        )
        .await;
    }
    std::fs::write(run.host_dir("a1").join("unhealthy"), "x").unwrap();
    let (report, events, run) = run.finish(seen).await;
    let checks = verify_events(&events);
    let failed: Vec<_> = checks.iter().filter(|c| !c.2).collect();
    assert_eq!(failed.len(), 1, "{checks:?}");
    assert_eq!(failed[0].1, "a1");
    assert!(checks.iter().filter(|c| c.2).count() >= 2);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::WaveFailed { wave, reason, .. }
            if wave == "canary" && reason.contains("check healthy failed on a1"))),
        "{events:#?}"
    );
    assert!(!events.iter().any(|e| matches!(e, Event::GatePassed { .. })));
    // Rolled back although it had finished; nothing of the next wave started.
    assert_eq!(rolled_back_hosts(&events), vec!["a1"]);
    assert_eq!(
        run.read("a1", "log").as_deref(),
        Some("deploy\nundo-deploy\n")
    );
    assert_eq!(run.outcome(&report, "a1"), Some(HostOutcome::RolledBack));
    assert_eq!(started_hosts(&events), vec!["a1"]);
    for host in ["a2", "a3", "a4", "b1", "b2"] {
        assert!(run.read(host, "log").is_none(), "{host} never deployed");
    }
    assert_eq!(report.exit, Exit::FailedRolledBack);
}

/// A check printing 50 on the canary (r1) and `baseline` elsewhere, compared to b1,b2.
fn compare_check(baseline: u32, tolerance: &str) -> String {
    format!(
        "        - name: errors\n          run: 'case $(basename \"$PWD\") in a*) echo 50;; *) echo {baseline};; esac'\n          every: 20ms\n          compare: median\n          baseline: b1,b2\n          tolerance: \"{tolerance}\"\n"
    )
}

#[tokio::test]
async fn a_canary_five_times_the_baseline_fails_the_wave() {
    let (report, events, run) = run_to_end(&canary_playbook(&compare_check(10, "50%"), "1h")).await;
    let checks = verify_events(&events);
    assert_eq!(checks, vec![("errors".into(), "a1".into(), false)]);
    let detail = events.iter().find_map(|e| match e {
        Event::VerifyCheck { detail, .. } => Some(detail.clone()),
        _ => None,
    });
    assert!(
        detail
            .as_deref()
            .is_some_and(|d| d.contains("canary median 50 vs baseline median 10")),
        "{detail:?}"
    );
    assert_eq!(
        run.read("a1", "log").as_deref(),
        Some("deploy\nundo-deploy\n")
    );
    assert_eq!(started_hosts(&events), vec!["a1"]);
    assert_eq!(report.exit, Exit::FailedRolledBack);
}

#[tokio::test]
async fn a_canary_within_tolerance_passes_and_the_next_wave_runs() {
    // 50 against 45.4545…: 1.1× the baseline, within 50%. 3 rounds in a 60ms soak.
    let playbook = canary_playbook(&compare_check(10, "50%"), "60ms")
        .replace("*) echo 10;;", "*) echo 45.4545;;");
    let (report, events, run) = run_to_end(&playbook).await;
    let checks = verify_events(&events);
    assert_eq!(checks.len(), 3, "{checks:?}");
    assert!(checks.iter().all(|c| c.2 && c.1 == "a1"), "{checks:?}");
    assert_eq!(report.exit, Exit::Success);
    for host in ["a1", "a2", "b1", "b2"] {
        assert_eq!(run.read(host, "log").as_deref(), Some("deploy\n"), "{host}");
    }
}

const ZONED_INVENTORY: &str = r#"
name: t
defaults: { connection: local }
regions:
  r1:
    tz: Asia/Shanghai
    clusters:
      c1: { hosts: { "a[1:2]": } }
  r2:
    tz: Europe/Berlin
    clusters:
      c2: { hosts: { "b[1:2]": } }
"#;

/// 20:00 UTC: 04:00 in Shanghai (inside 02:00-05:00), 21:00 in Berlin (5h before it).
fn eight_pm_utc() -> chrono::DateTime<chrono::Utc> {
    use chrono::TimeZone;
    chrono::Utc.with_ymd_and_hms(2026, 3, 10, 20, 0, 0).unwrap()
}

#[tokio::test]
async fn a_local_window_opens_each_regions_hosts_in_that_regions_own_window() {
    let playbook = r#"name: p
strategy:
  waves: [{ name: all, regions: ["*"], window: "02:00-05:00 local" }]
steps:
  - { name: deploy, run: echo deploy >> log }
"#;
    let mut run = start_with(ZONED_INVENTORY, playbook, eight_pm_utc);
    let mut seen = Vec::new();
    // The Berlin hosts' wait and the Shanghai hosts' ends come in either order (the
    // test waited for the wait first, and hung when a host finished before it).
    let finished = |seen: &[Event], host: &str| {
        seen.iter()
            .any(|e| matches!(e, Event::HostFinished { host: h, .. } if h == host))
    };
    while !(seen.iter().any(|e| matches!(e, Event::GateWaiting { .. }))
        && finished(&seen, "a1")
        && finished(&seen, "a2"))
    {
        run.until(&mut seen, |_| true).await;
    }
    for host in ["a1", "a2"] {
        assert_eq!(run.read(host, "log").as_deref(), Some("deploy\n"), "{host}");
    }
    let waits: Vec<_> = seen
        .iter()
        .filter_map(|e| match e {
            Event::GateWaiting {
                reason, seconds, ..
            } => Some((reason.clone(), *seconds)),
            _ => None,
        })
        .collect();
    assert_eq!(
        waits,
        vec![(
            "window 02:00-05:00 local (Europe/Berlin)".to_string(),
            5 * 3600
        )]
    );
    assert_eq!(started_hosts(&seen), vec!["a1", "a2"]);
    for host in ["b1", "b2"] {
        assert!(
            run.read(host, "log").is_none(),
            "{host} waits for Berlin's window"
        );
    }
    // Berlin's window is hours away: the run is left there.
    run.report.abort();
}

#[tokio::test]
async fn checks_run_before_the_approve_question_and_a_failure_fails_the_wave_instead() {
    // No terminal: without checks the run would stop awaiting approval.
    let playbook = canary_playbook(
        "        - { name: healthy, run: \"! grep -q deploy log\" }\n",
        "1h",
    )
    .replace("      pause: 1h\n", "      approve: true\n");
    let (report, events, run) = run_to_end(&playbook).await;
    assert_eq!(
        verify_events(&events),
        vec![("healthy".into(), "a1".into(), false)]
    );
    assert!(!events
        .iter()
        .any(|e| matches!(e, Event::GateWaiting { reason, .. } if reason == "approve")));
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::WaveFailed { wave, .. } if wave == "canary")));
    assert_eq!(
        run.read("a1", "log").as_deref(),
        Some("deploy\nundo-deploy\n")
    );
    assert_eq!(started_hosts(&events), vec!["a1"]);
    assert_ne!(report.exit, Exit::AwaitingApproval);
}

#[tokio::test]
async fn a_checks_command_is_a_template_rendered_for_each_host() {
    // Unrendered, `{{ host.name }}` would never equal the host's folder name.
    let verify = "        - { name: mine, run: 'grep -qx \"{{ marker }}\" log && test \"$(basename \"$PWD\")\" = \"{{ host.name }}\"', hosts: \"a1,a2\", every: 20ms }\n";
    let playbook = canary_playbook(verify, "40ms")
        .replace("name: p\n", "name: p\nvars: { marker: deploy }\n")
        .replace("hosts: a1\n", "hosts: \"a1,a2\"\n");
    let (report, events, _run) = run_to_end(&playbook).await;
    let checks = verify_events(&events);
    assert!(checks.len() >= 4, "{checks:?}");
    assert!(checks.iter().all(|c| c.2), "{checks:?}");
    assert!(checks.iter().any(|c| c.1 == "a2"));
    assert_eq!(report.exit, Exit::Success);
}

/// A compare check whose command records how many of its hosts are in it at once: each
/// waits (a bounded second) for another host to arrive, so two lanes side by side always
/// meet and one lane at a time never does (a lane that met leaves its marker for the
/// other to see; one that was alone removes it).
fn meeting_check() -> String {
    let command = "h=$(basename $PWD); touch ../in-$h; n=0; while [ $(ls ../in-* | wc -l) -lt 2 ] && [ $n -lt 10 ]; do sleep 0.1; n=$((n+1)); done; c=$(ls ../in-* | wc -l); echo $c >> ../met; [ $c -ge 2 ] || rm ../in-$h; echo 5";
    format!("        - name: meet\n          run: '{command}'\n          every: 20ms\n          compare: median\n          baseline: b1\n")
}

#[tokio::test]
async fn a_checks_connections_count_against_the_connections_limit() {
    let playbook = canary_playbook(&meeting_check(), "20ms");
    let one = playbook.replace(
        "  max_failures: 0\n",
        "  max_failures: 0\n  connections: 1\n",
    );
    let (report, _events, run) = run_to_end(&one).await;
    assert_eq!(report.exit, Exit::Success);
    let met = std::fs::read_to_string(run.dir.path().join("hosts/met")).unwrap();
    assert_eq!(
        met.lines().collect::<Vec<_>>(),
        vec!["1", "1"],
        "one connection: canary, then baseline"
    );
    // With room for two, the canary and the baseline are checked side by side.
    let (report, _events, run) = run_to_end(&playbook).await;
    assert_eq!(report.exit, Exit::Success);
    let met = std::fs::read_to_string(run.dir.path().join("hosts/met")).unwrap();
    assert_eq!(met.lines().collect::<Vec<_>>(), vec!["2", "2"]);
}

#[tokio::test]
async fn passing_checks_before_the_approve_question_let_it_be_asked() {
    let playbook = canary_playbook(
        "        - { name: deployed, run: \"grep -q deploy log\" }\n",
        "1h",
    )
    .replace("      pause: 1h\n", "      approve: true\n");
    let (report, events, _run) = run_to_end(&playbook).await;
    assert_eq!(
        verify_events(&events),
        vec![("deployed".into(), "a1".into(), true)]
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::GateWaiting { reason, .. } if reason == "approve")));
    assert_eq!(report.exit, Exit::AwaitingApproval);
}

#[tokio::test]
async fn an_interrupt_during_a_long_pause_ends_the_run_without_waiting_it_out() {
    let text = "name: p\nstrategy:\n  waves:\n    - { name: first, regions: [r2], pause: 1h }\n    - { name: rest, regions: [\"*\"] }\nsteps:\n  - { name: one, run: 'echo one >> log' }\n";
    let mut run = start(text);
    let mut seen = Vec::new();
    run.until(
        &mut seen,
        |e| matches!(e, Event::GateWaiting { reason, .. } if reason == "pause"),
    )
    .await;
    run.interrupts.send(1).unwrap();
    // A run that waited the hour out would hang this test.
    let (report, _, run) = run.finish(seen).await;
    assert_eq!(report.exit, Exit::Interrupted);
    assert_eq!(run.read("b1", "log").as_deref(), Some("one\n"));
    assert!(!run.host_dir("a1").exists(), "the next wave never starts");
}
