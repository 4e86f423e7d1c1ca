//! The SSH transport: the system OpenSSH client through the openssh crate with native
//! multiplexing. One master per host, opened on the host's first task and closed when the
//! host is done; every command is a channel on it, file writes go over SFTP on it.
//! Host keys are checked strictly unless new keys are explicitly accepted.

use super::shell::RemoteShell;
use super::{with_remote_timeout, BoxFuture, CommandOutput, Connection, TransportError};
use crate::inventory::{Host, SshSettings};
use openssh::{ForwardType, KnownHosts, Session, SessionBuilder, Socket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Client settings that hold for every host of a run.
#[derive(Debug, Clone)]
pub struct SshOptions {
    pub accept_new_host_keys: bool,
    pub connect_timeout: Duration,
    pub keepalive: Duration,
    /// Short directory for control sockets (unix socket paths are limited to ~100 bytes).
    pub control_dir: PathBuf,
    /// Generated configs for hosts with extra `options:`.
    pub config_dir: PathBuf,
}

impl SshOptions {
    pub fn new(state_dir: &Path, accept_new_host_keys: bool) -> Self {
        // Each master makes a directory, a socket and a log: on tmpfs that is cheaper
        // than on a disk file system, and the socket path stays short.
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|dir| dir.is_dir())
            .or_else(|| Some(PathBuf::from("/dev/shm")).filter(|dir| dir.is_dir()))
            .unwrap_or_else(std::env::temp_dir);
        let control_dir = base.join(format!("pony-ssh-{}", unsafe { libc::getuid() }));
        SshOptions {
            accept_new_host_keys,
            connect_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(15),
            control_dir,
            config_dir: state_dir.join("ssh"),
        }
    }
}

pub struct SshConnection {
    session: Arc<Session>,
    sftp: tokio::sync::OnceCell<openssh_sftp_client::Sftp>,
    /// Idle persistent shells; a task takes one (or opens one) and gives it back.
    shells: std::sync::Mutex<Vec<RemoteShell>>,
}

impl SshConnection {
    /// Opens the host's master connection.
    pub async fn open(host: &Host, options: &SshOptions) -> Result<Self, TransportError> {
        let builder = builder(&host.name, &host.ssh, options)?;
        let session = builder
            .connect_mux(host.destination())
            .await
            .map_err(|e| TransportError::Connect(describe(&e)))?;
        Ok(SshConnection {
            session: Arc::new(session),
            sftp: tokio::sync::OnceCell::new(),
            shells: std::sync::Mutex::new(Vec::new()),
        })
    }
}

/// The builder for one host's settings.
pub fn builder(
    host_name: &str,
    ssh: &SshSettings,
    options: &SshOptions,
) -> Result<SessionBuilder, TransportError> {
    let mut builder = SessionBuilder::default();
    builder
        .known_hosts_check(if options.accept_new_host_keys {
            KnownHosts::Accept
        } else {
            KnownHosts::Strict
        })
        .connect_timeout(options.connect_timeout)
        .server_alive_interval(options.keepalive);
    std::fs::create_dir_all(&options.control_dir).map_err(|e| {
        TransportError::Other(format!(
            "cannot create {}: {e}",
            options.control_dir.display()
        ))
    })?;
    builder.control_directory(&options.control_dir);
    if let Some(user) = &ssh.user {
        builder.user(user.clone());
    }
    if let Some(port) = ssh.port {
        builder.port(port);
    }
    if let Some(key) = &ssh.identity_file {
        builder.keyfile(expand_home(key));
    }
    if let Some(jump) = &ssh.jump {
        builder.jump_hosts(jump.split(',').map(str::trim));
    }
    match (&ssh.config_file, ssh.options.is_empty()) {
        (config, true) => {
            if let Some(config) = config {
                builder.config_file(expand_home(config));
            }
        }
        (config, false) => {
            // ssh_config takes the first value it sees: our options, then the user's file.
            std::fs::create_dir_all(&options.config_dir)
                .map_err(|e| TransportError::Other(e.to_string()))?;
            let path = options.config_dir.join(format!("{host_name}.config"));
            let mut text = String::from("Host *\n");
            for (key, value) in &ssh.options {
                text.push_str(&format!("  {key} {value}\n"));
            }
            let include = config
                .as_deref()
                .map(expand_home)
                .unwrap_or_else(|| expand_home("~/.ssh/config"));
            if include.exists() {
                text.push_str(&format!("Include {}\n", include.display()));
            }
            std::fs::write(&path, text).map_err(|e| TransportError::Other(e.to_string()))?;
            builder.config_file(path);
        }
    }
    Ok(builder)
}

fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(path),
    }
}

/// The whole error chain: the openssh crate puts ssh's own message in the source.
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

impl Connection for SshConnection {
    fn run<'a>(
        &'a self,
        command: &'a str,
        timeout: Option<Duration>,
    ) -> BoxFuture<'a, Result<CommandOutput, TransportError>> {
        Box::pin(async move {
            let remote = with_remote_timeout(command, timeout);
            let idle = self.shells.lock().expect("not poisoned").pop();
            let session = self.session.clone();
            let work = async move {
                let mut shell = match idle {
                    Some(shell) => shell,
                    None => RemoteShell::open(session).await?,
                };
                let output = shell.run(&remote).await?;
                Ok::<_, TransportError>((shell, output))
            };
            // The remote `timeout` kills the command; this backstop covers a hung host
            // (the shell is then dropped, closing its channel).
            let (shell, output) = match timeout {
                None => work.await?,
                Some(limit) => {
                    match tokio::time::timeout(limit + Duration::from_secs(3), work).await {
                        Ok(result) => result?,
                        Err(_) => return Err(TransportError::Timeout(limit)),
                    }
                }
            };
            self.shells.lock().expect("not poisoned").push(shell);
            // `timeout` exits 124 (or 137 after -k) when it had to kill the command.
            if timeout.is_some() && matches!(output.exit_code, Some(124) | Some(137)) {
                return Err(TransportError::Timeout(timeout.unwrap_or_default()));
            }
            Ok(output)
        })
    }

    fn write_file<'a>(
        &'a self,
        path: &'a str,
        content: &'a [u8],
    ) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(async move {
            let sftp = self
                .sftp
                .get_or_try_init(|| {
                    openssh_sftp_client::Sftp::from_clonable_session(
                        self.session.clone(),
                        Default::default(),
                    )
                })
                .await
                .map_err(|e| TransportError::Disconnected(format!("sftp: {}", describe(&e))))?;
            sftp.fs()
                .write(path, content)
                .await
                .map_err(|e| TransportError::Other(format!("sftp write {path}: {}", describe(&e))))
        })
    }

    fn connect_port(
        &self,
        port: u16,
    ) -> BoxFuture<'_, Result<Box<dyn super::Stream>, TransportError>> {
        Box::pin(async move {
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = self
                .session
                .control_socket()
                .parent()
                .unwrap_or(Path::new("/tmp"))
                .to_path_buf();
            let path = dir.join(format!("fwd-{n}.sock"));
            let listen = Socket::UnixSocket {
                path: path.clone().into(),
            };
            let target = Socket::TcpSocket {
                host: "127.0.0.1".into(),
                port,
            };
            self.session
                .request_port_forward(ForwardType::Local, listen, target)
                .await
                .map_err(|e| {
                    TransportError::Disconnected(format!(
                        "port forward to {port}: {}",
                        describe(&e)
                    ))
                })?;
            let stream = tokio::net::UnixStream::connect(&path).await;
            // The forward only has to exist while the channel opens.
            let listen = Socket::UnixSocket {
                path: path.clone().into(),
            };
            let target = Socket::TcpSocket {
                host: "127.0.0.1".into(),
                port,
            };
            let _ = self
                .session
                .close_port_forward(ForwardType::Local, listen, target)
                .await;
            let _ = std::fs::remove_file(&path);
            let stream = stream
                .map_err(|e| TransportError::Other(format!("port forward to {port}: {e}")))?;
            Ok(Box::new(stream) as Box<dyn super::Stream>)
        })
    }
}
