//! The local transport: `sh` on the controller in `<state dir>/hosts/<host>`, so that
//! relative paths give each local host its own sandbox. The command goes to `sh` on its
//! stdin, never as an argument: the controller's process list never shows it. It runs
//! with the environment an SSH login would give it ([`crate::secret::local_host_env`]),
//! not the controller's.

use super::{BoxFuture, CommandOutput, Connection, KillOutcome, TaskMark, TransportError};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

pub struct LocalConnection {
    root: PathBuf,
}

impl LocalConnection {
    /// Opens (creates) the host's working directory.
    pub fn open(root: PathBuf) -> Result<Self, TransportError> {
        std::fs::create_dir_all(&root).map_err(|e| {
            TransportError::Connect(format!("cannot create {}: {e}", root.display()))
        })?;
        Ok(LocalConnection { root })
    }
}

impl LocalConnection {
    /// Runs `script` in a new `sh` that leads its own process group; `task` is the
    /// marked task's, for its environment.
    async fn run_sh(
        &self,
        script: &str,
        timeout: Option<Duration>,
        task: Option<&TaskMark>,
    ) -> Result<CommandOutput, TransportError> {
        let mut command = tokio::process::Command::new("sh");
        command
            .arg("-s")
            // A login environment, not pony's (which may hold PONY_STATE's password
            // or a --secret-var's source).
            .env_clear()
            .envs(crate::secret::local_host_env());
        if let Some(mark) = task {
            // How a kill tells this group from one that reused its number.
            command
                .env("PONY_TASK", mark.token())
                .env("PONY_HANDS", &mark.hands);
        }
        let mut child = command
            .current_dir(&self.root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| TransportError::Other(format!("cannot start sh: {e}")))?;
        let pid = child.id();
        // `sh` parses the whole line before it runs it, so it reads all of it first;
        // closing stdin afterwards ends the script.
        let script = format!("{}\n", super::script_line(script));
        if let Some(mut stdin) = child.stdin.take() {
            use tokio::io::AsyncWriteExt;
            stdin
                .write_all(script.as_bytes())
                .await
                .map_err(|e| TransportError::Other(format!("cannot feed sh: {e}")))?;
        }
        let output = child.wait_with_output();
        let output = match timeout {
            None => output.await,
            Some(limit) => match tokio::time::timeout(limit, output).await {
                Ok(output) => output,
                Err(_) => {
                    if let Some(pid) = pid {
                        // The whole process group, so children of `sh` die too.
                        crate::sys::kill_group(pid, libc::SIGKILL);
                    }
                    return Err(TransportError::Timeout(limit));
                }
            },
        }
        .map_err(|e| TransportError::Other(format!("sh failed: {e}")))?;
        Ok(CommandOutput {
            exit_code: output.status.code(),
            stdout: output.stdout,
            stderr: output.stderr,
        })
    }
}

impl Connection for LocalConnection {
    fn run<'a>(
        &'a self,
        command: &'a str,
        timeout: Option<Duration>,
    ) -> BoxFuture<'a, Result<CommandOutput, TransportError>> {
        Box::pin(async move {
            match TaskMark::current() {
                // `sh` leads its own process group: the marker names it, so that a
                // second Ctrl-C (or the next controller) can kill all of it.
                Some(mark) => {
                    let script =
                        super::marked_command(command, timeout, &mark, super::Wrapper::OwnGroup);
                    self.run_sh(&script, timeout, Some(&mark)).await
                }
                None => self.run_sh(command, timeout, None).await,
            }
        })
    }

    fn kill_marked<'a>(&'a self, mark: &'a TaskMark) -> BoxFuture<'a, KillOutcome> {
        Box::pin(async move {
            super::kill_outcome(
                self.run_sh(&super::kill_command(mark), Some(super::KILL_TIMEOUT), None)
                    .await,
            )
        })
    }

    fn write_file<'a>(
        &'a self,
        path: &'a str,
        content: &'a [u8],
    ) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(async move {
            let path = self.root.join(path);
            tokio::fs::write(&path, content)
                .await
                .map_err(|e| TransportError::Other(format!("cannot write {}: {e}", path.display())))
        })
    }

    fn connect_port<'a>(
        &'a self,
        address: &'a str,
        port: u16,
    ) -> BoxFuture<'a, Result<Box<dyn super::Stream>, TransportError>> {
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect((address, port))
                .await
                .map_err(|e| {
                    TransportError::Other(format!("cannot connect to {address}:{port}: {e}"))
                })?;
            Ok(Box::new(stream) as Box<dyn super::Stream>)
        })
    }
}
