//! Transports: how a host's commands reach it. One small trait, [`Connection`], with two
//! implementations: [`local`] (`sh` on the controller, in the host's own directory) and
//! [`ssh`] (one multiplexed OpenSSH master per host, commands as channels, SFTP writes).
//! [`connect`] opens either kind the one way every command does; [`shell`] is the
//! persistent remote `sh` and its output framing, which [`ssh`] runs its commands through
//! (the arrow points one way: `ssh` uses `shell`, `shell` knows nothing of `ssh`);
//! [`chain`] is the script that runs a host's chain of tasks in one round trip;
//! [`wrapper`] is what each task's command is wrapped in there (marker, group, kill).

pub mod chain;
pub mod connect;
pub mod local;
pub mod shell;
pub mod ssh;
mod wrapper;

pub use wrapper::{
    kill_command, kill_outcome, marked_command, on_stdin, script_line, shell_setup,
    with_remote_timeout, KillOutcome, TaskMark, Wrapper, KILL_TIMEOUT, MARK, OWN_FOLDER_FUNCTION,
    UID,
};

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The whole error chain: the openssh crate puts ssh's own message in the source
/// (used by [`ssh`] and [`shell`] alike).
pub fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(cause_text.trim()) {
            text.push_str(": ");
            text.push_str(cause_text.trim());
        }
        source = cause.source();
    }
    text
}

/// What a finished command left behind.
#[derive(Debug, Clone, Default)]
pub struct CommandOutput {
    /// `None` when the command was killed by a signal.
    pub exit_code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl CommandOutput {
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }
}

/// Why a transport could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The host could not be reached (refused, unreachable, auth, host key, connect
    /// timeout). Retried with backoff before the task fails.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// Connecting failed for good: `attempts` attempts were made (retries included), the
    /// last one failing with `error`.
    #[error("cannot connect: {error}")]
    Unreachable { attempts: u32, error: String },
    /// The connection broke while a command ran.
    #[error("connection lost: {0}")]
    Disconnected(String),
    /// The command ran longer than its step's `timeout` and was killed.
    #[error("timed out after {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("{0}")]
    Other(String),
}

impl TransportError {
    /// Whether trying again with a fresh connection may help.
    pub fn is_connection_failure(&self) -> bool {
        matches!(
            self,
            TransportError::Connect(_)
                | TransportError::Unreachable { .. }
                | TransportError::Disconnected(_)
        )
    }

    /// How many connection attempts were made, when this is the end of them.
    pub fn connect_attempts(&self) -> Option<u32> {
        match self {
            TransportError::Unreachable { attempts, .. } => Some(*attempts),
            _ => None,
        }
    }
}

/// A byte stream to a port on the host (for protocol probes).
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Stream for T {}

/// An open connection to one host. Commands reach a `sh` on its stdin, never as an
/// argument (see [`on_stdin`]). Dropping the last handle closes it (for ssh, the master
/// connection).
pub trait Connection: Send + Sync {
    /// Runs `command` in `sh`; with a timeout the command is killed when it expires.
    fn run<'a>(
        &'a self,
        command: &'a str,
        timeout: Option<Duration>,
    ) -> BoxFuture<'a, Result<CommandOutput, TransportError>>;

    /// Writes `content` to `path` on the host (callers write a temp name, then rename).
    fn write_file<'a>(
        &'a self,
        path: &'a str,
        content: &'a [u8],
    ) -> BoxFuture<'a, Result<(), TransportError>>;

    /// Connects to `127.0.0.1:port` as the host sees it: a port forward over the SSH
    /// connection (nothing to install on the host), or a plain connect for local hosts.
    /// A stream to `address:port` as the host sees it (its loopback, or one of its own
    /// addresses).
    fn connect_port<'a>(
        &'a self,
        address: &'a str,
        port: u16,
    ) -> BoxFuture<'a, Result<Box<dyn Stream>, TransportError>>;

    /// A simulated connection answers a protocol probe itself (nothing listens behind
    /// it); a real one has no answer and the probe speaks the protocol.
    fn simulated_probe(&self) -> Option<BoxFuture<'_, Result<String, String>>> {
        None
    }

    /// Whether nothing real stands behind it (a simulation): nothing is armed there.
    fn is_simulated(&self) -> bool {
        false
    }

    /// Runs `links` in order as one script in one round trip, stopping at the first
    /// failure, and sends each link's result on `frames` as its frame arrives (see
    /// [`chain`]); `cut` names the chain's cut file. An error means the connection broke
    /// before the next link's frame came. `None`: this connection runs no chains (the
    /// caller runs the tasks one by one).
    fn run_chain<'a>(
        &'a self,
        links: &'a [chain::ChainLink],
        cut: &'a str,
        frames: tokio::sync::mpsc::UnboundedSender<chain::ChainFrame>,
    ) -> Option<BoxFuture<'a, Result<(), TransportError>>> {
        let _ = (links, cut, frames);
        None
    }

    /// Kills what runs of the task `mark` on the host (its whole process group), and
    /// says whether it is gone.
    fn kill_marked<'a>(&'a self, mark: &'a TaskMark) -> BoxFuture<'a, KillOutcome> {
        let _ = mark;
        Box::pin(async { KillOutcome::NotMarked })
    }
}
