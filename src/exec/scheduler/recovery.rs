//! Undoing and continuing: rollbacks (spawned per scope, run in a [`RollbackOrder`],
//! paced by the clusters' `max_unavailable` slots unless `pace: all`), `pony resume` from
//! the journal's replay, and `pony rollback` of a past run.

use super::nodes::State;
use super::workers::RollbackRun;
use super::Scheduler;
use crate::events::{Event, HostOutcome};
use crate::exec::host_run::Phase;
use crate::exec::rollback::{RollbackCommand, RollbackOrder, RollbackScope};
use crate::exec::task::{self, TaskRun, TaskSpec};
use crate::inventory::pattern::HostSet;
use crate::inventory::HostId;
use crate::plan::{Node, NodeId, Task};
use crate::playbook::{Per, RollbackPace};
use crate::state::replay::{Replay, TaskState};
use std::collections::HashMap;
use std::time::Duration;

use super::tasks::TAIL_LINES;
use crate::secret::is_secret_name;

impl Scheduler {
    // ----- resume and `pony rollback` -----

    /// Continues a run: what the journal shows done is not run again, its captures
    /// come back, passed gates stay passed; everything else (including tasks that were
    /// running when the controller died) runs. With `--skip-failed-wave`, the failed
    /// wave's unfinished tasks are left as they are and its gate passes.
    pub(super) fn resume_from(&mut self, replay: &Replay) {
        let skipped_wave = self
            .options
            .skip_failed_wave
            .as_ref()
            .and_then(|name| self.plan.waves.iter().position(|w| &w.name == name));
        if let Some(wave) = skipped_wave {
            self.emit(Event::WaveSkipped(crate::events::WaveSkipped {
                wave: self.plan.waves[wave].name.clone(),
                user: crate::process::current_user(),
            }));
        }
        let recapture = self.secret_captures_to_redo(replay);
        let rolled_back = self.hosts_to_redeploy(replay);
        for node in self.plan.topological_order().to_vec() {
            let i = node.index();
            let done = match self.plan.graph[node] {
                Node::Task(_) if recapture[i] => false,
                // A rolled-back host is on the old release again: it is deployed again
                // from its first task (a step without `rollback` that wrote into what an
                // earlier step's rollback removed must run again too); not in a wave
                // `--skip-failed-wave` leaves as it is. So is a host left in flight under
                // a dead man's switch, which may have fired since (the drain first).
                Node::Task(task)
                    if task.per == Per::Host
                        && rolled_back[task.host]
                        && Some(task.wave) != skipped_wave =>
                {
                    false
                }
                Node::Task(task) => match replay.done(&self.plan.label(node)) {
                    Some(previous) => {
                        self.nodes.set_changed(node, previous.changed);
                        // A handler after it, not yet run, still hears of its change.
                        self.nodes.set_reported(node, previous.reported_changed);
                        self.restore_captures(&task, &previous.captures);
                        self.fleet.hosts[task.host].touched = true;
                        self.fleet.count_done(task);
                        true
                    }
                    None if Some(task.wave) == skipped_wave => {
                        self.fleet.count_done(task);
                        for dependent in self.plan.dependents(node).collect::<Vec<_>>() {
                            self.nodes.count_down(dependent);
                        }
                        self.nodes.set(node, State::Cancelled);
                        continue;
                    }
                    None => false,
                },
                Node::Gate(wave) if Some(wave) == skipped_wave && self.nodes.free(node) => {
                    self.emit(Event::GatePassed {
                        wave: self.plan.waves[wave].name.clone(),
                        node: i,
                    });
                    true
                }
                Node::Gate(wave) => {
                    self.nodes.free(node)
                        && replay.gates_passed.contains(&self.plan.waves[wave].name)
                }
                Node::Join { .. } => self.nodes.free(node),
            };
            if done {
                self.nodes.set(node, State::Succeeded);
                for dependent in self.plan.dependents(node).collect::<Vec<_>>() {
                    self.nodes.count_down(dependent);
                }
            }
        }
        self.resumed();
    }

    /// Hosts a resume deploys again from their first task: those the journal shows
    /// rolled back, and those left in flight under a dead man's switch.
    fn hosts_to_redeploy(&self, replay: &Replay) -> Vec<bool> {
        let mut rolled_back = self.rolled_back_hosts(replay);
        let plan = &self.plan;
        let in_flight = crate::exec::dead_man::in_flight_hosts(
            plan,
            |node| replay.tasks.contains_key(&plan.label(NodeId::new(node))),
            |node| replay.done(&plan.label(NodeId::new(node))).is_some(),
        );
        for (host, in_flight) in in_flight.into_iter().enumerate() {
            rolled_back[host] |= in_flight;
        }
        rolled_back
    }

    /// After the replay: hosts with nothing left are done, and what has no dependency
    /// left becomes ready.
    fn resumed(&mut self) {
        for host in 0..self.fleet.hosts.len() {
            if self.fleet.hosts[host].touched && self.fleet.hosts[host].left_tasks == 0 {
                self.set_host_outcome(host, HostOutcome::Ok);
            }
        }
        let ready: Vec<NodeId> = self
            .plan
            .graph
            .node_indices()
            .filter(|&n| self.nodes.state(n) == State::Waiting && self.nodes.free(n))
            .collect();
        for node in ready {
            if self.nodes.state(node) == State::Waiting {
                self.ready(node);
            }
        }
    }

    /// Tasks a resume runs again although the journal shows them done: a task whose
    /// `capture:` is secret (its value was never written down) while a task after it
    /// still has to run, and every done task between the two, so that what follows sees
    /// the capture again in order. Steps are re-runnable; `creates`/`unless` still guard.
    fn secret_captures_to_redo(&self, replay: &Replay) -> Vec<bool> {
        let plan = &self.plan;
        let mut redo = vec![false; plan.graph.node_count()];
        let done = |node: NodeId| replay.done(&plan.label(node)).is_some();
        let secret_capture = |node: NodeId| {
            plan.task(node).is_some_and(|t| {
                plan.playbook.steps[t.step]
                    .capture
                    .as_deref()
                    .is_some_and(is_secret_name)
            })
        };
        // Backwards: whether a task not yet done comes after each task (through tasks).
        let mut work_after = vec![false; plan.graph.node_count()];
        for &node in plan.topological_order().iter().rev() {
            work_after[node.index()] = plan
                .dependents(node)
                .filter(|d| plan.task(*d).is_some())
                .any(|d| !done(d) || work_after[d.index()]);
        }
        for &node in plan.topological_order() {
            if plan.task(node).is_none() || !done(node) {
                continue;
            }
            let after_redone = plan
                .dependencies(node)
                .any(|d| plan.task(d).is_some() && redo[d.index()]);
            redo[node.index()] = (secret_capture(node) && work_after[node.index()]) || after_redone;
        }
        redo
    }

    /// Hosts the journal shows rolled back: a task of theirs was rolled back.
    fn rolled_back_hosts(&self, replay: &Replay) -> Vec<bool> {
        let mut hosts = vec![false; self.fleet.hosts.len()];
        for (node, task) in self.plan.tasks() {
            if task.per == Per::Host
                && replay
                    .tasks
                    .get(&self.plan.label(node))
                    .is_some_and(|t| t.rolled_back)
            {
                hosts[task.host] = true;
            }
        }
        hosts
    }

    /// [`explain_render_error`] with the captures the task sees now.
    pub(super) fn explain_render_error(&self, task: &Task, error: String) -> String {
        super::tasks::explain_render_error(&self.plan, &self.captures_of(task), task, error)
    }

    /// Rolls back, on `hosts`, every task the journal shows completed or failed and not
    /// yet rolled back.
    pub(super) fn rollback_from(&mut self, replay: &Replay, hosts: HostSet) {
        self.course.ending.rollback_only = true;
        for (node, task) in self.plan.tasks().map(|(n, t)| (n, *t)).collect::<Vec<_>>() {
            let Some(previous) = replay.tasks.get(&self.plan.label(node)) else {
                continue;
            };
            if previous.rolled_back || previous.state == TaskState::Interrupted {
                continue;
            }
            self.nodes.set(
                node,
                if previous.state == TaskState::Failed {
                    State::Failed
                } else {
                    State::Succeeded
                },
            );
            self.nodes.set_changed(node, previous.changed);
            self.restore_captures(&task, &previous.captures);
            if hosts.contains(task.host) {
                self.fleet.hosts[task.host].touched = true;
            }
        }
        self.spawn_rollback(RollbackScope::All);
    }

    pub(super) fn restore_captures(&mut self, task: &Task, captures: &[(String, String)]) {
        for (name, value) in captures {
            self.store_capture(task, name, value);
        }
    }

    // ----- rollback -----

    /// Starts every rollback whose hosts have nothing running any more.
    pub(super) fn start_due_rollbacks(&mut self) {
        let still_due: Vec<HostId> = self
            .rollbacks
            .take_due_hosts()
            .into_iter()
            .filter(|&h| self.fleet.hosts[h].phase == Phase::Failed { rollback_due: true })
            .collect();
        let (mut due, later): (Vec<HostId>, Vec<HostId>) = still_due
            .into_iter()
            .partition(|&h| self.fleet.hosts[h].running == 0);
        self.rollbacks.keep_due(later);
        due.sort_unstable();
        for host in due {
            self.spawn_rollback(RollbackScope::Host(host));
        }
        for region in 0..self.fleet.regions.len() {
            let r = &self.fleet.regions[region];
            if r.rollback_due && r.running == 0 && !self.rollbacks.all_due {
                self.fleet.regions[region].rollback_due = false;
                self.spawn_rollback(RollbackScope::Region(region));
            }
        }
        if self.rollbacks.all_due && self.workers.tasks.is_empty() {
            self.rollbacks.all_due = false;
            self.fleet
                .regions
                .iter_mut()
                .for_each(|r| r.rollback_due = false);
            self.spawn_rollback(RollbackScope::All);
        }
        // Slots freed since (by any host) let waiting hosts of every rollback in.
        for job in self.rollbacks.active() {
            self.pump_rollback(job);
        }
    }

    pub(super) fn spawn_rollback(&mut self, scope: RollbackScope) {
        let plan = self.plan.clone();
        // Every touched host of the scope, finished or not; hosts already rolled back
        // (or being rolled back) are left alone.
        let hosts: Vec<HostId> = (0..self.fleet.hosts.len())
            .filter(|&h| {
                let host = &self.fleet.hosts[h];
                scope.covers(&plan, h)
                    && host.touched
                    && !self.is_remote(h)
                    && !matches!(
                        host.phase,
                        Phase::RollingBack
                            | Phase::Done(
                                HostOutcome::RolledBack
                                    | HostOutcome::RollbackFailed
                                    | HostOutcome::Unreachable
                            )
                    )
            })
            .collect();
        // Hosts already out of service (they hold a slot) roll back first.
        let mut hosts = hosts;
        hosts.sort_by_key(|&h| !self.fleet.hosts[h].slot);
        let mut chosen = vec![false; self.fleet.hosts.len()];
        for &h in &hosts {
            chosen[h] = true;
            self.fleet.hosts[h].phase = Phase::RollingBack;
        }
        let (commands, failed_renders) = self.rollback_commands(scope, &chosen);
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
                duration_ms: 0,
                log: format!("!! rollback could not be rendered: {error}\n"),
            });
        }
        let order = RollbackOrder::new(
            &plan,
            scope,
            hosts,
            commands,
            failed_renders.iter().map(|(h, n, _)| (*h, *n)).collect(),
            self.options.rollback_pace == RollbackPace::Window,
        );
        let job = self.rollbacks.start(order);
        self.pump_rollback(job);
    }

    /// The rollback commands of the tasks to undo on the chosen hosts (a host's own
    /// rollback leaves its region's and run's tasks alone), and those that could not be
    /// rendered: `(host, task, error)`.
    #[allow(clippy::type_complexity)]
    fn rollback_commands(
        &self,
        scope: RollbackScope,
        chosen: &[bool],
    ) -> (
        HashMap<NodeId, RollbackCommand>,
        Vec<(HostId, NodeId, String)>,
    ) {
        let plan = &self.plan;
        let mut commands: HashMap<NodeId, RollbackCommand> = HashMap::new();
        let mut failed_renders = Vec::new();
        for (node, task) in plan.tasks() {
            let done = self.nodes.to_undo(node);
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
                            runs_on: task.runs_on(),
                            command,
                            timeout: step.timeout,
                        },
                    );
                }
                Ok(None) => {}
                Err(error) => {
                    let error = self.explain_render_error(task, error);
                    failed_renders.push((task.host, node, error))
                }
            }
        }
        (commands, failed_renders)
    }

    /// Admits the rollback's waiting hosts while their clusters have free slots (a host
    /// that already holds one goes straight in), starts whatever the order allows now,
    /// reports hosts whose rollback ended (freeing their slots); ends the rollback when
    /// nothing is left.
    pub(super) fn pump_rollback(&mut self, job: usize) {
        loop {
            self.admit_rollback_hosts(job);
            self.start_rollback_commands(job);
            let Some(order) = self.rollbacks.order_mut(job) else {
                return;
            };
            let not_attempted = order.take_not_attempted();
            let completed = order.take_completed();
            let stalled = order.stalled();
            self.report_not_attempted(not_attempted);
            if !completed.is_empty() {
                for (host, ok) in completed {
                    if ok {
                        self.verify_rollback(job, host);
                    } else {
                        self.rollback_judged(host, false);
                    }
                }
                continue;
            }
            // Every slot is held by hosts that wait on this rollback's other hosts (a
            // task that needed another host's): one more host goes in rather than
            // deadlock.
            if stalled && self.workers.no_commands() {
                let waiting = self.rollbacks.order(job).map(RollbackOrder::waiting_hosts);
                if let Some(&host) = waiting.as_deref().and_then(<[HostId]>::first) {
                    tracing::warn!(
                        "rollback of {} waits on a host without a free slot; letting it in",
                        self.plan.inventory.hosts[host].name
                    );
                    self.take_rollback_slot(host);
                    if let Some(order) = self.rollbacks.order_mut(job) {
                        order.admit(host);
                    }
                    continue;
                }
            }
            break;
        }
        // Complete once its commands ended and its hosts' health is judged.
        if let Some((order, healthy)) = self.rollbacks.take_finished(job) {
            self.rollback_done(order, healthy);
        }
    }

    /// Rollbacks a failed one stopped: each named with the failed rollback, before its
    /// host's verdict.
    fn report_not_attempted(&mut self, not_attempted: Vec<(NodeId, NodeId)>) {
        for (node, failed) in not_attempted {
            let task = self.task_ref(node);
            let blocked_by = self.plan.label(failed);
            let reason = format!("not attempted: rollback of {blocked_by} failed");
            self.rollbacks.not_attempted.push(task.label.clone());
            self.emit(Event::RollbackNotAttempted {
                log: format!("!! rollback {} {reason}\n", task.label),
                task,
                reason,
                blocked_by,
            });
        }
    }

    fn admit_rollback_hosts(&mut self, job: usize) {
        let Some(order) = self.rollbacks.order(job) else {
            return;
        };
        for host in order.waiting_hosts() {
            let cluster = self.plan.inventory.hosts[host].cluster;
            if !self.fleet.hosts[host].slot {
                if !self.admission.has_room(cluster) {
                    continue;
                }
                self.take_rollback_slot(host);
            }
            if let Some(order) = self.rollbacks.order_mut(job) {
                order.admit(host);
            }
        }
    }

    fn take_rollback_slot(&mut self, host: HostId) {
        if !std::mem::replace(&mut self.fleet.hosts[host].slot, true) {
            self.admission.take(self.plan.inventory.hosts[host].cluster);
        }
    }

    /// A host's rollback is judged: its commands (and, when they succeeded, its health).
    pub(super) fn rollback_judged(&mut self, host: HostId, ok: bool) {
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

    fn start_rollback_commands(&mut self, job: usize) {
        while let Some((node, command)) =
            self.rollbacks.order_mut(job).and_then(|o| o.next_command())
        {
            let durable = self.emit_durable(Event::RollbackTaskStarted {
                task: self.task_ref(node),
            });
            let pool = self.pool.clone();
            let work = task::Work {
                node: node.index(),
                step: self.plan.task(node).expect("a task").step,
                host: command.host,
                rollback: true,
            };
            let mark =
                crate::transport::TaskMark::new(&self.options.run_id, format!("r{}", node.index()));
            let marked = crate::transport::MARK.scope(mark, async move {
                if !durable.await {
                    return RollbackRun {
                        job,
                        node,
                        run: TaskRun::not_journaled(),
                    };
                }
                let spec = TaskSpec {
                    action: task::RenderedAction::Run(command.command),
                    creates: None,
                    unless: None,
                    capture: None,
                    until: None,
                    timeout: command.timeout,
                    retries: 1,
                    retry_delay: Duration::from_secs(1),
                    dead_man: None,
                    changed_when: Default::default(),
                };
                let run = task::execute(&pool, command.runs_on, &spec).await;
                RollbackRun { job, node, run }
            });
            self.workers.rollbacks.spawn(task::WORK.scope(work, marked));
        }
    }

    pub(super) fn rollback_command_done(&mut self, done: RollbackRun) {
        let RollbackRun { job, node, run } = done;
        if run.not_journaled {
            self.journal_lost();
        }
        let task = self.task_ref(node);
        let error = (!run.ok).then(|| {
            format!(
                "{}: {}",
                run.error.clone().unwrap_or_default(),
                run.tail(TAIL_LINES)
            )
        });
        let log = task::log_text(&format!("rollback {}", task.label), &run);
        self.emit(Event::RollbackTask {
            task,
            ok: run.ok,
            exit_code: run.exit_code,
            error,
            duration_ms: run.duration.as_millis() as u64,
            log,
        });
        if let Some(order) = self.rollbacks.order_mut(job) {
            order.done(&self.plan, node, run.ok);
        }
        self.pump_rollback(job);
    }

    pub(super) fn rollback_done(&mut self, order: RollbackOrder, healthy: bool) {
        self.emit(Event::RollbackFinished {
            scope: order.scope.name(&self.plan),
            ok: order.ok() && healthy,
        });
    }
}
