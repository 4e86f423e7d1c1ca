//! `pony deploy`: validate, confirm, then run the plan (or print it with `--dry-run`).

use super::load_plan;
use super::run::RunFolder;
use crate::cli::DeployArgs;
use crate::diag::{closest, Diagnostic, Diagnostics};
use crate::exec::Mode;
use crate::exit::Exit;
use crate::plan::Plan;
use crate::secret::{is_secret_name, Redactor};
use crate::settings::Settings;
use crate::state::snapshot::SnapshotVars;
use std::io::{IsTerminal, Write};
use std::path::Path;

pub fn run(settings: &Settings, args: &DeployArgs) -> anyhow::Result<Exit> {
    let plan = load_plan(&args.plan)?.print_warnings();
    check_approvals(&plan, &args.approve)?;
    let redactor = redactor(&plan, &args.plan.secret_vars);
    if args.dry_run {
        let connections = settings
            .connections
            .unwrap_or(plan.playbook.strategy.connections);
        let pace = settings
            .rollback_pace
            .unwrap_or(plan.playbook.strategy.rollback_pace);
        crate::out!(
            "{}",
            super::dry_run::render(plan, &redactor, connections, pace)
        );
        return Ok(Exit::Success);
    }
    if args.check {
        return super::deploy_check::run(
            settings,
            plan,
            &redactor,
            args.diff,
            args.accept_new_host_keys,
        );
    }
    if !args.yes && !confirm(&plan, settings.regions.is_some())? {
        eprintln!("nothing deployed");
        return Ok(Exit::Invalid);
    }
    // A `--var` whose name marks it secret (`db_password=…`) is a `--secret-var`: its
    // value is never stored, and a resume asks for it again.
    let (secret_named, vars): (Vec<_>, Vec<_>) = args
        .plan
        .vars
        .iter()
        .cloned()
        .partition(|(name, _)| is_secret_name(name));
    // A vault's vars are secret vars too: a resume gets them from the snapshot's copy
    // of the vault, decrypted with the key given again.
    let vars_snapshot = SnapshotVars {
        vars: vars.into_iter().collect(),
        secret_vars: args
            .plan
            .secret_vars
            .iter()
            .chain(&secret_named)
            .map(|(k, _)| k.clone())
            .collect(),
        limit: args.plan.limit.clone(),
        vaults: args
            .plan
            .vault
            .opened
            .iter()
            .map(|(f, _)| f.clone())
            .collect(),
    };
    super::run::launch(
        settings,
        super::run::Launch {
            plan,
            run: RunFolder::New {
                inventory: args.plan.inventory.clone(),
                playbook: args.plan.playbook.clone(),
                vars: vars_snapshot,
            },
            redactor,
            approvals: args.approve.clone(),
            accept_new_host_keys: args.accept_new_host_keys,
            replay: None,
            mode: Mode::Deploy,
            skip_failed_wave: None,
            command: crate::state::journal::RunKind::Deploy,
            rollback_tasks: 0,
            journal_seen: 0,
        },
    )
}

pub(super) fn check_approvals(plan: &Plan, approvals: &[String]) -> Result<(), Diagnostics> {
    let mut errors = Diagnostics::default();
    let names: Vec<&str> = plan.waves.iter().map(|w| w.name.as_str()).collect();
    for wave in approvals {
        if !names.contains(&wave.as_str()) {
            let d = Diagnostic::new(
                Path::new("--approve"),
                format!("no wave `{wave}` in playbook `{}`", plan.playbook.name),
            );
            errors.push(match closest(wave, names.iter().copied()) {
                Some(best) => d.hint(format!("did you mean `{best}`?")),
                None => d.hint(format!("waves are: {}", names.join(", "))),
            });
        }
    }
    errors.into_result(())
}

/// Hides vars with secret names anywhere in the plan, and the `--secret-var` values.
pub(super) fn redactor(plan: &Plan, secret_vars: &[(String, String)]) -> Redactor {
    let hosts = plan.inventory.hosts.iter().map(|h| &h.vars);
    Redactor::new(
        std::iter::once(&plan.playbook.vars)
            .chain(hosts)
            .chain(std::iter::once(&plan.extra_vars)),
        secret_vars.iter().map(|(_, v)| v.clone()),
    )
}

/// Without `--yes` a terminal is asked once, with the plan summary; anything else refuses.
pub(super) fn confirm(plan: &Plan, split: bool) -> Result<bool, Diagnostics> {
    ask(
        plan,
        "deploy",
        &super::plan::describe(plan, split),
        &format!(
            "\nDeploy {} to {} hosts of {}? [y/N] ",
            plan.playbook.name,
            plan.host_count(),
            plan.inventory.name
        ),
    )
}

/// Asks a person at the terminal `question` after `preface`; refuses (exit 2, with the
/// `--yes` hint) when stdin is not a terminal. `verb` is what would be done.
pub(super) fn ask(
    plan: &Plan,
    verb: &str,
    preface: &str,
    question: &str,
) -> Result<bool, Diagnostics> {
    if !std::io::stdin().is_terminal() {
        return Err(Diagnostic::new(
            &plan.playbook.file,
            format!("refusing to {verb} without confirmation: stdin is not a terminal"),
        )
        .hint(format!(
            "pass --yes (or set PONY_YES=1) to {verb} from CI or scripts"
        ))
        .into());
    }
    eprint!("{preface}{question}");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().read_line(&mut answer);
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES"))
}
