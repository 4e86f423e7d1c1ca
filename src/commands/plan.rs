//! `pony plan`: waves, regions, clusters, hosts and task counts, and the critical path
//! in tasks; with `--estimate`, the short form of a simulation (`pony simulate`: the
//! deploy scheduler in virtual time). It only prints: the numbers come from the plan
//! ([`Plan::cluster_limits`]) and [`crate::sim`].

use super::{load_plan, thousands};
use crate::cli::PlanArgs;
use crate::exit::Exit;
use crate::plan::estimate::{self, LEARNED_RUNS};
use crate::plan::{Node, Plan};
use crate::playbook::{OnControllerLoss, RollbackPace, Unreachable};
use crate::sim::durations::{Durations, Learned, Source};
use crate::sim::report::Simulation;
use crate::sim::SimOptions;
use crate::state::runs;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub fn run(state_dir: &Path, args: &PlanArgs, with_estimate: bool) -> anyhow::Result<Exit> {
    let mut plan = load_plan(args)?.print_warnings();
    if !with_estimate {
        crate::out!("{}", describe(&plan, false));
        return Ok(Exit::Success);
    }
    let (tasks, rollbacks) = runs::step_samples(state_dir, &plan.playbook.name, LEARNED_RUNS);
    plan.learned_durations = estimate::learned_durations(&plan, tasks.iter().cloned());
    let plan = Arc::new(plan);
    let durations = Durations::build(&plan, None, &Learned { tasks, rollbacks })?;
    let options = SimOptions {
        seed: 1,
        fail: 0.0,
        unreachable: 0.0,
        failing: Vec::new(),
        start: chrono::Utc::now(),
        approve_after: Duration::ZERO,
        connections: None,
    };
    let simulation = super::simulate::simulate(plan.clone(), durations, &options);
    crate::out!(
        "{}{}",
        describe(&plan, false),
        estimate_summary(&simulation)
    );
    Ok(Exit::Success)
}

/// `plan --estimate`: the short form of `pony simulate`'s answer (one answer: the same
/// scheduler, the same durations).
fn estimate_summary(sim: &Simulation) -> String {
    let mut out = String::new();
    let bound = sim
        .bound_most()
        .map(|b| format!("; bound most by {}", b.limit))
        .unwrap_or_default();
    writeln!(
        out,
        "estimate: {} (simulated with the deploy scheduler, starting now{bound})",
        crate::duration::full(Duration::from_millis(sim.total_ms))
    )
    .unwrap();
    let mut by_source: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for d in &sim.durations {
        let (key, text) = match d.source {
            Source::Journal => (
                "from earlier runs' journals",
                format!("{} {}", d.step, d.durations),
            ),
            Source::Estimate => ("from `estimate:`", d.step.clone()),
            Source::Default => (
                "without `estimate:` or journal samples, 10s each",
                d.step.clone(),
            ),
            Source::File => ("from a durations file", d.step.clone()),
        };
        by_source.entry(key).or_default().push(text);
    }
    for (source, steps) in by_source {
        writeln!(out, "  ({source}: {})", steps.join(", ")).unwrap();
    }
    writeln!(
        out,
        "  (`pony simulate` shows waves, regions, the binding limit, the critical path and the timeline)"
    )
    .unwrap();
    out
}

/// The plan in words; `split`: the run is split between controllers by `--regions`. Only
/// then, or when the playbook chose `on_controller_loss`, does it say what a lost
/// controller means (a run with one controller has none to lose).
pub fn describe(plan: &Plan, split: bool) -> String {
    let inventory = &plan.inventory;
    let mut out = String::new();
    let mut tasks_per_host = vec![0usize; inventory.hosts.len()];
    for (_, task) in plan.tasks() {
        tasks_per_host[task.host] += 1;
    }
    writeln!(
        out,
        "plan: {} on {} — {} hosts, {} tasks",
        plan.playbook.name,
        inventory.name,
        thousands(plan.host_count()),
        thousands(plan.task_count())
    )
    .unwrap();
    describe_strategy(&mut out, plan, &tasks_per_host, split);
    describe_waves(&mut out, plan, &tasks_per_host);
    describe_steps(&mut out, plan);
    describe_critical_path(&mut out, plan);
    out
}

/// The strategy's limits, the failure budgets and policies, the health checks, and what a
/// lost controller means for a split run.
fn describe_strategy(out: &mut String, plan: &Plan, tasks_per_host: &[usize], split: bool) {
    let strategy = &plan.playbook.strategy;
    writeln!(
        out,
        "strategy: max_unavailable {} per cluster, max_failures {}, on_failure {}, connections {}",
        strategy.max_unavailable,
        strategy.max_failures,
        strategy.on_failure.as_str(),
        strategy.connections
    )
    .unwrap();
    let hosts_with_tasks = tasks_per_host.iter().filter(|&&n| n > 0).count();
    let run_budget = match strategy.max_failures_run {
        Some(limit) => format!(
            "max_failures_run {limit} ({} of {hosts_with_tasks} hosts)",
            limit.of(hosts_with_tasks)
        ),
        None => "no max_failures_run".to_string(),
    };
    let unreachable = match (strategy.unreachable, strategy.max_unreachable) {
        (Unreachable::Fail, _) => "unreachable hosts fail".to_string(),
        (Unreachable::Skip, None) => "unreachable hosts skipped".to_string(),
        (Unreachable::Skip, Some(max)) => {
            format!("unreachable hosts skipped (at most {max}, then they fail)")
        }
    };
    let pace = match strategy.rollback_pace {
        RollbackPace::Window => "rollback pace window (each cluster's max_unavailable slots)",
        RollbackPace::All => "rollback pace all (every host of a rollback at once)",
    };
    writeln!(out, "failures: {run_budget}, {unreachable}; {pace}").unwrap();
    let health = &plan.playbook.health;
    if health.checks.is_empty() {
        writeln!(
            out,
            "health: none declared: rollbacks are unverified (nothing checks a host serves after one)"
        )
        .unwrap();
    } else {
        let checks: Vec<String> = health.checks.iter().map(|c| c.describe()).collect();
        writeln!(
            out,
            "health after each deploy and rollback (within {}): {}",
            humantime::format_duration(health.wait),
            checks.join("; ")
        )
        .unwrap();
    }
    let on_loss = match strategy.on_controller_loss {
        OnControllerLoss::Wait => {
            "the others wait for its regions until `pony resume RUN --regions …` takes them"
        }
        OnControllerLoss::Stop => "the others stop as on a first Ctrl-C",
    };
    if split || strategy.on_controller_loss_set {
        writeln!(
            out,
            "split by --regions: a lost controller: {on_loss} (on_controller_loss {})",
            strategy.on_controller_loss.as_str()
        )
        .unwrap();
    }
}

/// Each wave: its gate, budget and checks, then its regions and clusters with how many
/// hosts go (and roll back) at once.
fn describe_waves(out: &mut String, plan: &Plan, tasks_per_host: &[usize]) {
    let inventory = &plan.inventory;
    let strategy = &plan.playbook.strategy;
    let limits = plan.cluster_limits();
    for (w, wave) in plan.waves.iter().enumerate() {
        let spec = &strategy.waves[w];
        let mut gate = Vec::new();
        if let Some(pause) = spec.pause {
            gate.push(format!("pause {}", humantime::format_duration(pause)));
        }
        if spec.approve {
            gate.push("approve".to_string());
        }
        if let Some(window) = &spec.window {
            gate.push(format!("window {}", window.text));
        }
        let gate = if gate.is_empty() {
            String::new()
        } else {
            format!("  then {}", gate.join(", "))
        };
        writeln!(
            out,
            "\nwave {} {}: {} hosts, {} tasks{gate}",
            w + 1,
            wave.name,
            thousands(wave.hosts.len()),
            thousands(wave.hosts.iter().map(|&h| tasks_per_host[h]).sum())
        )
        .unwrap();
        if let Some(limit) = spec.max_failures {
            let with_tasks = wave
                .hosts
                .iter()
                .filter(|&&h| tasks_per_host[h] > 0)
                .count();
            writeln!(
                out,
                "  max_failures {limit} of the wave ({} of {with_tasks} hosts), then on_failure for the whole run",
                limit.of(with_tasks)
            )
            .unwrap();
        }
        for check in &spec.verify {
            writeln!(out, "  verify {}", check.describe()).unwrap();
        }
        let mut regions: BTreeMap<usize, BTreeMap<usize, (usize, usize)>> = BTreeMap::new();
        for &h in &wave.hosts {
            let host = &inventory.hosts[h];
            let entry = regions
                .entry(host.region)
                .or_default()
                .entry(host.cluster)
                .or_default();
            entry.0 += 1;
            entry.1 += tasks_per_host[h];
        }
        for (region, clusters) in regions {
            let hosts: usize = clusters.values().map(|c| c.0).sum();
            let tasks: usize = clusters.values().map(|c| c.1).sum();
            writeln!(
                out,
                "  {:<16} {:>7} hosts {:>8} tasks",
                inventory.regions[region].name,
                thousands(hosts),
                thousands(tasks)
            )
            .unwrap();
            for (cluster, (hosts, tasks)) in clusters {
                let slots = limits[cluster].max_unavailable;
                writeln!(
                    out,
                    "    {:<14} {:>7} hosts {:>8} tasks   {} at once",
                    inventory.clusters[cluster].name,
                    thousands(hosts),
                    thousands(tasks),
                    slots
                )
                .unwrap();
                let rolling_back = match strategy.rollback_pace {
                    RollbackPace::Window => format!("{} at a time", slots.max(1)),
                    RollbackPace::All => "all together".to_string(),
                };
                writeln!(out, "      rollback {rolling_back}").unwrap();
            }
        }
    }
}

/// Each step: how it fans out, its task count, its hosts, what it needs, its delegates.
fn describe_steps(out: &mut String, plan: &Plan) {
    writeln!(out, "\nsteps:").unwrap();
    let mut counts = vec![0usize; plan.playbook.steps.len()];
    for (_, task) in plan.tasks() {
        counts[task.step] += 1;
    }
    for (s, step) in plan.playbook.steps.iter().enumerate() {
        let needs: Vec<&str> = step
            .needs
            .iter()
            .map(|n| plan.playbook.steps[n.step].name.as_str())
            .collect();
        let needs = if needs.is_empty() {
            String::new()
        } else {
            format!("  needs {}", needs.join(", "))
        };
        writeln!(
            out,
            "  {:<18} {:<8} {:>8} tasks  hosts {}{needs}",
            step.name,
            format!("{:?}", step.per).to_lowercase(),
            thousands(counts[s]),
            step.hosts.as_str()
        )
        .unwrap();
        if let Some(origin) = &step.origin {
            writeln!(out, "    from {origin}").unwrap();
        }
        if let Some(note) = crate::plan::render::handler_note(plan, step) {
            writeln!(out, "    {note}").unwrap();
        }
        if let Some(rule) = step.changed_when.describe() {
            writeln!(out, "    {rule}").unwrap();
        }
        // An everyday action says what it ensures (its templates as written).
        if let crate::playbook::Action::Ensure(ensure) = &step.action {
            writeln!(out, "    {}", ensure.describe()).unwrap();
        }
        if step.delegate.is_some() {
            writeln!(out, "    {}", delegates_line(plan, s)).unwrap();
        }
    }
}

/// The longest chain of tasks by estimated duration.
fn describe_critical_path(out: &mut String, plan: &Plan) {
    let path = plan.estimated_critical_path();
    let chain: Vec<String> = path
        .nodes
        .iter()
        .filter(|n| !matches!(plan.graph[**n], Node::Join { .. }))
        .map(|n| plan.label(*n))
        .collect();
    writeln!(
        out,
        "\ncritical path: {} tasks: {}",
        path.tasks,
        chain.join(" -> ")
    )
    .unwrap();
}

/// Where a delegated step's commands run: `delegated to lb-1 (4 targets), lb-2 (3
/// targets); 1 at a time per delegate host`.
fn delegates_line(plan: &Plan, step: usize) -> String {
    let mut per_delegate: BTreeMap<usize, usize> = BTreeMap::new();
    for (_, task) in plan.tasks().filter(|(_, t)| t.step == step) {
        if let Some(delegate) = task.delegate {
            *per_delegate.entry(delegate).or_default() += 1;
        }
    }
    const SHOWN: usize = 5;
    let mut listed: Vec<String> = per_delegate
        .iter()
        .take(SHOWN)
        .map(|(&host, &targets)| {
            format!(
                "{} ({} target{})",
                plan.inventory.hosts[host].name,
                thousands(targets),
                if targets == 1 { "" } else { "s" }
            )
        })
        .collect();
    if per_delegate.len() > SHOWN {
        listed.push(format!("and {} more", per_delegate.len() - SHOWN));
    }
    format!(
        "delegated to {}; {} at a time per delegate host",
        listed.join(", "),
        plan.playbook.steps[step].delegate_parallel
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(strategy: &str) -> Plan {
        crate::plan::from_yaml(
            "name: t\nregions:\n  r1:\n    clusters:\n      c1: { hosts: { h1: , h2: } }\n",
            &format!("name: p\nstrategy: {strategy}\nsteps:\n  - {{ name: s, run: \"true\" }}\n"),
        )
    }

    fn described(strategy: &str) -> String {
        describe(&plan(strategy), true)
    }

    /// `pony plan` of a playbook that chose `on_controller_loss` says what it means.
    #[test]
    fn a_playbook_that_chose_on_controller_loss_gets_its_line() {
        let text = describe(&plan("{ on_controller_loss: stop }"), false);
        assert!(text.contains("(on_controller_loss stop)"), "{text}");
    }

    /// A run with one controller is not split: its plan says nothing of lost controllers.
    #[test]
    fn an_unsplit_plan_says_nothing_of_a_split() {
        let text = describe(&plan("{}"), false);
        assert!(!text.contains("split by --regions"), "{text}");
        assert!(!text.contains("on_controller_loss"), "{text}");
    }

    #[test]
    fn the_plan_says_what_a_lost_controller_of_a_split_run_does() {
        assert!(
            described("{}").contains(
                "split by --regions: a lost controller: the others wait for its regions until `pony resume RUN --regions …` takes them (on_controller_loss wait)"
            ),
            "{}",
            described("{}")
        );
        assert!(
            described("{ on_controller_loss: stop }").contains(
                "split by --regions: a lost controller: the others stop as on a first Ctrl-C (on_controller_loss stop)"
            ),
            "{}",
            described("{ on_controller_loss: stop }")
        );
    }
}
