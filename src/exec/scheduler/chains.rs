//! A host's chain of tasks in one round trip. When a task starts and the tasks after it
//! on its host follow one another (each waits only for the one before it, nothing but
//! its wave's gate waits in the middle, and none needs the controller between two of
//! them), they start together: every start is journaled ("may have run") before the
//! script goes to the host, and each result is taken like a task alone's the moment
//! its frame arrives (journaled, then released). The host stops the chain at the first
//! failure; the tasks after it did not start and are skipped as dependents of a failed
//! task are (their journal keeps only the start, so a resume runs them).
//!
//! A chain holds only plain `run` tasks of one host (`per: host`, not delegated, not
//! another controller's): no `creates`/`unless` guard (a guarded task runs alone: its
//! guard runs exactly as a task alone's does), no `until`, no `retries`, no
//! `dead_man`, no `changed_when` (its output decides its change where it runs alone),
//! no handler (it decides whether to run once what it listens to ended), and a task
//! whose `capture` a later template may read ends its chain.
//! Probes, uploads and templates run alone. Only ssh connections chain, and not in a
//! run split by region (`--regions`): there another machine takes a lost controller's
//! hosts over, and a task it did not start must not start behind its back (a chain
//! whose controller died cuts itself only once its host sees the channel end).
//!
//! When the run stops while a chain runs (a halt, a stopped region, a second Ctrl-C),
//! the chain is cut: a file on the host that its script checks before each next task.

use super::nodes::State;
use super::{Scheduler, Stop};
use crate::events::Event;
use crate::exec::task::{self, Cut, Link, NotRun, TaskRun};
use crate::inventory::HostId;
use crate::plan::{NodeId, RunsOn, Task};
use crate::playbook::{Action, Per};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The most tasks one chain holds (its script grows by each task's wrapper).
const MAX_CHAIN: usize = 32;

/// A chain whose tasks are not all back yet.
struct LiveChain {
    host: HostId,
    /// Its tasks, in order.
    members: Vec<NodeId>,
    /// Tasks whose result has not come back.
    left: usize,
    cut: Cut,
    /// Its cut was sent.
    cut_sent: bool,
}

/// The chains running now, by their first task.
#[derive(Default)]
pub(super) struct Chains {
    live: HashMap<NodeId, LiveChain>,
    of: HashMap<NodeId, NodeId>,
    made: u64,
}

impl Scheduler {
    /// The tasks that run with `head` in one round trip, after it (none: it runs alone).
    pub(super) fn chain_after(&self, head: NodeId) -> Vec<NodeId> {
        let mut rest = Vec::new();
        let Some(&first) = self.plan.task(head) else {
            return rest;
        };
        if !self.chainable(first) || !self.pool.runs_chains(first.host) {
            return rest;
        }
        let (mut last, mut last_task) = (head, first);
        while rest.len() + 1 < MAX_CHAIN {
            // A later template may read a capture: the capturing task ends the chain.
            if self.plan.playbook.steps[last_task.step].capture.is_some() {
                break;
            }
            let gate = self.plan.waves[last_task.wave].gate;
            let mut next = self.plan.dependents(last).filter(|&d| d != gate);
            let (Some(node), None) = (next.next(), next.next()) else {
                break;
            };
            let Some(&task) = self.plan.task(node) else {
                break;
            };
            let follows = task.host == first.host
                && task.wave == first.wave
                && self.nodes.state(node) == State::Waiting
                && self.nodes.left(node) == 1
                && self.chainable(task);
            if !follows {
                break;
            }
            rest.push(node);
            (last, last_task) = (node, task);
        }
        rest
    }

    /// Whether the task may be part of a chain (see the module doc).
    fn chainable(&self, task: Task) -> bool {
        let step = &self.plan.playbook.steps[task.step];
        task.per == Per::Host
            && task.runs_on() == RunsOn::Host(task.host)
            && matches!(step.action, Action::Run(_))
            && step.creates.is_none()
            && step.unless.is_none()
            && step.until.is_none()
            && step.retries == 0
            && step.dead_man.is_none()
            && step.changed_when == crate::playbook::ChangeRule::Always
            && !step.is_handler()
            && self.options.split.is_none()
    }

    /// Starts `head` and `rest` as one chain: each task running, its start journaled,
    /// its worker waiting for its result from the chain's driver.
    pub(super) fn spawn_chain(&mut self, head: NodeId, rest: Vec<NodeId>) {
        let members: Vec<NodeId> = std::iter::once(head).chain(rest).collect();
        let host = self.plan.task(head).expect("a task").host;
        self.chains.made += 1;
        let cut = Cut {
            name: format!(
                "c{}-{}-{}",
                head.index(),
                std::process::id(),
                self.chains.made
            ),
            stopped: Arc::new(AtomicBool::new(false)),
        };
        let mut pending: Vec<Pending> = Vec::new();
        let mut durables = Vec::new();
        for &node in &members {
            let super::tasks::Started {
                render,
                label,
                work,
                durable,
                ..
            } = self.start_task(node);
            durables.push(durable);
            let (done, result) = tokio::sync::oneshot::channel();
            let mark = self.task_mark(node);
            let worker = async move {
                let run = result
                    .await
                    .unwrap_or_else(|_| TaskRun::not_run(NotRun::Stopped));
                let log = task::log_text(&label, &run);
                (node, run, log)
            };
            self.workers.tasks.spawn(worker);
            pending.push((render, mark, work, done));
            self.chains.of.insert(node, head);
        }
        self.chains.live.insert(
            head,
            LiveChain {
                host,
                members: members.clone(),
                left: members.len(),
                cut: cut.clone(),
                cut_sent: false,
            },
        );
        let pool = self.pool.clone();
        let total = members.len();
        self.workers
            .chains
            .spawn(drive(pool, host, durables, pending, total, cut));
    }

    /// A task of a chain came back: the chain is forgotten once all of them did.
    pub(super) fn chain_member_ended(&mut self, node: NodeId) {
        let Some(head) = self.chains.of.remove(&node) else {
            return;
        };
        if let Some(chain) = self.chains.live.get_mut(&head) {
            chain.left -= 1;
            if chain.left == 0 {
                self.chains.live.remove(&head);
            }
        }
    }

    /// A task of a chain that did not start on its host: skipped after a failure before
    /// it (as a dependent of a failed task is), cancelled when the run stopped.
    pub(super) fn not_run_in_chain(&mut self, node: NodeId, task: Task, why: NotRun) {
        let (state, reason) = match why {
            NotRun::AfterFailure => (State::Skipped, "a dependency failed or was cancelled"),
            NotRun::Stopped => (
                State::Cancelled,
                "not started: the run stopped before its turn in its host's chain",
            ),
        };
        self.nodes.set(node, state);
        self.emit(Event::TaskSkipped {
            task: self.task_ref(node),
            reason: reason.into(),
            record: None,
        });
        if why == NotRun::Stopped || self.course.stop != Stop::No {
            self.fleet.hosts[task.host].cut_short = true;
        }
        self.task_done(task);
        self.release(node, false);
    }

    /// Cuts the chains of hosts that may start no more tasks because the run or their
    /// region stopped: their tasks not started yet do not start.
    pub(super) fn cut_stopped_chains(&mut self) {
        if self.chains.live.is_empty()
            || (self.course.stop == Stop::No && !self.fleet.regions.iter().any(|r| r.stopped))
        {
            return;
        }
        let due: Vec<NodeId> = self
            .chains
            .live
            .iter()
            .filter(|(_, c)| !c.cut_sent && !self.may_start(c.host))
            .map(|(&head, _)| head)
            .collect();
        for head in due {
            if let Some(cut) = self.cut_chain(head) {
                tokio::spawn(cut);
            }
        }
    }

    /// Every running chain cut, before a second Ctrl-C kills what runs: the kills then
    /// find each chain's running task, and no next task starts behind them.
    pub(super) async fn cut_all_chains(&mut self) {
        let heads: Vec<NodeId> = self.chains.live.keys().copied().collect();
        let cuts: Vec<_> = heads
            .into_iter()
            .filter_map(|h| self.cut_chain(h))
            .collect();
        let mut all = tokio::task::JoinSet::new();
        for cut in cuts {
            all.spawn(cut);
        }
        while all.join_next().await.is_some() {}
    }

    /// The tasks of running chains behind each chain's first running task: the host has
    /// not started them (a cut chain starts no more), unless a kill finds them running.
    pub(super) fn behind_in_chains(&self) -> std::collections::HashSet<NodeId> {
        self.chains
            .live
            .values()
            .flat_map(|chain| {
                chain
                    .members
                    .iter()
                    .copied()
                    .filter(|&n| self.nodes.state(n) == State::Running)
                    .skip(1)
            })
            .collect()
    }

    /// A task of a chain that a second Ctrl-C found not started on its host: it ends
    /// with no verdict (its journal keeps its start; a resume runs it).
    pub(super) fn not_started_at_kill(&mut self, node: NodeId) {
        self.emit(Event::TaskSkipped {
            task: self.task_ref(node),
            reason: "not started: the run stopped before its turn in its host's chain".into(),
            record: None,
        });
        self.nodes.set(node, State::Cancelled);
        let task = *self.plan.task(node).expect("a task");
        let region = self.plan.inventory.hosts[task.host].region;
        self.fleet.task_ended(task.host, region);
        self.fleet.hosts[task.host].cut_short = true;
    }

    /// The command that cuts a chain on its host, to be run (once per chain).
    fn cut_chain(&mut self, head: NodeId) -> Option<impl std::future::Future<Output = ()>> {
        let run = self.task_mark(head).run;
        let chain = self.chains.live.get_mut(&head)?;
        if std::mem::replace(&mut chain.cut_sent, true) {
            return None;
        }
        chain.cut.stopped.store(true, Ordering::SeqCst);
        let (pool, host) = (self.pool.clone(), chain.host);
        let command = crate::transport::chain::cut_command(&run, &chain.cut.name);
        Some(async move {
            let Some(connection) = pool.open_connection(host).await else {
                return;
            };
            let limit = crate::transport::KILL_TIMEOUT;
            if let Ok(Err(e)) =
                tokio::time::timeout(limit, connection.run(&command, Some(limit))).await
            {
                tracing::warn!("could not cut a chain on {}: {e}", pool.host_name(host));
            }
        })
    }
}

/// A chain's task waiting for its start to be journaled and its spec rendered.
type Pending = (
    super::tasks::Render,
    crate::transport::TaskMark,
    task::Work,
    tokio::sync::oneshot::Sender<TaskRun>,
);

/// A chain's driver: every start on disk before the script goes to the host, then the
/// chain run ([`task::execute_chain`]).
async fn drive(
    pool: Arc<crate::exec::hosts::HostPool>,
    host: HostId,
    durables: Vec<impl std::future::Future<Output = bool>>,
    pending: Vec<Pending>,
    total: usize,
    cut: Cut,
) {
    let mut journaled = true;
    for durable in durables {
        journaled &= durable.await;
    }
    if !journaled {
        for (_, _, _, done) in pending {
            let _ = done.send(TaskRun::not_journaled());
        }
        return;
    }
    let mut links = Vec::new();
    let mut pending = pending.into_iter();
    for (render, mark, work, done) in pending.by_ref() {
        match render.spec().await {
            Ok(spec) => links.push(Link {
                spec,
                mark,
                work,
                done,
            }),
            Err(error) => {
                let _ = done.send(TaskRun::not_started(error));
                break;
            }
        }
    }
    // A task that could not be rendered failed: the chain ends before it, and the tasks
    // after it do not start.
    let broken = links.len() < total;
    let after: Vec<_> = pending.map(|(_, _, _, done)| done).collect();
    task::execute_chain(&pool, host, links, cut).await;
    if broken {
        for done in after {
            let _ = done.send(TaskRun::not_run(NotRun::AfterFailure));
        }
    }
}
