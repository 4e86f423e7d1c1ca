//! `pony resume`, `pony rollback` and `pony unlock`: working on a past run from its
//! snapshot (inventory, playbook, vars) and its journal.

use super::deploy::{check_approvals, redactor};
use super::run::{launch, Launch, RunFolder};
use crate::cli::GlobalOptions;
use crate::diag::{Diagnostic, Diagnostics};
use crate::exec::Mode;
use crate::exit::Exit;
use crate::inventory::Vars;
use crate::plan::{Plan, PlanOptions};
use crate::state::journal::{self, Replay};
use crate::state::run_dir::RunDir;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A past run rebuilt from its folder.
struct Reopened {
    plan: Plan,
    run_dir: RunDir,
    replay: Replay,
}

/// Rebuilds the plan a run used from its snapshot, and reads its journal.
fn reopen(
    global: &GlobalOptions,
    run: &str,
    secret_vars: &[(String, String)],
) -> Result<Reopened, Diagnostics> {
    let runs = global.state_dir.join("runs");
    let Some(run_dir) = RunDir::open(&global.state_dir, run) else {
        return Err(Diagnostic::new(
            &runs.join(run),
            format!("no run `{run}` under {}", runs.display()),
        )
        .hint("list runs with `pony history` (and pass the same --state-dir)")
        .into());
    };
    let corrupt = |file: &str, problem: String| -> Diagnostics {
        Diagnostic::new(
            &run_dir.path.join(file),
            format!("the snapshot of run {run} is missing or corrupt: {problem}"),
        )
        .hint("the run cannot be resumed from its folder; start a new `pony deploy`")
        .into()
    };
    let meta: serde_json::Value =
        read_json(&run_dir.path.join("run.json")).map_err(|e| corrupt("run.json", e))?;
    let vars: serde_json::Value =
        read_json(&run_dir.path.join("vars.json")).map_err(|e| corrupt("vars.json", e))?;
    let inventory = crate::inventory::load(&run_dir.path.join("inventory.yaml"))?;
    let mut playbook = crate::playbook::load(&run_dir.path.join("playbook.yaml"))?;
    if let Some(original) = meta["playbook_path"].as_str() {
        playbook.files_dir = Path::new(original)
            .parent()
            .unwrap_or(Path::new("."))
            .to_path_buf();
    }
    let mut extra_vars: Vars = vars["vars"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        serde_yaml::Value::String(v.as_str().unwrap_or_default().to_string()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let needed: Vec<String> = vars["secret_vars"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let mut errors = Diagnostics::default();
    for name in &needed {
        match secret_vars.iter().find(|(k, _)| k == name) {
            Some((_, value)) => {
                extra_vars.insert(name.clone(), serde_yaml::Value::String(value.clone()));
            }
            None => errors.push(
                Diagnostic::new(Path::new("--secret-var"), format!("run {run} was started with secret var `{name}`, whose value is never stored"))
                    .hint(format!("pass it again: --secret-var {name}=VALUE")),
            ),
        }
    }
    errors.into_result(())?;
    let options = PlanOptions {
        limit: vars["limit"].as_str().map(str::to_string),
        extra_vars,
    };
    let plan = crate::plan::build(Arc::new(inventory), Arc::new(playbook), &options)?;
    let records = journal::read(&run_dir.journal_path())
        .map_err(|e| corrupt("journal.jsonl", e.to_string()))?;
    Ok(Reopened {
        plan,
        run_dir,
        replay: Replay::from_records(&records),
    })
}

fn read_json(path: &PathBuf) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

pub fn resume(
    global: &GlobalOptions,
    run: &str,
    approve: &[String],
    secret_vars: &[(String, String)],
    accept: bool,
    skip_failed_wave: bool,
) -> anyhow::Result<Exit> {
    let reopened = reopen(global, run, secret_vars)?;
    check_approvals(&reopened.plan, approve)?;
    let skip_failed_wave = match (&reopened.replay.stopped_wave, skip_failed_wave) {
        (Some(wave), true) => Some(wave.clone()),
        (None, true) => {
            return Err(Diagnostics::from(
                Diagnostic::new(
                    &reopened.run_dir.journal_path(),
                    format!("run {run} was not stopped by a failed wave: there is no wave to skip"),
                )
                .hint(format!(
                    "resume without --skip-failed-wave: pony resume {run}"
                )),
            )
            .into());
        }
        (_, false) => None,
    };
    let redactor = redactor(&reopened.plan, secret_vars);
    launch(
        global,
        Launch {
            plan: reopened.plan,
            run: RunFolder::Existing(reopened.run_dir),
            redactor,
            approvals: approve.to_vec(),
            accept_new_host_keys: accept,
            replay: Some(reopened.replay),
            mode: Mode::Deploy,
            skip_failed_wave,
            command: "resume",
        },
    )
}

pub fn rollback(
    global: &GlobalOptions,
    run: &str,
    limit: Option<&str>,
    secret_vars: &[(String, String)],
    yes: bool,
    accept: bool,
) -> anyhow::Result<Exit> {
    let reopened = reopen(global, run, secret_vars)?;
    let plan = &reopened.plan;
    let hosts = crate::inventory::pattern::select(&plan.inventory, limit)
        .map_err(crate::diag::Diagnostics::from)?;
    if !yes && !super::deploy::confirm(plan)? {
        eprintln!("nothing rolled back");
        return Ok(Exit::Invalid);
    }
    let redactor = redactor(plan, secret_vars);
    launch(
        global,
        Launch {
            plan: reopened.plan,
            run: RunFolder::Existing(reopened.run_dir),
            redactor,
            approvals: Vec::new(),
            accept_new_host_keys: accept,
            replay: Some(reopened.replay),
            mode: Mode::Rollback(hosts),
            skip_failed_wave: None,
            command: "rollback",
        },
    )
}

pub fn unlock(global: &GlobalOptions, inventory: &str) -> anyhow::Result<Exit> {
    match crate::state::lock::unlock(&global.state_dir, inventory)? {
        Some(holder) => println!(
            "unlocked inventory `{inventory}` (was held by run {} pid {} on {} since {})",
            holder.run_id, holder.pid, holder.host, holder.started
        ),
        None => println!("inventory `{inventory}` was not locked"),
    }
    Ok(Exit::Success)
}
