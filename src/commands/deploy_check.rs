//! `pony deploy --check [--diff]`: connects to every host of the plan and, changing
//! nothing, says per host what the deploy would do there: the file steps whose content
//! differs from the file in place (with `--diff`, the unified diff, secrets masked), the
//! tasks a guard would skip, the commands that would run. Unlike `--dry-run`, which
//! contacts nothing, it asks the hosts; unlike a deploy, it takes no lock and writes no
//! run: nothing of it is journaled.
//!
//! Tasks are asked in plan order on each host, as if none before them had run: a file an
//! earlier step would write is compared as it is now, and a template that uses a capture
//! is rendered with a placeholder (said so beside it).

use super::ping::{connections, on_each_host};
use crate::exec::hosts::HostPool;
use crate::exec::task::{self, Preview};
use crate::exit::Exit;
use crate::inventory::{HostId, Vars};
use crate::plan::Plan;
use crate::secret::Redactor;
use crate::settings::Settings;
use crate::transport::ssh::SshOptions;
use std::fmt::Write;
use std::sync::Arc;

/// One task's answer, for the report.
struct Answer {
    step_id: crate::playbook::StepId,
    step: String,
    preview: Preview,
    /// Rendered with a placeholder for a capture.
    placeholder: bool,
}

pub fn run(
    settings: &Settings,
    plan: Plan,
    redactor: &Redactor,
    diff: bool,
    accept_new_host_keys: bool,
) -> anyhow::Result<Exit> {
    let plan = Arc::new(plan);
    let ssh = SshOptions::new(&settings.state_dir, accept_new_host_keys);
    if plan
        .inventory
        .hosts
        .iter()
        .any(|h| h.connection == crate::inventory::ConnectionKind::Ssh)
    {
        ssh.secure_control_dir()?;
    }
    let hosts: Vec<HostId> = (0..plan.inventory.hosts.len())
        .filter(|&h| !plan.tasks_of_host(h).is_empty())
        .collect();
    let connections = settings.connections.unwrap_or_else(|| {
        plan.playbook
            .strategy
            .connections
            .min(connections(settings))
    });
    let pool = HostPool::new(plan.clone(), ssh, settings.state_dir.join("hosts")).prepare();
    let position = Arc::new(graph_positions(&plan));
    let (answers, _) = on_each_host(hosts.clone(), connections, |host| {
        let (plan, pool, position) = (plan.clone(), pool.clone(), position.clone());
        async move {
            let answers = check_host(&plan, &position, &pool, host, diff).await;
            // Each host's master ends with its answers, not with the whole check.
            pool.close(host);
            answers
        }
    })?;
    let report = render(&plan, &hosts, &answers, redactor);
    crate::out!("{report}");
    let unknown = answers
        .iter()
        .flatten()
        .any(|a| matches!(a.preview, Preview::Unknown(_)));
    Ok(if unknown {
        Exit::SOME_HOSTS_FAILED
    } else {
        Exit::Success
    })
}

/// Asks `host` about each of its tasks, in plan order.
async fn check_host(
    plan: &Plan,
    position: &[usize],
    pool: &HostPool,
    host: HostId,
    diff: bool,
) -> Vec<Answer> {
    let placeholders = super::dry_run::capture_placeholders(plan);
    let mut answers = Vec::new();
    for node in in_graph_order(plan, position, host) {
        let Some(task) = plan.task(node) else {
            continue;
        };
        let step = &plan.playbook.steps[task.step];
        let rendered = |captures: &Vars| {
            let ctx = task::context(plan, task, "check", captures);
            task::render_task(plan, step, &ctx)
        };
        let (spec, placeholder) = match rendered(&Vars::new()) {
            Ok(spec) => (Ok(spec), false),
            Err(_) => (rendered(&placeholders), true),
        };
        let preview = match spec {
            // A handler is answered from what its listened steps would do here.
            Ok(_) if step.is_handler() => {
                let heard: Vec<(&str, &Preview, &crate::playbook::ChangeRule)> = answers
                    .iter()
                    .filter(|a: &&Answer| step.listen.contains(&a.step_id))
                    .map(|a| {
                        let listened = &plan.playbook.steps[a.step_id];
                        (listened.name.as_str(), &a.preview, &listened.changed_when)
                    })
                    .collect();
                task::handler_preview(&heard)
            }
            Ok(spec) => task::preview(pool, task.runs_on().host(), &spec, diff).await,
            Err(e) => Preview::Unknown(e),
        };
        answers.push(Answer {
            step_id: task.step,
            step: step.name.clone(),
            preview,
            placeholder,
        });
    }
    answers
}

/// Each node's place in one topological order of the plan's graph.
fn graph_positions(plan: &Plan) -> Vec<usize> {
    let order = petgraph::algo::toposort(&plan.graph, None).unwrap_or_default();
    let mut position = vec![usize::MAX; plan.graph.node_count()];
    for (i, node) in order.iter().enumerate() {
        position[node.index()] = i;
    }
    position
}

/// The host's tasks in an order the graph allows (each after what it needs; ties in
/// playbook order), as a person reads the playbook.
fn in_graph_order(plan: &Plan, position: &[usize], host: HostId) -> Vec<crate::plan::NodeId> {
    let mut nodes = plan.tasks_of_host(host).to_vec();
    nodes.sort_by_key(|node| (position[node.index()], node.index()));
    nodes
}

/// The report: per host its tasks' answers (diffs indented below), then the counts.
fn render(plan: &Plan, hosts: &[HostId], answers: &[Vec<Answer>], redactor: &Redactor) -> String {
    let mut out = format!(
        "check: asked {} host(s) what `{}` would do; nothing was changed on them\n",
        hosts.len(),
        plan.playbook.name
    );
    let (mut run, mut change, mut same, mut skipped, mut unknown) = (0, 0, 0, 0, 0);
    let mut not_notified = 0;
    let mut act = 0;
    let width = plan
        .playbook
        .steps
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(0);
    for (&host, answers) in hosts.iter().zip(answers) {
        let _ = writeln!(out, "{}", plan.inventory.hosts[host].name);
        for answer in answers {
            let (what, diff) = match &answer.preview {
                Preview::WouldRun => {
                    run += 1;
                    ("would run".to_string(), None)
                }
                Preview::Skipped(why) => {
                    skipped += 1;
                    (format!("skipped: {why}"), None)
                }
                Preview::WouldChange { dest, diff } => {
                    change += 1;
                    (format!("would change {dest}"), diff.as_deref())
                }
                Preview::Unchanged { dest } => {
                    same += 1;
                    (format!("unchanged {dest}"), None)
                }
                Preview::WouldDo(what) => {
                    act += 1;
                    (what.clone(), None)
                }
                Preview::AsAsked(what) => {
                    same += 1;
                    (format!("unchanged: {what}"), None)
                }
                Preview::Unknown(why) => {
                    unknown += 1;
                    (format!("unknown: {why}"), None)
                }
                Preview::Notified(why) => {
                    run += 1;
                    (format!("would run: {why}"), None)
                }
                Preview::NotNotified(why) => {
                    not_notified += 1;
                    (format!("skipped: {why}"), None)
                }
                Preview::IfNotified(why) => {
                    run += 1;
                    (format!("would run if notified: {why}"), None)
                }
            };
            let note = if answer.placeholder {
                " (a capture shown as a placeholder)"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  {:width$}  {}{note}",
                answer.step,
                redactor.redact(&what)
            );
            if let Some(diff) = diff {
                for line in redactor.redact(diff).lines() {
                    let _ = writeln!(out, "      {line}");
                }
            }
        }
    }
    out.push_str(&summary(
        [run, change, same, skipped, unknown],
        act,
        not_notified,
    ));
    out
}

/// The report's last line: the answers counted. A service or package change, and a
/// handler nothing would notify, are said only where there is one (the line stays as
/// scripts read it otherwise).
fn summary(
    [run, change, same, skipped, unknown]: [usize; 5],
    act: usize,
    not_notified: usize,
) -> String {
    let acts = match act {
        0 => String::new(),
        n => format!(", {n} would change a service or package"),
    };
    let quiet = match not_notified {
        0 => String::new(),
        n => format!(", {n} handler(s) nothing would notify"),
    };
    format!("summary: {run} would run, {change} would change a file{acts}, {same} unchanged, {skipped} skipped by a guard, {unknown} unknown{quiet}\n")
}
