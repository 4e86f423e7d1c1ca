//! Building the plan: step cycles, wave membership, targets, `needs` scoping, wave gates
//! and template variables, with every problem collected before anything is returned.

use super::{Node, Plan, Task, WavePlan};
use crate::diag::{closest, Diagnostic, Diagnostics};
use crate::inventory::pattern::{self, HostSet};
use crate::inventory::{HostId, Inventory, RegionId, Vars};
use crate::playbook::template;
use crate::playbook::{Action, NeedScope, Per, Playbook, StepId};
use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// What narrows or overrides a plan on the command line.
#[derive(Debug, Default, Clone)]
pub struct PlanOptions {
    /// `--limit`: only these hosts get tasks.
    pub limit: Option<String>,
    /// `--var k=v`: override every other var.
    pub extra_vars: Vars,
}

/// Validates the playbook against the inventory and builds the sealed plan.
pub fn build(
    inventory: Arc<Inventory>,
    playbook: Arc<Playbook>,
    options: &PlanOptions,
) -> Result<Plan, Diagnostics> {
    let file = playbook.file.clone();
    let mut errors = Diagnostics::default();
    // A cycle is reported with everything else; the graph is then built without `needs`.
    let cyclic = match step_cycles(&playbook) {
        Ok(()) => false,
        Err(cycles) => {
            errors.extend(cycles);
            true
        }
    };
    let host_wave = assign_waves(&inventory, &playbook, &mut errors);
    let selected = pattern::select(&inventory, options.limit.as_deref()).unwrap_or_else(|d| {
        errors.push(d);
        HostSet::empty(inventory.hosts.len())
    });
    let mut graph: DiGraph<Node, ()> = DiGraph::new();
    let gates: Vec<NodeIndex> = (0..playbook.strategy.waves.len())
        .map(|w| graph.add_node(Node::Gate(w)))
        .collect();
    for pair in gates.windows(2) {
        graph.add_edge(pair[0], pair[1], ());
    }

    // Targets of every step, in inventory order; needed steps first, so that a `per: run`
    // step can go where the tasks it waits for are.
    let mut step_tasks: Vec<StepTasks> = (0..playbook.steps.len())
        .map(|_| StepTasks::default())
        .collect();
    let mut host_tasks: Vec<Vec<NodeIndex>> = vec![Vec::new(); inventory.hosts.len()];
    for step_id in needs_first(&playbook, cyclic) {
        let step = &playbook.steps[step_id];
        let mut tasks = StepTasks::default();
        let matched = match step.hosts.resolve(&inventory) {
            Ok(set) => set,
            Err(e) => {
                let d = Diagnostic::new(&file, format!("step `{}`: {e}", step.name));
                errors.push(match e.suggestion {
                    Some(s) => d.hint(format!("did you mean `{s}`?")),
                    None => d.hint("check the step's `hosts:` against the inventory's hosts, regions, clusters and roles"),
                });
                continue;
            }
        };
        let eligible: Vec<HostId> = matched
            .iter()
            .filter(|&h| selected.contains(h) && host_wave[h].is_some())
            .collect();
        let name_of = |h: &HostId| inventory.hosts[*h].name.as_str();
        let targets: Vec<HostId> = match step.per {
            Per::Host => eligible,
            Per::Region => {
                let mut first: HashMap<RegionId, HostId> = HashMap::new();
                for h in eligible {
                    let entry = first.entry(inventory.hosts[h].region).or_insert(h);
                    if name_of(&h) < name_of(entry) {
                        *entry = h;
                    }
                }
                let mut hosts: Vec<HostId> = first.into_values().collect();
                hosts.sort_unstable();
                hosts
            }
            Per::Run => {
                // The earliest wave in which everything it needs has run (the first wave
                // when it needs nothing), then the first host by name.
                let needed_wave = step
                    .needs
                    .iter()
                    .flat_map(|n| &step_tasks[n.step].all)
                    .filter_map(|node| match graph[*node] {
                        Node::Task(t) => Some(t.wave),
                        _ => None,
                    })
                    .max()
                    .unwrap_or(0);
                let first = |hosts: &mut dyn Iterator<Item = HostId>| {
                    hosts.min_by_key(|h| (host_wave[*h], name_of(h)))
                };
                first(
                    &mut eligible
                        .iter()
                        .copied()
                        .filter(|h| host_wave[*h] >= Some(needed_wave)),
                )
                .or_else(|| first(&mut eligible.iter().copied()))
                .into_iter()
                .collect()
            }
        };
        for host in targets {
            let wave = host_wave[host].expect("eligible hosts have a wave");
            let node = graph.add_node(Node::Task(Task {
                step: step_id,
                host,
                per: step.per,
                wave,
            }));
            tasks.all.push(node);
            tasks
                .by_region
                .entry(inventory.hosts[host].region)
                .or_default()
                .push(node);
            if step.per == Per::Host {
                tasks.by_host.insert(host, node);
            }
            host_tasks[host].push(node);
        }
        step_tasks[step_id] = tasks;
    }

    // `needs` edges with SPEC §3 scoping; region- and run-wide needs go through joins.
    let mut joins: HashMap<(StepId, Option<RegionId>), NodeIndex> = HashMap::new();
    let mut wave_conflicts: BTreeSet<(StepId, StepId)> = BTreeSet::new();
    for (step_id, step) in playbook.steps.iter().enumerate().filter(|_| !cyclic) {
        for need in &step.needs {
            let needed = &playbook.steps[need.step];
            for &node in &step_tasks[step_id].all {
                let Node::Task(task) = graph[node] else {
                    unreachable!()
                };
                let region = inventory.hosts[task.host].region;
                let same_host = (task.per == Per::Host
                    && needed.per == Per::Host
                    && need.scope == NeedScope::Auto)
                    .then(|| step_tasks[need.step].by_host.get(&task.host).copied())
                    .flatten();
                let (sources, join_key): (Vec<NodeIndex>, _) = if let Some(source) = same_host {
                    (vec![source], None)
                } else if need.scope == NeedScope::Run
                    || task.per == Per::Run
                    || needed.per == Per::Run
                {
                    (step_tasks[need.step].all.clone(), Some((need.step, None)))
                } else {
                    let in_region = step_tasks[need.step]
                        .by_region
                        .get(&region)
                        .cloned()
                        .unwrap_or_default();
                    (in_region, Some((need.step, Some(region))))
                };
                let latest_wave = sources
                    .iter()
                    .filter_map(|s| match graph[*s] {
                        Node::Task(t) => Some(t.wave),
                        _ => None,
                    })
                    .max();
                if latest_wave.is_some_and(|w| w > task.wave) {
                    wave_conflicts.insert((step_id, need.step));
                    continue;
                }
                match (sources.len(), join_key) {
                    (0, _) => {}
                    (1, _) | (_, None) => {
                        for source in sources {
                            graph.update_edge(source, node, ());
                        }
                    }
                    (_, Some(key)) => {
                        let join = *joins.entry(key).or_insert_with(|| {
                            let join = graph.add_node(Node::Join {
                                step: key.0,
                                region: key.1,
                            });
                            for &source in &sources {
                                graph.add_edge(source, join, ());
                            }
                            join
                        });
                        graph.add_edge(join, node, ());
                    }
                }
            }
        }
    }
    for (step, needed) in wave_conflicts {
        errors.push(Diagnostic::new(&file, format!(
            "step `{}` needs `{}`, but some of the `{}` tasks it waits for are in a later wave, which would never start",
            playbook.steps[step].name, playbook.steps[needed].name, playbook.steps[needed].name
        )).hint("narrow the needs with the same hosts (`hosts:`), or move the needed hosts to an earlier wave"));
    }

    // Wave barriers: every task of wave k before gate k, gate k before wave k+1.
    for node in graph.node_indices().collect::<Vec<_>>() {
        if let Node::Task(task) = graph[node] {
            graph.add_edge(node, gates[task.wave], ());
            if task.wave > 0 {
                graph.add_edge(gates[task.wave - 1], node, ());
            }
        }
    }

    check_template_variables(
        &inventory,
        &playbook,
        options,
        &step_tasks,
        &graph,
        &mut errors,
    );
    check_template_files(&playbook, &mut errors);

    let waves = playbook
        .strategy
        .waves
        .iter()
        .enumerate()
        .map(|(w, wave)| WavePlan {
            name: wave.name.clone(),
            gate: gates[w],
            hosts: (0..inventory.hosts.len())
                .filter(|&h| host_wave[h] == Some(w) && selected.contains(h))
                .collect(),
        })
        .collect();
    let topological = match toposort(&graph, None) {
        Ok(order) => order,
        Err(cycle) => {
            errors.push(
                Diagnostic::new(
                    &file,
                    format!(
                        "the task graph has a cycle through node {}",
                        cycle.node_id().index()
                    ),
                )
                .hint("this is a bug in pony's graph building; please report it with the playbook"),
            );
            Vec::new()
        }
    };
    let mut position = vec![0; graph.node_count()];
    for (i, n) in topological.iter().enumerate() {
        position[n.index()] = i;
    }
    for tasks in &mut host_tasks {
        tasks.sort_by_key(|n| position[n.index()]);
    }
    let task_count = step_tasks.iter().map(|s| s.all.len()).sum();
    let plan = Plan {
        inventory,
        playbook,
        graph,
        waves,
        host_wave,
        selected,
        extra_vars: options.extra_vars.clone(),
        host_tasks,
        topological,
        task_count,
        learned_durations: Vec::new(),
    };
    if errors.is_empty() {
        check_rendering(&plan, &step_tasks, &mut errors);
    }
    errors.into_result(plan)
}

/// The first `host.x`, `run.x`, `playbook.x` or `wave.x` in a template whose `x` is not
/// an attribute pony provides.
fn unknown_builtin(source: &str) -> Option<String> {
    const KNOWN: [(&str, &[&str]); 4] = [
        ("host", &["name", "address", "region", "cluster", "roles"]),
        ("run", &["id"]),
        ("playbook", &["name"]),
        ("wave", &["name"]),
    ];
    for (object, attributes) in KNOWN {
        let pattern = format!("{object}.");
        for (at, _) in source.match_indices(&pattern) {
            let before = source[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.') {
                continue;
            }
            let attribute: String = source[at + pattern.len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !attributes.contains(&attribute.as_str()) {
                return Some(format!("{object}.{attribute}"));
            }
        }
    }
    None
}

/// Renders every template of every step once, for its first target, so that unknown
/// filters and attributes (`{{ x | qoute }}`, `{{ host.nmae }}`) are found before
/// anything runs. Captures are stood in for by placeholders.
fn check_rendering(plan: &Plan, step_tasks: &[StepTasks], errors: &mut Diagnostics) {
    const FILTERS: [&str; 24] = [
        "quote",
        "default",
        "lower",
        "upper",
        "trim",
        "join",
        "length",
        "replace",
        "first",
        "last",
        "sort",
        "unique",
        "tojson",
        "string",
        "int",
        "float",
        "abs",
        "round",
        "title",
        "capitalize",
        "indent",
        "items",
        "list",
        "map",
    ];
    let env = template::environment();
    let mut placeholders = Vars::new();
    for step in &plan.playbook.steps {
        if let Some(name) = &step.capture {
            placeholders.insert(name.clone(), serde_yaml::Value::String("captured".into()));
        }
    }
    for (s, step) in plan.playbook.steps.iter().enumerate() {
        let Some(&first) = step_tasks[s].all.first() else {
            continue;
        };
        let Node::Task(task) = plan.graph[first] else {
            continue;
        };
        let ctx = plan.template_context(&task, "check", &placeholders);
        let mut sources: Vec<(String, String)> = step
            .templates()
            .into_iter()
            .map(|(f, t)| (format!("`{f}`"), t.to_string()))
            .collect();
        if let Action::Template(t) = &step.action {
            if let Ok(src) = env.render_str(&t.src, &ctx) {
                if let Ok(text) = std::fs::read_to_string(plan.playbook.dir().join(&src)) {
                    sources.push((format!("template {src}"), text));
                }
            }
        }
        for (field, source) in sources {
            let Err(e) = env.render_str(&source, &ctx) else {
                continue;
            };
            let detail = e
                .detail()
                .map(str::to_string)
                .unwrap_or_else(|| e.to_string());
            let host = &plan.inventory.hosts[task.host].name;
            let d = Diagnostic::new(
                &plan.playbook.file,
                format!(
                    "step `{}`: {field} cannot be rendered for host `{host}`: {detail}",
                    step.name
                ),
            );
            let unknown_filter = detail
                .split_whitespace()
                .skip_while(|w| *w != "filter")
                .nth(1)
                .map(|w| {
                    w.trim_matches(|c: char| !c.is_alphanumeric() && c != '_')
                        .to_string()
                });
            let d = match unknown_builtin(&source) {
                Some(name) if e.kind() == minijinja::ErrorKind::UndefinedError => {
                    d.map_message(|m| format!("{m}: `{name}` does not exist"))
                }
                _ => d,
            };
            let d = match (e.kind(), unknown_filter) {
                (minijinja::ErrorKind::UnknownFilter, Some(name)) => match closest(&name, FILTERS) {
                    Some(best) => d.hint(format!("unknown filter `{name}`: did you mean `{best}`?")),
                    None => d.hint(format!("unknown filter `{name}`; pony adds `quote` to minijinja's filters")),
                },
                _ => d.hint("built-ins are host.name, host.address, host.region, host.cluster, host.roles, run.id, playbook.name, wave.name"),
            };
            errors.push(d);
        }
    }
}

#[derive(Default)]
struct StepTasks {
    all: Vec<NodeIndex>,
    by_host: HashMap<HostId, NodeIndex>,
    by_region: HashMap<RegionId, Vec<NodeIndex>>,
}

/// Step ids with every step after the steps it needs (file order when `needs` has a
/// cycle, which is reported separately).
fn needs_first(playbook: &Playbook, cyclic: bool) -> Vec<StepId> {
    let count = playbook.steps.len();
    if cyclic {
        return (0..count).collect();
    }
    let mut order = Vec::with_capacity(count);
    let mut placed = vec![false; count];
    fn visit(step: StepId, playbook: &Playbook, placed: &mut Vec<bool>, order: &mut Vec<StepId>) {
        if placed[step] {
            return;
        }
        placed[step] = true;
        for need in &playbook.steps[step].needs {
            visit(need.step, playbook, placed, order);
        }
        order.push(step);
    }
    for step in 0..count {
        visit(step, playbook, &mut placed, &mut order);
    }
    order
}

/// A cycle in `needs` is reported as the circle of step names, `a -> b -> a`, where
/// `a -> b` reads "a needs b".
fn step_cycles(playbook: &Playbook) -> Result<(), Diagnostics> {
    let mut graph: DiGraph<StepId, ()> = DiGraph::new();
    let nodes: Vec<NodeIndex> = (0..playbook.steps.len())
        .map(|s| graph.add_node(s))
        .collect();
    for (s, step) in playbook.steps.iter().enumerate() {
        for need in &step.needs {
            graph.update_edge(nodes[s], nodes[need.step], ());
        }
    }
    let mut errors = Diagnostics::default();
    for component in tarjan_scc(&graph) {
        let looped = component.len() > 1 || graph.contains_edge(component[0], component[0]);
        if !looped {
            continue;
        }
        let members: HashSet<NodeIndex> = component.iter().copied().collect();
        let start = *component
            .iter()
            .min_by_key(|n| graph[**n])
            .expect("non-empty");
        let path = cycle_path(&graph, start, &members);
        let names: Vec<&str> = path
            .iter()
            .map(|n| playbook.steps[graph[*n]].name.as_str())
            .collect();
        let (last, first) = (names[names.len() - 2], names[names.len() - 1]);
        errors.push(
            Diagnostic::new(
                &playbook.file,
                format!("dependency cycle: {}", names.join(" -> ")),
            )
            .hint(format!(
                "remove `{first}` from the `needs` of step `{last}` (or another link of the cycle)"
            )),
        );
    }
    errors.into_result(())
}

/// A shortest path from `start` back to itself inside one strongly connected component.
fn cycle_path(
    graph: &DiGraph<StepId, ()>,
    start: NodeIndex,
    members: &HashSet<NodeIndex>,
) -> Vec<NodeIndex> {
    let mut came_from: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        let mut next: Vec<NodeIndex> = graph
            .neighbors(node)
            .filter(|n| members.contains(n))
            .collect();
        next.sort_by_key(|n| graph[*n]);
        for n in next {
            if n == start {
                let mut path = vec![node];
                let mut cursor = node;
                while cursor != start {
                    cursor = came_from[&cursor];
                    path.push(cursor);
                }
                path.reverse();
                path.push(start);
                return path;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = came_from.entry(n) {
                e.insert(node);
                queue.push_back(n);
            }
        }
    }
    vec![start, start]
}

/// Hosts are put into waves in order: a wave takes the hosts of its regions (matching its
/// `hosts:`) that no earlier wave took. Every host must land in exactly one wave.
fn assign_waves(
    inventory: &Inventory,
    playbook: &Playbook,
    errors: &mut Diagnostics,
) -> Vec<Option<usize>> {
    let file = &playbook.file;
    let mut host_wave: Vec<Option<usize>> = vec![None; inventory.hosts.len()];
    for (w, wave) in playbook.strategy.waves.iter().enumerate() {
        let mut regions: HashSet<RegionId> = HashSet::new();
        for glob in &wave.regions {
            let matched: Vec<RegionId> = (0..inventory.regions.len())
                .filter(|&r| glob.matches(&inventory.regions[r].name))
                .collect();
            if matched.is_empty() {
                let d = Diagnostic::new(
                    file,
                    format!(
                        "wave `{}`: region `{}` matches no region of inventory `{}`",
                        wave.name,
                        glob.as_str(),
                        inventory.name
                    ),
                );
                errors.push(d.suggest(
                    glob.as_str(),
                    inventory.regions.iter().map(|r| r.name.as_str()),
                ));
            }
            regions.extend(matched);
        }
        let filter = match &wave.hosts {
            None => None,
            Some(pattern) => match pattern.resolve(inventory) {
                Ok(set) => Some(set),
                Err(e) => {
                    let d = Diagnostic::new(file, format!("wave `{}`: {e}", wave.name));
                    errors.push(match e.suggestion {
                        Some(s) => d.hint(format!("did you mean `{s}`?")),
                        None => d.hint("check the wave's `hosts:` against the inventory"),
                    });
                    continue;
                }
            },
        };
        let mut taken = 0;
        for (h, host) in inventory.hosts.iter().enumerate() {
            if host_wave[h].is_none()
                && regions.contains(&host.region)
                && filter.as_ref().is_none_or(|f| f.contains(h))
            {
                host_wave[h] = Some(w);
                taken += 1;
            }
        }
        if taken == 0 && !regions.is_empty() {
            errors.push(Diagnostic::new(file, format!("wave `{}` takes no host: earlier waves already took every host of its regions", wave.name))
                .hint("remove the wave or change its `regions:`/`hosts:`"));
        }
    }
    let mut missing: Vec<(String, usize)> = Vec::new();
    for (r, region) in inventory.regions.iter().enumerate() {
        let left = inventory
            .hosts
            .iter()
            .enumerate()
            .filter(|(h, host)| host.region == r && host_wave[*h].is_none())
            .count();
        if left > 0 {
            missing.push((region.name.clone(), left));
        }
    }
    for (region, left) in missing {
        errors.push(Diagnostic::new(file, format!("region `{region}` ({left} hosts) is in no wave"))
            .hint(format!("add `{region}` to a wave's `regions:`, or end the waves with `{{ name: world, regions: [\"*\"] }}`")));
    }
    host_wave
}

/// Every variable a step's templates really use must be defined for every host it runs on.
/// The templates are rendered per host (strict undefined), so a variable behind `default`,
/// `is defined` or in a branch the host never takes is not required; captures of earlier
/// steps are not known yet and are stood in for.
fn check_template_variables(
    inventory: &Inventory,
    playbook: &Playbook,
    options: &PlanOptions,
    step_tasks: &[StepTasks],
    graph: &DiGraph<Node, ()>,
    errors: &mut Diagnostics,
) {
    let env = template::environment();
    let everywhere: HashSet<&str> = playbook
        .vars
        .keys()
        .chain(options.extra_vars.keys())
        .map(String::as_str)
        .chain(template::BUILTINS)
        .collect();
    // Which hosts see a capture: the capturing step's hosts; a per-region capture is seen
    // by its region, a per-run capture by every host.
    let captures: Vec<(&str, StepId)> = playbook
        .steps
        .iter()
        .enumerate()
        .filter_map(|(s, step)| step.capture.as_deref().map(|c| (c, s)))
        .collect();
    let captured_for = |var: &str, host: HostId| -> bool {
        captures.iter().any(|(name, s)| {
            *name == var
                && match playbook.steps[*s].per {
                    Per::Host => step_tasks[*s].by_host.contains_key(&host),
                    Per::Region => step_tasks[*s]
                        .by_region
                        .contains_key(&inventory.hosts[host].region),
                    Per::Run => !step_tasks[*s].all.is_empty(),
                }
        })
    };
    let defined_for = |var: &str, host: HostId| -> bool {
        inventory.hosts[host].vars.contains_key(var) || captured_for(var, host)
    };
    let value = |v: &serde_yaml::Value| minijinja::Value::from_serialize(v);
    // What a host's templates see, as at run time (playbook < inventory < --var, then the
    // built-ins), with stand-ins for the captures it will see.
    let known_for = |host: Option<HostId>, wave: usize| -> BTreeMap<String, minijinja::Value> {
        let mut known: BTreeMap<String, minijinja::Value> = playbook
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), value(v)))
            .collect();
        if let Some(h) = host {
            let host = &inventory.hosts[h];
            known.extend(host.vars.iter().map(|(k, v)| (k.clone(), value(v))));
            known.insert(
                "host".into(),
                minijinja::Value::from_serialize(serde_json::json!({
                    "name": host.name,
                    "address": host.destination(),
                    "region": inventory.regions[host.region].name,
                    "cluster": inventory.clusters[host.cluster].name,
                    "roles": host.roles,
                })),
            );
            for (name, _) in &captures {
                if captured_for(name, h) {
                    known.insert(name.to_string(), template::STAND_IN.into());
                }
            }
        }
        known.extend(
            options
                .extra_vars
                .iter()
                .map(|(k, v)| (k.clone(), value(v))),
        );
        known.insert(
            "run".into(),
            minijinja::Value::from_serialize(serde_json::json!({ "id": "check" })),
        );
        known.insert(
            "playbook".into(),
            minijinja::Value::from_serialize(serde_json::json!({ "name": playbook.name })),
        );
        let wave = playbook.strategy.waves.get(wave).map(|w| w.name.as_str());
        known.insert(
            "wave".into(),
            minijinja::Value::from_serialize(serde_json::json!({ "name": wave })),
        );
        known
    };
    for (s, step) in playbook.steps.iter().enumerate() {
        let mut sources: Vec<String> = step
            .templates()
            .into_iter()
            .map(|(_, source)| source.to_string())
            .collect();
        if let Action::Template(t) = &step.action {
            if !t.src.contains("{{") {
                if let Ok(text) = std::fs::read_to_string(playbook.dir().join(&t.src)) {
                    sources.push(text);
                }
            }
        }
        let mut used: BTreeSet<String> = BTreeSet::new();
        for source in &sources {
            used.extend(template::variables(env, source).unwrap_or_default());
        }
        let missing_with = |known: BTreeMap<String, minijinja::Value>| -> BTreeSet<String> {
            let known = Arc::new(known);
            sources
                .iter()
                .flat_map(|source| template::undefined_in_use(env, source, &known))
                .collect()
        };
        // A step without targets (its pattern is wrong, or --limit) is still checked
        // against the whole inventory, so that its problems show up together: what some
        // host or capture defines is stood in for.
        if step_tasks[s].all.is_empty() {
            let nowhere: Vec<&String> = used
                .iter()
                .filter(|v| {
                    !everywhere.contains(v.as_str())
                        && !captures.iter().any(|(name, _)| name == v)
                        && !inventory
                            .hosts
                            .iter()
                            .any(|h| h.vars.contains_key(v.as_str()))
                })
                .collect();
            if nowhere.is_empty() {
                continue;
            }
            let mut known = known_for((!inventory.hosts.is_empty()).then_some(0), 0);
            for var in used.iter().filter(|v| !nowhere.contains(v)) {
                known
                    .entry(var.clone())
                    .or_insert_with(|| template::STAND_IN.into());
            }
            let missing = missing_with(known);
            for var in nowhere.into_iter().filter(|v| missing.contains(*v)) {
                let known: Vec<&str> = everywhere
                    .iter()
                    .copied()
                    .chain(captures.iter().map(|c| c.0))
                    .collect();
                let d = Diagnostic::new(
                    &playbook.file,
                    format!(
                        "step `{}`: variable `{var}` is not defined for any host",
                        step.name
                    ),
                );
                errors.push(match closest(var, known) {
                    Some(best) => d.hint(format!("did you mean `{best}`?")),
                    None => d.hint(format!("define `{var}` in the playbook's `vars:`, the inventory's vars, or pass `--var {var}=VALUE`")),
                });
            }
            continue;
        }
        // Hosts that define every variable the templates name need no rendering. The
        // others are rendered, once per set of missing names and values of the defined
        // ones (the built-ins aside: a branch on `host.name` that decides whether an
        // undefined variable is used is not worth a render per host).
        let mut cache: HashMap<(Vec<&str>, String), BTreeSet<String>> = HashMap::new();
        let mut missing: BTreeMap<String, Vec<HostId>> = BTreeMap::new();
        for node in &step_tasks[s].all {
            let Node::Task(task) = graph[*node] else {
                continue;
            };
            let unknown: Vec<&str> = used
                .iter()
                .map(String::as_str)
                .filter(|v| !everywhere.contains(v) && !defined_for(v, task.host))
                .collect();
            if unknown.is_empty() {
                continue;
            }
            let known = known_for(Some(task.host), task.wave);
            let values = used
                .iter()
                .filter(|v| !template::BUILTINS.contains(&v.as_str()))
                .map(|v| format!("{v}={:?}", known.get(v)))
                .collect::<Vec<_>>()
                .join("\n");
            let needed = cache
                .entry((unknown, values))
                .or_insert_with(|| missing_with(known));
            for var in needed.iter() {
                missing.entry(var.clone()).or_default().push(task.host);
            }
        }
        for (var, hosts) in missing {
            let first = hosts[0];
            let others = hosts.len() - 1;
            let more = if others > 0 {
                format!(" (and {others} more hosts)")
            } else {
                String::new()
            };
            let known: Vec<&str> = everywhere
                .iter()
                .copied()
                .chain(inventory.hosts[first].vars.keys().map(String::as_str))
                .chain(captures.iter().map(|c| c.0))
                .collect();
            let d = Diagnostic::new(
                &playbook.file,
                format!(
                    "step `{}`: variable `{var}` is not defined for host `{}`{more}",
                    step.name, inventory.hosts[first].name
                ),
            );
            errors.push(match closest(&var, known) {
                Some(best) => d.hint(format!("did you mean `{best}`?")),
                None => d.hint(format!("define `{var}` in the playbook's `vars:`, the inventory's vars, or pass `--var {var}=VALUE`")),
            });
        }
    }
}

fn check_template_files(playbook: &Playbook, errors: &mut Diagnostics) {
    let env = template::environment();
    for step in &playbook.steps {
        let Action::Template(t) = &step.action else {
            continue;
        };
        if t.src.contains("{{") {
            continue;
        }
        let path = playbook.dir().join(&t.src);
        match std::fs::read_to_string(&path) {
            Err(e) => errors.push(
                Diagnostic::new(
                    &playbook.file,
                    format!(
                        "step `{}`: template `{}` cannot be read: {e}",
                        step.name,
                        path.display()
                    ),
                )
                .hint("template sources are relative to the playbook's directory"),
            ),
            Ok(text) => {
                if let Err(e) = template::variables(env, &text) {
                    let line = e.line().unwrap_or(0);
                    errors.push(
                        Diagnostic::new(
                            &path,
                            format!(
                                "template of step `{}` is not valid: {}",
                                step.name,
                                e.detail().unwrap_or(&e.to_string())
                            ),
                        )
                        .at(line, 0)
                        .hint("fix the {{ }} / {% %} syntax (minijinja, like Jinja2)"),
                    );
                }
            }
        }
    }
}
