//! The scheduler: one event loop that owns all run state. A task starts the moment its
//! last dependency succeeded (in-degree counters, no polling), bounded per cluster by
//! `max_unavailable` (a sliding window of hosts between their first and last task) and
//! overall by `connections`. Failures count against the cluster's `max_failures`; within
//! budget only the failed host is rolled back, beyond it `on_failure` applies.

use super::hosts::HostPool;
use super::task::{self, TaskRun, TaskSpec};
use crate::events::{Event, HostOutcome, RegionSummary, RunOutcome, TaskRef};
use crate::exit::Exit;
use crate::inventory::pattern::HostSet;
use crate::inventory::{HostId, Vars};
use crate::plan::{Node, NodeId, Plan, Task};
use crate::playbook::{OnFailure, Per};
use crate::secret::Redactor;
use crate::state::journal::{Journal, Record, Replay, TaskState};
use crate::state::run_dir::RunDir;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Lines of output kept in events and the journal.
const TAIL_LINES: usize = 10;

/// What the run needs besides the plan.
pub struct ExecOptions {
    pub run_dir: RunDir,
    pub journal: Journal,
    pub redactor: Redactor,
    /// Waves whose `approve:` gate is pre-approved.
    pub approvals: Vec<String>,
    /// Hosts worked on at once over the whole run.
    pub connections: usize,
    /// Counts Ctrl-C / SIGTERM: 1 stops starting tasks, 2 kills running ones.
    pub interrupts: watch::Receiver<u32>,
    /// Asks a person at an `approve:` gate (a terminal); without it the run stops there.
    pub approver: Option<UnboundedSender<ApprovalRequest>>,
    /// What an earlier process of this run already did (`pony resume`, `pony rollback`).
    pub replay: Option<Replay>,
    /// Run the rollout, or only roll back what the replayed run touched.
    pub mode: Mode,
    /// Resume past this failed wave without running its unfinished tasks (journaled).
    pub skip_failed_wave: Option<String>,
}

/// What the executor does with the plan.
#[derive(Debug, Clone)]
pub enum Mode {
    Deploy,
    /// Roll back every task the replayed run completed (or failed) on these hosts.
    Rollback(HostSet),
}

/// A question to the person at the terminal: may the run go past this wave's gate?
pub struct ApprovalRequest {
    pub wave: String,
    pub answer: tokio::sync::oneshot::Sender<bool>,
}

/// Something the loop waits for besides tasks.
enum Timer {
    /// A person answered at a wave's `approve:` gate.
    Approved(usize, bool),
    /// A wave's `pause:` elapsed.
    Paused(usize),
    /// A wave's change window opened.
    WindowOpen(usize),
}

/// How the run ended.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub outcome: RunOutcome,
    pub exit: Exit,
    pub hosts: Vec<Option<HostOutcome>>,
}

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

#[derive(Default)]
struct HostRun {
    touched: bool,
    active: bool,
    queued: bool,
    running: usize,
    left_host_tasks: usize,
    left_tasks: usize,
    failed: bool,
    rollback_pending: bool,
    outcome: Option<HostOutcome>,
    pending: Vec<NodeId>,
    captures: Vars,
}

struct ClusterRun {
    window: usize,
    budget: usize,
    active: usize,
    failed_hosts: usize,
    waiting: VecDeque<HostId>,
}

/// Which hosts a rollback covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RollbackScope {
    Host(HostId),
    Region(usize),
    All,
}

/// One rollback command, rendered with the captures the forward run saw.
struct RollbackCommand {
    host: HostId,
    command: String,
    label: String,
    /// The step's own `timeout`, so that a hung host cannot hang the rollback.
    timeout: Option<Duration>,
}

struct RollbackDone {
    hosts: Vec<(HostId, bool)>,
}

struct Scheduler {
    plan: Arc<Plan>,
    pool: Arc<HostPool>,
    events: UnboundedSender<Event>,
    options: ExecOptions,
    state: Vec<State>,
    remaining: Vec<usize>,
    hosts: Vec<HostRun>,
    clusters: Vec<ClusterRun>,
    region_stopped: Vec<bool>,
    region_running: Vec<usize>,
    region_rollback: Vec<bool>,
    all_stopped: bool,
    all_rollback: bool,
    halted: bool,
    interrupted: bool,
    awaiting_approval: Option<String>,
    region_captures: Vec<Vars>,
    run_captures: Vars,
    active_hosts: usize,
    running: JoinSet<(NodeId, TaskRun)>,
    timers: JoinSet<Timer>,
    /// Tasks waiting for their wave's change window, and whether its timer runs.
    window_held: Vec<(Vec<NodeId>, bool)>,
    rollbacks: JoinSet<RollbackDone>,
    started: Instant,
    region_finished: Vec<Duration>,
    /// Tasks a `creates`/`unless` guard skipped: they changed nothing, so they are not
    /// rolled back.
    unchanged: Vec<bool>,
    /// `pony rollback`: nothing runs forward.
    rollback_only: bool,
    /// Per wave, why it failed (a cluster of it went beyond its failure budget): its
    /// gate never passes, so no later wave starts.
    failed_waves: Vec<Option<String>>,
    /// The wave whose failure stopped the rollout.
    stopped_wave: Option<(String, String)>,
}

/// Runs the plan to the end and reports how it went.
pub async fn run(
    plan: Arc<Plan>,
    pool: Arc<HostPool>,
    options: ExecOptions,
    events: UnboundedSender<Event>,
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
    let by_cluster = plan.hosts_by_cluster();
    let clusters = (0..inventory.clusters.len())
        .map(|c| {
            let total = by_cluster.get(&c).map(Vec::len).unwrap_or(0);
            ClusterRun {
                window: strategy.max_unavailable.of(total).max(1),
                budget: strategy.max_failures.of(total),
                active: 0,
                failed_hosts: 0,
                waiting: VecDeque::new(),
            }
        })
        .collect();
    let regions = inventory.regions.len();
    let scheduler = Scheduler {
        remaining: plan.in_degrees(),
        state: vec![State::Waiting; node_count],
        hosts,
        clusters,
        region_stopped: vec![false; regions],
        region_running: vec![0; regions],
        region_rollback: vec![false; regions],
        all_stopped: false,
        all_rollback: false,
        halted: false,
        interrupted: false,
        awaiting_approval: None,
        region_captures: vec![Vars::new(); regions],
        run_captures: Vars::new(),
        active_hosts: 0,
        running: JoinSet::new(),
        timers: JoinSet::new(),
        window_held: (0..plan.waves.len()).map(|_| (Vec::new(), false)).collect(),
        rollbacks: JoinSet::new(),
        started: Instant::now(),
        region_finished: vec![Duration::ZERO; regions],
        unchanged: vec![false; node_count],
        rollback_only: false,
        failed_waves: vec![None; plan.waves.len()],
        stopped_wave: None,
        plan,
        pool,
        events,
        options,
    };
    scheduler.main_loop().await
}

impl Scheduler {
    fn emit(&self, event: Event) {
        let _ = self.events.send(event);
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
        }
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
            self.start_rollbacks();
            if self.running.is_empty() && self.timers.is_empty() && self.rollbacks.is_empty() {
                if !self.all_stopped && self.break_stall() {
                    continue;
                }
                break;
            }
            tokio::select! {
                Some(joined) = self.running.join_next() => match joined {
                    Ok((node, run)) => self.finished(node, run),
                    Err(e) => tracing::error!("task panicked or was aborted: {e}"),
                },
                Some(Ok(timer)) = self.timers.join_next() => match timer {
                    Timer::Approved(wave, true) => self.pause_or_pass(wave),
                    Timer::Approved(wave, false) => self.stop_for_approval(wave),
                    Timer::Paused(wave) => self.pass_gate(wave),
                    Timer::WindowOpen(wave) => self.window_opened(wave),
                },
                Some(joined) = self.rollbacks.join_next() => match joined {
                    Ok(done) => self.rollback_done(done),
                    Err(e) => tracing::error!("rollback panicked: {e}"),
                },
                Ok(()) = interrupts.changed() => {
                    let count = *interrupts.borrow();
                    self.interrupt(count).await;
                }
            }
        }
        self.finish().await
    }

    // ----- readiness -----

    fn ready(&mut self, node: NodeId) {
        match self.plan.graph[node] {
            Node::Join { .. } => {
                self.state[node.index()] = State::Succeeded;
                self.release(node, true);
            }
            Node::Gate(wave) => self.gate_ready(wave, node),
            Node::Task(task) => {
                if self.stopped_for(task.host) {
                    self.cancel(node);
                } else {
                    self.admit(node, task);
                }
            }
        }
    }

    fn stopped_for(&self, host: HostId) -> bool {
        self.all_stopped
            || self.region_stopped[self.plan.inventory.hosts[host].region]
            || self.hosts[host].failed
    }

    fn admit(&mut self, node: NodeId, task: Task) {
        let host = task.host;
        let cluster = self.plan.inventory.hosts[host].cluster;
        let starts_host = task.per != Per::Host || !self.hosts[host].active;
        if starts_host && self.hold_for_window(node, task.wave) {
            return;
        }
        if task.per != Per::Host || self.hosts[host].active {
            self.spawn(node);
            return;
        }
        let c = &self.clusters[cluster];
        if c.active < c.window && self.active_hosts < self.options.connections {
            self.activate(host);
            self.spawn(node);
            return;
        }
        self.state[node.index()] = State::Queued;
        let h = &mut self.hosts[host];
        h.pending.push(node);
        if !h.queued {
            h.queued = true;
            self.clusters[cluster].waiting.push_back(host);
        }
    }

    /// A wave's hosts start only inside its change window; returns whether `node` waits.
    fn hold_for_window(&mut self, node: NodeId, wave: usize) -> bool {
        let Some(window) = &self.plan.playbook.strategy.waves[wave].window else {
            return false;
        };
        let Some(wait) = window_wait(window) else {
            return false;
        };
        self.state[node.index()] = State::Queued;
        let (held, timer) = &mut self.window_held[wave];
        held.push(node);
        if !*timer {
            *timer = true;
            self.emit(Event::GateWaiting {
                wave: self.plan.waves[wave].name.clone(),
                reason: format!("window {}", window.text),
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
        let (held, timer) = &mut self.window_held[wave];
        *timer = false;
        for node in std::mem::take(held) {
            if self.state[node.index()] == State::Queued {
                self.state[node.index()] = State::Waiting;
                self.ready(node);
            }
        }
    }

    /// Continues a run: what the journal shows done is not run again, its captures
    /// come back, passed gates stay passed; everything else (including tasks that were
    /// running when the controller died) runs.
    fn resume_from(&mut self, replay: &Replay) {
        let skipped_wave = self
            .options
            .skip_failed_wave
            .as_ref()
            .and_then(|name| self.plan.waves.iter().position(|w| &w.name == name));
        if let Some(wave) = skipped_wave {
            self.options.journal.append(&Record::WaveSkipped {
                wave: self.plan.waves[wave].name.clone(),
                user: crate::state::current_user(),
                time: now(),
            });
        }
        for node in self.plan.topological_order().to_vec() {
            let i = node.index();
            let done = match self.plan.graph[node] {
                // A person chose to leave the failed wave's unfinished tasks as they are.
                Node::Task(task)
                    if Some(task.wave) == skipped_wave
                        && replay.done(&self.plan.label(node)).is_none() =>
                {
                    self.state[i] = State::Cancelled;
                    let host = &mut self.hosts[task.host];
                    host.left_tasks -= 1;
                    if task.per == Per::Host {
                        host.left_host_tasks -= 1;
                    }
                    for dependent in self.plan.dependents(node).collect::<Vec<_>>() {
                        self.remaining[dependent.index()] -= 1;
                    }
                    continue;
                }

                Node::Task(task) => match replay.done(&self.plan.label(node)) {
                    Some(previous) => {
                        self.unchanged[i] = !previous.changed;
                        self.restore_captures(&task, &previous.captures);
                        let host = &mut self.hosts[task.host];
                        host.touched = true;
                        host.left_tasks -= 1;
                        if task.per == Per::Host {
                            host.left_host_tasks -= 1;
                        }
                        true
                    }
                    None => false,
                },
                Node::Gate(wave) if Some(wave) == skipped_wave && self.remaining[i] == 0 => {
                    let name = self.plan.waves[wave].name.clone();
                    self.options.journal.append(&Record::GatePassed {
                        node: i,
                        wave: name.clone(),
                    });
                    self.emit(Event::GatePassed { wave: name });
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

    /// Rolls back, on `hosts`, every task the journal shows completed or failed and not
    /// yet rolled back.
    fn rollback_from(&mut self, replay: &Replay, hosts: HostSet) {
        self.rollback_only = true;
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
        let region = self.plan.inventory.hosts[task.host].region;
        for (name, value) in captures {
            let value = serde_yaml::Value::String(value.clone());
            match task.per {
                Per::Host => self.hosts[task.host].captures.insert(name.clone(), value),
                Per::Region => self.region_captures[region].insert(name.clone(), value),
                Per::Run => self.run_captures.insert(name.clone(), value),
            };
        }
    }

    fn activate(&mut self, host: HostId) {
        let cluster = self.plan.inventory.hosts[host].cluster;
        self.hosts[host].active = true;
        self.clusters[cluster].active += 1;
        self.active_hosts += 1;
    }

    fn deactivate(&mut self, host: HostId) {
        if !self.hosts[host].active {
            return;
        }
        let cluster = self.plan.inventory.hosts[host].cluster;
        self.hosts[host].active = false;
        self.clusters[cluster].active -= 1;
        self.active_hosts -= 1;
        self.admit_waiting();
    }

    /// Starts queued hosts wherever their cluster's window and the connection limit allow.
    fn admit_waiting(&mut self) {
        for cluster in 0..self.clusters.len() {
            while self.clusters[cluster].active < self.clusters[cluster].window
                && self.active_hosts < self.options.connections
            {
                let Some(host) = self.clusters[cluster].waiting.pop_front() else {
                    break;
                };
                self.start_queued_host(host);
            }
        }
    }

    fn start_queued_host(&mut self, host: HostId) {
        self.hosts[host].queued = false;
        let pending = std::mem::take(&mut self.hosts[host].pending);
        if self.stopped_for(host) {
            pending.into_iter().for_each(|n| self.cancel(n));
            return;
        }
        self.activate(host);
        for node in pending {
            self.spawn(node);
        }
    }

    /// When nothing runs but hosts wait for a window held by hosts that only wait for
    /// others (a region-wide `needs`), one more host is let in rather than deadlock.
    fn break_stall(&mut self) -> bool {
        for cluster in 0..self.clusters.len() {
            if let Some(host) = self.clusters[cluster].waiting.pop_front() {
                tracing::warn!("max_unavailable window of cluster {} is held by hosts waiting on other hosts; letting one more in", self.plan.inventory.clusters[cluster].name);
                self.start_queued_host(host);
                return true;
            }
        }
        false
    }

    fn context(&self, task: &Task) -> minijinja::Value {
        let mut captures = self.run_captures.clone();
        let region = self.plan.inventory.hosts[task.host].region;
        captures.extend(self.region_captures[region].clone());
        captures.extend(self.hosts[task.host].captures.clone());
        task::context(&self.plan, task, &self.options.run_dir.id, &captures)
    }

    fn spawn(&mut self, node: NodeId) {
        let task = *self.plan.task(node).expect("a task");
        let step = &self.plan.playbook.steps[task.step];
        self.state[node.index()] = State::Running;
        let region = self.plan.inventory.hosts[task.host].region;
        self.region_running[region] += 1;
        let h = &mut self.hosts[task.host];
        h.running += 1;
        h.touched = true;
        self.emit(Event::TaskStarted {
            task: self.task_ref(node),
        });
        let rendered: Result<TaskSpec, String> =
            task::render_task(&self.plan, step, &self.context(&task));
        let pool = self.pool.clone();
        let journal = self.options.journal.clone();
        let label = self.plan.label(node);
        let log = self
            .options
            .run_dir
            .log_path(&self.plan.inventory.hosts[task.host].name);
        let redactor = self.options.redactor.clone();
        self.running.spawn(async move {
            journal
                .write(&Record::TaskStarted {
                    node: node.index(),
                    label: label.clone(),
                    time: now(),
                })
                .await;
            let run = match rendered {
                Ok(spec) => task::execute(&pool, task.host, &spec).await,
                Err(error) => TaskRun::not_started(error),
            };
            let state = if !run.ok {
                TaskState::Failed
            } else if run.skipped_reason.is_some() {
                TaskState::Skipped
            } else {
                TaskState::Succeeded
            };
            journal.log(&log, log_text(&label, &run, &redactor));
            journal
                .write(&Record::TaskFinished {
                    node: node.index(),
                    label,
                    state,
                    exit_code: run.exit_code,
                    duration_ms: run.duration.as_millis() as u64,
                    captures: run
                        .captured
                        .iter()
                        .map(|(k, v)| (k.clone(), redactor.redact(v)))
                        .collect(),
                    output_tail: redactor.redact(&run.tail(TAIL_LINES)),
                    error: run.error.as_ref().map(|e| redactor.redact(e)),
                    changed: run.changed_host(),
                })
                .await;
            (node, run)
        });
    }

    // ----- completion -----

    fn finished(&mut self, node: NodeId, run: TaskRun) {
        let task = *self.plan.task(node).expect("a task");
        let region = self.plan.inventory.hosts[task.host].region;
        self.region_running[region] -= 1;
        self.hosts[task.host].running -= 1;
        let task_ref = self.task_ref(node);
        let redact = |text: &str| self.options.redactor.redact(text);
        if run.ok {
            self.state[node.index()] = State::Succeeded;
            self.unchanged[node.index()] = !run.changed_host();
            if let Some((name, value)) = &run.captured {
                let value = serde_yaml::Value::String(value.clone());
                match task.per {
                    Per::Host => self.hosts[task.host].captures.insert(name.clone(), value),
                    Per::Region => self.region_captures[region].insert(name.clone(), value),
                    Per::Run => self.run_captures.insert(name.clone(), value),
                };
            }
            let event = match &run.skipped_reason {
                Some(reason) => Event::TaskSkipped {
                    task: task_ref,
                    reason: reason.clone(),
                },
                None => Event::TaskFinished {
                    task: task_ref,
                    changed: run.changed,
                    exit_code: run.exit_code,
                    duration_ms: run.duration.as_millis() as u64,
                    attempts: run.attempts,
                },
            };
            self.emit(event);
            self.task_done(task);
            self.release(node, true);
        } else {
            self.state[node.index()] = State::Failed;
            self.unchanged[node.index()] = !run.changed_host();
            self.emit(Event::TaskFailed {
                task: task_ref,
                exit_code: run.exit_code,
                error: redact(run.error.as_deref().unwrap_or("failed")),
                stderr_tail: redact(&run.tail(TAIL_LINES)),
                duration_ms: run.duration.as_millis() as u64,
                attempts: run.attempts,
            });
            self.host_failed(task.host);
            self.task_done(task);
            self.release(node, false);
        }
    }

    /// Bookkeeping when a task reaches a final state (however it got there).
    fn task_done(&mut self, task: Task) {
        let h = &mut self.hosts[task.host];
        h.left_tasks -= 1;
        if task.per == Per::Host {
            h.left_host_tasks -= 1;
        }
        // A failed host stays out of service (and holds its place in the cluster's
        // window) until its rollback is done.
        if self.hosts[task.host].left_host_tasks == 0 && !self.hosts[task.host].failed {
            self.deactivate(task.host);
        }
        self.maybe_host_finished(task.host);
    }

    fn maybe_host_finished(&mut self, host: HostId) {
        let h = &self.hosts[host];
        if h.left_tasks > 0 || h.running > 0 || h.outcome.is_some() || h.failed {
            return;
        }
        if h.touched {
            self.set_host_outcome(host, HostOutcome::Ok);
        }
        self.pool.close(host);
    }

    fn set_host_outcome(&mut self, host: HostId, outcome: HostOutcome) {
        self.hosts[host].outcome = Some(outcome);
        let inventory = &self.plan.inventory;
        let spec = &inventory.hosts[host];
        self.region_finished[spec.region] = self.started.elapsed();
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
                        });
                        self.task_done(task);
                    }
                    stack.push((dependent, false));
                }
            }
        }
    }

    /// A task that will not run because its region or the run stopped.
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

    // ----- failures -----

    fn host_failed(&mut self, host: HostId) {
        if self.hosts[host].failed {
            return;
        }
        self.hosts[host].failed = true;
        // Nothing more starts on a failed host.
        let unstarted: Vec<NodeId> = self
            .plan
            .tasks_of_host(host)
            .iter()
            .copied()
            .filter(|n| matches!(self.state[n.index()], State::Waiting | State::Queued))
            .collect();
        self.hosts[host].pending.clear();
        for node in unstarted {
            self.cancel(node);
        }
        let spec = &self.plan.inventory.hosts[host];
        let (cluster, region) = (spec.cluster, spec.region);
        self.clusters[cluster].failed_hosts += 1;
        let c = &self.clusters[cluster];
        if c.failed_hosts <= c.budget {
            self.hosts[host].rollback_pending = true;
            return;
        }
        let policy = self.plan.playbook.strategy.on_failure;
        if let Some(wave) = self.plan.host_wave[host] {
            let failed = &mut self.failed_waves[wave];
            if failed.is_none() {
                *failed = Some(format!(
                    "cluster {} (region {}) failed {} host(s), beyond max_failures {}",
                    self.plan.inventory.clusters[cluster].name,
                    self.plan.inventory.regions[region].name,
                    c.failed_hosts,
                    c.budget
                ));
            }
        }
        self.emit(Event::BudgetExceeded {
            cluster: self.plan.inventory.clusters[cluster].name.clone(),
            region: self.plan.inventory.regions[region].name.clone(),
            failed_hosts: c.failed_hosts,
            max_failures: c.budget,
            action: serde_json::to_value(policy)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
        });
        match policy {
            OnFailure::Halt => {
                self.halted = true;
                self.stop_all("failure budget exceeded: halted");
            }
            OnFailure::RollbackRegion => {
                self.region_rollback[region] = true;
                self.stop_region(region);
            }
            OnFailure::RollbackAll => {
                self.all_rollback = true;
                self.stop_all("failure budget exceeded: rolling back every touched host");
            }
        }
    }

    fn stop_region(&mut self, region: usize) {
        if self.region_stopped[region] {
            return;
        }
        self.region_stopped[region] = true;
        self.emit(Event::Stopped {
            reason: format!(
                "region {} stopped",
                self.plan.inventory.regions[region].name
            ),
        });
        let unstarted: Vec<NodeId> = self
            .plan
            .tasks()
            .filter(|(n, t)| {
                self.plan.inventory.hosts[t.host].region == region
                    && matches!(self.state[n.index()], State::Waiting | State::Queued)
            })
            .map(|(n, _)| n)
            .collect();
        for node in unstarted {
            self.cancel(node);
        }
        for cluster in 0..self.clusters.len() {
            self.clusters[cluster]
                .waiting
                .retain(|h| self.plan.inventory.hosts[*h].region != region);
        }
    }

    fn stop_all(&mut self, reason: &str) {
        if self.all_stopped {
            return;
        }
        self.all_stopped = true;
        self.emit(Event::Stopped {
            reason: reason.to_string(),
        });
        let unstarted: Vec<NodeId> = self
            .plan
            .tasks()
            .filter(|(n, _)| matches!(self.state[n.index()], State::Waiting | State::Queued))
            .map(|(n, _)| n)
            .collect();
        for node in unstarted {
            self.cancel(node);
        }
        for cluster in &mut self.clusters {
            cluster.waiting.clear();
        }
    }

    // ----- gates -----

    fn gate_ready(&mut self, wave: usize, node: NodeId) {
        if let Some(reason) = self.failed_waves[wave].clone() {
            self.wave_failed(wave, node, reason);
            return;
        }
        if self.all_stopped {
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
        self.options.journal.append(&Record::WaveStopped {
            node: node.index(),
            wave: name.clone(),
            reason: reason.clone(),
        });
        self.emit(Event::WaveFailed {
            wave: name.clone(),
            reason: reason.clone(),
        });
        self.stopped_wave = Some((name.clone(), reason));
        if wave + 1 < self.plan.waves.len() {
            self.stop_all(&format!(
                "wave {name} failed: later waves do not start; fix its hosts and `pony resume {}`",
                self.options.run_dir.id
            ));
        }
    }

    fn stop_for_approval(&mut self, wave: usize) {
        let name = self.plan.waves[wave].name.clone();
        self.awaiting_approval = Some(name.clone());
        self.stop_all(&format!(
            "waiting for approval of wave {name}: continue with `pony resume {} --approve {name}`",
            self.options.run_dir.id
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
        if self.all_stopped {
            self.state[node.index()] = State::Held;
            return;
        }
        self.state[node.index()] = State::Succeeded;
        self.options.journal.append(&Record::GatePassed {
            node: node.index(),
            wave: self.plan.waves[wave].name.clone(),
        });
        self.emit(Event::GatePassed {
            wave: self.plan.waves[wave].name.clone(),
        });
        if let Some(next) = self.plan.waves.get(wave + 1) {
            self.emit(Event::WaveStarted {
                wave: next.name.clone(),
                hosts: next.hosts.len(),
            });
        }
        self.release(node, true);
    }

    // ----- rollback -----

    /// Starts every rollback whose hosts have nothing running any more.
    fn start_rollbacks(&mut self) {
        let ready_hosts: Vec<HostId> = (0..self.hosts.len())
            .filter(|&h| self.hosts[h].rollback_pending && self.hosts[h].running == 0)
            .collect();
        for host in ready_hosts {
            self.hosts[host].rollback_pending = false;
            self.spawn_rollback(RollbackScope::Host(host));
        }
        for region in 0..self.region_rollback.len() {
            if self.region_rollback[region]
                && self.region_running[region] == 0
                && !self.all_rollback
            {
                self.region_rollback[region] = false;
                self.spawn_rollback(RollbackScope::Region(region));
            }
        }
        if self.all_rollback && self.running.is_empty() {
            self.all_rollback = false;
            self.region_rollback.iter_mut().for_each(|r| *r = false);
            self.spawn_rollback(RollbackScope::All);
        }
    }

    fn spawn_rollback(&mut self, scope: RollbackScope) {
        let inventory = self.plan.inventory.clone();
        let in_scope = |host: HostId| match scope {
            RollbackScope::Host(h) => h == host,
            RollbackScope::Region(r) => inventory.hosts[host].region == r,
            RollbackScope::All => true,
        };
        // Every touched host of the scope, finished or not; hosts already rolled back
        // (or being rolled back) are left alone.
        let hosts: Vec<HostId> = (0..self.hosts.len())
            .filter(|&h| {
                in_scope(h)
                    && self.hosts[h].touched
                    && matches!(self.hosts[h].outcome, None | Some(HostOutcome::Ok))
            })
            .collect();
        for &h in &hosts {
            // Mark as in progress so that no other scope takes the host.
            self.hosts[h].outcome = Some(HostOutcome::RolledBack);
            self.hosts[h].rollback_pending = false;
        }
        let mut commands: HashMap<NodeId, RollbackCommand> = HashMap::new();
        let mut failed_renders = Vec::new();
        let mut chosen = vec![false; self.hosts.len()];
        hosts.iter().for_each(|&h| chosen[h] = true);
        for (node, task) in self.plan.tasks() {
            let done = matches!(self.state[node.index()], State::Succeeded | State::Failed)
                && !self.unchanged[node.index()];
            let covered = chosen[task.host]
                && (task.per == Per::Host || scope != RollbackScope::Host(task.host));
            if !done || !covered {
                continue;
            }
            let step = &self.plan.playbook.steps[task.step];
            match task::render_rollback(step, &self.context(task)) {
                Ok(Some(command)) => {
                    commands.insert(
                        node,
                        RollbackCommand {
                            host: task.host,
                            command,
                            label: self.plan.label(node),
                            timeout: step.timeout,
                        },
                    );
                }
                Ok(None) => {}
                Err(e) => failed_renders.push((task.host, node, e)),
            }
        }
        let scope_name = match scope {
            RollbackScope::Host(h) => format!("host {}", inventory.hosts[h].name),
            RollbackScope::Region(r) => format!("region {}", inventory.regions[r].name),
            RollbackScope::All => "all".to_string(),
        };
        self.emit(Event::RollbackStarted {
            scope: scope_name.clone(),
            hosts: hosts.len(),
        });
        for (_, node, error) in &failed_renders {
            self.emit(Event::RollbackTask {
                task: self.task_ref(*node),
                ok: false,
                exit_code: None,
                error: Some(error.clone()),
            });
        }
        let refs: HashMap<NodeId, TaskRef> =
            commands.keys().map(|n| (*n, self.task_ref(*n))).collect();
        let job = RollbackJob {
            plan: self.plan.clone(),
            pool: self.pool.clone(),
            journal: self.options.journal.clone(),
            events: self.events.clone(),
            redactor: self.options.redactor.clone(),
            commands,
            refs,
            hosts,
            failed: failed_renders.iter().map(|(h, _, _)| *h).collect(),
            scope_name,
        };
        self.rollbacks.spawn(job.run());
    }

    fn rollback_done(&mut self, done: RollbackDone) {
        for (host, ok) in done.hosts {
            self.hosts[host].outcome = None;
            self.set_host_outcome(
                host,
                if ok {
                    HostOutcome::RolledBack
                } else {
                    HostOutcome::RollbackFailed
                },
            );
            self.deactivate(host);
            self.pool.close(host);
        }
    }

    // ----- interrupts and the end -----

    async fn interrupt(&mut self, count: u32) {
        if count == 0 {
            return;
        }
        self.interrupted = true;
        self.stop_all(
            "interrupted: no new tasks start; running tasks finish (interrupt again to kill them)",
        );
        if count >= 2 {
            let running: Vec<NodeId> = (0..self.state.len())
                .filter(|&i| self.state[i] == State::Running)
                .map(NodeId::new)
                .collect();
            self.running.abort_all();
            for node in running {
                self.options
                    .journal
                    .write(&Record::TaskFinished {
                        node: node.index(),
                        label: self.plan.label(node),
                        state: TaskState::Interrupted,
                        exit_code: None,
                        duration_ms: 0,
                        captures: Vec::new(),
                        output_tail: String::new(),
                        error: Some("interrupted".into()),
                        changed: true,
                    })
                    .await;
                self.state[node.index()] = State::Cancelled;
                let task = *self.plan.task(node).expect("a task");
                self.region_running[self.plan.inventory.hosts[task.host].region] -= 1;
                self.hosts[task.host].running -= 1;
            }
            while self.running.join_next().await.is_some() {}
        }
    }

    async fn finish(mut self) -> RunReport {
        // Hosts the run never got to, or stopped before they finished.
        for host in 0..self.hosts.len() {
            if !self.rollback_only
                && self.hosts[host].outcome.is_none()
                && (self.plan.tasks_of_host(host).iter().any(|_| true))
            {
                let outcome = if self.hosts[host].failed {
                    HostOutcome::Failed
                } else if self.hosts[host].touched && self.hosts[host].left_tasks > 0 {
                    HostOutcome::Cancelled
                } else if self.hosts[host].touched {
                    HostOutcome::Ok
                } else {
                    HostOutcome::Cancelled
                };
                self.set_host_outcome(host, outcome);
            }
        }
        let outcomes: Vec<Option<HostOutcome>> = self.hosts.iter().map(|h| h.outcome).collect();
        let count = |o: HostOutcome| outcomes.iter().filter(|x| **x == Some(o)).count();
        let (rollback_failed, failed, rolled_back) = (
            count(HostOutcome::RollbackFailed),
            count(HostOutcome::Failed),
            count(HostOutcome::RolledBack),
        );
        let (outcome, exit) = if self.rollback_only {
            if rollback_failed > 0 {
                (RunOutcome::NeedsAttention, Exit::NeedsAttention)
            } else {
                (RunOutcome::RolledBack, Exit::Success)
            }
        } else if self.interrupted {
            (RunOutcome::Interrupted, Exit::Interrupted)
        } else if self.awaiting_approval.is_some() {
            (RunOutcome::AwaitingApproval, Exit::AwaitingApproval)
        } else if self.halted || rollback_failed > 0 || failed > 0 {
            (RunOutcome::NeedsAttention, Exit::NeedsAttention)
        } else if rolled_back > 0 {
            (RunOutcome::FailedRolledBack, Exit::FailedRolledBack)
        } else {
            (RunOutcome::Succeeded, Exit::Success)
        };
        let inventory = &self.plan.inventory;
        let regions = inventory
            .regions
            .iter()
            .enumerate()
            .filter_map(|(r, region)| {
                let hosts: Vec<HostId> = (0..inventory.hosts.len())
                    .filter(|&h| inventory.hosts[h].region == r && outcomes[h].is_some())
                    .collect();
                let c = |o: HostOutcome| hosts.iter().filter(|&&h| outcomes[h] == Some(o)).count();
                (!hosts.is_empty()).then(|| RegionSummary {
                    region: region.name.clone(),
                    hosts: hosts.len(),
                    ok: c(HostOutcome::Ok),
                    failed: c(HostOutcome::Failed) + c(HostOutcome::RollbackFailed),
                    rolled_back: c(HostOutcome::RolledBack),
                    cancelled: c(HostOutcome::Cancelled),
                    duration_ms: self.region_finished[r].as_millis() as u64,
                })
            })
            .collect();
        self.options
            .journal
            .write(&Record::RunFinished {
                outcome: format!("{outcome:?}"),
                exit_code: exit.code(),
                time: now(),
            })
            .await;
        self.emit(Event::Summary {
            run_id: self.options.run_dir.id.clone(),
            outcome,
            exit_code: exit.code(),
            hosts: outcomes.iter().filter(|o| o.is_some()).count(),
            ok: count(HostOutcome::Ok),
            failed: failed + rollback_failed,
            rolled_back,
            cancelled: count(HostOutcome::Cancelled),
            rollback_failed,
            stopped_wave: self.stopped_wave.as_ref().map(|(wave, _)| wave.clone()),
            duration_ms: self.started.elapsed().as_millis() as u64,
            regions,
            run_dir: self.options.run_dir.path.display().to_string(),
        });
        RunReport {
            outcome,
            exit,
            hosts: outcomes,
        }
    }
}

/// A rollback over some hosts: each task's rollback runs after the rollbacks of every
/// task that depended on it (the graph walked backwards), in parallel across hosts.
struct RollbackJob {
    plan: Arc<Plan>,
    pool: Arc<HostPool>,
    journal: Journal,
    events: UnboundedSender<Event>,
    redactor: Redactor,
    commands: HashMap<NodeId, RollbackCommand>,
    refs: HashMap<NodeId, TaskRef>,
    hosts: Vec<HostId>,
    failed: Vec<HostId>,
    scope_name: String,
}

impl RollbackJob {
    async fn run(self) -> RollbackDone {
        let plan = &self.plan;
        let mut waiting: Vec<usize> = plan
            .graph
            .node_indices()
            .map(|n| plan.dependents(n).count())
            .collect();
        let mut ready: Vec<NodeId> = plan
            .graph
            .node_indices()
            .filter(|n| waiting[n.index()] == 0)
            .collect();
        let mut running: JoinSet<(NodeId, bool)> = JoinSet::new();
        let mut failed_hosts: Vec<HostId> = self.failed.clone();
        loop {
            while let Some(node) = ready.pop() {
                match self.commands.get(&node) {
                    Some(rollback) => {
                        let (host, command, label, timeout) = (
                            rollback.host,
                            rollback.command.clone(),
                            rollback.label.clone(),
                            rollback.timeout,
                        );
                        let pool = self.pool.clone();
                        let journal = self.journal.clone();
                        let events = self.events.clone();
                        let task_ref = self.refs[&node].clone();
                        let redactor = self.redactor.clone();
                        running.spawn(async move {
                            journal
                                .write(&Record::RollbackStarted {
                                    node: node.index(),
                                    label: label.clone(),
                                })
                                .await;
                            let spec = TaskSpec {
                                action: task::RenderedAction::Run(command),
                                creates: None,
                                unless: None,
                                capture: None,
                                until: None,
                                timeout,
                                retries: 1,
                                retry_delay: Duration::from_secs(1),
                            };
                            let run = task::execute(&pool, host, &spec).await;
                            let error = (!run.ok).then(|| {
                                redactor.redact(&format!(
                                    "{}: {}",
                                    run.error.clone().unwrap_or_default(),
                                    run.tail(TAIL_LINES)
                                ))
                            });
                            journal
                                .write(&Record::RollbackFinished {
                                    node: node.index(),
                                    label,
                                    ok: run.ok,
                                    exit_code: run.exit_code,
                                    error: error.clone(),
                                })
                                .await;
                            let _ = events.send(Event::RollbackTask {
                                task: task_ref,
                                ok: run.ok,
                                exit_code: run.exit_code,
                                error,
                            });
                            (node, run.ok)
                        });
                    }
                    None => {
                        for dependency in plan.dependencies(node) {
                            waiting[dependency.index()] -= 1;
                            if waiting[dependency.index()] == 0 {
                                ready.push(dependency);
                            }
                        }
                    }
                }
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            let Ok((node, ok)) = joined else { continue };
            if !ok {
                failed_hosts.push(self.commands[&node].host);
            }
            for dependency in plan.dependencies(node) {
                waiting[dependency.index()] -= 1;
                if waiting[dependency.index()] == 0 {
                    ready.push(dependency);
                }
            }
        }
        let ok = failed_hosts.is_empty();
        let _ = self.events.send(Event::RollbackFinished {
            scope: self.scope_name.clone(),
            ok,
        });
        RollbackDone {
            hosts: self
                .hosts
                .iter()
                .map(|h| (*h, !failed_hosts.contains(h)))
                .collect(),
        }
    }
}

fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// What a task ran and printed, for its host's log.
fn log_text(label: &str, run: &TaskRun, redactor: &Redactor) -> String {
    let mut text = format!(
        "== {} {label} ({} attempt(s), {:?})\n",
        now(),
        run.attempts,
        run.duration
    );
    for command in &run.commands {
        text.push_str(&format!("$ {}\n", redactor.redact(command)));
    }
    text.push_str(&redactor.redact(&String::from_utf8_lossy(&run.stdout)));
    text.push_str(&redactor.redact(&String::from_utf8_lossy(&run.stderr)));
    if let Some(error) = &run.error {
        text.push_str(&format!("!! {}\n", redactor.redact(error)));
    }
    text
}

/// How long until the window opens, or `None` when it is open now.
fn window_wait(window: &crate::playbook::Window) -> Option<Duration> {
    use chrono::Timelike;
    let zone: chrono_tz::Tz = window.time_zone.parse().ok()?;
    let now = chrono::Utc::now().with_timezone(&zone);
    let minute = now.hour() * 60 + now.minute();
    let (start, end) = (window.start_minute, window.end_minute);
    let open = if start == end {
        true
    } else if start < end {
        (start..end).contains(&minute)
    } else {
        minute >= start || minute < end
    };
    if open {
        return None;
    }
    let minutes = (start + 24 * 60 - minute) % (24 * 60);
    Some(Duration::from_secs(
        (u64::from(minutes) * 60)
            .saturating_sub(u64::from(now.second()))
            .max(1),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Timelike;

    fn window(start: u32, end: u32, zone: &str) -> crate::playbook::Window {
        crate::playbook::Window {
            start_minute: start,
            end_minute: end,
            time_zone: zone.into(),
            text: String::new(),
        }
    }

    #[test]
    fn change_windows_in_their_time_zone() {
        let now = chrono::Utc::now();
        let minute = now.hour() * 60 + now.minute();
        // Open: a window around now (also across midnight).
        assert_eq!(
            window_wait(&window(
                (minute + 1440 - 60) % 1440,
                (minute + 60) % 1440,
                "UTC"
            )),
            None
        );
        // Closed: opens in two hours.
        let wait =
            window_wait(&window((minute + 120) % 1440, (minute + 180) % 1440, "UTC")).unwrap();
        assert!(
            wait > Duration::from_secs(7000) && wait <= Duration::from_secs(7200),
            "{wait:?}"
        );
        // The same window in Shanghai time (UTC+8) is eight hours off.
        let shanghai = (minute + 8 * 60) % 1440;
        assert_eq!(
            window_wait(&window(
                (shanghai + 1440 - 30) % 1440,
                (shanghai + 30) % 1440,
                "Asia/Shanghai"
            )),
            None
        );
    }
}
