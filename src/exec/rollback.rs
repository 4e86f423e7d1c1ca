//! Rollback planning: which commands undo a scope (a host, a region, every touched host),
//! and the order they run in. A task's rollback waits for the rollbacks of every task that
//! depended on it (the graph walked backwards); hosts roll back in parallel. This is a
//! value type: the scheduler runs the commands it hands out and reports back.

use crate::inventory::HostId;
use crate::plan::{NodeId, Plan};
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
}

impl RollbackOrder {
    /// `failed_hosts` start failed (a rollback command could not even be rendered).
    pub fn new(
        plan: &Plan,
        scope: RollbackScope,
        hosts: Vec<HostId>,
        commands: HashMap<NodeId, RollbackCommand>,
        failed_hosts: impl IntoIterator<Item = HostId>,
    ) -> Self {
        let waiting: Vec<usize> = plan
            .graph
            .node_indices()
            .map(|n| plan.dependents(n).count())
            .collect();
        let mut order = RollbackOrder {
            scope,
            hosts,
            commands,
            ready: Vec::new(),
            running: 0,
            failed_hosts: failed_hosts.into_iter().collect(),
            waiting,
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

    /// The next command that may run now.
    pub fn next_command(&mut self) -> Option<(NodeId, RollbackCommand)> {
        let node = self.ready.pop()?;
        self.running += 1;
        Some((node, self.commands[&node].clone()))
    }

    /// A command handed out by [`next_command`](Self::next_command) ended.
    pub fn done(&mut self, plan: &Plan, node: NodeId, ok: bool) {
        self.running -= 1;
        if !ok {
            self.failed_hosts.insert(self.commands[&node].host);
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

    /// Each host of the scope and whether all its rollbacks succeeded.
    pub fn results(&self) -> Vec<(HostId, bool)> {
        self.hosts
            .iter()
            .map(|h| (*h, !self.failed_hosts.contains(h)))
            .collect()
    }

    pub fn ok(&self) -> bool {
        self.failed_hosts.is_empty()
    }
}
