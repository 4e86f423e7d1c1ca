//! `pony lab up|down`: a local fleet of real sshd servers on loopback with an inventory
//! and the flagship playbook fitted to it, to try pony over SSH without any remote
//! machine.

use crate::cli::LabAction;
use crate::exit::Exit;
use crate::lab::{ClusterSpec, Fleet, FleetOptions, RegionSpec};
use std::path::{Path, PathBuf};

/// `playbooks/mail-rollout.yaml`, built in, so that the lab works from any folder.
const FLAGSHIP: &str = include_str!("../../playbooks/mail-rollout.yaml");

pub fn run(state_dir: &Path, action: &LabAction) -> anyhow::Result<Exit> {
    let dir = state_dir.join("lab");
    match action {
        LabAction::Up {
            regions,
            clusters,
            hosts,
            mail,
        } => {
            let fleet = Fleet::start(flagship_layout(&dir, *regions, *clusters, *hosts))?;
            let inventory = dir.join("inventory.yaml");
            fleet.write_inventory(&inventory)?;
            let count = fleet.hosts().len();
            let mail_lab = if *mail {
                match crate::lab::mail::start(&dir, fleet.hosts()) {
                    Ok(lab) => Some(lab),
                    Err(e) => {
                        let _ = crate::lab::mail::stop(&dir);
                        return Err(e);
                    }
                }
            } else {
                None
            };
            let playbook = match &mail_lab {
                Some(lab) => {
                    crate::lab::mail::add_inventory_vars(&inventory, lab)?;
                    crate::lab::mail::write_playbook(&dir)?
                }
                None => write_playbook(&dir, &inventory)?,
            };
            fleet.detach()?;
            crate::outln!("lab up: {count} sshd servers on loopback ({regions} regions × {clusters} clusters × {hosts} hosts)");
            if mail_lab.is_some() {
                crate::outln!(
                    "mail: Postfix and Dovecot on every host, release {} (MTAs relay to their region's stores over LMTP)",
                    crate::lab::mail::FIRST_RELEASE
                );
            }
            crate::outln!("inventory: {}", inventory.display());
            crate::outln!("playbook:  {}", playbook.display());
            crate::outln!(
                "try: {}",
                crate::hint::pony(format_args!(
                    "deploy -i {} {} --yes",
                    shell_word(&inventory),
                    shell_word(&playbook)
                ))
            );
            crate::outln!("stop with: {}", crate::hint::pony_here("lab down"));
        }
        LabAction::Traffic { rate, duration } => return traffic(&dir, *rate, *duration),
        LabAction::Down => {
            if let Some(mail) = crate::lab::mail::stop(&dir)? {
                crate::outln!("lab down: stopped {} mail services", mail.stopped);
            }
            let summary = crate::lab::down(&dir)?;
            crate::outln!(
                "lab down: stopped {} sshd servers ({} were already gone)",
                summary.killed.len(),
                summary.already_gone.len()
            );
        }
    }
    Ok(Exit::Success)
}

/// A layout the flagship playbook runs on: regions named like the local inventory's
/// (`cn-south` first, so the canary wave has hosts), the first cluster of each region
/// with role mta (+ canary in cn-south), the others imap, store and web. A region of one
/// cluster has every role, so that each region has a store host for the schema migration.
fn flagship_layout(dir: &Path, regions: usize, clusters: usize, hosts: usize) -> FleetOptions {
    const NAMES: [&str; 7] = [
        "cn-south",
        "eu-west",
        "us-east",
        "cn-north",
        "ap-southeast",
        "sa-east",
        "us-west",
    ];
    let layout = (0..regions)
        .map(|r| {
            let region = NAMES
                .get(r)
                .map(|n| n.to_string())
                .unwrap_or_else(|| format!("region-{}", r + 1));
            let specs = (0..clusters)
                .map(|c| {
                    let mut roles: Vec<&str> = match c {
                        0 if clusters == 1 => vec!["mta", "imap", "store", "web"],
                        0 => vec!["mta"],
                        _ => vec!["imap", "store", "web"],
                    };
                    if (r, c) == (0, 0) {
                        roles.push("canary");
                    }
                    ClusterSpec::new(format!("{region}-c{}", c + 1), hosts, roles)
                })
                .collect();
            RegionSpec::new(region, specs)
        })
        .collect();
    FleetOptions::new(dir, "lab", layout)
}

/// `pony lab traffic`: steady numbered mail, then the exact count.
fn traffic(dir: &Path, rate: f64, duration: std::time::Duration) -> anyhow::Result<Exit> {
    use crate::lab::traffic;
    let lab = crate::lab::mail::MailLab::load(dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let count = runtime.block_on(async {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let options = traffic::Options {
            rate,
            ..traffic::Options::default()
        };
        let started = std::time::Instant::now();
        let sending = tokio::spawn(traffic::send(traffic::regions(&lab), options, stopped));
        // Until the duration is over or an interrupt (a script stops it when its rollout
        // ends).
        tokio::select! {
            _ = tokio::time::sleep(duration) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        let sending_for = started.elapsed();
        let _ = stop.send(true);
        let sent = sending.await?;
        crate::outln!(
            "traffic: {} accepted in {:.1}s ({:.1}/s), {} deferrals met, {} rejected (5xx), {} given up",
            sent.accepted.len(),
            sending_for.as_secs_f64(),
            sent.accepted.len() as f64 / sending_for.as_secs_f64(),
            sent.deferrals,
            sent.rejected.len(),
            sent.given_up.len()
        );
        anyhow::Ok(traffic::settle(&lab, &sent, std::time::Duration::from_secs(120)).await)
    })?;
    for (region, (sent, delivered)) in &count.regions {
        crate::outln!("  {region:<14} sent {sent:>6}  delivered {delivered:>6}");
    }
    crate::outln!("{count}");
    Ok(if count.lost.is_empty() {
        Exit::Success
    } else {
        Exit::SOME_HOSTS_FAILED
    })
}

/// Writes the flagship playbook next to the lab's inventory. On a fleet too small for
/// some of its waves (one region has no `world`; a cn-south made only of canaries has no
/// `china`), the waves that would take no host are left out, so that the playbook is
/// valid for this fleet; everything else is the flagship's.
fn write_playbook(dir: &Path, inventory: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("mail-rollout.yaml");
    std::fs::write(&path, FLAGSHIP)?;
    let loaded = crate::inventory::load(inventory)
        .and_then(|inventory| crate::playbook::load(&path).map(|playbook| (inventory, playbook)));
    let (inventory, playbook) = loaded.map_err(|d| anyhow::anyhow!("{d}"))?;
    let sizes = crate::plan::wave_sizes(&inventory, &playbook);
    if sizes.iter().all(|&n| n > 0) {
        return Ok(path);
    }
    let mut doc: serde_yaml::Value = serde_yaml::from_str(FLAGSHIP)?;
    let Some(waves) = doc
        .get_mut("strategy")
        .and_then(|s| s.get_mut("waves"))
        .and_then(serde_yaml::Value::as_sequence_mut)
    else {
        anyhow::bail!("the built-in mail-rollout playbook has no strategy.waves");
    };
    let mut index = 0;
    waves.retain(|_| {
        index += 1;
        sizes[index - 1] > 0
    });
    let left: Vec<&str> = playbook
        .strategy
        .waves
        .iter()
        .zip(&sizes)
        .filter(|(_, n)| **n == 0)
        .map(|(w, _)| w.name.as_str())
        .collect();
    let text = format!(
        "# playbooks/mail-rollout.yaml fitted to this lab by `pony lab up`: without the \
         waves that would take no host here ({}).\n{}",
        left.join(", "),
        serde_yaml::to_string(&doc)?
    );
    std::fs::write(&path, text)?;
    Ok(path)
}

/// A path as one shell word (quoted only when it needs to be).
fn shell_word(path: &Path) -> String {
    crate::shell::quote(&path.display().to_string())
}
