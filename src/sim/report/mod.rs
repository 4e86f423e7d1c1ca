//! What a simulated run means: its length, each wave's and region's start and end, the
//! bars of the timeline, which limit held the run back for how long, the critical path
//! in time, failures and rollbacks. Computed from the [`Trace`] and the plan only; the
//! text ([`super::text`]) and the JSON of `pony simulate` are views of [`Simulation`].

use super::durations::StepSource;
use super::trace::Trace;
use super::SimOptions;
use crate::events::GateReason;
use crate::plan::Plan;
use serde::Serialize;
use std::collections::BTreeMap;

mod bound;
mod path;

use bound::bound_by;
use path::critical_path;

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

/// The two rollouts by hand that `--compare` measures pony against
/// ([`super::edit::Baseline`]).
#[derive(Debug, Clone)]
pub struct Baselines {
    pub same_policy: Simulation,
    pub one_host: Simulation,
}

/// How much faster pony is: in all (against one host per cluster by hand), and that
/// split into the tool's part (against the same policy by hand) and the policy's part
/// (one host at a time against the playbook's own policy, both by hand); `tool × policy
/// = total`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Speedup {
    pub total: f64,
    pub tool: f64,
    pub policy: f64,
}

impl Baselines {
    pub fn speedup(&self, pony: &Simulation) -> Speedup {
        let ratio = |slow: &Simulation, fast: &Simulation| {
            slow.total_ms as f64 / fast.total_ms.max(1) as f64
        };
        Speedup {
            total: ratio(&self.one_host, pony),
            tool: ratio(&self.same_policy, pony),
            policy: ratio(&self.one_host, &self.same_policy),
        }
    }
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
    /// Whether a wave that takes its hosts has a `local` change window (the timeline
    /// shows the region's local time).
    pub local_window: bool,
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
        let mut sim = Simulation::drawn(plan, trace, options, durations);
        sim.bound_by = bound_by(plan, trace, sim.connections, sim.total_ms);
        sim.critical_path = critical_path(plan, trace);
        sim
    }

    /// What the timeline draws (totals, waves, regions, gates, failures), without the
    /// analysis of the text report (the binding limit, the critical path): the run
    /// page's real timeline, drawn at each change of a journal.
    pub fn drawn(
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
            bound_by: Vec::new(),
            critical_path: Vec::new(),
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
                local_window: local_window(plan, r),
                start_ms: start,
                end_ms: end,
                clusters,
            });
        }
    }
    out
}

/// Whether a wave that takes hosts of region `r` opens its change window in `local` time.
fn local_window(plan: &Plan, r: usize) -> bool {
    let inventory = &plan.inventory;
    inventory.regions[r]
        .clusters
        .iter()
        .flat_map(|&c| &inventory.clusters[c].hosts)
        .filter_map(|&h| plan.host_wave[h])
        .filter_map(|w| plan.playbook.strategy.waves.get(w)?.window.as_ref())
        .any(|w| w.time_zone == crate::playbook::strategy::LOCAL)
}

fn gates(plan: &Plan, trace: &Trace, total_ms: u64) -> Vec<GateSpan> {
    trace
        .gate_waits
        .iter()
        .map(|g| {
            let passed = trace.gate_passed[g.wave].unwrap_or(total_ms);
            // The soak comes first, then the question: each ends where the gate's next
            // wait begins, else when the gate passes.
            let next = |g: &super::trace::GateWait| {
                trace
                    .gate_waits
                    .iter()
                    .filter(|o| {
                        o.wave == g.wave
                            && matches!(o.reason, GateReason::Soak | GateReason::Approve)
                            && o.reason != g.reason
                            && o.at_ms >= g.at_ms
                    })
                    .map(|o| o.at_ms)
                    .min()
                    .unwrap_or(passed)
            };
            let (kind, end) = if g.reason == GateReason::Soak {
                ("soak", next(g).max(g.at_ms))
            } else if g.reason == GateReason::Approve {
                ("approve", next(g).max(g.at_ms))
            } else {
                (
                    "window",
                    (g.at_ms + g.seconds * 1000).min(total_ms.max(g.at_ms)),
                )
            };
            GateSpan {
                wave: plan.waves[g.wave].name.clone(),
                kind: kind.into(),
                detail: g.reason.to_string(),
                start_ms: g.at_ms,
                end_ms: end,
            }
        })
        .collect()
}
