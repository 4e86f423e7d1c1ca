//! The documented process exit codes (SPEC §5), in one place.

/// How a pony command ended, as the number CI pipelines act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything succeeded.
    Success = 0,
    /// The rollout failed and its rollback completed: every host is on the old release.
    FailedRolledBack = 1,
    /// Invalid input or usage; nothing ran.
    Invalid = 2,
    /// Failed and the rollback is incomplete or the run halted: a person must look.
    NeedsAttention = 3,
    /// Another run holds the inventory's lock.
    Locked = 4,
    /// `pony pause|continue|abort|approve`: the run is not running (finished, stopped,
    /// or no process listens on its control socket).
    NotRunning = 5,
    /// The run is paused awaiting approval.
    AwaitingApproval = 10,
    /// Interrupted by Ctrl-C or SIGTERM; resumable.
    Interrupted = 130,
}

impl Exit {
    /// Exit 1 for the commands that change nothing (`ping`, `exec`, `deploy --check`):
    /// some host failed (or could not answer).
    pub const SOME_HOSTS_FAILED: Exit = Exit::FailedRolledBack;

    pub fn code(self) -> i32 {
        self as i32
    }
}
