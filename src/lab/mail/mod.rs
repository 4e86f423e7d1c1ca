//! The lab's mail services (`pony lab up --mail`): on every lab host, a real Postfix
//! (smtpd on the host's own loopback address, its own config, queue and data directories)
//! and a real Dovecot (IMAP and LMTP on the host's address, its own base_dir, lab users
//! from a static file, Maildir under the host's mail home). MTA hosts relay their region's
//! mail to the region's store hosts over LMTP, so a message travels MTA → queue → LMTP →
//! Maildir and is readable over IMAP.
//!
//! The first release (`lab-1`) is rendered from the same templates the real-world
//! playbook (`playbooks/postfix-dovecot.yaml`) deploys, into
//! `<root>/mail/releases/lab-1`, with `<root>/mail/current` pointing at it; the daemons
//! read their config through `current`, so a deploy switches the link and reloads.
//!
//! Everything started here is stopped by [`stop`] through the daemons' own control
//! commands and then by the pids in their pid files (all inside the lab's folder); the
//! addresses added to `lo` (Postfix only listens on addresses that are on an interface)
//! are removed again.

use super::LabHost;
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod daemons;

use daemons::{add_address, prepare, read_pid, start_service, stop_service, wait_listening};

/// What `lab down` reads to stop the mail services.
const STATE_FILE: &str = "mail.json";
/// The release the lab starts with.
pub const FIRST_RELEASE: &str = "lab-1";
pub const DOMAIN: &str = "lab.test";
pub const USERS: [&str; 3] = ["alice", "bob", "traffic"];
pub const PASSWORD: &str = "lab-secret";
const INSTALL_HINT: &str =
    "install them with 'apt-get install -y postfix dovecot-imapd dovecot-lmtpd iptables' (scripts/test does)";

/// The playbook's templates, shared with the lab so that the lab's first release is the
/// same config a deploy renders.
pub const TEMPLATES: [(&str, &str); 6] = [
    (
        "postfix/main.cf",
        include_str!("../../../playbooks/templates/postfix/main.cf.j2"),
    ),
    (
        "postfix/master.cf",
        include_str!("../../../playbooks/templates/postfix/master.cf.j2"),
    ),
    (
        "postfix/header_checks",
        include_str!("../../../playbooks/templates/postfix/header_checks.j2"),
    ),
    (
        "postfix/transport",
        include_str!("../../../playbooks/templates/postfix/transport.j2"),
    ),
    (
        "dovecot/dovecot.conf",
        include_str!("../../../playbooks/templates/dovecot/dovecot.conf.j2"),
    ),
    (
        "dovecot/users",
        include_str!("../../../playbooks/templates/dovecot/users.j2"),
    ),
];

/// `playbooks/postfix-dovecot.yaml`, built in, so that the mail lab works from any folder.
const PLAYBOOK: &str = include_str!("../../../playbooks/postfix-dovecot.yaml");

/// Writes the real-world playbook and its templates next to the lab's inventory.
pub fn write_playbook(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("postfix-dovecot.yaml");
    std::fs::write(&path, PLAYBOOK)?;
    for (name, text) in TEMPLATES {
        let template = dir.join("templates").join(format!("{name}.j2"));
        std::fs::create_dir_all(template.parent().expect("a parent"))?;
        std::fs::write(&template, text)?;
    }
    Ok(path)
}

/// One host's mail services.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailHost {
    pub name: String,
    pub region: String,
    pub roles: Vec<String>,
    pub address: Ipv4Addr,
    /// `<root>/mail`: releases, queue, Maildirs, logs.
    pub home: PathBuf,
}

impl MailHost {
    pub fn is_store(&self) -> bool {
        self.roles.iter().any(|r| r == "store")
    }

    pub fn is_mta(&self) -> bool {
        self.roles.iter().any(|r| r == "mta")
    }

    pub fn postfix_config(&self) -> PathBuf {
        self.home.join("current/postfix")
    }

    pub fn dovecot_config(&self) -> PathBuf {
        self.home.join("current/dovecot/dovecot.conf")
    }

    pub fn maildir(&self) -> PathBuf {
        self.home.join("maildir")
    }

    /// The release `current` points at.
    pub fn release(&self) -> Option<String> {
        std::fs::read_link(self.home.join("current"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    }

    fn postfix_pid(&self) -> Option<u32> {
        read_pid(&self.home.join("postfix/spool/pid/master.pid"))
    }

    fn dovecot_pid(&self) -> Option<u32> {
        read_pid(&self.home.join("dovecot/run/master.pid"))
    }
}

/// The lab's mail fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailLab {
    pub hosts: Vec<MailHost>,
    /// Addresses this lab added to `lo`.
    pub added_addresses: Vec<Ipv4Addr>,
}

/// A service of a lab host, for tests that take one down and bring it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Postfix,
    Dovecot,
}

impl MailLab {
    pub fn load(dir: &Path) -> Result<MailLab> {
        let path = dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "no mail lab in {} (start one with `{}`)",
                dir.display(),
                crate::hint::pony_here("lab up --mail")
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))
    }

    pub fn host(&self, name: &str) -> &MailHost {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no mail host {name}"))
    }

    /// The MTAs of each region, in inventory order.
    pub fn mtas_by_region(&self) -> BTreeMap<String, Vec<&MailHost>> {
        let mut out: BTreeMap<String, Vec<&MailHost>> = BTreeMap::new();
        for h in self.hosts.iter().filter(|h| h.is_mta()) {
            out.entry(h.region.clone()).or_default().push(h);
        }
        out
    }

    pub fn stores(&self) -> impl Iterator<Item = &MailHost> {
        self.hosts.iter().filter(|h| h.is_store())
    }

    /// Stops one service of one host (a store that goes down, in a test).
    pub fn stop_service(&self, host: &str, service: Service) -> Result<()> {
        stop_service(self.host(host), service).map(drop)
    }

    /// Starts it again.
    pub fn start_service(&self, host: &str, service: Service) -> Result<()> {
        let h = self.host(host);
        start_service(h, service)?;
        wait_listening(h, service)
    }

    /// Messages in a host's Postfix queue (`postqueue -j`).
    pub fn queued(&self, host: &str) -> Result<usize> {
        let out = Command::new("postqueue")
            .arg("-c")
            .arg(self.host(host).postfix_config())
            .arg("-j")
            .output()
            .context("running postqueue")?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count())
    }

    /// Whether every host's Postfix queue is empty (`postqueue -j` prints nothing and
    /// succeeds): no message is waiting, being delivered or being relayed anywhere. A
    /// queue that cannot be read counts as not empty.
    pub fn queues_empty(&self) -> bool {
        self.hosts.iter().all(|h| {
            Command::new("postqueue")
                .arg("-c")
                .arg(h.postfix_config())
                .arg("-j")
                .stderr(Stdio::null())
                .output()
                .is_ok_and(|out| {
                    out.status.success() && out.stdout.iter().all(u8::is_ascii_whitespace)
                })
        })
    }

    /// `postqueue -f` on every host: deferred mail is tried again now.
    pub fn flush_all(&self) {
        for h in &self.hosts {
            let _ = Command::new("postqueue")
                .arg("-c")
                .arg(h.postfix_config())
                .arg("-f")
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Starts Postfix and Dovecot on every host of the fleet and writes `<dir>/mail.json`.
pub fn start(dir: &Path, hosts: &[LabHost]) -> Result<MailLab> {
    // The shipped playbook's drain-lmtp step closes a store's LMTP port with iptables and
    // runs Postfix's commands under `script` so that their errors are printed.
    for tool in [
        "postfix",
        "postqueue",
        "dovecot",
        "doveadm",
        "iptables",
        "script",
    ] {
        let usual = [format!("/usr/sbin/{tool}"), format!("/usr/bin/{tool}")];
        let usual: Vec<&str> = usual.iter().map(String::as_str).collect();
        if super::setup::find_in_path(tool, &usual).is_none() {
            bail!("{tool} not found: the mail lab needs Postfix, Dovecot, iptables and script; {INSTALL_HINT}");
        }
    }
    let mail_hosts: Vec<MailHost> = hosts
        .iter()
        .map(|h| MailHost {
            name: h.name.clone(),
            region: h.region.clone(),
            roles: h.roles.clone(),
            address: h.address,
            home: h.root.join("mail"),
        })
        .collect();
    for region in mail_hosts.iter().map(|h| &h.region) {
        if !mail_hosts
            .iter()
            .any(|h| &h.region == region && h.is_store())
        {
            bail!("region {region} has no host with role `store` to deliver its mail to: use --clusters 2 or more");
        }
    }
    if let Some(first) = mail_hosts.first() {
        check_searchable(&first.home)?;
    }
    let mut lab = MailLab {
        hosts: mail_hosts,
        added_addresses: Vec::new(),
    };
    // Written first, so that `lab down` can clean up after a failed start.
    save(dir, &lab)?;
    for h in &lab.hosts {
        if add_address(h.address)? {
            lab.added_addresses.push(h.address);
            save(dir, &lab)?;
        }
        prepare(&lab, h)?;
    }
    for h in &lab.hosts {
        start_service(h, Service::Postfix)?;
        start_service(h, Service::Dovecot)?;
    }
    for h in &lab.hosts {
        wait_listening(h, Service::Postfix)?;
        wait_listening(h, Service::Dovecot)?;
    }
    Ok(lab)
}

/// Postfix and Dovecot drop root: every folder above a mail home must be searchable by
/// others (a `mktemp -d` folder, mode 0700, is not).
fn check_searchable(home: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for dir in home.ancestors().skip(1) {
        let Ok(meta) = std::fs::metadata(dir) else {
            continue;
        };
        if meta.permissions().mode() & 0o001 == 0 {
            bail!(
                "{} (mode {:o}) is not searchable by the `postfix` and `dovecot` users the mail services run as: use a state dir whose folders others may enter (e.g. `chmod 755 {}`)",
                dir.display(),
                meta.permissions().mode() & 0o777,
                dir.display()
            );
        }
    }
    Ok(())
}

fn save(dir: &Path, lab: &MailLab) -> Result<()> {
    let path = dir.join(STATE_FILE);
    std::fs::write(&path, serde_json::to_string_pretty(lab)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// The template context of a host, as the playbook's tasks see it with the lab inventory.
pub fn context(lab: &MailLab, host: &MailHost, version: &str) -> serde_json::Value {
    serde_json::json!({
        "host": {
            "name": host.name,
            "address": host.address.to_string(),
            "region": host.region,
            "roles": host.roles,
        },
        "version": version,
        "mail_home": host.home,
        "mail_domain": DOMAIN,
        "mail_stores": stores_of(lab, &host.region),
        "mail_users": USERS,
        "mail_password": PASSWORD,
    })
}

fn stores_of(lab: &MailLab, region: &str) -> Vec<String> {
    lab.hosts
        .iter()
        .filter(|h| h.region == region && h.is_store())
        .map(|h| h.address.to_string())
        .collect()
}

/// What `lab down` did to the mail services.
#[derive(Debug, Default)]
pub struct StopSummary {
    pub stopped: usize,
}

/// Stops every mail service of the lab in `dir` and removes the addresses it added.
pub fn stop(dir: &Path) -> Result<Option<StopSummary>> {
    let Ok(lab) = MailLab::load(dir) else {
        return Ok(None);
    };
    // All at once: each master takes a second or two to end its children (Dovecot's
    // `doveadm stop` ~2.5 s), which one after the other made a 12-host lab's stop a minute.
    let stopped: Vec<bool> = std::thread::scope(|scope| {
        let stopping: Vec<_> = lab
            .hosts
            .iter()
            .flat_map(|h| [(h, Service::Postfix), (h, Service::Dovecot)])
            .map(|(h, service)| scope.spawn(move || stop_service(h, service)))
            .collect();
        stopping
            .into_iter()
            .map(|thread| thread.join().expect("a mail service's stop panicked"))
            .collect::<Result<_>>()
    })?;
    let summary = StopSummary {
        stopped: stopped.into_iter().filter(|&running| running).count(),
    };
    for address in &lab.added_addresses {
        let _ = Command::new("ip")
            .args(["addr", "del", &format!("{address}/32"), "dev", "lo"])
            .stderr(Stdio::null())
            .status();
    }
    std::fs::remove_file(dir.join(STATE_FILE))?;
    Ok(Some(summary))
}

/// Adds the mail settings to a lab inventory: the domain, users and password for
/// everyone, each region's store addresses, and each host's mail home.
pub fn add_inventory_vars(inventory: &Path, lab: &MailLab) -> Result<()> {
    use serde_yaml::{Mapping, Value};
    let text = std::fs::read_to_string(inventory)?;
    let mut doc: Value = serde_yaml::from_str(&text)?;
    let s = |v: &str| Value::String(v.to_string());
    let map = |v: &mut Value, key: &str| -> Result<Mapping> {
        Ok(v.get(key)
            .and_then(Value::as_mapping)
            .cloned()
            .unwrap_or_default())
    };
    let mut defaults = map(&mut doc, "defaults")?;
    let mut vars = defaults
        .get("vars")
        .and_then(Value::as_mapping)
        .cloned()
        .unwrap_or_default();
    vars.insert(s("mail_domain"), s(DOMAIN));
    vars.insert(
        s("mail_users"),
        Value::Sequence(USERS.iter().map(|u| s(u)).collect()),
    );
    vars.insert(s("mail_password"), s(PASSWORD));
    defaults.insert(s("vars"), Value::Mapping(vars));
    doc["defaults"] = Value::Mapping(defaults);
    let regions = doc["regions"]
        .as_mapping_mut()
        .ok_or_else(|| anyhow!("{}: no regions", inventory.display()))?;
    for (name, region) in regions.iter_mut() {
        let name = name.as_str().unwrap_or_default().to_string();
        let stores = stores_of(lab, &name);
        let region = region
            .as_mapping_mut()
            .ok_or_else(|| anyhow!("region {name} is not a mapping"))?;
        let mut vars = Mapping::new();
        vars.insert(
            s("mail_stores"),
            Value::Sequence(stores.iter().map(|a| s(a)).collect()),
        );
        region.insert(s("vars"), Value::Mapping(vars));
        let Some(clusters) = region
            .get_mut(s("clusters"))
            .and_then(Value::as_mapping_mut)
        else {
            continue;
        };
        for (_, cluster) in clusters.iter_mut() {
            let Some(hosts) = cluster.get_mut("hosts").and_then(Value::as_mapping_mut) else {
                continue;
            };
            for (host, spec) in hosts.iter_mut() {
                let host = host.as_str().unwrap_or_default();
                let Some(home) = lab.hosts.iter().find(|h| h.name == host).map(|h| &h.home) else {
                    continue;
                };
                if let Some(vars) = spec.get_mut("vars").and_then(Value::as_mapping_mut) {
                    vars.insert(s("mail_home"), s(&home.display().to_string()));
                }
            }
        }
    }
    let yaml = serde_yaml::to_string(&doc)?;
    let header: String = text
        .lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(
        inventory,
        format!("{header}# with the mail lab's settings (pony lab up --mail)\n{yaml}"),
    )?;
    Ok(())
}
