//! Which limit held a simulated run back, and for how long: every stretch of the run is
//! put down to one limit by precedence (gates and windows, connections, a cluster's
//! slots, the work itself).

use super::{gates, Bound, CONNECTIONS, GATES, OTHER, ROLLBACKS, SLOTS, WINDOWS, WORK};
use crate::plan::Plan;
use crate::playbook::Per;
use crate::sim::trace::Trace;
use std::collections::BTreeMap;

/// For every stretch of the run, the limit that held it back, by precedence: nothing in
/// service while a gate or a window waits; hosts waiting while every connection is in
/// use; hosts waiting while their cluster's slots are all taken; hosts waiting for a
/// window; else the work in flight itself. A host is in service from its first task's
/// start to its last host task's end, and waiting from its wave's start until then.
pub(super) fn bound_by(
    plan: &Plan,
    trace: &Trace,
    connections: usize,
    total_ms: u64,
) -> Vec<Bound> {
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
