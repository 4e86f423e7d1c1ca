//! A throwaway PostgreSQL server for tests and benchmarks: `initdb` into a folder of its
//! own, then `pg_ctl start` on `127.0.0.1` and a free port, with its unix socket in that
//! folder too, so nothing is shared with a system server.
//!
//! [`Postgres`] stops exactly the server it started (`pg_ctl stop -D` its own data folder,
//! then its postmaster pid if that did not end it) when dropped, also when a test panics.
//!
//! PostgreSQL refuses to run as root. When pony runs as root (CI containers), the data
//! folder is handed to the `postgres` system user (Debian's package creates it) and the
//! server tools run as that user through `runuser`.

use anyhow::{anyhow, bail, Context, Result};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where Debian's `postgresql` package puts the server tools, newest first.
const SERVER_BIN_DIRS: &[&str] = &[
    "/usr/lib/postgresql/17/bin",
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/15/bin",
    "/usr/lib/postgresql/14/bin",
];

const INSTALL: &str =
    "PostgreSQL server tools (initdb, pg_ctl) not found: install them with 'apt-get install -y postgresql'";

/// The unprivileged user the server runs as when pony runs as root.
const SERVER_USER: &str = "postgres";

/// How the server syncs: durable as in production (benchmarks), or not at all (tests,
/// whose server is thrown away; the journal's commit order is the same either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    Durable,
    Fast,
}

/// A running server; stopped when dropped.
#[derive(Debug)]
pub struct Postgres {
    /// Ours alone: made by [`Postgres::start`], removed when dropped.
    dir: OwnDir,
    bin: PathBuf,
    port: u16,
    as_user: Option<String>,
    /// The server's command-line settings, for [`Postgres::restart`].
    options: String,
    stopped: bool,
    /// The server's processes [`Postgres::freeze`] stopped (the postmaster first).
    frozen: Vec<u32>,
}

fn find_bin() -> Result<PathBuf> {
    SERVER_BIN_DIRS
        .iter()
        .map(PathBuf::from)
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
        .ok_or_else(|| anyhow!(INSTALL))
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
        .context("cannot find a free loopback port for PostgreSQL")?;
    Ok(listener.local_addr()?.port())
}

/// Hands `path` to `user` (root only).
fn chown(path: &Path, user: &str) -> Result<()> {
    let Some((uid, gid)) = crate::sys::user_ids(user) else {
        bail!("pony runs as root and PostgreSQL refuses to: it needs the `{user}` system user (created by 'apt-get install -y postgresql')");
    };
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .with_context(|| format!("cannot hand {} to `{user}`", path.display()))
}

/// A new folder under the system's temporary folder, removed when dropped.
#[derive(Debug)]
struct OwnDir(PathBuf);

impl OwnDir {
    fn create() -> Result<OwnDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let path =
            std::env::temp_dir().join(format!("pony-postgres-{}-{nanos:08x}", std::process::id()));
        std::fs::create_dir(&path)
            .with_context(|| format!("cannot create {} for PostgreSQL", path.display()))?;
        Ok(OwnDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for OwnDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The server's settings: loopback only, its socket in its own folder.
fn server_options(port: u16, socket_dir: &Path, fsync: &str) -> String {
    format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync={fsync} -c max_connections=200",
        socket_dir.display()
    )
}

/// A server certificate and its key (PEM) for a server that takes TLS only.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Postgres {
    /// Creates a cluster in a new temporary folder and starts it; returns once it
    /// accepts connections.
    pub fn start(sync: Sync) -> Result<Postgres> {
        Self::start_with(sync, None)
    }

    /// As [`Postgres::start`], with TLS: the server presents `tls`'s certificate and
    /// refuses TCP connections without TLS (`hostnossl … reject`).
    pub fn start_tls(sync: Sync, tls: &ServerTls) -> Result<Postgres> {
        Self::start_with(sync, Some(tls))
    }

    fn start_with(sync: Sync, tls: Option<&ServerTls>) -> Result<Postgres> {
        let bin = find_bin()?;
        let dir = OwnDir::create()?;
        // SAFETY: getuid has no preconditions.
        let as_user = (crate::sys::uid() == 0).then(|| SERVER_USER.to_string());
        if let Some(user) = &as_user {
            chown(dir.path(), user)?;
        }
        let port = free_port()?;
        let fsync = match sync {
            Sync::Durable => "on",
            Sync::Fast => "off",
        };
        let options = server_options(port, dir.path(), fsync);
        let mut server = Postgres {
            dir,
            bin,
            port,
            as_user,
            options,
            stopped: true,
            frozen: Vec::new(),
        };
        let data = server.data_dir();
        server.run(
            "initdb",
            &[
                "-D",
                data.to_str().expect("utf-8 temp path"),
                "-U",
                "pony",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-instructions",
            ],
        )?;
        if let Some(tls) = tls {
            server.take_tls_only(tls)?;
        }
        // The free port was only free when asked: a server of a parallel test may have
        // taken it since. Another port, a few times, before giving up.
        let mut attempts = 0;
        while let Err(e) = server.launch() {
            attempts += 1;
            let taken = std::fs::read_to_string(server.dir.path().join("server.log"))
                .unwrap_or_default()
                .contains("could not bind");
            if !taken || attempts == 3 {
                return Err(e);
            }
            server.port = free_port()?;
            server.options = server_options(server.port, server.dir.path(), fsync);
        }
        Ok(server)
    }

    /// Installs the certificate and lets TCP clients in over TLS only.
    fn take_tls_only(&self, tls: &ServerTls) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let data = self.data_dir();
        let write = |name: &str, text: &str, mode: u32| -> Result<()> {
            let path = data.join(name);
            std::fs::write(&path, text)
                .and_then(|_| {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                })
                .with_context(|| format!("cannot write {}", path.display()))?;
            if let Some(user) = &self.as_user {
                chown(&path, user)?;
            }
            Ok(())
        };
        write("server.crt", &tls.cert_pem, 0o644)?;
        // The server refuses a key others may read.
        write("server.key", &tls.key_pem, 0o600)?;
        write(
            "pg_hba.conf",
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
            0o600,
        )?;
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)
            .with_context(|| format!("cannot read {}", conf.display()))?;
        text.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(&conf, text).with_context(|| format!("cannot write {}", conf.display()))
    }

    /// `pg_ctl start`, waiting until the server accepts connections.
    fn launch(&mut self) -> Result<()> {
        let data = self.data_dir();
        let log = self.dir.path().join("server.log");
        self.stopped = false;
        let options = self.options.clone();
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().expect("utf-8"),
                "-l",
                log.to_str().expect("utf-8"),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
    }

    /// Starts the stopped server again, same port and data (a database that went away
    /// and came back).
    pub fn restart(&mut self) -> Result<()> {
        if !self.stopped {
            bail!("the server is running");
        }
        self.launch()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs one of the server tools (as the server user when root), failing with its output.
    fn run(&self, tool: &str, args: &[&str]) -> Result<()> {
        let program = self.bin.join(tool);
        let mut command = match &self.as_user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(user).arg("--").arg(&program);
                c
            }
            None => Command::new(&program),
        };
        let output = command
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", program.display()))?;
        if !output.status.success() {
            let log =
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            bail!(
                "{tool} failed ({}):\n{}{}\n{log}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// The connection URL (superuser `pony`, database `postgres`, trust auth on loopback).
    pub fn url(&self) -> String {
        format!("postgres://pony@127.0.0.1:{}/postgres", self.port)
    }

    /// The postmaster's pid, from its pid file.
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// Stops the server and every process of it (SIGSTOP: the postmaster and its
    /// backends, checkpointer, WAL writer…): a database that is hung, not down. It keeps
    /// its sockets, so the kernel still accepts connections and acknowledges data and
    /// keepalives; nothing answers. [`Postgres::thaw`] (or stopping it) lets it go on.
    pub fn freeze(&mut self) -> Result<()> {
        let pid = self
            .pid()
            .filter(|_| !self.stopped)
            .ok_or_else(|| anyhow!("the server is not running"))?;
        self.frozen = super::process::freeze_trees(&[pid]);
        Ok(())
    }

    /// Lets a frozen server go on where it stopped.
    pub fn thaw(&mut self) {
        if let Some(&root) = self.frozen.first() {
            super::process::thaw_trees(&[root]);
        }
        self.frozen.clear();
    }

    /// Stops the server (fast shutdown: open sessions are ended).
    pub fn stop(&mut self) -> Result<()> {
        self.thaw();
        if self.stopped {
            return Ok(());
        }
        let pid = self.pid();
        let data = self.data_dir();
        let stopped = self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().expect("utf-8"),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
        if stopped.is_err() {
            // Only the postmaster this server wrote into its own pid file.
            if let Some(pid) = pid {
                super::process::signal(pid, libc::SIGQUIT);
            }
        }
        self.stopped = true;
        stopped
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("stopping the test PostgreSQL server: {e:#}");
        }
    }
}
