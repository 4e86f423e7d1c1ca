//! Plain lines for CI logs and `-q`: one line per host outcome, failures with their output
//! tail, gates, waves and rollbacks, a progress line at most every 10 s, and the summary
//! the terminal reporter prints too. No colour unless asked (`--color always`).

use super::summary::{self, SummaryNotes};
use super::{event_line, GateNotes, Palette, Reporter};
use crate::events::{Event, HostOutcome};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::Duration;
// tokio's clock, so that tests can pause and advance it; outside a paused runtime it is
// the system's monotonic clock.
use tokio::time::Instant;

pub use super::{indent, outcome_word};

/// At most one progress line this often, unless `--progress-every` says otherwise.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// Output lines shown under a failure (the journal and the host's log keep more).
const TAIL_LINES: usize = 10;

pub struct PlainReporter {
    out: Box<dyn Write + Send>,
    palette: Palette,
    quiet: bool,
    total_hosts: usize,
    /// The latest outcome of every host that has one (a host may go ok → rolled back).
    outcomes: HashMap<String, HostOutcome>,
    /// Hosts with a failed task: the progress line counts hosts, and one host may fail
    /// several tasks (each render of a release whose folder cannot be written).
    failed_hosts: HashSet<String>,
    running: usize,
    started: Instant,
    /// When the current gate wait began, and the waits before: the time left is reckoned
    /// from working time only.
    wait_began: Option<Instant>,
    waited: Duration,
    progress_every: Duration,
    last_progress: Instant,
    tally: SummaryNotes,
    gates: GateNotes,
    /// What the run does besides its tasks, said at the end of the progress line:
    /// `paused by ann@ctl`, `stopping: abort in progress, …` (see
    /// [`super::stopping_words`]).
    doing: Option<String>,
}

impl PlainReporter {
    pub fn new(
        out: Box<dyn Write + Send>,
        quiet: bool,
        palette: Palette,
        progress_every: Duration,
    ) -> Self {
        PlainReporter {
            out,
            palette,
            quiet,
            total_hosts: 0,
            outcomes: HashMap::new(),
            failed_hosts: HashSet::new(),
            running: 0,
            started: Instant::now(),
            wait_began: None,
            waited: Duration::ZERO,
            progress_every,
            last_progress: Instant::now(),
            tally: SummaryNotes::default(),
            gates: GateNotes::default(),
            doing: None,
        }
    }

    fn line(&mut self, text: &str) {
        let _ = writeln!(self.out, "{text}");
        let _ = self.out.flush();
    }

    /// A gate starts or stops holding the run.
    fn waiting(&mut self, waiting: bool) {
        match (waiting, self.wait_began) {
            (true, None) => self.wait_began = Some(Instant::now()),
            (false, Some(began)) => {
                self.waited += began.elapsed();
                self.wait_began = None;
            }
            _ => {}
        }
    }

    fn progress(&mut self) {
        if self.quiet || self.last_progress.elapsed() < self.progress_every {
            return;
        }
        self.last_progress = Instant::now();
        // Hosts that never started are `not run`, never done.
        let not_run = self
            .outcomes
            .values()
            .filter(|o| **o == HostOutcome::Cancelled)
            .count();
        let done = self.outcomes.len() - not_run;
        let elapsed = self.started.elapsed();
        let waits = self.waited + self.wait_began.map_or(Duration::ZERO, |b| b.elapsed());
        let left = self.total_hosts.saturating_sub(done + not_run);
        let eta = if done > 0 && left > 0 && self.wait_began.is_none() {
            let worked = elapsed.saturating_sub(waits);
            let left = worked.mul_f64(left as f64 / done as f64);
            format!(", about {} left", crate::duration::short(left))
        } else {
            String::new()
        };
        let not_run = if not_run > 0 {
            format!(", {not_run} not run")
        } else {
            String::new()
        };
        let rolled_back = self
            .outcomes
            .values()
            .filter(|o| **o == HostOutcome::RolledBack)
            .count();
        let rolled_back = if rolled_back > 0 {
            format!(", {rolled_back} rolled back")
        } else {
            String::new()
        };
        let doing = self
            .doing
            .as_ref()
            .map(|doing| format!("; {doing}"))
            .unwrap_or_default();
        let text = format!(
            "progress: {done}/{} hosts done{not_run}, {} failed{rolled_back}, {} tasks running, {} elapsed{eta}{doing}",
            self.total_hosts,
            self.failed_hosts.len(),
            self.running,
            crate::duration::short(elapsed),
        );
        self.line(&text);
    }
}

/// What `-q` still prints besides the summary and the hosts that did not end ok: the
/// lines a person must act on or know of. Failures (tasks, checks, waves, budgets),
/// rollbacks, stops (a halt, an interrupt, a lost controller, a command from another
/// shell) and a gate waiting for someone's approval (without that line a quiet CI job
/// that waits looks hung). Not the routine: the run's start, waves starting, gates
/// soaking, waiting for a change window or passing, checks that pass, progress lines.
fn needs_a_person(event: &Event) -> bool {
    match event {
        Event::RunStarted { .. }
        | Event::WaveStarted { .. }
        | Event::GatePassed { .. }
        | Event::VerifyCheck(crate::events::VerifyCheck { ok: true, .. }) => false,
        Event::GateWaiting { reason, .. } => *reason == crate::events::GateReason::Approve,
        _ => true,
    }
}

impl Reporter for PlainReporter {
    fn event(&mut self, event: &Event) {
        self.tally.observe(event);
        self.gates.observe(event);
        if matches!(event, Event::GateWaiting { .. }) {
            self.waiting(true);
        }
        if let Some(lines) = self.gates.lines(event) {
            for line in lines {
                self.line(&line);
            }
            return;
        }
        match event {
            Event::Stopped {
                region: None,
                reason,
                rollback,
            } => {
                let rolling_back = self.doing.as_deref() == Some(super::stopping_words("", true));
                self.doing =
                    Some(super::stopping_words(reason, *rollback || rolling_back).to_string());
            }
            Event::Control(crate::events::Control {
                command,
                accepted: true,
                user,
                host,
                ..
            }) if !matches!(&self.doing, Some(d) if d.starts_with("stopping")) => {
                match command.as_str() {
                    "pause" => self.doing = Some(format!("paused by {user}@{host}")),
                    "continue" => self.doing = None,
                    _ => {}
                }
            }
            _ => {}
        }
        match event {
            Event::RunStarted { hosts, .. } => {
                self.total_hosts = *hosts;
                self.started = Instant::now();
                self.last_progress = Instant::now();
                if let Some(text) =
                    event_line(event, &self.palette, TAIL_LINES).filter(|_| !self.quiet)
                {
                    self.line(&text);
                }
            }
            Event::TaskStarted { .. } => {
                self.running += 1;
                self.waiting(false);
                self.progress();
            }
            Event::TaskFinished { .. } => {
                self.running = self.running.saturating_sub(1);
                self.progress();
            }
            Event::TaskFailed { task, .. } => {
                self.running = self.running.saturating_sub(1);
                self.failed_hosts.insert(task.host.clone());
                if let Some(text) = event_line(event, &self.palette, TAIL_LINES) {
                    self.line(&text);
                }
            }
            Event::TaskSkipped { .. } => self.progress(),
            Event::HostFinished {
                host,
                region,
                cluster,
                outcome,
            } => {
                self.outcomes.insert(host.clone(), *outcome);
                if !self.quiet || *outcome != HostOutcome::Ok {
                    let word = format!("{:<15}", outcome_word(*outcome));
                    let word = match outcome {
                        HostOutcome::Ok => self.palette.green(&word),
                        HostOutcome::Cancelled => self.palette.dim(&word),
                        HostOutcome::RolledBack => self.palette.yellow(&word),
                        _ => self.palette.red(&word),
                    };
                    self.line(&format!("{word} {host} ({region}/{cluster})"));
                }
                self.progress();
            }
            Event::GatePassed { .. } => {
                self.waiting(false);
                if !self.quiet {
                    if let Some(text) = event_line(event, &self.palette, TAIL_LINES) {
                        self.line(&text);
                    }
                }
            }
            _ if self.quiet && !needs_a_person(event) => {}
            Event::Summary { .. } => {
                for line in summary::render(event, &self.tally, &self.palette) {
                    self.line(&line);
                }
            }
            _ => {
                if let Some(text) = event_line(event, &self.palette, TAIL_LINES) {
                    self.line(&text);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
