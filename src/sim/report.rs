//! What a simulated run means: its length, each wave's and region's start and end, the
//! bars of the timeline, which limit held the run back for how long, the critical path
//! in time, failures and rollbacks. Computed from the [`Trace`] and the plan only; the
//! text ([`super::text`]) and the JSON of `pony simulate` are views of [`Simulation`].

use super::durations::StepSource;
use super::trace::Trace;
use super::SimOptions;
use crate::inventory::HostId;
use crate::plan::{Node, NodeId, Plan};
use crate::playbook::Per;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize)]
pub struct Simulation {
    pub playbook: String,
    pub inventory: String,
    pub hosts: usize,
    pub tasks: usize,
    pub seed: u64,
    pub fail_rate: f64,
    pub unreachable_rate: f64,
    pub connections: usize,
    /// The wall-clock start, RFC 3339.
    pub start: String,
    pub end: String,
    pub total_ms: u64,
    pub outcome: String,
    pub exit_code: i32,
    pub host_outcomes: BTreeMap<String, usize>,
    pub waves: Vec<Span>,
    pub regions: Vec<RegionSpan>,
    pub gates: Vec<GateSpan>,
    /// Time per limit that held the run back, longest first.
    pub bound_by: Vec<Bound>,
    pub critical_path: Vec<PathPart>,
    pub failures: Failures,
    pub durations: Vec<StepSource>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Span {
    pub name: String,
    pub hosts: usize,
    pub start_ms: Option<u64>,
    pub end_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RegionSpan {
    pub name: String,
    pub hosts: usize,
    /// Its hosts' time zones (`UTC` without one): where `local` windows open.
    pub zones: Vec<String>,
    pub start_ms: Option<u64>,
    pub end_ms: Option<u64>,
    pub clusters: Vec<ClusterBars>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterBars {
    pub name: String,
    pub hosts: usize,
    /// `max_unavailable` resolved for the cluster.
    pub slots: usize,
    /// One bar per wave the cluster took part in.
    pub bars: Vec<Bar>,
    /// When its rollback commands ran, if any did.
    pub rollback: Option<(u64, u64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Bar {
    pub wave: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub failed_hosts: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct GateSpan {
    pub wave: String,
    /// `pause`, `approve` or `window`.
    pub kind: String,
    pub detail: String,
    pub start_ms: u64,
    pub end_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Bound {
    pub limit: String,
    pub ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PathPart {
    pub what: String,
    pub start_ms: u64,
    pub end_ms: u64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Failures {
    pub failed_tasks: usize,
    pub rollbacks: Vec<RollbackPart>,
    pub rollback_commands: usize,
    pub budgets_exceeded: Vec<String>,
    pub waves_failed: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RollbackPart {
    pub scope: String,
    pub hosts: usize,
    pub start_ms: u64,
    pub end_ms: Option<u64>,
    pub ok: Option<bool>,
}

/// The limits a run can be held back by, in the words the report uses.
pub const GATES: &str = "gates (pause, approve)";
pub const WINDOWS: &str = "change windows";
pub const CONNECTIONS: &str = "connections";
pub const SLOTS: &str = "max_unavailable (a cluster's slots)";
pub const WORK: &str = "task durations (drains, restarts: the work itself)";
pub const ROLLBACKS: &str = "rollbacks";
pub const OTHER: &str = "other waits (connecting, retries)";

impl Simulation {
    pub fn new(
        plan: &Plan,
        trace: &Trace,
        options: &SimOptions,
        durations: Vec<StepSource>,
    ) -> Simulation {
        let inventory = &plan.inventory;
        let connections = options
            .connections
            .unwrap_or(plan.playbook.strategy.connections);
        let last_event = trace
            .task_end
            .iter()
            .chain(&trace.host_end)
            .flatten()
            .copied()
            .max()
            .unwrap_or(0);
        let total_ms = trace
            .ending
            .as_ref()
            .map(|e| e.duration_ms)
            .unwrap_or(last_event);
        let at = |ms: u64| {
            (options.start + chrono::Duration::milliseconds(ms as i64))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        };
        let mut host_outcomes = BTreeMap::new();
        for outcome in trace.host_outcome.iter().flatten() {
            let name = serde_json::to_value(outcome)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            *host_outcomes.entry(name).or_insert(0) += 1;
        }
        let waves = plan
            .waves
            .iter()
            .enumerate()
            .map(|(w, wave)| Span {
                name: wave.name.clone(),
                hosts: wave.hosts.len(),
                start_ms: trace.wave_started[w],
                end_ms: wave
                    .hosts
                    .iter()
                    .flat_map(|&h| plan.tasks_of_host(h))
                    .filter_map(|n| trace.task_end[n.index()])
                    .max()
                    .max(trace.gate_passed[w]),
            })
            .collect();
        Simulation {
            playbook: plan.playbook.name.clone(),
            inventory: inventory.name.clone(),
            hosts: plan.host_count(),
            tasks: plan.task_count(),
            seed: options.seed,
            fail_rate: options.fail,
            unreachable_rate: options.unreachable,
            connections,
            start: at(0),
            end: at(total_ms),
            total_ms,
            outcome: trace
                .ending
                .as_ref()
                .and_then(|e| serde_json::to_value(e.outcome).ok())
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            exit_code: trace.ending.as_ref().map(|e| e.exit_code).unwrap_or(0),
            host_outcomes,
            waves,
            regions: regions(plan, trace),
            gates: gates(plan, trace, total_ms),
            bound_by: bound_by(plan, trace, connections, total_ms),
            critical_path: critical_path(plan, trace),
            failures: Failures {
                failed_tasks: trace.task_failed.iter().filter(|f| **f).count(),
                rollbacks: trace
                    .rollbacks
                    .iter()
                    .map(|r| RollbackPart {
                        scope: r.scope.clone(),
                        hosts: r.hosts,
                        start_ms: r.start_ms,
                        end_ms: r.end_ms,
                        ok: r.ok,
                    })
                    .collect(),
                rollback_commands: trace.rollback_commands,
                budgets_exceeded: trace.budget_exceeded.clone(),
                waves_failed: trace.wave_failed.clone(),
            },
            durations,
        }
    }

    /// The limit that held the run back longest.
    pub fn bound_most(&self) -> Option<&Bound> {
        self.bound_by.first()
    }
}

/// The hosts each region and cluster takes part with, and the bars per wave.
fn regions(plan: &Plan, trace: &Trace) -> Vec<RegionSpan> {
    let inventory = &plan.inventory;
    let limits = plan.cluster_limits();
    let by_cluster = plan.hosts_by_cluster();
    let mut out = Vec::new();
    for (r, region) in inventory.regions.iter().enumerate() {
        let mut clusters = Vec::new();
        let (mut start, mut end, mut hosts) = (None::<u64>, None::<u64>, 0);
        for (c, cluster) in inventory.clusters.iter().enumerate() {
            if cluster.region != r {
                continue;
            }
            let Some(members) = by_cluster.get(&c) else {
                continue;
            };
            hosts += members.len();
            let mut per_wave: BTreeMap<usize, (u64, u64, usize)> = BTreeMap::new();
            for &h in members {
                let mut host_failed = false;
                for n in plan.tasks_of_host(h) {
                    let (Some(s), Some(e)) =
                        (trace.task_start[n.index()], trace.task_end[n.index()])
                    else {
                        continue;
                    };
                    host_failed |= trace.task_failed[n.index()];
                    let wave = plan.task(*n).map(|t| t.wave).unwrap_or(0);
                    let entry = per_wave.entry(wave).or_insert((s, e, 0));
                    entry.0 = entry.0.min(s);
                    entry.1 = entry.1.max(e);
                    start = Some(start.map_or(s, |x| x.min(s)));
                    end = Some(end.map_or(e, |x| x.max(e)));
                }
                if host_failed {
                    if let Some(w) = plan.host_wave[h] {
                        if let Some(entry) = per_wave.get_mut(&w) {
                            entry.2 += 1;
                        }
                    }
                }
                if let Some(e) = trace.host_end[h] {
                    end = Some(end.map_or(e, |x| x.max(e)));
                }
            }
            clusters.push(ClusterBars {
                name: cluster.name.clone(),
                hosts: members.len(),
                slots: limits[c].max_unavailable,
                bars: per_wave
                    .into_iter()
                    .map(|(w, (s, e, failed))| Bar {
                        wave: plan.waves[w].name.clone(),
                        start_ms: s,
                        end_ms: e,
                        failed_hosts: failed,
                    })
                    .collect(),
                rollback: trace.cluster_rollback[c],
            });
        }
        if hosts > 0 {
            let mut zones: Vec<String> = region
                .clusters
                .iter()
                .flat_map(|&c| &inventory.clusters[c].hosts)
                .map(|&h| {
                    inventory.hosts[h]
                        .tz
                        .clone()
                        .unwrap_or_else(|| "UTC".into())
                })
                .collect();
            zones.sort();
            zones.dedup();
            out.push(RegionSpan {
                name: region.name.clone(),
                hosts,
                zones,
                start_ms: start,
                end_ms: end,
                clusters,
            });
        }
    }
    out
}

fn gates(plan: &Plan, trace: &Trace, total_ms: u64) -> Vec<GateSpan> {
    trace
        .gate_waits
        .iter()
        .map(|g| {
            let passed = trace.gate_passed[g.wave].unwrap_or(total_ms);
            let (kind, end) = if g.reason == "pause" {
                ("pause", passed.max(g.at_ms))
            } else if g.reason == "approve" {
                // Until the answer: the pause that follows it, else the gate passing.
                let answered = trace
                    .gate_waits
                    .iter()
                    .filter(|o| o.wave == g.wave && o.reason == "pause" && o.at_ms >= g.at_ms)
                    .map(|o| o.at_ms)
                    .min()
                    .unwrap_or(passed);
                ("approve", answered.max(g.at_ms))
            } else {
                (
                    "window",
                    (g.at_ms + g.seconds * 1000).min(total_ms.max(g.at_ms)),
                )
            };
            GateSpan {
                wave: plan.waves[g.wave].name.clone(),
                kind: kind.into(),
                detail: g.reason.clone(),
                start_ms: g.at_ms,
                end_ms: end,
            }
        })
        .collect()
}

/// For every stretch of the run, the limit that held it back, by precedence: nothing in
/// service while a gate or a window waits; hosts waiting while every connection is in
/// use; hosts waiting while their cluster's slots are all taken; hosts waiting for a
/// window; else the work in flight itself. A host is in service from its first task's
/// start to its last host task's end, and waiting from its wave's start until then.
fn bound_by(plan: &Plan, trace: &Trace, connections: usize, total_ms: u64) -> Vec<Bound> {
    #[derive(Clone, Copy)]
    enum Change {
        Active(usize, i64),
        Waiting(usize, i64),
        Gate(i64),
        Window(i64),
        Rollback(i64),
        Shared(i64),
    }
    let limits = plan.cluster_limits();
    let clusters = plan.inventory.clusters.len();
    let mut changes: Vec<(u64, Change)> = Vec::new();
    for (h, spec) in plan.inventory.hosts.iter().enumerate() {
        let Some(w) = plan.host_wave[h] else { continue };
        let mut first = None::<u64>;
        let mut last = None::<u64>;
        for n in plan.tasks_of_host(h) {
            if plan.task(*n).is_some_and(|t| t.per == Per::Host) {
                if let (Some(s), Some(e)) = (trace.task_start[n.index()], trace.task_end[n.index()])
                {
                    first = Some(first.map_or(s, |x| x.min(s)));
                    last = Some(last.map_or(e, |x| x.max(e)));
                }
            }
        }
        let (Some(first), Some(last)) = (first, last) else {
            continue;
        };
        if let Some(wave_start) = trace.wave_started[w] {
            if first > wave_start {
                changes.push((wave_start, Change::Waiting(spec.cluster, 1)));
                changes.push((first, Change::Waiting(spec.cluster, -1)));
            }
        }
        changes.push((first, Change::Active(spec.cluster, 1)));
        changes.push((last, Change::Active(spec.cluster, -1)));
    }
    // Region- and run-wide tasks are work in flight too (they hold no slot).
    for (n, task) in plan.tasks() {
        if task.per != Per::Host {
            if let (Some(s), Some(e)) = (trace.task_start[n.index()], trace.task_end[n.index()]) {
                changes.push((s, Change::Shared(1)));
                changes.push((e, Change::Shared(-1)));
            }
        }
    }
    for g in gates(plan, trace, total_ms) {
        let change = |d| {
            if g.kind == "window" {
                Change::Window(d)
            } else {
                Change::Gate(d)
            }
        };
        changes.push((g.start_ms, change(1)));
        changes.push((g.end_ms, change(-1)));
    }
    for r in &trace.rollbacks {
        changes.push((r.start_ms, Change::Rollback(1)));
        changes.push((r.end_ms.unwrap_or(total_ms), Change::Rollback(-1)));
    }
    changes.sort_by_key(|(t, _)| *t);
    let mut active = vec![0i64; clusters];
    let mut waiting = vec![0i64; clusters];
    let (mut active_all, mut waiting_all, mut gate, mut window, mut rollback, mut shared) =
        (0i64, 0i64, 0i64, 0i64, 0i64, 0i64);
    let mut time: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut now = 0u64;
    let mut i = 0;
    while i <= changes.len() {
        let next = changes
            .get(i)
            .map(|(t, _)| *t)
            .unwrap_or(total_ms)
            .min(total_ms);
        if next > now {
            let idle = active_all == 0 && shared == 0;
            let limit = if idle && gate > 0 {
                GATES
            } else if idle && window > 0 {
                WINDOWS
            } else if waiting_all > 0 && active_all >= connections as i64 {
                CONNECTIONS
            } else if (0..clusters)
                .any(|c| waiting[c] > 0 && active[c] >= limits[c].max_unavailable as i64)
            {
                SLOTS
            } else if waiting_all > 0 && window > 0 {
                WINDOWS
            } else if active_all > 0 || shared > 0 {
                WORK
            } else if rollback > 0 {
                ROLLBACKS
            } else {
                OTHER
            };
            *time.entry(limit).or_default() += next - now;
            now = next;
        }
        let Some((_, change)) = changes.get(i) else {
            break;
        };
        match *change {
            Change::Active(c, d) => {
                active[c] += d;
                active_all += d;
            }
            Change::Waiting(c, d) => {
                waiting[c] += d;
                waiting_all += d;
            }
            Change::Gate(d) => gate += d,
            Change::Window(d) => window += d,
            Change::Rollback(d) => rollback += d,
            Change::Shared(d) => shared += d,
        }
        i += 1;
    }
    let mut out: Vec<Bound> = time
        .into_iter()
        .filter(|(_, ms)| *ms > 0)
        .map(|(limit, ms)| Bound {
            limit: limit.to_string(),
            ms,
        })
        .collect();
    out.sort_by(|a, b| b.ms.cmp(&a.ms).then(a.limit.cmp(&b.limit)));
    out
}

/// The chain of work and waits that ended last, walked back from the task that finished
/// last: each node's latest-finishing dependency (through joins and gates); a task that
/// started later than that waited for a slot another host of its cluster gave back (the
/// path goes on through that host) or for a window, a connection or a retry.
fn critical_path(plan: &Plan, trace: &Trace) -> Vec<PathPart> {
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
                    && g.reason.starts_with("window")
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
