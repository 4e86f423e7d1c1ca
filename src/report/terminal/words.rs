//! The words the terminal reporter's bars show: a region's and the run's counts, what the
//! run waits for, whether it goes on, and the ETA. Plain functions of the counts, so the
//! wording is tested without a terminal.

use crate::events::HostOutcome;
use crate::report::Palette;
use std::time::Duration;

#[derive(Debug, Default)]
pub(super) struct Counts {
    pub(super) ok: usize,
    pub(super) rolled_back: usize,
    pub(super) rollback_failed: usize,
    /// Hosts with a failed task.
    pub(super) failed: usize,
    pub(super) running: usize,
}

impl Counts {
    pub(super) fn message(&self, palette: &Palette) -> String {
        let mut parts = Vec::new();
        if self.running > 0 {
            parts.push(format!("{} running", self.running));
        }
        if self.failed > 0 {
            parts.push(palette.red(&format!("{} failed", self.failed)));
        }
        if self.rolled_back > 0 {
            parts.push(palette.yellow(&format!("{} rolled back", self.rolled_back)));
        }
        if self.rollback_failed > 0 {
            parts.push(palette.red(&format!("{} ROLLBACK FAILED", self.rollback_failed)));
        }
        parts.join(" · ")
    }

    pub(super) fn count(&mut self, outcome: HostOutcome, delta: isize) {
        let slot = match outcome {
            HostOutcome::Ok => &mut self.ok,
            HostOutcome::RolledBack => &mut self.rolled_back,
            HostOutcome::RollbackFailed => &mut self.rollback_failed,
            HostOutcome::Failed
            | HostOutcome::Cancelled
            | HostOutcome::Incomplete
            | HostOutcome::Unreachable => return,
        };
        *slot = slot.saturating_add_signed(delta);
    }
}

/// The words after a region's bar: `wave canary · 2 running`, `done` (every host ok),
/// `ended · 1 failed · 4 rolled back`, `not run` (no host started), `ended · 4 not run`.
pub(super) fn region_words(
    size: u64,
    done: u64,
    not_run: u64,
    wave: &str,
    counts: &Counts,
    palette: &Palette,
) -> String {
    let mut parts = Vec::new();
    let ended = counts.running == 0 && done + not_run >= size;
    if ended && not_run >= size {
        return palette.dim("not run");
    }
    if ended && counts.ok as u64 >= size {
        parts.push(palette.green("done"));
    } else if ended {
        parts.push("ended".to_string());
    } else if !wave.is_empty() {
        parts.push(format!("wave {wave}"));
    }
    let counts = counts.message(palette);
    if !counts.is_empty() {
        parts.push(counts);
    }
    if not_run > 0 {
        parts.push(palette.dim(&format!("{not_run} not run")));
    }
    parts.join(" · ")
}

/// What the run waits for, in the overall bar's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Waiting {
    /// A wave's soak (`pause:`), until this wall-clock time (`HH:MM:SS`).
    Soak { wave: String, until: String },
    /// A person's approval of a wave's gate.
    Approval { wave: String },
    /// A wave's change window, read in `zone`, opening at `opens` (`HH:MM:SS`).
    Window {
        wave: String,
        zone: String,
        opens: Option<String>,
    },
    /// The checks a gate without a soak runs right before its approval question.
    Checks { wave: String },
}

impl Waiting {
    pub(super) fn words(&self) -> String {
        match self {
            Waiting::Soak { wave, until } => format!("{wave} soaking until {until}"),
            Waiting::Approval { wave } => format!("waiting for approval of {wave}"),
            Waiting::Window { wave, zone, opens } => match opens {
                Some(opens) => {
                    format!("{wave} waiting for the change window ({zone}, opens at {opens})")
                }
                None => format!("{wave} waiting for the change window ({zone})"),
            },
            Waiting::Checks { wave } => {
                format!("checks of {wave} running before its approval question")
            }
        }
    }
}

/// Whether the run goes on, is paused (`pony pause`) or stops (an abort, an interrupt, a
/// halt, a rollback of every touched host): said on the overall bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Activity {
    Going,
    /// `user@host` of the `pony pause`.
    Paused {
        by: String,
    },
    /// What [`super::stopping_words`] says.
    Stopping {
        words: &'static str,
    },
}

/// The time left for the hosts still to go, at the pace of the working time so far
/// (waits left out); `None` before any host ended, while the run waits, and once no
/// host is left to go.
pub fn eta(worked: Duration, ended: u64, left: u64, waiting: bool) -> Option<Duration> {
    if ended == 0 || left == 0 || waiting {
        return None;
    }
    Some(worked.mul_f64(left as f64 / ended as f64))
}

/// `01:02:03`: an ETA that reads like the elapsed time beside it.
pub(super) fn clock_text(duration: Duration) -> String {
    let secs = duration.as_secs();
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The words after the overall bar: the counts, `N not run`, what the run waits for (with
/// the time left of a timed wait), `paused`, and the ETA when there is one.
pub(super) fn overall_words(
    counts: &Counts,
    not_run: u64,
    waiting: Option<(&Waiting, Option<Duration>)>,
    activity: &Activity,
    eta: Option<Duration>,
    palette: &Palette,
) -> String {
    let mut parts = Vec::new();
    let counts = counts.message(palette);
    if !counts.is_empty() {
        parts.push(counts);
    }
    if not_run > 0 {
        parts.push(palette.dim(&format!("{not_run} not run")));
    }
    match activity {
        Activity::Going => {}
        Activity::Paused { by } => {
            parts.push(palette.yellow(&format!("paused by {by}: no new host starts")))
        }
        Activity::Stopping { words } => parts.push(palette.yellow(words)),
    }
    if let Some((waiting, left)) = waiting {
        let left = left.map(|left| {
            format!(
                " ({} left)",
                humantime::format_duration(Duration::from_secs(left.as_secs()))
            )
        });
        parts.push(palette.yellow(&format!("{}{}", waiting.words(), left.unwrap_or_default())));
    }
    if let Some(eta) = eta {
        parts.push(format!("ETA {}", clock_text(eta)));
    }
    parts
        .iter()
        .map(|p| format!("· {p}"))
        .collect::<Vec<_>>()
        .join(" ")
}
