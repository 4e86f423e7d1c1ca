//! Readiness and admission: a node whose dependencies are done becomes ready; a task
//! starts if its host may still start, once its host holds one of its cluster's
//! `max_unavailable` slots (first come, first served through [`Admission`]); freed slots
//! let queued hosts in, and a stalled run lets one more in rather than deadlock. Every
//! path that starts a host checks its wave's change window at that moment: a host that
//! waited for a slot while the window closed waits for the window again.

use super::nodes::State;
use super::{Scheduler, Stop};
use crate::exec::host_run::Phase;
use crate::inventory::HostId;
use crate::plan::{Node, NodeId, Task};
use crate::playbook::Per;

impl Scheduler {
    pub(super) fn ready(&mut self, node: NodeId) {
        match self.plan.graph[node] {
            Node::Join { .. } => {
                self.nodes.set(node, State::Succeeded);
                self.release(node, true);
            }
            Node::Gate(wave) => self.gate_ready(wave, node),
            Node::Task(task) => {
                if self.may_start(task.host) {
                    self.admit(node, task);
                } else {
                    self.cancel(node);
                }
            }
        }
    }

    /// Whether a task of this host may still start.
    pub(super) fn may_start(&self, host: HostId) -> bool {
        let h = &self.fleet.hosts[host];
        let region = self.plan.inventory.hosts[host].region;
        match self.course.stop {
            Stop::All => false,
            Stop::Draining => h.phase == Phase::Active && !self.fleet.regions[region].stopped,
            Stop::No => !h.failed() && !self.fleet.regions[region].stopped,
        }
    }

    pub(super) fn admit(&mut self, node: NodeId, task: Task) {
        let host = task.host;
        // Its own controller admits it (slots, windows, pauses); here it is only awaited.
        if self.is_remote(host) {
            self.spawn(node);
            return;
        }
        let cluster = self.plan.inventory.hosts[host].cluster;
        let active = self.fleet.hosts[host].phase == Phase::Active;
        let starts_host = task.per != Per::Host || !active;
        if starts_host && self.hold_while_paused(node, &task) {
            return;
        }
        if starts_host && self.hold_for_window(node, task.wave) {
            return;
        }
        if task.per != Per::Host || active {
            self.spawn(node);
            return;
        }
        if self.admission.has_room(cluster) {
            self.activate(host);
            self.spawn(node);
            return;
        }
        self.nodes.set(node, State::Queued);
        let h = &mut self.fleet.hosts[host];
        h.pending.push(node);
        if h.phase == Phase::Idle {
            h.phase = Phase::Queued;
            self.admission.enqueue(cluster, host);
        }
    }

    pub(super) fn activate(&mut self, host: HostId) {
        let cluster = self.plan.inventory.hosts[host].cluster;
        let h = &mut self.fleet.hosts[host];
        h.phase = Phase::Active;
        h.slot = true;
        self.admission.take(cluster);
    }

    /// Gives the host's slot back and lets waiting hosts in.
    pub(super) fn free_slot(&mut self, host: HostId) {
        if !std::mem::take(&mut self.fleet.hosts[host].slot) {
            return;
        }
        self.admission
            .give_back(self.plan.inventory.hosts[host].cluster);
        self.connections_freed();
    }

    /// Room came back: queued check rounds, then waiting hosts (unless paused), take it.
    pub(super) fn connections_freed(&mut self) {
        self.start_queued_checks();
        if !self.admits_queued_hosts() {
            return;
        }
        while let Some((_, next)) = self.admission.next_admissible() {
            self.start_queued_host(next);
        }
    }

    pub(super) fn start_queued_host(&mut self, host: HostId) {
        let pending = std::mem::take(&mut self.fleet.hosts[host].pending);
        self.fleet.hosts[host].phase = Phase::Idle;
        if self.course.stop != Stop::No || !self.may_start(host) {
            pending.into_iter().for_each(|n| self.cancel(n));
            return;
        }
        // Its wave's change window may have closed while it waited for the slot: then
        // it waits for the window again (and for a slot once the window opens).
        if let Some(&first) = pending.first() {
            let wave = self.plan.task(first).expect("a task").wave;
            if self.hold_for_window(first, wave) {
                for node in pending.into_iter().skip(1) {
                    self.hold_for_window(node, wave);
                }
                return;
            }
        }
        self.activate(host);
        for node in pending {
            self.spawn(node);
        }
    }

    /// When nothing runs but hosts wait for slots held by hosts that only wait for
    /// others (a region-wide `needs`), one more host is let in rather than deadlock.
    pub(super) fn break_stall(&mut self) -> bool {
        let Some((cluster, host)) = self.admission.pop_any_waiting() else {
            return false;
        };
        tracing::warn!(
            "max_unavailable slots of cluster {} are held by hosts waiting on other hosts; letting one more in",
            self.plan.inventory.clusters[cluster].name
        );
        self.start_queued_host(host);
        true
    }
}
