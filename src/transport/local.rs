//! The local transport: `sh` on the controller in `<state dir>/hosts/<host>`, so that
//! relative paths give each local host its own sandbox. The command goes to `sh` on its
//! stdin, never as an argument: the controller's process list never shows it. It runs
//! with the environment an SSH login would give it ([`crate::secret::local_host_env`]),
//! not the controller's.

use super::{BoxFuture, CommandOutput, Connection, TransportError};
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

impl Connection for LocalConnection {
    fn run<'a>(
        &'a self,
        command: &'a str,
        timeout: Option<Duration>,
    ) -> BoxFuture<'a, Result<CommandOutput, TransportError>> {
        Box::pin(async move {
            let mut child = tokio::process::Command::new("sh")
                .arg("-s")
                // A login environment, not pony's (which may hold PONY_STATE's password
                // or a --secret-var's source).
                .env_clear()
                .envs(crate::secret::local_host_env())
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
            let script = format!("{}\n", super::script_line(command));
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
                            unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
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
