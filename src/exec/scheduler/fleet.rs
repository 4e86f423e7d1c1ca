//! Where the run's hosts and regions stand: each host's phase, tasks left and running,
//! slot and captures ([`HostRun`]); each region's stop, running tasks, rollback due and
//! captures; the run-wide captures. The counters move together here: a task that starts
//! or ends on a host counts in its host and in its region.

use crate::exec::host_run::HostRun;
use crate::inventory::{HostId, RegionId, Vars};
use crate::plan::{Plan, Task};
use crate::playbook::Per;
use std::time::Duration;

/// A region's part of the run.
#[derive(Default)]
pub(super) struct RegionRun {
    /// No task of the region starts any more.
    pub(super) stopped: bool,
    /// Tasks of the region's hosts running now.
    pub(super) running: usize,
    /// `on_failure: rollback_region` went beyond a budget: rolled back once nothing runs.
    pub(super) rollback_due: bool,
    pub(super) captures: Vars,
    /// When its last host finished (since the run started).
    pub(super) finished: Duration,
}

/// The run's hosts and regions.
pub(super) struct Fleet {
    pub(super) hosts: Vec<HostRun>,
    pub(super) regions: Vec<RegionRun>,
    /// Captures of `per: run` tasks.
    captures: Vars,
}

impl Fleet {
    /// Every host with its tasks to go, nothing started.
    pub(super) fn new(plan: &Plan) -> Self {
        let inventory = &plan.inventory;
        let mut hosts: Vec<HostRun> = (0..inventory.hosts.len())
            .map(|_| HostRun::default())
            .collect();
        for (_, task) in plan.tasks() {
            let host = &mut hosts[task.host];
            host.left_tasks += 1;
            if task.per == Per::Host {
                host.left_host_tasks += 1;
            }
        }
        Fleet {
            hosts,
            regions: (0..inventory.regions.len())
                .map(|_| RegionRun::default())
                .collect(),
            captures: Vars::new(),
        }
    }

    /// How many hosts have tasks.
    pub(super) fn with_tasks(&self, hosts: impl Iterator<Item = HostId>) -> usize {
        hosts.filter(|&h| self.hosts[h].left_tasks > 0).count()
    }

    /// The captures a task sees: the run's, its region's, its host's.
    pub(super) fn captures_of(&self, plan: &Plan, task: &Task) -> Vars {
        let mut captures = self.captures.clone();
        let region = plan.inventory.hosts[task.host].region;
        captures.extend(self.regions[region].captures.clone());
        captures.extend(self.hosts[task.host].captures.clone());
        captures
    }

    /// Keeps a task's capture where the tasks that see it look: its host's, its
    /// region's or the run's, by the task's `per`.
    pub(super) fn store_capture(&mut self, plan: &Plan, task: &Task, name: &str, value: &str) {
        let value = serde_yaml::Value::String(value.to_string());
        let region = plan.inventory.hosts[task.host].region;
        let captures = match task.per {
            Per::Host => &mut self.hosts[task.host].captures,
            Per::Region => &mut self.regions[region].captures,
            Per::Run => &mut self.captures,
        };
        captures.insert(name.to_string(), value);
    }

    /// A task started on `host` (of `region`).
    pub(super) fn task_started(&mut self, host: HostId, region: RegionId) {
        self.regions[region].running += 1;
        let h = &mut self.hosts[host];
        h.running += 1;
        h.touched = true;
    }

    /// A task that ran on `host` (of `region`) ended.
    pub(super) fn task_ended(&mut self, host: HostId, region: RegionId) {
        self.regions[region].running -= 1;
        self.hosts[host].running -= 1;
    }

    /// A task reached a final state: one task less for its host.
    pub(super) fn count_done(&mut self, task: Task) {
        let host = &mut self.hosts[task.host];
        host.left_tasks -= 1;
        if task.per == Per::Host {
            host.left_host_tasks -= 1;
        }
    }
}
