//! `delegate:` resolved when the plan is built: each task of a delegated step gets the
//! one host that runs its commands on its target's behalf. The step's `delegate`
//! template is rendered with the target's context (its name, address and vars), and the
//! result, a host pattern, must match exactly one inventory host. Every problem is a
//! validation error naming the step, the target and what the pattern matched, so a run
//! never starts with a delegate it cannot reach. Steps that share a delegate host must
//! agree on `delegate_parallel`, the size of that host's turn-taking.

use super::{Node, Plan};
use crate::diag::{Diagnostic, Diagnostics};
use crate::inventory::pattern::HostPattern;
use crate::inventory::{HostId, Inventory, Vars};
use crate::playbook::template;
use crate::playbook::StepId;
use std::collections::{BTreeMap, HashMap};

/// How many tasks run at once on each delegate host, for the plan's delegated tasks.
pub fn parallelism(plan: &Plan) -> BTreeMap<HostId, usize> {
    let mut limits = BTreeMap::new();
    for (_, task) in plan.tasks() {
        if let Some(delegate) = task.delegate {
            limits.insert(delegate, plan.playbook.steps[task.step].delegate_parallel);
        }
    }
    limits
}

/// Sets `delegate` on every task of a step with `delegate:`; reports (at most one error
/// per step, with how many targets share it) what could not be resolved.
pub(super) fn resolve(plan: &mut Plan, errors: &mut Diagnostics) {
    let delegated: Vec<StepId> = (0..plan.playbook.steps.len())
        .filter(|&s| plan.playbook.steps[s].delegate.is_some())
        .collect();
    if delegated.is_empty() {
        return;
    }
    let env = template::environment();
    let nodes: Vec<_> = plan.graph.node_indices().collect();
    let mut resolved: HashMap<String, Result<HostId, String>> = HashMap::new();
    // Per step: the first failure (target, message) and how many targets failed.
    let mut failures: BTreeMap<StepId, (String, String, usize)> = BTreeMap::new();
    let mut parallel_of: BTreeMap<HostId, StepId> = BTreeMap::new();
    let mut conflicts: BTreeMap<(StepId, StepId), HostId> = BTreeMap::new();
    for node in nodes {
        let Node::Task(task) = plan.graph[node] else {
            continue;
        };
        let step = &plan.playbook.steps[task.step];
        let Some(source) = &step.delegate else {
            continue;
        };
        let ctx = plan.template_context(&task, "plan", &Vars::new());
        let outcome = env
            .render_str(source, &ctx)
            .map_err(|e| {
                format!(
                    "cannot be rendered: {}",
                    e.detail()
                        .map(str::to_string)
                        .unwrap_or_else(|| e.to_string())
                )
            })
            .and_then(|text| {
                resolved
                    .entry(text.clone())
                    .or_insert_with(|| one_host(&plan.inventory, &text))
                    .clone()
            });
        match outcome {
            Ok(delegate) => {
                let earlier = *parallel_of.entry(delegate).or_insert(task.step);
                if plan.playbook.steps[earlier].delegate_parallel != step.delegate_parallel {
                    conflicts.entry((earlier, task.step)).or_insert(delegate);
                }
                if let Node::Task(task) = &mut plan.graph[node] {
                    task.delegate = Some(delegate);
                }
            }
            Err(message) => {
                let target = plan.inventory.hosts[task.host].name.clone();
                failures.entry(task.step).or_insert((target, message, 0)).2 += 1;
            }
        }
    }
    let file = plan.playbook.file.clone();
    for (step, (target, message, count)) in failures {
        let step = &plan.playbook.steps[step];
        let others = match count {
            1 => String::new(),
            n => format!(" (and {} other target(s))", n - 1),
        };
        errors.push(
            Diagnostic::new(
                &file,
                format!(
                    "step `{}`: `delegate: {}` for host `{target}`{others} {message}",
                    step.name,
                    step.delegate.as_deref().unwrap_or_default()
                ),
            )
            .hint(
                "a delegate must name exactly one inventory host for every target, e.g. \
                 `delegate: \"{{ lb_host }}\"` with `lb_host` set in the inventory",
            ),
        );
    }
    for ((first, second), host) in conflicts {
        let steps = &plan.playbook.steps;
        errors.push(
            Diagnostic::new(
                &file,
                format!(
                    "steps `{}` (delegate_parallel: {}) and `{}` (delegate_parallel: {}) both delegate to host `{}`",
                    steps[first].name,
                    steps[first].delegate_parallel,
                    steps[second].name,
                    steps[second].delegate_parallel,
                    plan.inventory.hosts[host].name
                ),
            )
            .hint("tasks on one delegate host take turns together: give these steps the same `delegate_parallel`"),
        );
    }
}

/// The one host `text` names: a host name, or a pattern matching exactly one host.
fn one_host(inventory: &Inventory, text: &str) -> Result<HostId, String> {
    let text = text.trim();
    if let Some(host) = inventory.host_id(text) {
        return Ok(host);
    }
    if text.is_empty() {
        return Err("renders to nothing".into());
    }
    let matched = HostPattern::parse(text)
        .and_then(|p| p.resolve(inventory))
        .map_err(|e| match &e.suggestion {
            Some(s) => format!("renders to `{text}`: {e} (did you mean `{s}`?)"),
            None => format!("renders to `{text}`: {e}"),
        })?;
    let hosts: Vec<HostId> = matched.iter().collect();
    match hosts.as_slice() {
        [host] => Ok(*host),
        [] => Err(format!("renders to `{text}`, which matches no host")),
        many => {
            let names: Vec<&str> = many
                .iter()
                .take(5)
                .map(|h| inventory.hosts[*h].name.as_str())
                .collect();
            Err(format!(
                "renders to `{text}`, which matches {} hosts ({}{}), not one",
                many.len(),
                names.join(", "),
                if many.len() > 5 { ", …" } else { "" }
            ))
        }
    }
}
