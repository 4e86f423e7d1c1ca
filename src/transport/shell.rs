//! A persistent remote shell: one `sh` per channel on the host's SSH master, fed one
//! command at a time on stdin, with the end of each command's stdout and stderr marked
//! by a line only pony can write. Opening a session costs sshd a fork, the user's login
//! shell and its rc files; paying that once per channel instead of once per task is what
//! makes a task cost about one round trip.

use super::chain::{self, ChainFrame, ChainLink};
use super::{describe, CommandOutput, TransportError};
use openssh::{ChildStderr, ChildStdin, ChildStdout, Session};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc::UnboundedSender;

/// One `sh` reading commands from its stdin.
pub struct RemoteShell {
    // Keeps the channel open; dropping it closes the channel and ends the shell.
    _child: openssh::Child<Arc<Session>>,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    stderr: BufReader<ChildStderr>,
}

impl RemoteShell {
    pub async fn open(session: Arc<Session>) -> Result<Self, TransportError> {
        let mut command = Session::to_command(session, "sh");
        command
            .stdin(openssh::Stdio::piped())
            .stdout(openssh::Stdio::piped())
            .stderr(openssh::Stdio::piped());
        let mut child = command
            .spawn()
            .await
            .map_err(|e| TransportError::Disconnected(describe(&e)))?;
        let lost = || TransportError::Disconnected("the remote shell has no pipes".into());
        let stdin = child.stdin().take().ok_or_else(lost)?;
        let stdout = BufReader::new(child.stdout().take().ok_or_else(lost)?);
        let stderr = BufReader::new(child.stderr().take().ok_or_else(lost)?);
        let mut shell = RemoteShell {
            _child: child,
            stdin,
            stdout,
            stderr,
        };
        // Once per shell, not once per task: see `shell_setup`.
        shell.send(&super::shell_setup()).await?;
        Ok(shell)
    }

    /// Runs `command` in a subshell, `(eval …)`: a fork of the shell without a new exec,
    /// so `exit`, `cd` or variables in it cannot touch the shell; collects its output
    /// and exit status.
    pub async fn run(&mut self, command: &str) -> Result<CommandOutput, TransportError> {
        let marker = new_marker();
        let script = format!(
            "(eval {}) </dev/null; s=$?; printf '\\n{marker} %d\\n' \"$s\"; printf '\\n{marker}\\n' >&2\n",
            crate::shell::quote(command)
        );
        self.send(&script).await?;
        let (stdout, stderr) = tokio::join!(
            read_until_marker(&mut self.stdout, &marker, true),
            read_until_marker(&mut self.stderr, &marker, false)
        );
        let (stdout, status) = stdout?;
        let (stderr, _) = stderr?;
        Ok(CommandOutput {
            exit_code: status,
            stdout,
            stderr,
        })
    }

    /// Writes `script` to the shell's stdin.
    async fn send(&mut self, script: &str) -> Result<(), TransportError> {
        let lost = |e: std::io::Error| {
            TransportError::Disconnected(format!("the remote shell went away: {e}"))
        };
        self.stdin
            .write_all(script.as_bytes())
            .await
            .map_err(lost)?;
        self.stdin.flush().await.map_err(lost)
    }

    /// Runs a chain of tasks' commands as one script ([`chain::script`]), sending each
    /// link's result on `frames` as its frame arrives. A link's frame must come within its
    /// `timeout` and 3 s (the remote `timeout` kills it; this backstop covers a hung
    /// host): otherwise the link is reported timed out and the shell is not to be used
    /// again. Returns whether the shell may be used again.
    pub async fn run_chain(
        &mut self,
        links: &[ChainLink],
        cut: &str,
        frames: &UnboundedSender<ChainFrame>,
    ) -> Result<bool, TransportError> {
        let marker = new_marker();
        let script = chain::script(links, &marker, cut);
        self.send(&script).await?;
        for (i, link) in links.iter().enumerate() {
            let read = async {
                tokio::join!(
                    read_frame(&mut self.stdout, &marker, true),
                    read_frame(&mut self.stderr, &marker, true)
                )
            };
            let (stdout, stderr) = match link.timeout {
                None => read.await,
                Some(limit) => {
                    match tokio::time::timeout(limit + Duration::from_secs(3), read).await {
                        Ok(read) => read,
                        Err(_) => {
                            let _ = frames.send((i, Err(TransportError::Timeout(limit))));
                            return Ok(false);
                        }
                    }
                }
            };
            let ((stdout, word), (stderr, _)) = (stdout?, stderr?);
            if word == chain::END {
                return Ok(true);
            }
            let output = CommandOutput {
                exit_code: word.parse::<i32>().ok(),
                stdout,
                stderr,
            };
            let _ = frames.send((i, chain::link_result(link, output)));
        }
        // After the last link's frame, the end frame.
        let (stdout, stderr) = tokio::join!(
            read_frame(&mut self.stdout, &marker, true),
            read_frame(&mut self.stderr, &marker, true)
        );
        stdout?;
        stderr?;
        Ok(true)
    }
}

/// A line no command's output holds by chance: it ends a command's (or a link's) output.
fn new_marker() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "__pony_{}_{}__",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Reads until the marker line; returns what came before it (without the newline pony
/// added) and, on stdout, the exit status written after the marker.
async fn read_until_marker(
    stream: &mut (impl AsyncBufReadExt + Unpin),
    marker: &str,
    with_status: bool,
) -> Result<(Vec<u8>, Option<i32>), TransportError> {
    let (buffer, rest) = read_frame(stream, marker, with_status).await?;
    Ok((buffer, rest.parse::<i32>().ok()))
}

/// Reads until the marker line followed by a word (`with_word`) or by nothing; returns
/// what came before it (without the newline pony added) and the word.
async fn read_frame(
    stream: &mut (impl AsyncBufReadExt + Unpin),
    marker: &str,
    with_word: bool,
) -> Result<(Vec<u8>, String), TransportError> {
    let with_status = with_word;
    let mut buffer = Vec::new();
    loop {
        let start = buffer.len();
        let read = stream.read_until(b'\n', &mut buffer).await.map_err(|e| {
            TransportError::Disconnected(format!("the remote shell went away: {e}"))
        })?;
        if read == 0 {
            return Err(TransportError::Disconnected(
                "the remote shell closed its output".into(),
            ));
        }
        let line = &buffer[start..];
        if !line.starts_with(marker.as_bytes()) || start == 0 || buffer[start - 1] != b'\n' {
            continue;
        }
        let rest = String::from_utf8_lossy(&line[marker.len()..])
            .trim()
            .to_string();
        if with_status == rest.is_empty() {
            continue;
        }
        buffer.truncate(start - 1);
        return Ok((buffer, rest));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_ends_exactly_where_the_command_stopped_writing() {
        let m = "__pony_1_7__";
        let mut out: &[u8] = b"one\ntwo\n\n__pony_1_7__ 3\nnext";
        assert_eq!(
            read_until_marker(&mut out, m, true).await.unwrap(),
            (b"one\ntwo\n".to_vec(), Some(3))
        );
        let mut no_newline: &[u8] = b"partial\n__pony_1_7__ 0\n";
        assert_eq!(
            read_until_marker(&mut no_newline, m, true).await.unwrap(),
            (b"partial".to_vec(), Some(0))
        );
        let mut empty: &[u8] = b"\n__pony_1_7__\n";
        assert_eq!(
            read_until_marker(&mut empty, m, false).await.unwrap(),
            (Vec::new(), None)
        );
        // A line that merely starts like the marker, not after pony's newline, is output.
        let mut tricky: &[u8] = b"__pony_1_7__ 9\nx\n__pony_1_7__ 1\n";
        assert_eq!(
            read_until_marker(&mut tricky, m, true).await.unwrap(),
            (b"__pony_1_7__ 9\nx".to_vec(), Some(1))
        );
        let mut cut: &[u8] = b"no marker";
        assert!(read_until_marker(&mut cut, m, true).await.is_err());
    }
}
