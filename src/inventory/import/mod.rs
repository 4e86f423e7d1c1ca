//! `pony inventory import`: an Ansible inventory ([`ansible`]: INI, YAML, or the JSON of
//! `ansible-inventory --list`) turned into a pony inventory, with a report of what did not
//! map. Ansible has flat groups; pony has regions → clusters → hosts. The mapping:
//!
//! - **region**: the host's `pony_region` variable (from its own or any group's vars),
//!   else the one group of the host matching `--region-groups` (a glob such as `dc_*`);
//! - **cluster**: `pony_cluster`, else the one group matching `--cluster-groups`, else one
//!   cluster per region, `<region>-hosts` (pony's regions and clusters share one namespace);
//! - **roles**: every other group the host is in, directly or through `:children` (not
//!   `all`, `ungrouped`, nor the region and cluster groups);
//! - `ansible_host` → `address`, `ansible_port` → `ssh.port`, `ansible_user` → `ssh.user`,
//!   `ansible_ssh_private_key_file` → `ssh.identity_file`, `ansible_connection: local` →
//!   `connection: local`; other `ansible_*` variables are reported and left out;
//! - every other variable → `vars`, merged as Ansible merges them (`all`, then groups
//!   from the shallowest to the deepest, by name within a depth, then the host's own).
//!
//! Settings and variables every host of a cluster shares are written once on the cluster
//! (and those of the whole fleet once under `defaults`), so a 1,000-host import stays
//! readable. Hosts are written one per line, in the order the input first names them.

pub mod ansible;

use ansible::{Groups, Vars};
use indexmap::{IndexMap, IndexSet};
use serde_yaml::{Mapping, Value};
use std::collections::BTreeMap;

/// How groups map to regions and clusters.
#[derive(Debug, Clone)]
pub struct GroupMapping {
    pub region_groups: Option<Globs>,
    pub cluster_groups: Option<Globs>,
}

/// Group-name globs, `,` between several (`mx_*,imap_*`): a group matches any of them.
#[derive(Debug, Clone)]
pub struct Globs {
    text: String,
    patterns: Vec<glob::Pattern>,
}

impl Globs {
    pub fn new(text: &str) -> Result<Globs, glob::PatternError> {
        let patterns = text
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(glob::Pattern::new)
            .collect::<Result<_, _>>()?;
        Ok(Globs {
            text: text.to_string(),
            patterns,
        })
    }

    fn matches(&self, group: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(group))
    }
}

impl std::fmt::Display for Globs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// The variables that name a host's region and cluster outright.
pub const REGION_VAR: &str = "pony_region";
pub const CLUSTER_VAR: &str = "pony_cluster";

/// What an import made: the inventory's YAML and what could not be carried over.
#[derive(Debug)]
pub struct Imported {
    pub yaml: String,
    pub hosts: usize,
    pub regions: usize,
    pub clusters: usize,
    /// `ansible_*` variables left out, each with how many hosts had it.
    pub left_out: BTreeMap<String, usize>,
}

/// One host as pony will have it.
#[derive(Debug)]
struct Placed {
    name: String,
    region: String,
    cluster: String,
    roles: Vec<String>,
    address: Option<Value>,
    connection: Option<&'static str>,
    ssh: Mapping,
    vars: Mapping,
}

/// Maps `groups` to a pony inventory named `name`; the errors list every host that could
/// not be placed, with the fix.
pub fn import(
    groups: &Groups,
    name: &str,
    mapping: &GroupMapping,
) -> Result<Imported, Vec<String>> {
    let ancestry = Ancestry::of(groups);
    let mut left_out: BTreeMap<String, usize> = BTreeMap::new();
    let mut errors = Vec::new();
    let mut placed = Vec::new();
    for host in hosts_in_order(groups) {
        let member_of = ancestry.groups_of(&host);
        let mut vars = ancestry.vars_of(groups, &host, &member_of);
        match place(&host, &member_of, &mut vars, mapping) {
            Ok((region, cluster, skip)) => {
                let roles = member_of
                    .iter()
                    .filter(|g| !matches!(g.as_str(), "all" | "ungrouped"))
                    .filter(|g| !skip.contains(*g))
                    .cloned()
                    .collect();
                let mut host = Placed {
                    name: host,
                    region,
                    cluster,
                    roles,
                    address: None,
                    connection: None,
                    ssh: Mapping::new(),
                    vars: Mapping::new(),
                };
                carry_vars(&mut host, vars, &mut left_out);
                placed.push(host);
            }
            Err(error) => errors.push(error),
        }
    }
    if placed.is_empty() && errors.is_empty() {
        errors.push("the inventory has no hosts".into());
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let (yaml, regions, clusters) = write(name, &placed);
    Ok(Imported {
        yaml,
        hosts: placed.len(),
        regions,
        clusters,
        left_out,
    })
}

/// The file's name without its extension, made a valid inventory name.
pub fn name_from_file(file: &std::path::Path) -> String {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.is_empty() {
        "imported".into()
    } else {
        name
    }
}

/// Every host, in the order the input first names it.
fn hosts_in_order(groups: &Groups) -> Vec<String> {
    let mut hosts: IndexSet<String> = groups.host_vars.keys().cloned().collect();
    for group in groups.groups.values() {
        hosts.extend(group.hosts.iter().cloned());
    }
    hosts.into_iter().collect()
}

/// The region, the cluster, and the groups that gave them (they are not roles).
fn place(
    host: &str,
    member_of: &IndexSet<String>,
    vars: &mut Vars,
    mapping: &GroupMapping,
) -> Result<(String, String, Vec<String>), String> {
    let mut skip = Vec::new();
    let mut pick = |var: &str, pattern: &Option<Globs>, flag: &str| {
        if let Some(value) = vars.shift_remove(var) {
            return Ok(Some(scalar_text(&value)));
        }
        let Some(pattern) = pattern else {
            return Ok(None);
        };
        let matching: Vec<&String> = member_of.iter().filter(|g| pattern.matches(g)).collect();
        match matching.as_slice() {
            [one] => {
                skip.push((*one).clone());
                Ok(Some((*one).clone()))
            }
            [] => Ok(None),
            many => Err(format!(
                "host `{host}` is in {} groups matching {flag} `{pattern}` ({}); a host belongs to one: narrow the pattern or set `{var}` on the host",
                many.len(),
                many.iter().map(|g| g.as_str()).collect::<Vec<_>>().join(", ")
            )),
        }
    };
    let region = pick(REGION_VAR, &mapping.region_groups, "--region-groups")?.ok_or_else(|| {
        format!(
            "host `{host}` has no region: none of its groups ({}) matches --region-groups and it has no `{REGION_VAR}` variable; pass --region-groups GLOB (e.g. `dc_*`) or set `{REGION_VAR}` in a group's vars",
            member_of.iter().map(|g| g.as_str()).collect::<Vec<_>>().join(", ")
        )
    })?;
    let cluster = pick(CLUSTER_VAR, &mapping.cluster_groups, "--cluster-groups")?
        .unwrap_or_else(|| format!("{region}-hosts"));
    Ok((region, cluster, skip))
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

/// Moves Ansible's connection variables to pony's settings; the rest become vars.
fn carry_vars(host: &mut Placed, vars: Vars, left_out: &mut BTreeMap<String, usize>) {
    for (key, value) in vars {
        match key.as_str() {
            "ansible_host" | "ansible_ssh_host" => host.address = Some(value),
            "ansible_port" | "ansible_ssh_port" => {
                host.ssh.insert("port".into(), value);
            }
            "ansible_user" | "ansible_ssh_user" => {
                host.ssh.insert("user".into(), value);
            }
            "ansible_ssh_private_key_file" => {
                host.ssh.insert("identity_file".into(), value);
            }
            "ansible_connection" if scalar_text(&value) == "local" => {
                host.connection = Some("local")
            }
            "ansible_connection" if matches!(scalar_text(&value).as_str(), "ssh" | "smart") => {}
            other if other.starts_with("ansible_") => {
                *left_out.entry(other.to_string()).or_default() += 1;
            }
            _ => {
                host.vars.insert(Value::String(key), value);
            }
        }
    }
}

/// Which groups each group sits under, and how deep below `all`.
struct Ancestry {
    parents: IndexMap<String, Vec<String>>,
    depth: IndexMap<String, usize>,
    direct: IndexMap<String, Vec<String>>,
}

impl Ancestry {
    fn of(groups: &Groups) -> Ancestry {
        let mut parents: IndexMap<String, Vec<String>> = IndexMap::new();
        let mut direct: IndexMap<String, Vec<String>> = IndexMap::new();
        for (name, group) in &groups.groups {
            for child in &group.children {
                parents.entry(child.clone()).or_default().push(name.clone());
            }
            for host in &group.hosts {
                direct.entry(host.clone()).or_default().push(name.clone());
            }
        }
        let mut depth = IndexMap::new();
        for name in groups.groups.keys() {
            let d = Self::depth_of(name, &parents, &mut Vec::new());
            depth.insert(name.clone(), d);
        }
        Ancestry {
            parents,
            depth,
            direct,
        }
    }

    /// The longest path up to a group with no parent (`all` is 0); a circle counts once.
    fn depth_of(
        name: &str,
        parents: &IndexMap<String, Vec<String>>,
        seen: &mut Vec<String>,
    ) -> usize {
        if name == "all" || seen.iter().any(|s| s == name) {
            return 0;
        }
        seen.push(name.to_string());
        let d = parents
            .get(name)
            .map(|ps| {
                ps.iter()
                    .map(|p| 1 + Self::depth_of(p, parents, seen))
                    .max()
                    .unwrap_or(1)
            })
            .unwrap_or(1);
        seen.pop();
        d
    }

    /// Every group the host is in, directly or through `:children`.
    fn groups_of(&self, host: &str) -> IndexSet<String> {
        let mut found = IndexSet::new();
        let mut todo: Vec<String> = self.direct.get(host).cloned().unwrap_or_default();
        while let Some(group) = todo.pop() {
            if found.insert(group.clone()) {
                todo.extend(self.parents.get(&group).cloned().unwrap_or_default());
            }
        }
        found.insert("all".to_string());
        found
    }

    /// The host's variables as Ansible merges them.
    fn vars_of(&self, groups: &Groups, host: &str, member_of: &IndexSet<String>) -> Vars {
        let mut ordered: Vec<&String> = member_of.iter().collect();
        ordered.sort_by_key(|g| (self.depth.get(*g).copied().unwrap_or(0), (*g).clone()));
        let mut vars = Vars::new();
        for group in ordered {
            if let Some(g) = groups.groups.get(group) {
                vars.extend(g.vars.clone());
            }
        }
        if let Some(own) = groups.host_vars.get(host) {
            vars.extend(own.clone());
        }
        vars
    }
}

/// The inventory's YAML, and how many regions and clusters it has.
fn write(name: &str, hosts: &[Placed]) -> (String, usize, usize) {
    let mut tree: IndexMap<&str, IndexMap<&str, Vec<&Placed>>> = IndexMap::new();
    for host in hosts {
        tree.entry(&host.region)
            .or_default()
            .entry(&host.cluster)
            .or_default()
            .push(host);
    }
    let all: Vec<&Placed> = hosts.iter().collect();
    let fleet = Shared::of(&all, &Shared::default());
    let mut regions = Mapping::new();
    let mut cluster_count = 0;
    for (region, clusters) in &tree {
        let mut cluster_map = Mapping::new();
        for (cluster, members) in clusters {
            cluster_count += 1;
            let shared = Shared::of(members, &fleet);
            let mut body = shared.settings();
            if !shared.roles.is_empty() {
                body.insert("roles".into(), roles_value(&shared.roles));
            }
            let mut host_map = Mapping::new();
            for host in members {
                host_map.insert(host.name.clone().into(), host_body(host, &shared, &fleet));
            }
            body.insert("hosts".into(), Value::Mapping(host_map));
            cluster_map.insert((*cluster).into(), Value::Mapping(body));
        }
        let mut region_body = Mapping::new();
        region_body.insert("clusters".into(), Value::Mapping(cluster_map));
        regions.insert((*region).into(), Value::Mapping(region_body));
    }
    let mut top = Mapping::new();
    top.insert("name".into(), name.into());
    let defaults = fleet.settings();
    if !defaults.is_empty() {
        top.insert("defaults".into(), Value::Mapping(defaults));
    }
    top.insert("regions".into(), Value::Mapping(regions));
    let yaml = serde_yaml::to_string(&Value::Mapping(top)).expect("plain YAML values");
    (yaml, tree.len(), cluster_count)
}

fn roles_value(roles: &[String]) -> Value {
    Value::Sequence(roles.iter().map(|r| Value::String(r.clone())).collect())
}

/// What every host of a set has in common (and that an upper level does not give
/// already): written once for the set.
#[derive(Debug, Default)]
struct Shared {
    connection: Option<&'static str>,
    ssh: Mapping,
    vars: Mapping,
    roles: Vec<String>,
}

impl Shared {
    fn of(hosts: &[&Placed], above: &Shared) -> Shared {
        let Some((first, rest)) = hosts.split_first() else {
            return Shared::default();
        };
        let common = |pick: &dyn Fn(&Placed) -> &Mapping, above: &Mapping| -> Mapping {
            pick(first)
                .iter()
                .filter(|(k, v)| rest.iter().all(|h| pick(h).get(*k) == Some(*v)))
                .filter(|(k, v)| above.get(*k) != Some(*v))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        let connection = first
            .connection
            .filter(|c| rest.iter().all(|h| h.connection == Some(*c)))
            .filter(|c| above.connection != Some(*c));
        Shared {
            connection,
            ssh: common(&|h| &h.ssh, &above.ssh),
            vars: common(&|h| &h.vars, &above.vars),
            roles: first
                .roles
                .iter()
                .filter(|r| rest.iter().all(|h| h.roles.contains(r)))
                .cloned()
                .collect(),
        }
    }

    fn settings(&self) -> Mapping {
        let mut body = Mapping::new();
        if let Some(connection) = self.connection {
            body.insert("connection".into(), connection.into());
        }
        if !self.ssh.is_empty() {
            body.insert("ssh".into(), Value::Mapping(self.ssh.clone()));
        }
        if !self.vars.is_empty() {
            body.insert("vars".into(), Value::Mapping(self.vars.clone()));
        }
        body
    }
}

/// A host's own part: what neither its cluster nor the fleet gives it.
fn host_body(host: &Placed, cluster: &Shared, fleet: &Shared) -> Value {
    let own = |mine: &Mapping, a: &Mapping, b: &Mapping| -> Mapping {
        mine.iter()
            .filter(|(k, v)| a.get(*k).or(b.get(*k)) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let mut body = Mapping::new();
    if let Some(address) = &host.address {
        body.insert("address".into(), address.clone());
    }
    let inherited_connection = cluster.connection.or(fleet.connection);
    if host.connection != inherited_connection {
        if let Some(connection) = host.connection {
            body.insert("connection".into(), connection.into());
        }
    }
    let ssh = own(&host.ssh, &cluster.ssh, &fleet.ssh);
    if !ssh.is_empty() {
        body.insert("ssh".into(), Value::Mapping(ssh));
    }
    let roles: Vec<String> = host
        .roles
        .iter()
        .filter(|r| !cluster.roles.contains(r))
        .cloned()
        .collect();
    if !roles.is_empty() {
        body.insert("roles".into(), roles_value(&roles));
    }
    let vars = own(&host.vars, &cluster.vars, &fleet.vars);
    if !vars.is_empty() {
        body.insert("vars".into(), Value::Mapping(vars));
    }
    if body.is_empty() {
        Value::Null
    } else {
        Value::Mapping(body)
    }
}

#[cfg(test)]
mod tests;
