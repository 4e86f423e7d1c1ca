//! `pony resume`, `pony rollback` and `pony unlock`: working on a past run from its
//! snapshot (inventory, playbook, vars) and its journal.

use super::deploy::{check_approvals, redactor};
use super::run::{launch, Launch, RunFolder};
use crate::diag::{Diagnostic, Diagnostics};
use crate::exec::Mode;
use crate::exit::Exit;
use crate::inventory::pattern::HostSet;
use crate::plan::Plan;
use crate::settings::Settings;
use crate::state::journal::{self, Replay, RunKind, TaskState};
use crate::state::run_dir::RunDir;
use crate::state::runs::ResolveError;
use crate::state::snapshot::{Secrets, Snapshot, SnapshotError};
use crate::state::store::Store;
use std::path::Path;

/// A past run rebuilt from its folder.
struct Reopened {
    plan: Plan,
    run_dir: RunDir,
    replay: Replay,
    /// The database's last journal `seq` of the run before it was read (0 locally).
    journal_seen: i64,
    /// The vars of the run's vaults: secrets like the `--secret-var`s.
    vault_vars: Vec<(String, String)>,
}

impl Reopened {
    /// The run launched again by `command` from where its journal left it: as a deploy,
    /// with no approvals given, no wave skipped and nothing to roll back (a command that
    /// does otherwise says so in its own fields).
    fn launch(
        self,
        command: RunKind,
        secret_vars: &[(String, String)],
        accept_new_host_keys: bool,
    ) -> Launch {
        let secrets: Vec<(String, String)> = secret_vars
            .iter()
            .chain(&self.vault_vars)
            .cloned()
            .collect();
        Launch {
            redactor: redactor(&self.plan, &secrets),
            plan: self.plan,
            run: RunFolder::Existing(self.run_dir),
            approvals: Vec::new(),
            accept_new_host_keys,
            replay: Some(self.replay),
            mode: Mode::Deploy,
            skip_failed_wave: None,
            command,
            rollback_tasks: 0,
            journal_seen: self.journal_seen,
        }
    }
}

/// Finds the run (an id or a unique prefix of one), rebuilds the plan it used from its
/// snapshot, and reads its journal. Every problem is a usage error (exit 2).
fn reopen(
    settings: &Settings,
    run: &str,
    secret_vars: &[(String, String)],
) -> Result<Reopened, Diagnostics> {
    let store = Store::for_writing(&super::store_settings(settings))
        .map_err(|e| Diagnostics::from(Diagnostic::new(Path::new("--state"), format!("{e:#}"))))?;
    let runs_dir = store.place();
    let id = store.resolve(run).map_err(|e| {
        let hint = match e {
            ResolveError::Ambiguous { .. } => "give more of the run id".to_string(),
            _ => format!(
                "list runs with `{}` (and pass the same --state-dir or --state)",
                crate::hint::pony("history")
            ),
        };
        Diagnostic::new(&runs_dir.join(run), e.to_string()).hint(hint)
    })?;
    let journal_seen = store.last_seq(&id).map_err(|e| {
        Diagnostics::from(Diagnostic::new(
            &runs_dir.join(&id),
            format!("cannot read run {id} from the state database: {e:#}"),
        ))
    })?;
    let opened = store.open_run(&id).map_err(|e| {
        Diagnostics::from(Diagnostic::new(
            &runs_dir.join(&id),
            format!("cannot copy run {id} from the state database: {e:#}"),
        ))
    })?;
    let Some(opened) = opened else {
        return Err(Diagnostic::new(
            &runs_dir.join(&id),
            format!("run {id} has no journal: it never started"),
        )
        .hint("start a new `pony deploy`")
        .into());
    };
    for note in &opened.notes {
        eprintln!("{note}");
    }
    let run_dir = opened.dir;
    let unusable = |path: &Path, problem: String| -> Diagnostics {
        Diagnostic::new(
            path,
            format!("the snapshot of run {id} is missing or corrupt: {problem}"),
        )
        .hint("the run cannot be resumed from its folder; start a new `pony deploy`")
        .into()
    };
    let snapshot = Snapshot::load(&run_dir.path);
    // The run's vaults, decrypted again with the key given now, stand for their vars.
    let vault_vars = match &snapshot {
        Ok(snapshot) => {
            super::vault::open_for_run(&id, &snapshot.vaults(), settings.vault_key_file.as_deref())?
        }
        Err(_) => Vec::new(),
    };
    let given: Vec<(String, String)> = vault_vars.iter().chain(secret_vars).cloned().collect();
    let plan = snapshot
        .and_then(|snapshot| snapshot.plan(Secrets::Given(&given)))
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
        journal_seen,
        vault_vars,
    })
}

pub fn resume(
    settings: &Settings,
    run: &str,
    approve: &[String],
    secret_vars: &[(String, String)],
    accept: bool,
    skip_failed_wave: bool,
) -> anyhow::Result<Exit> {
    let reopened = reopen(settings, run, secret_vars)?;
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
                    "resume without --skip-failed-wave: {}",
                    crate::hint::pony(format_args!("resume {run}"))
                )),
            )
            .into());
        }
        (_, false) => None,
    };
    launch(
        settings,
        Launch {
            approvals: approve.to_vec(),
            skip_failed_wave,
            ..reopened.launch(RunKind::Resume, secret_vars, accept)
        },
    )
}

/// `pony join RUN --regions …`: another controller takes regions of a split run.
pub fn join(
    settings: &Settings,
    run: &str,
    approve: &[String],
    secret_vars: &[(String, String)],
    accept: bool,
) -> anyhow::Result<Exit> {
    let reopened = reopen(settings, run, secret_vars)?;
    check_approvals(&reopened.plan, approve)?;
    launch(
        settings,
        Launch {
            approvals: approve.to_vec(),
            ..reopened.launch(RunKind::Join, secret_vars, accept)
        },
    )
}

pub fn rollback(
    settings: &Settings,
    run: &str,
    limit: Option<&str>,
    secret_vars: &[(String, String)],
    yes: bool,
    accept: bool,
) -> anyhow::Result<Exit> {
    if settings.regions.is_some() {
        return Err(Diagnostics::from(
            Diagnostic::new(
                Path::new("--regions"),
                "pony rollback works on the whole run, not on regions",
            )
            .hint("leave --regions out (use --limit 'REGION' to roll back only some hosts)"),
        )
        .into());
    }
    let reopened = reopen(settings, run, secret_vars)?;
    let plan = &reopened.plan;
    let limited = crate::inventory::pattern::select(&plan.inventory, limit)
        .map_err(crate::diag::Diagnostics::from)?;
    let due = RollbackDue::of(plan, &reopened.replay, &limited);
    let id = &reopened.run_dir.id;
    // Nothing left still goes through the run (journaled: who rolled back when), with
    // nothing to confirm, touching and reporting no host.
    if due.hosts.is_empty() {
        eprintln!(
            "nothing to roll back: run {id} has no task left to undo{}",
            limit
                .map(|l| format!(" on --limit {l}"))
                .unwrap_or_default()
        );
    } else if !yes && !confirm_rollback(plan, id, &due)? {
        eprintln!("nothing rolled back");
        return Ok(Exit::Invalid);
    }
    launch(
        settings,
        Launch {
            mode: Mode::Rollback(due.hosts),
            rollback_tasks: due.tasks,
            ..reopened.launch(RunKind::Rollback, secret_vars, accept)
        },
    )
}

/// What `pony rollback` will undo: the hosts (within `--limit`) with a task the journal
/// shows done, that changed something, has a `rollback:` and was not rolled back yet. A
/// second rollback of the same run finds only what the first left.
struct RollbackDue {
    hosts: HostSet,
    tasks: usize,
}

impl RollbackDue {
    fn of(plan: &Plan, replay: &Replay, limit: &HostSet) -> RollbackDue {
        let mut hosts = HostSet::empty(plan.inventory.hosts.len());
        let mut tasks = 0;
        for (node, task) in plan.tasks() {
            if !limit.contains(task.host) || plan.playbook.steps[task.step].rollback.is_none() {
                continue;
            }
            let Some(done) = replay.tasks.get(&plan.label(node)) else {
                continue;
            };
            if done.changed && !done.rolled_back && done.state != TaskState::Interrupted {
                hosts.insert(task.host);
                tasks += 1;
            }
        }
        RollbackDue { hosts, tasks }
    }
}

/// The confirmation of `pony rollback`: which hosts per region, then the question.
fn confirm_rollback(plan: &Plan, id: &str, due: &RollbackDue) -> Result<bool, Diagnostics> {
    let inventory = &plan.inventory;
    let mut preface = format!(
        "run {id}: {} on {}; to roll back, in reverse dependency order:\n",
        plan.playbook.name, inventory.name
    );
    for (r, region) in inventory.regions.iter().enumerate() {
        let names: Vec<&str> = due
            .hosts
            .iter()
            .filter(|&h| inventory.hosts[h].region == r)
            .map(|h| inventory.hosts[h].name.as_str())
            .collect();
        if !names.is_empty() {
            preface.push_str(&format!(
                "  {:<14} {} hosts: {}\n",
                region.name,
                names.len(),
                names.join(", ")
            ));
        }
    }
    super::deploy::ask(
        plan,
        "roll back",
        &preface,
        &format!(
            "\nRoll back {} tasks on {} hosts of {} (run {id})? [y/N] ",
            due.tasks,
            due.hosts.len(),
            inventory.name
        ),
    )
}

pub fn unlock(settings: &Settings, inventory: &str, force: bool) -> anyhow::Result<Exit> {
    let store = Store::for_writing(&super::store_settings(settings))?;
    if let Some((holder, true)) = store.holder(inventory)? {
        if !force {
            return Err(crate::state::lock::LockError::Live(Box::new(holder)).into());
        }
    }
    let Some(mut broken) = store.unlock(inventory, force)? else {
        crate::outln!("inventory `{inventory}` was not locked");
        return Ok(Exit::Success);
    };
    match broken.fenced.take() {
        // A lease: its holders are fenced off, and a live one is waited for.
        Some(fenced) => unlocked_lease(&store, inventory, broken, fenced),
        None => {
            let holder = &broken.info;
            if broken.live {
                crate::outln!(
                    "broke the live lock of inventory `{inventory}` (--force): run {} pid {} on {} since {} was still running; it is not stopped: it goes on working its hosts, and a new run would work them too; stop it with Ctrl-C there or `{}`",
                    holder.run_id,
                    holder.pid,
                    holder.host,
                    holder.started,
                    crate::hint::pony(format_args!("abort {}", holder.run_id))
                );
            } else {
                crate::outln!(
                    "unlocked inventory `{inventory}` (was held by run {} pid {} on {} since {})",
                    holder.run_id,
                    holder.pid,
                    holder.host,
                    holder.started
                );
            }
            Ok(Exit::Success)
        }
    }
}

/// `pony unlock` of a lease in the state database, broken with every region lease of
/// its run in one transaction (the holders are fenced off from that commit on): for a
/// live run, waits up to one lease until each controller says it stopped and what
/// became of its commands on the hosts; says which.
fn unlocked_lease(
    store: &Store,
    inventory: &str,
    broken: crate::state::backend::Unlocked,
    fenced: Vec<crate::state::backend::Fenced>,
) -> anyhow::Result<Exit> {
    let held = &broken.info;
    if !broken.live {
        crate::outln!(
            "unlocked inventory `{inventory}` (was held by run {} pid {} on {} since {})",
            held.run_id,
            held.pid,
            held.host,
            held.started
        );
        return Ok(Exit::Success);
    }
    crate::outln!(
        "broke the live lock of inventory `{inventory}` (--force): run {} pid {} on {} since {} was still running; its lease{} is gone from the state database, so nothing its controllers journal is accepted from now on and they start no task; waiting (at most {}, one lease) for them to kill their commands on the hosts",
        held.run_id,
        held.pid,
        held.host,
        held.started,
        if fenced.len() > 1 || fenced.iter().any(|f| f.controller.is_some()) {
            " and its regions' leases"
        } else {
            ""
        },
        humantime::format_duration(store.lease()),
    );
    let answers = store.wait_stopped(&fenced, store.lease())?;
    let mut silent = 0;
    let mut unconfirmed = 0;
    for (fenced, said) in &answers {
        match said {
            Some(outcome) => {
                if outcome.contains("could not be confirmed") {
                    unconfirmed += 1;
                }
                crate::outln!("  {}: {outcome}", fenced.describe());
            }
            None => {
                silent += 1;
                crate::outln!(
                    "  {}: no word within {}: it is frozen, cut off from the database or gone; it can journal nothing more, but commands it started may still run on the hosts",
                    fenced.describe(),
                    humantime::format_duration(store.lease())
                );
            }
        }
    }
    if silent > 0 {
        crate::outln!(
            "the lease time passed before {silent} controller(s) of run {} said they stopped: their commands on the hosts may still run (one that wakes up kills them; `{}` kills a copy left running before it runs that task again)",
            held.run_id,
            crate::hint::pony(format_args!("resume {}", held.run_id))
        );
    } else if unconfirmed > 0 {
        crate::outln!(
            "every controller of run {} stopped, but {unconfirmed} could not confirm that all their commands on the hosts are dead",
            held.run_id
        );
    } else {
        crate::outln!(
            "every controller of run {} stopped and its commands on the hosts are dead (killed or ended, confirmed)",
            held.run_id
        );
    }
    Ok(Exit::Success)
}
