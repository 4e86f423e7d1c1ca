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
use crate::playbook::Per;
use crate::state::journal::{Replay, TaskState};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Lines of output kept in events and the journal.
const TAIL_LINES: usize = 10;

/// Something the loop waits for besides tasks.
enum Timer {
    /// A person answered at a wave's `approve:` gate.
    Approved(usize, bool),
    /// A wave's `pause:` elapsed.
    Paused(usize),
    /// A wave's change window opened.
    WindowOpen(usize),
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
    /// Tasks waiting for the wave's change window, and whether its timer runs.
    window_held: Vec<NodeId>,
    window_timer: bool,
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
    stopped_wave: Option<String>,
    running: JoinSet<(NodeId, TaskRun)>,
    /// Finished tasks whose record is being synced; their dependents wait for it.
    syncing: JoinSet<(NodeId, bool)>,
    timers: JoinSet<Timer>,
    rollbacks: Vec<Option<RollbackOrder>>,
    rollback_runs: JoinSet<RollbackRun>,
    started: Instant,
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
    let _ = strategy;
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
        waves: (0..plan.waves.len()).map(|_| WaveRun::default()).collect(),
        run_captures: Vars::new(),
        stop: Stop::No,
        ending: Ending::default(),
        all_rollback_due: false,
        stopped_wave: None,
        running: JoinSet::new(),
        syncing: JoinSet::new(),
        timers: JoinSet::new(),
        rollbacks: Vec::new(),
        rollback_runs: JoinSet::new(),
        started: Instant::now(),
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
        self.sink.emit(event.redacted(&self.options.redactor));
    }

    /// Emits a fact that must be on disk before the run goes past it.
    fn emit_durable(&self, event: Event) -> impl Future<Output = ()> {
        self.sink
            .emit_durable(event.redacted(&self.options.redactor))
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
        if let Some(first) = self.plan.waves.first() {
            self.emit(Event::WaveStarted {
                wave: first.name.clone(),
                hosts: first.hosts.len(),
            });
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
        loop {
            self.start_due_rollbacks();
            if self.running.is_empty()
                && self.syncing.is_empty()
                && self.timers.is_empty()
                && self.rollback_runs.is_empty()
            {
                if self.stop == Stop::No && self.break_stall() {
                    continue;
                }
                break;
            }
            tokio::select! {
                Some(joined) = self.running.join_next() => match joined {
                    Ok((node, run)) => self.finished(node, run),
                    Err(e) => tracing::error!("task panicked or was aborted: {e}"),
                },
                Some(Ok((node, ok))) = self.syncing.join_next() => self.release(node, ok),
                Some(Ok(timer)) = self.timers.join_next() => match timer {
                    Timer::Approved(wave, true) => self.pause_or_pass(wave),
                    Timer::Approved(wave, false) => self.stop_for_approval(wave),
                    Timer::Paused(wave) => self.pass_gate(wave),
                    Timer::WindowOpen(wave) => self.window_opened(wave),
                },
                Some(joined) = self.rollback_runs.join_next() => match joined {
                    Ok(done) => self.rollback_command_done(done),
                    Err(e) => tracing::error!("rollback panicked or was aborted: {e}"),
                },
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
        let cluster = self.plan.inventory.hosts[host].cluster;
        let active = self.hosts[host].phase == Phase::Active;
        let starts_host = task.per != Per::Host || !active;
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
    fn hold_for_window(&mut self, node: NodeId, wave: usize) -> bool {
        let Some(window) = &self.plan.playbook.strategy.waves[wave].window else {
            return false;
        };
        let Some(wait) = change_window::wait_until_open(window, chrono::Utc::now()) else {
            return false;
        };
        self.state[node.index()] = State::Queued;
        let text = window.text.clone();
        let w = &mut self.waves[wave];
        w.window_held.push(node);
        if !w.window_timer {
            w.window_timer = true;
            self.emit(Event::GateWaiting {
                wave: self.plan.waves[wave].name.clone(),
                reason: format!("window {text}"),
                seconds: wait.as_secs(),
            });
            self.timers.spawn(async move {
                tokio::time::sleep(wait).await;
                Timer::WindowOpen(wave)
            });
        }
        true
    }

    fn window_opened(&mut self, wave: usize) {
        self.waves[wave].window_timer = false;
        for node in std::mem::take(&mut self.waves[wave].window_held) {
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
        // The start is on disk before the command starts.
        let durable = self.emit_durable(Event::TaskStarted {
            task: self.task_ref(node),
        });
        let pool = self.pool.clone();
        self.running.spawn(async move {
            durable.await;
            let run = match rendered {
                Ok(spec) => task::execute(&pool, task.host, &spec).await,
                Err(error) => TaskRun::not_started(error),
            };
            (node, run)
        });
    }

    fn finished(&mut self, node: NodeId, run: TaskRun) {
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
            log: log_text(&task_ref.label, &run),
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
        if run.ok {
            self.state[node.index()] = State::Succeeded;
            if let Some((name, value)) = &run.captured {
                self.store_capture(&task, name, value);
            }
        } else {
            self.state[node.index()] = State::Failed;
            self.host_failed(task.host);
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
            let dependents: Vec<NodeId> = self.plan.dependents(node).collect();
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

    // ----- failures -----

    fn host_failed(&mut self, host: HostId) {
        if self.hosts[host].failed() {
            return;
        }
        self.hosts[host].phase = Phase::Failed {
            rollback_due: false,
        };
        self.hosts[host].pending.clear();
        self.cancel_unstarted(|_, t| t.host == host);
        let spec = &self.plan.inventory.hosts[host];
        let (cluster, region) = (spec.cluster, spec.region);
        let budget = &mut self.budgets[cluster];
        budget.failed_hosts += 1;
        let (failed_hosts, max_failures) = (budget.failed_hosts, budget.max_failures);
        let policy = self.plan.playbook.strategy.on_failure;
        let action = policy::on_host_failure(failed_hosts, max_failures, policy);
        if !action.beyond_budget() {
            self.hosts[host].phase = Phase::Failed { rollback_due: true };
            return;
        }
        let inventory = &self.plan.inventory;
        if let Some(wave) = self.plan.host_wave[host] {
            self.waves[wave].failed.get_or_insert_with(|| {
                format!(
                    "cluster {} (region {}) failed {failed_hosts} host(s), beyond max_failures {max_failures}",
                    inventory.clusters[cluster].name, inventory.regions[region].name,
                )
            });
        }
        self.emit(Event::BudgetExceeded {
            cluster: inventory.clusters[cluster].name.clone(),
            region: inventory.regions[region].name.clone(),
            failed_hosts,
            max_failures,
            action: serde_json::to_value(policy)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
        });
        match action {
            FailureAction::RollbackHost => {}
            FailureAction::Halt => {
                self.ending.halted = true;
                self.stop_all("failure budget exceeded: halted");
            }
            FailureAction::RollbackRegion => {
                self.regions[region].rollback_due = true;
                self.stop_region(region);
            }
            FailureAction::RollbackAll => {
                self.all_rollback_due = true;
                self.stop_all("failure budget exceeded: rolling back every touched host");
            }
        }
    }

    fn stop_region(&mut self, region: usize) {
        if std::mem::replace(&mut self.regions[region].stopped, true) {
            return;
        }
        self.emit(Event::Stopped {
            reason: format!(
                "region {} stopped",
                self.plan.inventory.regions[region].name
            ),
        });
        let inventory = self.plan.inventory.clone();
        self.admission
            .forget_waiting(|h| inventory.hosts[h].region == region);
        self.cancel_unstarted(|s, t| s.plan.inventory.hosts[t.host].region == region);
    }

    fn stop_all(&mut self, reason: &str) {
        if self.stop == Stop::All {
            return;
        }
        self.stop = Stop::All;
        self.emit(Event::Stopped {
            reason: reason.to_string(),
        });
        self.admission.forget_waiting(|_| true);
        self.cancel_unstarted(|_, _| true);
    }

    // ----- gates -----

    fn gate_ready(&mut self, wave: usize, node: NodeId) {
        if let Some(reason) = self.waves[wave].failed.clone() {
            self.wave_failed(wave, node, reason);
            return;
        }
        if self.stopped() {
            self.state[node.index()] = State::Held;
            return;
        }
        let spec = &self.plan.playbook.strategy.waves[wave];
        let name = spec.name.clone();
        let last = wave + 1 == self.plan.waves.len();
        if !spec.approve || last || self.options.approvals.contains(&name) {
            self.pause_or_pass(wave);
            return;
        }
        self.state[node.index()] = State::Held;
        self.emit(Event::GateWaiting {
            wave: name.clone(),
            reason: "approve".into(),
            seconds: 0,
        });
        match &self.options.approver {
            Some(approver) => {
                let (answer, question) = tokio::sync::oneshot::channel();
                let _ = approver.send(ApprovalRequest { wave: name, answer });
                self.timers
                    .spawn(async move { Timer::Approved(wave, question.await.unwrap_or(false)) });
            }
            None => self.stop_for_approval(wave),
        }
    }

    /// A wave with a cluster beyond its failure budget does not pass its gate, whatever
    /// `on_failure` did in its region: the other regions of the wave have finished, and
    /// no task of a later wave starts.
    fn wave_failed(&mut self, wave: usize, node: NodeId, reason: String) {
        self.state[node.index()] = State::Held;
        let name = self.plan.waves[wave].name.clone();
        self.emit(Event::WaveFailed {
            wave: name.clone(),
            reason,
            node: node.index(),
        });
        self.stopped_wave = Some(name.clone());
        if wave + 1 < self.plan.waves.len() {
            self.stop_all(&format!(
                "wave {name} failed: later waves do not start; fix its hosts and `pony resume {}`",
                self.options.run_id
            ));
        }
    }

    fn stop_for_approval(&mut self, wave: usize) {
        let name = self.plan.waves[wave].name.clone();
        self.ending.awaiting_approval = true;
        self.stop_all(&format!(
            "waiting for approval of wave {name}: continue with `pony resume {} --approve {name}`",
            self.options.run_id
        ));
    }

    fn pause_or_pass(&mut self, wave: usize) {
        let node = self.plan.waves[wave].gate;
        let spec = &self.plan.playbook.strategy.waves[wave];
        match spec.pause.filter(|_| wave + 1 < self.plan.waves.len()) {
            Some(pause) => {
                self.state[node.index()] = State::Held;
                self.emit(Event::GateWaiting {
                    wave: spec.name.clone(),
                    reason: "pause".into(),
                    seconds: pause.as_secs(),
                });
                self.timers.spawn(async move {
                    tokio::time::sleep(pause).await;
                    Timer::Paused(wave)
                });
            }
            None => self.pass_gate(wave),
        }
    }

    fn pass_gate(&mut self, wave: usize) {
        let node = self.plan.waves[wave].gate;
        if self.stopped() {
            self.state[node.index()] = State::Held;
            return;
        }
        self.state[node.index()] = State::Succeeded;
        self.emit(Event::GatePassed {
            wave: self.plan.waves[wave].name.clone(),
            node: node.index(),
        });
        if let Some(next) = self.plan.waves.get(wave + 1) {
            self.emit(Event::WaveStarted {
                wave: next.name.clone(),
                hosts: next.hosts.len(),
            });
        }
        self.release(node, true);
    }

    // ----- resume and `pony rollback` -----

    /// Continues a run: what the journal shows done is not run again, its captures
    /// come back, passed gates stay passed; everything else (including tasks that were
    /// running when the controller died) runs. With `--skip-failed-wave`, the failed
    /// wave's unfinished tasks are left as they are and its gate passes.
    fn resume_from(&mut self, replay: &Replay) {
        let skipped_wave = self
            .options
            .skip_failed_wave
            .as_ref()
            .and_then(|name| self.plan.waves.iter().position(|w| &w.name == name));
        if let Some(wave) = skipped_wave {
            self.emit(Event::WaveSkipped {
                wave: self.plan.waves[wave].name.clone(),
                user: crate::state::current_user(),
            });
        }
        for node in self.plan.topological_order().to_vec() {
            let i = node.index();
            let done = match self.plan.graph[node] {
                Node::Task(task) => match replay.done(&self.plan.label(node)) {
                    Some(previous) => {
                        self.unchanged[i] = !previous.changed;
                        self.restore_captures(&task, &previous.captures);
                        self.hosts[task.host].touched = true;
                        self.count_done(task);
                        true
                    }
                    None if Some(task.wave) == skipped_wave => {
                        self.count_done(task);
                        for dependent in self.plan.dependents(node).collect::<Vec<_>>() {
                            self.remaining[dependent.index()] -= 1;
                        }
                        self.state[i] = State::Cancelled;
                        continue;
                    }
                    None => false,
                },
                Node::Gate(wave) if Some(wave) == skipped_wave && self.remaining[i] == 0 => {
                    self.emit(Event::GatePassed {
                        wave: self.plan.waves[wave].name.clone(),
                        node: i,
                    });
                    true
                }
                Node::Gate(wave) => {
                    self.remaining[i] == 0
                        && replay.gates_passed.contains(&self.plan.waves[wave].name)
                }
                Node::Join { .. } => self.remaining[i] == 0,
            };
            if done {
                self.state[i] = State::Succeeded;
                for dependent in self.plan.dependents(node).collect::<Vec<_>>() {
                    self.remaining[dependent.index()] -= 1;
                }
            }
        }
        for host in 0..self.hosts.len() {
            if self.hosts[host].touched && self.hosts[host].left_tasks == 0 {
                self.set_host_outcome(host, HostOutcome::Ok);
            }
        }
        let ready: Vec<NodeId> = self
            .plan
            .graph
            .node_indices()
            .filter(|n| self.state[n.index()] == State::Waiting && self.remaining[n.index()] == 0)
            .collect();
        for node in ready {
            if self.state[node.index()] == State::Waiting {
                self.ready(node);
            }
        }
    }

    fn count_done(&mut self, task: Task) {
        let host = &mut self.hosts[task.host];
        host.left_tasks -= 1;
        if task.per == Per::Host {
            host.left_host_tasks -= 1;
        }
    }

    /// Rolls back, on `hosts`, every task the journal shows completed or failed and not
    /// yet rolled back.
    fn rollback_from(&mut self, replay: &Replay, hosts: HostSet) {
        self.ending.rollback_only = true;
        for (node, task) in self.plan.tasks().map(|(n, t)| (n, *t)).collect::<Vec<_>>() {
            let Some(previous) = replay.tasks.get(&self.plan.label(node)) else {
                continue;
            };
            if previous.rolled_back || previous.state == TaskState::Interrupted {
                continue;
            }
            self.state[node.index()] = if previous.state == TaskState::Failed {
                State::Failed
            } else {
                State::Succeeded
            };
            self.unchanged[node.index()] = !previous.changed;
            self.restore_captures(&task, &previous.captures);
            if hosts.contains(task.host) {
                self.hosts[task.host].touched = true;
            }
        }
        self.spawn_rollback(RollbackScope::All);
    }

    fn restore_captures(&mut self, task: &Task, captures: &[(String, String)]) {
        for (name, value) in captures {
            self.store_capture(task, name, value);
        }
    }

    // ----- rollback -----

    /// Starts every rollback whose hosts have nothing running any more.
    fn start_due_rollbacks(&mut self) {
        let due: Vec<HostId> = (0..self.hosts.len())
            .filter(|&h| {
                self.hosts[h].phase == Phase::Failed { rollback_due: true }
                    && self.hosts[h].running == 0
            })
            .collect();
        for host in due {
            self.spawn_rollback(RollbackScope::Host(host));
        }
        for region in 0..self.regions.len() {
            let r = &self.regions[region];
            if r.rollback_due && r.running == 0 && !self.all_rollback_due {
                self.regions[region].rollback_due = false;
                self.spawn_rollback(RollbackScope::Region(region));
            }
        }
        if self.all_rollback_due && self.running.is_empty() {
            self.all_rollback_due = false;
            self.regions.iter_mut().for_each(|r| r.rollback_due = false);
            self.spawn_rollback(RollbackScope::All);
        }
    }

    fn spawn_rollback(&mut self, scope: RollbackScope) {
        let plan = self.plan.clone();
        // Every touched host of the scope, finished or not; hosts already rolled back
        // (or being rolled back) are left alone.
        let hosts: Vec<HostId> = (0..self.hosts.len())
            .filter(|&h| {
                let host = &self.hosts[h];
                scope.covers(&plan, h)
                    && host.touched
                    && !matches!(
                        host.phase,
                        Phase::RollingBack
                            | Phase::Done(HostOutcome::RolledBack | HostOutcome::RollbackFailed)
                    )
            })
            .collect();
        let mut chosen = vec![false; self.hosts.len()];
        for &h in &hosts {
            chosen[h] = true;
            self.hosts[h].phase = Phase::RollingBack;
        }
        let mut commands: HashMap<NodeId, RollbackCommand> = HashMap::new();
        let mut failed_renders = Vec::new();
        for (node, task) in plan.tasks() {
            let done = matches!(self.state[node.index()], State::Succeeded | State::Failed)
                && !self.unchanged[node.index()];
            let covered = chosen[task.host]
                && (task.per == Per::Host || scope != RollbackScope::Host(task.host));
            if !done || !covered {
                continue;
            }
            let step = &plan.playbook.steps[task.step];
            match task::render_rollback(step, &self.context(task)) {
                Ok(Some(command)) => {
                    commands.insert(
                        node,
                        RollbackCommand {
                            host: task.host,
                            command,
                            timeout: step.timeout,
                        },
                    );
                }
                Ok(None) => {}
                Err(error) => failed_renders.push((task.host, node, error)),
            }
        }
        self.emit(Event::RollbackStarted {
            scope: scope.name(&plan),
            hosts: hosts.len(),
        });
        for (_, node, error) in &failed_renders {
            self.emit(Event::RollbackTask {
                task: self.task_ref(*node),
                ok: false,
                exit_code: None,
                error: Some(error.clone()),
                log: format!("!! rollback could not be rendered: {error}\n"),
            });
        }
        let order = RollbackOrder::new(
            &plan,
            scope,
            hosts,
            commands,
            failed_renders.iter().map(|(h, _, _)| *h),
        );
        self.rollbacks.push(Some(order));
        self.pump_rollback(self.rollbacks.len() - 1);
    }

    /// Starts whatever the rollback's order allows now; ends it when nothing is left.
    fn pump_rollback(&mut self, job: usize) {
        while let Some((node, command)) =
            self.rollbacks[job].as_mut().and_then(|o| o.next_command())
        {
            let durable = self.emit_durable(Event::RollbackTaskStarted {
                task: self.task_ref(node),
            });
            let pool = self.pool.clone();
            self.rollback_runs.spawn(async move {
                durable.await;
                let spec = TaskSpec {
                    action: task::RenderedAction::Run(command.command),
                    creates: None,
                    unless: None,
                    capture: None,
                    until: None,
                    timeout: command.timeout,
                    retries: 1,
                    retry_delay: Duration::from_secs(1),
                };
                let run = task::execute(&pool, command.host, &spec).await;
                RollbackRun { job, node, run }
            });
        }
        let finished = self.rollbacks[job]
            .as_ref()
            .is_some_and(RollbackOrder::is_finished);
        if finished {
            let order = self.rollbacks[job].take().expect("a rollback");
            self.rollback_done(order);
        }
    }

    fn rollback_command_done(&mut self, done: RollbackRun) {
        let RollbackRun { job, node, run } = done;
        let task = self.task_ref(node);
        let error = (!run.ok).then(|| {
            format!(
                "{}: {}",
                run.error.clone().unwrap_or_default(),
                run.tail(TAIL_LINES)
            )
        });
        let log = log_text(&format!("rollback {}", task.label), &run);
        self.emit(Event::RollbackTask {
            task,
            ok: run.ok,
            exit_code: run.exit_code,
            error,
            log,
        });
        if let Some(order) = self.rollbacks[job].as_mut() {
            order.done(&self.plan, node, run.ok);
        }
        self.pump_rollback(job);
    }

    fn rollback_done(&mut self, order: RollbackOrder) {
        self.emit(Event::RollbackFinished {
            scope: order.scope.name(&self.plan),
            ok: order.ok(),
        });
        for (host, ok) in order.results() {
            self.set_host_outcome(
                host,
                if ok {
                    HostOutcome::RolledBack
                } else {
                    HostOutcome::RollbackFailed
                },
            );
            self.free_slot(host);
            self.pool.close(host);
        }
    }

    // ----- interrupts and the end -----

    /// First interrupt: admit no new host; hosts in flight finish every task (or fail
    /// and roll back per policy). Second: kill what runs; its hosts are half-done.
    async fn interrupt(&mut self, count: u32) {
        if count == 0 {
            return;
        }
        self.ending.interrupted = true;
        if self.stop == Stop::No {
            self.stop = Stop::Draining;
            self.emit(Event::Stopped {
                reason: "interrupted: no new host starts; hosts in flight finish all their tasks (interrupt again to kill them)".into(),
            });
            self.admission.forget_waiting(|_| true);
            self.cancel_unstarted(|s, t| !s.may_start(t.host));
        }
        if count < 2 {
            return;
        }
        self.stop = Stop::All;
        self.cancel_unstarted(|_, _| true);
        let running: Vec<NodeId> = (0..self.state.len())
            .filter(|&i| self.state[i] == State::Running)
            .map(NodeId::new)
            .collect();
        self.running.abort_all();
        self.rollback_runs.abort_all();
        let mut synced = Vec::new();
        for node in running {
            synced.push(self.emit_durable(Event::TaskInterrupted {
                task: self.task_ref(node),
            }));
            self.state[node.index()] = State::Cancelled;
            let task = *self.plan.task(node).expect("a task");
            self.regions[self.plan.inventory.hosts[task.host].region].running -= 1;
            self.hosts[task.host].running -= 1;
        }
        for durable in synced {
            durable.await;
        }
        while self.running.join_next().await.is_some() {}
        while self.rollback_runs.join_next().await.is_some() {}
        self.rollbacks.clear();
    }

    async fn finish(mut self) -> RunReport {
        for host in 0..self.hosts.len() {
            let h = &self.hosts[host];
            if self.ending.rollback_only
                || h.outcome().is_some()
                || self.plan.tasks_of_host(host).is_empty()
            {
                continue;
            }
            let outcome = match h.phase {
                Phase::Failed { .. } => HostOutcome::Failed,
                // Some of its tasks ran and not all: never `ok`, never `not run`.
                Phase::RollingBack => HostOutcome::Incomplete,
                _ if h.touched && h.left_tasks > 0 => HostOutcome::Incomplete,
                _ if h.touched => HostOutcome::Ok,
                _ => HostOutcome::Cancelled,
            };
            self.set_host_outcome(host, outcome);
        }
        let outcomes: Vec<Option<HostOutcome>> = self.hosts.iter().map(HostRun::outcome).collect();
        let tally = Tally::of(outcomes.iter().flatten());
        let (outcome, exit) = outcome::run_outcome(tally, self.ending);
        let finished: Vec<Duration> = self.regions.iter().map(|r| r.finished).collect();
        let regions = outcome::regions(&self.plan.inventory, &outcomes, &finished);
        let incomplete = outcomes
            .iter()
            .enumerate()
            .filter(|(_, o)| **o == Some(HostOutcome::Incomplete))
            .map(|(h, _)| self.plan.inventory.hosts[h].name.clone())
            .collect();
        self.emit_durable(Event::Summary {
            run_id: self.options.run_id.clone(),
            outcome,
            exit_code: exit.code(),
            hosts: tally.hosts,
            ok: tally.ok,
            failed: tally.failed + tally.rollback_failed,
            rolled_back: tally.rolled_back,
            cancelled: tally.cancelled,
            rollback_failed: tally.rollback_failed,
            incomplete,
            stopped_wave: self.stopped_wave.clone(),
            duration_ms: self.started.elapsed().as_millis() as u64,
            regions,
            run_dir: self.options.run_dir_display.clone(),
        })
        .await;
        RunReport {
            outcome,
            exit,
            hosts: outcomes,
        }
    }
}

/// What a task ran and printed, for its host's log.
fn log_text(label: &str, run: &TaskRun) -> String {
    let mut text = format!(
        "== {} {label} ({} attempt(s), {:?})\n",
        humantime::format_rfc3339_millis(std::time::SystemTime::now()),
        run.attempts,
        run.duration
    );
    for command in &run.commands {
        text.push_str(&format!("$ {command}\n"));
    }
    text.push_str(&String::from_utf8_lossy(&run.stdout));
    text.push_str(&String::from_utf8_lossy(&run.stderr));
    if let Some(error) = &run.error {
        text.push_str(&format!("!! {error}\n"));
    }
    text
}
