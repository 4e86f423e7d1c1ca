//! `pony plan`: waves, regions, clusters, hosts and task counts, and the critical path
//! (in tasks, and in time with `--estimate`).

use super::{load_plan, thousands};
use crate::cli::PlanArgs;
use crate::exit::Exit;
use crate::plan::{Node, Plan};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

pub fn run(state_dir: &Path, args: &PlanArgs, estimate: bool) -> anyhow::Result<Exit> {
    let mut plan = load_plan(args)?;
    if estimate {
        plan.learned_durations = learned_durations(state_dir, &plan);
    }
    print!("{}", describe(&plan, estimate));
    Ok(Exit::Success)
}

/// Per step, the median task duration in the latest finished runs of the same playbook
/// (up to five) in the state directory.
pub fn learned_durations(state_dir: &Path, plan: &Plan) -> Vec<Option<Duration>> {
    use crate::state::journal::{read, Record, TaskState};
    let mut samples: Vec<Vec<u64>> = vec![Vec::new(); plan.playbook.steps.len()];
    let mut runs: Vec<std::path::PathBuf> = std::fs::read_dir(state_dir.join("runs"))
        .map(|dir| dir.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    runs.sort();
    let mut used = 0;
    for run in runs.iter().rev() {
        let Ok(records) = read(&run.join("journal.jsonl")) else {
            continue;
        };
        let same = records.iter().any(
            |r| matches!(r, Record::RunStarted { playbook, .. } if *playbook == plan.playbook.name),
        );
        if !same {
            continue;
        }
        for record in &records {
            if let Record::TaskFinished {
                label,
                state: TaskState::Succeeded,
                duration_ms,
                ..
            } = record
            {
                let step = label.split('@').next().unwrap_or_default();
                if let Some(id) = plan.playbook.step_id(step) {
                    samples[id].push(*duration_ms);
                }
            }
        }
        used += 1;
        if used == 5 {
            break;
        }
    }
    samples
        .into_iter()
        .map(|mut ms| {
            ms.sort_unstable();
            ms.get(ms.len() / 2).map(|m| Duration::from_millis(*m))
        })
        .collect()
}

pub fn describe(plan: &Plan, estimate: bool) -> String {
    let inventory = &plan.inventory;
    let strategy = &plan.playbook.strategy;
    let mut out = String::new();
    let limits = plan.cluster_limits();
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
    writeln!(
        out,
        "strategy: max_unavailable {} per cluster, max_failures {}, on_failure {}, connections {}",
        strategy.max_unavailable,
        strategy.max_failures,
        serde_json::to_value(strategy.on_failure)
            .unwrap()
            .as_str()
            .unwrap_or(""),
        strategy.connections
    )
    .unwrap();
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
                let window = limits[cluster].max_unavailable;
                writeln!(
                    out,
                    "    {:<14} {:>7} hosts {:>8} tasks   {} at once",
                    inventory.clusters[cluster].name,
                    thousands(hosts),
                    thousands(tasks),
                    window
                )
                .unwrap();
            }
        }
    }
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
    }
    let path = plan.critical_path(|n| plan.estimated_duration(n));
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
    if estimate {
        let missing: Vec<&str> = plan
            .playbook
            .steps
            .iter()
            .enumerate()
            .filter(|(i, s)| {
                s.estimate.is_none() && plan.learned_durations.get(*i).copied().flatten().is_none()
            })
            .map(|(_, s)| s.name.as_str())
            .collect();
        let learned: Vec<String> = plan
            .playbook
            .steps
            .iter()
            .zip(&plan.learned_durations)
            .filter_map(|(s, d)| match (s.estimate, d) {
                (None, Some(d)) => Some(format!(
                    "{} {}",
                    s.name,
                    humantime::format_duration(Duration::from_millis(d.as_millis() as u64))
                )),
                _ => None,
            })
            .collect();
        writeln!(
            out,
            "estimate: critical path {} with unlimited parallelism; {} under max_unavailable",
            humantime::format_duration(round(path.duration)),
            humantime::format_duration(round(estimate_with_limits(plan)))
        )
        .unwrap();
        if !learned.is_empty() {
            writeln!(
                out,
                "  (from earlier runs' journals: {})",
                learned.join(", ")
            )
            .unwrap();
        }
        if !missing.is_empty() {
            writeln!(
                out,
                "  (steps without `estimate:` count as 0s: {})",
                missing.join(", ")
            )
            .unwrap();
        }
    }
    out
}

/// Whole seconds, or tenths of a second below a minute.
fn round(d: Duration) -> Duration {
    if d < Duration::from_secs(60) {
        Duration::from_millis(d.as_millis() as u64 / 100 * 100)
    } else {
        Duration::from_secs(d.as_secs())
    }
}

/// The duration under `max_unavailable`: per wave, each cluster works through its hosts
/// `window` at a time, each host taking the sum of its tasks' estimates; waves add up,
/// with their pauses.
pub fn estimate_with_limits(plan: &Plan) -> Duration {
    let strategy = &plan.playbook.strategy;
    let limits = plan.cluster_limits();
    let mut total = Duration::ZERO;
    for (w, wave) in plan.waves.iter().enumerate() {
        let mut per_cluster: BTreeMap<usize, (usize, Duration)> = BTreeMap::new();
        for &h in &wave.hosts {
            let host_time: Duration = plan
                .tasks_of_host(h)
                .iter()
                .map(|n| plan.estimated_duration(&plan.graph[*n]))
                .sum();
            let entry = per_cluster
                .entry(plan.inventory.hosts[h].cluster)
                .or_default();
            entry.0 += 1;
            entry.1 = entry.1.max(host_time);
        }
        let wave_time = per_cluster
            .iter()
            .map(|(cluster, (hosts, host_time))| {
                let window = limits[*cluster].max_unavailable;
                *host_time * hosts.div_ceil(window) as u32
            })
            .max()
            .unwrap_or_default();
        total += wave_time + strategy.waves[w].pause.unwrap_or_default();
    }
    total
}
