//! Opening a host's connection: the one way `deploy` (through the host pool), `ping` and
//! `exec` do it, and the one reading of ssh's error messages they share.
//!
//! [`Connector`] owns the handshake gates (at most `handshakes` connections being opened at
//! once per sshd that sees the handshakes: the first jump host, else the destination, so
//! that its MaxStartups never drops us), the per-host connect timeout and retries from the
//! inventory's `ssh:` settings, and the honest count of attempts made. [`Reason`] classifies
//! a failure from ssh's own words; [`retryable`] is built on it so that what ping calls
//! "host key" is exactly what a deploy does not retry.

use super::local::LocalConnection;
use super::ssh::{SshConnection, SshOptions};
use super::{Connection, TransportError};
use crate::inventory::{ConnectionKind, Host};
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Connections being opened at once per sshd when nothing else says (`strategy.handshakes`
/// defaults to the same).
pub const HANDSHAKES: usize = 16;
/// One connection attempt's limit without `ssh: { connect_timeout }`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts after a failed first one without `ssh: { connect_retries }`.
pub const CONNECT_RETRIES: u32 = 3;
/// Wait before the first retry; doubled before each further one.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// Why a host could not be reached, from the transport's error text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The server refused our keys or password (`Permission denied`).
    Auth,
    /// The host key is unknown or changed (`Host key verification failed`).
    HostKey,
    /// No answer in time: no TCP connection or no SSH banner (a hung or firewalled host).
    Timeout,
    /// Nothing listens there (`Connection refused`): sshd or the host is down.
    Refused,
    /// The name does not resolve.
    Dns,
    /// No route to the host or its network.
    Network,
    Other,
}

impl Reason {
    pub fn classify(error: &str) -> Reason {
        let e = error.to_ascii_lowercase();
        if e.contains("host key verification failed")
            || e.contains("remote host identification has changed")
            || e.contains("host key for")
            || e.contains("no matching host key")
        {
            Reason::HostKey
        } else if e.contains("permission denied")
            || e.contains("too many authentication failures")
            || e.contains("authentication failed")
        {
            Reason::Auth
        } else if e.contains("timed out") || e.contains("timeout") {
            Reason::Timeout
        } else if e.contains("connection refused") {
            Reason::Refused
        } else if e.contains("could not resolve hostname")
            || e.contains("name or service not known")
            || e.contains("temporary failure in name resolution")
        {
            Reason::Dns
        } else if e.contains("no route to host") || e.contains("network is unreachable") {
            Reason::Network
        } else {
            Reason::Other
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Reason::Auth => "auth",
            Reason::HostKey => "host key",
            Reason::Timeout => "timeout",
            Reason::Refused => "refused",
            Reason::Dns => "dns",
            Reason::Network => "network",
            Reason::Other => "other",
        }
    }
}

/// Host-key and authentication failures need a person; every other connection failure
/// may be transient.
pub fn retryable(error: &TransportError) -> bool {
    matches!(error, TransportError::Connect(_))
        && !matches!(
            Reason::classify(&error.to_string()),
            Reason::HostKey | Reason::Auth
        )
}

/// The sshd that sees a host's handshake, as `host:port`: its first jump host
/// (`[user@]host[:port]`, the user dropped and port 22 made explicit, so that two spellings
/// of one bastion share its gate), else the destination itself (so a bastion that is also
/// a host in the inventory has one gate). `jump: none` is no jump.
pub fn handshake_key(host: &Host) -> String {
    match host.ssh.jumps() {
        Some(jumps) => {
            let first = jumps[0];
            let first = first.rsplit_once('@').map(|(_, h)| h).unwrap_or(first);
            if first.contains(':') {
                first.to_string()
            } else {
                format!("{first}:22")
            }
        }
        None => format!("{}:{}", host.destination(), host.ssh.port.unwrap_or(22)),
    }
}

/// What opens one connection attempt in place of ssh and `sh` (a simulation's hosts):
/// behind the same handshake gates, timeouts and retries.
pub trait Opener: Send + Sync {
    fn open<'a>(
        &'a self,
        host: &'a Host,
        connect_timeout: Duration,
    ) -> super::BoxFuture<'a, Result<Arc<dyn Connection>, TransportError>>;
}

/// Opens hosts' connections: ssh masters behind their handshake gate, with the host's
/// connect timeout and retries, or local hosts' directories under `local_root`.
pub struct Connector {
    /// Replaces ssh and local connections (every host goes through the gates).
    opener: Option<Arc<dyn Opener>>,
    ssh: SshOptions,
    local_root: PathBuf,
    gates: HashMap<String, Arc<Semaphore>>,
    /// Replaces every host's `connect_timeout` (ping's `--timeout`).
    timeout_override: Option<Duration>,
    /// Replaces every host's `connect_retries` (ping measures one attempt).
    retries_override: Option<u32>,
}

impl Connector {
    /// A connector for `hosts` (the gates are made here, one per sshd, `handshakes` each).
    /// Sweeps control sockets that dead runs left behind.
    pub fn new<'a>(
        ssh: SshOptions,
        local_root: PathBuf,
        hosts: impl IntoIterator<Item = &'a Host>,
        handshakes: usize,
    ) -> Self {
        let mut gates = HashMap::new();
        for host in hosts {
            if host.connection == ConnectionKind::Ssh {
                gates
                    .entry(handshake_key(host))
                    .or_insert_with(|| Arc::new(Semaphore::new(handshakes.max(1))));
            }
        }
        super::ssh::sweep_stale_control_dirs(&ssh.control_dir);
        Connector {
            opener: None,
            ssh,
            local_root,
            gates,
            timeout_override: None,
            retries_override: None,
        }
    }

    /// A connector whose every attempt is `opener`'s: no ssh, no file is touched (a
    /// simulation). Gates, timeouts and retries are the hosts' own.
    pub fn with_opener<'a>(
        opener: Arc<dyn Opener>,
        hosts: impl IntoIterator<Item = &'a Host>,
        handshakes: usize,
    ) -> Self {
        let mut gates = HashMap::new();
        for host in hosts {
            gates
                .entry(handshake_key(host))
                .or_insert_with(|| Arc::new(Semaphore::new(handshakes.max(1))));
        }
        Connector {
            opener: Some(opener),
            ssh: SshOptions::new(std::path::Path::new("/nonexistent"), false),
            local_root: PathBuf::new(),
            gates,
            timeout_override: None,
            retries_override: None,
        }
    }

    /// Every host gets this connect timeout instead of its own.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.timeout_override = Some(timeout);
        self
    }

    /// Every host gets this many retries instead of its own.
    pub fn with_connect_retries(mut self, retries: u32) -> Self {
        self.retries_override = Some(retries);
        self
    }

    /// Whether `host`'s connections run a chain of tasks in one round trip (ssh; not a
    /// local host's `sh`, nor a simulated or recorded one).
    pub fn runs_chains(&self, host: &Host) -> bool {
        self.opener.is_none() && host.connection == ConnectionKind::Ssh
    }

    /// The limit of one connection attempt to `host`.
    pub fn connect_timeout(&self, host: &Host) -> Duration {
        self.timeout_override
            .or(host.ssh.connect_timeout)
            .unwrap_or(CONNECT_TIMEOUT)
    }

    fn connect_retries(&self, host: &Host) -> u32 {
        self.retries_override
            .or(host.ssh.connect_retries)
            .unwrap_or(CONNECT_RETRIES)
    }

    /// Opens `host`'s connection, retrying transient failures with backoff. A failure
    /// that ends the attempts is [`TransportError::Unreachable`] with the number made.
    pub async fn open(&self, host: &Host) -> Result<Arc<dyn Connection>, TransportError> {
        if host.connection == ConnectionKind::Local && self.opener.is_none() {
            return LocalConnection::open(self.local_root.join(&host.name))
                .map(|c| Arc::new(c) as Arc<dyn Connection>);
        }
        let attempts = self.connect_retries(host) + 1;
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            match self.attempt(host).await {
                Ok(connection) => return Ok(connection),
                Err(e) if attempt < attempts && retryable(&e) => {
                    tracing::info!(host = %host.name, attempt, "connect failed, retrying in {backoff:?}: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
                Err(TransportError::Connect(error)) => {
                    return Err(TransportError::Unreachable {
                        attempts: attempt,
                        error,
                    })
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One attempt, holding the host's handshake gate while it lasts (not while waiting
    /// to retry).
    async fn attempt(&self, host: &Host) -> Result<Arc<dyn Connection>, TransportError> {
        let gate = self
            .gates
            .get(&handshake_key(host))
            .cloned()
            .ok_or_else(|| {
                TransportError::Other(format!("no handshake gate for host {}", host.name))
            })?;
        let _permit = gate
            .acquire_owned()
            .await
            .map_err(|e| TransportError::Other(e.to_string()))?;
        let limit = self.connect_timeout(host);
        if let Some(opener) = &self.opener {
            return opener.open(host, limit).await;
        }
        // ssh's ConnectTimeout holds per hop; this backstop covers an ssh that hangs
        // elsewhere (a jump chain, a stuck proxy).
        let hops = host.ssh.jumps().map(|j| j.len()).unwrap_or(0) as u32;
        let backstop = limit * (hops + 1) + Duration::from_secs(2);
        match tokio::time::timeout(backstop, SshConnection::open(host, &self.ssh, limit)).await {
            Ok(opened) => opened.map(|c| Arc::new(c) as Arc<dyn Connection>),
            Err(_) => Err(TransportError::Connect(format!(
                "no answer within {} (connect timed out)",
                humantime::format_duration(backstop)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Options whose control dir does not exist: building a connector sweeps nothing.
    fn ssh_options() -> SshOptions {
        let mut ssh = SshOptions::new(Path::new("/nonexistent-state"), false);
        ssh.control_dir = PathBuf::from("/nonexistent-pony-control-dir");
        ssh
    }

    fn inventory(text: &str) -> crate::inventory::Inventory {
        crate::inventory::parse(Path::new("inv.yaml"), text).unwrap()
    }

    #[test]
    fn ssh_errors_are_classified() {
        let cases = [
            ("cannot connect: ssh: connect to host 127.0.0.5 port 2222: Connection refused", Reason::Refused),
            ("Connection timed out during banner exchange", Reason::Timeout),
            ("deploy@127.0.0.2: Permission denied (publickey).", Reason::Auth),
            ("No ED25519 host key is known for [127.0.0.2]:2222 and you have requested strict checking.\nHost key verification failed.", Reason::HostKey),
            ("@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@", Reason::HostKey),
            ("ssh: Could not resolve hostname nowhere: Name or service not known", Reason::Dns),
            ("ssh: connect to host 10.9.9.9 port 22: No route to host", Reason::Network),
            ("kex_exchange_identification: Connection closed by remote host", Reason::Other),
        ];
        for (text, reason) in cases {
            assert_eq!(Reason::classify(text), reason, "{text}");
        }
    }

    #[test]
    fn host_key_and_auth_failures_are_not_retried() {
        let connect = |s: &str| TransportError::Connect(s.to_string());
        assert!(!retryable(&connect("Host key verification failed.")));
        assert!(!retryable(&connect(
            "WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!"
        )));
        assert!(!retryable(&connect(
            "deploy@h: Permission denied (publickey)."
        )));
        assert!(retryable(&connect(
            "Connection timed out during banner exchange"
        )));
        assert!(retryable(&connect(
            "connect to host h port 22: Connection refused"
        )));
        assert!(!retryable(&TransportError::Other("sftp".into())));
    }

    #[test]
    fn jump_none_is_no_jump_and_each_direct_sshd_has_its_own_gate() {
        let inv = inventory(
            r#"
name: t
defaults:
  ssh: { jump: bastion.eu }
regions:
  eu:
    clusters:
      mx:
        hosts:
          a: { address: 10.0.0.1, ssh: { jump: none } }
          b: { address: 10.0.0.2, ssh: { jump: none } }
          c: { address: 10.0.0.3, ssh: { jump: "deploy@bastion.eu" } }
          d: { address: 10.0.0.4, ssh: { jump: "bastion.eu:22,inner" } }
          e: { address: 10.0.0.5 }
          bastion: { address: bastion.eu, ssh: { jump: none } }
"#,
        );
        let key = |name: &str| handshake_key(&inv.hosts[inv.host_id(name).unwrap()]);
        assert_eq!(key("a"), "10.0.0.1:22");
        assert_eq!(key("b"), "10.0.0.2:22");
        assert_ne!(key("a"), key("b"), "two sshds, two gates");
        // One bastion however it is spelled: one gate.
        assert_eq!(key("c"), "bastion.eu:22");
        assert_eq!(key("d"), key("c"));
        assert_eq!(key("e"), key("c"));
        assert_eq!(
            key("bastion"),
            key("c"),
            "the bastion's own handshakes hit its sshd"
        );
        let connector = Connector::new(ssh_options(), PathBuf::new(), &inv.hosts, 4);
        assert_eq!(connector.gates.len(), 3, "{:?}", connector.gates.keys());
    }

    #[test]
    fn connect_settings_come_from_the_inventory_unless_overridden() {
        let inv = inventory(
            r#"
name: t
defaults:
  ssh: { connect_timeout: 7s }
regions:
  eu:
    ssh: { connect_retries: 1 }
    clusters:
      mx:
        hosts:
          a: { ssh: { connect_timeout: 2s } }
          b:
"#,
        );
        let a = &inv.hosts[inv.host_id("a").unwrap()];
        let b = &inv.hosts[inv.host_id("b").unwrap()];
        let ssh = ssh_options();
        let connector = Connector::new(ssh.clone(), PathBuf::new(), &inv.hosts, 4);
        assert_eq!(connector.connect_timeout(a), Duration::from_secs(2));
        assert_eq!(connector.connect_timeout(b), Duration::from_secs(7));
        assert_eq!(connector.connect_retries(a), 1);
        let ping = Connector::new(ssh, PathBuf::new(), &inv.hosts, 4)
            .with_connect_timeout(Duration::from_secs(5))
            .with_connect_retries(0);
        assert_eq!(ping.connect_timeout(a), Duration::from_secs(5));
        assert_eq!(ping.connect_retries(b), 0);
    }
}
