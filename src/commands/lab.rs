//! `pony lab up|down`: a local fleet of real sshd servers on loopback with an inventory,
//! to try pony over SSH without any remote machine.

use crate::cli::LabAction;
use crate::exit::Exit;
use crate::lab::{ClusterSpec, Fleet, FleetOptions, RegionSpec};
use std::path::Path;

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
            fleet.detach()?;
            println!("lab up: {count} sshd servers on loopback ({regions} regions × {clusters} clusters × {hosts} hosts)");
            let playbook = match &mail_lab {
                Some(lab) => {
                    crate::lab::mail::add_inventory_vars(&inventory, lab)?;
                    println!(
                        "mail: Postfix and Dovecot on every host, release {} (MTAs relay to their region's stores over LMTP)",
                        crate::lab::mail::FIRST_RELEASE
                    );
                    "playbooks/postfix-dovecot.yaml"
                }
                None => "playbooks/mail-rollout.yaml",
            };
            println!("inventory: {}", inventory.display());
            println!(
                "try: pony deploy -i {} {playbook} --yes",
                inventory.display()
            );
            println!("stop with: pony lab down");
        }
        LabAction::Traffic { rate, duration } => return traffic(&dir, *rate, *duration),
        LabAction::Down => {
            if let Some(mail) = crate::lab::mail::stop(&dir)? {
                println!("lab down: stopped {} mail services", mail.stopped);
            }
            let summary = crate::lab::down(&dir)?;
            println!(
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
/// with roles mta (+ canary in cn-south), the others imap and store.
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
                    let roles: Vec<&str> = match (r, c) {
                        (0, 0) => vec!["mta", "canary"],
                        (_, 0) => vec!["mta"],
                        _ => vec!["imap", "store", "web"],
                    };
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
        let sending = tokio::spawn(traffic::send(traffic::regions(&lab), options, stopped));
        tokio::time::sleep(duration).await;
        let _ = stop.send(true);
        let sent = sending.await?;
        println!(
            "traffic: {} accepted, {} deferrals met, {} rejected (5xx), {} given up",
            sent.accepted.len(),
            sent.deferrals,
            sent.rejected.len(),
            sent.given_up.len()
        );
        anyhow::Ok(traffic::settle(&lab, &sent, std::time::Duration::from_secs(120)).await)
    })?;
    for (region, (sent, delivered)) in &count.regions {
        println!("  {region:<14} sent {sent:>6}  delivered {delivered:>6}");
    }
    println!("{count}");
    Ok(if count.lost.is_empty() {
        Exit::Success
    } else {
        Exit::SOME_HOSTS_FAILED
    })
}
