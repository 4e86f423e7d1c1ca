//! Building the plan: step cycles, wave membership, targets, `needs` scoping, wave gates
//! and template variables, with every problem collected before anything is returned.

use super::templates::{
    check_rendering, check_template_files, check_template_variables, check_verify_templates,
};
use super::validate::step_cycles;
use super::waves::{assign_waves, check_verify_patterns, report_unwaved};
use super::{Node, Plan, Task, WavePlan};
use crate::diag::{Diagnostic, Diagnostics};
use crate::inventory::pattern::{self, HostSet};
use crate::inventory::{HostId, Inventory, RegionId, Vars};
use crate::playbook::{NeedScope, Per, Playbook, StepId};
use petgraph::algo::toposort;
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// What narrows or overrides a plan on the command line.
#[derive(Debug, Default, Clone)]
pub struct PlanOptions {
    /// `--limit`: only these hosts get tasks.
    pub limit: Option<String>,
    /// `--var k=v`: override every other var.
    pub extra_vars: Vars,
}

/// Validates the playbook against the inventory and builds the sealed plan.
pub fn build(
    inventory: Arc<Inventory>,
    playbook: Arc<Playbook>,
    options: &PlanOptions,
) -> Result<Plan, Diagnostics> {
    let file = playbook.file.clone();
    let mut errors = Diagnostics::default();
    // A cycle is reported with everything else; the graph is then built without `needs`.
    let cyclic = match step_cycles(&playbook) {
        Ok(()) => false,
        Err(cycles) => {
            errors.extend(cycles);
            true
        }
    };
    let host_wave = assign_waves(&inventory, &playbook, &mut errors);
    check_verify_patterns(&inventory, &playbook, &mut errors);
    let selected = pattern::select(&inventory, options.limit.as_deref()).unwrap_or_else(|d| {
        errors.push(d);
        HostSet::empty(inventory.hosts.len())
    });
    let mut graph: DiGraph<Node, ()> = DiGraph::new();
    let gates: Vec<NodeIndex> = (0..playbook.strategy.waves.len())
        .map(|w| graph.add_node(Node::Gate(w)))
        .collect();
    for pair in gates.windows(2) {
        graph.add_edge(pair[0], pair[1], ());
    }

    // Targets of every step, in inventory order; needed steps first, so that a `per: run`
    // step can go where the tasks it waits for are.
    let mut step_tasks: Vec<StepTasks> = (0..playbook.steps.len())
        .map(|_| StepTasks::default())
        .collect();
    let mut host_tasks: Vec<Vec<NodeIndex>> = vec![Vec::new(); inventory.hosts.len()];
    // Hosts that would get a task if they were in a wave.
    let mut unwaved: BTreeSet<HostId> = BTreeSet::new();
    for step_id in needs_first(&playbook, cyclic) {
        let step = &playbook.steps[step_id];
        let mut tasks = StepTasks::default();
        let matched = match step.hosts.resolve(&inventory) {
            Ok(set) => set,
            Err(e) => {
                let d = Diagnostic::new(&file, format!("step `{}`: {e}", step.name));
                errors.push(match e.suggestion {
                    Some(s) => d.hint(format!("did you mean `{s}`?")),
                    None => d.hint("check the step's `hosts:` against the inventory's hosts, regions, clusters and roles"),
                });
                continue;
            }
        };
        let eligible: Vec<HostId> = matched
            .iter()
            .filter(|&h| selected.contains(h) && host_wave[h].is_some())
            .collect();
        let name_of = |h: &HostId| inventory.hosts[*h].name.as_str();
        unwaved.extend(would_be_targets(
            &inventory, step.per, &matched, &selected, &host_wave,
        ));
        let targets: Vec<HostId> = match step.per {
            Per::Host => eligible,
            Per::Region => {
                let mut first: HashMap<RegionId, HostId> = HashMap::new();
                for h in eligible {
                    let entry = first.entry(inventory.hosts[h].region).or_insert(h);
                    if name_of(&h) < name_of(entry) {
                        *entry = h;
                    }
                }
                let mut hosts: Vec<HostId> = first.into_values().collect();
                hosts.sort_unstable();
                hosts
            }
            Per::Run => {
                // The earliest wave in which everything it needs has run (the first wave
                // when it needs nothing), then the first host by name.
                let needed_wave = step
                    .needs
                    .iter()
                    .flat_map(|n| &step_tasks[n.step].all)
                    .filter_map(|node| match graph[*node] {
                        Node::Task(t) => Some(t.wave),
                        _ => None,
                    })
                    .max()
                    .unwrap_or(0);
                let first = |hosts: &mut dyn Iterator<Item = HostId>| {
                    hosts.min_by_key(|h| (host_wave[*h], name_of(h)))
                };
                first(
                    &mut eligible
                        .iter()
                        .copied()
                        .filter(|h| host_wave[*h] >= Some(needed_wave)),
                )
                .or_else(|| first(&mut eligible.iter().copied()))
                .into_iter()
                .collect()
            }
        };
        for host in targets {
            let wave = host_wave[host].expect("eligible hosts have a wave");
            let node = graph.add_node(Node::Task(Task {
                step: step_id,
                host,
                per: step.per,
                wave,
                delegate: None,
            }));
            tasks.all.push(node);
            tasks
                .by_region
                .entry(inventory.hosts[host].region)
                .or_default()
                .push(node);
            if step.per == Per::Host {
                tasks.by_host.insert(host, node);
            }
            host_tasks[host].push(node);
        }
        step_tasks[step_id] = tasks;
    }

    report_unwaved(&inventory, &playbook, &unwaved, &mut errors);

    // `needs` edges with SPEC §3 scoping; region- and run-wide needs go through joins.
    let mut joins: HashMap<(StepId, Option<RegionId>), NodeIndex> = HashMap::new();
    let mut wave_conflicts: BTreeSet<(StepId, StepId)> = BTreeSet::new();
    for (step_id, step) in playbook.steps.iter().enumerate().filter(|_| !cyclic) {
        for need in &step.needs {
            let needed = &playbook.steps[need.step];
            for &node in &step_tasks[step_id].all {
                let Node::Task(task) = graph[node] else {
                    unreachable!()
                };
                let region = inventory.hosts[task.host].region;
                let same_host = (task.per == Per::Host
                    && needed.per == Per::Host
                    && need.scope == NeedScope::Auto)
                    .then(|| step_tasks[need.step].by_host.get(&task.host).copied())
                    .flatten();
                let (sources, join_key): (Vec<NodeIndex>, _) = if let Some(source) = same_host {
                    (vec![source], None)
                } else if need.scope == NeedScope::Run
                    || task.per == Per::Run
                    || needed.per == Per::Run
                {
                    (step_tasks[need.step].all.clone(), Some((need.step, None)))
                } else {
                    let in_region = step_tasks[need.step]
                        .by_region
                        .get(&region)
                        .cloned()
                        .unwrap_or_default();
                    (in_region, Some((need.step, Some(region))))
                };
                let latest_wave = sources
                    .iter()
                    .filter_map(|s| match graph[*s] {
                        Node::Task(t) => Some(t.wave),
                        _ => None,
                    })
                    .max();
                if latest_wave.is_some_and(|w| w > task.wave) {
                    wave_conflicts.insert((step_id, need.step));
                    continue;
                }
                match (sources.len(), join_key) {
                    (0, _) => {}
                    (1, _) | (_, None) => {
                        for source in sources {
                            graph.update_edge(source, node, ());
                        }
                    }
                    (_, Some(key)) => {
                        let join = *joins.entry(key).or_insert_with(|| {
                            let join = graph.add_node(Node::Join {
                                step: key.0,
                                region: key.1,
                            });
                            for &source in &sources {
                                graph.add_edge(source, join, ());
                            }
                            join
                        });
                        graph.add_edge(join, node, ());
                    }
                }
            }
        }
    }
    for (step, needed) in wave_conflicts {
        errors.push(Diagnostic::new(&file, format!(
            "step `{}` needs `{}`, but some of the `{}` tasks it waits for are in a later wave, which would never start",
            playbook.steps[step].name, playbook.steps[needed].name, playbook.steps[needed].name
        )).hint("narrow the needs with the same hosts (`hosts:`), or move the needed hosts to an earlier wave"));
    }

    // Wave barriers: every task of wave k before gate k, gate k before wave k+1.
    for node in graph.node_indices().collect::<Vec<_>>() {
        if let Node::Task(task) = graph[node] {
            graph.add_edge(node, gates[task.wave], ());
            if task.wave > 0 {
                graph.add_edge(gates[task.wave - 1], node, ());
            }
        }
    }

    check_template_variables(
        &inventory,
        &playbook,
        options,
        &step_tasks,
        &graph,
        &mut errors,
    );
    check_template_files(&playbook, &mut errors);

    let waves = playbook
        .strategy
        .waves
        .iter()
        .enumerate()
        .map(|(w, wave)| WavePlan {
            name: wave.name.clone(),
            gate: gates[w],
            // Only hosts with tasks: they are what a run counts, admits and reports.
            hosts: (0..inventory.hosts.len())
                .filter(|&h| host_wave[h] == Some(w) && !host_tasks[h].is_empty())
                .collect(),
        })
        .collect();
    let topological = match toposort(&graph, None) {
        Ok(order) => order,
        Err(cycle) => {
            errors.push(
                Diagnostic::new(
                    &file,
                    format!(
                        "the task graph has a cycle through node {}",
                        cycle.node_id().index()
                    ),
                )
                .hint("this is a bug in pony's graph building; please report it with the playbook"),
            );
            Vec::new()
        }
    };
    let mut position = vec![0; graph.node_count()];
    for (i, n) in topological.iter().enumerate() {
        position[n.index()] = i;
    }
    for tasks in &mut host_tasks {
        tasks.sort_by_key(|n| position[n.index()]);
    }
    let task_count = step_tasks.iter().map(|s| s.all.len()).sum();
    let mut plan = Plan {
        inventory,
        playbook,
        graph,
        waves,
        host_wave,
        selected,
        extra_vars: options.extra_vars.clone(),
        host_tasks,
        topological,
        task_count,
        learned_durations: Vec::new(),
    };
    if errors.is_empty() {
        check_rendering(&plan, &step_tasks, &mut errors);
        check_verify_templates(&plan, &mut errors);
    }
    if errors.is_empty() {
        super::delegate::resolve(&mut plan, &mut errors);
    }
    errors.into_result(plan)
}

/// The hosts of `matched` (after `--limit`) in no wave that the step would run on if
/// they were: all of them for `per: host`; for `per: region` and `per: run`, the host it
/// would pick where no matched host has a wave (elsewhere a host with a wave is taken).
fn would_be_targets(
    inventory: &Inventory,
    per: Per,
    matched: &HostSet,
    selected: &HostSet,
    host_wave: &[Option<usize>],
) -> Vec<HostId> {
    let candidates: Vec<HostId> = matched.iter().filter(|&h| selected.contains(h)).collect();
    let unwaved = |hosts: &[HostId]| -> Vec<HostId> {
        if hosts.iter().any(|&h| host_wave[h].is_some()) {
            return Vec::new();
        }
        hosts
            .iter()
            .copied()
            .min_by_key(|&h| inventory.hosts[h].name.as_str())
            .into_iter()
            .collect()
    };
    match per {
        Per::Host => candidates
            .into_iter()
            .filter(|&h| host_wave[h].is_none())
            .collect(),
        Per::Region => {
            let mut by_region: BTreeMap<RegionId, Vec<HostId>> = BTreeMap::new();
            for h in candidates {
                by_region
                    .entry(inventory.hosts[h].region)
                    .or_default()
                    .push(h);
            }
            by_region
                .values()
                .flat_map(|hosts| unwaved(hosts))
                .collect()
        }
        Per::Run => unwaved(&candidates),
    }
}

#[derive(Default)]
pub(super) struct StepTasks {
    pub(super) all: Vec<NodeIndex>,
    pub(super) by_host: HashMap<HostId, NodeIndex>,
    pub(super) by_region: HashMap<RegionId, Vec<NodeIndex>>,
}

/// Step ids with every step after the steps it needs (file order when `needs` has a
/// cycle, which is reported separately).
fn needs_first(playbook: &Playbook, cyclic: bool) -> Vec<StepId> {
    let count = playbook.steps.len();
    if cyclic {
        return (0..count).collect();
    }
    let mut order = Vec::with_capacity(count);
    let mut placed = vec![false; count];
    fn visit(step: StepId, playbook: &Playbook, placed: &mut Vec<bool>, order: &mut Vec<StepId>) {
        if placed[step] {
            return;
        }
        placed[step] = true;
        for need in &playbook.steps[step].needs {
            visit(need.step, playbook, placed, order);
        }
        order.push(step);
    }
    for step in 0..count {
        visit(step, playbook, &mut placed, &mut order);
    }
    order
}
