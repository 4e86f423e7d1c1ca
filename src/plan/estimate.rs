//! Each task's estimated duration (the step's `estimate:`, else the median of what
//! earlier runs took) and the critical path weighed by them, which `pony plan` lists.
//! How long a rollout takes under its limits is not a formula here: `plan --estimate` and
//! `pony simulate` run the deploy scheduler in virtual time ([`crate::sim`]). Nothing here
//! reads files (earlier runs' durations come from [`crate::state::runs`]).

use super::{CriticalPath, Node, Plan};
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

#[cfg(test)]
mod tests {
    use super::*;

    const INVENTORY: &str = r#"
name: t
regions:
  r1:
    clusters:
      c1: { hosts: { "h[1:5]": } }
"#;

    fn plan(playbook: &str) -> Plan {
        crate::plan::from_yaml(INVENTORY, playbook)
    }

    #[test]
    fn the_critical_path_is_weighed_by_estimates() {
        let plan = plan(
            "name: e\nstrategy: { max_unavailable: 40% }\nsteps:\n  - { name: a, run: x, estimate: 10s }\n  - { name: b, run: y, estimate: 5s, needs: [a] }\n",
        );
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
    }
}
