//! `pony check`: validate and print one summary line.

use super::{load_plan, thousands};
use crate::cli::PlanArgs;
use crate::exit::Exit;

pub fn run(args: &PlanArgs) -> anyhow::Result<Exit> {
    let plan = load_plan(args)?;
    let regions: std::collections::BTreeSet<usize> = plan
        .waves
        .iter()
        .flat_map(|w| &w.hosts)
        .map(|&h| plan.inventory.hosts[h].region)
        .collect();
    let clusters: std::collections::BTreeSet<usize> = plan
        .waves
        .iter()
        .flat_map(|w| &w.hosts)
        .map(|&h| plan.inventory.hosts[h].cluster)
        .collect();
    println!(
        "ok: {} on {}: {} hosts, {} regions, {} clusters, {} steps, {} tasks in {} waves",
        plan.playbook.name,
        plan.inventory.name,
        thousands(plan.host_count()),
        regions.len(),
        clusters.len(),
        plan.playbook.steps.len(),
        thousands(plan.task_count()),
        plan.waves.len(),
    );
    Ok(Exit::Success)
}
