//! How a run ended, as a pure function of its hosts' outcomes and why it stopped: the
//! outcome word, the exit code and the per-region counts of the summary.

use crate::events::{HostOutcome, RegionSummary, RunOutcome};
use crate::exit::Exit;
use crate::inventory::Inventory;
use std::time::Duration;

/// Why the loop ended, besides the hosts' outcomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ending {
    /// `pony rollback`: nothing ran forward.
    pub rollback_only: bool,
    /// Ctrl-C or SIGTERM.
    pub interrupted: bool,
    /// Stopped at an `approve:` gate nobody answered.
    pub awaiting_approval: bool,
    /// `on_failure: halt` stopped the run.
    pub halted: bool,
}

/// Counts of host outcomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub hosts: usize,
    pub ok: usize,
    pub failed: usize,
    pub rolled_back: usize,
    pub rollback_failed: usize,
    pub cancelled: usize,
    pub incomplete: usize,
    pub unreachable: usize,
}

impl Tally {
    pub fn of<'a>(outcomes: impl IntoIterator<Item = &'a HostOutcome>) -> Tally {
        let mut tally = Tally::default();
        for outcome in outcomes {
            tally.hosts += 1;
            match outcome {
                HostOutcome::Ok => tally.ok += 1,
                HostOutcome::Failed => tally.failed += 1,
                HostOutcome::RolledBack => tally.rolled_back += 1,
                HostOutcome::RollbackFailed => tally.rollback_failed += 1,
                HostOutcome::Cancelled => tally.cancelled += 1,
                HostOutcome::Incomplete => tally.incomplete += 1,
                HostOutcome::Unreachable => tally.unreachable += 1,
            }
        }
        tally
    }
}

/// The run's outcome and exit code.
pub fn run_outcome(tally: Tally, ending: Ending) -> (RunOutcome, Exit) {
    if ending.rollback_only {
        return if tally.rollback_failed > 0 {
            (RunOutcome::NeedsAttention, Exit::NeedsAttention)
        } else {
            (RunOutcome::RolledBack, Exit::Success)
        };
    }
    if ending.interrupted {
        (RunOutcome::Interrupted, Exit::Interrupted)
    } else if ending.awaiting_approval {
        (RunOutcome::AwaitingApproval, Exit::AwaitingApproval)
    } else if ending.halted
        || tally.rollback_failed > 0
        || tally.failed > 0
        || tally.incomplete > 0
        || tally.unreachable > 0
    {
        // A skipped unreachable host still runs the old release: a person looks, and
        // `pony resume` deploys it once it can be reached.
        (RunOutcome::NeedsAttention, Exit::NeedsAttention)
    } else if tally.rolled_back > 0 {
        (RunOutcome::FailedRolledBack, Exit::FailedRolledBack)
    } else {
        (RunOutcome::Succeeded, Exit::Success)
    }
}

/// One summary row per region with hosts that have an outcome, in inventory order.
pub fn regions(
    inventory: &Inventory,
    outcomes: &[Option<HostOutcome>],
    finished: &[Duration],
) -> Vec<RegionSummary> {
    inventory
        .regions
        .iter()
        .enumerate()
        .filter_map(|(r, region)| {
            let tally = Tally::of(
                inventory
                    .hosts
                    .iter()
                    .zip(outcomes)
                    .filter(|(host, _)| host.region == r)
                    .filter_map(|(_, outcome)| outcome.as_ref()),
            );
            (tally.hosts > 0).then(|| RegionSummary {
                region: region.name.clone(),
                hosts: tally.hosts,
                ok: tally.ok,
                failed: tally.failed + tally.rollback_failed,
                rolled_back: tally.rolled_back,
                cancelled: tally.cancelled + tally.incomplete + tally.unreachable,
                duration_ms: finished[r].as_millis() as u64,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use HostOutcome::*;

    fn outcome(hosts: &[HostOutcome], ending: Ending) -> (RunOutcome, Exit) {
        run_outcome(Tally::of(hosts), ending)
    }

    #[test]
    fn every_host_ok_is_success() {
        assert_eq!(
            outcome(&[Ok, Ok, Cancelled], Ending::default()),
            (RunOutcome::Succeeded, Exit::Success)
        );
    }

    #[test]
    fn rolled_back_failures_exit_1_and_anything_left_broken_exits_3() {
        assert_eq!(
            outcome(&[Ok, RolledBack], Ending::default()),
            (RunOutcome::FailedRolledBack, Exit::FailedRolledBack)
        );
        for broken in [Failed, RollbackFailed, Incomplete] {
            assert_eq!(
                outcome(&[RolledBack, broken], Ending::default()),
                (RunOutcome::NeedsAttention, Exit::NeedsAttention),
                "{broken:?}"
            );
        }
        let halted = Ending {
            halted: true,
            ..Ending::default()
        };
        assert_eq!(outcome(&[Ok], halted).1, Exit::NeedsAttention);
    }

    #[test]
    fn interrupts_and_approvals_win_over_host_outcomes() {
        let interrupted = Ending {
            interrupted: true,
            ..Ending::default()
        };
        assert_eq!(outcome(&[Failed], interrupted).1, Exit::Interrupted);
        let approval = Ending {
            awaiting_approval: true,
            ..Ending::default()
        };
        assert_eq!(outcome(&[Ok], approval).1, Exit::AwaitingApproval);
    }

    #[test]
    fn a_rollback_run_succeeds_unless_a_rollback_failed() {
        let rollback = Ending {
            rollback_only: true,
            ..Ending::default()
        };
        assert_eq!(
            outcome(&[RolledBack], rollback),
            (RunOutcome::RolledBack, Exit::Success)
        );
        assert_eq!(outcome(&[RollbackFailed], rollback).1, Exit::NeedsAttention);
    }
}
