//! Task counts of a run per wave and per region, with what is still pending when the plan
//! can be rebuilt from the run's snapshot (`pony status`).

use super::detail::{RunDetail, TaskStatus, HEALTH_PREFIX};
use crate::plan::Plan;
use crate::playbook::Per;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};

/// Task counts of one group (a wave, a region, or the whole run).
#[derive(Debug, Clone, Default, Serialize)]
pub struct TaskCounts {
    /// Tasks in the plan; `None` when the plan could not be rebuilt.
    pub total: Option<usize>,
    pub succeeded: usize,
    pub skipped: usize,
    pub failed: usize,
    pub interrupted: usize,
    /// Started and not finished (when the run is stopped: were running when it stopped).
    pub running: usize,
    /// Not started yet; `None` when the plan could not be rebuilt.
    pub pending: Option<usize>,
    /// Of the tasks above, those whose rollback ran and succeeded.
    pub rolled_back: usize,
}

impl TaskCounts {
    fn add(&mut self, state: TaskStatus, rolled_back: bool) {
        self.rolled_back += usize::from(rolled_back);
        match state {
            TaskStatus::Succeeded => self.succeeded += 1,
            TaskStatus::Skipped => self.skipped += 1,
            TaskStatus::Failed => self.failed += 1,
            TaskStatus::Interrupted => self.interrupted += 1,
            TaskStatus::Running => self.running += 1,
        }
    }

    fn seen(&self) -> usize {
        self.succeeded + self.skipped + self.failed + self.interrupted + self.running
    }

    fn close(&mut self) {
        self.pending = self.total.map(|t| t.saturating_sub(self.seen()));
    }
}

/// TaskCounts of one wave or region.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub name: String,
    #[serde(flatten)]
    pub counts: TaskCounts,
}

/// Per-wave and per-region task counts of a run.
#[derive(Debug, Clone, Serialize)]
pub struct TaskBreakdown {
    /// Whether the totals come from the plan rebuilt from the snapshot.
    pub plan_rebuilt: bool,
    /// Why the plan could not be rebuilt (then counts come from the journal alone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan_error: Option<String>,
    pub total: TaskCounts,
    /// Empty when the plan could not be rebuilt (the journal does not name waves).
    pub waves: Vec<Group>,
    pub regions: Vec<Group>,
}

/// The region row name of `per: run` tasks.
pub const RUN_WIDE: &str = "(run)";
/// The row name of journal labels the plan (or inventory) does not know.
pub const UNKNOWN: &str = "(unknown)";

/// TaskCounts tasks per wave and region. With a plan, every task of the plan is counted (so
/// pending is known); without, only what the journal shows, regions found through the
/// snapshot inventory when it loads.
pub fn count_tasks(detail: &RunDetail, plan: Result<&Plan, &str>) -> TaskBreakdown {
    let state_of: BTreeMap<&str, TaskStatus> = detail
        .tasks
        .iter()
        .map(|t| (t.label.as_str(), t.state))
        .collect();
    let rolled_back = detail.rolled_back();
    match plan {
        Ok(plan) => with_plan(detail, plan, &state_of, &rolled_back),
        Err(error) => from_journal(detail, error, &rolled_back),
    }
}

/// Every task of the rebuilt plan counted per wave and region (so pending is known),
/// and the journal's labels the plan does not have under [`UNKNOWN`].
fn with_plan(
    detail: &RunDetail,
    plan: &Plan,
    state_of: &BTreeMap<&str, TaskStatus>,
    rolled_back: &HashSet<&str>,
) -> TaskBreakdown {
    let mut total = TaskCounts::default();
    let regions = &plan.inventory.regions;
    let mut waves: Vec<Group> = plan.waves.iter().map(|w| group(&w.name, Some(0))).collect();
    let mut by_region: Vec<Group> = regions
        .iter()
        .map(|r| group(&r.name, Some(0)))
        .chain([group(RUN_WIDE, Some(0))])
        .collect();
    let mut known = 0usize;
    total.total = Some(0);
    for (node, task) in plan.tasks() {
        let region = match task.per {
            Per::Run => regions.len(),
            _ => plan.inventory.hosts[task.host].region,
        };
        let label = plan.label(node);
        let state = state_of.get(label.as_str()).copied();
        for counts in [
            &mut total,
            &mut waves[task.wave].counts,
            &mut by_region[region].counts,
        ] {
            *counts.total.as_mut().expect("set above") += 1;
            if let Some(state) = state {
                counts.add(state, rolled_back.contains(label.as_str()));
            }
        }
        known += usize::from(state.is_some());
    }
    if known < state_of.len() {
        // A host's health check after its deploy (`health@HOST`) counts in its host's
        // wave and region, beyond the planned tasks; other labels the rebuilt plan does
        // not have (the snapshot changed?) under UNKNOWN.
        let mut other = group(UNKNOWN, None);
        let labels: std::collections::HashSet<String> =
            plan.tasks().map(|(n, _)| plan.label(n)).collect();
        for t in detail.tasks.iter().filter(|t| !labels.contains(&t.label)) {
            let undone = rolled_back.contains(t.label.as_str());
            let checked_host = t
                .label
                .strip_prefix(HEALTH_PREFIX)
                .and_then(|name| plan.inventory.host_id(name));
            let groups = match checked_host {
                Some(host) => {
                    let wave = plan.waves.iter().position(|w| w.hosts.contains(&host));
                    let region = plan.inventory.hosts[host].region;
                    let mut groups = vec![&mut by_region[region].counts];
                    if let Some(wave) = wave {
                        groups.push(&mut waves[wave].counts);
                    }
                    groups
                }
                None => vec![&mut other.counts],
            };
            for counts in groups {
                if let Some(planned) = counts.total.as_mut() {
                    *planned += 1;
                }
                counts.add(t.state, undone);
            }
            *total.total.as_mut().expect("set above") += usize::from(checked_host.is_some());
            total.add(t.state, undone);
        }
        if other.counts.seen() > 0 {
            by_region.push(other);
        }
    }
    for g in waves.iter_mut().chain(by_region.iter_mut()) {
        g.counts.close();
    }
    total.close();
    TaskBreakdown {
        plan_rebuilt: true,
        plan_error: None,
        total,
        waves,
        regions: by_region
            .into_iter()
            .filter(|g| g.counts.total != Some(0) || g.counts.seen() > 0)
            .collect(),
    }
}

/// What the journal shows, per region (found through the snapshot inventory when it
/// loads); no waves.
fn from_journal(detail: &RunDetail, error: &str, rolled_back: &HashSet<&str>) -> TaskBreakdown {
    let mut total = TaskCounts::default();
    let inventory = crate::inventory::load(
        &detail
            .summary
            .path
            .join(crate::state::snapshot::INVENTORY_FILE),
    )
    .ok();
    let mut order: Vec<String> = Vec::new();
    let mut by_region: BTreeMap<String, TaskCounts> = BTreeMap::new();
    for t in &detail.tasks {
        let target = t.label.rsplit_once('@').map(|(_, t)| t).unwrap_or("");
        let region = if target == "run" {
            RUN_WIDE.to_string()
        } else {
            match &inventory {
                Some(inv) => match inv.host_id(target) {
                    Some(h) => inv.region_of(h).name.clone(),
                    None if inv.regions.iter().any(|r| r.name == target) => target.to_string(),
                    None => UNKNOWN.to_string(),
                },
                None => UNKNOWN.to_string(),
            }
        };
        if !by_region.contains_key(&region) {
            order.push(region.clone());
        }
        let undone = rolled_back.contains(t.label.as_str());
        by_region.entry(region).or_default().add(t.state, undone);
        total.add(t.state, undone);
    }
    let regions = match &inventory {
        Some(inv) => inv
            .regions
            .iter()
            .map(|r| r.name.clone())
            .chain([RUN_WIDE.to_string(), UNKNOWN.to_string()])
            .filter(|r| by_region.contains_key(r))
            .collect(),
        None => order,
    };
    TaskBreakdown {
        plan_rebuilt: false,
        plan_error: Some(error.to_string()),
        total,
        waves: Vec::new(),
        regions: regions
            .into_iter()
            .map(|r| Group {
                counts: by_region.remove(&r).unwrap_or_default(),
                name: r,
            })
            .collect(),
    }
}

fn group(name: &str, total: Option<usize>) -> Group {
    Group {
        name: name.to_string(),
        counts: TaskCounts {
            total,
            ..TaskCounts::default()
        },
    }
}
