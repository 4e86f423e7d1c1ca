//! `pony simulate`: load the plan (with `--set` edits), learn durations, run the deploy
//! scheduler in virtual time ([`crate::sim`]), and print the result (text or JSON), the
//! by-hand baseline with `--compare`, the timeline with `--svg`. Reads earlier runs'
//! journals and takes no lock; writes nothing to the state dir unless `--save` keeps the
//! simulation for the run page of `pony serve` ([`crate::sim::saved`]).

use crate::cli::SimulateArgs;
use crate::diag::{Diagnostic, Diagnostics};
use crate::exit::Exit;
use crate::plan::estimate::LEARNED_RUNS;
use crate::plan::Plan;
use crate::report::OutputFormat;
use crate::settings::Settings;
use crate::sim::durations::{Durations, Learned};
use crate::sim::edit::{self, Baseline};
use crate::sim::report::{Baselines, Simulation};
use crate::sim::SimOptions;
use std::path::Path;
use std::sync::Arc;

pub fn run(settings: &Settings, args: &SimulateArgs) -> anyhow::Result<Exit> {
    let sets = |value: &mut serde_yaml::Value| -> Result<(), Diagnostics> {
        for (path, text) in &args.sets {
            edit::set(value, path, text).map_err(|e| {
                Diagnostic::new(Path::new("--set"), e)
                    .hint("a path names playbook keys, e.g. strategy.max_unavailable=10% or strategy.waves.canary.pause=30m")
            })?;
        }
        Ok(())
    };
    let plan = Arc::new(super::load_plan_edited(&args.plan, Some(&sets))?.print_warnings());
    let durations_file = match &args.durations {
        Some(path) => Some((
            path.clone(),
            std::fs::read_to_string(path).map_err(|e| {
                let d = Diagnostic::new(path, format!("cannot read the durations file: {e}"))
                    .hint("pass a YAML file of `step: duration` lines, e.g. `drain: 10m`");
                Diagnostics::from(d)
            })?,
        )),
        None => None,
    };
    let (tasks, rollbacks) =
        crate::state::runs::step_samples(&settings.state_dir, &plan.playbook.name, LEARNED_RUNS);
    let learned = Learned { tasks, rollbacks };
    let durations_of = |plan: &Plan| {
        Durations::build(
            plan,
            durations_file
                .as_ref()
                .map(|(p, t)| (p.as_path(), t.as_str())),
            &learned,
        )
    };
    let options = SimOptions {
        seed: args.seed,
        fail: args.fail,
        unreachable: args.unreachable,
        failing: failing_tasks(&plan, &args.fail_tasks)?,
        start: args.start.unwrap_or_else(|| {
            use chrono::{Timelike, Utc};
            let now = Utc::now();
            now.with_second(0)
                .and_then(|t| t.with_nanosecond(0))
                .unwrap_or(now)
        }),
        approve_after: args.approve_after,
        connections: args.connections,
    };
    let durations = durations_of(&plan)?;
    let simulation = simulate(plan.clone(), durations, &options);
    let baselines = if args.compare {
        let by_hand = |baseline: Baseline| -> Result<Simulation, Diagnostics> {
            let edit = |value: &mut serde_yaml::Value| -> Result<(), Diagnostics> {
                sets(value)?;
                edit::by_hand(&plan, value, baseline)
                    .map_err(|e| Diagnostics::from(Diagnostic::new(&plan.playbook.file, e)))
            };
            let base_plan =
                Arc::new(super::load_plan_edited(&args.plan, Some(&edit))?.print_warnings());
            let durations = durations_of(&base_plan)?;
            let base_options = SimOptions {
                connections: None,
                failing: failing_tasks(&base_plan, &args.fail_tasks)?,
                ..options.clone()
            };
            Ok(simulate(base_plan, durations, &base_options))
        };
        Some(Baselines {
            same_policy: by_hand(Baseline::SamePolicy)?,
            one_host: by_hand(Baseline::OneHost)?,
        })
    } else {
        None
    };
    let svg = crate::sim::svg::render(&simulation, baselines.as_ref().map(|b| &b.one_host));
    if args.save {
        let json = serde_json::to_string_pretty(&simulation)?;
        let kept = crate::sim::saved::save(
            &settings.state_dir,
            &args.plan.playbook,
            &args.plan.inventory,
            &svg,
            &json,
        )
        .map_err(|e| {
            let d = Diagnostic::new(
                &crate::sim::saved::dir(&settings.state_dir),
                format!("cannot keep the simulation: {e}"),
            )
            .hint("pass a writable --state-dir");
            Diagnostics::from(d)
        })?;
        // On stderr: stdout is the report (JSON with --output json).
        eprintln!(
            "simulation kept in {} (the run page of `pony serve` shows it for runs of these files)",
            kept.display()
        );
    }
    if let Some(path) = &args.svg {
        std::fs::write(path, &svg).map_err(|e| {
            Diagnostics::from(Diagnostic::new(
                path,
                format!("cannot write the timeline: {e}"),
            ))
        })?;
    }
    match settings.output {
        OutputFormat::Json => {
            let speedup = baselines.as_ref().map(|b| b.speedup(&simulation));
            let out = serde_json::json!({
                "simulation": simulation,
                "baseline": baselines.as_ref().map(|b| &b.one_host),
                "same_policy_baseline": baselines.as_ref().map(|b| &b.same_policy),
                "speedup": speedup.map(|s| s.total),
                "speedup_from_tool": speedup.map(|s| s.tool),
                "speedup_from_policy": speedup.map(|s| s.policy),
            });
            crate::outln!("{}", serde_json::to_string_pretty(&out)?);
        }
        OutputFormat::Human => {
            crate::out!(
                "{}",
                crate::sim::text::text(&simulation, baselines.as_ref())
            )
        }
    }
    Ok(Exit::Success)
}

/// The nodes of `--fail-task` labels.
fn failing_tasks(plan: &Plan, labels: &[String]) -> Result<Vec<crate::plan::NodeId>, Diagnostics> {
    if labels.is_empty() {
        return Ok(Vec::new());
    }
    let by_label: std::collections::HashMap<String, crate::plan::NodeId> =
        plan.tasks().map(|(n, _)| (plan.label(n), n)).collect();
    let mut errors = Diagnostics::default();
    let mut nodes = Vec::new();
    for label in labels {
        match by_label.get(label) {
            Some(n) => nodes.push(*n),
            None => {
                let d = Diagnostic::new(
                    Path::new("--fail-task"),
                    format!("no task `{label}` in the plan"),
                );
                errors.push(
                    match crate::diag::closest(label, by_label.keys().map(String::as_str)) {
                        Some(best) => d.hint(format!("did you mean `{best}`?")),
                        None => d.hint(
                            "a task is `step@host` (or `step@region`), as the journal names it",
                        ),
                    },
                );
            }
        }
    }
    errors.into_result(nodes)
}

/// One simulation of `plan`, summed up.
pub fn simulate(plan: Arc<Plan>, durations: Durations, options: &SimOptions) -> Simulation {
    let sources = durations.sources(&plan);
    let trace = crate::sim::simulate(plan.clone(), durations, options);
    Simulation::new(&plan, &trace, options, sources)
}
