//! A task's life in the loop: its spawn on a worker (or, for another controller's
//! region, the wait for its journaled result), its result turned into an event and the
//! host's bookkeeping, and its end passed on to its dependents (released, skipped or
//! cancelled).

use super::nodes::State;
use super::{Scheduler, Stop};
use crate::events::{Event, HostOutcome, TaskRecord, TaskRef};
use crate::exec::host_run::Phase;
use crate::exec::task::{self, TaskRun, TaskSpec};
use crate::inventory::{HostId, Vars};
use crate::plan::{Node, NodeId, Plan, Task};
use std::sync::Arc;

use crate::playbook::Action;
use crate::secret::is_secret_name;

/// Lines of output kept in events and the journal.
pub(super) const TAIL_LINES: usize = 10;

/// A task [`Scheduler::start_task`] started; `durable` tells whether its start reached the
/// journal (its command must not run otherwise).
pub(super) struct Started<D> {
    pub task: Task,
    pub render: Render,
    pub label: String,
    pub work: task::Work,
    pub durable: D,
}

impl Scheduler {
    pub(super) fn context(&self, task: &Task) -> minijinja::Value {
        task::context(
            &self.plan,
            task,
            &self.options.run_id,
            &self.captures_of(task),
        )
    }

    /// The captures a task sees: the run's, its region's, its host's.
    pub(super) fn captures_of(&self, task: &Task) -> Vars {
        self.fleet.captures_of(&self.plan, task)
    }

    /// Marks `node` running and counted on its host, and journals its start: what a task
    /// alone and each task of a chain do before anything of theirs runs.
    pub(super) fn start_task(
        &mut self,
        node: NodeId,
    ) -> Started<impl std::future::Future<Output = bool>> {
        let task = *self.plan.task(node).expect("a task");
        self.nodes.set(node, State::Running);
        let region = self.plan.inventory.hosts[task.host].region;
        self.fleet.task_started(task.host, region);
        // Rendered in the worker, not here: an upload or template reads its file.
        let render = self.render_of(node, task);
        let task_ref = self.task_ref(node);
        let label = task_ref.label.clone();
        let work = task::Work {
            node: node.index(),
            step: task.step,
            host: task.host,
            rollback: false,
        };
        // The start is on disk before the command starts.
        let durable = self.emit_durable(Event::TaskStarted { task: task_ref });
        Started {
            task,
            render,
            label,
            work,
            durable,
        }
    }

    /// What a task's worker renders it from.
    pub(super) fn render_of(&self, node: NodeId, task: Task) -> Render {
        let captures = self.captures_of(&task);
        Render {
            context: task::context(&self.plan, &task, &self.options.run_id, &captures),
            plan: self.plan.clone(),
            task,
            node,
            captures,
            run: self.task_mark(node).run,
        }
    }

    pub(super) fn spawn(&mut self, node: NodeId) {
        // The tasks that follow it on its host, to run with it in one round trip.
        let rest = self.chain_after(node);
        if !rest.is_empty() {
            return self.spawn_chain(node, rest);
        }
        let Started {
            task,
            render,
            label,
            work,
            durable,
        } = self.start_task(node);
        if let Some(split) = self
            .options
            .split
            .as_ref()
            .filter(|_| self.is_remote(task.host))
        {
            let result = split.outcome(node.index());
            self.workers
                .remote
                .spawn(async move { (node, result.await, String::new()) });
            return;
        }
        if let Some(reason) = self.unnotified(node, task) {
            // Journaled like a guard's skip: started, then skipped with its reason.
            self.workers.tasks.spawn(async move {
                if !durable.await {
                    return (node, TaskRun::not_journaled(), String::new());
                }
                let run = TaskRun::unnotified(reason);
                let log = task::log_text(&label, &run);
                (node, run, log)
            });
            return;
        }
        let pool = self.pool.clone();
        // Its commands on the host are marked, so that they can be killed as a whole.
        let mark = self.task_mark(node);
        let marked = crate::transport::MARK.scope(mark, async move {
            if !durable.await {
                return (node, TaskRun::not_journaled(), String::new());
            }
            let run = match render.spec().await {
                Ok(spec) => task::execute(&pool, task.runs_on(), &spec).await,
                Err(error) => TaskRun::not_started(error),
            };
            // Built here, off the scheduler's thread: it copies all of the task's output.
            let log = task::log_text(&label, &run);
            (node, run, log)
        });
        self.workers.tasks.spawn(task::WORK.scope(work, marked));
    }

    /// For a handler none of whose listened tasks on its host reported a change: why
    /// it is skipped (`None`: it runs, or it is no handler).
    fn unnotified(&self, node: NodeId, task: Task) -> Option<String> {
        let step = &self.plan.playbook.steps[task.step];
        if !step.is_handler() {
            return None;
        }
        let heard = self
            .plan
            .dependencies(node)
            .filter(|&d| {
                self.plan
                    .task(d)
                    .is_some_and(|t| t.host == task.host && step.listen.contains(&t.step))
            })
            .any(|d| self.nodes.reported(d));
        let names: Vec<&str> = step
            .listen
            .iter()
            .map(|&l| self.plan.playbook.steps[l].name.as_str())
            .collect();
        (!heard).then(|| format!("no change notified it (listened: {})", names.join(", ")))
    }

    /// The mark of a task's commands on its host (see [`crate::transport::TaskMark`]).
    pub(super) fn task_mark(&self, node: NodeId) -> crate::transport::TaskMark {
        crate::transport::TaskMark::new(&self.options.run_id, format!("t{}", node.index()))
    }

    pub(super) fn finished(&mut self, node: NodeId, run: TaskRun, log: String) {
        let task = *self.plan.task(node).expect("a task");
        let region = self.plan.inventory.hosts[task.host].region;
        self.fleet.task_ended(task.host, region);
        self.chain_member_ended(node);
        if let Some(why) = run.not_run {
            return self.not_run_in_chain(node, task, why);
        }
        if run.not_journaled {
            // Its start could not be journaled, so its command never ran.
            self.nodes.set(node, State::Cancelled);
            self.fleet.hosts[task.host].cut_short = true;
            self.task_done(task);
            self.release(node, false);
            self.journal_lost();
            return;
        }
        self.nodes.set_changed(node, run.changed_host());
        self.nodes.set_reported(node, run.reports_change());
        let task_ref = self.task_ref(node);
        // A capture named like a secret lives in this process's memory only: its value
        // is hidden from everything emitted from now on (this task's own output first),
        // and it is left out of the record, so no journal, log or database holds it.
        if let Some((_, value)) = run.captured.as_ref().filter(|(n, _)| is_secret_name(n)) {
            self.options.redactor.add(value.clone());
        }
        let event = result_event(task_ref, &run, log);
        let durable = self.emit_durable(event);
        let skipped_host = matches!(
            self.fleet.hosts[task.host].phase,
            Phase::Done(HostOutcome::Unreachable)
        );
        if run.reached {
            self.fleet.hosts[task.host].reached = true;
        }
        if run.ok {
            self.nodes.set(node, State::Succeeded);
            if let Some((name, value)) = &run.captured {
                self.store_capture(&task, name, value);
            }
        } else {
            self.nodes.set(node, State::Failed);
            if run.unreachable && self.may_skip_unreachable(task.host) {
                self.host_unreachable(task.host);
            } else if !skipped_host {
                self.host_failed(task.host);
            }
        }
        self.task_done(task);
        // Dependents start once the result is on disk.
        let ok = run.ok;
        self.workers
            .syncing
            .spawn(async move { (node, ok, durable.await) });
    }

    pub(super) fn store_capture(&mut self, task: &Task, name: &str, value: &str) {
        self.fleet.store_capture(&self.plan, task, name, value);
    }

    /// Bookkeeping when a task reaches a final state (however it got there).
    pub(super) fn task_done(&mut self, task: Task) {
        self.fleet.count_done(task);
        let h = &self.fleet.hosts[task.host];
        // A failed host stays out of service (and holds its slot) until its rollback is
        // done. The host is reported finished before the next one takes its slot.
        let leaves_service = h.left_host_tasks == 0 && h.phase == Phase::Active;
        // A host whose steps all ran is checked for health before it leaves service.
        if leaves_service && h.touched && !h.cut_short && self.verify_deploy(task.host) {
            return;
        }
        self.maybe_host_finished(task.host);
        if leaves_service {
            self.free_slot(task.host);
        }
    }

    pub(super) fn maybe_host_finished(&mut self, host: HostId) {
        let h = &self.fleet.hosts[host];
        if h.left_tasks > 0
            || h.running > 0
            || h.health_pending
            || !matches!(h.phase, Phase::Active | Phase::Idle)
        {
            return;
        }
        let outcome = h.touched.then(|| h.touched_outcome());
        if let Some(outcome) = outcome {
            self.set_host_outcome(host, outcome);
        }
        if outcome == Some(HostOutcome::Incomplete) {
            self.pool.close_in_flight(host);
        } else {
            self.pool.close(host);
        }
    }

    pub(super) fn set_host_outcome(&mut self, host: HostId, outcome: HostOutcome) {
        self.fleet.hosts[host].phase = Phase::Done(outcome);
        let inventory = &self.plan.inventory;
        let spec = &inventory.hosts[host];
        self.fleet.regions[spec.region].finished = self.course.started.elapsed();
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
    pub(super) fn release(&mut self, node: NodeId, success: bool) {
        let mut stack = vec![(node, success)];
        while let Some((node, success)) = stack.pop() {
            // In graph order (petgraph lists a node's edges newest first): after a gate,
            // hosts queue for their cluster's slots in the order `--dry-run` shows.
            let mut dependents: Vec<NodeId> = self.plan.dependents(node).collect();
            dependents.sort_unstable();
            for dependent in dependents {
                if success || matches!(self.plan.graph[dependent], Node::Gate(_)) {
                    if self.nodes.state(dependent) != State::Waiting {
                        continue;
                    }
                    if self.nodes.count_down(dependent) {
                        self.ready(dependent);
                    }
                } else if self.nodes.state(dependent) == State::Waiting {
                    self.nodes.set(dependent, State::Skipped);
                    if let Some(task) = self.plan.task(dependent).copied() {
                        self.emit(Event::TaskSkipped {
                            task: self.task_ref(dependent),
                            reason: "a dependency failed or was cancelled".into(),
                            record: None,
                        });
                        // Skipped because a stop cancelled what it needed: cut short too.
                        if self.course.stop != Stop::No {
                            self.fleet.hosts[task.host].cut_short = true;
                        }
                        self.task_done(task);
                    }
                    stack.push((dependent, false));
                }
            }
        }
    }

    /// A task that will not run because its host, region or the run stopped.
    pub(super) fn cancel(&mut self, node: NodeId) {
        let state = self.nodes.state(node);
        if state.is_done() || state == State::Running {
            return;
        }
        self.nodes.set(node, State::Cancelled);
        if let Some(task) = self.plan.task(node).copied() {
            self.fleet.hosts[task.host].cut_short = true;
            self.task_done(task);
        }
        self.release(node, false);
    }

    /// [`Self::cancel_unstarted`] for one host's tasks, without a walk over every task.
    pub(super) fn cancel_unstarted_of_host(&mut self, host: HostId) {
        let mut unstarted: Vec<NodeId> = self
            .plan
            .tasks_of_host(host)
            .iter()
            .copied()
            .filter(|&n| self.nodes.unstarted(n))
            .collect();
        unstarted.sort_unstable();
        for node in unstarted {
            self.cancel(node);
        }
    }

    pub(super) fn cancel_unstarted(&mut self, mut which: impl FnMut(&Self, &Task) -> bool) {
        let unstarted: Vec<NodeId> = self
            .plan
            .tasks()
            .filter(|(n, t)| self.nodes.unstarted(*n) && which(self, t))
            .map(|(n, _)| n)
            .collect();
        for node in unstarted {
            self.cancel(node);
        }
    }
}

/// What a task's worker renders its templates from: they are rendered there, not on the
/// loop, as an `upload` or `template` reads its file (on the blocking pool).
pub(super) struct Render {
    plan: Arc<Plan>,
    task: Task,
    node: NodeId,
    context: minijinja::Value,
    /// The captures the task sees (to explain a missing secret capture).
    captures: Vars,
    /// The run's part of the task's mark (where a dead man's switch keeps its files).
    run: String,
}

impl Render {
    pub(super) async fn spec(self) -> Result<TaskSpec, String> {
        let reads_file = matches!(
            self.plan.playbook.steps[self.task.step].action,
            Action::Upload(_) | Action::Template(_)
        );
        if !reads_file {
            return self.render();
        }
        tokio::task::spawn_blocking(move || self.render())
            .await
            .unwrap_or_else(|e| Err(format!("rendering the task failed: {e}")))
    }

    fn render(self) -> Result<TaskSpec, String> {
        let step = &self.plan.playbook.steps[self.task.step];
        task::render_task(&self.plan, step, &self.context)
            .and_then(|spec| self.with_dead_man(spec))
            .map_err(|error| explain_render_error(&self.plan, &self.captures, &self.task, error))
    }

    /// The task's dead man's switch, when its step has one: the step's rollback for this
    /// host, run by a watchdog there if the controller goes silent.
    fn with_dead_man(&self, mut spec: TaskSpec) -> Result<TaskSpec, String> {
        let step = &self.plan.playbook.steps[self.task.step];
        let Some(bound) = step.dead_man else {
            return Ok(spec);
        };
        let rollback = task::render_rollback(step, &self.context)?
            .ok_or_else(|| format!("step `{}` has `dead_man` but no rollback", step.name))?;
        spec.dead_man = Some(crate::exec::dead_man::Switch {
            rollback,
            bound,
            run: self.run.clone(),
            host: self.task.host,
            node: self.node.index(),
        });
        Ok(spec)
    }
}

/// The event of a task's result: failed, skipped by its guard, or finished; with its
/// record (a capture named like a secret is left out of it).
fn result_event(task_ref: TaskRef, run: &TaskRun, log: String) -> Event {
    let record = TaskRecord {
        captures: run
            .captured
            .iter()
            .filter(|(name, _)| !is_secret_name(name))
            .cloned()
            .collect(),
        output_tail: run.tail(TAIL_LINES),
        changed: run.changed_host(),
        reported_changed: Some(run.reports_change()),
        error: run.error.clone(),
        log,
    };
    let duration_ms = run.duration.as_millis() as u64;
    if !run.ok {
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
    }
}

/// A render error, with what to do when it comes from a secret capture this process
/// does not hold (its value never left the memory of the process that captured it).
pub(super) fn explain_render_error(plan: &Plan, held: &Vars, task: &Task, error: String) -> String {
    let step = format!("{:?}", plan.playbook.steps[task.step]);
    let missing: Vec<String> = plan
        .playbook
        .steps
        .iter()
        .filter_map(|s| Some((s.name.as_str(), s.capture.as_deref()?)))
        .filter(|(_, name)| is_secret_name(name) && !held.contains_key(*name))
        .filter(|(_, name)| step.contains(name))
        .map(|(capturer, name)| {
            format!(
                "`{name}` is the secret capture of step `{capturer}`: pony keeps it only in the memory of the process that captured it, and this one has not run `{capturer}` on this host; give it with `--secret-var {name}=@FILE` (or `env:VAR`), or `pony resume` the run while the host still has steps to run (it runs `{capturer}` again)"
            )
        })
        .collect();
    if missing.is_empty() {
        return error;
    }
    format!("{error} ({})", missing.join("; "))
}
