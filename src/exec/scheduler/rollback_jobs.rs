//! The run's rollbacks as the loop keeps them: the jobs started (each a
//! [`RollbackOrder`] until it finished), the health of each job's hosts being judged,
//! and what is due once nothing runs where it applies (failed hosts' own rollbacks, the
//! whole run's). A job is finished only once its commands ended and its hosts' health is
//! judged.

use crate::exec::rollback::RollbackOrder;
use crate::inventory::HostId;

/// Health checks of one rollback job's hosts still being judged, and whether one failed.
#[derive(Default)]
pub(super) struct JobHealth {
    pub pending: usize,
    pub failed: bool,
}

#[derive(Default)]
pub(super) struct RollbackJobs {
    /// By the order they started; `None` once finished.
    jobs: Vec<Option<RollbackOrder>>,
    /// Per job (as `jobs`): its hosts' health checks being judged.
    health: Vec<JobHealth>,
    /// Failed hosts whose own rollback is due once nothing of theirs runs (kept here so
    /// that the loop does not scan every host after every event).
    due_hosts: Vec<HostId>,
    /// Every touched host rolls back once nothing runs.
    pub(super) all_due: bool,
    /// Rollbacks not attempted after a failed one (`step@host`), for the summary.
    pub(super) not_attempted: Vec<String>,
}

impl RollbackJobs {
    /// Starts a job; returns its number.
    pub(super) fn start(&mut self, order: RollbackOrder) -> usize {
        self.jobs.push(Some(order));
        self.jobs.len() - 1
    }

    /// The job's order while it is not finished.
    pub(super) fn order(&self, job: usize) -> Option<&RollbackOrder> {
        self.jobs[job].as_ref()
    }

    pub(super) fn order_mut(&mut self, job: usize) -> Option<&mut RollbackOrder> {
        self.jobs[job].as_mut()
    }

    /// The jobs not finished.
    pub(super) fn active(&self) -> Vec<usize> {
        (0..self.jobs.len())
            .filter(|&job| self.jobs[job].is_some())
            .collect()
    }

    /// The health of the job's hosts being judged.
    pub(super) fn health(&mut self, job: usize) -> &mut JobHealth {
        if self.health.len() <= job {
            self.health.resize_with(job + 1, JobHealth::default);
        }
        &mut self.health[job]
    }

    /// The job's order, once its commands ended and its hosts' health is judged, with
    /// whether they all were healthy; the job is finished then.
    pub(super) fn take_finished(&mut self, job: usize) -> Option<(RollbackOrder, bool)> {
        let finished = self.jobs[job]
            .as_ref()
            .is_some_and(RollbackOrder::is_finished)
            && self.health(job).pending == 0;
        if !finished {
            return None;
        }
        let order = self.jobs[job].take().expect("a rollback");
        Some((order, !self.health(job).failed))
    }

    /// A killed run's rollbacks never come back: they are forgotten.
    pub(super) fn forget(&mut self) {
        self.jobs.clear();
    }

    /// The failed host's own rollback is due once nothing of its runs.
    pub(super) fn host_due(&mut self, host: HostId) {
        self.due_hosts.push(host);
    }

    /// The hosts whose rollback was due (to be started now or kept with [`Self::keep_due`]).
    pub(super) fn take_due_hosts(&mut self) -> Vec<HostId> {
        std::mem::take(&mut self.due_hosts)
    }

    /// Hosts whose rollback is due once what of theirs runs has ended.
    pub(super) fn keep_due(&mut self, hosts: Vec<HostId>) {
        self.due_hosts = hosts;
    }
}
