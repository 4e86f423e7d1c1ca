//! Live control of a running run from another shell (`pony pause|continue|abort|approve`):
//! what a person asks for, who asked, and the answer the scheduler gives back once the
//! command is applied and journaled. The socket that carries them is
//! [`crate::control`]; the scheduler applies them (`scheduler/control.rs`).

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

/// What a person asks a running run to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum ControlCommand {
    /// Start no new host (hosts in flight finish their tasks) until `continue`.
    Pause,
    /// Undo a `pause`.
    Continue,
    /// Stop as the first Ctrl-C does; with `rollback`, roll back every host the run
    /// touched instead of leaving it resumable.
    Abort {
        #[serde(default)]
        rollback: bool,
    },
    /// Answer a waiting `approve:` gate (or pre-approve one not reached yet).
    Approve { wave: String },
}

impl ControlCommand {
    /// The command as typed: `pause`, `abort --rollback`, `approve canary`.
    pub fn describe(&self) -> String {
        match self {
            ControlCommand::Pause => "pause".into(),
            ControlCommand::Continue => "continue".into(),
            ControlCommand::Abort { rollback: false } => "abort".into(),
            ControlCommand::Abort { rollback: true } => "abort --rollback".into(),
            ControlCommand::Approve { wave } => format!("approve {wave}"),
        }
    }
}

/// Who sent a command, as the kernel vouches for it (the socket's peer credentials), not
/// as the sender claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operator {
    pub user: String,
    /// The controller machine (the socket is local to it).
    pub host: String,
    pub pid: u32,
}

impl Operator {
    /// The process sending a command itself (through the state database, or forwarding
    /// an answer given at its terminal): what it reports of itself.
    pub fn this_process() -> Operator {
        Operator {
            user: crate::process::current_user(),
            host: crate::process::hostname(),
            pid: std::process::id(),
        }
    }
}

/// The run's answer: whether it took the command, and what it did in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlReply {
    pub accepted: bool,
    pub message: String,
}

/// A command on its way to the scheduler; `reply` is answered once the command is applied
/// and its journal record is on disk.
pub struct ControlRequest {
    pub command: ControlCommand,
    pub operator: Operator,
    pub reply: oneshot::Sender<ControlReply>,
}
