//! `pony deploy --dry-run`: every command per host, rendered, in the order the real run
//! takes them, each with its rollback; nothing is contacted.
//!
//! The order is the scheduler's own: the dry run runs [`crate::exec::run`] the way
//! `pony simulate` does ([`crate::sim::rehearse`]: virtual time, nothing written) over
//! [`crate::sim::record`]'s transport, which records what would be sent and runs nothing,
//! and reads the order the hosts started in from the run's events. Per wave, each
//! cluster's hosts in that order are cut into `max_unavailable` batches; the real run
//! slides (the next host starts as soon as one finishes), so a batch is "at most this
//! many at once, in this order", not a barrier. Only the printing is this file's: a
//! host's commands together, in dependency order.

use crate::events::{Emitted, Event};
use crate::exec::task;
use crate::inventory::{ClusterId, HostId};
use crate::plan::{Node, NodeId, Plan};
use crate::playbook::{CheckAction, Per, RollbackPace};
use crate::secret::Redactor;
use crate::sim::record::{Recording, RecordingOpener};
use crate::sim::Rehearsal;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

/// What the dry run says where a template uses a capture.
const CAPTURED: &str = "(captured at run time)";

/// Every capture of the playbook standing as [`CAPTURED`], for rendering before the run
/// (`--dry-run`, `--check`).
pub fn capture_placeholders(plan: &Plan) -> crate::inventory::Vars {
    let mut placeholders = crate::inventory::Vars::new();
    for step in &plan.playbook.steps {
        if let Some(name) = &step.capture {
            placeholders.insert(name.clone(), CAPTURED.into());
        }
    }
    placeholders
}

/// Each wave's hosts per cluster, cut into admission batches, and every host's batch.
struct Batches {
    /// Per wave: cluster → batches of hosts, in admission order.
    waves: Vec<BTreeMap<ClusterId, Vec<Vec<HostId>>>>,
    /// Per host: its batch (0-based) within its wave and cluster.
    of_host: Vec<usize>,
    /// Per wave: hosts with tasks the rehearsal did not start.
    unreached: Vec<Vec<HostId>>,
}

/// What the scheduler did when it ran the plan over the recording transport.
struct Rehearsed {
    /// Hosts in the order the scheduler started them (their first `per: host` task).
    started: Vec<HostId>,
    /// Tasks it started, and what it sent the hosts (recorded, none of it run).
    tasks: usize,
    recorded: usize,
}

/// Runs the real scheduler ([`crate::sim::rehearse`], as `pony simulate` does) over the
/// recording transport: the admission order the dry run prints is the scheduler's own.
fn rehearse(plan: &Arc<Plan>, connections: usize, pace: RollbackPace) -> Rehearsed {
    let recording = Recording::new(plan.clone());
    let setup = Rehearsal {
        start: chrono::Utc::now(),
        approve_after: Duration::ZERO,
        connections,
        rollback_pace: pace,
    };
    let opener = Arc::new(RecordingOpener(recording.clone()));
    let of_plan = plan.clone();
    let started = crate::sim::rehearse(plan.clone(), opener, &setup, |events, _| {
        started_tasks(of_plan, events)
    });
    let mut seen = vec![false; plan.inventory.hosts.len()];
    let hosts = started
        .iter()
        .filter_map(|&node| plan.task(NodeId::new(node)))
        .filter(|t| t.per == Per::Host && !std::mem::replace(&mut seen[t.host], true))
        .map(|t| t.host)
        .collect();
    Rehearsed {
        started: hosts,
        tasks: started.len(),
        recorded: recording.take().len(),
    }
}

/// The tasks the run started, in order (every durable event acknowledged at once: nothing
/// is written).
async fn started_tasks(plan: Arc<Plan>, mut events: UnboundedReceiver<Emitted>) -> Vec<usize> {
    let mut started = Vec::with_capacity(plan.graph.node_count());
    while let Some(emitted) = events.recv().await {
        if let Some(ack) = emitted.durable {
            let _ = ack.send(());
        }
        if let Event::TaskStarted { task } = emitted.event {
            started.push(task.id);
        }
    }
    started
}

/// Cuts each wave's hosts, per cluster in the order the scheduler admitted them, into
/// batches of `max_unavailable`. A host with tasks that the rehearsal never started (its
/// run stopped first) comes last, in inventory order, and is named in `unreached`.
fn batches(plan: &Plan, rehearsed: &Rehearsed) -> Batches {
    let limits = plan.cluster_limits();
    let hosts = plan.inventory.hosts.len();
    let mut wave_of = vec![None; hosts];
    for (w, wave) in plan.waves.iter().enumerate() {
        for &h in &wave.hosts {
            wave_of[h] = Some(w);
        }
    }
    let mut has_task = vec![false; hosts];
    for (_, t) in plan.tasks() {
        has_task[t.host] |= t.per == Per::Host;
    }
    let mut started = vec![false; hosts];
    for &h in &rehearsed.started {
        started[h] = true;
    }
    let never_started: Vec<HostId> = (0..hosts).filter(|&h| has_task[h] && !started[h]).collect();
    let mut by_cluster: Vec<BTreeMap<ClusterId, Vec<HostId>>> =
        vec![BTreeMap::new(); plan.waves.len()];
    let mut unreached = vec![Vec::new(); plan.waves.len()];
    for &h in rehearsed.started.iter().chain(&never_started) {
        let Some(w) = wave_of[h] else { continue };
        by_cluster[w]
            .entry(plan.inventory.hosts[h].cluster)
            .or_default()
            .push(h);
    }
    for &h in &never_started {
        if let Some(w) = wave_of[h] {
            unreached[w].push(h);
        }
    }
    let mut of_host = vec![0; hosts];
    let waves = by_cluster
        .into_iter()
        .map(|clusters| {
            clusters
                .into_iter()
                .map(|(cluster, hosts)| {
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
    Batches {
        waves,
        of_host,
        unreached,
    }
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
pub fn render(plan: Plan, redactor: &Redactor, connections: usize, pace: RollbackPace) -> String {
    let plan = Arc::new(plan);
    let rehearsed = rehearse(&plan, connections, pace);
    let batches = batches(&plan, &rehearsed);
    let plan = &*plan;
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

    let placeholders = capture_placeholders(plan);
    let mut out = rollback_line(plan, pace);
    let mut next = tasks.iter().peekable();
    for (w, wave) in plan.waves.iter().enumerate() {
        out.push_str(&wave_header(plan, w, &batches.waves[w], connections));
        out.push_str(&unreached_line(plan, &batches.unreached[w]));
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
    out.push_str(&format!(
        "# order from the scheduler, run in virtual time over a recording transport: {} tasks started, {} calls recorded, none run\n",
        rehearsed.tasks, rehearsed.recorded
    ));
    out
}

/// Names the wave's hosts the rehearsal never started (listed last above: their order
/// is the inventory's, not the scheduler's).
fn unreached_line(plan: &Plan, hosts: &[HostId]) -> String {
    if hosts.is_empty() {
        return String::new();
    }
    let names: Vec<&str> = hosts
        .iter()
        .map(|&h| plan.inventory.hosts[h].name.as_str())
        .collect();
    format!(
        "#   not started by the scheduler's rehearsal (its run stopped first): {}\n",
        names.join(", ")
    )
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
    let tags = crate::plan::render::step_tags(plan, step);
    let forward = match task::render_task_for_display(plan, step, &ctx) {
        Ok(spec) => {
            let mut text = spec.action.describe();
            if let Some(c) = &spec.creates {
                text = format!("[creates {c}] {text}");
            }
            if let Some(u) = &spec.unless {
                text = format!("[unless {u}] {text}");
            }
            format!("{tags}{become_tag}{text}")
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
