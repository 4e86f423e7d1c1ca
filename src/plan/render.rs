//! Drawing a plan: Graphviz dot, Mermaid and JSON, at step level (steps and their
//! `needs`) or task level (every task, join and wave gate).

use super::{Node, Plan};
use serde_json::json;
use std::fmt::Write;

/// A drawing format of `pony graph`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
    Json,
}

/// What the drawing shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Steps,
    Tasks,
}

pub fn render(plan: &Plan, format: GraphFormat, level: Level) -> String {
    match (format, level) {
        (GraphFormat::Dot, Level::Steps) => dot_steps(plan),
        (GraphFormat::Dot, Level::Tasks) => dot_tasks(plan),
        (GraphFormat::Mermaid, Level::Steps) => mermaid_steps(plan),
        (GraphFormat::Mermaid, Level::Tasks) => mermaid_tasks(plan),
        (GraphFormat::Json, Level::Steps) => {
            serde_json::to_string_pretty(&json_steps(plan)).expect("json")
        }
        (GraphFormat::Json, Level::Tasks) => {
            serde_json::to_string_pretty(&json_tasks(plan)).expect("json")
        }
    }
}

/// Tasks per step, for labels.
fn task_counts(plan: &Plan) -> Vec<usize> {
    let mut counts = vec![0; plan.playbook.steps.len()];
    for (_, task) in plan.tasks() {
        counts[task.step] += 1;
    }
    counts
}

fn per_name(per: crate::playbook::Per) -> &'static str {
    match per {
        crate::playbook::Per::Host => "host",
        crate::playbook::Per::Region => "region",
        crate::playbook::Per::Run => "run",
    }
}

/// What `plan` and `--dry-run` say of a handler: the steps it listens to.
pub fn handler_note(plan: &Plan, step: &crate::playbook::Step) -> Option<String> {
    step.is_handler().then(|| {
        let heard: Vec<String> = step
            .listen
            .iter()
            .map(|&l| format!("`{}`", plan.playbook.steps[l].name))
            .collect();
        format!(
            "handler: runs on a host only if {} changed something there",
            heard.join(" or ")
        )
    })
}

/// A step's `handler` and `changed_when` notes, as tags before a task's command.
pub fn step_tags(plan: &Plan, step: &crate::playbook::Step) -> String {
    let mut tags = String::new();
    if let Some(note) = handler_note(plan, step) {
        tags.push_str(&format!("[{note}] "));
    }
    if let Some(rule) = step.changed_when.describe() {
        tags.push_str(&format!("[{rule}] "));
    }
    tags
}

fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

fn dot_steps(plan: &Plan) -> String {
    let counts = task_counts(plan);
    let mut out = String::new();
    writeln!(out, "digraph {} {{", quoted(&plan.playbook.name)).unwrap();
    writeln!(out, "  rankdir=LR;\n  node [shape=box, style=rounded];").unwrap();
    for (s, step) in plan.playbook.steps.iter().enumerate() {
        let mut label = format!(
            "{}\\n{} · per {} · {} tasks",
            step.name,
            step.hosts.as_str(),
            per_name(step.per),
            counts[s]
        );
        if let Some(origin) = &step.origin {
            label.push_str(&format!("\\nfrom {origin}"));
        }
        if step.is_handler() {
            label.push_str("\\nhandler");
        }
        writeln!(
            out,
            "  {} [label=\"{}\"];",
            quoted(&step.name),
            label.replace('"', "\\\"")
        )
        .unwrap();
    }
    for step in &plan.playbook.steps {
        for need in &step.needs {
            let style = if step.listen.contains(&need.step) {
                " [style=dotted, label=\"notifies\"]"
            } else if need.scope == crate::playbook::NeedScope::Run {
                " [style=dashed, label=\"run\"]"
            } else {
                ""
            };
            writeln!(
                out,
                "  {} -> {}{style};",
                quoted(&plan.playbook.steps[need.step].name),
                quoted(&step.name)
            )
            .unwrap();
        }
    }
    out.push_str("}\n");
    out
}

fn dot_tasks(plan: &Plan) -> String {
    let mut out = String::new();
    writeln!(out, "digraph {} {{", quoted(&plan.playbook.name)).unwrap();
    writeln!(
        out,
        "  rankdir=LR;\n  node [shape=box, style=rounded, fontsize=10];"
    )
    .unwrap();
    for (w, wave) in plan.waves.iter().enumerate() {
        writeln!(
            out,
            "  subgraph \"cluster_wave_{w}\" {{\n    label={};",
            quoted(&format!("wave {}", wave.name))
        )
        .unwrap();
        for (node, task) in plan.tasks() {
            if task.wave == w {
                writeln!(
                    out,
                    "    n{} [label={}];",
                    node.index(),
                    quoted(&plan.label(node))
                )
                .unwrap();
            }
        }
        out.push_str("  }\n");
    }
    for node in plan.graph.node_indices() {
        match plan.graph[node] {
            Node::Gate(_) => writeln!(
                out,
                "  n{} [label={}, shape=diamond];",
                node.index(),
                quoted(&plan.label(node))
            )
            .unwrap(),
            Node::Join { .. } => writeln!(
                out,
                "  n{} [label={}, shape=ellipse];",
                node.index(),
                quoted(&plan.label(node))
            )
            .unwrap(),
            Node::Task(_) => {}
        }
    }
    for edge in plan.graph.raw_edges() {
        writeln!(
            out,
            "  n{} -> n{};",
            edge.source().index(),
            edge.target().index()
        )
        .unwrap();
    }
    out.push_str("}\n");
    out
}

fn mermaid_id(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn mermaid_steps(plan: &Plan) -> String {
    let counts = task_counts(plan);
    let mut out = String::from("flowchart LR\n");
    for (s, step) in plan.playbook.steps.iter().enumerate() {
        let from = step
            .origin
            .as_ref()
            .map(|o| format!("<br/>from {o}"))
            .unwrap_or_default();
        writeln!(
            out,
            "  s{s}_{}[\"{}<br/>per {} · {} tasks{from}\"]",
            mermaid_id(&step.name),
            step.name,
            per_name(step.per),
            counts[s]
        )
        .unwrap();
    }
    for (s, step) in plan.playbook.steps.iter().enumerate() {
        for need in &step.needs {
            let needed = &plan.playbook.steps[need.step];
            let arrow = if step.listen.contains(&need.step) {
                "-. notifies .->"
            } else {
                "-->"
            };
            writeln!(
                out,
                "  s{}_{} {arrow} s{s}_{}",
                need.step,
                mermaid_id(&needed.name),
                mermaid_id(&step.name)
            )
            .unwrap();
        }
    }
    out
}

fn mermaid_tasks(plan: &Plan) -> String {
    let mut out = String::from("flowchart LR\n");
    for node in plan.graph.node_indices() {
        let label = plan.label(node);
        let shape = match plan.graph[node] {
            Node::Task(_) => format!("n{}[\"{label}\"]", node.index()),
            Node::Gate(_) => format!("n{}{{\"{label}\"}}", node.index()),
            Node::Join { .. } => format!("n{}((\"{label}\"))", node.index()),
        };
        writeln!(out, "  {shape}").unwrap();
    }
    for edge in plan.graph.raw_edges() {
        writeln!(
            out,
            "  n{} --> n{}",
            edge.source().index(),
            edge.target().index()
        )
        .unwrap();
    }
    out
}

fn json_steps(plan: &Plan) -> serde_json::Value {
    let counts = task_counts(plan);
    json!({
        "playbook": plan.playbook.name,
        "inventory": plan.inventory.name,
        "steps": plan.playbook.steps.iter().enumerate().map(|(s, step)| json!({
            "name": step.name,
            "hosts": step.hosts.as_str(),
            "per": per_name(step.per),
            "action": step.action.kind(),
            "tasks": counts[s],
            "from": step.origin,
            "listen": step.listen.iter().map(|&l| &plan.playbook.steps[l].name).collect::<Vec<_>>(),
            "changed_when": step.changed_when.describe(),
            "needs": step.needs.iter().map(|n| json!({
                "step": plan.playbook.steps[n.step].name,
                "scope": n.scope,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "waves": plan.waves.iter().map(|w| json!({ "name": w.name, "hosts": w.hosts.len() })).collect::<Vec<_>>(),
    })
}

fn json_tasks(plan: &Plan) -> serde_json::Value {
    let nodes: Vec<serde_json::Value> = plan.graph.node_indices().map(|node| {
        let label = plan.label(node);
        match &plan.graph[node] {
            Node::Task(t) => json!({
                "id": node.index(), "kind": "task", "label": label,
                "step": plan.playbook.steps[t.step].name,
                "host": plan.inventory.hosts[t.host].name,
                "per": per_name(t.per),
                "wave": plan.waves[t.wave].name,
            }),
            Node::Gate(w) => json!({ "id": node.index(), "kind": "gate", "label": label, "wave": plan.waves[*w].name }),
            Node::Join { step, .. } => json!({ "id": node.index(), "kind": "join", "label": label, "step": plan.playbook.steps[*step].name }),
        }
    }).collect();
    let edges: Vec<[usize; 2]> = plan
        .graph
        .raw_edges()
        .iter()
        .map(|e| [e.source().index(), e.target().index()])
        .collect();
    json!({ "playbook": plan.playbook.name, "inventory": plan.inventory.name, "nodes": nodes, "edges": edges })
}
