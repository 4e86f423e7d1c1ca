//! Changes to a playbook before it is validated, for what-ifs: `--set
//! strategy.max_unavailable=10%` style overrides, and the by-hand baseline `--compare`
//! measures against. Both edit the playbook's YAML, so the edited playbook goes through
//! the same validation as a written one.

use crate::plan::Plan;
use serde_yaml::{Mapping, Value};

/// Sets `path` (dot-separated keys; a list element by its `name:` or its index, e.g.
/// `strategy.waves.canary.pause`) to `text` read as a YAML value.
pub fn set(root: &mut Value, path: &str, text: &str) -> Result<(), String> {
    let new: Value =
        serde_yaml::from_str(text).map_err(|e| format!("`{text}` is not a YAML value: {e}"))?;
    let keys: Vec<&str> = path.split('.').collect();
    if keys.iter().any(|k| k.is_empty()) {
        return Err(format!(
            "`{path}` is not a dotted path such as strategy.max_unavailable"
        ));
    }
    let mut node = root;
    for (i, key) in keys.iter().enumerate() {
        let last = i + 1 == keys.len();
        node = match node {
            Value::Mapping(map) => {
                let k = Value::String(key.to_string());
                if !map.contains_key(&k) {
                    map.insert(k.clone(), Value::Mapping(Mapping::new()));
                }
                map.get_mut(&k).expect("just inserted")
            }
            Value::Sequence(items) => {
                let found = match key.parse::<usize>() {
                    Ok(index) => index,
                    Err(_) => items
                        .iter()
                        .position(|item| item.get("name").and_then(Value::as_str) == Some(key))
                        .ok_or_else(|| {
                            let names: Vec<&str> = items
                                .iter()
                                .filter_map(|i| i.get("name").and_then(Value::as_str))
                                .collect();
                            format!(
                                "`{path}`: no element named `{key}` (there are: {})",
                                names.join(", ")
                            )
                        })?,
                };
                items
                    .get_mut(found)
                    .ok_or_else(|| format!("`{path}`: no element {found}"))?
            }
            _ => {
                return Err(format!(
                    "`{path}`: `{}` is a value, not a section",
                    keys[..i].join(".")
                ))
            }
        };
        if last {
            *node = new;
            return Ok(());
        }
    }
    Ok(())
}

/// Which rollout done by hand `--compare` measures pony against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// The playbook's own policy executed by a person: its `max_unavailable`, its soaks
    /// (`pause`) and change windows, but one region after the other, each started by a
    /// person (an `approve:` before it, answered after their reaction time). What pony
    /// the tool saves.
    SamePolicy,
    /// The one-host-at-a-time practice pony replaces: one region after the other, each
    /// started by a person, one host per cluster at a time, no soaks. What the tool and
    /// the policy save together.
    OneHost,
}

/// The playbook as it is done by hand: the same steps, `needs`, failure policy and
/// durations, one region at a time in the order the playbook's waves reach them (each
/// region keeps the change window of the wave that took it, and a person starts the next
/// region: an `approve:` gate), the clusters of a region side by side, no verify checks,
/// no limit on connections; with [`Baseline::OneHost`], one host per cluster at a time and
/// no soaks; with [`Baseline::SamePolicy`], the playbook's `max_unavailable` and each
/// wave's `pause` after its last region.
pub fn by_hand(plan: &Plan, root: &mut Value, baseline: Baseline) -> Result<(), String> {
    let inventory = &plan.inventory;
    let mut first_wave: Vec<Option<usize>> = vec![None; inventory.regions.len()];
    for (host, wave) in plan.host_wave.iter().enumerate() {
        if let Some(w) = wave {
            let region = inventory.hosts[host].region;
            first_wave[region] = Some(first_wave[region].map_or(*w, |x| x.min(*w)));
        }
    }
    let mut regions: Vec<(usize, usize)> = first_wave
        .iter()
        .enumerate()
        .filter_map(|(r, w)| w.map(|w| (w, r)))
        .collect();
    regions.sort();
    let waves: Vec<Value> = regions
        .iter()
        .enumerate()
        .map(|(i, &(w, r))| {
            let spec = &plan.playbook.strategy.waves[w];
            let mut wave = Mapping::new();
            let name = &inventory.regions[r].name;
            wave.insert("name".into(), Value::String(name.clone()));
            wave.insert(
                "regions".into(),
                Value::Sequence(vec![Value::String(glob::Pattern::escape(name))]),
            );
            if let Some(window) = &spec.window {
                wave.insert("window".into(), Value::String(window.text.clone()));
            }
            let last_of_its_wave = regions.get(i + 1).is_none_or(|&(next, _)| next != w);
            if let (Baseline::SamePolicy, Some(pause), true) =
                (baseline, spec.pause, last_of_its_wave)
            {
                wave.insert(
                    "pause".into(),
                    Value::String(humantime::format_duration(pause).to_string()),
                );
            }
            // A person starts the next region once this one is done (and soaked).
            wave.insert("approve".into(), Value::Bool(true));
            Value::Mapping(wave)
        })
        .collect();
    set(root, "strategy.waves", "[]")?;
    *root
        .get_mut("strategy")
        .and_then(|s| s.get_mut("waves"))
        .expect("just set") = Value::Sequence(waves);
    if baseline == Baseline::OneHost {
        set(root, "strategy.max_unavailable", "1")?;
    }
    set(
        root,
        "strategy.connections",
        &plan.inventory.hosts.len().max(1).to_string(),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_keys_and_list_elements_by_name() {
        let mut v: Value = serde_yaml::from_str(
            "strategy:\n  max_unavailable: 25%\n  waves:\n    - { name: canary, pause: 1s }\n    - { name: world }\n",
        )
        .unwrap();
        set(&mut v, "strategy.max_unavailable", "10%").unwrap();
        set(&mut v, "strategy.waves.canary.pause", "30m").unwrap();
        set(&mut v, "strategy.waves.1.window", "01:00-05:00 local").unwrap();
        assert_eq!(v["strategy"]["max_unavailable"], Value::from("10%"));
        assert_eq!(v["strategy"]["waves"][0]["pause"], Value::from("30m"));
        assert_eq!(
            v["strategy"]["waves"][1]["window"],
            Value::from("01:00-05:00 local")
        );
        let err = set(&mut v, "strategy.waves.chnia.pause", "1m").unwrap_err();
        assert!(
            err.contains("no element named `chnia`") && err.contains("canary, world"),
            "{err}"
        );
        let err = set(&mut v, "strategy.max_unavailable.x", "1").unwrap_err();
        assert!(err.contains("is a value"), "{err}");
    }
}
