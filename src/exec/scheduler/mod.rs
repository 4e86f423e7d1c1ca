//! The scheduler: one event loop that owns all run state and is the only voice of the
//! run (it alone emits events; workers return results). A task starts the moment its last
//! dependency succeeded and its record is on disk (in-degree counters, no polling),
//! bounded by [`Admission`]; failures go through the pure [`policy`]; rollbacks follow a
//! [`RollbackOrder`]; the end is the pure [`outcome`].

use super::admission::Admission;
use super::host_run::{HostRun, Phase};
use super::hosts::HostPool;
use super::outcome::{self, Ending, Tally};
use super::policy::{self, FailureAction};
use super::rollback::{RollbackCommand, RollbackOrder, RollbackScope};
use super::task::{self, TaskRun, TaskSpec};
use super::{change_window, ApprovalRequest, ExecOptions, Mode, RunReport};
use crate::events::{Event, EventSink, HostOutcome, TaskRecord, TaskRef};
use crate::inventory::pattern::HostSet;
use crate::inventory::{HostId, Vars};
use crate::plan::{Node, NodeId, Plan, Task};
use crate::playbook::{Per, RollbackPace};
use crate::state::replay::{Replay, TaskState};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

/// Lines of output kept in events and the journal.
const TAIL_LINES: usize = 10;

mod control;
mod controllers;
mod gates;
mod recovery;
mod stops;
mod verify;

/// Something the loop waits for besides tasks.
enum Timer {
    /// A person answered at a wave's `approve:` gate.
    Approved(usize, bool),
    /// A wave's `pause:` elapsed.
    Paused(usize),
    /// A wave's change window opened for the hosts in this time zone.
    WindowOpen(usize, String),
    /// A round of a wave's `verify:` check is due.
    CheckDue(verify::CheckRound),
    /// A round of a wave's `verify:` check is back.
    Checked(Box<verify::Checked>),
}

/// A task node's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Queued,
    Running,
    Succeeded,
    Failed,
    Skipped,
    Cancelled,
    Held,
}

impl State {
    fn is_done(self) -> bool {
        matches!(
            self,
            State::Succeeded | State::Failed | State::Skipped | State::Cancelled
        )
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

struct ClusterBudget {
    failed_hosts: usize,
    max_failures: usize,
}

#[derive(Default)]
struct RegionRun {
    stopped: bool,
    running: usize,
    rollback_due: bool,
    captures: Vars,
    finished: Duration,
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
}

/// A finished rollback command, back from its worker.
struct RollbackRun {
    job: usize,
    node: NodeId,
    run: TaskRun,
}

struct Scheduler {
    plan: Arc<Plan>,
    pool: Arc<HostPool>,
    sink: EventSink,
    options: ExecOptions,
    state: Vec<State>,
    remaining: Vec<usize>,
    /// Tasks a `creates`/`unless` guard skipped: they changed nothing, so they are not
    /// rolled back.
    unchanged: Vec<bool>,
    hosts: Vec<HostRun>,
    admission: Admission,
    budgets: Vec<ClusterBudget>,
    regions: Vec<RegionRun>,
    waves: Vec<WaveRun>,
    run_captures: Vars,
    stop: Stop,
    ending: Ending,
    all_rollback_due: bool,
    /// Failed hosts over the whole run, and the run-wide budget resolved to a count.
    run_failed_hosts: usize,
    /// Hosts skipped under `unreachable: skip`.
    unreachable_hosts: usize,
    max_failures_run: Option<usize>,
    stopped_wave: Option<String>,
    /// Running tasks; each comes back with its run and the text for its host's log.
    running: JoinSet<(NodeId, TaskRun, String)>,
    /// Other controllers' tasks (`--regions`) whose results are awaited from the shared
    /// journal. A stopped run does not wait for them: tasks their owner cancelled
    /// leave no record.
    remote: JoinSet<(NodeId, TaskRun, String)>,
    /// Finished tasks whose record is being synced; their dependents wait for it.
    syncing: JoinSet<(NodeId, bool)>,
    timers: JoinSet<Timer>,
    rollbacks: Vec<Option<RollbackOrder>>,
    rollback_runs: JoinSet<RollbackRun>,
    /// Failed hosts whose own rollback is due once nothing of theirs runs (kept here so
    /// that the loop does not scan every host after every event).
    rollback_due_hosts: Vec<HostId>,
    started: tokio::time::Instant,
    live: control::Live,
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
    let node_count = plan.graph.node_count();
    let mut hosts: Vec<HostRun> = (0..inventory.hosts.len())
        .map(|_| HostRun::default())
        .collect();
    for (_, task) in plan.tasks() {
        let host = &mut hosts[task.host];
        host.left_tasks += 1;
        if task.per == Per::Host {
            host.left_host_tasks += 1;
        }
    }
    let limits = plan.cluster_limits();
    let admission = Admission::new(
        limits.iter().map(|l| l.max_unavailable).collect(),
        options.connections,
    );
    let budgets = limits
        .iter()
        .map(|l| ClusterBudget {
            failed_hosts: 0,
            max_failures: l.max_failures,
        })
        .collect();
    let hosts_with_tasks = (0..inventory.hosts.len())
        .filter(|&h| hosts[h].left_tasks > 0)
        .count();
    let max_failures_run = strategy.max_failures_run.map(|l| l.of(hosts_with_tasks));
    let waves = plan
        .waves
        .iter()
        .zip(&strategy.waves)
        .map(|(wave, spec)| {
            let with_tasks = wave.hosts.iter().filter(|&&h| hosts[h].left_tasks > 0);
            WaveRun {
                max_failures: spec.max_failures.map(|l| l.of(with_tasks.count())),
                ..WaveRun::default()
            }
        })
        .collect();
    let scheduler = Scheduler {
        remaining: plan.in_degrees(),
        state: vec![State::Waiting; node_count],
        unchanged: vec![false; node_count],
        hosts,
        admission,
        budgets,
        regions: (0..inventory.regions.len())
            .map(|_| RegionRun::default())
            .collect(),
        waves,
        run_captures: Vars::new(),
        stop: Stop::No,
        ending: Ending::default(),
        all_rollback_due: false,
        run_failed_hosts: 0,
        unreachable_hosts: 0,
        max_failures_run,
        stopped_wave: None,
        running: JoinSet::new(),
        remote: JoinSet::new(),
        syncing: JoinSet::new(),
        timers: JoinSet::new(),
        rollbacks: Vec::new(),
        rollback_runs: JoinSet::new(),
        rollback_due_hosts: Vec::new(),
        started: tokio::time::Instant::now(),
        live: control::Live::default(),
        plan,
        pool,
        sink,
        options,
    };
    scheduler.main_loop().await
}

impl Scheduler {
    /// The one place events leave the run: secrets are redacted here, once.
    fn emit(&self, event: Event) {
        if self.concerns_remote(&event) {
            return;
        }
        self.sink.emit(event.redacted(&self.options.redactor));
    }

    /// Emits a fact that must be on disk before the run goes past it.
    fn emit_durable(&self, event: Event) -> impl Future<Output = ()> {
        let durable = (!self.concerns_remote(&event)).then(|| {
            self.sink
                .emit_durable(event.redacted(&self.options.redactor))
        });
        async move {
            if let Some(durable) = durable {
                durable.await;
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
        self.stop != Stop::No
    }

    async fn main_loop(mut self) -> RunReport {
        // A wave starts only in a deploy (a rollback has none), and only with hosts.
        let first = self.plan.waves.first().filter(|w| !w.hosts.is_empty());
        if let Some(first) = first.filter(|_| matches!(self.options.mode, Mode::Deploy)) {
            self.emit(Event::WaveStarted {
                wave: first.name.clone(),
                hosts: first.hosts.len(),
            });
        }
        // Commands queued before the run started (the pause in force when a controller
        // joins a split run) apply before any host starts.
        let mut control = self.options.control.take();
        while let Some(request) = control.as_mut().and_then(|c| c.try_recv().ok()) {
            self.control(request);
        }
        match (self.options.mode.clone(), self.options.replay.take()) {
            (Mode::Deploy, None) => {
                for node in self.plan.ready_at_start() {
                    self.ready(node);
                }
            }
            (Mode::Deploy, Some(replay)) => self.resume_from(&replay),
            (Mode::Rollback(hosts), replay) => {
                self.rollback_from(&replay.unwrap_or_default(), hosts)
            }
        }
        let mut interrupts = self.options.interrupts.clone();
        let mut losses = self.options.split.as_ref().and_then(|s| s.take_losses());
        loop {
            self.start_due_rollbacks();
            if self.running.is_empty()
                && self.syncing.is_empty()
                && self.timers.is_empty()
                && self.rollback_runs.is_empty()
                && (self.remote.is_empty() || self.stopped())
                && !self.waits_for_continue()
            {
                if self.stop == Stop::No && self.break_stall() {
                    continue;
                }
                break;
            }
            tokio::select! {
                Some(joined) = self.running.join_next() => match joined {
                    Ok((node, run, log)) => self.finished(node, run, log),
                    Err(e) => tracing::error!("task panicked or was aborted: {e}"),
                },
                Some(Ok((node, run, log))) = self.remote.join_next() => self.finished(node, run, log),
                Some(Ok((node, ok))) = self.syncing.join_next() => self.release(node, ok),
                // An aborted timer (an interrupt ends every wait) completes this select
                // like any other: a pattern that did not match would leave it waiting on
                // the remaining branches for good.
                Some(joined) = self.timers.join_next() => match joined {
                    Err(_) => {}
                    Ok(Timer::Approved(wave, approved)) => self.answered(wave, approved),
                    Ok(Timer::Paused(wave)) if self.plan.playbook.strategy.waves[wave].verify.is_empty() => self.pass_gate(wave),
                    Ok(Timer::Paused(wave)) => self.soak_part_done(wave),
                    Ok(Timer::WindowOpen(wave, zone)) => self.window_opened(wave, &zone),
                    Ok(Timer::CheckDue(round)) => self.check_due(round),
                    Ok(Timer::Checked(done)) => self.checked(*done),
                },
                Some(joined) = self.rollback_runs.join_next() => match joined {
                    Ok(done) => self.rollback_command_done(done),
                    Err(e) => tracing::error!("rollback panicked or was aborted: {e}"),
                },
                request = control::next_request(&mut control) => self.control(request),
                loss = controllers::next_loss(&mut losses) => self.controller_lost(loss).await,
                Ok(()) = interrupts.changed() => {
                    let count = *interrupts.borrow();
                    self.interrupt(count).await;
                }
            }
        }
        self.finish().await
    }

    // ----- readiness and admission -----

    fn ready(&mut self, node: NodeId) {
        match self.plan.graph[node] {
            Node::Join { .. } => {
                self.state[node.index()] = State::Succeeded;
                self.release(node, true);
            }
            Node::Gate(wave) => self.gate_ready(wave, node),
            Node::Task(task) => {
                if self.may_start(task.host) {
                    self.admit(node, task);
                } else {
                    self.cancel(node);
                }
            }
        }
    }

    /// Whether a task of this host may still start.
    fn may_start(&self, host: HostId) -> bool {
        let h = &self.hosts[host];
        let region = self.plan.inventory.hosts[host].region;
        match self.stop {
            Stop::All => false,
            Stop::Draining => h.phase == Phase::Active && !self.regions[region].stopped,
            Stop::No => !h.failed() && !self.regions[region].stopped,
        }
    }

    fn admit(&mut self, node: NodeId, task: Task) {
        let host = task.host;
        // Its own controller admits it (slots, windows, pauses); here it is only awaited.
        if self.is_remote(host) {
            self.spawn(node);
            return;
        }
        let cluster = self.plan.inventory.hosts[host].cluster;
        let active = self.hosts[host].phase == Phase::Active;
        let starts_host = task.per != Per::Host || !active;
        if starts_host && self.hold_while_paused(node, &task) {
            return;
        }
        if starts_host && self.hold_for_window(node, task.wave) {
            return;
        }
        if task.per != Per::Host || active {
            self.spawn(node);
            return;
        }
        if self.admission.has_room(cluster) {
            self.activate(host);
            self.spawn(node);
            return;
        }
        self.state[node.index()] = State::Queued;
        let h = &mut self.hosts[host];
        h.pending.push(node);
        if h.phase == Phase::Idle {
            h.phase = Phase::Queued;
            self.admission.enqueue(cluster, host);
        }
    }

    /// A wave's hosts start only inside its change window; returns whether `node` waits.
    /// A `local` window is the host's own inventory `tz` (UTC without one).
    fn hold_for_window(&mut self, node: NodeId, wave: usize) -> bool {
        let Some(window) = &self.plan.playbook.strategy.waves[wave].window else {
            return false;
        };
        let host = self.plan.task(node).expect("a task").host;
        let mut window = window.clone();
        if window.time_zone == crate::playbook::strategy::LOCAL {
            let tz = self.plan.inventory.hosts[host].tz.as_deref();
            window.time_zone = tz.unwrap_or("UTC").to_string();
        }
        let Some(wait) = change_window::wait_until_open(&window, self.options.clock.now()) else {
            return false;
        };
        self.state[node.index()] = State::Queued;
        let zone = window.time_zone.clone();
        let local = window.text.ends_with(crate::playbook::strategy::LOCAL);
        let held = &mut self.waves[wave].window_held;
        if let Some(nodes) = held.get_mut(&zone) {
            nodes.push(node);
            return true;
        }
        held.insert(zone.clone(), vec![node]);
        let text = if local {
            format!("{} ({zone})", window.text)
        } else {
            window.text.clone()
        };
        self.emit(Event::GateWaiting {
            wave: self.plan.waves[wave].name.clone(),
            reason: format!("window {text}"),
            seconds: wait.as_secs(),
        });
        self.timers.spawn(async move {
            tokio::time::sleep(wait).await;
            Timer::WindowOpen(wave, zone)
        });
        true
    }

    fn window_opened(&mut self, wave: usize, zone: &str) {
        for node in self.waves[wave]
            .window_held
            .remove(zone)
            .unwrap_or_default()
        {
            if self.state[node.index()] == State::Queued {
                self.state[node.index()] = State::Waiting;
                self.ready(node);
            }
        }
    }

    fn activate(&mut self, host: HostId) {
        let cluster = self.plan.inventory.hosts[host].cluster;
        let h = &mut self.hosts[host];
        h.phase = Phase::Active;
        h.slot = true;
        self.admission.take(cluster);
    }

    /// Gives the host's slot back and lets waiting hosts in.
    fn free_slot(&mut self, host: HostId) {
        if !std::mem::take(&mut self.hosts[host].slot) {
            return;
        }
        self.admission
            .give_back(self.plan.inventory.hosts[host].cluster);
        self.connections_freed();
    }

    /// Room came back: queued check rounds, then waiting hosts (unless paused), take it.
    fn connections_freed(&mut self) {
        self.start_queued_checks();
        if !self.admits_queued_hosts() {
            return;
        }
        while let Some((_, next)) = self.admission.next_admissible() {
            self.start_queued_host(next);
        }
    }

    fn start_queued_host(&mut self, host: HostId) {
        let pending = std::mem::take(&mut self.hosts[host].pending);
        self.hosts[host].phase = Phase::Idle;
        if self.stop != Stop::No || !self.may_start(host) {
            pending.into_iter().for_each(|n| self.cancel(n));
            return;
        }
        self.activate(host);
        for node in pending {
            self.spawn(node);
        }
    }

    /// When nothing runs but hosts wait for slots held by hosts that only wait for
    /// others (a region-wide `needs`), one more host is let in rather than deadlock.
    fn break_stall(&mut self) -> bool {
        let Some((cluster, host)) = self.admission.pop_any_waiting() else {
            return false;
        };
        tracing::warn!(
            "max_unavailable slots of cluster {} are held by hosts waiting on other hosts; letting one more in",
            self.plan.inventory.clusters[cluster].name
        );
        self.start_queued_host(host);
        true
    }

    // ----- running tasks -----

    fn context(&self, task: &Task) -> minijinja::Value {
        let mut captures = self.run_captures.clone();
        let region = self.plan.inventory.hosts[task.host].region;
        captures.extend(self.regions[region].captures.clone());
        captures.extend(self.hosts[task.host].captures.clone());
        task::context(&self.plan, task, &self.options.run_id, &captures)
    }

    fn spawn(&mut self, node: NodeId) {
        let task = *self.plan.task(node).expect("a task");
        let step = &self.plan.playbook.steps[task.step];
        self.state[node.index()] = State::Running;
        let region = self.plan.inventory.hosts[task.host].region;
        self.regions[region].running += 1;
        let h = &mut self.hosts[task.host];
        h.running += 1;
        h.touched = true;
        let rendered: Result<TaskSpec, String> =
            task::render_task(&self.plan, step, &self.context(&task));
        let task_ref = self.task_ref(node);
        let label = task_ref.label.clone();
        // The start is on disk before the command starts.
        let durable = self.emit_durable(Event::TaskStarted { task: task_ref });
        if let Some(split) = self
            .options
            .split
            .as_ref()
            .filter(|_| self.is_remote(task.host))
        {
            let result = split.outcome(node.index());
            self.remote
                .spawn(async move { (node, result.await, String::new()) });
            return;
        }
        let pool = self.pool.clone();
        let work = task::Work {
            node: node.index(),
            step: task.step,
            host: task.host,
            rollback: false,
        };
        self.running.spawn(task::WORK.scope(work, async move {
            durable.await;
            let run = match rendered {
                Ok(spec) => task::execute(&pool, task.runs_on(), &spec).await,
                Err(error) => TaskRun::not_started(error),
            };
            // Built here, off the scheduler's thread: it copies all of the task's output.
            let log = task::log_text(&label, &run);
            (node, run, log)
        }));
    }

    fn finished(&mut self, node: NodeId, run: TaskRun, log: String) {
        let task = *self.plan.task(node).expect("a task");
        let region = self.plan.inventory.hosts[task.host].region;
        self.regions[region].running -= 1;
        self.hosts[task.host].running -= 1;
        self.unchanged[node.index()] = !run.changed_host();
        let task_ref = self.task_ref(node);
        let record = TaskRecord {
            captures: run.captured.iter().cloned().collect(),
            output_tail: run.tail(TAIL_LINES),
            changed: run.changed_host(),
            error: run.error.clone(),
            log,
        };
        let duration_ms = run.duration.as_millis() as u64;
        let event = if !run.ok {
            Event::TaskFailed {
                task: task_ref,
                exit_code: run.exit_code,
                error: run.error.clone().unwrap_or_else(|| "failed".into()),
                stderr_tail: run.tail(TAIL_LINES),
                duration_ms,
                attempts: run.attempts,
                record,
            }
        } else if let Some(reason) = &run.skipped_reason {
            Event::TaskSkipped {
                task: task_ref,
                reason: reason.clone(),
                record: Some(record),
            }
        } else {
            Event::TaskFinished {
                task: task_ref,
                changed: run.changed,
                exit_code: run.exit_code,
                duration_ms,
                attempts: run.attempts,
                record,
            }
        };
        let durable = self.emit_durable(event);
        let skipped_host = matches!(
            self.hosts[task.host].phase,
            Phase::Done(HostOutcome::Unreachable)
        );
        if run.reached {
            self.hosts[task.host].reached = true;
        }
        if run.ok {
            self.state[node.index()] = State::Succeeded;
            if let Some((name, value)) = &run.captured {
                self.store_capture(&task, name, value);
            }
        } else {
            self.state[node.index()] = State::Failed;
            if run.unreachable && self.may_skip_unreachable(task.host) {
                self.host_unreachable(task.host);
            } else if !skipped_host {
                self.host_failed(task.host);
            }
        }
        self.task_done(task);
        // Dependents start once the result is on disk.
        let ok = run.ok;
        self.syncing.spawn(async move {
            durable.await;
            (node, ok)
        });
    }

    fn store_capture(&mut self, task: &Task, name: &str, value: &str) {
        let value = serde_yaml::Value::String(value.to_string());
        let region = self.plan.inventory.hosts[task.host].region;
        let captures = match task.per {
            Per::Host => &mut self.hosts[task.host].captures,
            Per::Region => &mut self.regions[region].captures,
            Per::Run => &mut self.run_captures,
        };
        captures.insert(name.to_string(), value);
    }

    /// Bookkeeping when a task reaches a final state (however it got there).
    fn task_done(&mut self, task: Task) {
        let h = &mut self.hosts[task.host];
        h.left_tasks -= 1;
        if task.per == Per::Host {
            h.left_host_tasks -= 1;
        }
        // A failed host stays out of service (and holds its slot) until its rollback is
        // done. The host is reported finished before the next one takes its slot.
        let leaves_service = h.left_host_tasks == 0 && h.phase == Phase::Active;
        self.maybe_host_finished(task.host);
        if leaves_service {
            self.free_slot(task.host);
        }
    }

    fn maybe_host_finished(&mut self, host: HostId) {
        let h = &self.hosts[host];
        if h.left_tasks > 0 || h.running > 0 || !matches!(h.phase, Phase::Active | Phase::Idle) {
            return;
        }
        if h.touched {
            self.set_host_outcome(host, HostOutcome::Ok);
        }
        self.pool.close(host);
    }

    fn set_host_outcome(&mut self, host: HostId, outcome: HostOutcome) {
        self.hosts[host].phase = Phase::Done(outcome);
        let inventory = &self.plan.inventory;
        let spec = &inventory.hosts[host];
        self.regions[spec.region].finished = self.started.elapsed();
        self.emit(Event::HostFinished {
            host: spec.name.clone(),
            region: inventory.regions[spec.region].name.clone(),
            cluster: inventory.clusters[spec.cluster].name.clone(),
            outcome,
        });
    }

    /// Passes a finished node on to its dependents: success counts down their
    /// dependencies; failure skips them, except wave gates, which only wait for the
    /// wave's tasks to end (failures there are the budget's business).
    fn release(&mut self, node: NodeId, success: bool) {
        let mut stack = vec![(node, success)];
        while let Some((node, success)) = stack.pop() {
            // In graph order (petgraph lists a node's edges newest first): after a gate,
            // hosts queue for their cluster's slots in the order `--dry-run` shows.
            let mut dependents: Vec<NodeId> = self.plan.dependents(node).collect();
            dependents.sort_unstable();
            for dependent in dependents {
                let i = dependent.index();
                if success || matches!(self.plan.graph[dependent], Node::Gate(_)) {
                    if self.state[i] != State::Waiting {
                        continue;
                    }
                    self.remaining[i] -= 1;
                    if self.remaining[i] == 0 {
                        self.ready(dependent);
                    }
                } else if self.state[i] == State::Waiting {
                    self.state[i] = State::Skipped;
                    if let Some(task) = self.plan.task(dependent).copied() {
                        self.emit(Event::TaskSkipped {
                            task: self.task_ref(dependent),
                            reason: "a dependency failed or was cancelled".into(),
                            record: None,
                        });
                        self.task_done(task);
                    }
                    stack.push((dependent, false));
                }
            }
        }
    }

    /// A task that will not run because its host, region or the run stopped.
    fn cancel(&mut self, node: NodeId) {
        let i = node.index();
        if self.state[i].is_done() || self.state[i] == State::Running {
            return;
        }
        self.state[i] = State::Cancelled;
        if let Some(task) = self.plan.task(node).copied() {
            self.task_done(task);
        }
        self.release(node, false);
    }

    /// [`Self::cancel_unstarted`] for one host's tasks, without a walk over every task.
    fn cancel_unstarted_of_host(&mut self, host: HostId) {
        let mut unstarted: Vec<NodeId> = self
            .plan
            .tasks_of_host(host)
            .iter()
            .copied()
            .filter(|n| matches!(self.state[n.index()], State::Waiting | State::Queued))
            .collect();
        unstarted.sort_unstable();
        for node in unstarted {
            self.cancel(node);
        }
    }

    fn cancel_unstarted(&mut self, mut which: impl FnMut(&Self, &Task) -> bool) {
        let unstarted: Vec<NodeId> = self
            .plan
            .tasks()
            .filter(|(n, t)| {
                matches!(self.state[n.index()], State::Waiting | State::Queued) && which(self, t)
            })
            .map(|(n, _)| n)
            .collect();
        for node in unstarted {
            self.cancel(node);
        }
    }
}
