//! Rollback planning: which commands undo a scope (a host, a region, every touched host),
//! and the order they run in. A task's rollback waits for the rollbacks of every task that
//! depended on it (the graph walked backwards). Paced (`rollback: { pace: window }`), a
//! host's `per: host` rollbacks run only once the scheduler admitted the host (it holds
//! one of its cluster's `max_unavailable` slots); `per: region`/`per: run` rollbacks need
//! no slot and run as soon as the order allows, which is first when those tasks came after
//! the hosts' tasks. Unpaced, every host is admitted at once. This is a value type: the
//! scheduler runs the commands it hands out, admits hosts and reports back.

use crate::inventory::HostId;
use crate::plan::{NodeId, Plan};
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
}

impl RollbackOrder {
    /// `failed_hosts` start failed (a rollback command could not even be rendered).
    pub fn new(
        plan: &Plan,
        scope: RollbackScope,
        hosts: Vec<HostId>,
        commands: HashMap<NodeId, RollbackCommand>,
        failed_hosts: impl IntoIterator<Item = HostId>,
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
            failed_hosts: failed_hosts.into_iter().collect(),
            waiting,
            slotted,
            admitted,
            left,
            completed,
        };
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
            if self.commands.contains_key(&node) {
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

    /// A command handed out by [`next_command`](Self::next_command) ended.
    pub fn done(&mut self, plan: &Plan, node: NodeId, ok: bool) {
        self.running -= 1;
        let host = self.commands[&node].host;
        if !ok {
            self.failed_hosts.insert(host);
        }
        if let Some(left) = self.left.get_mut(&host) {
            *left -= 1;
            if *left == 0 {
                self.left.remove(&host);
                self.completed.push(host);
            }
        }
        for dependency in plan.dependencies(node) {
            self.waiting[dependency.index()] -= 1;
            if self.waiting[dependency.index()] == 0 {
                self.reached(plan, dependency);
            }
        }
    }

    pub fn is_finished(&self) -> bool {
        self.ready.is_empty() && self.running == 0
    }

    pub fn ok(&self) -> bool {
        self.failed_hosts.is_empty()
    }
}
