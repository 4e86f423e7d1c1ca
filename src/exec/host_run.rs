//! One host's progress through a run, as the scheduler tracks it.

use crate::events::HostOutcome;
use crate::inventory::Vars;
use crate::plan::NodeId;

/// Where a host is in its life cycle. A host moves forward only:
/// Idle → (Queued →) Active → Done(Ok), or → Failed → RollingBack → Done(RolledBack…).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No per-host task started yet.
    Idle,
    /// Waiting in its cluster's queue for a `max_unavailable` slot.
    Queued,
    /// Out of service: between its first and last per-host task.
    Active,
    /// A task failed; nothing more starts on it. `rollback_due`: its own rollback starts
    /// once nothing runs on it (a failure within budget); otherwise its region's or the
    /// run's rollback (or nothing, under `halt`) takes care of it.
    Failed { rollback_due: bool },
    /// Its rollback runs.
    RollingBack,
    /// Finished, one way or another.
    Done(HostOutcome),
}

#[derive(Debug)]
pub struct HostRun {
    pub phase: Phase,
    /// Holds one of its cluster's `max_unavailable` slots.
    pub slot: bool,
    /// A task started on it: it may have changed and may need a rollback.
    pub touched: bool,
    /// Tasks running on it now.
    pub running: usize,
    /// Its tasks that have not reached a final state (all `per`).
    pub left_tasks: usize,
    /// Its `per: host` tasks that have not reached a final state: at zero it leaves
    /// service.
    pub left_host_tasks: usize,
    /// Tasks ready to start once the host is admitted.
    pub pending: Vec<NodeId>,
    /// Values its tasks captured.
    pub captures: Vars,
    /// A task of it reached it (a later connection failure is not "unreachable").
    pub reached: bool,
    /// A stop (a halt, an interrupt, a lost journal) cancelled a task of it before it
    /// ran: a touched host left like that is `incomplete`, never `ok`. (A task skipped
    /// because another host's failure within the budget skipped its dependency does not
    /// count: the run goes on past that failure by design.)
    pub cut_short: bool,
    /// Its deploy is done and its `health:` checks run: it stays out of service (and
    /// holds its slot) until they are judged.
    pub health_pending: bool,
}

impl Default for HostRun {
    fn default() -> Self {
        HostRun {
            phase: Phase::Idle,
            slot: false,
            touched: false,
            running: 0,
            left_tasks: 0,
            left_host_tasks: 0,
            pending: Vec::new(),
            captures: Vars::new(),
            reached: false,
            cut_short: false,
            health_pending: false,
        }
    }
}

impl HostRun {
    /// How a touched host that did not fail ends: `ok` only when every task of it ran.
    pub fn touched_outcome(&self) -> HostOutcome {
        if self.left_tasks > 0 || self.cut_short {
            HostOutcome::Incomplete
        } else {
            HostOutcome::Ok
        }
    }

    pub fn failed(&self) -> bool {
        matches!(self.phase, Phase::Failed { .. })
    }

    /// Being worked on: admitted and not finished (interrupts let these finish).
    pub fn in_flight(&self) -> bool {
        matches!(
            self.phase,
            Phase::Active | Phase::Failed { .. } | Phase::RollingBack
        )
    }

    pub fn outcome(&self) -> Option<HostOutcome> {
        match self.phase {
            Phase::Done(outcome) => Some(outcome),
            _ => None,
        }
    }
}
