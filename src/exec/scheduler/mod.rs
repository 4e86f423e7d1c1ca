//! The scheduler: one event loop that owns all run state and is the only voice of the
//! run (it alone emits events; workers return results). A task starts the moment its last
//! dependency succeeded and its record is on disk (in-degree counters, no polling),
//! bounded by [`Admission`]; failures go through the pure [`policy`]; rollbacks follow a
//! [`RollbackOrder`]; the end is the pure [`outcome`].
//!
//! This file holds the run's state and the loop that waits on its workers, timers and
//! commands; each kind of thing the loop answers is a file beside it: readiness and
//! slots (`admit`), a task's start, result and release (`tasks`), wave gates (`gates`,
//! `verify`), stops and the end (`stops`), rollback and resume (`recovery`), live
//! control (`control`) and lost controllers (`controllers`).

use self::budgets::Budgets;
use self::fleet::Fleet;
use self::nodes::Nodes;
use self::rollback_jobs::RollbackJobs;
use self::workers::{Timer, Workers};
use super::admission::Admission;
use super::hosts::HostPool;
use super::outcome::Ending;
use super::{ExecOptions, Mode, RunReport};
use crate::events::{Event, EventSink, TaskRef};
use crate::inventory::pattern::HostSet;
use crate::inventory::HostId;
use crate::plan::{NodeId, Plan};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedReceiver;

mod admit;
mod budgets;
mod chains;
mod control;
mod controllers;
mod fleet;
mod gates;
mod health;
mod nodes;
mod recovery;
mod rollback_jobs;
mod stops;
mod tasks;
mod verify;
mod workers;

/// How far the run may still go, and what its end will say.
struct Course {
    stop: Stop,
    /// What stopped it (a halt, an interrupt, an approval awaited, a rollback only).
    ending: Ending,
    /// The wave whose gate failed, for the summary.
    stopped_wave: Option<String>,
    started: tokio::time::Instant,
    /// The interrupt count last acted on.
    interrupts_taken: u32,
}

impl Course {
    fn new() -> Self {
        Course {
            stop: Stop::No,
            ending: Ending::default(),
            stopped_wave: None,
            started: tokio::time::Instant::now(),
            interrupts_taken: 0,
        }
    }
}

/// How far the run may still go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Going.
    No,
    /// First interrupt: no new host starts; hosts in flight finish every task.
    Draining,
    /// Nothing new starts anywhere.
    All,
}

#[derive(Default)]
struct WaveRun {
    /// Why a cluster of the wave went beyond its budget: its gate never passes.
    failed: Option<String>,
    /// Tasks waiting for the wave's change window per time zone (a `local` window opens
    /// at a different instant in every zone); a zone is present while its timer runs.
    window_held: HashMap<String, Vec<NodeId>>,
    /// The `verify:` checks of its gate.
    soak: verify::Soak,
    /// Failed hosts of the wave, and its `max_failures` resolved to a count.
    failed_hosts: usize,
    max_failures: Option<usize>,
    /// Its gate became ready while hosts of it were checked after their deploy: it is
    /// made ready again once they are judged.
    gate_after_health: bool,
}

struct Scheduler {
    plan: Arc<Plan>,
    pool: Arc<HostPool>,
    sink: EventSink,
    options: ExecOptions,
    nodes: Nodes,
    fleet: Fleet,
    admission: Admission,
    budgets: Budgets,
    waves: Vec<WaveRun>,
    course: Course,
    rollbacks: RollbackJobs,
    /// What the loop waits for.
    workers: Workers,
    /// Per `health:` check, the hosts it applies to (resolved once, not per host).
    health_targets: Vec<HostSet>,
    live: control::Live,
    /// Chains of tasks running in one round trip.
    chains: chains::Chains,
}

/// The next message of a channel the loop listens to (live control, lost controllers);
/// never resolves without one (no control socket, one controller) or once it closed.
async fn next_message<T>(channel: &mut Option<UnboundedReceiver<T>>) -> T {
    if let Some(receiver) = channel.as_mut() {
        if let Some(message) = receiver.recv().await {
            return message;
        }
        *channel = None;
    }
    std::future::pending().await
}

/// Runs the plan to the end and reports how it went.
pub async fn run(
    plan: Arc<Plan>,
    pool: Arc<HostPool>,
    options: ExecOptions,
    sink: EventSink,
) -> RunReport {
    let inventory = plan.inventory.clone();
    let strategy = &plan.playbook.strategy;
    let fleet = Fleet::new(&plan);
    let limits = plan.cluster_limits();
    let admission = Admission::new(
        limits.iter().map(|l| l.max_unavailable).collect(),
        options.connections,
    );
    let hosts_with_tasks = fleet.with_tasks(0..inventory.hosts.len());
    let max_failures_run = strategy.max_failures_run.map(|l| l.of(hosts_with_tasks));
    let budgets = Budgets::new(limits.iter().map(|l| l.max_failures), max_failures_run);
    let waves = plan
        .waves
        .iter()
        .zip(&strategy.waves)
        .map(|(wave, spec)| {
            let with_tasks = fleet.with_tasks(wave.hosts.iter().copied());
            WaveRun {
                max_failures: spec.max_failures.map(|l| l.of(with_tasks)),
                ..WaveRun::default()
            }
        })
        .collect();
    let scheduler = Scheduler {
        nodes: Nodes::new(&plan),
        fleet,
        admission,
        budgets,
        waves,
        course: Course::new(),
        rollbacks: RollbackJobs::default(),
        workers: Workers::default(),
        health_targets: health::targets(&plan),
        live: control::Live::default(),
        chains: chains::Chains::default(),
        plan,
        pool: pool.clone(),
        sink,
        options,
    };
    let keeper = super::dead_man::DeadMen::keep(pool.clone());
    let report = scheduler.main_loop().await;
    pool.dead_men().finish(keeper).await;
    report
}

impl Scheduler {
    /// The one place events leave the run: secrets are redacted here, once.
    fn emit(&self, event: Event) {
        if self.concerns_remote(&event) {
            return;
        }
        self.sink.emit(event.redacted(&self.options.redactor));
    }

    /// Emits an event the run must not go past before the journal has it; the future
    /// tells whether it got there (another controller's event is its owner's to journal).
    fn emit_durable(&self, event: Event) -> impl Future<Output = bool> {
        let durable = (!self.concerns_remote(&event)).then(|| {
            self.sink
                .emit_durable(event.redacted(&self.options.redactor))
        });
        async move {
            match durable {
                Some(durable) => durable.await,
                None => true,
            }
        }
    }

    /// An event about another controller's region (`--regions`): its owner emits it.
    fn concerns_remote(&self, event: &Event) -> bool {
        self.options
            .split
            .as_ref()
            .is_some_and(|split| split.concerns_remote(event))
    }

    /// A host of another controller's region: its tasks are awaited, never started.
    fn is_remote(&self, host: HostId) -> bool {
        let region = self.plan.inventory.hosts[host].region;
        self.options
            .split
            .as_ref()
            .is_some_and(|split| !split.is_local(region))
    }

    fn task_ref(&self, node: NodeId) -> TaskRef {
        let task = self.plan.task(node).expect("a task");
        let inventory = &self.plan.inventory;
        let host = &inventory.hosts[task.host];
        TaskRef {
            id: node.index(),
            step: self.plan.playbook.steps[task.step].name.clone(),
            host: host.name.clone(),
            region: inventory.regions[host.region].name.clone(),
            cluster: inventory.clusters[host.cluster].name.clone(),
            wave: self.plan.waves[task.wave].name.clone(),
            label: self.plan.label(node),
        }
    }

    fn stopped(&self) -> bool {
        self.course.stop != Stop::No
    }

    /// A wave starts only in a deploy (a rollback has none), and only with hosts; a
    /// resume announces the first wave left (its gate not passed, not the failed wave it
    /// skips), not the run's first.
    fn announce_first_wave(&self) {
        let first = match (&self.options.mode, &self.options.replay) {
            (Mode::Deploy, None) => self.plan.waves.first(),
            (Mode::Deploy, Some(replay)) => {
                let skipped = self.options.skip_failed_wave.as_deref();
                self.plan.waves.iter().find(|w| {
                    !replay.gates_passed.contains(&w.name) && Some(w.name.as_str()) != skipped
                })
            }
            (Mode::Rollback(_), _) => None,
        };
        if let Some(first) = first.filter(|w| !w.hosts.is_empty()) {
            self.emit(Event::WaveStarted {
                wave: first.name.clone(),
                hosts: first.hosts.len(),
            });
        }
    }

    /// What is ready first: the plan's roots, what a resume left to do, or a rollback.
    fn start(&mut self) {
        match (self.options.mode.clone(), self.options.replay.take()) {
            (Mode::Deploy, None) => {
                for node in self.plan.ready_at_start() {
                    self.ready(node);
                }
            }
            (Mode::Deploy, Some(replay)) => {
                // A gate that asked its question before the stop had soaked already.
                for (wave, run) in self.plan.waves.iter().zip(&mut self.waves) {
                    run.soak.over = replay.soaked.contains(&wave.name);
                }
                self.resume_from(&replay)
            }
            (Mode::Rollback(hosts), replay) => {
                self.rollback_from(&replay.unwrap_or_default(), hosts)
            }
        }
    }

    async fn main_loop(mut self) -> RunReport {
        self.announce_first_wave();
        // Commands queued before the run started (the pause in force when a controller
        // joins a split run) apply before any host starts.
        let mut control = self.options.control.take();
        while let Some(request) = control.as_mut().and_then(|c| c.try_recv().ok()) {
            self.control(request);
        }
        self.start();
        let mut interrupts = self.options.interrupts.clone();
        let mut losses = self.options.split.as_ref().and_then(|s| s.take_losses());
        loop {
            self.start_due_rollbacks();
            self.cut_stopped_chains();
            if self.workers.idle(self.stopped()) && !self.waits_for_continue() {
                if self.course.stop == Stop::No && self.break_stall() {
                    continue;
                }
                break;
            }
            tokio::select! {
                Some(joined) = self.workers.tasks.join_next() => match joined {
                    Ok((node, run, log)) => self.finished(node, run, log),
                    Err(e) => tracing::error!("task panicked or was aborted: {e}"),
                },
                Some(Ok((node, run, log))) = self.workers.remote.join_next() => self.finished(node, run, log),
                Some(Ok((node, ok, journaled))) = self.workers.syncing.join_next() => {
                    if !journaled {
                        self.journal_lost();
                    }
                    self.release(node, ok && journaled)
                }
                // An aborted timer (an interrupt ends every wait) completes this select
                // like any other: a pattern that did not match would leave it waiting on
                // the remaining branches for good.
                Some(joined) = self.workers.timers.join_next() => match joined {
                    Err(_) => {}
                    Ok(Timer::Approved(wave, approved)) => self.answered(wave, approved),
                    Ok(Timer::Paused(wave)) if self.plan.playbook.strategy.waves[wave].verify.is_empty() => self.soaked(wave),
                    Ok(Timer::Paused(wave)) => self.soak_part_done(wave),
                    Ok(Timer::WindowOpen(wave, zone)) => self.window_opened(wave, &zone),
                    Ok(Timer::CheckDue(round)) => self.check_due(round),
                    Ok(Timer::Checked(done)) => self.checked(*done),
                },
                Some(joined) = self.workers.chains.join_next() => if let Err(e) = joined {
                    if !e.is_cancelled() {
                        tracing::error!("a chain's driver panicked: {e}");
                    }
                },
                Some(joined) = self.workers.rollbacks.join_next() => match joined {
                    Ok(done) => self.rollback_command_done(done),
                    Err(e) => tracing::error!("rollback panicked or was aborted: {e}"),
                },
                Some(joined) = self.workers.health.join_next() => match joined {
                    Ok(done) => self.health_judged(done),
                    Err(e) => tracing::error!("a health check panicked or was aborted: {e}"),
                },
                request = next_message(&mut control) => self.control(request),
                loss = next_message(&mut losses) => self.controller_lost(loss).await,
                Ok(()) = interrupts.changed() => {
                    let count = *interrupts.borrow();
                    self.interrupt(count).await;
                }
            }
        }
        self.finish().await
    }
}
