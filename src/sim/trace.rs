//! What a simulated run did, and when: the scheduler's events as they come out, each
//! stamped with the virtual time elapsed since the run started. This is the simulation's
//! event consumer in place of the journal and the reporters: every `durable` event is
//! acknowledged at once (nothing is written), so the run goes on as a deploy's would
//! after its fsync.

use crate::events::{Emitted, Event, HostOutcome, RunOutcome};
use crate::plan::Plan;
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

/// A wait at a wave's gate or window, as the run announced it.
#[derive(Debug, Clone)]
pub struct GateWait {
    pub wave: usize,
    /// A soak, an approval, or a change window.
    pub reason: crate::events::GateReason,
    pub at_ms: u64,
    /// The announced length (0 for an approval, which lasts until the gate passes).
    pub seconds: u64,
}

#[derive(Debug, Clone)]
pub struct RollbackSpan {
    pub scope: String,
    pub hosts: usize,
    pub start_ms: u64,
    pub end_ms: Option<u64>,
    pub ok: Option<bool>,
}

/// The run's end as its summary event told it.
#[derive(Debug, Clone)]
pub struct Ending {
    pub outcome: RunOutcome,
    pub exit_code: i32,
    pub duration_ms: u64,
}

/// Everything the report is computed from. Indexed by node, host or wave.
#[derive(Debug, Default)]
pub struct Trace {
    pub task_start: Vec<Option<u64>>,
    pub task_end: Vec<Option<u64>>,
    pub task_failed: Vec<bool>,
    pub wave_started: Vec<Option<u64>>,
    pub gate_passed: Vec<Option<u64>>,
    pub gate_waits: Vec<GateWait>,
    pub host_outcome: Vec<Option<HostOutcome>>,
    pub host_end: Vec<Option<u64>>,
    /// Per cluster: the first and last moment a rollback command of it ran.
    pub cluster_rollback: Vec<Option<(u64, u64)>>,
    pub rollbacks: Vec<RollbackSpan>,
    pub rollback_commands: usize,
    pub budget_exceeded: Vec<String>,
    pub wave_failed: Vec<String>,
    pub ending: Option<Ending>,
}

impl Trace {
    pub(crate) fn new(plan: &Plan) -> Trace {
        let nodes = plan.graph.node_count();
        let hosts = plan.inventory.hosts.len();
        Trace {
            task_start: vec![None; nodes],
            task_end: vec![None; nodes],
            task_failed: vec![false; nodes],
            wave_started: vec![None; plan.waves.len()],
            gate_passed: vec![None; plan.waves.len()],
            host_outcome: vec![None; hosts],
            host_end: vec![None; hosts],
            cluster_rollback: vec![None; plan.inventory.clusters.len()],
            ..Trace::default()
        }
    }
}

/// Consumes the run's events until the scheduler drops its sink.
pub async fn record(
    plan: Arc<Plan>,
    mut events: UnboundedReceiver<Emitted>,
    started: Instant,
) -> Trace {
    let mut trace = Trace::new(&plan);
    let wave_id = |name: &str| plan.waves.iter().position(|w| w.name == name);
    while let Some(emitted) = events.recv().await {
        if let Some(ack) = emitted.durable {
            let _ = ack.send(());
        }
        let now = started.elapsed().as_millis() as u64;
        if matches!(emitted.event, Event::RollbackTask { .. }) {
            trace.rollback_commands += 1;
        }
        match emitted.event {
            Event::TaskStarted { task } => trace.task_start[task.id] = Some(now),
            Event::TaskFinished { task, .. } => trace.task_end[task.id] = Some(now),
            Event::TaskFailed { task, .. } => {
                trace.task_end[task.id] = Some(now);
                trace.task_failed[task.id] = true;
            }
            Event::TaskSkipped { task, record: Some(_), .. } => trace.task_end[task.id] = Some(now),
            Event::WaveStarted { wave, .. } => {
                if let Some(w) = wave_id(&wave) {
                    trace.wave_started[w].get_or_insert(now);
                }
            }
            // The checks before an approval question take no time of their own in a
            // simulation's picture: the question's wait follows at once.
            Event::GateWaiting {
                reason: crate::events::GateReason::Verify,
                ..
            } => {}
            Event::GateWaiting {
                wave,
                reason,
                seconds,
                ..
            } => {
                if let Some(w) = wave_id(&wave) {
                    trace.gate_waits.push(GateWait {
                        wave: w,
                        reason,
                        at_ms: now,
                        seconds,
                    });
                }
            }
            Event::GatePassed { wave, .. } => {
                if let Some(w) = wave_id(&wave) {
                    trace.gate_passed[w] = Some(now);
                }
            }
            Event::WaveFailed { wave, reason, .. } => {
                trace.wave_failed.push(format!("wave {wave}: {reason}"));
            }
            Event::HostFinished { host, outcome, .. } => {
                if let Some(h) = plan.inventory.host_id(&host) {
                    trace.host_outcome[h] = Some(outcome);
                    trace.host_end[h] = Some(now);
                }
            }
            Event::BudgetExceeded {
                cluster,
                region,
                failed_hosts,
                max_failures,
                action,
            } => trace.budget_exceeded.push(format!(
                "cluster {cluster} ({region}): {failed_hosts} failed > max_failures {max_failures}: {action}"
            )),
            Event::RunBudgetExceeded {
                failed_hosts,
                max_failures_run,
                action,
            } => trace.budget_exceeded.push(format!(
                "run: {failed_hosts} failed > max_failures_run {max_failures_run}: {action}"
            )),
            Event::RollbackStarted { scope, hosts } => trace.rollbacks.push(RollbackSpan {
                scope,
                hosts,
                start_ms: now,
                end_ms: None,
                ok: None,
            }),
            Event::RollbackTaskStarted { task } | Event::RollbackTask { task, .. } => {
                if let Some(h) = plan.inventory.host_id(&task.host) {
                    let cluster = plan.inventory.hosts[h].cluster;
                    let span = trace.cluster_rollback[cluster].get_or_insert((now, now));
                    span.1 = now;
                }
            }
            Event::RollbackFinished { scope, ok } => {
                if let Some(span) = trace
                    .rollbacks
                    .iter_mut()
                    .rev()
                    .find(|s| s.scope == scope && s.end_ms.is_none())
                {
                    span.end_ms = Some(now);
                    span.ok = Some(ok);
                }
            }
            Event::Summary {
                outcome,
                exit_code,
                duration_ms,
                ..
            } => {
                trace.ending = Some(Ending {
                    outcome,
                    exit_code,
                    duration_ms,
                })
            }
            _ => {}
        }
    }
    trace
}
