//! What a run's journal says, as the scheduler needs it to resume or roll back a run: each
//! task's last forward outcome, the gates passed and the wave that stopped the run.
//!
//! Plain values with no dependency on the journal's file format: the journal builds a
//! [`Replay`] from its records (`Replay::from_records` in [`super::journal`]), and the
//! executor reads it without knowing about journals at all.

use serde::{Deserialize, Serialize};

/// What a journal says about each task and gate, for resume and rollback.
#[derive(Debug, Default, Clone)]
pub struct Replay {
    /// Per task label, its last forward outcome.
    pub tasks: std::collections::HashMap<String, TaskReplay>,
    /// Waves whose gate passed.
    pub gates_passed: std::collections::HashSet<String>,
    /// Waves whose gate got as far as its `approve:` question: their soak is over, and a
    /// resume does not soak them again.
    pub soaked: std::collections::HashSet<String>,
    /// Waves approved from another shell (`pony approve RUN WAVE`, a journaled `control`
    /// record), possibly before their gate was reached: a resume passes their gates as if
    /// `--approve WAVE` were given again.
    pub pre_approved: std::collections::BTreeSet<String>,
    /// The wave whose failure stopped the run (none once its gate passed or was skipped).
    pub stopped_wave: Option<String>,
}

/// One task as the journal last saw it finish.
#[derive(Debug, Clone)]
pub struct TaskReplay {
    pub state: TaskState,
    pub changed: bool,
    /// It reported a change (what a handler listens for).
    pub reported_changed: bool,
    pub captures: Vec<(String, String)>,
    /// Its rollback ran and succeeded after it finished.
    pub rolled_back: bool,
}

impl Replay {
    /// Whether the task completed forward and still stands (not rolled back).
    pub fn done(&self, label: &str) -> Option<&TaskReplay> {
        self.tasks.get(label).filter(|t| {
            matches!(t.state, TaskState::Succeeded | TaskState::Skipped) && !t.rolled_back
        })
    }
}

/// How a task ended, as journaled (`task_finished.state`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Succeeded,
    Skipped,
    Failed,
    Interrupted,
}
