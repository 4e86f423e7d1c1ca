//! The inventory model: regions → clusters → hosts with settings and vars inherited
//! defaults → region → cluster → host, groups (regions, clusters, roles), and its
//! loading and validation. Host patterns live in [`pattern`], ranges in [`range`].

pub mod dynamic;
pub mod import;
pub mod pattern;
pub mod range;
pub mod raw;

use crate::diag::{Diagnostic, Diagnostics};
pub use raw::{ConnectionKind, Vars};
use raw::{RawInventory, RawSsh};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub type HostId = usize;
pub type RegionId = usize;
pub type ClusterId = usize;

/// A validated inventory. Host ids index `hosts`; every host is in exactly one cluster
/// and region, and names of hosts and groups are unique across both.
#[derive(Debug)]
pub struct Inventory {
    pub name: String,
    pub file: PathBuf,
    pub regions: Vec<Region>,
    pub clusters: Vec<Cluster>,
    pub hosts: Vec<Host>,
    /// Group name → its hosts (regions, clusters, roles), hosts in id order.
    pub groups: BTreeMap<String, Vec<HostId>>,
    by_name: HashMap<String, HostId>,
    /// The fleet a dynamic inventory's command printed (as pony inventory YAML): what a
    /// run's snapshot keeps instead of the command.
    pub generated: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Region {
    pub name: String,
    pub clusters: Vec<ClusterId>,
}

#[derive(Debug, Serialize)]
pub struct Cluster {
    pub name: String,
    pub region: RegionId,
    pub hosts: Vec<HostId>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Host {
    pub name: String,
    /// Where to connect; without it the host name is the SSH destination.
    pub address: Option<String>,
    pub region: RegionId,
    pub cluster: ClusterId,
    pub roles: Vec<String>,
    pub connection: ConnectionKind,
    pub ssh: SshSettings,
    /// Merged vars (defaults < region < cluster < host).
    pub vars: Vars,
    /// The host's IANA time zone (`tz:`, inherited), for `local` change windows.
    pub tz: Option<String>,
}

impl Host {
    /// The SSH destination: the address when given, else the name (ssh_config aliases work).
    pub fn destination(&self) -> &str {
        self.address.as_deref().unwrap_or(&self.name)
    }
}

/// SSH settings after inheritance; unset fields fall back to ssh_config / OpenSSH defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct SshSettings {
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_file: Option<String>,
    pub jump: Option<String>,
    pub config_file: Option<String>,
    pub options: BTreeMap<String, String>,
    /// How long one connection attempt may take; unset: the transport's default.
    #[serde(serialize_with = "as_humantime")]
    pub connect_timeout: Option<Duration>,
    /// Attempts after a failed first one; unset: the transport's default.
    pub connect_retries: Option<u32>,
    /// How long the master outlives pony when pony dies; unset: the transport's default.
    #[serde(serialize_with = "as_humantime")]
    pub control_persist: Option<Duration>,
}

fn as_humantime<S: serde::Serializer>(
    value: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(d) => serializer.serialize_str(&humantime::format_duration(*d).to_string()),
        None => serializer.serialize_none(),
    }
}

impl SshSettings {
    fn overlay(&mut self, layer: &Option<RawSsh>) {
        let Some(layer) = layer else { return };
        macro_rules! take {
            ($($field:ident),*) => { $( if layer.$field.is_some() { self.$field = layer.$field.clone(); } )* };
        }
        take!(user, port, identity_file, jump, config_file);
        self.options.extend(layer.options.clone());
        take!(connect_timeout, connect_retries, control_persist);
    }

    /// The ProxyJump chain, first hop first; `None` without a jump or with `jump: none`.
    pub fn jumps(&self) -> Option<Vec<&str>> {
        let jump = self.jump.as_deref()?.trim();
        if jump.is_empty() || jump.eq_ignore_ascii_case("none") {
            return None;
        }
        Some(jump.split(',').map(str::trim).collect())
    }
}

impl Inventory {
    pub fn host_id(&self, name: &str) -> Option<HostId> {
        self.by_name.get(name).copied()
    }

    pub fn region_of(&self, host: HostId) -> &Region {
        &self.regions[self.hosts[host].region]
    }

    pub fn cluster_of(&self, host: HostId) -> &Cluster {
        &self.clusters[self.hosts[host].cluster]
    }

    /// Every name a pattern can refer to: host names then group names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.hosts
            .iter()
            .map(|h| h.name.as_str())
            .chain(self.groups.keys().map(String::as_str))
    }
}

/// Reads and validates an inventory file; every problem is reported at once. An
/// executable file is a [`dynamic`] inventory: it is run, and the fleet it prints is kept
/// in [`Inventory::generated`].
pub fn load(path: &Path) -> Result<Inventory, Diagnostics> {
    if dynamic::is_command(path) {
        let text = dynamic::fleet_text(path)?;
        let mut inventory = parse(path, &text)?;
        inventory.generated = Some(text);
        return Ok(inventory);
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diagnostic::new(path, format!("cannot read inventory: {e}"))
            .hint("pass an existing file with -i, e.g. -i inventories/local.yaml")
    })?;
    parse(path, &text)
}

/// Validates inventory text that came from `path`.
pub fn parse(path: &Path, text: &str) -> Result<Inventory, Diagnostics> {
    let raw: RawInventory =
        serde_yaml::from_str(text).map_err(|e| Diagnostic::from_yaml(path, &e))?;
    build(path, raw)
}

fn build(path: &Path, raw: RawInventory) -> Result<Inventory, Diagnostics> {
    let mut builder = Builder {
        path,
        errors: Diagnostics::default(),
        inventory: Inventory {
            name: raw.name.clone(),
            file: path.to_path_buf(),
            regions: Vec::new(),
            clusters: Vec::new(),
            hosts: Vec::new(),
            groups: BTreeMap::new(),
            by_name: HashMap::new(),
            generated: None,
        },
    };
    if raw.name.trim().is_empty() {
        builder.errors.push(
            Diagnostic::new(path, "inventory `name` is empty")
                .hint("give it a name like `global`; it names the lock and the run history"),
        );
    }
    if raw.regions.is_empty() {
        builder.errors.push(
            Diagnostic::new(path, "inventory has no regions")
                .hint("add `regions:` with at least one region, cluster and host"),
        );
    }
    let top = Inherited {
        ssh: SshSettings::default(),
        connection: ConnectionKind::default(),
        vars: Vars::default(),
        tz: None,
    };
    let defaults = &raw.defaults;
    let base = builder.layer(
        &top,
        "defaults".into(),
        Layer {
            ssh: &defaults.ssh,
            connection: defaults.connection,
            vars: &defaults.vars,
            tz: &defaults.tz,
        },
    );
    for (region_name, region) in &raw.regions {
        builder.region(region_name, region, &base);
    }
    let Builder {
        mut errors,
        mut inventory,
        ..
    } = builder;
    build_groups(&mut inventory, &mut errors);
    errors.into_result(inventory)
}

/// What a region, cluster or host inherits from the level above it.
#[derive(Clone)]
struct Inherited {
    ssh: SshSettings,
    connection: ConnectionKind,
    vars: Vars,
    tz: Option<String>,
}

/// The settings one level (defaults, region, cluster, host) may set over the inherited ones.
struct Layer<'a> {
    ssh: &'a Option<RawSsh>,
    connection: Option<ConnectionKind>,
    vars: &'a Vars,
    tz: &'a Option<String>,
}

/// The inventory as it is built, and every problem found on the way.
struct Builder<'a> {
    path: &'a Path,
    errors: Diagnostics,
    inventory: Inventory,
}

impl Builder<'_> {
    /// `layer` over `above`; `at` names the level in a bad `tz:`'s error.
    fn layer(&mut self, above: &Inherited, at: String, layer: Layer) -> Inherited {
        let mut ssh = above.ssh.clone();
        ssh.overlay(layer.ssh);
        Inherited {
            ssh,
            connection: layer.connection.unwrap_or(above.connection),
            vars: merged(&above.vars, layer.vars),
            tz: zone(&mut self.errors, self.path, at, layer.tz, &above.tz),
        }
    }

    fn region(&mut self, region_name: &str, region: &raw::RawRegion, base: &Inherited) {
        let region_id = self.inventory.regions.len();
        self.inventory.regions.push(Region {
            name: region_name.to_string(),
            clusters: Vec::new(),
        });
        let inherited = self.layer(
            base,
            format!("region `{region_name}`"),
            Layer {
                ssh: &region.ssh,
                connection: region.connection,
                vars: &region.vars,
                tz: &region.tz,
            },
        );
        if region.clusters.is_empty() {
            self.errors.push(
                Diagnostic::new(self.path, format!("region `{region_name}` has no clusters")).hint(
                    "add `clusters:` with at least one cluster of hosts, or remove the region",
                ),
            );
        }
        for (cluster_name, cluster) in &region.clusters {
            self.cluster(region_id, region_name, cluster_name, cluster, &inherited);
        }
    }

    fn cluster(
        &mut self,
        region_id: usize,
        region_name: &str,
        cluster_name: &str,
        cluster: &raw::RawCluster,
        above: &Inherited,
    ) {
        let cluster_id = self.inventory.clusters.len();
        self.inventory.regions[region_id].clusters.push(cluster_id);
        self.inventory.clusters.push(Cluster {
            name: cluster_name.to_string(),
            region: region_id,
            hosts: Vec::new(),
        });
        let inherited = self.layer(
            above,
            format!("cluster `{cluster_name}`"),
            Layer {
                ssh: &cluster.ssh,
                connection: cluster.connection,
                vars: &cluster.vars,
                tz: &cluster.tz,
            },
        );
        if cluster.hosts.is_empty() {
            self.errors.push(
                Diagnostic::new(
                    self.path,
                    format!("cluster `{cluster_name}` in region `{region_name}` has no hosts"),
                )
                .hint("add `hosts:` (names or ranges like `mx-[01:10]`), or remove the cluster"),
            );
        }
        for (host_key, host) in &cluster.hosts {
            let empty = raw::RawHost::default();
            let host = host.as_ref().unwrap_or(&empty);
            self.host_entry(
                cluster_id,
                cluster_name,
                cluster,
                host_key,
                host,
                &inherited,
            );
        }
    }

    /// One `hosts:` entry: a name or a range of names, with an address or a range of
    /// addresses of the same length.
    fn host_entry(
        &mut self,
        cluster_id: usize,
        cluster_name: &str,
        cluster: &raw::RawCluster,
        host_key: &str,
        host: &raw::RawHost,
        above: &Inherited,
    ) {
        let Some((names, addresses)) = self.names_and_addresses(cluster_name, host_key, host)
        else {
            return;
        };
        let inherited = self.layer(
            above,
            format!("host `{host_key}`"),
            Layer {
                ssh: &host.ssh,
                connection: host.connection,
                vars: &host.vars,
                tz: &host.tz,
            },
        );
        let mut roles = cluster.roles.clone();
        for role in &host.roles {
            if !roles.contains(role) {
                roles.push(role.clone());
            }
        }
        let region = self.inventory.clusters[cluster_id].region;
        for (index, name) in names.into_iter().enumerate() {
            self.add_host(
                cluster_name,
                Host {
                    name,
                    address: addresses.as_ref().map(|a| a[index].clone()),
                    region,
                    cluster: cluster_id,
                    roles: roles.clone(),
                    connection: inherited.connection,
                    ssh: inherited.ssh.clone(),
                    vars: inherited.vars.clone(),
                    tz: inherited.tz.clone(),
                },
            );
        }
    }

    /// The entry's names and addresses expanded, or `None` with the problem recorded.
    #[allow(clippy::type_complexity)]
    fn names_and_addresses(
        &mut self,
        cluster_name: &str,
        host_key: &str,
        host: &raw::RawHost,
    ) -> Option<(Vec<String>, Option<Vec<String>>)> {
        let path = self.path;
        let names = match range::expand(host_key) {
            Ok(names) => names,
            Err(e) => {
                self.errors.push(
                    Diagnostic::new(
                        path,
                        format!(
                            "bad host range `{}` in cluster `{cluster_name}`: {}",
                            e.text, e.reason
                        ),
                    )
                    .hint("ranges are `[start:end]` with start <= end, e.g. `mx-gz-[01:40]`"),
                );
                return None;
            }
        };
        let Some(address) = &host.address else {
            return Some((names, None));
        };
        match range::expand(address) {
            Ok(addresses) if addresses.len() == names.len() => Some((names, Some(addresses))),
            Ok(addresses) => {
                self.errors.push(Diagnostic::new(path, format!(
                    "host `{host_key}`: {} names but address `{address}` expands to {} addresses",
                    names.len(), addresses.len()
                )).hint("give the address range the same length as the name range, e.g. `mx-[01:40]` with `10.0.0.[11:50]`"));
                None
            }
            Err(e) => {
                self.errors.push(
                    Diagnostic::new(path, format!("host `{host_key}`: address {e}"))
                        .hint("address ranges are `[start:end]`, e.g. `10.20.1.[11:50]`"),
                );
                None
            }
        }
    }

    /// Adds a host unless its name is taken (an error naming both places).
    fn add_host(&mut self, cluster_name: &str, host: Host) {
        let inventory = &mut self.inventory;
        if let Some(&other) = inventory.by_name.get(&host.name) {
            let other = &inventory.clusters[inventory.hosts[other].cluster].name;
            let place = if *other == *cluster_name {
                format!("defined twice in cluster `{other}`")
            } else {
                format!("in cluster `{cluster_name}` and in cluster `{other}`")
            };
            self.errors.push(
                Diagnostic::new(
                    self.path,
                    format!("duplicate host `{}` ({place})", host.name),
                )
                .hint("host names must be unique across the inventory; rename or remove one"),
            );
            return;
        }
        let host_id = inventory.hosts.len();
        inventory.by_name.insert(host.name.clone(), host_id);
        inventory.clusters[host.cluster].hosts.push(host_id);
        inventory.hosts.push(host);
    }
}

/// A `tz:` setting checked as an IANA zone, or the inherited one.
fn zone(
    errors: &mut Diagnostics,
    path: &Path,
    at: String,
    tz: &Option<String>,
    inherited: &Option<String>,
) -> Option<String> {
    match tz {
        None => inherited.clone(),
        Some(tz) if tz.parse::<chrono_tz::Tz>().is_ok() => Some(tz.clone()),
        Some(tz) => {
            errors.push(
                Diagnostic::new(path, format!("{at}: unknown time zone `tz: {tz}`"))
                    .hint("use an IANA zone name like `Asia/Shanghai`, `Europe/Berlin` or `UTC`"),
            );
            inherited.clone()
        }
    }
}

fn merged(base: &Vars, layer: &Vars) -> Vars {
    let mut vars = base.clone();
    vars.extend(layer.iter().map(|(k, v)| (k.clone(), v.clone())));
    vars
}

/// Groups are regions, clusters and roles; all share one namespace with host names.
fn build_groups(inventory: &mut Inventory, errors: &mut Diagnostics) {
    let path = inventory.file.clone();
    let mut kinds: BTreeMap<String, &'static str> = BTreeMap::new();
    let mut clash = |name: &str, kind: &'static str, kinds: &mut BTreeMap<String, &'static str>| {
        if inventory.by_name.contains_key(name) {
            errors.push(Diagnostic::new(&path, format!("{kind} `{name}` has the same name as a host")).hint("groups (regions, clusters, roles) and hosts share one namespace; rename one of them"));
        } else if let Some(other) = kinds.get(name) {
            if *other != kind || kind != "role" {
                errors.push(
                    Diagnostic::new(
                        &path,
                        format!("{kind} `{name}` has the same name as a {other}"),
                    )
                    .hint("regions, clusters and roles share one namespace; rename one of them"),
                );
            }
        }
        kinds.insert(name.to_string(), kind);
    };
    for region in &inventory.regions {
        clash(&region.name, "region", &mut kinds);
    }
    for cluster in &inventory.clusters {
        clash(&cluster.name, "cluster", &mut kinds);
    }
    let mut groups: BTreeMap<String, Vec<HostId>> = BTreeMap::new();
    for (id, host) in inventory.hosts.iter().enumerate() {
        groups
            .entry(inventory.regions[host.region].name.clone())
            .or_default()
            .push(id);
        groups
            .entry(inventory.clusters[host.cluster].name.clone())
            .or_default()
            .push(id);
        for role in &host.roles {
            groups.entry(role.clone()).or_default().push(id);
        }
    }
    let roles: std::collections::BTreeSet<&String> =
        inventory.hosts.iter().flat_map(|h| &h.roles).collect();
    for role in roles {
        clash(role, "role", &mut kinds);
    }
    for (name, hosts) in &mut groups {
        if name == "all" {
            errors.push(
                Diagnostic::new(
                    &path,
                    "`all` is reserved for every host and cannot name a region, cluster or role",
                )
                .hint("rename it"),
            );
        }
        hosts.dedup();
    }
    inventory.groups = groups;
}

#[cfg(test)]
mod tests;
