//! Wave membership: which wave each inventory host belongs to, and the problems with
//! the playbook's `strategy.waves` against the inventory.

use crate::diag::Diagnostic;
use crate::diag::Diagnostics;
use crate::inventory::{Inventory, RegionId};
use crate::playbook::Playbook;
use std::collections::HashSet;

/// Hosts are put into waves in order: a wave takes the hosts of its regions (matching its
/// `hosts:`) that no earlier wave took. Every host must land in exactly one wave.
pub(super) fn assign_waves(
    inventory: &Inventory,
    playbook: &Playbook,
    errors: &mut Diagnostics,
) -> Vec<Option<usize>> {
    let file = &playbook.file;
    let mut host_wave: Vec<Option<usize>> = vec![None; inventory.hosts.len()];
    for (w, wave) in playbook.strategy.waves.iter().enumerate() {
        let mut regions: HashSet<RegionId> = HashSet::new();
        for glob in &wave.regions {
            let matched: Vec<RegionId> = (0..inventory.regions.len())
                .filter(|&r| glob.matches(&inventory.regions[r].name))
                .collect();
            if matched.is_empty() {
                let d = Diagnostic::new(
                    file,
                    format!(
                        "wave `{}`: region `{}` matches no region of inventory `{}`",
                        wave.name,
                        glob.as_str(),
                        inventory.name
                    ),
                );
                errors.push(d.suggest(
                    glob.as_str(),
                    inventory.regions.iter().map(|r| r.name.as_str()),
                ));
            }
            regions.extend(matched);
        }
        let filter = match &wave.hosts {
            None => None,
            Some(pattern) => match pattern.resolve(inventory) {
                Ok(set) => Some(set),
                Err(e) => {
                    let d = Diagnostic::new(file, format!("wave `{}`: {e}", wave.name));
                    errors.push(match e.suggestion {
                        Some(s) => d.hint(format!("did you mean `{s}`?")),
                        None => d.hint("check the wave's `hosts:` against the inventory"),
                    });
                    continue;
                }
            },
        };
        let mut taken = 0;
        for (h, host) in inventory.hosts.iter().enumerate() {
            if host_wave[h].is_none()
                && regions.contains(&host.region)
                && filter.as_ref().is_none_or(|f| f.contains(h))
            {
                host_wave[h] = Some(w);
                taken += 1;
            }
        }
        if taken == 0 && !regions.is_empty() {
            errors.push(Diagnostic::new(file, format!("wave `{}` takes no host: earlier waves already took every host of its regions", wave.name))
                .hint("remove the wave or change its `regions:`/`hosts:`"));
        }
    }
    let mut missing: Vec<(String, usize)> = Vec::new();
    for (r, region) in inventory.regions.iter().enumerate() {
        let left = inventory
            .hosts
            .iter()
            .enumerate()
            .filter(|(h, host)| host.region == r && host_wave[*h].is_none())
            .count();
        if left > 0 {
            missing.push((region.name.clone(), left));
        }
    }
    for (region, left) in missing {
        errors.push(Diagnostic::new(file, format!("region `{region}` ({left} hosts) is in no wave"))
            .hint(format!("add `{region}` to a wave's `regions:`, or end the waves with `{{ name: world, regions: [\"*\"] }}`")));
    }
    host_wave
}
