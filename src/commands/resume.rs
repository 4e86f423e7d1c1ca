//! `pony resume`, `pony rollback` and `pony unlock`: working on a past run from its
//! snapshot (inventory, playbook, vars) and its journal.

use super::deploy::{check_approvals, redactor};
use super::run::{launch, Launch, RunFolder};
use crate::cli::GlobalOptions;
use crate::diag::{Diagnostic, Diagnostics};
use crate::exec::Mode;
use crate::exit::Exit;
use crate::plan::Plan;
use crate::state::journal::{self, Replay};
use crate::state::run_dir::RunDir;
use crate::state::runs::{self, ResolveError};
use crate::state::snapshot::{Secrets, Snapshot, SnapshotError};
use std::path::Path;

/// A past run rebuilt from its folder.
struct Reopened {
    plan: Plan,
    run_dir: RunDir,
    replay: Replay,
}

/// Finds the run (an id or a unique prefix of one), rebuilds the plan it used from its
/// snapshot, and reads its journal. Every problem is a usage error (exit 2).
fn reopen(
    global: &GlobalOptions,
    run: &str,
    secret_vars: &[(String, String)],
) -> Result<Reopened, Diagnostics> {
    let runs_dir = runs::runs_dir(&global.state_dir);
    let id = runs::resolve(&global.state_dir, run).map_err(|e| {
        let hint = match e {
            ResolveError::Ambiguous { .. } => "give more of the run id",
            _ => "list runs with `pony history` (and pass the same --state-dir)",
        };
        Diagnostic::new(&runs_dir.join(run), e.to_string()).hint(hint)
    })?;
    let Some(run_dir) = RunDir::open(&global.state_dir, &id) else {
        return Err(Diagnostic::new(
            &runs_dir.join(&id),
            format!("run {id} has no journal: it never started"),
        )
        .hint("start a new `pony deploy`")
        .into());
    };
    let unusable = |path: &Path, problem: String| -> Diagnostics {
        Diagnostic::new(
            path,
            format!("the snapshot of run {id} is missing or corrupt: {problem}"),
        )
        .hint("the run cannot be resumed from its folder; start a new `pony deploy`")
        .into()
    };
    let plan = Snapshot::load(&run_dir.path)
        .and_then(|snapshot| snapshot.plan(Secrets::Given(secret_vars)))
        .map_err(|e| match e {
            SnapshotError::MissingSecrets { names } => names
                .iter()
                .map(|name| {
                    Diagnostic::new(
                        Path::new("--secret-var"),
                        format!("run {id} was started with secret var `{name}`, whose value is never stored"),
                    )
                    .hint(format!("pass it again: --secret-var {name}=VALUE"))
                })
                .fold(Diagnostics::default(), |mut all, d| {
                    all.push(d);
                    all
                }),
            SnapshotError::Invalid(diagnostics) => diagnostics,
            SnapshotError::Read { ref path, .. }
            | SnapshotError::Write { ref path, .. }
            | SnapshotError::Json { ref path, .. } => unusable(&path.clone(), e.to_string()),
        })?;
    let records = journal::read(&run_dir.journal_path()).map_err(|e| {
        Diagnostic::new(
            &run_dir.journal_path(),
            format!("the journal of run {id} is damaged: {e}"),
        )
        .hint("`pony status` shows what it can read; start a new `pony deploy`")
    })?;
    Ok(Reopened {
        plan,
        run_dir,
        replay: Replay::from_records(&records),
    })
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
