//! Wave membership: which wave each inventory host belongs to, and the problems with
//! the playbook's `strategy.waves` against the inventory.

use crate::diag::Diagnostic;
use crate::diag::Diagnostics;
use crate::inventory::{HostId, Inventory, RegionId};
use crate::playbook::Playbook;
use std::collections::{BTreeSet, HashSet};

/// Hosts are put into waves in order: a wave takes the hosts of its regions (matching its
/// `hosts:`) that no earlier wave took. A host lands in at most one wave; one that has
/// tasks and lands in none is reported by [`report_unwaved`].
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
    host_wave
}

/// A wave's `verify:` check runs on its `hosts:` and compares against its `baseline:`;
/// a pattern that names no host of the inventory would make the check pass (or fail)
/// vacuously at run time, so it is an error before anything runs. The same holds for a
/// `health:` check's `hosts:`.
pub(super) fn check_verify_patterns(
    inventory: &Inventory,
    playbook: &Playbook,
    errors: &mut Diagnostics,
) {
    let verify = playbook.strategy.waves.iter().flat_map(|wave| {
        wave.verify.iter().flat_map(move |check| {
            [
                ("hosts", check.hosts.as_ref()),
                ("baseline", check.compare.as_ref().map(|c| &c.baseline)),
            ]
            .into_iter()
            .filter_map(move |(field, pattern)| {
                Some((
                    format!("wave `{}` verify check `{}` {field}", wave.name, check.name),
                    pattern?,
                ))
            })
        })
    });
    // A health check's `hosts:` likewise: a role that names nobody checks nobody.
    let health = playbook.health.checks.iter().filter_map(|check| {
        Some((
            format!("health check `{}` hosts", check.name),
            check.hosts.as_ref()?,
        ))
    });
    for (what, pattern) in verify.chain(health) {
        let what = format!("{what} `{}`", pattern.as_str());
        match pattern.resolve(inventory) {
            Ok(set) if set.iter().next().is_some() => {}
            Ok(_) => errors.push(
                Diagnostic::new(
                    &playbook.file,
                    format!("{what} matches no host of inventory `{}`", inventory.name),
                )
                .hint("name hosts, groups or clusters that exist (`pony inventory` lists them)"),
            ),
            Err(e) => {
                let d = Diagnostic::new(&playbook.file, format!("{what}: {e}"));
                errors.push(match e.suggestion {
                    Some(s) => d.hint(format!("did you mean `{s}`?")),
                    None => d.hint("check the pattern against the inventory"),
                });
            }
        }
    }
}

/// How many inventory hosts each wave of the playbook takes (problems aside): what `pony
/// lab up` uses to fit the flagship's waves to a small fleet.
pub fn wave_sizes(inventory: &Inventory, playbook: &Playbook) -> Vec<usize> {
    let host_wave = assign_waves(inventory, playbook, &mut Diagnostics::default());
    let mut sizes = vec![0; playbook.strategy.waves.len()];
    for wave in host_wave.into_iter().flatten() {
        sizes[wave] += 1;
    }
    sizes
}

/// Hosts that would have tasks but are in no wave, reported per region with their names.
/// A host that no step targets may stay out of every wave: it is simply not deployed.
pub(super) fn report_unwaved(
    inventory: &Inventory,
    playbook: &Playbook,
    unwaved: &BTreeSet<HostId>,
    errors: &mut Diagnostics,
) {
    for (r, region) in inventory.regions.iter().enumerate() {
        let names: Vec<&str> = unwaved
            .iter()
            .filter(|&&h| inventory.hosts[h].region == r)
            .map(|&h| inventory.hosts[h].name.as_str())
            .collect();
        if names.is_empty() {
            continue;
        }
        const SHOWN: usize = 5;
        let mut list = names[..names.len().min(SHOWN)].join(", ");
        if names.len() > SHOWN {
            list.push_str(&format!(" and {} more", names.len() - SHOWN));
        }
        let region = &region.name;
        errors.push(
            Diagnostic::new(
                &playbook.file,
                format!(
                    "region `{region}` ({} hosts) is in no wave, and these hosts have tasks: {list}",
                    names.len()
                ),
            )
            .hint(format!("add `{region}` to a wave's `regions:`, or end the waves with `{{ name: world, regions: [\"*\"] }}`")),
        );
    }
}
