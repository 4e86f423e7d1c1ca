//! Dispatch from the parsed command line to `commands/`, and the one place where an
//! outcome or error becomes an exit code.

use crate::cli::{Cli, Command, DeployArgs, SimulateArgs};
use crate::control::ControlCommand;
use crate::diag::Diagnostics;
use crate::exit::Exit;
use crate::settings::Settings;

/// Runs a parsed command line and returns the process exit code.
pub fn run(mut cli: Cli) -> Exit {
    let settings = settings(&cli);
    crate::logging::init(settings.quiet, settings.verbose, settings.color);
    crate::hint::set(settings.state_source());
    if let Err(errors) = read_secret_sources(&mut cli) {
        return report(&errors.into());
    }
    if let Err(errors) = open_vaults(&mut cli, &settings) {
        return report(&errors.into());
    }
    let hosts = match &cli.command {
        Command::Inventory {
            hosts,
            action: None,
            ..
        }
        | Command::Ping { hosts, .. }
        | Command::Exec { hosts, .. } => Some(hosts),
        _ => None,
    };
    if let Some(missing) =
        hosts.and_then(|h| crate::commands::missing_default_inventory(&h.inventory))
    {
        return report(&missing.into());
    }
    let outcome = match &cli.command {
        Command::Check(args) => crate::commands::check::run(args),
        Command::Plan { plan, estimate } => {
            crate::commands::plan::run(&settings.state_dir, plan, *estimate)
        }
        Command::Graph {
            plan,
            format,
            tasks,
        } => crate::commands::graph::run(plan, *format, *tasks),
        Command::Inventory {
            action: Some(action),
            ..
        } => crate::commands::inventory::import(action),
        Command::Inventory {
            hosts,
            format,
            action: None,
        } => crate::commands::inventory::run(&hosts.inventory, hosts.limit.as_deref(), *format),
        Command::Deploy(args) => crate::commands::deploy::run(&settings, args),
        Command::Simulate(args) => crate::commands::simulate::run(&settings, args),
        Command::Resume {
            run,
            approve,
            secret_vars,
            accept_new_host_keys,
            skip_failed_wave,
            ..
        } => crate::commands::resume::resume(
            &settings,
            run,
            approve,
            secret_vars,
            *accept_new_host_keys,
            *skip_failed_wave,
        ),
        Command::Join {
            run,
            approve,
            secret_vars,
            accept_new_host_keys,
            ..
        } => crate::commands::resume::join(
            &settings,
            run,
            approve,
            secret_vars,
            *accept_new_host_keys,
        ),
        Command::Rollback {
            run,
            limit,
            secret_vars,
            yes,
            accept_new_host_keys,
            ..
        } => crate::commands::resume::rollback(
            &settings,
            run,
            limit.as_deref(),
            secret_vars,
            *yes,
            *accept_new_host_keys,
        ),
        Command::Pause { run } => {
            crate::commands::control::run(&settings, run, ControlCommand::Pause)
        }
        Command::Continue { run } => {
            crate::commands::control::run(&settings, run, ControlCommand::Continue)
        }
        Command::Abort { run, rollback } => crate::commands::control::run(
            &settings,
            run,
            ControlCommand::Abort {
                rollback: *rollback,
            },
        ),
        Command::Approve { run, wave } => crate::commands::control::run(
            &settings,
            run,
            ControlCommand::Approve { wave: wave.clone() },
        ),
        Command::Status { run, hosts } => {
            crate::commands::status::run(&settings, run.as_deref(), *hosts)
        }
        Command::Watch {
            notify,
            notify_timeout,
            every,
        } => crate::commands::watch::run(&settings, notify, *notify_timeout, *every),
        Command::Serve(args) => crate::serve::run(
            &crate::commands::store_settings(&settings),
            &args.listen,
            args.token_file.as_deref(),
        ),
        Command::History { limit } => crate::commands::history::run(&settings, *limit),
        Command::Unlock { inventory, force } => {
            crate::commands::resume::unlock(&settings, inventory, *force)
        }
        Command::Ping {
            hosts,
            accept_new_host_keys,
            timeout,
            handshakes,
            ..
        } => crate::commands::ping::run(
            &settings,
            &hosts.inventory,
            hosts.limit.as_deref(),
            *accept_new_host_keys,
            *timeout,
            *handshakes,
        ),
        Command::Exec {
            hosts,
            accept_new_host_keys,
            timeout,
            handshakes,
            command,
            ..
        } => crate::commands::exec::run(
            &settings,
            &hosts.inventory,
            hosts.limit.as_deref(),
            *accept_new_host_keys,
            *timeout,
            *handshakes,
            command,
        ),
        Command::Db { action } => crate::commands::db::run(&settings, action),
        Command::Completions { shell } => crate::commands::completions::completions(*shell),
        Command::Man => crate::commands::completions::man(),
        Command::Lab { action } => crate::commands::lab::run(&settings.state_dir, action),
        Command::Vault(action) => crate::commands::vault::run(&settings, action),
    };
    match outcome {
        Ok(exit) => exit,
        Err(error) => report(&error),
    }
}

/// The settings of this process: the global options, the options only some commands
/// take (`--junit`, `--connections`, `--regions`, …) and pony's environment variables,
/// resolved once, before any work.
fn settings(cli: &Cli) -> Settings {
    let global = &cli.global;
    let mut settings = Settings {
        state_dir: global.state_dir.clone(),
        state: global.state.clone(),
        lease: global.lease,
        output: global.output.into(),
        color: global.color.into(),
        verbose: global.verbose,
        quiet: global.quiet,
        forced_mode: crate::settings::forced_mode(
            std::env::var(crate::settings::PROGRESS_ENV).ok().as_deref(),
        ),
        env_state_dir: std::env::var_os("PONY_STATE_DIR"),
        env_state: std::env::var("PONY_STATE").ok(),
        vault_key_file: global.vault.vault_key_file.clone(),
        ..Settings::default()
    };
    match &cli.command {
        Command::Deploy(DeployArgs { run_options, .. })
        | Command::Resume { run_options, .. }
        | Command::Join { run_options, .. }
        | Command::Rollback { run_options, .. } => {
            settings.junit = run_options.junit.clone();
            settings.connections = run_options.connections;
            settings.rollback_pace = run_options.rollback_pace.map(Into::into);
            settings.approval_wait = run_options.approval_wait.filter(|wait| !wait.is_zero());
            settings.regions = run_options.regions.clone();
            // MACHINE:PID unless named: a split run's controllers need a name each.
            settings.controller = run_options.regions.as_ref().map(|_| {
                run_options
                    .controller
                    .clone()
                    .unwrap_or_else(crate::process::this_process)
            });
            settings.on_controller_loss = run_options.on_controller_loss.map(Into::into);
            settings.progress_every = Some(run_options.progress_every);
            settings.notify = run_options
                .notify
                .iter()
                .map(|command| crate::notify::Notifier {
                    command: command.clone(),
                    timeout: run_options.notify_timeout,
                })
                .collect();
        }
        Command::Ping { connections, .. } | Command::Exec { connections, .. } => {
            settings.connections = *connections;
        }
        _ => {}
    }
    settings
}

/// Replaces `--secret-var KEY=@FILE` and `KEY=env:VAR` by the values they name, before
/// anything else looks at them; every source that cannot be read is an input error.
fn read_secret_sources(cli: &mut Cli) -> Result<(), Diagnostics> {
    let secret_vars = match &mut cli.command {
        Command::Check(plan)
        | Command::Plan { plan, .. }
        | Command::Graph { plan, .. }
        | Command::Deploy(DeployArgs { plan, .. })
        | Command::Simulate(SimulateArgs { plan, .. }) => &mut plan.secret_vars,
        Command::Resume { secret_vars, .. }
        | Command::Join { secret_vars, .. }
        | Command::Rollback { secret_vars, .. } => secret_vars,
        _ => return Ok(()),
    };
    let mut errors = Diagnostics::default();
    for (key, value) in secret_vars.iter_mut() {
        match crate::secret::read_source(value) {
            Ok(read) => *value = read,
            Err(e) => errors.push(
                crate::diag::Diagnostic::new(
                    std::path::Path::new("--secret-var"),
                    format!("`{key}`: {}", e.problem),
                )
                .hint(e.fix),
            ),
        }
    }
    errors.into_result(())
}

/// Decrypts the vaults a plan's command names (`--vault`, the playbook's `vault:`) into
/// its secret vars, before anything else looks at them.
fn open_vaults(cli: &mut Cli, settings: &Settings) -> Result<(), Diagnostics> {
    match &mut cli.command {
        Command::Check(plan)
        | Command::Plan { plan, .. }
        | Command::Graph { plan, .. }
        | Command::Deploy(DeployArgs { plan, .. })
        | Command::Simulate(SimulateArgs { plan, .. }) => {
            crate::commands::vault::open_for_plan(plan, settings.vault_key_file.as_deref())
        }
        _ => Ok(()),
    }
}

/// Prints an error to stderr and picks its exit code: input problems are 2.
fn report(error: &anyhow::Error) -> Exit {
    if let Some(diagnostics) = error.downcast_ref::<Diagnostics>() {
        eprintln!("{diagnostics}");
        return Exit::Invalid;
    }
    if let Some(lock) = error.downcast_ref::<crate::state::lock::LockError>() {
        eprintln!("error: {lock}");
        return match lock {
            crate::state::lock::LockError::Io(..) | crate::state::lock::LockError::Database(_) => {
                Exit::Invalid
            }
            _ => Exit::Locked,
        };
    }
    eprintln!("error: {error:#}");
    Exit::Invalid
}
