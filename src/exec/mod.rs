//! The executor: runs a sealed plan. [`scheduler`] owns all run state and is the only
//! voice of the run (it emits [`crate::events::Event`]s; the journal and reporters
//! consume them); the rules it applies are value types beside it: [`admission`]
//! (`max_unavailable` slots, `connections`), [`policy`] (failure budget → action),
//! [`rollback`] (what to undo, in which order), [`change_window`], [`outcome`] (run
//! outcome and exit code). [`task`] runs one task; [`hosts`] owns connections. The
//! executor never prints and never writes files.

pub mod admission;
pub mod change_window;
pub mod clock;
pub mod dead_man;
pub mod host_run;
pub mod hosts;
pub mod outcome;
pub mod policy;
pub mod probe;
pub mod regions;
pub mod rollback;
pub mod scheduler;
pub mod task;

use crate::events::{HostOutcome, RunOutcome};
use crate::exit::Exit;
use crate::inventory::pattern::HostSet;
use crate::secret::Redactor;
use crate::state::replay::Replay;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::watch;

pub use scheduler::run;

/// What the run needs besides the plan.
pub struct ExecOptions {
    /// The run's id, for templates (`run.id`) and messages.
    pub run_id: String,
    /// Where the run's folder is, for the summary.
    pub run_dir_display: String,
    pub redactor: Redactor,
    /// Waves whose `approve:` gate is pre-approved.
    pub approvals: Vec<String>,
    /// Hosts worked on at once over the whole run.
    pub connections: usize,
    /// Counts Ctrl-C / SIGTERM: 1 admits no new host (hosts in flight finish), 2 kills
    /// running tasks.
    pub interrupts: watch::Receiver<u32>,
    /// Asks a person at an `approve:` gate (a terminal); without it the run waits
    /// `approval_wait` for `pony approve`, or stops there.
    pub approver: Option<UnboundedSender<ApprovalRequest>>,
    /// Without a terminal: how long an `approve:` gate waits for `pony approve` from
    /// another shell before the run stops there (exit 10); `None` stops at once.
    pub approval_wait: Option<std::time::Duration>,
    /// Commands from `pony pause|continue|abort|approve` (the run folder's socket).
    pub control: Option<tokio::sync::mpsc::UnboundedReceiver<crate::control::ControlRequest>>,
    /// What an earlier process of this run already did (`pony resume`, `pony rollback`).
    pub replay: Option<Replay>,
    /// Run the rollout, or only roll back what the replayed run touched.
    pub mode: Mode,
    /// The run's clock (change windows, durations): real time in a deploy, virtual time
    /// in a simulation; tests pick the instant it starts at.
    pub clock: clock::Clock,
    /// Resume past this failed wave without running its unfinished tasks (journaled).
    pub skip_failed_wave: Option<String>,
    /// How many hosts of a cluster roll back at once (the playbook's, or the command
    /// line's `--rollback-pace`).
    pub rollback_pace: crate::playbook::RollbackPace,
    /// This controller's regions when the run is split between controllers
    /// (`--regions`): the other regions' tasks are awaited from the shared journal.
    pub split: Option<std::sync::Arc<regions::Split>>,
    /// Set once this controller lost a lease it works under (state database): a record
    /// the journal then did not acknowledge was refused by fencing, not lost to a full
    /// disk, and the run stops as on a second Ctrl-C rather than halting.
    pub lease_lost: Option<crate::state::deadline::LeaseLost>,
}

/// What the executor does with the plan.
#[derive(Debug, Clone)]
pub enum Mode {
    Deploy,
    /// Roll back every task the replayed run completed (or failed) on these hosts.
    Rollback(HostSet),
}

/// A question to the person at the terminal: may the run go past this wave's gate?
pub struct ApprovalRequest {
    pub wave: String,
    /// What the gate's soak showed, said before the question (`its 20s soak passed (6
    /// checks ok)`).
    pub soak: Option<String>,
    pub answer: tokio::sync::oneshot::Sender<bool>,
}

/// How the run ended.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub outcome: RunOutcome,
    pub exit: Exit,
    pub hosts: Vec<Option<HostOutcome>>,
}

#[cfg(test)]
mod tests;
