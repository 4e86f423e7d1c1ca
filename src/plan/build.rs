//! Building the plan: step cycles, wave membership, targets, `needs` scoping, wave gates
//! and template variables, with every problem collected before anything is returned.

use super::targets::{self, Placed, Scope, StepTasks};
use super::templates::{
    check_rendering, check_template_files, check_template_variables, check_verify_templates,
};
use super::validate::step_cycles;
use super::waves::{assign_waves, check_verify_patterns, report_unwaved};
use super::{Node, Plan, PlanOptions, WavePlan};
use crate::diag::{Diagnostic, Diagnostics};
use crate::inventory::pattern::{self, HostSet};
use crate::inventory::{Inventory, RegionId};
use crate::playbook::{NeedScope, Per, Playbook, Step, StepId};
use petgraph::algo::toposort;
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

/// Validates the playbook against the inventory and builds the sealed plan.
pub fn build(
    inventory: Arc<Inventory>,
    playbook: Arc<Playbook>,
    options: &PlanOptions,
) -> Result<Plan, Diagnostics> {
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
    let scope = Scope {
        inventory: &inventory,
        playbook: &playbook,
        selected: &selected,
        host_wave: &host_wave,
    };
    let Placed {
        step_tasks,
        mut host_tasks,
        unwaved,
    } = targets::place(&scope, cyclic, &mut graph, &mut errors);
    report_unwaved(&inventory, &playbook, &unwaved, &mut errors);
    if !cyclic {
        add_needs(&inventory, &playbook, &step_tasks, &mut graph, &mut errors);
    }
    add_wave_barriers(&mut graph, &gates);
    check_template_variables(
        &inventory,
        &playbook,
        options,
        &step_tasks,
        &graph,
        &mut errors,
    );
    check_template_files(&playbook, &mut errors);

    let waves = wave_plans(&playbook, &gates, &host_wave, &host_tasks);
    let topological = topological_order(&graph, &playbook.file, &mut errors);
    sort_by_order(&mut host_tasks, &topological, graph.node_count());
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

/// `needs` edges with SPEC §3 scoping; region- and run-wide needs go through joins. A
/// need on tasks of a later wave (which would never start) is reported.
fn add_needs(
    inventory: &Inventory,
    playbook: &Playbook,
    step_tasks: &[StepTasks],
    graph: &mut DiGraph<Node, ()>,
    errors: &mut Diagnostics,
) {
    let mut joins: HashMap<(StepId, Option<RegionId>), NodeIndex> = HashMap::new();
    let mut wave_conflicts: BTreeSet<(StepId, StepId)> = BTreeSet::new();
    for (step_id, step) in playbook.steps.iter().enumerate() {
        for need in &step.needs {
            let needed = &playbook.steps[need.step];
            for &node in &step_tasks[step_id].all {
                let Node::Task(task) = graph[node] else {
                    unreachable!()
                };
                let region = inventory.hosts[task.host].region;
                // A handler hears its own host's task of a step it listens to: a
                // direct edge (also under a run-wide `needs` on that step, which waits
                // through a join), so that it finds the task it listens to.
                let own = step.listen.contains(&need.step).then(|| {
                    let own = step_tasks[need.step].by_host.get(&task.host).copied();
                    if let Some(own) = own {
                        graph.update_edge(own, node, ());
                    }
                    own
                });
                let (sources, join_key) = if let (Some(own), NeedScope::Auto) = (own, need.scope) {
                    (own.into_iter().collect(), None)
                } else {
                    need_sources(
                        need.step,
                        need.scope,
                        needed,
                        &step_tasks[need.step],
                        task,
                        region,
                    )
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
        errors.push(Diagnostic::new(&playbook.file, format!(
            "step `{}` needs `{}`, but some of the `{}` tasks it waits for are in a later wave, which would never start",
            playbook.steps[step].name, playbook.steps[needed].name, playbook.steps[needed].name
        )).hint("narrow the needs with the same hosts (`hosts:`), or move the needed hosts to an earlier wave"));
    }
}

/// The tasks of `needed` that `task` waits for, and the join that stands for them when
/// there are many: the same host's task (both `per: host`, `scope: auto`), every task of
/// the step (run-wide), or those of the task's region.
fn need_sources(
    needed_id: StepId,
    scope: NeedScope,
    needed: &Step,
    needed_tasks: &StepTasks,
    task: super::Task,
    region: RegionId,
) -> (Vec<NodeIndex>, Option<(StepId, Option<RegionId>)>) {
    let same_host = (task.per == Per::Host && needed.per == Per::Host && scope == NeedScope::Auto)
        .then(|| needed_tasks.by_host.get(&task.host).copied())
        .flatten();
    if let Some(source) = same_host {
        (vec![source], None)
    } else if scope == NeedScope::Run || task.per == Per::Run || needed.per == Per::Run {
        (needed_tasks.all.clone(), Some((needed_id, None)))
    } else {
        let in_region = needed_tasks
            .by_region
            .get(&region)
            .cloned()
            .unwrap_or_default();
        (in_region, Some((needed_id, Some(region))))
    }
}

/// Wave barriers: every task of wave k before gate k, gate k before wave k+1.
fn add_wave_barriers(graph: &mut DiGraph<Node, ()>, gates: &[NodeIndex]) {
    for node in graph.node_indices().collect::<Vec<_>>() {
        if let Node::Task(task) = graph[node] {
            graph.add_edge(node, gates[task.wave], ());
            if task.wave > 0 {
                graph.add_edge(gates[task.wave - 1], node, ());
            }
        }
    }
}

/// Per wave its name, gate and hosts; only hosts with tasks: they are what a run counts,
/// admits and reports.
fn wave_plans(
    playbook: &Playbook,
    gates: &[NodeIndex],
    host_wave: &[Option<usize>],
    host_tasks: &[Vec<NodeIndex>],
) -> Vec<WavePlan> {
    playbook
        .strategy
        .waves
        .iter()
        .enumerate()
        .map(|(w, wave)| WavePlan {
            name: wave.name.clone(),
            gate: gates[w],
            hosts: (0..host_tasks.len())
                .filter(|&h| host_wave[h] == Some(w) && !host_tasks[h].is_empty())
                .collect(),
        })
        .collect()
}

/// Sorts each host's tasks in the graph's topological order.
fn sort_by_order(host_tasks: &mut [Vec<NodeIndex>], topological: &[NodeIndex], nodes: usize) {
    let mut position = vec![0; nodes];
    for (i, n) in topological.iter().enumerate() {
        position[n.index()] = i;
    }
    for tasks in host_tasks {
        tasks.sort_by_key(|n| position[n.index()]);
    }
}

/// The graph's nodes in dependency order (empty, with an error, if it has a cycle).
fn topological_order(
    graph: &DiGraph<Node, ()>,
    file: &Path,
    errors: &mut Diagnostics,
) -> Vec<NodeIndex> {
    match toposort(graph, None) {
        Ok(order) => order,
        Err(cycle) => {
            errors.push(
                Diagnostic::new(
                    file,
                    format!(
                        "the task graph has a cycle through node {}",
                        cycle.node_id().index()
                    ),
                )
                .hint("this is a bug in pony's graph building; please report it with the playbook"),
            );
            Vec::new()
        }
    }
}
