//! The one line (or few) both human reporters, terminal and plain, print for the events
//! that need attention or mark the run's progress.

use super::{indent, label_step, last_lines, local_clock, Palette};
use crate::events::{Event, GateReason, HealthAfter};
use std::time::Duration;

/// The lines both human reporters print for the events that need attention or mark the
/// run's progress (failures, budgets, rollbacks, gates, waves, stops); `None` for the
/// others. `tail` bounds the output lines shown under a failure.
pub fn event_line(event: &Event, palette: &Palette, tail: usize) -> Option<String> {
    match event {
        Event::RunStarted {
            run_id,
            playbook,
            inventory,
            hosts,
            tasks,
            ..
        } => Some(format!(
            "run {run_id}: {playbook} on {inventory}, {hosts} hosts, {tasks} tasks"
        )),
        Event::WaveStarted { wave, hosts } => Some(format!(
            "{} wave {wave} ({hosts} hosts)",
            palette.bold("==")
        )),
        Event::GateWaiting { .. }
        | Event::GatePassed { .. }
        | Event::VerifyCheck(_)
        | Event::WaveFailed { .. } => gate_line(event, palette),
        Event::TaskFailed { .. }
        | Event::BudgetExceeded { .. }
        | Event::RunBudgetExceeded { .. }
        | Event::WaveBudgetExceeded { .. } => failure_line(event, palette, tail),
        Event::RollbackStarted { .. }
        | Event::RollbackTask { .. }
        | Event::RollbackNotAttempted { .. }
        | Event::RollbackFinished { .. } => rollback_line(event, palette),
        Event::HealthChecked(_) => health_line(event, palette),
        Event::Stopped { reason, .. } => Some(format!("== {reason}")),
        Event::ControllerLost(_) => controller_lost_line(event, palette),
        Event::Control(crate::events::Control {
            command,
            user,
            host,
            pid,
            accepted,
            message,
        }) => Some(if *accepted {
            format!("== `pony {command}` from {user}@{host} (pid {pid}): {message}")
        } else {
            format!("== `pony {command}` from {user}@{host} (pid {pid}) refused: {message}")
        }),
        _ => None,
    }
}

/// A wave's gate: waiting (and why), passed, a check after the wave, the wave failed.
fn gate_line(event: &Event, palette: &Palette) -> Option<String> {
    match event {
        Event::GateWaiting {
            wave,
            reason,
            seconds,
            until,
            ..
        } => Some(match reason {
            GateReason::Soak => format!(
                "== gate after wave {wave}: soaking {}{}",
                humantime::format_duration(Duration::from_secs(*seconds)),
                until
                    .as_deref()
                    .and_then(local_clock)
                    .map(|at| format!(", until {at}"))
                    .unwrap_or_default()
            ),
            GateReason::Verify => {
                format!("== gate after wave {wave}: its checks run before the approval question")
            }
            GateReason::Approve if *seconds > 0 => format!(
                "== gate after wave {wave}: waiting up to {} for `{}`",
                humantime::format_duration(Duration::from_secs(*seconds)),
                crate::hint::pony(format_args!("approve RUN {wave}"))
            ),
            GateReason::Approve => format!("== gate after wave {wave}: waiting for approval"),
            GateReason::Window(_) => format!(
                "== wave {wave} waits for its change {reason} (opens in {})",
                humantime::format_duration(Duration::from_secs(*seconds))
            ),
        }),
        Event::GatePassed { wave, .. } => Some(format!("== gate after wave {wave} passed")),
        Event::VerifyCheck(crate::events::VerifyCheck {
            wave,
            check,
            host,
            ok,
            detail,
        }) => Some(if *ok {
            format!("== wave {wave} check {check} on {host}: ok {detail}")
        } else {
            format!(
                "{} wave {wave} check {check} on {host} FAILED: {detail}",
                palette.red("!!")
            )
        }),
        Event::WaveFailed { wave, reason, .. } => Some(format!(
            "{} wave {wave} FAILED: {reason}; its gate does not pass",
            palette.red("!!")
        )),
        _ => None,
    }
}

/// A task failed (with the last `tail` lines of its output), a failure budget exceeded.
fn failure_line(event: &Event, palette: &Palette, tail: usize) -> Option<String> {
    match event {
        Event::TaskFailed {
            task,
            exit_code,
            error,
            stderr_tail,
            attempts,
            ..
        } => {
            let code = exit_code.map(|c| format!("exit {c}, ")).unwrap_or_default();
            let mut text = format!(
                "{} {} [{}] step {}: {code}{error} (after {attempts} attempt(s))",
                palette.red("FAILED"),
                task.host,
                task.region,
                task.step
            );
            let shown = last_lines(stderr_tail, tail);
            if !shown.is_empty() {
                text.push('\n');
                text.push_str(&indent(&shown));
            }
            Some(text)
        }
        Event::BudgetExceeded {
            cluster,
            region,
            failed_hosts,
            max_failures,
            action,
        } => Some(format!(
            "{} cluster {cluster} ({region}): {failed_hosts} failed hosts > max_failures {max_failures}: {action}",
            palette.red("!!")
        )),
        Event::RunBudgetExceeded {
            failed_hosts,
            max_failures_run,
            action,
        } => Some(format!(
            "{} run: {failed_hosts} failed hosts > max_failures_run {max_failures_run}: {action}",
            palette.red("!!")
        )),
        Event::WaveBudgetExceeded {
            wave,
            failed_hosts,
            max_failures,
            action,
        } => Some(format!(
            "{} wave {wave}: {failed_hosts} failed hosts > its max_failures {max_failures}: {action}",
            palette.red("!!")
        )),
        _ => None,
    }
}

/// A rollback started, a step of it failed or was not attempted, it finished.
fn rollback_line(event: &Event, palette: &Palette) -> Option<String> {
    match event {
        Event::RollbackStarted { scope, hosts } => Some(format!(
            "{} of {scope} ({hosts} hosts)",
            palette.yellow("== rollback")
        )),
        Event::RollbackTask {
            task,
            ok: false,
            exit_code,
            error,
            ..
        } => {
            let code = exit_code.map(|c| format!("exit {c}: ")).unwrap_or_default();
            Some(format!(
                "{} {} step {}: {code}{}",
                palette.red("!! ROLLBACK FAILED"),
                task.host,
                task.step,
                error.as_deref().unwrap_or("")
            ))
        }
        Event::RollbackNotAttempted {
            task, blocked_by, ..
        } => Some(format!(
            "{} {} step {}: rollback of {} failed",
            palette.red("!! ROLLBACK NOT ATTEMPTED"),
            task.host,
            task.step,
            label_step(blocked_by)
        )),
        Event::RollbackFinished { scope, ok } => Some(if *ok {
            format!("== rollback of {scope} complete")
        } else {
            format!(
                "{} of {scope} INCOMPLETE: a person must look",
                palette.red("!! rollback")
            )
        }),
        _ => None,
    }
}

/// A host's health did not pass after its steps, or did not come back after its rollback.
fn health_line(event: &Event, palette: &Palette) -> Option<String> {
    match event {
        Event::HealthChecked(crate::events::HealthChecked {
            host,
            after: HealthAfter::Deploy,
            ok: false,
            error,
            ..
        }) => Some(format!(
            "{} {host}: its steps all ran, but its health does not pass: {}",
            palette.red("FAILED"),
            error.as_deref().unwrap_or("")
        )),
        Event::HealthChecked(crate::events::HealthChecked {
            host,
            checked: true,
            ok: false,
            error,
            ..
        }) => Some(format!(
            "{} {host}: its rollback ran, but its health did not come back: {}",
            palette.red("!! ROLLBACK FAILED"),
            error.as_deref().unwrap_or("")
        )),
        _ => None,
    }
}

/// Another controller of a split run is lost, and what this one does about it.
fn controller_lost_line(event: &Event, palette: &Palette) -> Option<String> {
    match event {
        Event::ControllerLost(crate::events::ControllerLost {
            lost_controller: controller,
            machine,
            pid,
            regions,
            policy,
            resume,
        }) => {
            let doing = if policy == "stop" {
                "stopping (on_controller_loss: stop)"
            } else {
                "waiting for its regions (on_controller_loss: wait)"
            };
            Some(format!(
                "{} controller {controller} (pid {pid} on {machine}) is lost: its lease on {} expired; {doing}; take them over with `{resume}`",
                palette.red("!!"),
                regions.join(", ")
            ))
        }
        _ => None,
    }
}
