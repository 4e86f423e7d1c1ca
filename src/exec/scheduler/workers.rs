//! What the loop waits for: its workers (tasks, other controllers' awaited results,
//! records being synced, rollback commands, health checks) and its timers (gates'
//! answers, pauses, windows, check rounds). The run goes on while any of them is out.

use crate::exec::task::TaskRun;
use crate::inventory::HostId;
use crate::plan::NodeId;
use std::time::Duration;
use tokio::task::JoinSet;

/// Something the loop waits for besides tasks.
pub(super) enum Timer {
    /// A person answered at a wave's `approve:` gate.
    Approved(usize, bool),
    /// A wave's `pause:` elapsed.
    Paused(usize),
    /// A wave's change window opened for the hosts in this time zone.
    WindowOpen(usize, String),
    /// A round of a wave's `verify:` check is due.
    CheckDue(CheckRound),
    /// A round of a wave's `verify:` check is back.
    Checked(Box<Checked>),
}

/// A finished rollback command, back from its worker.
pub(super) struct RollbackRun {
    pub(super) job: usize,
    pub(super) node: NodeId,
    pub(super) run: TaskRun,
}

/// When a check's results are back: what the gate does next if they pass.
#[derive(Debug, Clone, Copy)]
pub(super) enum After {
    /// Ask the `approve:` question.
    Ask,
    /// A soak round; `left` more rounds of this check follow.
    Soak { left: u32 },
}

/// A round of a check, due to run.
#[derive(Debug, Clone, Copy)]
pub(super) struct CheckRound {
    pub wave: usize,
    pub check: usize,
    pub after: After,
}

/// One check's round, back from its worker.
pub(super) struct Checked {
    pub wave: usize,
    pub check: usize,
    pub after: After,
    /// Connections the round held (given back when it is judged).
    pub lanes: usize,
    /// `(host, ok, stdout or error)` for every host the check ran on.
    pub canary: Vec<(HostId, bool, String)>,
    pub baseline: Vec<(HostId, bool, String)>,
}

/// A host's checks, back from their worker: `None` when all passed, else what failed.
pub(super) struct HealthRun {
    /// The rollback job it verifies; `None` after a deploy.
    pub job: Option<usize>,
    pub host: HostId,
    pub failure: Option<String>,
    pub duration: Duration,
}

/// The loop's workers and timers, each kind in its own set.
#[derive(Default)]
pub(super) struct Workers {
    /// Running tasks; each comes back with its run and the text for its host's log.
    pub(super) tasks: JoinSet<(NodeId, TaskRun, String)>,
    /// Other controllers' tasks (`--regions`) whose results are awaited from the shared
    /// journal. A stopped run does not wait for them: tasks their owner cancelled
    /// leave no record.
    pub(super) remote: JoinSet<(NodeId, TaskRun, String)>,
    /// Finished tasks whose record is being synced; their dependents wait for it:
    /// (task, succeeded, journaled).
    pub(super) syncing: JoinSet<(NodeId, bool, bool)>,
    /// The drivers of chains of tasks run in one round trip (their tasks are in
    /// `tasks`, each waiting for its result from its chain's driver).
    pub(super) chains: JoinSet<()>,
    pub(super) timers: JoinSet<Timer>,
    pub(super) rollbacks: JoinSet<RollbackRun>,
    /// Hosts being checked for health (after their deploy or their rollback).
    pub(super) health: JoinSet<HealthRun>,
}

impl Workers {
    /// Whether nothing is out that the loop waits for (a stopped run does not wait for
    /// other controllers' tasks).
    pub(super) fn idle(&self, stopped: bool) -> bool {
        self.tasks.is_empty()
            && self.chains.is_empty()
            && self.syncing.is_empty()
            && self.timers.is_empty()
            && self.rollbacks.is_empty()
            && self.health.is_empty()
            && (self.remote.is_empty() || stopped)
    }

    /// Whether no command runs on any host of this controller (tasks, rollbacks, health
    /// checks).
    pub(super) fn no_commands(&self) -> bool {
        self.rollbacks.is_empty()
            && self.health.is_empty()
            && self.tasks.is_empty()
            && self.chains.is_empty()
    }
}
