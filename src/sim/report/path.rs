//! The critical path of a simulated run in time: the chain of work and waits that ended
//! last, walked back from the task that finished last.

use super::PathPart;
use crate::inventory::HostId;
use crate::plan::{Node, NodeId, Plan};
use crate::playbook::Per;
use crate::sim::trace::Trace;

/// The chain of work and waits that ended last, walked back from the task that finished
/// last: each node's latest-finishing dependency (through joins and gates); a task that
/// started later than that waited for a slot another host of its cluster gave back (the
/// path goes on through that host) or for a window, a connection or a retry.
pub(super) fn critical_path(plan: &Plan, trace: &Trace) -> Vec<PathPart> {
    let finish = |n: NodeId| -> Option<u64> {
        match plan.graph[n] {
            Node::Task(_) => trace.task_end[n.index()],
            Node::Gate(w) => trace.gate_passed[w],
            Node::Join { .. } => None,
        }
    };
    // A join finishes when its latest dependency does.
    fn latest(
        plan: &Plan,
        node: NodeId,
        finish: &dyn Fn(NodeId) -> Option<u64>,
    ) -> Option<(NodeId, u64)> {
        let mut best: Option<(NodeId, u64)> = None;
        for dep in plan.dependencies(node) {
            let candidate = match plan.graph[dep] {
                Node::Join { .. } => latest(plan, dep, finish),
                _ => finish(dep).map(|t| (dep, t)),
            };
            if let Some((n, t)) = candidate {
                if best.is_none_or(|(bn, bt)| t > bt || (t == bt && n < bn)) {
                    best = Some((n, t));
                }
            }
        }
        best
    }
    // Per cluster, its host tasks by end time: whose slot a waiting host took.
    let mut ends: Vec<Vec<(u64, NodeId)>> = vec![Vec::new(); plan.inventory.clusters.len()];
    for (n, task) in plan.tasks() {
        if task.per == Per::Host {
            if let Some(e) = trace.task_end[n.index()] {
                ends[plan.inventory.hosts[task.host].cluster].push((e, n));
            }
        }
    }
    ends.iter_mut().for_each(|v| v.sort());
    let mut all_ends: Vec<(u64, NodeId)> = ends.iter().flatten().copied().collect();
    all_ends.sort();
    let Some(mut current) = plan
        .tasks()
        .filter_map(|(n, _)| {
            trace.task_end[n.index()].map(|e| (e, std::cmp::Reverse(n.index()), n))
        })
        .max()
        .map(|(_, _, n)| n)
    else {
        return Vec::new();
    };
    let mut parts: Vec<PathPart> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    while seen.insert(current) {
        let (ready, what) = match plan.graph[current] {
            Node::Task(task) => {
                let start = trace.task_start[current.index()].unwrap_or(0);
                parts.push(PathPart {
                    what: plan.label(current),
                    start_ms: start,
                    end_ms: trace.task_end[current.index()].unwrap_or(start),
                });
                (start, Some(task))
            }
            Node::Gate(w) => {
                let ready = latest(plan, current, &finish).map(|(_, t)| t).unwrap_or(0);
                let passed = trace.gate_passed[w].unwrap_or(ready);
                if passed > ready {
                    parts.push(PathPart {
                        what: format!("gate of wave {}", plan.waves[w].name),
                        start_ms: ready,
                        end_ms: passed,
                    });
                }
                (ready, None)
            }
            Node::Join { .. } => (0, None),
        };
        let dep = latest(plan, current, &finish);
        let dep_end = dep.map(|(_, t)| t).unwrap_or(0);
        if let Some(task) = what.filter(|_| ready > dep_end) {
            // Started later than its dependencies allowed: whose slot did it take?
            let cluster = plan.inventory.hosts[task.host].cluster;
            let list = &ends[cluster];
            let i = list.partition_point(|(e, _)| *e <= ready);
            let freed = list[..i]
                .iter()
                .rev()
                .find(|(e, n)| *e == ready && plan.task(*n).is_some_and(|t| t.host != task.host));
            // Else a connection another host gave back (any cluster).
            let freed = freed.or_else(|| {
                let i = all_ends.partition_point(|(e, _)| *e <= ready);
                all_ends[..i].iter().rev().find(|(e, n)| {
                    *e == ready && plan.task(*n).is_some_and(|t| t.host != task.host)
                })
            });
            if let Some(&(_, n)) = freed.filter(|_| task.per == Per::Host) {
                current = n;
                continue;
            }
            // A window of its wave that opened when it started, else a retry or connect wait.
            let window = trace.gate_waits.iter().find(|g| {
                g.wave == task.wave
                    && matches!(g.reason, crate::events::GateReason::Window(_))
                    && (g.at_ms + g.seconds * 1000).abs_diff(ready) < 1000
            });
            let why = match window {
                Some(g) => format!("waits for the {}", g.reason),
                None => "waits (connecting or retrying)".to_string(),
            };
            parts.push(PathPart {
                what: format!("{} {why}", host_name(plan, task.host)),
                start_ms: dep_end,
                end_ms: ready,
            });
        }
        match dep {
            Some((n, _)) => current = n,
            None => break,
        }
    }
    parts.reverse();
    parts
}

fn host_name(plan: &Plan, host: HostId) -> &str {
    &plan.inventory.hosts[host].name
}
