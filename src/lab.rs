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

pub mod mail;
mod process;
pub mod traffic;

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

impl Fleet {
    /// Generates keys and configs in `opts.dir`, starts one sshd per host and waits until
    /// all accept connections.
    pub fn start(opts: FleetOptions) -> Result<Fleet> {
        let plan = plan_hosts(&opts.layout)?;
        let sshd = find_sshd(opts.sshd.as_deref())?;
        let keygen = find_in_path("ssh-keygen", &["/usr/bin/ssh-keygen", "/bin/ssh-keygen"])
            .ok_or_else(|| anyhow!(INSTALL_KEYGEN))?;
        let user = current_user()?;

        fs::create_dir_all(&opts.dir)
            .with_context(|| format!("creating {}", opts.dir.display()))?;
        let dir = fs::canonicalize(&opts.dir)
            .with_context(|| format!("resolving {}", opts.dir.display()))?;
        refuse_running_lab(&dir)?;
        for sub in ["hosts", "logs", "run"] {
            fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }

        let host_key = dir.join("ssh_host_ed25519_key");
        let identity_file = dir.join("id_ed25519");
        generate_keys(
            &keygen,
            &[
                (&host_key, "pony-lab-host"),
                (&identity_file, "pony-lab-user"),
            ],
        )?;
        let authorized_keys = dir.join("authorized_keys");
        let user_pub = read(&pub_path(&identity_file))?;
        write_file(&authorized_keys, user_pub.as_bytes(), 0o600)?;

        let sshd_config = dir.join("sshd_config");
        write_file(
            &sshd_config,
            sshd_config_text(opts.port, &host_key, &authorized_keys).as_bytes(),
            0o600,
        )?;
        // `sshd -t` checks the privilege separation folder too, so it must exist first.
        ensure_privsep_dir()?;
        check_sshd_config(&sshd, &sshd_config)?;

        let mut fleet = Fleet {
            ssh_config: dir.join("ssh_config"),
            known_hosts: dir.join("known_hosts"),
            identity_file,
            sshd_config,
            sshd,
            user,
            port: opts.port,
            inventory_name: opts.inventory_name,
            index: HashMap::new(),
            hosts: Vec::with_capacity(plan.len()),
            procs: Vec::with_capacity(plan.len()),
            paused: vec![false; plan.len()],
            dir,
        };
        let mut addresses = AddressPool::new(opts.port);
        for (i, p) in plan.into_iter().enumerate() {
            let root = fleet.dir.join("hosts").join(&p.name);
            fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
            let address = addresses.next()?;
            fleet.index.insert(p.name.clone(), i);
            fleet.hosts.push(LabHost {
                name: p.name,
                region: p.region,
                cluster: p.cluster,
                roles: p.roles,
                address,
                port: opts.port,
                pid: 0,
                root,
            });
            fleet.procs.push(None);
        }

        // Start everything first, then wait for everything: 200 hosts start in parallel.
        for i in 0..fleet.hosts.len() {
            fleet.spawn(i)?;
        }
        let all: Vec<usize> = (0..fleet.hosts.len()).collect();
        fleet.wait_ready(&all, Some(&mut addresses))?;

        fleet.write_client_files()?;
        Ok(fleet)
    }

    /// The fleet's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The port every sshd listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The login user (the current user).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The client config: `ssh -F <this> <address>` reaches a host.
    pub fn ssh_config_path(&self) -> &Path {
        &self.ssh_config
    }

    /// The user's private key.
    pub fn identity_file(&self) -> &Path {
        &self.identity_file
    }

    /// The known_hosts file listing every host.
    pub fn known_hosts_path(&self) -> &Path {
        &self.known_hosts
    }

    /// The server config every sshd runs with.
    pub fn sshd_config_path(&self) -> &Path {
        &self.sshd_config
    }

    /// Every host, in layout order.
    pub fn hosts(&self) -> &[LabHost] {
        &self.hosts
    }

    /// The host named `name`, if any.
    pub fn get(&self, name: &str) -> Option<&LabHost> {
        self.index.get(name).map(|&i| &self.hosts[i])
    }

    /// The host named `name`.
    ///
    /// # Panics
    /// If the fleet has no such host (use [`Fleet::get`] to ask).
    pub fn host(&self, name: &str) -> &LabHost {
        self.get(name)
            .unwrap_or_else(|| panic!("no host named {name:?} in this lab fleet"))
    }

    /// Whether the host's sshd runs, is paused or is down.
    pub fn state(&self, name: &str) -> Result<HostState> {
        let i = self.lookup(name)?;
        Ok(match (&self.procs[i], self.paused[i]) {
            (None, _) => HostState::Down,
            (Some(_), true) => HostState::Paused,
            (Some(_), false) => HostState::Running,
        })
    }

    /// Crashes a host: SIGKILLs its sshd and every process it started (open sessions
    /// included) and waits until they are gone. A host already down is left alone.
    pub fn kill(&mut self, name: &str) -> Result<()> {
        let i = self.lookup(name)?;
        self.kill_index(i);
        Ok(())
    }

    /// Freezes a host: SIGSTOPs its sshd and every process it started. New connections hang
    /// (the kernel still completes the TCP handshake, but no SSH banner comes) and open
    /// sessions stall, until [`Fleet::resume`].
    pub fn pause(&mut self, name: &str) -> Result<()> {
        let i = self.lookup(name)?;
        let Some(child) = &self.procs[i] else {
            bail!("cannot pause {name}: its sshd is down");
        };
        process::freeze_trees(&[child.id()]);
        self.paused[i] = true;
        Ok(())
    }

    /// Unfreezes a host paused by [`Fleet::pause`] (SIGCONT to its sshd and its processes).
    pub fn resume(&mut self, name: &str) -> Result<()> {
        let i = self.lookup(name)?;
        let Some(child) = &self.procs[i] else {
            bail!("cannot resume {name}: its sshd is down");
        };
        process::thaw_trees(&[child.id()]);
        self.paused[i] = false;
        Ok(())
    }

    /// Brings a host back: kills its sshd if it runs, starts a new one on the same address
    /// and waits until it accepts connections.
    pub fn restart(&mut self, name: &str) -> Result<()> {
        let i = self.lookup(name)?;
        self.kill_index(i);
        self.spawn(i)?;
        self.wait_ready(&[i], None)
    }

    /// Writes a pony inventory (SPEC §2) for the fleet: `defaults.ssh` points at the fleet's
    /// ssh_config, port and user; regions → clusters (with their roles) → hosts, each with
    /// its `address` and vars `root` and `mail_root` (`<root>/srv/mail`).
    pub fn write_inventory(&self, path: impl AsRef<Path>) -> Result<()> {
        write_inventory_file(
            path.as_ref(),
            &self.inventory_name,
            &self.ssh_config,
            self.port,
            &self.user,
            &self.hosts,
        )
    }

    /// Leaves the sshd servers running, writes `<dir>/lab.json` (hosts and pids) for
    /// [`down`], and forgets them: dropping the result kills nothing.
    pub fn detach(mut self) -> Result<LabState> {
        let state = LabState {
            dir: self.dir.clone(),
            inventory_name: self.inventory_name.clone(),
            port: self.port,
            user: self.user.clone(),
            sshd_config: self.sshd_config.clone(),
            ssh_config: self.ssh_config.clone(),
            identity_file: self.identity_file.clone(),
            known_hosts: self.known_hosts.clone(),
            hosts: self.hosts.clone(),
            pids: self
                .hosts
                .iter()
                .zip(&self.procs)
                .filter_map(|(h, c)| c.as_ref().map(|c| (h.name.clone(), c.id())))
                .collect(),
        };
        let json = serde_json::to_string_pretty(&state)?;
        // On failure `self` drops here and kills the fleet: nothing is left untracked.
        write_file(&self.dir.join(STATE_FILE), json.as_bytes(), 0o644)?;
        // Dropping a std Child neither kills nor waits: the servers keep running.
        self.procs.iter_mut().for_each(|c| drop(c.take()));
        Ok(state)
    }

    fn lookup(&self, name: &str) -> Result<usize> {
        self.index
            .get(name)
            .copied()
            .ok_or_else(|| anyhow!("no host named {name:?} in this lab fleet"))
    }

    fn pid_path(&self, i: usize) -> PathBuf {
        self.dir
            .join("run")
            .join(format!("{}.pid", self.hosts[i].name))
    }

    /// Whether host `i`'s sshd listens. sshd writes its PidFile right after binding and
    /// listening, so "the pid file holds the pid we started" means a connection now
    /// succeeds. This is checked instead of a probe connection, which would make sshd fork
    /// and re-execute itself (as much work as starting it) only to log
    /// `kex_exchange_identification: Connection closed by remote host` at level ERROR.
    fn is_listening(&self, i: usize) -> bool {
        let Some(child) = &self.procs[i] else {
            return false;
        };
        fs::read_to_string(self.pid_path(i)).ok().and_then(|s| {
            s.strip_suffix('\n')
                .and_then(|s| s.trim().parse::<u32>().ok())
        }) == Some(child.id())
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir
            .join("logs")
            .join(format!("{}.log", self.hosts[i].name))
    }

    /// Starts host `i`'s sshd (not waiting for it).
    fn spawn(&mut self, i: usize) -> Result<()> {
        let h = &self.hosts[i];
        let log_path = self.log_path(i);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let pid_file = self.pid_path(i);
        // A stale pid file would pass for readiness.
        match fs::remove_file(&pid_file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", pid_file.display())),
        }
        let child = Command::new(&self.sshd)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&self.sshd_config)
            .arg("-o")
            .arg(format!("ListenAddress={}:{}", h.address, h.port))
            .arg("-o")
            .arg(format!(
                "PidFile={}",
                quote(&pid_file.display().to_string())
            ))
            .arg("-o")
            // The first SetEnv wins, so this replaces the config's `SetEnv SHLVL=1`.
            .arg(format!(
                "SetEnv=SHLVL=1 PONY_LAB_HOST={} PONY_LAB_ROOT={}",
                quote(&h.name),
                quote(&h.root.display().to_string())
            ))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.sshd.display()))?;
        self.hosts[i].pid = child.id();
        self.procs[i] = Some(child);
        self.paused[i] = false;
        Ok(())
    }

    /// Waits until the sshd of every host in `which` listens. With a pool,
    /// a server that died because its address was taken meanwhile (another test process)
    /// is moved to a fresh address and started again.
    fn wait_ready(&mut self, which: &[usize], mut pool: Option<&mut AddressPool>) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut pending: Vec<usize> = which.to_vec();
        let mut respawns: HashMap<usize, usize> = HashMap::new();
        while !pending.is_empty() {
            let mut still = Vec::with_capacity(pending.len());
            for i in pending {
                let exited = match self.procs[i].as_mut() {
                    Some(child) => child.try_wait()?,
                    None => bail!("sshd of {} is not running", self.hosts[i].name),
                };
                if let Some(status) = exited {
                    self.procs[i] = None;
                    let log = fs::read_to_string(self.log_path(i)).unwrap_or_default();
                    let taken = log.contains("Address already in use")
                        || log.contains("Cannot bind any address");
                    let tries = respawns.entry(i).or_insert(0);
                    if let (true, Some(pool)) = (taken, pool.as_deref_mut()) {
                        if *tries < MAX_RESPAWNS {
                            *tries += 1;
                            self.hosts[i].address = pool.next()?;
                            fs::write(self.log_path(i), b"")?;
                            self.spawn(i)?;
                            still.push(i);
                            continue;
                        }
                    }
                    bail!(
                        "sshd of {} ({}) exited with {status}:\n{}",
                        self.hosts[i].name,
                        self.hosts[i].socket_addr(),
                        log.trim_end()
                    );
                }
                if !self.is_listening(i) {
                    still.push(i);
                }
            }
            pending = still;
            if pending.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                let names: Vec<&str> = pending
                    .iter()
                    .take(10)
                    .map(|&i| self.hosts[i].name.as_str())
                    .collect();
                bail!(
                    "{} sshd server(s) not accepting connections after {:?}: {} (logs in {})",
                    pending.len(),
                    READY_TIMEOUT,
                    names.join(", "),
                    self.dir.join("logs").display()
                );
            }
            std::thread::sleep(READY_STEP);
        }
        Ok(())
    }

    /// Writes known_hosts and ssh_config (once the addresses are final).
    fn write_client_files(&self) -> Result<()> {
        let host_pub = read(&pub_path(&self.dir.join("ssh_host_ed25519_key")))?;
        let host_pub = host_pub.trim();
        let mut known = String::new();
        for h in &self.hosts {
            let _ = writeln!(known, "[{}]:{} {}", h.address, h.port, host_pub);
        }
        write_file(&self.known_hosts, known.as_bytes(), 0o644)?;

        let mut cfg = String::from("# pony lab client config (generated)\n");
        for h in &self.hosts {
            let _ = writeln!(cfg, "Host {}\n    HostName {}", h.name, h.address);
        }
        let _ = write!(
            cfg,
            "Host *\n    User {user}\n    Port {port}\n    IdentityFile {id}\n    \
             IdentitiesOnly yes\n    UserKnownHostsFile {kh}\n    StrictHostKeyChecking yes\n    \
             KexAlgorithms curve25519-sha256\n    BatchMode yes\n    ConnectTimeout 5\n",
            user = self.user,
            port = self.port,
            id = quote_expanding(&self.identity_file),
            kh = quote_expanding(&self.known_hosts),
        );
        write_file(&self.ssh_config, cfg.as_bytes(), 0o644)
    }

    fn kill_index(&mut self, i: usize) {
        if let Some(mut child) = self.procs[i].take() {
            let all = process::kill_trees(&[child.id()]);
            let _ = child.kill();
            let _ = child.wait();
            process::wait_gone(&all[1..], Duration::from_secs(2));
        }
        self.paused[i] = false;
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let mut children: Vec<Child> = self.procs.iter_mut().filter_map(Option::take).collect();
        if children.is_empty() {
            return;
        }
        let roots: Vec<u32> = children.iter().map(Child::id).collect();
        let all = process::kill_trees(&roots);
        for child in &mut children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let below: Vec<u32> = all.into_iter().filter(|p| !roots.contains(p)).collect();
        process::wait_gone(&below, Duration::from_secs(2));
    }
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
            "a lab is already running in {} (see lab.json): stop it with `pony lab down` first",
            dir.display()
        );
    }
    let path = dir.join(STATE_FILE);
    fs::remove_file(&path).with_context(|| format!("removing stale {}", path.display()))
}

struct PlannedHost {
    name: String,
    region: String,
    cluster: String,
    roles: Vec<String>,
}

/// Expands the layout into hosts, checking names (they become file names and inventory
/// groups, which share one namespace).
fn plan_hosts(layout: &[RegionSpec]) -> Result<Vec<PlannedHost>> {
    fn check(name: &str, what: &str) -> Result<()> {
        let ok = !name.is_empty()
            && !name.starts_with(['.', '-'])
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            bail!("invalid {what} name {name:?}: use letters, digits, '-', '_' and '.'");
        }
        Ok(())
    }
    let mut groups: HashSet<&str> = HashSet::new();
    let mut roles: HashSet<&str> = HashSet::new();
    let mut hosts = Vec::new();
    for region in layout {
        check(&region.name, "region")?;
        if !groups.insert(&region.name) {
            bail!("duplicate region or cluster name {:?}", region.name);
        }
        for cluster in &region.clusters {
            check(&cluster.name, "cluster")?;
            if !groups.insert(&cluster.name) {
                bail!("duplicate region or cluster name {:?}", cluster.name);
            }
            for role in &cluster.roles {
                check(role, "role")?;
                roles.insert(role);
            }
            for n in 1..=cluster.hosts {
                hosts.push(PlannedHost {
                    name: format!("{}-{n:02}", cluster.name),
                    region: region.name.clone(),
                    cluster: cluster.name.clone(),
                    roles: cluster.roles.clone(),
                });
            }
        }
    }
    if let Some(clash) = groups.iter().find(|g| roles.contains(*g)) {
        bail!("{clash:?} is both a role and a region or cluster name");
    }
    let mut names: HashSet<&str> = HashSet::new();
    for h in &hosts {
        if groups.contains(h.name.as_str()) || roles.contains(h.name.as_str()) {
            bail!("host name {:?} clashes with a group name", h.name);
        }
        if !names.insert(&h.name) {
            bail!("duplicate host name {:?}", h.name);
        }
    }
    if hosts.is_empty() {
        bail!("the fleet layout has no hosts");
    }
    Ok(hosts)
}

/// Hands out free loopback addresses 127.A.B.C (C in 1..=250), starting at a random A.B
/// and rolling over into the next B (and A).
struct AddressPool {
    port: u16,
    a: u8,
    b: u8,
    c: u8,
}

impl AddressPool {
    fn new(port: u16) -> Self {
        let r = random_u64();
        // A in 2..=254: stays clear of 127.0.0.x (resolvers, 127.0.0.1) and 127.1.x.
        let a = 2 + (r % 253) as u8;
        let b = (r >> 16) as u8;
        AddressPool { port, a, b, c: 0 }
    }

    fn advance(&mut self) {
        if self.c >= 250 {
            self.c = 1;
            if self.b == 255 {
                self.b = 0;
                self.a = if self.a >= 254 { 2 } else { self.a + 1 };
            } else {
                self.b += 1;
            }
        } else {
            self.c += 1;
        }
    }

    /// The next address whose port nothing listens on (checked by binding it).
    fn next(&mut self) -> Result<Ipv4Addr> {
        let mut last_err = None;
        for _ in 0..256 {
            self.advance();
            let ip = Ipv4Addr::new(127, self.a, self.b, self.c);
            match TcpListener::bind(SocketAddrV4::new(ip, self.port)) {
                Ok(listener) => {
                    drop(listener);
                    return Ok(ip);
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(anyhow!(
            "no free loopback address for port {} (is something listening on 0.0.0.0:{}?): {}",
            self.port,
            self.port,
            last_err.map(|e| e.to_string()).unwrap_or_default()
        ))
    }
}

/// A random number without a crate: std's per-process random hash keys, plus time and pid.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    h.write_u128(nanos);
    h.write_u32(std::process::id());
    h.finish()
}

fn find_sshd(explicit: Option<&Path>) -> Result<PathBuf> {
    let found = match explicit {
        Some(p) => p.is_file().then(|| p.to_path_buf()),
        None => find_in_path(
            "sshd",
            &["/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd"],
        ),
    };
    let path = found.ok_or_else(|| anyhow!(INSTALL_SSHD))?;
    // sshd re-executes itself for every connection and insists on an absolute path.
    fs::canonicalize(&path).with_context(|| format!("resolving {}", path.display()))
}

/// The first of `candidates` that exists, else `name` on PATH.
fn find_in_path(name: &str, candidates: &[&str]) -> Option<PathBuf> {
    let is_exe = |p: &Path| {
        fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| is_exe(p))
        .or_else(|| {
            let path = std::env::var_os("PATH")?;
            std::env::split_paths(&path)
                .map(|d| d.join(name))
                .find(|p| p.is_absolute() && is_exe(p))
        })
}

fn current_user() -> Result<String> {
    if let Ok(user) = std::env::var("USER") {
        if !user.trim().is_empty() {
            return Ok(user.trim().to_string());
        }
    }
    let out = Command::new("id")
        .arg("-un")
        .stderr(Stdio::inherit())
        .output()
        .context("running `id -un` to find the current user")?;
    let user = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || user.is_empty() {
        bail!("cannot tell the current user: $USER is unset and `id -un` failed");
    }
    Ok(user)
}

fn pub_path(key: &Path) -> PathBuf {
    let mut s = key.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// Runs ssh-keygen for every `(path, comment)` at once: ed25519, no passphrase.
fn generate_keys(keygen: &Path, keys: &[(&Path, &str)]) -> Result<()> {
    let mut running = Vec::new();
    for (path, comment) in keys {
        for p in [path.to_path_buf(), pub_path(path)] {
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", p.display())),
            }
        }
        let child = Command::new(keygen)
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", keygen.display()))?;
        running.push((path, child));
    }
    for (path, child) in running {
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "ssh-keygen failed for {}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(())
}

fn sshd_config_text(port: u16, host_key: &Path, authorized_keys: &Path) -> String {
    format!(
        "# pony lab server config (generated); ListenAddress, PidFile and SetEnv come per host\n\
         # on the command line. MaxStartups and MaxSessions keep their defaults (10:30:100, 10).\n\
         Port {port}\n\
         HostKey {host_key}\n\
         AuthorizedKeysFile {authorized_keys}\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PubkeyAuthentication yes\n\
         StrictModes no\n\
         UsePAM no\n\
         UseDNS no\n\
         PermitRootLogin yes\n\
         PrintMotd no\n\
         KexAlgorithms curve25519-sha256\n\
         SetEnv SHLVL=1\n\
         LogLevel ERROR\n\
         Subsystem sftp internal-sftp\n",
        host_key = quote(&host_key.display().to_string()),
        authorized_keys = quote_expanding(authorized_keys),
    )
}

/// `sshd -t`: one cheap check of config and keys that gives a readable error before
/// hundreds of servers would each fail the same way.
fn check_sshd_config(sshd: &Path, config: &Path) -> Result<()> {
    let out = Command::new(sshd)
        .arg("-t")
        .arg("-f")
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} -t", sshd.display()))?;
    if !out.status.success() {
        bail!(
            "sshd rejects {}: {}",
            config.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// sshd refuses to start without its privilege separation folder (owned by root, not
/// group/world writable).
fn ensure_privsep_dir() -> Result<()> {
    let dir = Path::new("/run/sshd");
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir)
        .and_then(|()| fs::set_permissions(dir, fs::Permissions::from_mode(0o755)))
        .with_context(|| {
            "sshd needs its privilege separation folder /run/sshd: create it with \
             'mkdir -p /run/sshd' as root"
        })
}

/// Quotes a value for ssh_config / sshd_config (both split arguments like a shell,
/// honouring double quotes and backslashes).
fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '-' | '_' | '+' | ':' | ',')
        })
    {
        return s.to_string();
    }
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// [`quote`] for paths that ssh/sshd expand `%` tokens in.
fn quote_expanding(p: &Path) -> String {
    quote(&p.display().to_string().replace('%', "%%"))
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(data)
        .with_context(|| format!("writing {}", path.display()))?;
    // `mode` only applies to new files; ssh checks the permissions of keys and configs.
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting permissions of {}", path.display()))
}

fn write_inventory_file(
    path: &Path,
    name: &str,
    ssh_config: &Path,
    port: u16,
    user: &str,
    hosts: &[LabHost],
) -> Result<()> {
    use serde_yaml::{Mapping, Value};
    fn s(v: impl Into<String>) -> Value {
        Value::String(v.into())
    }
    fn map<const N: usize>(entries: [(&str, Value); N]) -> Value {
        Value::Mapping(entries.into_iter().map(|(k, v)| (s(k), v)).collect())
    }
    fn path_value(p: &Path) -> Value {
        s(p.display().to_string())
    }
    fn entry<'m>(m: &'m mut Mapping, key: &str, init: impl FnOnce() -> Value) -> &'m mut Mapping {
        match m.entry(s(key)).or_insert_with(init) {
            Value::Mapping(inner) => inner,
            _ => unreachable!("lab inventory entries are mappings"),
        }
    }

    let mut regions = Mapping::new();
    for h in hosts {
        let region = entry(&mut regions, &h.region, || {
            map([("clusters", Value::Mapping(Mapping::new()))])
        });
        let clusters = entry(region, "clusters", || Value::Mapping(Mapping::new()));
        let cluster = entry(clusters, &h.cluster, || {
            map([
                (
                    "roles",
                    Value::Sequence(h.roles.iter().map(|r| s(r.as_str())).collect()),
                ),
                ("hosts", Value::Mapping(Mapping::new())),
            ])
        });
        let cluster_hosts = entry(cluster, "hosts", || Value::Mapping(Mapping::new()));
        cluster_hosts.insert(
            s(h.name.as_str()),
            map([
                ("address", s(h.address.to_string())),
                (
                    "vars",
                    map([
                        ("root", path_value(&h.root)),
                        ("mail_root", path_value(&h.mail_root())),
                    ]),
                ),
            ]),
        );
    }
    let doc = map([
        ("name", s(name)),
        (
            "defaults",
            map([
                ("connection", s("ssh")),
                (
                    "ssh",
                    map([
                        ("config_file", path_value(ssh_config)),
                        ("port", Value::Number(port.into())),
                        ("user", s(user)),
                    ]),
                ),
            ]),
        ),
        ("regions", Value::Mapping(regions)),
    ]);
    let yaml = serde_yaml::to_string(&doc)?;
    let text = format!(
        "# pony lab inventory (generated): {} hosts on loopback\n{yaml}",
        hosts.len()
    );
    write_file(path, text.as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_roll_over_into_the_next_b() {
        let mut pool = AddressPool {
            port: DEFAULT_PORT,
            a: 9,
            b: 255,
            c: 249,
        };
        pool.advance();
        assert_eq!((pool.a, pool.b, pool.c), (9, 255, 250));
        pool.advance();
        assert_eq!((pool.a, pool.b, pool.c), (10, 0, 1));
        pool.a = 254;
        pool.b = 255;
        pool.c = 250;
        pool.advance();
        assert_eq!((pool.a, pool.b, pool.c), (2, 0, 1));
    }

    #[test]
    fn addresses_in_use_are_skipped() {
        let mut pool = AddressPool::new(DEFAULT_PORT);
        let (a, b, c) = (pool.a, pool.b, pool.c);
        let first = pool.next().unwrap();
        let _taken = TcpListener::bind(SocketAddrV4::new(first, DEFAULT_PORT)).unwrap();
        pool.a = a;
        pool.b = b;
        pool.c = c;
        let second = pool.next().unwrap();
        assert_ne!(first, second);
        assert!(second.is_loopback());
        assert_ne!(second.octets()[1], 0, "127.0.x.x is left alone");
    }

    #[test]
    fn layout_expands_to_zero_padded_host_names() {
        let layout = vec![RegionSpec::new(
            "eu",
            vec![
                ClusterSpec::new("mx", 2, ["mta"]),
                ClusterSpec::new("st", 101, ["store"]),
            ],
        )];
        let hosts = plan_hosts(&layout).unwrap();
        assert_eq!(hosts.len(), 103);
        assert_eq!(hosts[0].name, "mx-01");
        assert_eq!(hosts[1].name, "mx-02");
        assert_eq!(hosts[2].name, "st-01");
        assert_eq!(hosts[102].name, "st-101");
        assert_eq!(hosts[102].roles, ["store"]);
        assert!(plan_hosts(&[]).is_err());
        assert!(plan_hosts(&[RegionSpec::new("a b", vec![])]).is_err());
    }

    #[test]
    fn config_values_are_quoted_when_needed() {
        assert_eq!(quote("/tmp/lab/id_ed25519"), "/tmp/lab/id_ed25519");
        assert_eq!(quote("/tmp/a b"), "\"/tmp/a b\"");
        assert_eq!(quote("say \"hi\""), "\"say \\\"hi\\\"\"");
        assert_eq!(quote_expanding(Path::new("/tmp/100%")), "\"/tmp/100%%\"");
    }
}
