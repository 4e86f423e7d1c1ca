//! `pony deploy --dry-run`: every command per host, rendered, in the order the real run
//! takes them, each with its rollback; nothing is contacted.
//!
//! The order is the admission's: per wave, each cluster lets `max_unavailable` hosts in
//! at once, first come first served, in the order the hosts' first tasks become ready
//! (inventory order for a step that runs everywhere). The dry run shows that as batches
//! per cluster; the real run slides (the next host starts as soon as one finishes), so a
//! batch is "at most this many at once, in this order", not a barrier.

use crate::exec::task;
use crate::inventory::{ClusterId, HostId};
use crate::plan::{Node, NodeId, Plan};
use crate::playbook::{CheckAction, Per, RollbackPace};
use crate::secret::Redactor;
use std::collections::BTreeMap;

/// What the dry run says where a template uses a capture.
const CAPTURED: &str = "(captured at run time)";

/// Each wave's hosts per cluster, cut into admission batches, and every host's batch.
struct Batches {
    /// Per wave: cluster → batches of hosts, in admission order.
    waves: Vec<BTreeMap<ClusterId, Vec<Vec<HostId>>>>,
    /// Per host: its batch (0-based) within its wave and cluster.
    of_host: Vec<usize>,
}

fn batches(plan: &Plan) -> Batches {
    let limits = plan.cluster_limits();
    // A host enters its cluster's queue when its first `per: host` task is ready: the
    // one with the lowest node index among those that wait only for the wave's start.
    let mut first_ready: Vec<Option<usize>> = vec![None; plan.inventory.hosts.len()];
    let mut first_any: Vec<Option<usize>> = vec![None; plan.inventory.hosts.len()];
    for (node, t) in plan.tasks() {
        if t.per != Per::Host {
            continue;
        }
        let at_start = plan
            .dependencies(node)
            .all(|d| matches!(plan.graph[d], Node::Gate(_)));
        let slot = if at_start {
            &mut first_ready[t.host]
        } else {
            &mut first_any[t.host]
        };
        *slot = Some(slot.map_or(node.index(), |i| i.min(node.index())));
    }
    let mut of_host = vec![0; plan.inventory.hosts.len()];
    let waves = plan
        .waves
        .iter()
        .map(|wave| {
            let mut by_cluster: BTreeMap<ClusterId, Vec<HostId>> = BTreeMap::new();
            for &h in &wave.hosts {
                if first_ready[h].is_some() || first_any[h].is_some() {
                    by_cluster
                        .entry(plan.inventory.hosts[h].cluster)
                        .or_default()
                        .push(h);
                }
            }
            by_cluster
                .into_iter()
                .map(|(cluster, mut hosts)| {
                    hosts
                        .sort_by_key(|&h| (first_ready[h].is_none(), first_ready[h], first_any[h]));
                    let size = limits[cluster].max_unavailable.max(1);
                    let cut: Vec<Vec<HostId>> = hosts.chunks(size).map(<[_]>::to_vec).collect();
                    for (b, batch) in cut.iter().enumerate() {
                        for &h in batch {
                            of_host[h] = b;
                        }
                    }
                    (cluster, cut)
                })
                .collect()
        })
        .collect();
    Batches { waves, of_host }
}

/// Each node's place in a topological order that, among the nodes ready at each point,
/// takes a task of the host the batches list first: a host's commands come together, and
/// hosts in the order the wave header shows them, as far as dependencies allow.
fn host_grouped_order(plan: &Plan, batches: &Batches) -> Vec<usize> {
    use std::cmp::Reverse;
    let mut rank = vec![usize::MAX; plan.inventory.hosts.len()];
    let listed = batches
        .waves
        .iter()
        .flat_map(|w| w.values().flatten().flatten());
    for (i, &host) in listed.enumerate() {
        rank[host] = i;
    }
    // Joins and gates print nothing: they go as soon as they are ready.
    let key = |n: NodeId| match &plan.graph[n] {
        Node::Task(t) => (rank[t.host], n.index()),
        _ => (0, n.index()),
    };
    let count = plan.graph.node_count();
    let mut waiting: Vec<usize> = (0..count)
        .map(|i| plan.dependencies(NodeId::new(i)).count())
        .collect();
    let mut ready: std::collections::BinaryHeap<Reverse<((usize, usize), NodeId)>> = (0..count)
        .map(NodeId::new)
        .filter(|n| waiting[n.index()] == 0)
        .map(|n| Reverse((key(n), n)))
        .collect();
    let mut position = vec![0usize; count];
    let mut next = 0;
    while let Some(Reverse((_, node))) = ready.pop() {
        position[node.index()] = next;
        next += 1;
        for dependent in plan.dependents(node) {
            waiting[dependent.index()] -= 1;
            if waiting[dependent.index()] == 0 {
                ready.push(Reverse((key(dependent), dependent)));
            }
        }
    }
    position
}

/// Every command per host in the order the run takes them, rendered, each followed by
/// its rollback; `connections` is the run-wide limit of hosts at once.
pub fn render(plan: &Plan, redactor: &Redactor, connections: usize, pace: RollbackPace) -> String {
    let batches = batches(plan);
    // A task's batch: its host's, or later when it waits for tasks of a later batch (a
    // region-wide `needs`, a `per: region` step after the region's hosts).
    let mut level = vec![0usize; plan.graph.node_count()];
    for &node in plan.topological_order() {
        let inherited = plan
            .dependencies(node)
            .filter(|d| !matches!(plan.graph[*d], Node::Gate(_)))
            .map(|d| level[d.index()])
            .max()
            .unwrap_or(0);
        level[node.index()] = match &plan.graph[node] {
            Node::Task(t) if t.per == Per::Host => inherited.max(batches.of_host[t.host]),
            Node::Task(_) | Node::Join { .. } => inherited,
            Node::Gate(_) => 0,
        };
    }
    let position = host_grouped_order(plan, &batches);
    let mut tasks: Vec<(usize, usize, usize, NodeId)> = plan
        .tasks()
        .map(|(n, t)| (t.wave, level[n.index()], position[n.index()], n))
        .collect();
    tasks.sort_unstable();

    let mut placeholders = crate::inventory::Vars::new();
    for s in &plan.playbook.steps {
        if let Some(name) = &s.capture {
            placeholders.insert(name.clone(), CAPTURED.into());
        }
    }
    let mut out = rollback_line(plan, pace);
    let mut next = tasks.iter().peekable();
    for (w, wave) in plan.waves.iter().enumerate() {
        out.push_str(&wave_header(plan, w, &batches.waves[w], connections));
        let mut shown_batch = None;
        while let Some(&&(task_wave, batch, _, node)) = next.peek() {
            if task_wave != w {
                break;
            }
            next.next();
            if shown_batch != Some(batch) && batches.waves[w].values().any(|c| c.len() > 1) {
                out.push_str(&format!("# wave {}, batch {}\n", wave.name, batch + 1));
            }
            shown_batch = Some(batch);
            out.push_str(&task_lines(plan, node, redactor, &placeholders));
        }
        let spec = &plan.playbook.strategy.waves[w];
        if !wave.hosts.is_empty() {
            out.push_str(&format!(
                "# end of wave {}{}{}\n",
                spec.name,
                spec.pause
                    .map(|p| format!(", pause {}", humantime::format_duration(p)))
                    .unwrap_or_default(),
                if spec.approve { ", approve" } else { "" }
            ));
            out.push_str(&gate_checks(plan, w, redactor));
        }
    }
    out
}

/// How a rollback would go: the pace (the command line's `--rollback-pace` or the
/// playbook's) and the failure budgets that trigger it.
fn rollback_line(plan: &Plan, pace: RollbackPace) -> String {
    let strategy = &plan.playbook.strategy;
    let pace = match pace {
        RollbackPace::Window => {
            "pace window: per cluster at most max_unavailable hosts roll back at once, the failed host first"
        }
        RollbackPace::All => "pace all: every host of a rollback at once",
    };
    let on_failure = strategy.on_failure.as_str();
    let mut budgets = vec![format!(
        "max_failures {} per cluster",
        strategy.max_failures
    )];
    if let Some(run) = strategy.max_failures_run {
        budgets.push(format!("max_failures_run {run}"));
    }
    format!(
        "# rollback: {pace}; beyond {} → {on_failure}\n",
        budgets.join(", ")
    )
}

/// What the wave's gate checks: every `verify:` check, rendered for its first host.
fn gate_checks(plan: &Plan, wave: usize, redactor: &Redactor) -> String {
    let spec = &plan.playbook.strategy.waves[wave];
    let mut out = String::new();
    if let Some(max) = spec.max_failures {
        out.push_str(&format!(
            "#   wave budget: max_failures {max} of the wave's hosts, then on_failure for the whole run\n"
        ));
    }
    for check in &spec.verify {
        out.push_str(&format!(
            "#   verify {}\n",
            redactor.redact(&check.describe())
        ));
        let first = match &check.hosts {
            Some(pattern) => pattern
                .resolve(&plan.inventory)
                .ok()
                .and_then(|set| set.iter().next()),
            None => plan.waves[wave].hosts.first().copied(),
        };
        let Some(host) = first else { continue };
        let ctx = plan.host_context(host, wave, "DRY-RUN", &crate::inventory::Vars::new());
        let env = crate::playbook::template::environment();
        let rendered = check
            .action
            .rendered(|_, source| env.render_str(source, &ctx));
        let text = match rendered {
            Ok(CheckAction::Run(command)) => command,
            Ok(CheckAction::Probe(probe)) => format!("probe {}", probe.describe()),
            Err(e) => format!("!! {e}"),
        };
        out.push_str(&format!(
            "#     on {}: {}\n",
            plan.inventory.hosts[host].name,
            redactor.redact(&text)
        ));
    }
    out
}

/// `# wave NAME: …` and one line per cluster with its batches.
fn wave_header(
    plan: &Plan,
    wave: usize,
    clusters: &BTreeMap<ClusterId, Vec<Vec<HostId>>>,
    connections: usize,
) -> String {
    let name = &plan.waves[wave].name;
    let hosts = plan.waves[wave].hosts.len();
    if hosts == 0 {
        return format!("# wave {name}: no host has tasks; skipped\n");
    }
    let inventory = &plan.inventory;
    let limits = plan.cluster_limits();
    let mut out = format!(
        "# wave {name}: {hosts} hosts; per cluster at most max_unavailable at once, in this order (the next starts as one finishes):\n"
    );
    let mut at_once = 0;
    for (&c, cut) in clusters {
        let cluster = &inventory.clusters[c];
        at_once += limits[c]
            .max_unavailable
            .min(cut.iter().map(Vec::len).sum());
        let listed: Vec<String> = cut
            .iter()
            .enumerate()
            .map(|(b, batch)| {
                let names: Vec<&str> = batch
                    .iter()
                    .map(|&h| inventory.hosts[h].name.as_str())
                    .collect();
                format!("batch {}: {}", b + 1, names.join(", "))
            })
            .collect();
        out.push_str(&format!(
            "#   {}/{} ({} at once): {}\n",
            inventory.regions[cluster.region].name,
            cluster.name,
            limits[c].max_unavailable,
            listed.join(" / ")
        ));
    }
    if at_once > connections {
        out.push_str(&format!(
            "#   and at most {connections} hosts at once over the whole run (connections)\n"
        ));
    }
    out
}

/// `label  command`, then `  ↳ rollback: command` when the step has one.
fn task_lines(
    plan: &Plan,
    node: NodeId,
    redactor: &Redactor,
    placeholders: &crate::inventory::Vars,
) -> String {
    let t = plan.task(node).expect("a task");
    let step = &plan.playbook.steps[t.step];
    let ctx = task::context(plan, t, "DRY-RUN", placeholders);
    // `become` is shown as a tag: on the wire the commands go to `sudo -n sh -s` in a
    // here-document, which would only bury them.
    let become_tag = if step.become_root { "[become] " } else { "" };
    let forward = match task::render_task_for_display(plan, step, &ctx) {
        Ok(spec) => {
            let mut text = spec.action.describe();
            if let Some(c) = &spec.creates {
                text = format!("[creates {c}] {text}");
            }
            if let Some(u) = &spec.unless {
                text = format!("[unless {u}] {text}");
            }
            format!("{become_tag}{text}")
        }
        Err(e) => format!("!! {e}"),
    };
    // A delegated task's commands run on its delegate, on the target's behalf.
    let on = t
        .delegate
        .map(|d| format!("[on {}] ", plan.inventory.hosts[d].name))
        .unwrap_or_default();
    let mut out = format!(
        "{}  {on}{}\n",
        plan.label(node),
        redactor.redact(forward.trim_end()).replace('\n', "\n    ")
    );
    let rollback = match task::render_rollback_for_display(step, &ctx) {
        Ok(Some(command)) => format!("{become_tag}{command}"),
        Ok(None) => return out,
        Err(e) => format!("!! {e}"),
    };
    out.push_str(&format!(
        "  ↳ rollback: {on}{}\n",
        redactor
            .redact(rollback.trim_end())
            .replace('\n', "\n      ")
    ));
    out
}
