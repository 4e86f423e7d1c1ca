//! Where every node of the plan's graph stands: its state, how many of its dependencies
//! are still to finish (in-degree counters: a node is ready when it reaches 0), and
//! whether a task changed its host (a task a `creates`/`unless` guard skipped changed
//! nothing, so it is not rolled back) and whether it reported a change (what handlers
//! listen for: a file already in place, or `changed_when`, reports none).

use crate::plan::{NodeId, Plan};

/// A node's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
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
    pub(super) fn is_done(self) -> bool {
        matches!(
            self,
            State::Succeeded | State::Failed | State::Skipped | State::Cancelled
        )
    }
}

/// Every node's state, dependencies left, and whether it left its host unchanged.
pub(super) struct Nodes {
    state: Vec<State>,
    remaining: Vec<usize>,
    unchanged: Vec<bool>,
    reported: Vec<bool>,
}

impl Nodes {
    /// Every node waiting, with all of its dependencies to go.
    pub(super) fn new(plan: &Plan) -> Self {
        let count = plan.graph.node_count();
        Nodes {
            state: vec![State::Waiting; count],
            remaining: plan.in_degrees(),
            unchanged: vec![false; count],
            reported: vec![false; count],
        }
    }

    pub(super) fn state(&self, node: NodeId) -> State {
        self.state[node.index()]
    }

    pub(super) fn set(&mut self, node: NodeId, state: State) {
        self.state[node.index()] = state;
    }

    /// Not started and not done: waiting for its dependencies, or queued.
    pub(super) fn unstarted(&self, node: NodeId) -> bool {
        matches!(self.state(node), State::Waiting | State::Queued)
    }

    /// One dependency of `node` finished; returns whether none is left.
    pub(super) fn count_down(&mut self, node: NodeId) -> bool {
        let remaining = &mut self.remaining[node.index()];
        *remaining -= 1;
        *remaining == 0
    }

    /// How many of its dependencies `node` still waits for.
    pub(super) fn left(&self, node: NodeId) -> usize {
        self.remaining[node.index()]
    }

    /// Whether every dependency of `node` finished.
    pub(super) fn free(&self, node: NodeId) -> bool {
        self.remaining[node.index()] == 0
    }

    /// Whether the task changed its host (a guard that skipped it did not).
    pub(super) fn set_changed(&mut self, node: NodeId, changed: bool) {
        self.unchanged[node.index()] = !changed;
    }

    /// Whether the task reported a change on its host (see `TaskRun::reports_change`).
    pub(super) fn set_reported(&mut self, node: NodeId, reported: bool) {
        self.reported[node.index()] = reported;
    }

    /// Whether the task reported a change: a handler listening to it runs.
    pub(super) fn reported(&self, node: NodeId) -> bool {
        self.reported[node.index()]
    }

    /// Whether the task's rollback is due in a rollback of its host: it ran (succeeded
    /// or failed) and changed the host.
    pub(super) fn to_undo(&self, node: NodeId) -> bool {
        matches!(self.state(node), State::Succeeded | State::Failed)
            && !self.unchanged[node.index()]
    }

    /// The nodes running now.
    pub(super) fn running(&self) -> Vec<NodeId> {
        (0..self.state.len())
            .filter(|&i| self.state[i] == State::Running)
            .map(NodeId::new)
            .collect()
    }
}
