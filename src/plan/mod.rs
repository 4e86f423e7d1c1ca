//! The plan: a sealed task graph (petgraph) of tasks = step × target, with join nodes
//! for region/run-wide `needs` and gate nodes as wave barriers. It answers what the
//! executor needs: what is ready at start, who depends on whom, hosts per cluster,
//! the reverse order for rollback and the critical path for given durations.
//! [`estimate`] says how long the plan takes; [`render`] draws it.

mod build;
mod delegate;
pub mod estimate;
pub mod render;
mod targets;
mod templates;
mod validate;
mod waves;

pub use build::build;
pub use delegate::parallelism as delegate_parallelism;
pub use waves::wave_sizes;

use crate::inventory::pattern::HostSet;
use crate::inventory::{ClusterId, HostId, Inventory, RegionId, Vars};
use crate::playbook::{Per, Playbook, StepId};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub type NodeId = NodeIndex;

/// What narrows or overrides a plan on the command line.
#[derive(Debug, Default, Clone)]
pub struct PlanOptions {
    /// `--limit`: only these hosts get tasks.
    pub limit: Option<String>,
    /// `--var k=v`: override every other var.
    pub extra_vars: Vars,
}

/// A node of the task graph.
#[derive(Debug, Clone)]
pub enum Node {
    /// One step on one target.
    Task(Task),
    /// The barrier after wave `0`: passes when every task of the wave succeeded and the
    /// wave's `pause`/`approve` are through.
    Gate(usize),
    /// Stands for every task of `step` (in `region`, or everywhere) so that region- and
    /// run-wide `needs` cost edges linear in the number of tasks.
    Join {
        step: StepId,
        region: Option<RegionId>,
    },
}

/// One step on one target. `per: region` and `per: run` tasks run on `host`, the
/// region's (or run's) chosen host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Task {
    pub step: StepId,
    pub host: HostId,
    pub per: Per,
    pub wave: usize,
    /// The host that runs the task's commands on `host`'s behalf (the step's
    /// `delegate:`, resolved when the plan is built). `host` stays the target: its
    /// templates, window, failures and rollback scope.
    pub delegate: Option<HostId>,
}

impl Task {
    /// Where the task's commands run.
    pub fn runs_on(&self) -> RunsOn {
        match self.delegate {
            Some(delegate) => RunsOn::Delegate(delegate),
            None => RunsOn::Host(self.host),
        }
    }
}

/// Where a task's commands run: on its own host, or on a delegate host on behalf of its
/// target (then it waits its turn among the delegate's tasks, see `delegate_parallel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunsOn {
    Host(HostId),
    Delegate(HostId),
}

impl RunsOn {
    /// The host whose connection runs the commands.
    pub fn host(self) -> HostId {
        match self {
            RunsOn::Host(host) | RunsOn::Delegate(host) => host,
        }
    }
}

impl From<HostId> for RunsOn {
    fn from(host: HostId) -> Self {
        RunsOn::Host(host)
    }
}

/// A wave after `--limit`: its hosts that have tasks, in inventory order, and its gate.
/// A wave without such hosts is skipped by a run: it never starts and its gate waits for
/// neither `pause` nor `approve`.
#[derive(Debug)]
pub struct WavePlan {
    pub name: String,
    pub gate: NodeId,
    pub hosts: Vec<HostId>,
}

/// A cluster's limits for one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterLimits {
    /// Hosts of the cluster that have tasks.
    pub hosts: usize,
    /// `max_unavailable` resolved: the cluster's slots, hosts out of service at once.
    pub max_unavailable: usize,
    /// Failed hosts tolerated before `on_failure` applies.
    pub max_failures: usize,
}

/// A sealed, acyclic plan; only a `Plan` can be executed.
#[derive(Debug)]
pub struct Plan {
    pub inventory: Arc<Inventory>,
    pub playbook: Arc<Playbook>,
    pub graph: DiGraph<Node, ()>,
    pub waves: Vec<WavePlan>,
    /// The wave of every inventory host (`None` for a host in no wave, which then has no
    /// task).
    pub host_wave: Vec<Option<usize>>,
    /// The hosts `--limit` selected (all hosts without it).
    pub selected: HostSet,
    /// `--var` values; they override every other var.
    pub extra_vars: Vars,
    host_tasks: Vec<Vec<NodeId>>,
    topological: Vec<NodeId>,
    task_count: usize,
    /// Per step, the typical duration seen in earlier runs' journals; used by
    /// `--estimate` for steps without `estimate:` (see [`estimate::learned_durations`]).
    pub learned_durations: Vec<Option<Duration>>,
}

/// The longest path through the graph for some node durations.
#[derive(Debug, Clone)]
pub struct CriticalPath {
    pub nodes: Vec<NodeId>,
    pub tasks: usize,
    pub duration: Duration,
}

impl Plan {
    pub fn task(&self, node: NodeId) -> Option<&Task> {
        match &self.graph[node] {
            Node::Task(task) => Some(task),
            _ => None,
        }
    }

    pub fn task_count(&self) -> usize {
        self.task_count
    }

    /// Every task node, in graph order.
    pub fn tasks(&self) -> impl Iterator<Item = (NodeId, &Task)> {
        self.graph
            .node_indices()
            .filter_map(|n| self.task(n).map(|t| (n, t)))
    }

    /// Nodes with no dependencies: what the executor may start at once.
    pub fn ready_at_start(&self) -> Vec<NodeId> {
        self.graph.externals(Direction::Incoming).collect()
    }

    pub fn dependents(&self, node: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        self.graph.neighbors_directed(node, Direction::Outgoing)
    }

    pub fn dependencies(&self, node: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        self.graph.neighbors_directed(node, Direction::Incoming)
    }

    /// How many dependencies each node waits for, indexed by node.
    pub fn in_degrees(&self) -> Vec<usize> {
        self.graph
            .node_indices()
            .map(|n| {
                self.graph
                    .neighbors_directed(n, Direction::Incoming)
                    .count()
            })
            .collect()
    }

    /// The tasks that run on `host`, in topological order.
    pub fn tasks_of_host(&self, host: HostId) -> &[NodeId] {
        &self.host_tasks[host]
    }

    /// Hosts with at least one task, grouped per cluster (for `max_unavailable` and
    /// the failure budget).
    pub fn hosts_by_cluster(&self) -> BTreeMap<ClusterId, Vec<HostId>> {
        let mut out: BTreeMap<ClusterId, Vec<HostId>> = BTreeMap::new();
        for (host, tasks) in self.host_tasks.iter().enumerate() {
            if !tasks.is_empty() {
                out.entry(self.inventory.hosts[host].cluster)
                    .or_default()
                    .push(host);
            }
        }
        out
    }

    /// Each cluster's `max_unavailable` slots and `max_failures` budget, resolved from
    /// the hosts that have tasks (after `--limit`): the numbers `plan` prints and
    /// `deploy` enforces. A cluster without such hosts gets one slot and no budget.
    pub fn cluster_limits(&self) -> Vec<ClusterLimits> {
        let by_cluster = self.hosts_by_cluster();
        let strategy = &self.playbook.strategy;
        (0..self.inventory.clusters.len())
            .map(|c| {
                let hosts = by_cluster.get(&c).map(Vec::len).unwrap_or(0);
                ClusterLimits {
                    hosts,
                    max_unavailable: strategy.max_unavailable.of(hosts).max(1),
                    max_failures: strategy.max_failures.of(hosts),
                }
            })
            .collect()
    }

    /// All nodes, dependencies first.
    pub fn topological_order(&self) -> &[NodeId] {
        &self.topological
    }

    /// `tasks` ordered for rollback: every task after all tasks that depended on it.
    pub fn rollback_order(&self, tasks: &[NodeId]) -> Vec<NodeId> {
        let mut position = vec![usize::MAX; self.graph.node_count()];
        for (i, n) in self.topological.iter().enumerate() {
            position[n.index()] = i;
        }
        let mut ordered = tasks.to_vec();
        ordered.sort_by_key(|n| std::cmp::Reverse(position[n.index()]));
        ordered
    }

    /// The longest path when each node takes `duration(node)`; ties go to more tasks.
    pub fn critical_path(&self, duration: impl Fn(&Node) -> Duration) -> CriticalPath {
        let count = self.graph.node_count();
        let mut best: Vec<(Duration, usize)> = vec![(Duration::ZERO, 0); count];
        let mut previous: Vec<Option<NodeId>> = vec![None; count];
        for &node in &self.topological {
            let (mut time, mut tasks) = (Duration::ZERO, 0);
            for dependency in self.dependencies(node) {
                if best[dependency.index()] > (time, tasks) {
                    (time, tasks) = best[dependency.index()];
                    previous[node.index()] = Some(dependency);
                }
            }
            let is_task = usize::from(matches!(self.graph[node], Node::Task(_)));
            best[node.index()] = (time + duration(&self.graph[node]), tasks + is_task);
        }
        let Some(mut end) = self.graph.node_indices().max_by_key(|n| best[n.index()]) else {
            return CriticalPath {
                nodes: Vec::new(),
                tasks: 0,
                duration: Duration::ZERO,
            };
        };
        let (duration, tasks) = best[end.index()];
        let mut nodes = vec![end];
        while let Some(p) = previous[end.index()] {
            nodes.push(p);
            end = p;
        }
        nodes.reverse();
        CriticalPath {
            nodes,
            tasks,
            duration,
        }
    }

    /// A short human name: `switch@mx-gz-01`, `gate:canary`, `join:stage@cn-south`.
    pub fn label(&self, node: NodeId) -> String {
        match &self.graph[node] {
            Node::Task(task) => {
                let step = &self.playbook.steps[task.step].name;
                let host = &self.inventory.hosts[task.host];
                match task.per {
                    Per::Host => format!("{step}@{}", host.name),
                    Per::Region => format!("{step}@{}", self.inventory.regions[host.region].name),
                    Per::Run => format!("{step}@run"),
                }
            }
            Node::Gate(wave) => format!("gate:{}", self.waves[*wave].name),
            Node::Join { step, region } => {
                let step = &self.playbook.steps[*step].name;
                match region {
                    Some(r) => format!("join:{step}@{}", self.inventory.regions[*r].name),
                    None => format!("join:{step}@run"),
                }
            }
        }
    }

    /// Every `template:` and `upload:` source the plan reads, as the playbook names it
    /// (`src` rendered for each task's target; a `src` that uses a capture is known only
    /// once the capture ran, and is left out).
    pub fn file_sources(&self, run_id: &str) -> std::collections::BTreeSet<String> {
        let env = crate::playbook::template::environment();
        let mut sources = std::collections::BTreeSet::new();
        let empty = Vars::new();
        for node in self.graph.node_weights() {
            let Node::Task(task) = node else { continue };
            let (crate::playbook::Action::Upload(t) | crate::playbook::Action::Template(t)) =
                &self.playbook.steps[task.step].action
            else {
                continue;
            };
            if !t.src.contains("{{") && !t.src.contains("{%") {
                sources.insert(t.src.clone());
            } else if let Ok(src) =
                env.render_str(&t.src, self.template_context(task, run_id, &empty))
            {
                sources.insert(src);
            }
        }
        sources
    }

    /// The template context of a task: merged vars, then captures, and the built-ins
    /// `host`, `run`, `playbook`, `wave`.
    pub fn template_context(&self, task: &Task, run_id: &str, captures: &Vars) -> minijinja::Value {
        let step_vars = &self.playbook.steps[task.step].vars;
        self.context_with(task.host, task.wave, run_id, captures, step_vars)
    }

    /// The template context of `host` in `wave` outside any task (a gate's `verify:`
    /// checks): the same vars and built-ins a task of the host sees.
    pub fn host_context(
        &self,
        host_id: HostId,
        wave: usize,
        run_id: &str,
        captures: &Vars,
    ) -> minijinja::Value {
        self.context_with(host_id, wave, run_id, captures, &Vars::new())
    }

    /// [`Plan::host_context`] with a step's own `vars:` over the playbook's.
    fn context_with(
        &self,
        host_id: HostId,
        wave: usize,
        run_id: &str,
        captures: &Vars,
        step_vars: &Vars,
    ) -> minijinja::Value {
        let plan = self;
        let inventory = &plan.inventory;
        let host = &inventory.hosts[host_id];
        let mut vars = plan.vars_with(step_vars, host_id);
        vars.extend(captures.iter().map(|(k, v)| (k.clone(), v.clone())));
        let mut map: serde_json::Map<String, serde_json::Value> = vars
            .into_iter()
            .map(|(k, v)| (k, serde_json::to_value(v).unwrap_or_default()))
            .collect();
        map.insert(
            "host".into(),
            serde_json::json!({
                "name": host.name,
                "address": host.destination(),
                "region": inventory.regions[host.region].name,
                "cluster": inventory.clusters[host.cluster].name,
                "roles": host.roles,
            }),
        );
        map.insert("run".into(), serde_json::json!({ "id": run_id }));
        map.insert(
            "playbook".into(),
            serde_json::json!({ "name": plan.playbook.name }),
        );
        map.insert(
            "wave".into(),
            serde_json::json!({ "name": plan.waves[wave].name }),
        );
        minijinja::Value::from_serialize(&map)
    }

    /// The vars a host's templates see: playbook < inventory (merged) < `--var`.
    pub fn vars_for(&self, host: HostId) -> Vars {
        self.vars_with(&Vars::new(), host)
    }

    /// [`Plan::vars_for`] with a step's own `vars:` over the playbook's.
    pub fn vars_with(&self, step_vars: &Vars, host: HostId) -> Vars {
        let mut vars = self.playbook.vars.clone();
        vars.extend(step_vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        vars.extend(
            self.inventory.hosts[host]
                .vars
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        vars.extend(self.extra_vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        vars
    }

    /// The first wave after `wave` that has hosts with tasks (what a run goes on to).
    pub fn next_wave_with_hosts(&self, wave: usize) -> Option<usize> {
        (wave + 1..self.waves.len()).find(|&w| !self.waves[w].hosts.is_empty())
    }

    /// Hosts that have tasks (every one is in a wave).
    pub fn host_count(&self) -> usize {
        self.waves.iter().map(|w| w.hosts.len()).sum()
    }
}

/// A plan from an inventory's and a playbook's YAML with default options, for unit tests
/// across the crate; panics naming what was wrong.
#[cfg(test)]
pub(crate) fn from_yaml(inventory: &str, playbook: &str) -> Plan {
    let path = std::path::Path::new;
    let inventory =
        crate::inventory::parse(path("inv.yaml"), inventory).unwrap_or_else(|e| panic!("{e}"));
    let playbook =
        crate::playbook::parse(path("pb.yaml"), playbook).unwrap_or_else(|e| panic!("{e}"));
    build(
        Arc::new(inventory),
        Arc::new(playbook),
        &PlanOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

#[cfg(test)]
mod tests;
