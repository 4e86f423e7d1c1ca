//! The control socket of a running run: `<run folder>/control.sock`, a Unix socket the
//! run's process listens on, and the client `pony pause|continue|abort|approve` use.
//!
//! Why a socket rather than a watched control file: one connection is one request and
//! its answer, so the sender learns that the run took the command (applied and
//! journaled) or why not, with no polling on either side and no files to clean up; the
//! kernel says who is on the other end (the peer's uid and pid, which the journal
//! records), where a file would only say what its writer claimed; and a refused or
//! missing socket is an immediate, reliable "this run is not running".
//!
//! The protocol is one JSON line each way: a [`ControlCommand`], then a [`ControlReply`].

use crate::control::{ControlCommand, ControlReply, ControlRequest, Operator};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc::UnboundedSender;

/// The socket's name in the run folder.
pub const SOCKET: &str = "control.sock";

/// How long a request line may take to arrive, and how big it may be.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_LIMIT: u64 = 64 * 1024;

/// How long `pony pause` & co. wait for the run's answer (it comes once the command's
/// journal record is on disk).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest socket path Linux takes (`sun_path` is 108 bytes with its NUL).
const MAX_PATH: usize = 107;

/// The socket of a run folder.
pub fn socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join(SOCKET)
}

/// A listening control socket; dropping it stops listening and removes the file.
pub struct ControlSocket {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Listens on `path` and hands every command to `requests`. A socket file left by a
/// crashed process of this run is replaced (the inventory lock says no other process
/// runs it).
pub fn serve(
    path: &Path,
    requests: UnboundedSender<ControlRequest>,
) -> std::io::Result<ControlSocket> {
    if path.as_os_str().len() > MAX_PATH {
        return Err(std::io::Error::other(format!(
            "{} is longer than the {MAX_PATH} bytes a Unix socket path may have; use a shorter --state-dir",
            path.display()
        )));
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let requests = requests.clone();
            tokio::spawn(async move {
                if let Err(e) = answer(stream, requests).await {
                    tracing::warn!("control socket: {e}");
                }
            });
        }
    });
    Ok(ControlSocket {
        path: path.to_path_buf(),
        task,
    })
}

/// Reads one command, hands it to the run, writes the run's answer.
async fn answer(
    stream: UnixStream,
    requests: UnboundedSender<ControlRequest>,
) -> std::io::Result<()> {
    let credentials = stream.peer_cred()?;
    let operator = Operator {
        user: user_name(credentials.uid()),
        host: crate::process::hostname(),
        pid: credentials.pid().unwrap_or_default() as u32,
    };
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(read.take(REQUEST_LIMIT));
    tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::other("no request within 10s"))??;
    let reply = match serde_json::from_str::<ControlCommand>(line.trim()) {
        Err(e) => ControlReply {
            accepted: false,
            message: format!("not a control command: {e}"),
        },
        Ok(command) => {
            let (reply, answered) = tokio::sync::oneshot::channel();
            let sent = requests.send(ControlRequest {
                command,
                operator,
                reply,
            });
            let ended = || ControlReply {
                accepted: false,
                message: "the run is ending and takes no more commands".into(),
            };
            match sent {
                Ok(()) => answered.await.unwrap_or_else(|_| ended()),
                Err(_) => ended(),
            }
        }
    };
    let mut text = serde_json::to_string(&reply).expect("serializes");
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    write.shutdown().await
}

/// The name of a uid, as the journal records who sent a command.
fn user_name(uid: u32) -> String {
    crate::sys::user_name(uid).unwrap_or_else(|| format!("uid {uid}"))
}

/// Why a command did not reach a run.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No process listens on the run's socket: the run is not running.
    #[error("{0}")]
    NotRunning(std::io::Error),
    /// The run is running, but this user may not talk to it: the socket (or its folder)
    /// is not writable for it. Not "not running": the run goes on.
    #[error("permission denied: the run is owned by {owner}")]
    PermissionDenied { owner: String },
    /// Connected, but no answer came.
    #[error("the run did not answer: {0}")]
    NoAnswer(std::io::Error),
}

/// What a failed connect means: no permission (the socket, or its folder, belongs to
/// another user) is not "not running".
fn connect_error(run_dir: &Path, error: std::io::Error) -> SendError {
    use std::os::unix::fs::MetadataExt;
    if error.kind() != std::io::ErrorKind::PermissionDenied {
        return SendError::NotRunning(error);
    }
    let owner = std::fs::metadata(socket_path(run_dir))
        .or_else(|_| std::fs::metadata(run_dir))
        .map(|m| user_name(m.uid()))
        .unwrap_or_else(|_| "another user".to_string());
    SendError::PermissionDenied { owner }
}

/// Sends one command to the run whose folder is `run_dir` and returns its answer.
pub fn send(run_dir: &Path, command: &ControlCommand) -> Result<ControlReply, SendError> {
    let path = socket_path(run_dir);
    let mut stream =
        std::os::unix::net::UnixStream::connect(&path).map_err(|e| connect_error(run_dir, e))?;
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .map_err(SendError::NoAnswer)?;
    let mut line = serde_json::to_string(command).expect("serializes");
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .map_err(SendError::NoAnswer)?;
    let mut answer = String::new();
    std::io::BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(SendError::NoAnswer)?;
    serde_json::from_str(answer.trim()).map_err(|e| {
        SendError::NoAnswer(std::io::Error::other(format!(
            "unreadable answer {answer:?}: {e}"
        )))
    })
}

#[cfg(test)]
mod permission_tests {
    use super::*;

    #[test]
    fn a_refused_connect_is_permission_denied_naming_the_owner_not_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let denied = std::io::Error::from_raw_os_error(libc::EACCES);
        let error = connect_error(dir.path(), denied);
        let owner = user_name(crate::sys::euid());
        assert!(
            matches!(&error, SendError::PermissionDenied { owner: o } if *o == owner),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!("permission denied: the run is owned by {owner}")
        );
        let refused = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert!(matches!(
            connect_error(dir.path(), refused),
            SendError::NotRunning(_)
        ));
    }
}
