//! The settings of one pony process: what the command line and pony's environment
//! variables ask for, resolved once by [`crate::app`] before any work, as plain values.
//!
//! Commands read them here. The modules below the commands (report, term, logging,
//! hint, notify) get the few values they need from them and never see the command
//! line's clap types, so the command line can import them and not the other way round.
//! Options that only some commands take (`--junit`, `--regions`, …) are here too, empty
//! for the commands without them, so that code far from the command line reads one value.

use crate::notify::Notifier;
use crate::playbook::{OnControllerLoss, RollbackPace};
use crate::report::{Mode, OutputFormat, ReportOptions};
use crate::term::ColorChoice;
use std::path::PathBuf;
use std::time::Duration;

/// Hidden knob for benchmarks and demos: `PONY_PROGRESS=bars` draws the progress bars even
/// when stdout is not a terminal, `PONY_PROGRESS=plain` never draws them.
pub const PROGRESS_ENV: &str = "PONY_PROGRESS";

/// Everything a command is told, as plain values.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Where runs, journals, logs, locks and local hosts' directories live (`--state-dir`).
    pub state_dir: PathBuf,
    /// The state database (`--state postgres://…`), if any.
    pub state: Option<String>,
    /// How long an inventory's database lease lasts without a heartbeat (`--lease`).
    pub lease: Duration,
    /// `--output`.
    pub output: OutputFormat,
    /// `--color`.
    pub color: ColorChoice,
    /// How many `-v` were given.
    pub verbose: u8,
    /// `-q`: only errors and the final summary.
    pub quiet: bool,
    /// What `PONY_PROGRESS` forces (bars or plain lines), if anything.
    pub forced_mode: Option<Mode>,
    /// `PONY_STATE_DIR` and `PONY_STATE` as the environment has them: a hint leaves out
    /// what the next command in that shell gets from there again.
    pub env_state_dir: Option<std::ffi::OsString>,
    pub env_state: Option<String>,
    /// `--junit FILE` (deploy, resume, join, rollback).
    pub junit: Option<PathBuf>,
    /// `--connections` (deploy, resume, join, rollback, ping, exec).
    pub connections: Option<usize>,
    /// `--rollback-pace` (deploy, resume, join, rollback).
    pub rollback_pace: Option<RollbackPace>,
    /// `--approval-wait` (deploy, resume, join, rollback); zero is no wait, `None`.
    pub approval_wait: Option<Duration>,
    /// `--regions` (deploy, join, resume): the regions this controller works on.
    pub regions: Option<String>,
    /// This controller's name when the run is split by region (`--regions`):
    /// `--controller`, else MACHINE:PID; `None` for a run with one controller.
    pub controller: Option<String>,
    /// `--on-controller-loss` (deploy, join, resume).
    pub on_controller_loss: Option<OnControllerLoss>,
    /// `--notify` with `--notify-timeout`.
    pub notify: Vec<Notifier>,
    /// `--progress-every` (plain output's interval).
    pub progress_every: Option<Duration>,
    /// `--vault-key-file` (a run with a vault needs its key, resume and rollback too).
    pub vault_key_file: Option<PathBuf>,
}

impl Settings {
    /// What the reporters of a run are chosen and set up by.
    pub fn report_options(&self) -> ReportOptions {
        ReportOptions {
            output: self.output,
            color: self.color,
            quiet: self.quiet,
            forced_mode: self.forced_mode,
            progress_every: self.progress_every,
            junit: self.junit.clone(),
            controller: self.controller.clone(),
        }
    }

    /// What selects this process's state, for the commands that hints print.
    pub fn state_source(&self) -> crate::hint::StateSource<'_> {
        crate::hint::StateSource {
            state_dir: &self.state_dir,
            state: self.state.as_deref(),
            env_state_dir: self.env_state_dir.as_deref(),
            env_state: self.env_state.as_deref(),
        }
    }
}

/// The mode a `PONY_PROGRESS` value forces: `bars` or `plain`; anything else, none.
pub fn forced_mode(value: Option<&str>) -> Option<Mode> {
    match value {
        Some("bars") => Some(Mode::Bars),
        Some("plain") => Some(Mode::Plain),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bars_and_plain_force_a_mode() {
        assert_eq!(forced_mode(Some("bars")), Some(Mode::Bars));
        assert_eq!(forced_mode(Some("plain")), Some(Mode::Plain));
        assert_eq!(forced_mode(Some("json")), None);
        assert_eq!(forced_mode(None), None);
    }
}
