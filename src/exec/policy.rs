//! The failure policy as pure functions: given a cluster's failed hosts, its budget and
//! the playbook's `on_failure`, what the run does about one more failed host; and what
//! `on_failure` means once the run-wide `max_failures_run` is crossed.

use crate::playbook::OnFailure;

/// What happens after a host failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureAction {
    /// Within budget: roll back the failed host only; the rollout goes on.
    RollbackHost,
    /// `halt`: start nothing more anywhere, roll nothing back.
    Halt,
    /// `rollback-region`: stop the region and roll back every host the run touched there.
    RollbackRegion,
    /// `rollback-all`: stop everything and roll back every touched host.
    RollbackAll,
}

impl FailureAction {
    /// Whether the cluster went beyond its budget (which also fails its wave).
    pub fn beyond_budget(self) -> bool {
        self != FailureAction::RollbackHost
    }
}

/// `failed_hosts` counts the host that just failed.
pub fn on_host_failure(failed_hosts: usize, budget: usize, policy: OnFailure) -> FailureAction {
    if failed_hosts <= budget {
        return FailureAction::RollbackHost;
    }
    match policy {
        OnFailure::Halt => FailureAction::Halt,
        OnFailure::RollbackRegion => FailureAction::RollbackRegion,
        OnFailure::RollbackAll => FailureAction::RollbackAll,
    }
}

/// Beyond `max_failures_run` the whole run is in trouble, so `on_failure` applies to all
/// of it: `halt` halts, `rollback-region` and `rollback-all` roll back every touched host.
/// `None` while `failed_hosts` (counting the host that just failed) is within `budget`.
pub fn on_run_failure(
    failed_hosts: usize,
    budget: Option<usize>,
    policy: OnFailure,
) -> Option<FailureAction> {
    if failed_hosts <= budget? {
        return None;
    }
    Some(match policy {
        OnFailure::Halt => FailureAction::Halt,
        OnFailure::RollbackRegion | OnFailure::RollbackAll => FailureAction::RollbackAll,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_budget_only_the_host_is_rolled_back() {
        for policy in [
            OnFailure::Halt,
            OnFailure::RollbackRegion,
            OnFailure::RollbackAll,
        ] {
            assert_eq!(on_host_failure(1, 1, policy), FailureAction::RollbackHost);
            assert_eq!(on_host_failure(2, 3, policy), FailureAction::RollbackHost);
        }
    }

    #[test]
    fn beyond_the_run_budget_the_policy_covers_the_whole_run() {
        assert_eq!(on_run_failure(5, None, OnFailure::Halt), None);
        assert_eq!(on_run_failure(2, Some(2), OnFailure::Halt), None);
        assert_eq!(
            on_run_failure(3, Some(2), OnFailure::Halt),
            Some(FailureAction::Halt)
        );
        for policy in [OnFailure::RollbackRegion, OnFailure::RollbackAll] {
            assert_eq!(
                on_run_failure(1, Some(0), policy),
                Some(FailureAction::RollbackAll)
            );
        }
    }

    #[test]
    fn beyond_budget_the_policy_decides() {
        assert_eq!(on_host_failure(1, 0, OnFailure::Halt), FailureAction::Halt);
        assert_eq!(
            on_host_failure(2, 1, OnFailure::RollbackRegion),
            FailureAction::RollbackRegion
        );
        assert_eq!(
            on_host_failure(3, 2, OnFailure::RollbackAll),
            FailureAction::RollbackAll
        );
        assert!(on_host_failure(1, 0, OnFailure::Halt).beyond_budget());
        assert!(!on_host_failure(1, 1, OnFailure::Halt).beyond_budget());
    }
}
