//! Transports: how a host's commands reach it. One small trait, [`Connection`], with two
//! implementations: [`local`] (`sh` on the controller, in the host's own directory) and
//! [`ssh`] (one multiplexed OpenSSH master per host, commands as channels, SFTP writes).
//! [`connect`] opens either kind the one way every command does; [`shell`] is the
//! persistent remote `sh` and its output framing, which [`ssh`] runs its commands through
//! (the arrow points one way: `ssh` uses `shell`, `shell` knows nothing of `ssh`).

pub mod connect;
pub mod local;
pub mod shell;
pub mod ssh;

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
}

/// The remote command that kills `command` when `timeout` expires, even if the
/// controller loses the connection. The command reaches the `sh` under `timeout` on its
/// stdin ([`on_stdin`]), so it never shows in the host's process list.
pub fn with_remote_timeout(command: &str, timeout: Option<Duration>) -> String {
    match timeout {
        None => command.to_string(),
        Some(t) => on_stdin(
            &format!("timeout -k 2 {}", t.as_secs_f64().max(0.001)),
            command,
        ),
    }
}

/// A command line that runs `launcher sh -s` (e.g. `sudo -n sh -s`) and feeds `command`
/// to that `sh` in a here-document: the command text travels on the new shell's stdin,
/// never in any process's arguments (which every user of the host can read in
/// `/proc/*/cmdline`, and which sudo logs). Inside, the command is one `eval` line with
/// stdin from `/dev/null`, so the shell has parsed all of it before it runs and the
/// command cannot read the rest of its own script. The delimiter is derived from the
/// command, so that no line of the command can end the here-document early.
pub fn on_stdin(launcher: &str, command: &str) -> String {
    let delimiter = here_document_delimiter(command);
    format!(
        "{launcher} sh -s <<'{delimiter}'\n{}\n{delimiter}\n",
        script_line(command)
    )
}

/// What a shell reading commands from stdin is given to run `command` once, with its
/// stdin from `/dev/null`.
pub fn script_line(command: &str) -> String {
    format!(
        "eval {} </dev/null",
        crate::playbook::template::shell_quote(command)
    )
}

fn here_document_delimiter(command: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(command.as_bytes());
    format!("PONY_{}", hex::encode(&digest[..8]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> std::process::Output {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap()
    }

    #[test]
    fn a_command_on_stdin_keeps_its_quotes_exit_status_and_no_stdin() {
        let command = "printf '%s|' \"$0\" 'it'\\''s' \"$(cat)\"; echo; exit 7";
        let out = sh(&on_stdin("env", command));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "sh|it's||\n");
        assert_eq!(out.status.code(), Some(7));
        // Nested, as `become` under a timeout is, and with a line like a delimiter.
        let inner = on_stdin("env", "echo PONY_0000000000000000; echo done");
        let out = sh(&with_remote_timeout(&inner, Some(Duration::from_secs(30))));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "PONY_0000000000000000\ndone\n"
        );
        assert!(out.status.success());
    }

    #[test]
    fn a_timed_out_command_is_killed_with_timeouts_status() {
        let out = sh(&with_remote_timeout(
            "sleep 5",
            Some(Duration::from_millis(50)),
        ));
        assert_eq!(out.status.code(), Some(124));
    }
}
