//! `pony inventory`: list the hosts of an inventory, as a table or JSON.

use crate::cli::InventoryFormat;
use crate::exit::Exit;
use std::path::Path;

pub fn run(path: &Path, limit: Option<&str>, format: InventoryFormat) -> anyhow::Result<Exit> {
    let inventory = crate::inventory::load(path)?;
    let selected = crate::inventory::pattern::select(&inventory, limit)
        .map_err(crate::diag::Diagnostics::from)?;
    let hosts: Vec<&crate::inventory::Host> =
        selected.iter().map(|h| &inventory.hosts[h]).collect();
    match format {
        InventoryFormat::Json => {
            let rows: Vec<serde_json::Value> = hosts
                .iter()
                .map(|h| {
                    serde_json::json!({
                        "name": h.name,
                        "address": h.destination(),
                        "region": inventory.regions[h.region].name,
                        "cluster": inventory.clusters[h.cluster].name,
                        "roles": h.roles,
                        "connection": h.connection,
                        "ssh": h.ssh,
                        "vars": h.vars,
                    })
                })
                .collect();
            crate::outln!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({ "inventory": inventory.name, "hosts": rows })
                )?
            );
        }
        InventoryFormat::Table => {
            let mut out = String::new();
            let rows: Vec<[String; 6]> = hosts
                .iter()
                .map(|h| {
                    [
                        h.name.clone(),
                        h.destination().to_string(),
                        inventory.regions[h.region].name.clone(),
                        inventory.clusters[h.cluster].name.clone(),
                        h.roles.join(","),
                        format!("{:?}", h.connection).to_lowercase(),
                    ]
                })
                .collect();
            let header = [
                "HOST",
                "ADDRESS",
                "REGION",
                "CLUSTER",
                "ROLES",
                "CONNECTION",
            ]
            .map(String::from);
            let mut widths = header.clone().map(|h| h.len());
            for row in &rows {
                for (w, cell) in widths.iter_mut().zip(row) {
                    *w = (*w).max(cell.len());
                }
            }
            for row in std::iter::once(&header).chain(&rows) {
                let line: Vec<String> = row
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                out.push_str(line.join("  ").trim_end());
                out.push('\n');
            }
            let regions: std::collections::BTreeSet<usize> =
                hosts.iter().map(|h| h.region).collect();
            let clusters: std::collections::BTreeSet<usize> =
                hosts.iter().map(|h| h.cluster).collect();
            out.push_str(&format!(
                "{} hosts in {} regions, {} clusters\n",
                super::thousands(hosts.len()),
                regions.len(),
                clusters.len()
            ));
            crate::out!("{out}");
        }
    }
    Ok(Exit::Success)
}
