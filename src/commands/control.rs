//! `pony pause|continue|abort|approve RUN`: one command to a running run through its
//! control socket (`state/local/control.rs`), or with `--state postgres://…` through the
//! database to every controller of the run (`state/pg/control.rs`), and the
//! answer. Exit 0 when the run took it, 2 when it refused it (the answer says why), 5
//! when the run is not running.

use crate::control::{Answer, ControlCommand, ControlReply};
use crate::exit::Exit;
use crate::hint::pony as hint;
use crate::report::OutputFormat;
use crate::settings::Settings;
use crate::state::backend::Access;
use crate::state::backend::Delivery;
use crate::state::runs::{self, RunState};
use crate::state::store::Store;

pub fn run(settings: &Settings, run: &str, command: ControlCommand) -> anyhow::Result<Exit> {
    let store = Store::open(&super::store_settings(settings), Access::Control)?;
    let id = store.resolve(run).map_err(|e| {
        let hint = match e {
            runs::ResolveError::Ambiguous { .. } => "give more of the run id".to_string(),
            _ => format!("`{}` lists the runs", hint("history")),
        };
        anyhow::anyhow!("{e}\n  hint: {hint}")
    })?;
    let typed = command.describe();
    let reply = match store.send_control(&id, &command)? {
        Delivery::NotRunning { why } => {
            not_running(settings, &store, &id, &typed, &why);
            return Ok(Exit::NotRunning);
        }
        Delivery::Denied(error) => {
            eprintln!(
                "error: `{typed}` to run {id}: {error}\n  hint: send it as that user (sudo -u …), or follow it with `{}`",
                hint(format_args!("status {id}"))
            );
            return Ok(Exit::Invalid);
        }
        Delivery::NoAnswer(error) => {
            eprintln!(
                "error: `{typed}` to run {id}: {error}\n  hint: `{}` shows whether it took the command (the journal records every command it took)",
                hint(format_args!("status {id}"))
            );
            return Ok(Exit::NotRunning);
        }
        Delivery::Answered {
            answers,
            gone,
            silent,
        } => {
            for name in &gone {
                eprintln!(
                    "warning: controller {name} of run {id} stopped before it answered `{typed}`"
                );
            }
            for name in &silent {
                eprintln!(
                    "warning: controller {name} of run {id} did not answer `{typed}` within a minute\n  hint: `{}` shows whether it took the command",
                    hint(format_args!("status {id}"))
                );
            }
            // Every controller it was sent to stopped or stayed silent.
            if answers.is_empty() {
                return Ok(Exit::NotRunning);
            }
            combined(&answers)
        }
    };
    if settings.output == OutputFormat::Json {
        print_json(&id, &typed, reply.accepted, &reply.message);
    } else if reply.accepted {
        crate::outln!("run {id}: {}", reply.message);
    } else {
        eprintln!("error: run {id} refused `{typed}`: {}", reply.message);
    }
    Ok(if reply.accepted {
        Exit::Success
    } else {
        Exit::Invalid
    })
}

/// Several controllers' answers as one: taken when every one took it; one controller's
/// answer as it gave it, several prefixed with their names.
fn combined(answers: &[Answer]) -> ControlReply {
    match answers {
        [one] => one.reply.clone(),
        _ => ControlReply {
            accepted: !answers.is_empty() && answers.iter().all(|a| a.reply.accepted),
            message: answers
                .iter()
                .map(|a| {
                    let verdict = if a.reply.accepted { "" } else { "refused: " };
                    format!(
                        "\n  controller {}: {verdict}{}",
                        a.controller, a.reply.message
                    )
                })
                .collect(),
        },
    }
}

/// Says that the run is not running, how it stands, and what goes on from there.
fn not_running(settings: &Settings, store: &Store, id: &str, typed: &str, error: &str) {
    let detail = store.read_summary(id);
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
        Some(crate::events::RunOutcome::AwaitingApproval) => {
            let wave = summary.awaiting_wave.as_deref().unwrap_or("WAVE");
            format!(
                "it stopped at the approve: gate of wave {wave}; continue it with `{}`, or roll it back with `{}`",
                hint(format_args!("resume {id} --approve {wave}")),
                hint(format_args!("rollback {id}"))
            )
        }
        // Stopped at a gate that did not pass (a failed wave), or with its controller gone.
        _ if summary.state == RunState::Stopped || detail.stopped_wave.is_some() => {
            format!(
                "continue it with `{}`, or roll it back with `{}`",
                hint(format_args!("resume {id}")),
                hint(format_args!("rollback {id}"))
            )
        }
        _ => format!("`{}` shows how it ended", hint(format_args!("status {id}"))),
    };
    if settings.output == OutputFormat::Json {
        print_json(
            id,
            typed,
            false,
            &format!("run {id} is not running ({state})"),
        );
    }
    eprintln!("error: run {id} is not running ({state}); `{typed}` goes only to a running run\n  hint: {hint}");
}

/// The answer as one JSON line (`--output json`), whether the run took the command,
/// refused it or was not running.
fn print_json(id: &str, typed: &str, accepted: bool, message: &str) {
    crate::outln!(
        "{}",
        serde_json::json!({
            "run_id": id,
            "command": typed,
            "accepted": accepted,
            "message": message,
        })
    );
}
