//! What the run page and `/metrics` show of one run, from its journal folded into a
//! [`RunDetail`] and the plan rebuilt from its snapshot: each host's state (done, running,
//! failed, rolled back, partly done, not run) counted per region, cluster and wave, and
//! each wave's gate.

use crate::plan::Plan;
use crate::playbook::Per;
use crate::state::runs::{RunDetail, RunState, TaskStatus};
use std::collections::{HashMap, HashSet};

/// Where one host is, as the journal says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostState {
    /// Every task of the host finished (succeeded or skipped).
    Done,
    /// A task of the host runs (or, in a running run, some finished and more are due).
    Running,
    /// A task of the host failed (or was interrupted) and was not rolled back.
    Failed,
    /// A task of the host was rolled back successfully.
    RolledBack,
    /// Some tasks finished, the others never ran, and the run is not running.
    Partly,
    /// No task of the host was journaled.
    NotRun,
}

impl HostState {
    pub const ALL: [HostState; 6] = [
        HostState::Done,
        HostState::Running,
        HostState::Failed,
        HostState::RolledBack,
        HostState::Partly,
        HostState::NotRun,
    ];

    /// The name used in the page's classes and the metrics' `state` label.
    pub fn name(self) -> &'static str {
        match self {
            HostState::Done => "done",
            HostState::Running => "running",
            HostState::Failed => "failed",
            HostState::RolledBack => "rolled_back",
            HostState::Partly => "partly",
            HostState::NotRun => "not_run",
        }
    }

    /// The column heading on the page.
    pub fn words(self) -> &'static str {
        match self {
            HostState::Done => "done",
            HostState::Running => "running",
            HostState::Failed => "failed",
            HostState::RolledBack => "rolled back",
            HostState::Partly => "partly done",
            HostState::NotRun => "not run",
        }
    }
}

/// Host counts of a group, indexed like [`HostState::ALL`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostCounts(pub [usize; 6]);

impl HostCounts {
    pub fn get(&self, state: HostState) -> usize {
        self.0[state as usize]
    }

    fn add(&mut self, state: HostState) {
        self.0[state as usize] += 1;
    }

    pub fn total(&self) -> usize {
        self.0.iter().sum()
    }
}

/// A region with its clusters' counts.
#[derive(Debug, Clone)]
pub struct RegionView {
    pub name: String,
    pub counts: HostCounts,
    pub clusters: Vec<(String, HostCounts)>,
}

/// Where a wave's gate is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateView {
    /// The last wave has no gate after it.
    None,
    Passed,
    /// Waits for an approval, a soak or its checks (the journal's reason).
    Waiting(String),
    /// The wave failed beyond its budget: the reason.
    Stopped(String),
    /// Approved ahead from another shell.
    PreApproved,
    Ahead,
}

#[derive(Debug, Clone)]
pub struct WaveView {
    pub name: String,
    /// Whether its gate asks a person (`approve: true`).
    pub approve: bool,
    pub gate: GateView,
    pub counts: HostCounts,
    /// Counts per region of the wave's hosts (for the metrics).
    pub by_region: Vec<(String, HostCounts)>,
}

/// Every host of the run placed, per region and per wave.
#[derive(Debug, Clone, Default)]
pub struct HostsView {
    pub total: HostCounts,
    pub regions: Vec<RegionView>,
    pub waves: Vec<WaveView>,
    /// The wave whose approval gate waits now, if any.
    pub approvable: Option<String>,
}

/// The state of `host`'s tasks as the journal has them.
fn host_state(
    labels: &[String],
    state_of: &HashMap<&str, TaskStatus>,
    rolled_back: &HashSet<&str>,
    running_run: bool,
) -> HostState {
    let states: Vec<TaskStatus> = labels
        .iter()
        .filter_map(|l| state_of.get(l.as_str()).copied())
        .collect();
    if labels.iter().any(|l| rolled_back.contains(l.as_str())) {
        HostState::RolledBack
    } else if states
        .iter()
        .any(|s| matches!(s, TaskStatus::Failed | TaskStatus::Interrupted))
    {
        HostState::Failed
    } else if states.contains(&TaskStatus::Running) {
        HostState::Running
    } else if states.is_empty() {
        HostState::NotRun
    } else if states.len() == labels.len() {
        HostState::Done
    } else if running_run {
        HostState::Running
    } else {
        HostState::Partly
    }
}

impl HostsView {
    pub fn of(detail: &RunDetail, plan: &Plan) -> HostsView {
        let inv = &plan.inventory;
        let state_of: HashMap<&str, TaskStatus> = detail
            .tasks
            .iter()
            .map(|t| (t.label.as_str(), t.state))
            .collect();
        let rolled_back = detail.rolled_back();
        let mut labels: Vec<Vec<String>> = vec![Vec::new(); inv.hosts.len()];
        for (node, task) in plan.tasks() {
            if task.per == Per::Host {
                labels[task.host].push(plan.label(node));
            }
        }
        let running = detail.summary.state == RunState::Running;
        let mut view = HostsView::default();
        let (mut regions, mut waves) = empty_groups(detail, plan);
        for (h, host) in inv.hosts.iter().enumerate() {
            if labels[h].is_empty() {
                continue;
            }
            let state = host_state(&labels[h], &state_of, &rolled_back, running);
            view.total.add(state);
            let region = &mut regions[host.region];
            region.counts.add(state);
            if let Some(i) = inv.regions[host.region]
                .clusters
                .iter()
                .position(|&c| c == host.cluster)
            {
                region.clusters[i].1.add(state);
            }
            if let Some(w) = plan.host_wave[h] {
                let wave = &mut waves[w];
                wave.counts.add(state);
                let name = &inv.regions[host.region].name;
                match wave.by_region.iter_mut().find(|(r, _)| r == name) {
                    Some((_, counts)) => counts.add(state),
                    None => {
                        let mut counts = HostCounts::default();
                        counts.add(state);
                        wave.by_region.push((name.clone(), counts));
                    }
                }
            }
        }
        for region in &mut regions {
            region.clusters.retain(|(_, c)| c.total() > 0);
        }
        view.regions = regions
            .into_iter()
            .filter(|r| r.counts.total() > 0)
            .collect();
        view.approvable = waves
            .iter()
            .find(|w| w.approve && w.gate == GateView::Waiting("approve".into()))
            .map(|w| w.name.clone())
            .filter(|_| running);
        view.waves = waves;
        view
    }
}

/// Every region (with its clusters) and wave of the plan, with no host counted yet.
fn empty_groups(detail: &RunDetail, plan: &Plan) -> (Vec<RegionView>, Vec<WaveView>) {
    let inv = &plan.inventory;
    let regions = inv
        .regions
        .iter()
        .map(|r| RegionView {
            name: r.name.clone(),
            counts: HostCounts::default(),
            clusters: r
                .clusters
                .iter()
                .map(|&c| (inv.clusters[c].name.clone(), HostCounts::default()))
                .collect(),
        })
        .collect();
    let waves = plan
        .waves
        .iter()
        .enumerate()
        .map(|(w, wave)| WaveView {
            name: wave.name.clone(),
            approve: plan
                .playbook
                .strategy
                .waves
                .get(w)
                .is_some_and(|s| s.approve),
            gate: gate(detail, &wave.name, w + 1 == plan.waves.len()),
            counts: HostCounts::default(),
            by_region: Vec::new(),
        })
        .collect();
    (regions, waves)
}

fn gate(detail: &RunDetail, wave: &str, last: bool) -> GateView {
    if detail.gates_passed.iter().any(|w| w == wave) {
        return GateView::Passed;
    }
    if let Some((w, reason)) = &detail.stopped_wave {
        if w == wave {
            return GateView::Stopped(reason.clone());
        }
    }
    if let Some((w, reason)) = &detail.gate_waiting {
        if w == wave {
            return GateView::Waiting(reason.to_string());
        }
    }
    if detail.pre_approved.iter().any(|w| w == wave) {
        return GateView::PreApproved;
    }
    if last {
        GateView::None
    } else {
        GateView::Ahead
    }
}
