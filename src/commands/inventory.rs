//! `pony inventory`: list the hosts of an inventory, as a table or JSON; `pony inventory
//! import`: write a pony inventory from an Ansible one (the mapping is
//! `inventory::import`'s).

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

/// `pony inventory import`: reads the Ansible inventory, maps it, checks the result as
/// `pony check` would, then writes it (stdout or `--to`) and says on stderr what it
/// made and what it left out.
pub fn import(action: &crate::cli::InventoryAction) -> anyhow::Result<Exit> {
    use crate::diag::{Diagnostic, Diagnostics};
    use crate::inventory::import::{self, ansible};
    let crate::cli::InventoryAction::Import {
        file,
        from,
        region_groups,
        cluster_groups,
        name,
        to: output,
    } = action;
    let text = std::fs::read_to_string(file)
        .map_err(|e| {
            Diagnostic::new(file, format!("cannot read the Ansible inventory: {e}"))
                .hint("pass the path of an INI, YAML or `ansible-inventory --list` JSON file")
        })
        .map_err(Diagnostics::from)?;
    let format = from.unwrap_or_else(|| ansible::Format::guess(&text));
    let groups = ansible::parse(&text, format).map_err(|(line, problem)| {
        let diagnostic = Diagnostic::new(file, problem)
            .hint("fix the line, or say the format with --from ini|yaml|json");
        Diagnostics::from(match line {
            Some(line) => diagnostic.at(line, 0),
            None => diagnostic,
        })
    })?;
    let pattern =
        |flag: &str, glob: &Option<String>| -> Result<Option<import::Globs>, Diagnostic> {
            glob.as_deref()
                .map(|g| {
                    import::Globs::new(g).map_err(|e| {
                        Diagnostic::new(
                            std::path::Path::new(flag),
                            format!("`{g}` is not a glob: {e}"),
                        )
                        .hint("write e.g. `dc_*`, `,` between several")
                    })
                })
                .transpose()
        };
    let mapping = import::GroupMapping {
        region_groups: pattern("--region-groups", region_groups).map_err(Diagnostics::from)?,
        cluster_groups: pattern("--cluster-groups", cluster_groups).map_err(Diagnostics::from)?,
    };
    let name = name.clone().unwrap_or_else(|| import::name_from_file(file));
    let imported = import::import(&groups, &name, &mapping).map_err(|problems| {
        let mut diagnostics = Diagnostics::default();
        for problem in problems {
            diagnostics.push(Diagnostic::new(file, problem));
        }
        diagnostics
    })?;
    // What is written must load: a host name or value pony refuses is said now, naming
    // the Ansible file it came from.
    let written_to = output
        .clone()
        .unwrap_or_else(|| file.with_extension("pony.yaml"));
    crate::inventory::parse(&written_to, &imported.yaml)?;
    let made = format!(
        "{} in {}, {}",
        counted(imported.hosts, "host"),
        counted(imported.regions, "region"),
        counted(imported.clusters, "cluster")
    );
    let header = format!(
        "# Imported from {} by `pony inventory import`: {made}.\n",
        file.display()
    );
    let document = format!("{header}{}", imported.yaml);
    match output {
        Some(path) => std::fs::write(path, &document)
            .map_err(|e| {
                Diagnostic::new(path, format!("cannot write the inventory: {e}"))
                    .hint("pass a writable path with --to")
            })
            .map_err(Diagnostics::from)?,
        None => crate::out!("{document}"),
    }
    eprintln!(
        "imported {made} from {}{}",
        file.display(),
        output
            .as_ref()
            .map(|p| format!(" into {}", p.display()))
            .unwrap_or_default()
    );
    for (var, hosts) in &imported.left_out {
        eprintln!(
            "left out: `{var}` on {} hosts (no pony inventory setting; a playbook's `become:` or a var may stand in)",
            super::thousands(*hosts)
        );
    }
    Ok(Exit::Success)
}

/// `1 host`, `1,050 hosts`.
fn counted(n: usize, noun: &str) -> String {
    format!(
        "{} {noun}{}",
        super::thousands(n),
        if n == 1 { "" } else { "s" }
    )
}
