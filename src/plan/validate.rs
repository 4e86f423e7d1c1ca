//! Checks of the playbook that need no task graph: cycles in `needs`, reported as the
//! circle of step names with a link to cut.

use crate::diag::{Diagnostic, Diagnostics};
use crate::playbook::{Playbook, StepId};
use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::{HashMap, HashSet};

/// A cycle in `needs` is reported as the circle of step names, `a -> b -> a`, where
/// `a -> b` reads "a needs b".
pub(super) fn step_cycles(playbook: &Playbook) -> Result<(), Diagnostics> {
    let mut graph: DiGraph<StepId, ()> = DiGraph::new();
    let nodes: Vec<NodeIndex> = (0..playbook.steps.len())
        .map(|s| graph.add_node(s))
        .collect();
    for (s, step) in playbook.steps.iter().enumerate() {
        for need in &step.needs {
            graph.update_edge(nodes[s], nodes[need.step], ());
        }
    }
    let mut errors = Diagnostics::default();
    for component in tarjan_scc(&graph) {
        let looped = component.len() > 1 || graph.contains_edge(component[0], component[0]);
        if !looped {
            continue;
        }
        let members: HashSet<NodeIndex> = component.iter().copied().collect();
        let start = *component
            .iter()
            .min_by_key(|n| graph[**n])
            .expect("non-empty");
        let path = cycle_path(&graph, start, &members);
        let names: Vec<&str> = path
            .iter()
            .map(|n| playbook.steps[graph[*n]].name.as_str())
            .collect();
        let (last, first) = (names[names.len() - 2], names[names.len() - 1]);
        errors.push(
            Diagnostic::new(
                &playbook.file,
                format!("dependency cycle: {}", names.join(" -> ")),
            )
            .hint(format!(
                "remove `{first}` from the `needs` of step `{last}` (or another link of the cycle)"
            )),
        );
    }
    errors.into_result(())
}

/// A shortest path from `start` back to itself inside one strongly connected component.
fn cycle_path(
    graph: &DiGraph<StepId, ()>,
    start: NodeIndex,
    members: &HashSet<NodeIndex>,
) -> Vec<NodeIndex> {
    let mut came_from: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        let mut next: Vec<NodeIndex> = graph
            .neighbors(node)
            .filter(|n| members.contains(n))
            .collect();
        next.sort_by_key(|n| graph[*n]);
        for n in next {
            if n == start {
                let mut path = vec![node];
                let mut cursor = node;
                while cursor != start {
                    cursor = came_from[&cursor];
                    path.push(cursor);
                }
                path.reverse();
                path.push(start);
                return path;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = came_from.entry(n) {
                e.insert(node);
                queue.push_back(n);
            }
        }
    }
    vec![start, start]
}
