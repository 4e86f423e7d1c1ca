//! The human report of `pony simulate`: the run's length, waves, regions, gates, what
//! held the run back, the critical path and rollbacks, as text (the JSON is
//! [`Simulation`] serialized, the timeline [`super::svg`]).

use super::report::{Baselines, PathPart, Simulation};
use crate::report::thousands;

/// The human report.
pub fn text(sim: &Simulation, baselines: Option<&Baselines>) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let w = &mut out;
    overview(w, sim);
    if let Some(base) = baselines {
        speedups(w, sim, base);
    }
    let waves = sim.waves.iter();
    spans(
        w,
        "waves",
        waves.map(|s| (&s.name, s.hosts, s.start_ms, s.end_ms)),
    );
    let regions = sim.regions.iter();
    spans(
        w,
        "regions",
        regions.map(|s| (&s.name, s.hosts, s.start_ms, s.end_ms)),
    );
    if !sim.gates.is_empty() {
        let _ = writeln!(w, "\ngates and windows:");
        for g in &sim.gates {
            let _ = writeln!(
                w,
                "  {:<14} {:<34} {}",
                g.wave,
                g.detail,
                span_text(Some(g.start_ms), Some(g.end_ms))
            );
        }
    }
    let _ = writeln!(w, "\nheld back by (time when it was the binding limit):");
    for b in &sim.bound_by {
        let share = b.ms as f64 * 100.0 / sim.total_ms.max(1) as f64;
        let _ = writeln!(
            w,
            "  {:>5.1}%  {:<10} {}",
            share,
            crate::duration::short_ms(b.ms),
            b.limit
        );
    }
    let _ = writeln!(w, "\ncritical path:");
    for line in path_lines(&sim.critical_path) {
        let _ = writeln!(w, "  {line}");
    }
    failures(w, sim);
    let _ = writeln!(w, "\ndurations per step:");
    for d in &sim.durations {
        let source = serde_json::to_value(d.source)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let _ = writeln!(
            w,
            "  {:<18} {:<8} {}  (rollback {})",
            d.step, source, d.durations, d.rollback
        );
    }
    out
}

/// The run in a few lines: what, the what-if rates, its length and outcome, the hosts'
/// outcomes.
fn overview(w: &mut String, sim: &Simulation) {
    use std::fmt::Write;
    let _ = writeln!(
        w,
        "simulation: {} on {} — {} hosts, {} tasks (seed {}, connections {})",
        sim.playbook,
        sim.inventory,
        thousands(sim.hosts),
        thousands(sim.tasks),
        sim.seed,
        sim.connections
    );
    if sim.fail_rate > 0.0 || sim.unreachable_rate > 0.0 {
        let _ = writeln!(
            w,
            "what-if: {:.2}% of task attempts fail, {:.2}% of hosts unreachable",
            sim.fail_rate * 100.0,
            sim.unreachable_rate * 100.0
        );
    }
    let _ = writeln!(
        w,
        "total: {}  ({} → {}), outcome {}",
        crate::duration::short_ms(sim.total_ms),
        sim.start,
        sim.end,
        sim.outcome
    );
    let outcomes: Vec<String> = sim
        .host_outcomes
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    let _ = writeln!(w, "hosts: {}", outcomes.join(", "));
}

/// How much faster pony is than the rollout done by hand, and where the speed-up comes
/// from (`--compare`).
fn speedups(w: &mut String, sim: &Simulation, base: &Baselines) {
    use std::fmt::Write;
    let speedup = base.speedup(sim);
    let _ = writeln!(
        w,
        "by hand, the same policy (one region after the other, each started by a person, the playbook's max_unavailable, soaks and windows): {}  → pony is {:.1}x faster",
        crate::duration::short_ms(base.same_policy.total_ms),
        speedup.tool
    );
    let _ = writeln!(
        w,
        "by hand, one host per cluster at a time (one region after the other, each started by a person, windows kept, no soaks): {}  → pony is {:.1}x faster",
        crate::duration::short_ms(base.one_host.total_ms),
        speedup.total
    );
    let _ = writeln!(
        w,
        "of the {:.1}x: {:.1}x from the tool (regions in parallel, no waiting for a person between them), {:.1}x from the policy (the playbook's max_unavailable instead of one host at a time)",
        speedup.total, speedup.tool, speedup.policy
    );
}

/// Failed tasks, budgets exceeded, rollbacks (the first ten) and failed waves, when any.
fn failures(w: &mut String, sim: &Simulation) {
    use std::fmt::Write;
    let f = &sim.failures;
    if f.failed_tasks > 0 || !f.rollbacks.is_empty() || !f.waves_failed.is_empty() {
        let _ = writeln!(
            w,
            "\nfailures: {} failed tasks, {} rollbacks ({} rollback commands)",
            f.failed_tasks,
            f.rollbacks.len(),
            f.rollback_commands
        );
        for b in &f.budgets_exceeded {
            let _ = writeln!(w, "  budget: {b}");
        }
        for r in f.rollbacks.iter().take(10) {
            let _ = writeln!(
                w,
                "  rollback of {} ({} hosts) {}{}",
                r.scope,
                r.hosts,
                span_text(Some(r.start_ms), r.end_ms),
                if r.ok == Some(false) { " FAILED" } else { "" }
            );
        }
        if f.rollbacks.len() > 10 {
            let _ = writeln!(w, "  … and {} more rollbacks", f.rollbacks.len() - 10);
        }
        for wf in &f.waves_failed {
            let _ = writeln!(w, "  {wf}");
        }
    }
}

/// A titled list of waves or regions: each one's hosts, its start and its end.
fn spans<'a>(
    w: &mut String,
    title: &str,
    rows: impl Iterator<Item = (&'a String, usize, Option<u64>, Option<u64>)>,
) {
    use std::fmt::Write;
    let _ = writeln!(w, "\n{title}:");
    for (name, hosts, start, end) in rows {
        let _ = writeln!(
            w,
            "  {:<14} {:>6} hosts  {}",
            name,
            thousands(hosts),
            span_text(start, end)
        );
    }
}

fn span_text(start: Option<u64>, end: Option<u64>) -> String {
    match (start, end) {
        (Some(s), Some(e)) => format!(
            "{:>9} → {:<9} ({})",
            crate::duration::short_ms(s),
            crate::duration::short_ms(e),
            crate::duration::short_ms(e.saturating_sub(s))
        ),
        _ => "not started".to_string(),
    }
}

/// The critical path with a host's consecutive tasks on one line.
fn path_lines(parts: &[PathPart]) -> Vec<String> {
    let mut lines: Vec<(String, Vec<String>, u64, u64)> = Vec::new();
    for part in parts {
        let (who, what) = match part.what.split_once('@') {
            Some((step, host)) => (host.to_string(), step.to_string()),
            None => (part.what.clone(), String::new()),
        };
        match lines.last_mut() {
            Some(last) if last.0 == who && !what.is_empty() => {
                last.1.push(what);
                last.3 = part.end_ms;
            }
            _ => lines.push((
                who,
                vec![what].into_iter().filter(|s| !s.is_empty()).collect(),
                part.start_ms,
                part.end_ms,
            )),
        }
    }
    let total = lines.len();
    let mut out: Vec<String> = lines
        .into_iter()
        .map(|(who, steps, s, e)| {
            let steps = if steps.is_empty() {
                String::new()
            } else {
                format!(": {}", steps.join(" → "))
            };
            format!(
                "{:>9} → {:<9} {who}{steps}",
                crate::duration::short_ms(s),
                crate::duration::short_ms(e)
            )
        })
        .collect();
    if total > 16 {
        let tail = out.split_off(total - 8);
        out.truncate(8);
        out.push(format!("          … {} more", total - 16));
        out.extend(tail);
    }
    out
}
