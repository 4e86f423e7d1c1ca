//! `pony check`: validate and print one summary line; and the warnings about vars that
//! every plan-based command prints (or, with `--strict-vars`, refuses on): a `--var` no
//! template uses or that is empty, and a value with shell metacharacters rendered unquoted
//! into a command.

use super::{load_plan, thousands};
use crate::cli::PlanArgs;
use crate::diag::{closest, Diagnostic, Diagnostics};
use crate::exit::Exit;
use crate::inventory::Vars;
use crate::plan::{Node, Plan};
use crate::playbook::template;
use crate::playbook::Action;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

pub fn run(args: &PlanArgs) -> anyhow::Result<Exit> {
    let plan = load_plan(args)?.print_warnings();
    let regions: BTreeSet<usize> = plan
        .waves
        .iter()
        .flat_map(|w| &w.hosts)
        .map(|&h| plan.inventory.hosts[h].region)
        .collect();
    let clusters: BTreeSet<usize> = plan
        .waves
        .iter()
        .flat_map(|w| &w.hosts)
        .map(|&h| plan.inventory.hosts[h].cluster)
        .collect();
    crate::outln!(
        "ok: {} on {}: {} hosts, {} regions, {} clusters, {} steps, {} tasks in {} waves",
        plan.playbook.name,
        plan.inventory.name,
        thousands(plan.host_count()),
        regions.len(),
        clusters.len(),
        plan.playbook.steps.len(),
        thousands(plan.task_count()),
        plan.waves.len(),
    );
    Ok(Exit::Success)
}

/// The var warnings of a valid plan, sorted. The `strict` ones concern a value given on
/// the command line (`--var`, `-e`, `--secret-var`), which `--strict-vars` refuses; the
/// others concern the playbook's and inventory's own values and stay warnings.
#[derive(Debug, Default)]
pub struct VarWarnings {
    pub strict: Diagnostics,
    pub other: Diagnostics,
}

/// Looks for vars that are probably mistakes; see [`VarWarnings`].
pub fn var_warnings(plan: &Plan, args: &PlanArgs) -> VarWarnings {
    let mut warnings = VarWarnings::default();
    let playbook = &plan.playbook;
    let env = template::environment();
    // Every name any template of the playbook reads, whether or not the value is used.
    let mut read: BTreeSet<String> = BTreeSet::new();
    for step in &playbook.steps {
        for (_, source) in step.templates() {
            read.extend(template::variables(env, source).unwrap_or_default());
        }
        if let Action::Template(t) = &step.action {
            if !t.src.contains("{{") {
                if let Ok(text) = std::fs::read_to_string(playbook.dir().join(&t.src)) {
                    read.extend(template::variables(env, &text).unwrap_or_default());
                }
            }
        }
    }
    let flags = args
        .vars
        .iter()
        .map(|(k, v)| ("--var", k, v))
        .chain(args.secret_vars.iter().map(|(k, v)| ("--secret-var", k, v)))
        // A vault holds many vars, not each for this playbook.
        .filter(|(_, k, _)| !args.vault.opened.iter().any(|(_, names)| names.contains(k)));
    for (flag, key, value) in flags {
        if !read.contains(key) {
            let candidates = read
                .iter()
                .map(String::as_str)
                .chain(playbook.vars.keys().map(String::as_str))
                .filter(|name| !template::BUILTINS.contains(name));
            let d = Diagnostic::new(
                Path::new(flag),
                format!(
                    "`{key}` is not used by any template of {}",
                    playbook.file.display()
                ),
            );
            warnings.strict.push(match closest(key, candidates) {
                Some(best) => d.hint(format!("did you mean `{best}`? (`{flag} {best}=…`)")),
                None => d.hint(format!(
                    "remove `{flag} {key}=…`, or use `{{{{ {key} }}}}` in a step"
                )),
            });
        }
        if value.trim().is_empty() {
            warnings.strict.push(
                Diagnostic::new(
                    Path::new(flag),
                    format!(
                        "`{key}` is set to an empty value, which {} would render as nothing",
                        playbook.file.display()
                    ),
                )
                    .hint(format!(
                        "give it a value (`{flag} {key}=VALUE`), or leave it out to use the playbook's or inventory's value"
                    )),
            );
        }
    }
    unquoted_values(plan, args, &mut warnings);
    warnings.strict = std::mem::take(&mut warnings.strict).sorted();
    warnings.other = std::mem::take(&mut warnings.other).sorted();
    warnings
}

/// A value with shell metacharacters put into a `run`, `rollback` or `unless` command
/// without `| quote`: the shell splits or interprets it. Reported once per step and var,
/// for the first target whose value has them.
fn unquoted_values(plan: &Plan, args: &PlanArgs, warnings: &mut VarWarnings) {
    let playbook = &plan.playbook;
    let env = template::environment();
    let captures: Vars = playbook
        .steps
        .iter()
        .filter_map(|s| s.capture.clone())
        .map(|name| (name, serde_yaml::Value::String(template::STAND_IN.into())))
        .collect();
    let mut first_task: BTreeMap<usize, Vec<crate::plan::Task>> = BTreeMap::new();
    for node in plan.graph.node_indices() {
        if let Node::Task(task) = plan.graph[node] {
            first_task.entry(task.step).or_default().push(task);
        }
    }
    for (s, step) in playbook.steps.iter().enumerate() {
        let Some(tasks) = first_task.get(&s) else {
            continue;
        };
        for (field, source) in step.templates() {
            if !matches!(field, "run" | "rollback" | "unless") {
                continue;
            }
            let read = template::variables(env, source).unwrap_or_default();
            for var in read
                .iter()
                .filter(|v| !template::BUILTINS.contains(&v.as_str()))
            {
                // Where the value comes from, as `Plan::vars_for` merges them.
                let value_of = |host: usize| -> Option<(&serde_yaml::Value, &str)> {
                    if let Some(v) = plan.extra_vars.get(var) {
                        let flag = if args.secret_vars.iter().any(|(k, _)| k == var) {
                            "--secret-var"
                        } else {
                            "--var"
                        };
                        return Some((v, flag));
                    }
                    if let Some(v) = plan.inventory.hosts[host].vars.get(var) {
                        return Some((v, "the inventory"));
                    }
                    playbook.vars.get(var).map(|v| (v, "the playbook's vars"))
                };
                let found = tasks.iter().find_map(|task| {
                    let (value, from) = value_of(task.host)?;
                    let text = value.as_str()?;
                    let special = template::shell_metacharacters(text);
                    (!special.is_empty()).then_some((task, text, from, special))
                });
                let Some((task, text, from, special)) = found else {
                    continue;
                };
                let context = plan.template_context(task, "check", &captures);
                let known: BTreeMap<String, minijinja::Value> = context
                    .try_iter()
                    .into_iter()
                    .flatten()
                    .filter_map(|k| {
                        let v = context.get_item(&k).ok()?;
                        Some((k.as_str()?.to_string(), v))
                    })
                    .collect();
                if !template::renders_unquoted(source, &known, var, text) {
                    continue;
                }
                let chars: Vec<String> = special
                    .iter()
                    .map(|c| match c {
                        ' ' => "space".to_string(),
                        '\t' => "tab".to_string(),
                        '\n' => "newline".to_string(),
                        c if c.is_whitespace() => "whitespace".to_string(),
                        c => format!("`{c}`"),
                    })
                    .collect();
                let from = if from == "the inventory" {
                    format!(
                        "the inventory (host `{}`)",
                        plan.inventory.hosts[task.host].name
                    )
                } else {
                    from.to_string()
                };
                let d = Diagnostic::new(
                    &playbook.file,
                    format!(
                        "step `{}`: `{field}` puts `{var}` into the command unquoted, and its value from {from} holds shell metacharacters: {}",
                        step.name,
                        chars.join(", ")
                    ),
                )
                .hint(format!(
                    "write `{{{{ {var} | quote }}}}` so the shell sees the value as one word"
                ));
                if from.starts_with("--") {
                    warnings.strict.push(d);
                } else {
                    warnings.other.push(d);
                }
            }
        }
    }
}

/// The var warnings to print, strict ones first; with `--strict-vars`, the refusal of
/// the ones about command-line values instead.
pub fn vet_vars(plan: &Plan, args: &PlanArgs) -> Result<Vec<Diagnostic>, Diagnostics> {
    let warnings = var_warnings(plan, args);
    if args.strict_vars && !warnings.strict.is_empty() {
        let mut errors = Diagnostics::default();
        for d in warnings.strict.iter() {
            errors.push(
                d.clone()
                    .map_message(|m| format!("{m} (refused: --strict-vars)")),
            );
        }
        return Err(errors);
    }
    Ok(warnings
        .strict
        .iter()
        .chain(warnings.other.iter())
        .cloned()
        .collect())
}
