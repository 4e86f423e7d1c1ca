//! The failure budgets the run counts against: each cluster's `max_failures`, the
//! run-wide `max_failures_run`, and `max_unreachable` for hosts skipped under
//! `unreachable: skip` (which the failure budgets do not count). A wave's own budget is
//! with the wave's gate state.

use crate::exec::policy::{self, FailureAction};
use crate::playbook::OnFailure;

struct ClusterBudget {
    failed_hosts: usize,
    max_failures: usize,
}

/// Failed and skipped hosts, against their limits.
pub(super) struct Budgets {
    clusters: Vec<ClusterBudget>,
    /// Failed hosts over the whole run, and the run-wide budget resolved to a count.
    run_failed: usize,
    max_run: Option<usize>,
    /// Hosts skipped under `unreachable: skip`.
    unreachable: usize,
}

impl Budgets {
    /// Per cluster its `max_failures`; the run's `max_failures_run` as a count.
    pub(super) fn new(max_failures: impl Iterator<Item = usize>, max_run: Option<usize>) -> Self {
        Budgets {
            clusters: max_failures
                .map(|max_failures| ClusterBudget {
                    failed_hosts: 0,
                    max_failures,
                })
                .collect(),
            run_failed: 0,
            max_run,
            unreachable: 0,
        }
    }

    /// A host of `cluster` failed: it counts in its cluster and in the run. Returns the
    /// cluster's failed hosts and its `max_failures`.
    pub(super) fn host_failed(&mut self, cluster: usize) -> (usize, usize) {
        let budget = &mut self.clusters[cluster];
        budget.failed_hosts += 1;
        self.run_failed += 1;
        (budget.failed_hosts, budget.max_failures)
    }

    /// What the run does once its failed hosts are beyond `max_failures_run`, if they are.
    pub(super) fn beyond_run(&self, on_failure: OnFailure) -> Option<FailureAction> {
        policy::on_run_failure(self.run_failed, self.max_run, on_failure)
    }

    /// The run's failed hosts and its `max_failures_run` (0 without one).
    pub(super) fn run_count(&self) -> (usize, usize) {
        (self.run_failed, self.max_run.unwrap_or_default())
    }

    /// Whether one more host may be skipped as unreachable under `max_unreachable`.
    pub(super) fn may_skip_unreachable(&self, max_unreachable: Option<usize>) -> bool {
        max_unreachable.is_none_or(|max| self.unreachable < max)
    }

    /// A host was skipped as unreachable.
    pub(super) fn skipped_unreachable(&mut self) {
        self.unreachable += 1;
    }
}
