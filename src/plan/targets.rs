//! Where each step runs: its targets in inventory order (`per: host`, the first host by
//! name of each region, or one host for the run), one task node per target, and the
//! hosts that would get a task if they were in a wave. Steps are placed after the steps
//! they need, so that a `per: run` step can go where the tasks it waits for are.

use super::{Node, Task};
use crate::diag::{Diagnostic, Diagnostics};
use crate::inventory::pattern::HostSet;
use crate::inventory::{HostId, Inventory, RegionId};
use crate::playbook::{Per, Playbook, Step, StepId};
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The task nodes of one step.
#[derive(Default)]
pub(super) struct StepTasks {
    pub(super) all: Vec<NodeIndex>,
    pub(super) by_host: HashMap<HostId, NodeIndex>,
    pub(super) by_region: HashMap<RegionId, Vec<NodeIndex>>,
}

/// Every step's task nodes, added to the graph.
pub(super) struct Placed {
    /// Per step, its tasks.
    pub(super) step_tasks: Vec<StepTasks>,
    /// Per host, its tasks (in the order they were placed).
    pub(super) host_tasks: Vec<Vec<NodeIndex>>,
    /// Hosts that would get a task if they were in a wave.
    pub(super) unwaved: BTreeSet<HostId>,
}

/// What a step's targets are chosen among.
pub(super) struct Scope<'a> {
    pub(super) inventory: &'a Inventory,
    pub(super) playbook: &'a Playbook,
    /// The hosts `--limit` leaves.
    pub(super) selected: &'a HostSet,
    pub(super) host_wave: &'a [Option<usize>],
}

/// Adds a task node per step and target; a step whose `hosts:` does not resolve is
/// reported (with "did you mean") and gets none.
pub(super) fn place(
    scope: &Scope,
    cyclic: bool,
    graph: &mut DiGraph<Node, ()>,
    errors: &mut Diagnostics,
) -> Placed {
    let Scope {
        inventory,
        playbook,
        selected,
        host_wave,
    } = *scope;
    let mut placed = Placed {
        step_tasks: (0..playbook.steps.len())
            .map(|_| StepTasks::default())
            .collect(),
        host_tasks: vec![Vec::new(); inventory.hosts.len()],
        unwaved: BTreeSet::new(),
    };
    for step_id in needs_first(playbook, cyclic) {
        let step = &playbook.steps[step_id];
        let matched = match step.hosts.resolve(inventory) {
            Ok(set) => set,
            Err(e) => {
                let d = Diagnostic::new(&playbook.file, format!("step `{}`: {e}", step.name));
                errors.push(match e.suggestion {
                    Some(s) => d.hint(format!("did you mean `{s}`?")),
                    None => d.hint("check the step's `hosts:` against the inventory's hosts, regions, clusters and roles"),
                });
                continue;
            }
        };
        placed.unwaved.extend(would_be_targets(
            inventory, step.per, &matched, selected, host_wave,
        ));
        let eligible: Vec<HostId> = matched
            .iter()
            .filter(|&h| selected.contains(h) && host_wave[h].is_some())
            .collect();
        let targets = step_targets(scope, step, eligible, &placed.step_tasks, graph);
        let mut tasks = StepTasks::default();
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
            placed.host_tasks[host].push(node);
        }
        placed.step_tasks[step_id] = tasks;
    }
    placed
}

/// The hosts a step runs on among `eligible` (matched, selected, in a wave): all of them
/// for `per: host`; the first by name of each region for `per: region`; for `per: run`,
/// the first host by name of the earliest wave in which everything it needs has run.
fn step_targets(
    scope: &Scope,
    step: &Step,
    eligible: Vec<HostId>,
    step_tasks: &[StepTasks],
    graph: &DiGraph<Node, ()>,
) -> Vec<HostId> {
    let (inventory, host_wave) = (scope.inventory, scope.host_wave);
    let name_of = |h: &HostId| inventory.hosts[*h].name.as_str();
    match step.per {
        // A handler runs only where a step it listens to has a task: nothing else
        // could notify it there.
        Per::Host if step.is_handler() => eligible
            .into_iter()
            .filter(|h| {
                step.listen
                    .iter()
                    .any(|&l| step_tasks[l].by_host.contains_key(h))
            })
            .collect(),
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
    }
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
