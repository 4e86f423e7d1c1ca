//! Dispatch from the parsed command line to `commands/`, and the one place where an
//! outcome or error becomes an exit code.

use crate::cli::{Cli, Command, DeployArgs};
use crate::control::ControlCommand;
use crate::diag::Diagnostics;
use crate::exit::Exit;

/// Runs a parsed command line and returns the process exit code.
pub fn run(mut cli: Cli) -> Exit {
    resolve_run_options(&mut cli);
    crate::logging::init(&cli.global);
    crate::hint::set(&cli.global);
    if let Err(errors) = read_secret_sources(&mut cli) {
        return report(&errors.into());
    }
    let hosts = match &cli.command {
        Command::Inventory { hosts, .. }
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
            crate::commands::plan::run(&cli.global.state_dir, plan, *estimate)
        }
        Command::Graph {
            plan,
            format,
            tasks,
        } => crate::commands::graph::run(plan, *format, *tasks),
        Command::Inventory { hosts, format } => {
            crate::commands::inventory::run(&hosts.inventory, hosts.limit.as_deref(), *format)
        }
        Command::Deploy(args) => crate::commands::deploy::run(&cli.global, args),
        Command::Simulate(args) => crate::commands::simulate::run(&cli.global, args),
        Command::Resume {
            run,
            approve,
            secret_vars,
            accept_new_host_keys,
            skip_failed_wave,
            ..
        } => crate::commands::resume::resume(
            &cli.global,
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
            &cli.global,
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
            &cli.global,
            run,
            limit.as_deref(),
            secret_vars,
            *yes,
            *accept_new_host_keys,
        ),
        Command::Pause { run } => {
            crate::commands::control::run(&cli.global, run, ControlCommand::Pause)
        }
        Command::Continue { run } => {
            crate::commands::control::run(&cli.global, run, ControlCommand::Continue)
        }
        Command::Abort { run, rollback } => crate::commands::control::run(
            &cli.global,
            run,
            ControlCommand::Abort {
                rollback: *rollback,
            },
        ),
        Command::Approve { run, wave } => crate::commands::control::run(
            &cli.global,
            run,
            ControlCommand::Approve { wave: wave.clone() },
        ),
        Command::Status { run } => crate::commands::status::run(&cli.global, run.as_deref()),
        Command::Watch {
            notify,
            notify_timeout,
            every,
        } => crate::commands::watch::run(&cli.global, notify, *notify_timeout, *every),
        Command::History { limit } => crate::commands::history::run(&cli.global, *limit),
        Command::Unlock { inventory, force } => {
            crate::commands::resume::unlock(&cli.global, inventory, *force)
        }
        Command::Ping {
            hosts,
            accept_new_host_keys,
            timeout,
            handshakes,
            ..
        } => crate::commands::ping::run(
            &cli.global,
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
            &cli.global,
            &hosts.inventory,
            hosts.limit.as_deref(),
            *accept_new_host_keys,
            *timeout,
            *handshakes,
            command,
        ),
        Command::Db { action } => crate::commands::db::run(&cli.global, action),
        Command::Completions { shell } => crate::commands::completions::completions(*shell),
        Command::Man => crate::commands::completions::man(),
        Command::Lab { action } => crate::commands::lab::run(&cli.global.state_dir, action),
    };
    match outcome {
        Ok(exit) => exit,
        Err(error) => report(&error),
    }
}

/// Copies the options only some commands take (`--junit`, `--connections`) into the
/// settings every command reads, once, before any work.
fn resolve_run_options(cli: &mut Cli) {
    let (junit, connections, pace, approval_wait) = match &cli.command {
        Command::Deploy(DeployArgs { run_options, .. })
        | Command::Resume { run_options, .. }
        | Command::Join { run_options, .. }
        | Command::Rollback { run_options, .. } => (
            run_options.junit.clone(),
            run_options.connections,
            run_options.rollback_pace,
            run_options.approval_wait,
        ),
        Command::Ping { connections, .. } | Command::Exec { connections, .. } => {
            (None, *connections, None, None)
        }
        _ => (None, None, None, None),
    };
    if let Command::Deploy(DeployArgs { run_options, .. })
    | Command::Resume { run_options, .. }
    | Command::Join { run_options, .. }
    | Command::Rollback { run_options, .. } = &cli.command
    {
        cli.global.regions = run_options.regions.clone();
        cli.global.controller = run_options.controller.clone();
        cli.global.on_controller_loss = run_options.on_controller_loss;
        cli.global.progress_every = Some(run_options.progress_every);
        cli.global.notify = run_options
            .notify
            .iter()
            .map(|command| crate::notify::Notifier {
                command: command.clone(),
                timeout: run_options.notify_timeout,
            })
            .collect();
    }
    cli.global.rollback_pace = pace;
    cli.global.approval_wait = approval_wait.filter(|wait| !wait.is_zero());
    cli.global.junit = junit;
    cli.global.connections = connections;
}

/// Replaces `--secret-var KEY=@FILE` and `KEY=env:VAR` by the values they name, before
/// anything else looks at them; every source that cannot be read is an input error.
fn read_secret_sources(cli: &mut Cli) -> Result<(), Diagnostics> {
    let secret_vars = match &mut cli.command {
        Command::Check(plan)
        | Command::Plan { plan, .. }
        | Command::Graph { plan, .. }
        | Command::Deploy(DeployArgs { plan, .. }) => &mut plan.secret_vars,
        Command::Resume { secret_vars, .. } | Command::Rollback { secret_vars, .. } => secret_vars,
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
