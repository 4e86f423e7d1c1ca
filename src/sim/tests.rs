//! The simulation runs the deploy scheduler: its limits, gates, windows, failures and
//! rollbacks show up in virtual time with exact, hand-computed totals.

use super::durations::{Durations, Learned};
use super::report::{self, Simulation};
use super::*;
use chrono::TimeZone;
use std::path::Path;

const INVENTORY: &str = r#"
name: t
regions:
  r1:
    tz: Asia/Shanghai
    clusters:
      c1: { hosts: { "a[1:5]": } }
  r2:
    tz: Europe/Berlin
    clusters:
      c2: { hosts: { "b[1:2]": } }
"#;

fn plan(playbook: &str) -> Arc<Plan> {
    Arc::new(crate::plan::from_yaml(INVENTORY, playbook))
}

/// 20:00 UTC: 04:00 in Shanghai, 21:00 in Berlin.
fn options() -> SimOptions {
    SimOptions {
        seed: 7,
        fail: 0.0,
        unreachable: 0.0,
        failing: Vec::new(),
        start: Utc.with_ymd_and_hms(2026, 3, 10, 20, 0, 0).unwrap(),
        approve_after: Duration::ZERO,
        connections: None,
    }
}

fn run(plan: &Arc<Plan>, durations: Durations, options: &SimOptions) -> Simulation {
    let sources = durations.sources(plan);
    let trace = simulate(plan.clone(), durations, options);
    Simulation::new(plan, &trace, options, sources)
}

fn run_fixed(playbook: &str, options: &SimOptions) -> Simulation {
    let plan = plan(playbook);
    run(&plan, Durations::fixed(&plan), options)
}

const SECOND: u64 = 1000;

#[test]
fn a_clusters_slots_pace_its_hosts() {
    // c1: 5 hosts, 40% → 2 slots: three rounds of 10s + 5s; c2 (2 hosts, 1 slot): two.
    let sim = run_fixed(
        "name: e\nstrategy: { max_unavailable: 40% }\nsteps:\n  - { name: a, run: x, estimate: 10s }\n  - { name: b, run: y, estimate: 5s, needs: [a] }\n",
        &options(),
    );
    assert_eq!(sim.total_ms, 45 * SECOND);
    assert_eq!(sim.outcome, "succeeded");
    assert_eq!(sim.host_outcomes.get("ok"), Some(&7));
    let c1 = &sim.regions[0].clusters[0];
    assert_eq!(
        (c1.slots, c1.bars[0].start_ms, c1.bars[0].end_ms),
        (2, 0, 45 * SECOND)
    );
    assert_eq!(
        sim.bound_most().unwrap().limit,
        report::SLOTS,
        "{:?}",
        sim.bound_by
    );
    let path: Vec<&str> = sim.critical_path.iter().map(|p| p.what.as_str()).collect();
    assert_eq!(path.len(), 6, "three hosts one after the other: {path:?}");
}

#[test]
fn connections_bind_every_cluster_together() {
    let sim = run_fixed(
        "name: e\nstrategy: { max_unavailable: 100%, connections: 1 }\nsteps:\n  - { name: a, run: x, estimate: 10s }\n",
        &options(),
    );
    assert_eq!(sim.total_ms, 70 * SECOND, "7 hosts one at a time");
    assert_eq!(sim.bound_most().unwrap().limit, report::CONNECTIONS);
}

#[test]
fn gates_windows_and_approvals_take_virtual_time() {
    // Wave one (r1) pauses 30m after its 10s; wave two (r2, Berlin) waits for its
    // 02:00 local window: 20:00 UTC is 21:00 there, so it opens 5h after the start.
    let playbook = r#"name: e
strategy:
  max_unavailable: 100%
  waves:
    - { name: one, regions: [r1], pause: 30m, approve: true }
    - { name: two, regions: [r2], window: "02:00-05:00 local" }
steps:
  - { name: a, run: x, estimate: 10s }
"#;
    let mut options = options();
    options.approve_after = Duration::from_secs(600);
    let sim = run_fixed(playbook, &options);
    assert_eq!(sim.total_ms, (5 * 3600 + 10) * SECOND);
    let gates: Vec<(&str, u64, u64)> = sim
        .gates
        .iter()
        .map(|g| (g.kind.as_str(), g.start_ms, g.end_ms))
        .collect();
    assert_eq!(
        gates,
        vec![
            // First the soak, then the question (docs/playbook.md, SPEC §3).
            ("soak", 10 * SECOND, 1810 * SECOND),
            ("approve", 1810 * SECOND, 2410 * SECOND),
            ("window", 2410 * SECOND, 5 * 3600 * SECOND),
        ]
    );
    assert_eq!(sim.end, "2026-03-11T01:00:10Z");
    let waits: Vec<&str> = sim
        .critical_path
        .iter()
        .map(|p| p.what.as_str())
        .filter(|w| w.contains("waits"))
        .collect();
    assert_eq!(
        waits,
        vec!["b1 waits for the window 02:00-05:00 local (Europe/Berlin)"]
    );
    assert_eq!(sim.bound_most().unwrap().limit, report::WINDOWS);
}

#[test]
fn failures_cost_budgets_and_rollbacks_and_the_same_seed_gives_the_same_result() {
    let playbook = "name: e\nstrategy: { max_unavailable: 100%, max_failures: 0, on_failure: rollback-region }\nsteps:\n  - { name: a, run: x, estimate: 10s, rollback: undo }\n  - { name: b, run: y, needs: [a], rollback: undo }\n";
    let plan = plan(playbook);
    let file = "b: { duration: 20s..40s, rollback: 3s }\n";
    let durations = || {
        Durations::build(
            &plan,
            Some((Path::new("d.yaml"), file)),
            &Learned::default(),
        )
        .unwrap()
    };
    let mut options = options();
    options.fail = 0.3;
    let first = run(&plan, durations(), &options);
    let again = run(&plan, durations(), &options);
    assert_eq!(
        serde_json::to_string(&first).unwrap(),
        serde_json::to_string(&again).unwrap()
    );
    assert!(first.failures.failed_tasks > 0, "{first:?}");
    assert!(!first.failures.rollbacks.is_empty());
    assert!(
        first.host_outcomes.contains_key("rolled_back"),
        "{:?}",
        first.host_outcomes
    );
    assert_eq!(first.outcome, "failed_rolled_back");
    // No failures: every host takes 10s + its b (20..40s), all at once.
    options.fail = 0.0;
    let clean = run(&plan, durations(), &options);
    assert!(
        (30 * SECOND..=50 * SECOND).contains(&clean.total_ms),
        "{}",
        clean.total_ms
    );
    options.seed = 8;
    let other = run(&plan, durations(), &options);
    assert_ne!(
        clean.total_ms, other.total_ms,
        "another seed draws other durations"
    );
}

#[test]
fn an_unreachable_host_costs_its_connect_attempts_and_is_skipped() {
    // One attempt and three retries of 10s each, with 0.5s + 1s + 2s of backoff.
    let playbook = "name: e\nstrategy: { max_unavailable: 100%, unreachable: skip }\nsteps:\n  - { name: a, run: x, estimate: 10s }\n";
    let mut options = options();
    options.unreachable = 1.0;
    let sim = run_fixed(playbook, &options);
    assert_eq!(sim.host_outcomes.get("unreachable"), Some(&7));
    assert_eq!(sim.total_ms, 43_500);
}

#[test]
fn retries_and_until_polls_run_as_deploy_runs_them() {
    // Every attempt fails: 1 + 2 retries of 10s with 5s between them.
    let playbook = "name: e\nstrategy: { max_unavailable: 100% }\nsteps:\n  - { name: a, run: x, estimate: 10s, retries: 2, retry_delay: 5s }\n";
    let mut options = options();
    options.fail = 1.0;
    let sim = run_fixed(playbook, &options);
    assert_eq!(sim.total_ms, 40 * SECOND);
    assert_eq!(sim.failures.failed_tasks, 7);
}

#[test]
fn guards_uploads_probes_and_verify_checks_take_their_durations_and_pass() {
    // Per host: an upload (10s, its `creates` guard says not there yet), then a probe
    // (5s); wave one soaks 2m with a probe check and a compare check every minute.
    let playbook = r#"name: e
strategy:
  max_unavailable: 100%
  waves:
    - name: one
      regions: [r1]
      pause: 2m
      verify:
        - { name: smtp, probe: { smtp: { port: 25 } }, every: 1m }
        - { name: deferred, run: "postqueue -j | grep -c deferred", every: 1m, compare: median, baseline: "b*" }
    - { name: two, regions: [r2] }
steps:
  - { name: put, upload: { src: Cargo.toml, dest: /tmp/x }, creates: /tmp/x, estimate: 10s }
  - { name: smtp, needs: [put], probe: { smtp: { port: 25 } }, estimate: 5s }
"#;
    let sim = run_fixed(playbook, &options());
    assert_eq!(sim.outcome, "succeeded", "{sim:?}");
    assert_eq!(sim.total_ms, (15 + 120 + 15) * SECOND);
    assert_eq!(sim.host_outcomes.get("ok"), Some(&7));
}

#[test]
fn a_window_that_closes_holds_the_hosts_still_queued_for_a_slot() {
    // 20:00 UTC is 04:00 in Shanghai: r1's one-minute window is open at the start and
    // closes at 60 s. With one slot and 25 s per host, a1, a2 and a3 start inside it
    // (0, 25, 50 s); a4 and a5 were queued for the slot when it closed and wait for the
    // next day's window (24 h after the start), one after the other again.
    let playbook = r#"name: e
strategy:
  max_unavailable: 1
  waves: [{ name: all, regions: ["*"], window: "04:00-04:01 Asia/Shanghai" }]
steps:
  - { name: a, run: x, estimate: 25s }
"#;
    let plan = plan(playbook);
    let trace = simulate(plan.clone(), Durations::fixed(&plan), &options());
    let started = |host: &str| {
        let (node, _) = plan
            .tasks()
            .find(|(_, t)| plan.inventory.hosts[t.host].name == host)
            .unwrap();
        trace.task_start[node.index()].unwrap()
    };
    let day = 24 * 3600 * SECOND;
    let starts: Vec<u64> = ["a1", "a2", "a3", "a4", "a5"]
        .iter()
        .map(|h| started(h))
        .collect();
    assert_eq!(
        starts,
        vec![0, 25 * SECOND, 50 * SECOND, day, day + 25 * SECOND],
        "no host starts after the window closed"
    );
}

/// The dry run's transport: the scheduler's calls are written down per host and task, a
/// guard answered "not done" so the action is sent too, and nothing else happens.
#[test]
fn the_recording_transport_writes_down_each_tasks_guard_and_action() {
    use super::record::{Call, Recording, RecordingOpener};
    let plan = plan(
        "name: r\nstrategy: { max_unavailable: 1 }\nsteps:\n  - { name: a, run: echo first-step, unless: test -e done-already }\n  - { name: b, run: echo second-step, needs: [a] }\n",
    );
    let recording = Recording::new(plan.clone());
    let rehearsal = Rehearsal {
        start: options().start,
        approve_after: Duration::ZERO,
        connections: 10,
        rollback_pace: plan.playbook.strategy.rollback_pace,
    };
    let trace = rehearse(
        plan.clone(),
        Arc::new(RecordingOpener(recording.clone())),
        &rehearsal,
        |events, started| trace::record(plan.clone(), events, started),
    );
    assert!(trace
        .task_end
        .iter()
        .zip(&trace.task_start)
        .all(|(e, s)| e.is_some() == s.is_some()));
    let recorded = recording.take();
    assert_eq!(
        recorded.len(),
        7 * 3,
        "a: guard + action, b: action, on 7 hosts"
    );
    for (node, task) in plan.tasks() {
        let calls: Vec<&Call> = recorded
            .iter()
            .filter(|r| r.task == Some((node.index(), false)))
            .map(|r| &r.call)
            .collect();
        assert!(
            recorded
                .iter()
                .filter(|r| r.task == Some((node.index(), false)))
                .all(|r| r.host == task.host),
            "a task's calls go to its own host"
        );
        let texts: Vec<&str> = calls
            .iter()
            .map(|c| match c {
                Call::Run(command) => command.as_str(),
                other => panic!("only commands: {other:?}"),
            })
            .collect();
        match plan.playbook.steps[task.step].name.as_str() {
            "a" => {
                assert_eq!(texts.len(), 2, "{texts:?}");
                assert!(texts[0].contains("test -e done-already"), "{texts:?}");
                assert!(texts[1].contains("echo first-step"), "{texts:?}");
            }
            _ => {
                assert_eq!(texts.len(), 1, "{texts:?}");
                assert!(texts[0].contains("echo second-step"), "{texts:?}");
            }
        }
    }
}
