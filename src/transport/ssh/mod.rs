//! The SSH transport: the system OpenSSH client through the openssh crate with native
//! multiplexing. One master per host, opened on the host's first task and closed when the
//! host is done; every command is a channel on it, file writes go over SFTP on it.
//! Host keys are checked strictly; `--accept-new-host-keys` is ssh's `accept-new`: an
//! unknown key is accepted and recorded in known_hosts, a changed key is still refused.
//!
//! No ssh master outlives pony, however pony ends (even SIGKILL, which runs no cleanup in
//! pony), by more than moments, or `control_persist` (30 s by default) at worst:
//! - a watchdog (`sh`, in its own process group so a terminal's Ctrl-C does not reach it)
//!   blocks reading a pipe only pony writes to; when pony is gone, however, the pipe
//!   closes and the watchdog sends `ssh -O exit` to every master pony opened (each
//!   master's control directory names its pony in `pony.pid`). This also ends masters
//!   whose remote command is still running, which ControlPersist alone would keep;
//! - masters run with a bounded `ControlPersist`: one pony never got to name (it died
//!   during the handshake) exits once it has had no mux client for that long. While pony
//!   holds a connection it holds one mux client on it (the tether), so a long task or a
//!   host idle between waves keeps its master.
//!
//! Control sockets live in one directory per user; a master's directory that a dead run
//! left behind is swept when the next run starts ([`sweep_stale_control_dirs`]).

use super::chain::{ChainFrame, ChainLink};
use super::shell::RemoteShell;
use super::{
    describe, kill_command, kill_outcome, marked_command, with_remote_timeout, BoxFuture,
    CommandOutput, Connection, KillOutcome, TaskMark, TransportError, Wrapper, KILL_TIMEOUT,
};
use crate::inventory::{Host, SshSettings};
use openssh::{ControlPersist, ForwardType, KnownHosts, Session, SessionBuilder, Socket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long a master outlives its last mux client without `ssh: { control_persist }`.
pub const CONTROL_PERSIST: Duration = Duration::from_secs(30);

/// Client settings that hold for every host of a run.
#[derive(Debug, Clone)]
pub struct SshOptions {
    pub accept_new_host_keys: bool,
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
        // SAFETY: getuid has no preconditions and cannot fail.
        let control_dir = base.join(format!("pony-ssh-{}", crate::sys::uid()));
        SshOptions {
            accept_new_host_keys,
            keepalive: Duration::from_secs(15),
            control_dir,
            config_dir: state_dir.join("ssh"),
        }
    }
}

/// Why the control directory cannot be used: a folder pony did not make for this user
/// alone could hold a socket planted by someone else, which ssh would then use as the
/// host's master (commands, file contents and secrets would go to whoever planted it).
#[derive(Debug, thiserror::Error)]
#[error("the SSH control directory {} {problem}\n  hint: {fix}", path.display())]
pub struct ControlDirError {
    pub path: PathBuf,
    /// What is wrong with it, e.g. `is a symbolic link`.
    pub problem: String,
    /// What the user does about it.
    pub fix: String,
}

impl SshOptions {
    /// Makes the control directory for this user alone (mode 0700), or checks that the
    /// one there is such a folder: a real directory (a symbolic link is never followed),
    /// owned by this user, that neither its group nor others can write. Anything else is
    /// refused, since sockets in it would be trusted as this user's ssh masters. The
    /// base (`$XDG_RUNTIME_DIR`, else `/dev/shm`, else the temp dir) is sticky or private,
    /// so no one else can swap the folder once it is checked.
    pub fn secure_control_dir(&self) -> Result<(), ControlDirError> {
        secure_dir(&self.control_dir)
    }
}

fn secure_dir(path: &Path) -> Result<(), ControlDirError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let refuse = |problem: String, fix: String| ControlDirError {
        path: path.to_path_buf(),
        problem,
        fix,
    };
    let replace = |path: &Path| {
        format!(
            "remove it (`rm -rf {}`, as its owner or root) and pony makes a private one, \
             or set XDG_RUNTIME_DIR to a directory only you can write",
            path.display()
        )
    };
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // `create`, not `create_dir_all`: the base exists, and a folder that someone
            // made in between is checked below like any other.
            match std::fs::DirBuilder::new().mode(0o700).create(path) {
                Ok(()) => {
                    // The umask may take bits off 0700, never add any; make it exact.
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
                        .map_err(|e| {
                            refuse(format!("cannot be made private: {e}"), replace(path))
                        })?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(refuse(
                        format!("cannot be created: {e}"),
                        "set XDG_RUNTIME_DIR to a directory you can write".into(),
                    ))
                }
            }
            std::fs::symlink_metadata(path)
                .map_err(|e| refuse(format!("cannot be read: {e}"), replace(path)))?
        }
        Err(e) => return Err(refuse(format!("cannot be read: {e}"), replace(path))),
    };
    if metadata.file_type().is_symlink() {
        return Err(refuse(
            "is a symbolic link (pony never follows one there)".into(),
            replace(path),
        ));
    }
    if !metadata.is_dir() {
        return Err(refuse("is not a directory".into(), replace(path)));
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    let me = crate::sys::uid();
    if metadata.uid() != me {
        return Err(refuse(
            format!("is owned by uid {}, not by you (uid {me})", metadata.uid()),
            replace(path),
        ));
    }
    let mode = metadata.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(refuse(
            format!("can be written by its group or others (mode {mode:04o}, want 0700)"),
            replace(path),
        ));
    }
    Ok(())
}

pub struct SshConnection {
    session: Arc<Session>,
    /// A mux client held open for as long as pony holds the connection: the master never
    /// counts as idle before pony lets go of it (or dies).
    _tether: std::sync::Mutex<openssh_mux_client::Connection>,
    sftp: tokio::sync::OnceCell<openssh_sftp_client::Sftp>,
    /// Idle persistent shells; a task takes one (or opens one) and gives it back.
    shells: std::sync::Mutex<Vec<RemoteShell>>,
}

impl SshConnection {
    /// Opens the host's master connection; one attempt of at most `connect_timeout`.
    pub async fn open(
        host: &Host,
        options: &SshOptions,
        connect_timeout: Duration,
    ) -> Result<Self, TransportError> {
        // The builder checks the control folder and may write an ssh_config file: on the
        // blocking pool, not on the thread of the run's loop.
        let (name, ssh, settings) = (host.name.clone(), host.ssh.clone(), options.clone());
        let mut builder = blocking(move || builder(&name, &ssh, &settings)).await?;
        builder.connect_timeout(connect_timeout);
        let session = builder
            .connect_mux(host.destination())
            .await
            .map_err(|e| TransportError::Connect(describe(&e)))?;
        let owner_file = session
            .control_socket()
            .parent()
            .map(|d| d.join(OWNER_FILE));
        let control_dir = options.control_dir.clone();
        blocking(move || {
            if let Some(owner_file) = owner_file {
                // Names the master for the watchdog, and lets the next run tell this
                // directory from a live one once pony is gone.
                let _ = std::fs::write(owner_file, std::process::id().to_string());
            }
            start_watchdog(&control_dir);
            Ok(())
        })
        .await?;
        let mut tether = openssh_mux_client::Connection::connect(session.control_socket())
            .await
            .map_err(|e| TransportError::Connect(format!("control socket: {}", describe(&e))))?;
        tether
            .send_alive_check()
            .await
            .map_err(|e| TransportError::Connect(format!("control socket: {}", describe(&e))))?;
        Ok(SshConnection {
            session: Arc::new(session),
            _tether: std::sync::Mutex::new(tether),
            sftp: tokio::sync::OnceCell::new(),
            shells: std::sync::Mutex::new(Vec::new()),
        })
    }
}

/// Runs file work of an open on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, TransportError> + Send + 'static,
) -> Result<T, TransportError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| TransportError::Other(format!("opening the connection failed: {e}")))?
}

/// The builder for one host's settings.
pub fn builder(
    host_name: &str,
    ssh: &SshSettings,
    options: &SshOptions,
) -> Result<SessionBuilder, TransportError> {
    let mut builder = SessionBuilder::default();
    let persist = ssh.control_persist.unwrap_or(CONTROL_PERSIST).as_secs();
    builder
        .known_hosts_check(known_hosts_check(options.accept_new_host_keys))
        .control_persist(ControlPersist::IdleFor(
            std::num::NonZeroUsize::new(persist as usize).unwrap_or(std::num::NonZeroUsize::MIN),
        ))
        .server_alive_interval(options.keepalive);
    options
        .secure_control_dir()
        .map_err(|e| TransportError::Other(e.to_string()))?;
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
    match ssh.jumps() {
        Some(jumps) => {
            builder.jump_hosts(jumps);
        }
        // `-J none` also turns off a ProxyJump that ssh_config would add.
        None if ssh.jump.is_some() => {
            builder.jump_hosts(["none"]);
        }
        None => {}
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

/// `accept-new` with the flag: `Accept` (ssh's `StrictHostKeyChecking=no`) would also let
/// a changed key through, which is what a man in the middle looks like.
pub fn known_hosts_check(accept_new_host_keys: bool) -> KnownHosts {
    if accept_new_host_keys {
        KnownHosts::Add
    } else {
        KnownHosts::Strict
    }
}

/// The file in a master's control directory that names the pony process that opened it.
const OWNER_FILE: &str = "pony.pid";

/// Starts this process's watchdog once (see the module doc): when this process ends, it
/// tells every master in `control_dir` that this process opened to exit.
fn start_watchdog(control_dir: &Path) {
    use std::os::unix::process::CommandExt;
    // The write end of the watchdog's stdin, never closed while pony lives: the kernel
    // closes it when pony ends. Not inherited by other children (std opens it CLOEXEC).
    static PIPE: std::sync::OnceLock<Option<std::process::ChildStdin>> = std::sync::OnceLock::new();
    PIPE.get_or_init(|| {
        const SCRIPT: &str = r#"trap '' INT HUP TERM
read _ignored
for dir in "$1"/.ssh-connection*; do
  [ "$(cat "$dir/pony.pid" 2>/dev/null)" = "$2" ] || continue
  ssh -o BatchMode=yes -S "$dir/master" -O exit pony-watchdog >/dev/null 2>&1
done"#;
        let spawned = std::process::Command::new("sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg("pony-ssh-watchdog")
            .arg(control_dir)
            .arg(std::process::id().to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn();
        match spawned {
            Ok(mut child) => child.stdin.take(),
            Err(e) => {
                tracing::warn!(
                    "cannot start the ssh watchdog (masters will end after ControlPersist): {e}"
                );
                None
            }
        }
    });
}

/// Removes the per-master directories (`.ssh-connection*`) in `control_dir` that a dead
/// run left behind: no live master answers on its socket, and the pony that opened it is
/// gone (or, when it never got as far as saying who it is, the directory is older than
/// any handshake takes). Live masters and handshakes in progress (another pony running
/// now) are left alone.
pub fn sweep_stale_control_dirs(control_dir: &Path) {
    const UNOWNED_GRACE: Duration = Duration::from_secs(600);
    let Ok(entries) = std::fs::read_dir(control_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_master_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false)
            && entry
                .file_name()
                .to_string_lossy()
                .starts_with(".ssh-connection");
        if !is_master_dir || std::os::unix::net::UnixStream::connect(path.join("master")).is_ok() {
            continue;
        }
        let owner_gone = std::fs::read_to_string(path.join(OWNER_FILE))
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
            .map(|pid| crate::process::pid_state(pid) == crate::process::PidState::Gone);
        let stale = owner_gone.unwrap_or_else(|| {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > UNOWNED_GRACE)
        });
        if stale {
            tracing::debug!("removing stale control dir {}", path.display());
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(path),
    }
}

impl SshConnection {
    /// Runs the already wrapped `remote` on a persistent shell; `timeout` is the step's
    /// (the remote `timeout` in `remote` kills it; this adds a backstop for a hung host).
    async fn run_remote(
        &self,
        remote: String,
        timeout: Option<Duration>,
    ) -> Result<CommandOutput, TransportError> {
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
            Some(limit) => match tokio::time::timeout(limit + Duration::from_secs(3), work).await {
                Ok(result) => result?,
                Err(_) => return Err(TransportError::Timeout(limit)),
            },
        };
        self.shells.lock().expect("not poisoned").push(shell);
        // `timeout` exits 124 (or 137 after -k) when it had to kill the command.
        if timeout.is_some() && matches!(output.exit_code, Some(124) | Some(137)) {
            return Err(TransportError::Timeout(timeout.unwrap_or_default()));
        }
        Ok(output)
    }
}

impl Connection for SshConnection {
    fn run<'a>(
        &'a self,
        command: &'a str,
        timeout: Option<Duration>,
    ) -> BoxFuture<'a, Result<CommandOutput, TransportError>> {
        Box::pin(async move {
            let Some(mark) = TaskMark::current() else {
                return self
                    .run_remote(with_remote_timeout(command, timeout), timeout)
                    .await;
            };
            // A step's `timeout` runs inside the new session, on the host: when it
            // expires it kills the whole group there, even if the host hung meanwhile or
            // pony lost the connection (the backstop above only stops waiting).
            self.run_remote(
                marked_command(command, timeout, &mark, Wrapper::Alone),
                timeout,
            )
            .await
        })
    }

    fn run_chain<'a>(
        &'a self,
        links: &'a [ChainLink],
        cut: &'a str,
        frames: tokio::sync::mpsc::UnboundedSender<ChainFrame>,
    ) -> Option<BoxFuture<'a, Result<(), TransportError>>> {
        Some(Box::pin(async move {
            let idle = self.shells.lock().expect("not poisoned").pop();
            let mut shell = match idle {
                Some(shell) => shell,
                None => RemoteShell::open(self.session.clone()).await?,
            };
            // A shell whose chain was given up on (a hung link) is dropped, closing its
            // channel.
            if shell.run_chain(links, cut, &frames).await? {
                self.shells.lock().expect("not poisoned").push(shell);
            }
            Ok(())
        }))
    }

    fn kill_marked<'a>(&'a self, mark: &'a TaskMark) -> BoxFuture<'a, KillOutcome> {
        Box::pin(async move {
            kill_outcome(
                self.run_remote(kill_command(mark), Some(KILL_TIMEOUT))
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

    fn connect_port<'a>(
        &'a self,
        address: &'a str,
        port: u16,
    ) -> BoxFuture<'a, Result<Box<dyn super::Stream>, TransportError>> {
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
                host: address.to_string().into(),
                port,
            };
            self.session
                .request_port_forward(ForwardType::Local, listen, target)
                .await
                .map_err(|e| {
                    TransportError::Disconnected(format!(
                        "port forward to {address}:{port}: {}",
                        describe(&e)
                    ))
                })?;
            let stream = tokio::net::UnixStream::connect(&path).await;
            // The forward only has to exist while the channel opens.
            let listen = Socket::UnixSocket {
                path: path.clone().into(),
            };
            let target = Socket::TcpSocket {
                host: address.to_string().into(),
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

#[cfg(test)]
mod tests;
