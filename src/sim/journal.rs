//! A real run as the simulator's [`Trace`]: each task's start and end, the gates' waits
//! and passings, read from the run's journal ([`Timing`]), so the run page of `pony
//! serve` draws the real timeline with the simulation's own code ([`super::svg`]) beside
//! the simulated one.

use super::report::Simulation;
use super::trace::{Ending, GateWait, Trace};
use super::SimOptions;
use crate::events::GateReason;
use crate::plan::Plan;
use crate::state::runs::timing::Timing;
use std::time::Duration;

/// The trace of the journal's times so far.
pub fn trace(plan: &Plan, timing: &Timing) -> Trace {
    let mut trace = Trace::new(plan);
    let nodes = trace.task_start.len();
    let wave_id = |name: &str| plan.waves.iter().position(|w| w.name == name);
    for task in timing.tasks.iter().filter(|t| t.node < nodes) {
        trace.task_start[task.node] = Some(task.start_ms);
        // A task still running is drawn up to the journal's last moment.
        trace.task_end[task.node] = Some(task.end_ms.unwrap_or(timing.last_ms.max(task.start_ms)));
        trace.task_failed[task.node] = task.failed;
    }
    for (node, task) in plan.tasks() {
        let n = node.index();
        let (Some(start), Some(end)) = (trace.task_start[n], trace.task_end[n]) else {
            continue;
        };
        let wave = &mut trace.wave_started[task.wave];
        *wave = Some(wave.map_or(start, |w| w.min(start)));
        if task.per == crate::playbook::Per::Host {
            let host = &mut trace.host_end[task.host];
            *host = Some(host.map_or(end, |h| h.max(end)));
        }
    }
    for gate in &timing.gates {
        let Some(w) = wave_id(&gate.wave) else {
            continue;
        };
        if let Some(passed) = gate.passed_ms {
            trace.gate_passed[w] = Some(passed);
        }
        // As in a simulation: the checks before a question are not drawn.
        if gate.reason != GateReason::Verify {
            trace.gate_waits.push(GateWait {
                wave: w,
                reason: gate.reason.clone(),
                at_ms: gate.at_ms,
                seconds: gate.seconds,
            });
        }
    }
    if let Some((outcome, exit_code, ms)) = &timing.finished {
        if let Ok(outcome) = serde_json::from_value(outcome.clone()) {
            trace.ending = Some(Ending {
                outcome,
                exit_code: *exit_code,
                duration_ms: *ms,
            });
        }
    }
    trace
}

/// The real run as a [`Simulation`] to draw: regions, clusters' bars per wave, gates.
pub fn timeline(plan: &Plan, timing: &Timing) -> Simulation {
    let options = SimOptions {
        seed: 0,
        fail: 0.0,
        unreachable: 0.0,
        failing: Vec::new(),
        start: timing.start.into(),
        approve_after: Duration::ZERO,
        connections: None,
    };
    let mut sim = Simulation::drawn(plan, &trace(plan, timing), &options, Vec::new());
    // A running run's picture reaches its journal's last moment.
    if sim.total_ms < timing.last_ms && timing.finished.is_none() {
        sim.total_ms = timing.last_ms;
    }
    sim
}
