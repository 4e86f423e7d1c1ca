//! Rollback planning: which commands undo a scope (a host, a region, every touched host),
//! and the order they run in. A task's rollback waits for the rollbacks of every task that
//! depended on it (the graph walked backwards). Paced (`rollback: { pace: window }`), a
//! host's `per: host` rollbacks run only once the scheduler admitted the host (it holds
//! one of its cluster's `max_unavailable` slots); `per: region`/`per: run` rollbacks need
//! no slot and run as soon as the order allows, which is first when those tasks came after
//! the hosts' tasks. Unpaced, every host is admitted at once. This is a value type: the
//! scheduler runs the commands it hands out, admits hosts and reports back.
//!
//! A failed rollback stops what would come after it on its host: when the rollback of a
//! host's (`per: host`) task fails, or cannot even be rendered, the rollbacks of that
//! host's tasks it needed, transitively, are not attempted (they wait for it in this
//! order, so none has started). Undoing what a failed undo sat on top of could make
//! things worse: with the load balancer unreachable, the host that could not be taken
//! out of the pool must not be restarted. This counts the task's target host, also when
//! its commands ran on a `delegate:`. Other hosts, and region- or run-wide tasks' rollbacks
//! (not one host's), go on; a blocked task passes its turn on like a task without a
//! rollback command, so the order never waits for it.

use crate::inventory::HostId;
use crate::plan::{Node, NodeId, Plan};
use crate::playbook::Per;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Which hosts a rollback covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollbackScope {
    Host(HostId),
    Region(usize),
    All,
}

impl RollbackScope {
    pub fn covers(self, plan: &Plan, host: HostId) -> bool {
        match self {
            RollbackScope::Host(h) => h == host,
            RollbackScope::Region(r) => plan.inventory.hosts[host].region == r,
            RollbackScope::All => true,
        }
    }

    pub fn name(self, plan: &Plan) -> String {
        match self {
            RollbackScope::Host(h) => format!("host {}", plan.inventory.hosts[h].name),
            RollbackScope::Region(r) => format!("region {}", plan.inventory.regions[r].name),
            RollbackScope::All => "all".to_string(),
        }
    }
}

/// One rollback command, rendered with the captures the forward run saw.
#[derive(Debug, Clone)]
pub struct RollbackCommand {
    pub host: HostId,
    /// Where it runs: the host, or the delegate its task ran on.
    pub runs_on: crate::plan::RunsOn,
    pub command: String,
    /// The step's own `timeout`, so that a hung host cannot hang the rollback.
    pub timeout: Option<Duration>,
}

/// The rollback of one scope, in reverse dependency order.
#[derive(Debug)]
pub struct RollbackOrder {
    pub scope: RollbackScope,
    hosts: Vec<HostId>,
    commands: HashMap<NodeId, RollbackCommand>,
    /// Per node: dependents whose rollback has not finished yet.
    waiting: Vec<usize>,
    ready: Vec<NodeId>,
    running: usize,
    failed_hosts: HashSet<HostId>,
    /// Commands that need their host admitted (`per: host` ones, when paced).
    slotted: HashSet<NodeId>,
    admitted: HashSet<HostId>,
    /// Per host: its commands not finished yet.
    left: HashMap<HostId, usize>,
    /// Hosts whose last command ended, not yet taken by the scheduler.
    completed: Vec<HostId>,
    /// Commands not attempted: each with the failed rollback that stopped it.
    blocked: HashMap<NodeId, NodeId>,
    /// Blocked commands not yet taken by the scheduler (to report them).
    not_attempted: Vec<(NodeId, NodeId)>,
}

impl RollbackOrder {
    /// `failed` tasks' rollbacks (with their hosts) failed before the order began: their
    /// commands could not even be rendered.
    pub fn new(
        plan: &Plan,
        scope: RollbackScope,
        hosts: Vec<HostId>,
        commands: HashMap<NodeId, RollbackCommand>,
        failed: Vec<(HostId, NodeId)>,
        paced: bool,
    ) -> Self {
        let waiting: Vec<usize> = plan
            .graph
            .node_indices()
            .map(|n| plan.dependents(n).count())
            .collect();
        let slotted = commands
            .keys()
            .filter(|n| paced && plan.task(**n).is_some_and(|t| t.per == Per::Host))
            .copied()
            .collect();
        let mut left: HashMap<HostId, usize> = HashMap::new();
        for command in commands.values() {
            *left.entry(command.host).or_default() += 1;
        }
        let completed = hosts
            .iter()
            .filter(|h| !left.contains_key(h))
            .copied()
            .collect();
        let admitted = if paced {
            HashSet::new()
        } else {
            hosts.iter().copied().collect()
        };
        let mut order = RollbackOrder {
            scope,
            hosts,
            commands,
            ready: Vec::new(),
            running: 0,
            failed_hosts: failed.iter().map(|(h, _)| *h).collect(),
            waiting,
            slotted,
            admitted,
            left,
            completed,
            blocked: HashMap::new(),
            not_attempted: Vec::new(),
        };
        for (host, node) in failed {
            order.stop_after(plan, node, host);
        }
        let leaves: Vec<NodeId> = plan
            .graph
            .node_indices()
            .filter(|n| order.waiting[n.index()] == 0)
            .collect();
        for node in leaves {
            order.reached(plan, node);
        }
        order
    }

    /// Every dependent of `node` is rolled back: it runs now, or (without a command)
    /// passes its turn on to what it depended on.
    fn reached(&mut self, plan: &Plan, node: NodeId) {
        let mut stack = vec![node];
        while let Some(node) = stack.pop() {
            if self.commands.contains_key(&node) && !self.blocked.contains_key(&node) {
                self.ready.push(node);
                continue;
            }
            for dependency in plan.dependencies(node) {
                self.waiting[dependency.index()] -= 1;
                if self.waiting[dependency.index()] == 0 {
                    stack.push(dependency);
                }
            }
        }
    }

    /// The next command that may run now (its host admitted, or it needs no slot).
    pub fn next_command(&mut self) -> Option<(NodeId, RollbackCommand)> {
        let at = self.ready.iter().rposition(|n| {
            !self.slotted.contains(n) || self.admitted.contains(&self.commands[n].host)
        })?;
        let node = self.ready.remove(at);
        self.running += 1;
        Some((node, self.commands[&node].clone()))
    }

    /// Hosts with commands left that are not admitted yet, in the scope's order.
    pub fn waiting_hosts(&self) -> Vec<HostId> {
        self.hosts
            .iter()
            .filter(|h| self.left.contains_key(h) && !self.admitted.contains(h))
            .copied()
            .collect()
    }

    /// The host's `per: host` rollbacks may run from now on.
    pub fn admit(&mut self, host: HostId) {
        self.admitted.insert(host);
    }

    /// Nothing runs and nothing may start, yet commands are left: only a host that is
    /// not admitted can move the order on.
    pub fn stalled(&self) -> bool {
        self.running == 0 && !self.ready.is_empty() && !self.is_finished()
    }

    /// Hosts whose rollback ended since the last call, and whether it all succeeded.
    pub fn take_completed(&mut self) -> Vec<(HostId, bool)> {
        std::mem::take(&mut self.completed)
            .into_iter()
            .map(|h| (h, !self.failed_hosts.contains(&h)))
            .collect()
    }

    /// Commands not attempted since the last call, each with the failed rollback that
    /// stopped it.
    pub fn take_not_attempted(&mut self) -> Vec<(NodeId, NodeId)> {
        std::mem::take(&mut self.not_attempted)
    }

    /// A command handed out by [`next_command`](Self::next_command) ended.
    pub fn done(&mut self, plan: &Plan, node: NodeId, ok: bool) {
        self.running -= 1;
        let host = self.commands[&node].host;
        if !ok {
            self.failed_hosts.insert(host);
            self.stop_after(plan, node, host);
        }
        self.one_less(host);
        for dependency in plan.dependencies(node) {
            self.waiting[dependency.index()] -= 1;
            if self.waiting[dependency.index()] == 0 {
                self.reached(plan, dependency);
            }
        }
    }

    /// One of the host's commands ended or will never run.
    fn one_less(&mut self, host: HostId) {
        if let Some(left) = self.left.get_mut(&host) {
            *left -= 1;
            if *left == 0 {
                self.left.remove(&host);
                self.completed.push(host);
            }
        }
    }

    /// The rollback of `failed` (a task of `host`) failed: the rollbacks of the host's
    /// tasks it needed, transitively (through `per: region`/`per: run` tasks too, not
    /// through other hosts' tasks), are not attempted. Only a host's own (`per: host`)
    /// tasks stop and are stopped. Those all sit in the host's wave, so the walk never
    /// crosses a wave gate (which would reach every task of the waves before).
    fn stop_after(&mut self, plan: &Plan, failed: NodeId, host: HostId) {
        if plan.task(failed).is_none_or(|t| t.per != Per::Host) {
            return;
        }
        let mut seen: HashSet<NodeId> = HashSet::new();
        let mut stack: Vec<NodeId> = plan.dependencies(failed).collect();
        while let Some(node) = stack.pop() {
            if matches!(plan.graph[node], Node::Gate(_)) || !seen.insert(node) {
                continue;
            }
            let task = plan.task(node);
            if task.is_some_and(|t| t.per == Per::Host && t.host != host) {
                // Another host's task: what it needed is that host's, not this one's
                // (and not walking on bounds the walk when tasks need `scope: run`).
                continue;
            }
            let of_host = task.is_some_and(|t| t.per == Per::Host);
            if of_host && self.commands.contains_key(&node) && !self.blocked.contains_key(&node) {
                self.blocked.insert(node, failed);
                self.not_attempted.push((node, failed));
                self.one_less(host);
            }
            stack.extend(plan.dependencies(node));
        }
    }

    pub fn is_finished(&self) -> bool {
        self.ready.is_empty() && self.running == 0
    }

    pub fn ok(&self) -> bool {
        self.failed_hosts.is_empty()
    }
}
