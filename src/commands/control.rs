//! `pony pause|continue|abort|approve RUN`: one command to a running run through its
//! control socket ([`crate::control`]), and its answer. Exit 0 when the run took it, 2
//! when it refused it (the answer says why), 5 when the run is not running.

use crate::cli::{GlobalOptions, OutputFormat};
use crate::control::SendError;
use crate::exec::control::ControlCommand;
use crate::exit::Exit;
use crate::state::runs::{self, RunState};

pub fn run(global: &GlobalOptions, run: &str, command: ControlCommand) -> anyhow::Result<Exit> {
    let state_dir = &global.state_dir;
    let id = runs::resolve(state_dir, run).map_err(|e| {
        let hint = match e {
            runs::ResolveError::Ambiguous { .. } => "give more of the run id",
            _ => "`pony history` lists the runs",
        };
        anyhow::anyhow!("{e}\n  hint: {hint}")
    })?;
    let folder = runs::runs_dir(state_dir).join(&id);
    let typed = command.describe();
    let reply = match crate::control::send(&folder, &command) {
        Ok(reply) => reply,
        Err(SendError::NotRunning(error)) => {
            not_running(global, &id, &typed, &error);
            return Ok(Exit::NotRunning);
        }
        Err(error @ SendError::NoAnswer(_)) => {
            eprintln!(
                "error: `{typed}` to run {id}: {error}\n  hint: `pony status {id}` shows whether it took the command (the journal records every command it took)"
            );
            return Ok(Exit::NotRunning);
        }
    };
    if global.output == OutputFormat::Json {
        println!(
            "{}",
            serde_json::json!({
                "run_id": id,
                "command": typed,
                "accepted": reply.accepted,
                "message": reply.message,
            })
        );
    } else if reply.accepted {
        println!("run {id}: {}", reply.message);
    } else {
        eprintln!("error: run {id} refused `{typed}`: {}", reply.message);
    }
    Ok(if reply.accepted {
        Exit::Success
    } else {
        Exit::Invalid
    })
}

/// Says that the run is not running, how it stands, and what goes on from there.
fn not_running(global: &GlobalOptions, id: &str, typed: &str, error: &std::io::Error) {
    let detail = runs::read(&global.state_dir, id);
    let summary = &detail.summary;
    let state = match summary.state {
        // Its journal says running, yet nothing listens: a run of an older pony, or one
        // whose socket could not be made.
        RunState::Running => format!(
            "its process (pid {}) takes no commands: {error}",
            summary.pid.unwrap_or_default()
        ),
        _ => summary.result.clone(),
    };
    let hint = match summary.outcome {
        Some(crate::events::RunOutcome::AwaitingApproval) => format!(
            "it stopped at an approve: gate; continue it with `pony resume {id} --approve WAVE`"
        ),
        _ if summary.state == RunState::Stopped => {
            format!(
                "continue it with `pony resume {id}`, or roll it back with `pony rollback {id}`"
            )
        }
        _ => format!("`pony status {id}` shows how it ended"),
    };
    if global.output == OutputFormat::Json {
        println!(
            "{}",
            serde_json::json!({
                "run_id": id,
                "command": typed,
                "accepted": false,
                "message": format!("run {id} is not running ({state})"),
            })
        );
    }
    eprintln!("error: run {id} is not running ({state}); `{typed}` goes only to a running run\n  hint: {hint}");
}
