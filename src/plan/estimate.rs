//! How long a plan takes: each task's estimated duration (the step's `estimate:`, else
//! what earlier runs took), the critical path in time, and the time under each cluster's
//! `max_unavailable` slots. `pony plan --estimate` prints these; nothing here reads files
//! (the durations of earlier runs come from [`crate::state::runs::succeeded_durations`]).

use super::{CriticalPath, Node, Plan};
use std::collections::BTreeMap;
use std::time::Duration;

/// How many earlier runs [`learned_durations`] learns from, newest first.
pub const LEARNED_RUNS: usize = 5;

impl Plan {
    /// The duration `pony plan --estimate` uses for a node: the step's `estimate:` (else
    /// what earlier runs took), the gate's `pause:`, nothing for joins.
    pub fn estimated_duration(&self, node: &Node) -> Duration {
        match node {
            Node::Task(task) => self.playbook.steps[task.step]
                .estimate
                .or(self.learned_durations.get(task.step).copied().flatten())
                .unwrap_or_default(),
            Node::Gate(wave) => self.playbook.strategy.waves[*wave]
                .pause
                .unwrap_or_default(),
            Node::Join { .. } => Duration::ZERO,
        }
    }

    /// The critical path in time, each node taking its [`Plan::estimated_duration`] (with
    /// no estimates at all, the path with the most tasks).
    pub fn estimated_critical_path(&self) -> CriticalPath {
        self.critical_path(|n| self.estimated_duration(n))
    }
}

/// Per step, the median duration of its succeeded tasks in `samples`: `(task label,
/// milliseconds)` pairs, such as earlier runs' journals hold.
pub fn learned_durations(
    plan: &Plan,
    samples: impl IntoIterator<Item = (String, u64)>,
) -> Vec<Option<Duration>> {
    let mut per_step: Vec<Vec<u64>> = vec![Vec::new(); plan.playbook.steps.len()];
    for (label, ms) in samples {
        let step = label.split('@').next().unwrap_or_default();
        if let Some(id) = plan.playbook.step_id(step) {
            per_step[id].push(ms);
        }
    }
    per_step
        .into_iter()
        .map(|mut ms| {
            ms.sort_unstable();
            ms.get(ms.len() / 2).map(|m| Duration::from_millis(*m))
        })
        .collect()
}

/// The duration under `max_unavailable`: per wave, each cluster works through its hosts
/// `slots` at a time (the same [`Plan::cluster_limits`] that deploy enforces), each host
/// taking the sum of its tasks' estimates; waves add up, with their pauses.
pub fn estimate_with_limits(plan: &Plan) -> Duration {
    let strategy = &plan.playbook.strategy;
    let limits = plan.cluster_limits();
    let mut total = Duration::ZERO;
    for (w, wave) in plan.waves.iter().enumerate() {
        let mut per_cluster: BTreeMap<usize, (usize, Duration)> = BTreeMap::new();
        for &h in &wave.hosts {
            let host_time: Duration = plan
                .tasks_of_host(h)
                .iter()
                .map(|n| plan.estimated_duration(&plan.graph[*n]))
                .sum();
            let entry = per_cluster
                .entry(plan.inventory.hosts[h].cluster)
                .or_default();
            entry.0 += 1;
            entry.1 = entry.1.max(host_time);
        }
        let wave_time = per_cluster
            .iter()
            .map(|(cluster, (hosts, host_time))| {
                let slots = limits[*cluster].max_unavailable;
                *host_time * hosts.div_ceil(slots) as u32
            })
            .max()
            .unwrap_or_default();
        total += wave_time + strategy.waves[w].pause.unwrap_or_default();
    }
    total
}

/// Steps whose tasks count as 0s in an estimate: no `estimate:` and nothing learned.
pub fn steps_without_estimate(plan: &Plan) -> Vec<&str> {
    plan.playbook
        .steps
        .iter()
        .enumerate()
        .filter(|(i, s)| {
            s.estimate.is_none() && plan.learned_durations.get(*i).copied().flatten().is_none()
        })
        .map(|(_, s)| s.name.as_str())
        .collect()
}

/// Steps without `estimate:` whose duration was learned from earlier runs.
pub fn learned_steps(plan: &Plan) -> Vec<(&str, Duration)> {
    plan.playbook
        .steps
        .iter()
        .zip(&plan.learned_durations)
        .filter_map(|(s, d)| match (s.estimate, d) {
            (None, Some(d)) => Some((s.name.as_str(), *d)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{build, PlanOptions};
    use std::path::Path;
    use std::sync::Arc;

    const INVENTORY: &str = r#"
name: t
regions:
  r1:
    clusters:
      c1: { hosts: { "h[1:5]": } }
"#;

    fn plan(playbook: &str) -> Plan {
        let inventory = crate::inventory::parse(Path::new("inv.yaml"), INVENTORY).unwrap();
        let playbook = crate::playbook::parse(Path::new("pb.yaml"), playbook).unwrap();
        build(
            Arc::new(inventory),
            Arc::new(playbook),
            &PlanOptions::default(),
        )
        .unwrap()
    }

    #[test]
    fn limits_come_from_the_plans_cluster_slots() {
        // 5 hosts, 40% → 2 slots: three rounds of 10s + 5s per host.
        let plan = plan(
            "name: e\nstrategy: { max_unavailable: 40% }\nsteps:\n  - { name: a, run: x, estimate: 10s }\n  - { name: b, run: y, estimate: 5s, needs: [a] }\n",
        );
        assert_eq!(plan.cluster_limits()[0].max_unavailable, 2);
        assert_eq!(estimate_with_limits(&plan), Duration::from_secs(45));
        let path = plan.estimated_critical_path();
        assert_eq!((path.tasks, path.duration), (2, Duration::from_secs(15)));
    }

    #[test]
    fn learns_the_median_per_step_and_ignores_unknown_steps() {
        let mut plan = plan(
            "name: e\nsteps:\n  - { name: a, run: x }\n  - { name: b, run: y, estimate: 1s }\n",
        );
        let samples = [("a@h1", 300), ("a@h2", 100), ("a@h3", 200), ("gone@h1", 9)]
            .map(|(label, ms)| (label.to_string(), ms));
        plan.learned_durations = learned_durations(&plan, samples);
        assert_eq!(
            plan.learned_durations,
            vec![Some(Duration::from_millis(200)), None]
        );
        assert_eq!(
            learned_steps(&plan),
            vec![("a", Duration::from_millis(200))]
        );
        assert!(steps_without_estimate(&plan).is_empty());
    }
}
