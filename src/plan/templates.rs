//! Template checks before anything runs: every variable a step uses is defined for
//! every host it runs on, template files exist and parse, and every template renders for
//! its first target (unknown filters and built-in attributes, with "did you mean").

use super::targets::StepTasks;
use super::{Node, Plan, PlanOptions};
use crate::diag::{closest, Diagnostic, Diagnostics};
use crate::inventory::{HostId, Inventory, Vars};
use crate::playbook::template;
use crate::playbook::{Action, Per, Playbook, Step, StepId};
use petgraph::graph::DiGraph;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

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

/// minijinja's filters and pony's `quote`, for "did you mean".
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

/// Why a template cannot be rendered for `host`: an attribute pony does not provide, or
/// an unknown filter (with "did you mean").
fn render_problem(
    plan: &Plan,
    step: &Step,
    host: &str,
    field: &str,
    source: &str,
    e: &minijinja::Error,
) -> Diagnostic {
    let detail = e
        .detail()
        .map(str::to_string)
        .unwrap_or_else(|| e.to_string());
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
    let d = match unknown_builtin(source) {
        Some(name) if e.kind() == minijinja::ErrorKind::UndefinedError => {
            d.map_message(|m| format!("{m}: `{name}` does not exist"))
        }
        _ => d,
    };
    match (e.kind(), unknown_filter) {
        (minijinja::ErrorKind::UnknownFilter, Some(name)) => match closest(&name, FILTERS) {
            Some(best) => d.hint(format!("unknown filter `{name}`: did you mean `{best}`?")),
            None => d.hint(format!("unknown filter `{name}`; pony adds `quote` to minijinja's filters")),
        },
        _ => d.hint("built-ins are host.name, host.address, host.region, host.cluster, host.roles, run.id, playbook.name, wave.name"),
    }
}

/// Renders every template of every step once, for its first target, so that unknown
/// filters and attributes (`{{ x | qoute }}`, `{{ host.nmae }}`) are found before
/// anything runs. Captures are stood in for by placeholders.
pub(super) fn check_rendering(plan: &Plan, step_tasks: &[StepTasks], errors: &mut Diagnostics) {
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
                if let Ok(Ok(text)) = plan.playbook.read_source(&src).map(String::from_utf8) {
                    sources.push((format!("template {src}"), text));
                }
            }
        }
        for (field, source) in sources {
            let Err(e) = env.render_str(&source, &ctx) else {
                continue;
            };
            let host = &plan.inventory.hosts[task.host].name;
            errors.push(render_problem(plan, step, host, &field, &source, &e));
        }
    }
}

/// A gate's `verify:` checks are templates too: each renders for every host it runs on
/// (its `hosts:`, else the wave's, and its `baseline:`), with the vars and built-ins a
/// task of that host sees; captures are not available to checks.
pub(super) fn check_verify_templates(plan: &Plan, errors: &mut Diagnostics) {
    let env = template::environment();
    for (w, wave) in plan.playbook.strategy.waves.iter().enumerate() {
        let Some(wave_plan) = plan.waves.get(w) else {
            continue;
        };
        for check in &wave.verify {
            let resolve = |pattern: &crate::inventory::pattern::HostPattern| -> Vec<HostId> {
                pattern
                    .resolve(&plan.inventory)
                    .map(|set| set.iter().collect())
                    .unwrap_or_default()
            };
            let mut hosts = match &check.hosts {
                Some(p) => resolve(p),
                None => wave_plan.hosts.clone(),
            };
            if let Some(c) = &check.compare {
                hosts.extend(resolve(&c.baseline));
            }
            'hosts: for host in hosts {
                let ctx = plan.host_context(host, w, "check", &Vars::new());
                for (field, source) in check.action.templates() {
                    let Err(e) = env.render_str(source, &ctx) else {
                        continue;
                    };
                    let known = plan.vars_for(host);
                    let missing: Vec<String> = template::variables(env, source)
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|v| {
                            !known.contains_key(v)
                                && !["host", "run", "playbook", "wave"].contains(&v.as_str())
                        })
                        .collect();
                    let detail = match missing.first() {
                        Some(var) => format!("`{var}` is not defined"),
                        None => e
                            .detail()
                            .map(str::to_string)
                            .unwrap_or_else(|| e.to_string()),
                    };
                    let d = Diagnostic::new(
                        &plan.playbook.file,
                        format!(
                            "wave `{}` verify check `{}`: `{field}` cannot be rendered for host `{}`: {detail}",
                            wave.name, check.name, plan.inventory.hosts[host].name
                        ),
                    );
                    let near = missing
                        .first()
                        .and_then(|var| closest(var, known.keys().map(String::as_str)));
                    errors.push(match near {
                        Some(best) => d.hint(format!("did you mean `{best}`?")),
                        None => d.hint("define the variable for every host the check runs on (inventory vars or `--var`), or give it a `| default(...)`; checks see vars and built-ins, not captures"),
                    });
                    // One message per check is enough to fix it.
                    break 'hosts;
                }
            }
        }
    }
}

/// Every variable a step's templates really use must be defined for every host it runs on.
/// The templates are rendered per host (strict undefined), so a variable behind `default`,
/// `is defined` or in a branch the host never takes is not required; captures of earlier
/// steps are not known yet and are stood in for.
pub(super) fn check_template_variables(
    inventory: &Inventory,
    playbook: &Playbook,
    options: &PlanOptions,
    step_tasks: &[StepTasks],
    graph: &DiGraph<Node, ()>,
    errors: &mut Diagnostics,
) {
    let check = VarCheck {
        env: template::environment(),
        inventory,
        playbook,
        options,
        step_tasks,
        everywhere: playbook
            .vars
            .keys()
            .chain(options.extra_vars.keys())
            .map(String::as_str)
            .chain(template::BUILTINS)
            .collect(),
        captures: playbook
            .steps
            .iter()
            .enumerate()
            .filter_map(|(s, step)| step.capture.as_deref().map(|c| (c, s)))
            .collect(),
    };
    for (s, step) in playbook.steps.iter().enumerate() {
        let sources = check.sources(step);
        let mut used: BTreeSet<String> = BTreeSet::new();
        for source in &sources {
            used.extend(template::variables(check.env, source).unwrap_or_default());
        }
        // A step without targets (its pattern is wrong, or --limit) is still checked
        // against the whole inventory, so that its problems show up together: what some
        // host or capture defines is stood in for.
        if step_tasks[s].all.is_empty() {
            check.untargeted_step(step, &sources, &used, errors);
        } else {
            let missing = check.missing_per_host(s, &sources, &used, graph);
            check.report_missing(step, missing, errors);
        }
    }
}

/// What the variable check of every step shares.
struct VarCheck<'a> {
    env: &'a minijinja::Environment<'static>,
    inventory: &'a Inventory,
    playbook: &'a Playbook,
    options: &'a PlanOptions,
    step_tasks: &'a [StepTasks],
    /// Defined for every host: the playbook's vars, `--var`s and the built-ins.
    everywhere: HashSet<&'a str>,
    /// Each capture's name and the step that captures it.
    captures: Vec<(&'a str, StepId)>,
}

impl<'a> VarCheck<'a> {
    /// Which hosts see a capture: the capturing step's hosts; a per-region capture is
    /// seen by its region, a per-run capture by every host.
    fn captured_for(&self, var: &str, host: HostId) -> bool {
        let (inventory, step_tasks) = (self.inventory, self.step_tasks);
        self.captures.iter().any(|(name, s)| {
            *name == var
                && match self.playbook.steps[*s].per {
                    Per::Host => step_tasks[*s].by_host.contains_key(&host),
                    Per::Region => step_tasks[*s]
                        .by_region
                        .contains_key(&inventory.hosts[host].region),
                    Per::Run => !step_tasks[*s].all.is_empty(),
                }
        })
    }

    fn defined_for(&self, var: &str, host: HostId) -> bool {
        self.inventory.hosts[host].vars.contains_key(var) || self.captured_for(var, host)
    }

    /// What a host's templates see, as at run time (playbook < inventory < --var, then
    /// the built-ins), with stand-ins for the captures it will see.
    fn known_for(
        &self,
        step: &Step,
        host: Option<HostId>,
        wave: usize,
    ) -> BTreeMap<String, minijinja::Value> {
        let (inventory, playbook) = (self.inventory, self.playbook);
        let value = |v: &serde_yaml::Value| minijinja::Value::from_serialize(v);
        let mut known: BTreeMap<String, minijinja::Value> = playbook
            .vars
            .iter()
            .chain(&step.vars)
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
            for (name, _) in &self.captures {
                if self.captured_for(name, h) {
                    known.insert(name.to_string(), template::STAND_IN.into());
                }
            }
        }
        known.extend(
            self.options
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
    }

    /// A step's template texts: its fields, and its template file when it names one.
    fn sources(&self, step: &Step) -> Vec<String> {
        let mut sources: Vec<String> = step
            .templates()
            .into_iter()
            .map(|(_, source)| source.to_string())
            .collect();
        if let Action::Template(t) = &step.action {
            if !t.src.contains("{{") {
                if let Ok(Ok(text)) = self.playbook.read_source(&t.src).map(String::from_utf8) {
                    sources.push(text);
                }
            }
        }
        sources
    }

    /// The variables the sources use undefined, rendered with `known`.
    fn missing_with(
        &self,
        sources: &[String],
        known: BTreeMap<String, minijinja::Value>,
    ) -> BTreeSet<String> {
        let known = Arc::new(known);
        sources
            .iter()
            .flat_map(|source| template::undefined_in_use(self.env, source, &known))
            .collect()
    }

    /// A step without targets: the variables it uses that no host, capture or playbook
    /// var defines.
    fn untargeted_step(
        &self,
        step: &Step,
        sources: &[String],
        used: &BTreeSet<String>,
        errors: &mut Diagnostics,
    ) {
        let inventory = self.inventory;
        let nowhere: Vec<&String> = used
            .iter()
            .filter(|v| {
                !self.everywhere.contains(v.as_str())
                    && !step.vars.contains_key(v.as_str())
                    && !self.captures.iter().any(|(name, _)| name == v)
                    && !inventory
                        .hosts
                        .iter()
                        .any(|h| h.vars.contains_key(v.as_str()))
            })
            .collect();
        if nowhere.is_empty() {
            return;
        }
        let mut known = self.known_for(step, (!inventory.hosts.is_empty()).then_some(0), 0);
        for var in used.iter().filter(|v| !nowhere.contains(v)) {
            known
                .entry(var.clone())
                .or_insert_with(|| template::STAND_IN.into());
        }
        let missing = self.missing_with(sources, known);
        for var in nowhere.into_iter().filter(|v| missing.contains(*v)) {
            let known: Vec<&str> = self
                .everywhere
                .iter()
                .copied()
                .chain(self.captures.iter().map(|c| c.0))
                .collect();
            let d = Diagnostic::new(
                &self.playbook.file,
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
    }

    /// Per variable a step uses undefined, the hosts it is undefined for. Hosts that
    /// define every variable the templates name need no rendering. The others are
    /// rendered, once per set of missing names and values of the defined ones (the
    /// built-ins aside: a branch on `host.name` that decides whether an undefined
    /// variable is used is not worth a render per host).
    fn missing_per_host(
        &self,
        step: StepId,
        sources: &[String],
        used: &BTreeSet<String>,
        graph: &DiGraph<Node, ()>,
    ) -> BTreeMap<String, Vec<HostId>> {
        let mut cache: HashMap<(Vec<&str>, String), BTreeSet<String>> = HashMap::new();
        let mut missing: BTreeMap<String, Vec<HostId>> = BTreeMap::new();
        let own = &self.playbook.steps[step].vars;
        for node in &self.step_tasks[step].all {
            let Node::Task(task) = graph[*node] else {
                continue;
            };
            let unknown: Vec<&str> = used
                .iter()
                .map(String::as_str)
                .filter(|v| {
                    !self.everywhere.contains(v)
                        && !own.contains_key(*v)
                        && !self.defined_for(v, task.host)
                })
                .collect();
            if unknown.is_empty() {
                continue;
            }
            let known = self.known_for(&self.playbook.steps[step], Some(task.host), task.wave);
            let values = used
                .iter()
                .filter(|v| !template::BUILTINS.contains(&v.as_str()))
                .map(|v| format!("{v}={:?}", known.get(v)))
                .collect::<Vec<_>>()
                .join("\n");
            let needed = cache
                .entry((unknown, values))
                .or_insert_with(|| self.missing_with(sources, known));
            for var in needed.iter() {
                missing.entry(var.clone()).or_default().push(task.host);
            }
        }
        missing
    }

    /// One error per variable, naming the first host it is undefined for.
    fn report_missing(
        &self,
        step: &Step,
        missing: BTreeMap<String, Vec<HostId>>,
        errors: &mut Diagnostics,
    ) {
        let inventory = self.inventory;
        for (var, hosts) in missing {
            let first = hosts[0];
            let others = hosts.len() - 1;
            let more = if others > 0 {
                format!(" (and {others} more hosts)")
            } else {
                String::new()
            };
            let known: Vec<&str> = self
                .everywhere
                .iter()
                .copied()
                .chain(inventory.hosts[first].vars.keys().map(String::as_str))
                .chain(self.captures.iter().map(|c| c.0))
                .collect();
            let d = Diagnostic::new(
                &self.playbook.file,
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

pub(super) fn check_template_files(playbook: &Playbook, errors: &mut Diagnostics) {
    let env = template::environment();
    for step in &playbook.steps {
        let Action::Template(t) = &step.action else {
            continue;
        };
        if t.src.contains("{{") {
            continue;
        }
        let path = playbook.source_path(&t.src);
        let text = playbook.read_source(&t.src).and_then(|bytes| {
            String::from_utf8(bytes).map_err(|e| crate::playbook::SourceError::Read {
                path: path.clone(),
                error: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })
        });
        match text {
            Err(crate::playbook::SourceError::Read { error: e, .. }) => errors.push(
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
            Err(e) => errors.push(
                Diagnostic::new(
                    &playbook.file,
                    format!("step `{}`: template {e}", step.name),
                )
                .hint(
                    "the run's snapshot is damaged: its blobs are under <state dir>/blobs/sha256/",
                ),
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
