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
        } => {
            let fleet = Fleet::start(flagship_layout(&dir, *regions, *clusters, *hosts))?;
            let inventory = dir.join("inventory.yaml");
            fleet.write_inventory(&inventory)?;
            let count = fleet.hosts().len();
            fleet.detach()?;
            println!("lab up: {count} sshd servers on loopback ({regions} regions × {clusters} clusters × {hosts} hosts)");
            println!("inventory: {}", inventory.display());
            println!(
                "try: pony deploy -i {} playbooks/mail-rollout.yaml --yes",
                inventory.display()
            );
            println!("stop with: pony lab down");
        }
        LabAction::Down => {
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
