//! Admission: which hosts may be out of service now. Each cluster has its
//! `max_unavailable` slots (a host holds one from its first task to its last, and a failed
//! host until its rollback is done), the whole run has `connections`, and hosts that found
//! no room wait in their cluster's queue, first come first served.

use crate::inventory::HostId;
use std::collections::VecDeque;

/// One cluster's `max_unavailable` slots and the hosts waiting for one.
#[derive(Debug)]
struct ClusterSlots {
    limit: usize,
    taken: usize,
    waiting: VecDeque<HostId>,
}

/// Slots per cluster plus the run-wide connection limit.
#[derive(Debug)]
pub struct Admission {
    clusters: Vec<ClusterSlots>,
    connections: usize,
    active: usize,
}

impl Admission {
    /// `limits[c]` is cluster `c`'s number of slots (at least 1).
    pub fn new(limits: Vec<usize>, connections: usize) -> Self {
        Admission {
            clusters: limits
                .into_iter()
                .map(|limit| ClusterSlots {
                    limit: limit.max(1),
                    taken: 0,
                    waiting: VecDeque::new(),
                })
                .collect(),
            connections: connections.max(1),
            active: 0,
        }
    }

    pub fn has_room(&self, cluster: usize) -> bool {
        self.clusters[cluster].taken < self.clusters[cluster].limit
            && self.active < self.connections
    }

    /// Takes a slot in the cluster (the caller checked `has_room`, or forces one in).
    pub fn take(&mut self, cluster: usize) {
        self.clusters[cluster].taken += 1;
        self.active += 1;
    }

    pub fn give_back(&mut self, cluster: usize) {
        let slots = &mut self.clusters[cluster];
        slots.taken = slots.taken.saturating_sub(1);
        self.active = self.active.saturating_sub(1);
    }

    /// Connections for work outside any host's slot (a gate's `verify:` checks): taken
    /// when they fit under `connections`, or when nothing else holds one (a limit smaller
    /// than the request must not stall the gate forever).
    pub fn borrow_connections(&mut self, wanted: usize) -> bool {
        let fits = self.can_borrow(wanted);
        if fits {
            self.active += wanted;
        }
        fits
    }

    pub fn can_borrow(&self, wanted: usize) -> bool {
        self.active + wanted <= self.connections || self.active == 0
    }

    pub fn repay_connections(&mut self, borrowed: usize) {
        self.active = self.active.saturating_sub(borrowed);
    }

    /// How many connections the run may hold at once.
    pub fn connection_limit(&self) -> usize {
        self.connections
    }

    pub fn enqueue(&mut self, cluster: usize, host: HostId) {
        self.clusters[cluster].waiting.push_back(host);
    }

    /// The next waiting host that has room now (its slot is not taken yet).
    pub fn next_admissible(&mut self) -> Option<(usize, HostId)> {
        for cluster in 0..self.clusters.len() {
            if self.has_room(cluster) {
                if let Some(host) = self.clusters[cluster].waiting.pop_front() {
                    return Some((cluster, host));
                }
            }
        }
        None
    }

    /// Any waiting host, room or not: breaks a stall where every slot is held by hosts
    /// that only wait for other hosts.
    pub fn pop_any_waiting(&mut self) -> Option<(usize, HostId)> {
        self.clusters
            .iter_mut()
            .enumerate()
            .find_map(|(c, slots)| slots.waiting.pop_front().map(|h| (c, h)))
    }

    /// Forgets the waiting hosts for which `drop` is true.
    pub fn forget_waiting(&mut self, mut drop: impl FnMut(HostId) -> bool) {
        for slots in &mut self.clusters {
            slots.waiting.retain(|h| !drop(*h));
        }
    }

    pub fn taken(&self, cluster: usize) -> usize {
        self.clusters[cluster].taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_admits_up_to_its_limit_then_queues_in_order() {
        let mut a = Admission::new(vec![2, 1], 10);
        assert!(a.has_room(0));
        a.take(0);
        a.take(0);
        assert!(!a.has_room(0), "two of two slots taken");
        assert!(a.has_room(1), "another cluster has its own slots");
        a.enqueue(0, 7);
        a.enqueue(0, 8);
        assert_eq!(a.next_admissible(), None);
        a.give_back(0);
        assert_eq!(a.next_admissible(), Some((0, 7)), "first come first served");
        a.take(0);
        assert_eq!(a.next_admissible(), None);
    }

    #[test]
    fn connections_bound_every_cluster_together() {
        let mut a = Admission::new(vec![5, 5], 2);
        a.take(0);
        a.take(1);
        assert!(!a.has_room(0) && !a.has_room(1));
        a.enqueue(1, 3);
        a.give_back(0);
        assert_eq!(a.next_admissible(), Some((1, 3)));
    }

    #[test]
    fn borrowed_connections_keep_hosts_out_until_repaid() {
        let mut a = Admission::new(vec![5], 3);
        a.take(0);
        assert!(a.borrow_connections(2), "1 + 2 fits in 3");
        assert!(!a.has_room(0), "the checks hold the last connections");
        assert!(!a.borrow_connections(1));
        a.repay_connections(2);
        assert!(a.has_room(0));
        a.give_back(0);
        let mut one = Admission::new(vec![5], 1);
        assert!(
            one.borrow_connections(2),
            "alone, a request over the limit still goes"
        );
    }

    #[test]
    fn a_stall_lets_one_waiting_host_in_and_forgotten_hosts_never_start() {
        let mut a = Admission::new(vec![1], 10);
        a.take(0);
        a.enqueue(0, 1);
        a.enqueue(0, 2);
        a.forget_waiting(|h| h == 1);
        assert_eq!(a.pop_any_waiting(), Some((0, 2)));
        assert_eq!(a.pop_any_waiting(), None);
    }
}
