//! A lab fleet: real OpenSSH `sshd` servers on distinct loopback addresses, one process per
//! host, for integration tests and for `pony lab up|down`.
//!
//! This module owns everything under the fleet's folder ([`FleetOptions::dir`]):
//!
//! | path | what |
//! |------|------|
//! | `ssh_host_ed25519_key{,.pub}` | the one host key every sshd of the fleet presents |
//! | `id_ed25519{,.pub}` | the user key (no passphrase); `authorized_keys` holds its public half |
//! | `known_hosts` | `[address]:port` of every host with the host key, for strict checking |
//! | `ssh_config` | a client config (`ssh -F`): user, identity, known_hosts, strict checking |
//! | `sshd_config` | the server config shared by every sshd of the fleet |
//! | `hosts/<name>/` | each host's root folder (its `root` var; `mail_root` is `<root>/srv/mail`) |
//! | `logs/<name>.log`, `run/<name>.pid` | each sshd's stderr and pid file |
//! | `lab.json` | written by [`Fleet::detach`], read by [`down`] |
//!
//! and the sshd processes it starts: [`Fleet`] kills them all when dropped (also when a test
//! panics), unless [`Fleet::detach`]ed, after which [`down`] kills them. Killing, pausing and
//! resuming a host acts on its sshd *and every process that sshd started*, so open sessions
//! (a multiplexed master connection, the commands it runs) die or hang with the host, as on a
//! real machine. Nothing else is ever signalled.
//!
//! Every host's sshd listens on `127.A.B.C:port` (A and B random per fleet, so parallel test
//! processes do not collide) and sets `PONY_LAB_HOST` (the host name) and `PONY_LAB_ROOT`
//! (its root folder) in the environment of the commands it runs. Sessions start in the
//! login user's home folder, as sshd always does.
//!
//! A server counts as ready once its pid file holds its pid: sshd writes it right after
//! binding and listening. (A probe connection would cost a full sshd re-exec per host and
//! log `kex_exchange_identification: Connection closed by remote host` at level ERROR.)
//!
//! sshd keeps its default `MaxStartups 10:30:100` (unauthenticated connections per host, the
//! client must open at most 10 at once per host) and `MaxSessions 10` (channels per
//! connection).

mod fleet;
pub mod mail;
pub mod postgres;
mod process;
mod setup;
pub mod traffic;

use setup::{
    check_sshd_config, current_user, ensure_privsep_dir, find_in_path, find_sshd, generate_keys,
    plan_hosts, pub_path, quote, quote_expanding, read, sshd_config_text, write_file,
    write_inventory_file, AddressPool,
};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The port every sshd of a fleet listens on, unless [`FleetOptions::port`] says otherwise.
pub const DEFAULT_PORT: u16 = 2222;

/// How long [`Fleet::start`] waits for the sshd servers to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Poll step while waiting for readiness.
const READY_STEP: Duration = Duration::from_millis(10);
/// Respawns of one host's sshd after its address turned out to be taken.
const MAX_RESPAWNS: usize = 5;
/// Name of the state file written by [`Fleet::detach`].
const STATE_FILE: &str = "lab.json";

const INSTALL_SSHD: &str = "sshd not found: install it with 'apt-get install -y openssh-server'";
const INSTALL_KEYGEN: &str =
    "ssh-keygen not found: install it with 'apt-get install -y openssh-client'";

/// One cluster of a fleet layout: its hosts are named `{name}-01`, `{name}-02`, …
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    /// Cluster name; also the prefix of its host names.
    pub name: String,
    /// Number of hosts.
    pub hosts: usize,
    /// Roles given to every host of the cluster (written to the inventory).
    pub roles: Vec<String>,
}

impl ClusterSpec {
    /// A cluster of `hosts` hosts with the given roles.
    pub fn new<S: Into<String>>(
        name: impl Into<String>,
        hosts: usize,
        roles: impl IntoIterator<Item = S>,
    ) -> Self {
        ClusterSpec {
            name: name.into(),
            hosts,
            roles: roles.into_iter().map(Into::into).collect(),
        }
    }
}

/// One region of a fleet layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionSpec {
    /// Region name.
    pub name: String,
    /// Its clusters, in order.
    pub clusters: Vec<ClusterSpec>,
}

impl RegionSpec {
    /// A region with the given clusters.
    pub fn new(name: impl Into<String>, clusters: Vec<ClusterSpec>) -> Self {
        RegionSpec {
            name: name.into(),
            clusters,
        }
    }
}

/// What [`Fleet::start`] builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetOptions {
    /// The folder the fleet owns (created if missing); keys, configs and host roots go here.
    pub dir: PathBuf,
    /// Regions → clusters → host counts.
    pub layout: Vec<RegionSpec>,
    /// The `name:` of the inventory written by [`Fleet::write_inventory`].
    pub inventory_name: String,
    /// The port every sshd listens on (each on its own address).
    pub port: u16,
    /// An sshd binary to use instead of searching /usr/sbin, /usr/local/sbin, /sbin and PATH.
    pub sshd: Option<PathBuf>,
}

impl FleetOptions {
    /// Options for `layout` in `dir`, on [`DEFAULT_PORT`].
    pub fn new(
        dir: impl Into<PathBuf>,
        inventory_name: impl Into<String>,
        layout: Vec<RegionSpec>,
    ) -> Self {
        FleetOptions {
            dir: dir.into(),
            layout,
            inventory_name: inventory_name.into(),
            port: DEFAULT_PORT,
            sshd: None,
        }
    }

    /// A regular grid, inventory name `lab`: regions `r1…`, clusters `r1-c1…` with role
    /// `mta`, the first cluster of each region with roles `mta` and `store`; hosts
    /// `r1-c1-01…`.
    pub fn grid(
        dir: impl Into<PathBuf>,
        regions: usize,
        clusters_per_region: usize,
        hosts_per_cluster: usize,
    ) -> Self {
        let layout = (1..=regions)
            .map(|r| {
                let clusters = (1..=clusters_per_region)
                    .map(|c| {
                        let roles: &[&str] = if c == 1 { &["mta", "store"] } else { &["mta"] };
                        ClusterSpec::new(format!("r{r}-c{c}"), hosts_per_cluster, roles.to_vec())
                    })
                    .collect();
                RegionSpec::new(format!("r{r}"), clusters)
            })
            .collect();
        FleetOptions::new(dir, "lab", layout)
    }

    /// The same options on another port.
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// The same options with another inventory name.
    pub fn with_inventory_name(mut self, name: impl Into<String>) -> Self {
        self.inventory_name = name.into();
        self
    }
}

/// One host of a fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabHost {
    /// `{cluster}-{NN}`.
    pub name: String,
    /// Its region.
    pub region: String,
    /// Its cluster.
    pub cluster: String,
    /// Roles from its cluster.
    pub roles: Vec<String>,
    /// The loopback address its sshd listens on.
    pub address: Ipv4Addr,
    /// The port its sshd listens on.
    pub port: u16,
    /// Pid of its (most recently started) sshd.
    pub pid: u32,
    /// Its root folder, `<dir>/hosts/<name>`.
    pub root: PathBuf,
}

impl LabHost {
    /// `address:port`.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.address, self.port))
    }

    /// `<root>/srv/mail`, the host's `mail_root` var.
    pub fn mail_root(&self) -> PathBuf {
        self.root.join("srv").join("mail")
    }
}

/// Whether a host's sshd runs, as far as this fleet knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostState {
    /// Accepting connections.
    Running,
    /// Stopped with SIGSTOP by [`Fleet::pause`].
    Paused,
    /// Killed by [`Fleet::kill`] (or died).
    Down,
}

/// What [`Fleet::detach`] leaves in `<dir>/lab.json`, and what [`down`] reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabState {
    /// The fleet's folder.
    pub dir: PathBuf,
    /// The inventory name.
    pub inventory_name: String,
    /// The port every sshd listens on.
    pub port: u16,
    /// The login user.
    pub user: String,
    /// The server config every sshd was started with.
    pub sshd_config: PathBuf,
    /// The client config (`ssh -F`).
    pub ssh_config: PathBuf,
    /// The user's private key.
    pub identity_file: PathBuf,
    /// The known_hosts file.
    pub known_hosts: PathBuf,
    /// Every host.
    pub hosts: Vec<LabHost>,
    /// Pid of the running sshd of each host still up at detach time, by host name.
    pub pids: BTreeMap<String, u32>,
}

impl LabState {
    /// Reads `<dir>/lab.json`.
    pub fn load(dir: &Path) -> Result<LabState> {
        let path = dir.join(STATE_FILE);
        let text = fs::read_to_string(&path).with_context(|| {
            format!(
                "no lab is running in {} ({})",
                dir.display(),
                path.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))
    }

    /// Writes a pony inventory for these hosts (see [`Fleet::write_inventory`]).
    pub fn write_inventory(&self, path: &Path) -> Result<()> {
        write_inventory_file(
            path,
            &self.inventory_name,
            &self.ssh_config,
            self.port,
            &self.user,
            &self.hosts,
        )
    }
}

/// What [`down`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DownSummary {
    /// Hosts whose sshd was killed.
    pub killed: Vec<String>,
    /// Hosts whose sshd was already gone (or whose pid now belongs to another program).
    pub already_gone: Vec<String>,
}

/// A running fleet of sshd servers. Dropping it kills them all.
#[derive(Debug)]
pub struct Fleet {
    dir: PathBuf,
    inventory_name: String,
    port: u16,
    user: String,
    sshd: PathBuf,
    sshd_config: PathBuf,
    ssh_config: PathBuf,
    identity_file: PathBuf,
    known_hosts: PathBuf,
    hosts: Vec<LabHost>,
    index: HashMap<String, usize>,
    /// The sshd of each host (same order as `hosts`), `None` once killed.
    procs: Vec<Option<Child>>,
    paused: Vec<bool>,
}

/// Stops a lab left running by [`Fleet::detach`]: reads `<dir>/lab.json` and kills exactly
/// those sshd servers (and the processes they started), checking first that each pid still
/// runs sshd with this lab's config and the host's address; then removes lab.json.
pub fn down(dir: impl AsRef<Path>) -> Result<DownSummary> {
    let dir = dir.as_ref();
    let state = LabState::load(dir)?;
    let mut summary = DownSummary::default();
    let mut roots = Vec::new();
    for (name, pid) in state.running() {
        roots.push(pid);
        summary.killed.push(name.to_string());
    }
    for name in state.pids.keys() {
        if !summary.killed.contains(name) {
            summary.already_gone.push(name.clone());
        }
    }
    let all = process::kill_trees(&roots);
    let left = process::wait_gone(&all, Duration::from_secs(5));
    if !left.is_empty() {
        bail!("processes still running after SIGKILL: {left:?}");
    }
    let path = dir.join(STATE_FILE);
    fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    Ok(summary)
}

impl LabState {
    /// `(host name, pid)` of the hosts whose recorded pid is still the sshd this lab
    /// started: alive, and its command line (sshd shows it in its process title) names
    /// this lab's sshd_config and the host's listen address. A recycled pid never matches.
    fn running(&self) -> Vec<(&str, u32)> {
        let config = self.sshd_config.to_string_lossy();
        self.pids
            .iter()
            .filter(|(name, &pid)| {
                let Some(host) = self.hosts.iter().find(|h| &h.name == *name) else {
                    return false;
                };
                let listen = format!("ListenAddress={}:{}", host.address, host.port);
                process::is_alive(pid)
                    && process::cmdline(pid).is_some_and(|c| {
                        c.contains("sshd") && c.contains(&*config) && c.contains(&listen)
                    })
            })
            .map(|(name, &pid)| (name.as_str(), pid))
            .collect()
    }
}

/// Refuses to start over a lab that `pony lab up` left running in `dir`, and clears the
/// lab.json of one that is gone.
fn refuse_running_lab(dir: &Path) -> Result<()> {
    let Ok(state) = LabState::load(dir) else {
        return Ok(());
    };
    if !state.running().is_empty() {
        bail!(
            "a lab is already running in {} (see lab.json): stop it with `{}` first",
            dir.display(),
            crate::hint::pony_here("lab down")
        );
    }
    let path = dir.join(STATE_FILE);
    fs::remove_file(&path).with_context(|| format!("removing stale {}", path.display()))
}
