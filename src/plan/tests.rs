use super::*;
use crate::playbook;
use std::path::Path;

const INVENTORY: &str = r#"
name: t
defaults: { vars: { mail_root: /srv/mail } }
regions:
  cn-south:
    clusters:
      gz-mx: { roles: [mta], hosts: { "mx-gz-[1:3]": , mx-gz-9: { roles: [canary] } } }
      gz-st: { roles: [store], hosts: { "st-gz-[1:2]": } }
  eu-west:
    clusters:
      ams-mx: { roles: [mta], hosts: { "mx-ams-[1:2]": } }
      ams-st: { roles: [store], hosts: { st-ams-1: } }
"#;

fn plan_with(playbook_text: &str, options: PlanOptions) -> Result<Plan, String> {
    let inventory = crate::inventory::parse(Path::new("inv.yaml"), INVENTORY).unwrap();
    let playbook =
        playbook::parse(Path::new("pb.yaml"), playbook_text).map_err(|e| e.to_string())?;
    build(Arc::new(inventory), Arc::new(playbook), &options).map_err(|e| e.to_string())
}

fn plan(playbook_text: &str) -> Plan {
    plan_with(playbook_text, PlanOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn node(plan: &Plan, label: &str) -> NodeId {
    plan.graph
        .node_indices()
        .find(|n| plan.label(*n) == label)
        .unwrap_or_else(|| panic!("no node {label}"))
}

/// Labels of the tasks `label` waits for, looking through joins.
fn waits_for(plan: &Plan, label: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack: Vec<NodeId> = plan.dependencies(node(plan, label)).collect();
    while let Some(n) = stack.pop() {
        match plan.graph[n] {
            Node::Task(_) => out.push(plan.label(n)),
            Node::Join { .. } => stack.extend(plan.dependencies(n)),
            Node::Gate(_) => out.push(plan.label(n)),
        }
    }
    out.sort();
    out
}

const FLOW: &str = r#"
name: flow
steps:
  - { name: stage, hosts: mta, run: "mkdir -p {{ mail_root }}" }
  - { name: switch, hosts: mta, needs: [stage], run: "ln -s a b" }
  - { name: schema, hosts: store, per: region, needs: [switch], run: "migrate" }
  - { name: index, hosts: store, needs: [stage], run: "reindex" }
  - { name: announce, per: run, needs: [schema], run: "echo done" }
  - { name: verify, hosts: mta, needs: [{ step: schema, scope: run }], run: "true" }
"#;

#[test]
fn needs_scoping() {
    let plan = plan(FLOW);
    // same host
    assert_eq!(waits_for(&plan, "switch@mx-gz-1"), vec!["stage@mx-gz-1"]);
    // per region waits for every task of the region
    assert_eq!(
        waits_for(&plan, "schema@cn-south"),
        vec![
            "switch@mx-gz-1",
            "switch@mx-gz-2",
            "switch@mx-gz-3",
            "switch@mx-gz-9"
        ]
    );
    // per-host step whose need does not run on that host: the region's tasks
    assert_eq!(
        waits_for(&plan, "index@st-ams-1"),
        vec!["stage@mx-ams-1", "stage@mx-ams-2"]
    );
    // per run waits for everything
    assert_eq!(
        waits_for(&plan, "announce@run"),
        vec!["schema@cn-south", "schema@eu-west"]
    );
    // scope: run
    assert_eq!(
        waits_for(&plan, "verify@mx-ams-2"),
        vec!["schema@cn-south", "schema@eu-west"]
    );
    // per region runs on the first host by name
    let schema = plan.task(node(&plan, "schema@cn-south")).unwrap();
    assert_eq!(plan.inventory.hosts[schema.host].name, "st-gz-1");
    assert_eq!(plan.task_count(), 6 + 6 + 2 + 3 + 1 + 6);
}

#[test]
fn ready_dependents_and_rollback_order() {
    let plan = plan(FLOW);
    let ready: Vec<String> = plan
        .ready_at_start()
        .into_iter()
        .map(|n| plan.label(n))
        .collect();
    assert!(ready.contains(&"stage@mx-gz-1".to_string()));
    assert!(!ready.iter().any(|l| l.starts_with("switch")));
    let stage = node(&plan, "stage@mx-gz-1");
    let dependents: Vec<String> = plan.dependents(stage).map(|n| plan.label(n)).collect();
    assert!(dependents.contains(&"switch@mx-gz-1".to_string()));
    let host = plan.inventory.host_id("mx-gz-1").unwrap();
    let tasks = plan.tasks_of_host(host).to_vec();
    let forward: Vec<String> = tasks.iter().map(|n| plan.label(*n)).collect();
    assert_eq!(
        forward,
        vec!["stage@mx-gz-1", "switch@mx-gz-1", "verify@mx-gz-1"]
    );
    let back: Vec<String> = plan
        .rollback_order(&tasks)
        .iter()
        .map(|n| plan.label(*n))
        .collect();
    assert_eq!(
        back,
        vec!["verify@mx-gz-1", "switch@mx-gz-1", "stage@mx-gz-1"]
    );
    let clusters = plan.hosts_by_cluster();
    assert_eq!(clusters.len(), 4);
}

const WAVES: &str = r#"
name: waves
strategy:
  waves:
    - { name: canary, regions: [cn-south], hosts: canary, pause: 10m }
    - { name: china, regions: ["cn-*"] }
    - { name: world, regions: ["*"] }
steps:
  - { name: stage, run: "true", estimate: 10s }
  - { name: switch, needs: [stage], run: "true", estimate: 5s }
"#;

#[test]
fn wave_barriers() {
    let plan = plan(WAVES);
    let sizes: Vec<usize> = plan.waves.iter().map(|w| w.hosts.len()).collect();
    assert_eq!(sizes, vec![1, 5, 3]);
    // a wave-2 task waits for the gate of wave 1, which waits for every wave-1 task
    let deps = waits_for(&plan, "stage@mx-gz-1");
    assert_eq!(deps, vec!["gate:canary"]);
    let gate = plan.waves[0].gate;
    let into_gate: Vec<String> = plan.dependencies(gate).map(|n| plan.label(n)).collect();
    assert!(into_gate.contains(&"switch@mx-gz-9".to_string()));
    assert!(into_gate.contains(&"stage@mx-gz-9".to_string()));
    let ready: Vec<String> = plan
        .ready_at_start()
        .into_iter()
        .map(|n| plan.label(n))
        .collect();
    assert_eq!(ready, vec!["stage@mx-gz-9"]);
}

#[test]
fn limit_keeps_gates_in_order() {
    let plan = plan_with(
        WAVES,
        PlanOptions {
            limit: Some("eu-west".into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(plan.task_count(), 6);
    let ready: Vec<String> = plan
        .ready_at_start()
        .into_iter()
        .map(|n| plan.label(n))
        .collect();
    assert_eq!(ready, vec!["gate:canary"]);
}

#[test]
fn critical_path() {
    let plan = plan(WAVES);
    let path = plan.critical_path(|n| plan.estimated_duration(n));
    // canary stage+switch, 10m pause, china stage+switch, world stage+switch
    assert_eq!(path.tasks, 6);
    assert_eq!(path.duration, Duration::from_secs(600 + 3 * 15));
    let labels: Vec<String> = path.nodes.iter().map(|n| plan.label(*n)).collect();
    assert_eq!(labels.first().unwrap(), "stage@mx-gz-9");
    assert!(labels.contains(&"gate:canary".to_string()));
}

#[test]
fn cycle_is_reported_as_a_path() {
    let err = plan_with(
        r#"
name: c
steps:
  - { name: stage, needs: [switch], run: "true" }
  - { name: switch, needs: [stage], run: "true" }
  - { name: solo, needs: [solo], run: "true" }
"#,
        PlanOptions::default(),
    )
    .unwrap_err();
    assert!(
        err.contains("dependency cycle: stage -> switch -> stage"),
        "{err}"
    );
    assert!(err.contains("dependency cycle: solo -> solo"), "{err}");
    assert!(
        err.contains("remove `stage` from the `needs` of step `switch`"),
        "{err}"
    );
}

#[test]
fn wave_and_pattern_and_variable_errors() {
    let err = plan_with(
        r#"
name: bad
strategy:
  waves:
    - { name: canary, regions: [cn-suoth] }
    - { name: china, regions: ["cn-*"] }
    - { name: again, regions: ["cn-*"] }
steps:
  - { name: stage, hosts: mtaa, run: "true" }
  - { name: switch, run: "ln -s {{ releese }} {{ mail_root }}" }
"#,
        PlanOptions::default(),
    )
    .unwrap_err();
    for expected in [
        "wave `canary`: region `cn-suoth` matches no region",
        "did you mean `cn-south`?",
        "wave `again` takes no host",
        "region `eu-west` (3 hosts) is in no wave",
        "step `stage`: host pattern `mtaa`: `mtaa` matches no host or group",
        "did you mean `mta`?",
        "step `switch`: variable `releese` is not defined for host `mx-gz-1` (and 5 more hosts)",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in\n{err}");
    }
}

#[test]
fn need_into_a_later_wave_is_an_error() {
    let err = plan_with(
        r#"
name: bad
strategy:
  waves:
    - { name: cn, regions: ["cn-*"] }
    - { name: world, regions: ["*"] }
steps:
  - { name: schema, hosts: store, per: run, run: "true" }
  - { name: later, hosts: "eu-west:&store", run: "true" }
  - { name: early, hosts: mta, needs: [{ step: later, scope: run }], run: "true" }
"#,
        PlanOptions::default(),
    )
    .unwrap_err();
    assert!(err.contains("step `early` needs `later`"), "{err}");
}

#[test]
fn captures_count_as_defined_where_captured() {
    let plan = plan(
        r#"
name: cap
steps:
  - { name: previous, run: "readlink current || true", capture: previous }
  - { name: switch, needs: [previous], run: "true", rollback: "ln -sfn {{ previous }} current" }
"#,
    );
    assert_eq!(plan.task_count(), 18);
    let err = plan_with(
        r#"
name: cap
steps:
  - { name: previous, hosts: mta, run: "readlink current || true", capture: previous }
  - { name: switch, run: "true", rollback: "ln -sfn {{ previous }} current" }
"#,
        PlanOptions::default(),
    )
    .unwrap_err();
    assert!(
        err.contains("variable `previous` is not defined for host `st-gz-1`"),
        "{err}"
    );
}

#[test]
fn a_per_run_step_goes_to_the_wave_of_what_it_needs() {
    let plan = plan(
        r#"
name: announce
strategy:
  waves:
    - { name: canary, regions: [cn-south], hosts: canary }
    - { name: world, regions: ["*"] }
steps:
  - { name: health, run: "true" }
  - { name: announce, per: run, needs: [{ step: health, scope: run }], run: "echo done" }
  - { name: prepare, per: run, run: "echo first" }
"#,
    );
    let announce = plan.task(node(&plan, "announce@run")).unwrap();
    assert_eq!(plan.waves[announce.wave].name, "world");
    let health = waits_for(&plan, "announce@run")
        .into_iter()
        .filter(|l| l.starts_with("health@"))
        .count();
    assert_eq!(health, 9, "every health task");
    let prepare = plan.task(node(&plan, "prepare@run")).unwrap();
    assert_eq!(plan.waves[prepare.wave].name, "canary");
    assert_eq!(plan.inventory.hosts[prepare.host].name, "mx-gz-9");
}

#[test]
fn a_delegate_is_resolved_per_target_with_the_targets_own_context() {
    // A host name rendered from the target's region, and a pattern built from it.
    let p = plan(
        r#"
name: d
steps:
  - name: drain
    hosts: mta
    delegate: "st-{{ 'gz' if host.region == 'cn-south' else 'ams' }}-1"
    run: "lbctl off {{ host.name }}"
  - name: note
    hosts: "mta:&eu-west"
    delegate: "store:&{{ host.region }}"
    run: "true"
  - { name: plain, hosts: mta, run: "true" }
"#,
    );
    let host = |name: &str| p.inventory.host_id(name).unwrap();
    let task = |label: &str| *p.task(node(&p, label)).unwrap();
    for (mx, lb) in [
        ("mx-gz-1", "st-gz-1"),
        ("mx-gz-9", "st-gz-1"),
        ("mx-ams-2", "st-ams-1"),
    ] {
        let drain = task(&format!("drain@{mx}"));
        assert_eq!(drain.delegate, Some(host(lb)), "{mx}");
        assert_eq!(drain.runs_on(), RunsOn::Delegate(host(lb)));
        assert_eq!(drain.host, host(mx), "the task still belongs to its target");
    }
    assert_eq!(task("note@mx-ams-1").delegate, Some(host("st-ams-1")));
    assert_eq!(task("plain@mx-gz-1").delegate, None);
    assert_eq!(
        task("plain@mx-gz-1").runs_on(),
        RunsOn::Host(host("mx-gz-1"))
    );
    let turns = delegate_parallelism(&p);
    assert_eq!(turns.get(&host("st-gz-1")), Some(&1));
    assert_eq!(turns.len(), 2);
}

#[test]
fn a_handler_waits_for_its_own_hosts_listened_tasks_and_exists_only_where_they_do() {
    let plan = plan(
        r#"
name: h
steps:
  - { name: conf, hosts: "mx-gz-*", run: "true" }
  - { name: edit, hosts: "mx-gz-1", run: "true" }
  - { name: reload, hosts: mta, listen: [conf, edit], run: "true" }
  - { name: after, hosts: mta, listen: [conf], needs: [{ step: conf, scope: run }], run: "true" }
"#,
    );
    // Only where a listened step has a task: the MTAs of gz, not those of ams.
    let reloads: Vec<String> = plan
        .tasks()
        .filter(|(_, t)| plan.playbook.steps[t.step].name == "reload")
        .map(|(n, _)| plan.label(n))
        .collect();
    assert_eq!(
        reloads,
        [
            "reload@mx-gz-1",
            "reload@mx-gz-2",
            "reload@mx-gz-3",
            "reload@mx-gz-9"
        ]
    );
    // Its own host's tasks only (no fallback to the region's, as a `needs` would).
    assert_eq!(
        waits_for(&plan, "reload@mx-gz-1"),
        ["conf@mx-gz-1", "edit@mx-gz-1"]
    );
    assert_eq!(waits_for(&plan, "reload@mx-gz-2"), ["conf@mx-gz-2"]);
    // A run-wide `needs` on what it listens to still waits for all of it, and the own
    // host's task is a direct dependency (what the scheduler asks about a change).
    let after = node(&plan, "after@mx-gz-2");
    let own = node(&plan, "conf@mx-gz-2");
    assert!(plan.dependencies(after).any(|d| d == own));
    assert_eq!(waits_for(&plan, "after@mx-gz-2").len(), 5);
}
