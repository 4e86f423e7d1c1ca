//! What a fleet is built from: the layout expanded into hosts, loopback addresses, keys,
//! sshd and client configs, and the inventory file.

use super::*;

pub(super) struct PlannedHost {
    pub(super) name: String,
    pub(super) region: String,
    pub(super) cluster: String,
    pub(super) roles: Vec<String>,
}

/// Expands the layout into hosts, checking names (they become file names and inventory
/// groups, which share one namespace).
pub(super) fn plan_hosts(layout: &[RegionSpec]) -> Result<Vec<PlannedHost>> {
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
pub(super) struct AddressPool {
    port: u16,
    a: u8,
    b: u8,
    c: u8,
}

impl AddressPool {
    pub(super) fn new(port: u16) -> Self {
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
    pub(super) fn next(&mut self) -> Result<Ipv4Addr> {
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
pub(super) fn random_u64() -> u64 {
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

pub(super) fn find_sshd(explicit: Option<&Path>) -> Result<PathBuf> {
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
pub(super) fn find_in_path(name: &str, candidates: &[&str]) -> Option<PathBuf> {
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

pub(super) fn current_user() -> Result<String> {
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

pub(super) fn pub_path(key: &Path) -> PathBuf {
    let mut s = key.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// Runs ssh-keygen for every `(path, comment)` at once: ed25519, no passphrase.
pub(super) fn generate_keys(keygen: &Path, keys: &[(&Path, &str)]) -> Result<()> {
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

pub(super) fn sshd_config_text(port: u16, host_key: &Path, authorized_keys: &Path) -> String {
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
pub(super) fn check_sshd_config(sshd: &Path, config: &Path) -> Result<()> {
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
pub(super) fn ensure_privsep_dir() -> Result<()> {
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
pub(super) fn quote(s: &str) -> String {
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
pub(super) fn quote_expanding(p: &Path) -> String {
    quote(&p.display().to_string().replace('%', "%%"))
}

pub(super) fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

pub(super) fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
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

pub(super) fn write_inventory_file(
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
