//! The terminal reporter (indicatif): one bar per region (hosts that ran and ended, of its
//! hosts; the wave it is in, tasks running, failures, rollbacks, hosts never started as
//! `not run`) and an overall bar with elapsed time, what the run is doing or waits for
//! (`stopping: abort in progress`, `paused by ann@ctl`, `canary soaking until 14:05:10`,
//! `waiting for approval of canary`, `world waiting for the change window (UTC, opens at
//! 02:00:00)`) and an ETA that leaves waits out.
//! Failures, budget breaches, rollbacks, gates and waves are printed above the bars as they
//! happen; tracing's log lines go through the same [`MultiProgress`] (see
//! [`crate::term`]) so that nothing garbles the bars. At the end the bars stay on screen
//! in their final state and the summary (shared with the plain reporter) follows.

use super::summary::{self, SummaryNotes};
use super::{event_line, GateNotes, Palette, Reporter};
use crate::events::{Event, GateReason, HostOutcome};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::{HashMap, HashSet};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Output lines shown under a failure above the bars (the journal and logs keep more).
const TAIL_LINES: usize = 5;
/// Redraws per second at most.
const REFRESH_HZ: u8 = 10;
/// How often the overall bar redraws on its own, so elapsed time moves during gates.
const TICK: Duration = Duration::from_millis(500);
/// The bars are brought up to date at most this often: counting an event is cheap, but
/// each indicatif update renders its bar's line (and asks the terminal for its width).
const FLUSH_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
struct Counts {
    ok: usize,
    rolled_back: usize,
    rollback_failed: usize,
    /// Hosts with a failed task.
    failed: usize,
    running: usize,
}

impl Counts {
    fn message(&self, palette: &Palette) -> String {
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

    fn count(&mut self, outcome: HostOutcome, delta: isize) {
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

struct RegionBar {
    bar: ProgressBar,
    size: u64,
    /// Hosts that ran and have a final outcome (the bar's position).
    done: u64,
    /// Hosts that ended without starting (`not run`): never drawn as done.
    not_run: u64,
    wave: String,
    counts: Counts,
    failing: bool,
    /// What the bar shows now (it is only touched when this changes).
    shown: (u64, String),
}

/// The words after a region's bar: `wave canary · 2 running`, `done` (every host ok),
/// `ended · 1 failed · 4 rolled back`, `not run` (no host started), `ended · 4 not run`.
fn region_words(
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
enum Waiting {
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
    fn words(&self) -> String {
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
enum Activity {
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
fn eta(worked: Duration, ended: u64, left: u64, waiting: bool) -> Option<Duration> {
    if ended == 0 || left == 0 || waiting {
        return None;
    }
    Some(worked.mul_f64(left as f64 / ended as f64))
}

/// `01:02:03`: an ETA that reads like the elapsed time beside it.
fn clock_text(duration: Duration) -> String {
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
fn overall_words(
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

pub struct TerminalReporter {
    palette: Palette,
    multi: MultiProgress,
    overall: Option<ProgressBar>,
    overall_counts: Counts,
    /// Hosts that ran and ended, and hosts that ended without starting.
    overall_done: u64,
    overall_not_run: u64,
    overall_size: u64,
    overall_shown: (u64, String),
    /// Whether the bars lag behind the counts, and when they were last brought up to date.
    dirty: bool,
    last_flush: Instant,
    regions: Vec<RegionBar>,
    region_index: HashMap<String, usize>,
    /// The latest outcome of every host that has one (a host may go ok → rolled back).
    outcomes: HashMap<String, HostOutcome>,
    failed_hosts: HashSet<String>,
    running: HashSet<usize>,
    /// What the run waits for at a gate, if it does.
    gate: Option<Waiting>,
    /// When a timed wait (a `pause:` or a change window) ends, for the countdown.
    gate_until: Option<Instant>,
    /// Going, paused with `pony pause`, or stopping.
    activity: Activity,
    /// When the run started, when its current wait began (a gate or a pause), and the
    /// waits before: the ETA counts working time only.
    started: Instant,
    wait_began: Option<Instant>,
    waited: Duration,
    name_width: usize,
    bar_width: usize,
    /// Digits of the largest host count.
    digits: usize,
    tally: SummaryNotes,
    gates: GateNotes,
    finished: bool,
}

impl TerminalReporter {
    /// Draws on stdout (when it is not a terminal, only if forced with `PONY_PROGRESS=bars`).
    pub fn new(palette: Palette) -> Self {
        console::set_colors_enabled(palette.color);
        console::set_colors_enabled_stderr(palette.color);
        let target = if std::io::stdout().is_terminal() {
            ProgressDrawTarget::stdout_with_hz(REFRESH_HZ)
        } else {
            ProgressDrawTarget::term_like_with_hz(Box::new(console::Term::stdout()), REFRESH_HZ)
        };
        let multi = MultiProgress::with_draw_target(target);
        crate::term::attach_progress(Some(multi.clone()));
        TerminalReporter {
            palette,
            multi,
            overall: None,
            overall_counts: Counts::default(),
            overall_done: 0,
            overall_not_run: 0,
            overall_size: 0,
            overall_shown: (0, String::new()),
            dirty: false,
            last_flush: Instant::now(),
            regions: Vec::new(),
            region_index: HashMap::new(),
            outcomes: HashMap::new(),
            failed_hosts: HashSet::new(),
            running: HashSet::new(),
            gate: None,
            gate_until: None,
            activity: Activity::Going,
            started: Instant::now(),
            wait_began: None,
            waited: Duration::ZERO,
            name_width: 7,
            bar_width: 30,
            digits: 1,
            tally: SummaryNotes::default(),
            gates: GateNotes::default(),
            finished: false,
        }
    }

    fn style(&self, color: &str, suffix: &str) -> ProgressStyle {
        let (n, b, d) = (self.name_width, self.bar_width, self.digits);
        let template = format!(
            "{{prefix:<{n}.bold}} [{{bar:{b}.{color}}}] {{pos:>{d}}}/{{len:<{d}}}{suffix} {{msg}}"
        );
        ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("█▉▊▋▌▍▎▏ ")
    }

    fn region_style(&self, failing: bool) -> ProgressStyle {
        self.style(if failing { "red" } else { "cyan" }, "")
    }

    fn setup(&mut self, regions: &[(String, usize)], hosts: usize) {
        self.name_width = regions
            .iter()
            .map(|(r, _)| r.len())
            .max()
            .unwrap_or(0)
            .max(7);
        // Room for the name, the counts and a short message on the terminal's width.
        let columns = console::Term::stdout().size().1 as usize;
        self.bar_width = columns
            .saturating_sub(self.name_width + 2 * hosts.to_string().len() + 85)
            .clamp(10, 40);
        self.digits = hosts.to_string().len();
        for (name, size) in regions {
            self.add_region(name, *size);
        }
        let overall = self.multi.add(ProgressBar::new(hosts as u64));
        // indicatif's own ETA counts waits (a soak, a pause) as work and climbs to days
        // during one: the ETA is in the message, of working time only.
        overall.set_style(self.style("green", " hosts · {elapsed_precise} elapsed"));
        self.overall_size = hosts as u64;
        self.started = Instant::now();
        overall.set_prefix("overall");
        overall.enable_steady_tick(TICK);
        self.overall = Some(overall);
    }

    fn add_region(&mut self, name: &str, size: usize) -> usize {
        let bar = ProgressBar::new(size as u64);
        let bar = match &self.overall {
            Some(overall) => self.multi.insert_before(overall, bar),
            None => self.multi.add(bar),
        };
        bar.set_style(self.region_style(false));
        bar.set_prefix(name.to_string());
        let waiting = self.palette.dim("waiting");
        bar.set_message(waiting.clone());
        self.regions.push(RegionBar {
            bar,
            size: size as u64,
            done: 0,
            not_run: 0,
            wave: String::new(),
            counts: Counts::default(),
            failing: false,
            shown: (0, waiting),
        });
        self.region_index
            .insert(name.to_string(), self.regions.len() - 1);
        self.regions.len() - 1
    }

    fn region(&mut self, name: &str) -> usize {
        match self.region_index.get(name) {
            Some(&i) => i,
            None => self.add_region(name, 0),
        }
    }

    fn region_message(&self, region: &RegionBar) -> String {
        region_words(
            region.size,
            region.done,
            region.not_run,
            &region.wave,
            &region.counts,
            &self.palette,
        )
    }

    fn overall_message(&self) -> String {
        let now = Instant::now();
        let waiting = self.waiting();
        let worked = now.saturating_duration_since(self.started).saturating_sub(
            self.waited
                + self
                    .wait_began
                    .map_or(Duration::ZERO, |began| now.saturating_duration_since(began)),
        );
        let left = self
            .overall_size
            .saturating_sub(self.overall_done + self.overall_not_run);
        let gate = self.gate.as_ref().map(|gate| {
            let left = self
                .gate_until
                .map(|until| until.saturating_duration_since(now));
            (gate, left)
        });
        overall_words(
            &self.overall_counts,
            self.overall_not_run,
            gate,
            &self.activity,
            eta(worked, self.overall_done, left, waiting),
            &self.palette,
        )
    }

    /// Whether the run waits (at a gate, for a window, paused) rather than works.
    fn waiting(&self) -> bool {
        self.gate.is_some() || matches!(self.activity, Activity::Paused { .. })
    }

    /// The run starts waiting (a gate, a pause) or stops waiting: waits are left out of
    /// the working time the ETA is reckoned from.
    fn note_waiting(&mut self) {
        let waiting = self.waiting();
        match (waiting, self.wait_began) {
            (true, None) => self.wait_began = Some(Instant::now()),
            (false, Some(began)) => {
                self.waited += began.elapsed();
                self.wait_began = None;
            }
            _ => {}
        }
    }

    /// Notes that the bars lag behind; brings them up to date if they were not lately.
    fn changed(&mut self) {
        self.dirty = true;
        if self.last_flush.elapsed() >= FLUSH_EVERY {
            self.flush();
        }
    }

    /// Brings every bar up to date, touching only those whose position or text changed.
    fn flush(&mut self) {
        self.dirty = false;
        self.last_flush = Instant::now();
        for i in 0..self.regions.len() {
            let message = self.region_message(&self.regions[i]);
            let failing_style = (self.regions[i].counts.failed > 0 && !self.regions[i].failing)
                .then(|| self.region_style(true));
            let region = &mut self.regions[i];
            if let Some(style) = failing_style {
                region.failing = true;
                region.bar.set_style(style);
            }
            if region.shown.0 != region.done {
                region.shown.0 = region.done;
                region.bar.set_position(region.done);
            }
            if region.shown.1 != message {
                region.bar.set_message(message.clone());
                region.shown.1 = message;
            }
        }
        let message = self.overall_message();
        if let Some(overall) = &self.overall {
            if self.overall_shown.0 != self.overall_done {
                self.overall_shown.0 = self.overall_done;
                overall.set_position(self.overall_done);
            }
            if self.overall_shown.1 != message {
                overall.set_message(message.clone());
                self.overall_shown.1 = message;
            }
        }
    }

    /// A line above the bars (which are brought up to date first).
    fn println(&mut self, text: &str) {
        if self.dirty {
            self.flush();
        }
        let _ = self.multi.println(text);
    }

    fn task_ended(&mut self, id: usize, region: &str) -> bool {
        if !self.running.remove(&id) {
            return false;
        }
        let i = self.region(region);
        let counts = &mut self.regions[i].counts;
        counts.running = counts.running.saturating_sub(1);
        self.overall_counts.running = self.overall_counts.running.saturating_sub(1);
        true
    }

    fn host_finished(&mut self, host: &str, region: &str, cluster: &str, outcome: HostOutcome) {
        let i = self.region(region);
        let previous = self.outcomes.insert(host.to_string(), outcome);
        let not_run = |o: Option<HostOutcome>| o == Some(HostOutcome::Cancelled);
        // A host that never started is `not run`, never done.
        match (not_run(previous), not_run(Some(outcome))) {
            (false, true) if previous.is_some() => {
                self.regions[i].done -= 1;
                self.overall_done -= 1;
                self.regions[i].not_run += 1;
                self.overall_not_run += 1;
            }
            (false, true) => {
                self.regions[i].not_run += 1;
                self.overall_not_run += 1;
            }
            (true, false) => {
                self.regions[i].not_run -= 1;
                self.overall_not_run -= 1;
                self.regions[i].done += 1;
                self.overall_done += 1;
            }
            (true, true) => {}
            (false, false) if previous.is_none() => {
                self.regions[i].done += 1;
                self.overall_done += 1;
            }
            (false, false) => {}
        }
        if let Some(previous) = previous {
            self.regions[i].counts.count(previous, -1);
            self.overall_counts.count(previous, -1);
        }
        self.regions[i].counts.count(outcome, 1);
        self.overall_counts.count(outcome, 1);
        // Failures were printed when they happened; what needs saying here is how the
        // failed hosts ended, and any rollback that failed.
        let worth_a_line = match outcome {
            HostOutcome::RollbackFailed => true,
            HostOutcome::RolledBack => self.failed_hosts.contains(host),
            _ => false,
        };
        self.changed();
        if worth_a_line {
            let word = self.palette.outcome(outcome);
            self.println(&format!("{word} {host} ({region}/{cluster})"));
        }
    }

    fn finish_bars(&mut self, summary: Option<&Event>) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.flush();
        // Finished bars that are dropped stay on screen as they last were; what is
        // printed next comes below them.
        if let Some(overall) = &self.overall {
            overall.disable_steady_tick();
        }
        // `abandon`, not `finish`: finish fills the bar, and hosts that never started
        // must not be drawn as done.
        for region in self.regions.drain(..) {
            region.bar.abandon();
        }
        let drawn = self.overall.is_some();
        if let Some(overall) = self.overall.take() {
            overall.abandon();
        }
        crate::term::attach_progress(None);
        if let Some(summary) = summary {
            use std::io::Write;
            // The cursor is still on the last bar's line: end it first.
            let text = summary::render(summary, &self.tally, &self.palette).join("\n");
            let text = format!("\n{text}");
            let mut out = crate::term::Stdout;
            let _ = writeln!(out, "{text}").and_then(|_| out.flush());
        } else if drawn {
            crate::outln!();
        }
    }
}

impl Reporter for TerminalReporter {
    fn event(&mut self, event: &Event) {
        self.tally.observe(event);
        self.gates.observe(event);
        match event {
            Event::RunStarted { hosts, regions, .. } => {
                if let Some(text) = event_line(event, &self.palette, TAIL_LINES) {
                    self.println(&text);
                }
                self.setup(regions, *hosts);
            }
            Event::TaskStarted { task } => {
                self.running.insert(task.id);
                let i = self.region(&task.region);
                let region = &mut self.regions[i];
                region.counts.running += 1;
                if region.wave != task.wave {
                    region.wave = task.wave.clone();
                }
                self.overall_counts.running += 1;
                // Tasks start again: whatever gate or window held the run is behind it.
                self.gate = None;
                self.gate_until = None;
                self.note_waiting();
                self.changed();
            }
            Event::TaskFinished { task, .. } | Event::TaskSkipped { task, .. } => {
                if self.task_ended(task.id, &task.region) {
                    self.changed();
                }
            }
            Event::TaskFailed { task, .. } => {
                self.task_ended(task.id, &task.region);
                if self.failed_hosts.insert(task.host.clone()) {
                    let i = self.region(&task.region);
                    self.regions[i].counts.failed += 1;
                    self.overall_counts.failed += 1;
                }
                self.changed();
                if let Some(text) = event_line(event, &self.palette, TAIL_LINES) {
                    self.println(&text);
                }
            }
            Event::HostFinished {
                host,
                region,
                cluster,
                outcome,
            } => self.host_finished(host, region, cluster, *outcome),
            Event::GateWaiting {
                wave,
                reason,
                seconds,
                until,
                zone,
            } => {
                let wave = wave.clone();
                // The bounded wait for `pony approve` is no countdown worth showing.
                self.gate_until = (*seconds > 0 && *reason != GateReason::Approve)
                    .then(|| Instant::now() + Duration::from_secs(*seconds));
                let at = until.as_deref().and_then(super::local_clock);
                self.gate = Some(match reason {
                    GateReason::Approve => Waiting::Approval { wave },
                    GateReason::Verify => Waiting::Checks { wave },
                    GateReason::Soak => {
                        let until = at.unwrap_or_else(|| {
                            (chrono::Local::now() + chrono::Duration::seconds(*seconds as i64))
                                .format("%H:%M:%S")
                                .to_string()
                        });
                        Waiting::Soak { wave, until }
                    }
                    GateReason::Window(window) => Waiting::Window {
                        wave,
                        zone: zone.clone().unwrap_or_else(|| window.clone()),
                        opens: at,
                    },
                });
                self.note_waiting();
                self.changed();
                let lines = self.gates.lines(event).unwrap_or_else(|| {
                    event_line(event, &self.palette, TAIL_LINES)
                        .into_iter()
                        .collect()
                });
                for line in lines {
                    self.println(&line);
                }
            }
            Event::GatePassed { .. } => {
                self.gate = None;
                self.gate_until = None;
                self.note_waiting();
                self.changed();
            }
            Event::Control {
                command,
                accepted: true,
                user,
                host,
                ..
            } if command == "pause" || command == "continue" => {
                match (&self.activity, command.as_str()) {
                    (Activity::Going, "pause") => {
                        self.activity = Activity::Paused {
                            by: format!("{user}@{host}"),
                        }
                    }
                    (Activity::Paused { .. }, "continue") => self.activity = Activity::Going,
                    _ => {}
                }
                self.note_waiting();
                self.changed();
                if let Some(text) = event_line(event, &self.palette, TAIL_LINES) {
                    self.println(&text);
                }
            }
            // The whole run stops: no gate, window or pause holds it any more; it says
            // it is stopping until it ends.
            Event::Stopped {
                region: None,
                rollback,
                reason,
            } => {
                // A rollback under way stays said when a later stop comes.
                let rolling_back = self.activity
                    == Activity::Stopping {
                        words: super::stopping_words("", true),
                    };
                self.activity = Activity::Stopping {
                    words: super::stopping_words(reason, *rollback || rolling_back),
                };
                self.gate = None;
                self.gate_until = None;
                self.note_waiting();
                self.changed();
                if let Some(text) = event_line(event, &self.palette, TAIL_LINES) {
                    self.println(&text);
                }
            }
            Event::Summary { .. } => self.finish_bars(Some(event)),
            _ => {
                if let Some(text) = event_line(event, &self.palette, TAIL_LINES) {
                    self.println(&text);
                }
            }
        }
    }

    fn tick(&mut self) {
        // A countdown and the ETA move even when no event comes.
        let moving = self.gate_until.is_some() || self.overall_done > 0;
        if moving && self.last_flush.elapsed() >= Duration::from_secs(1) {
            self.dirty = true;
        }
        if self.dirty && !self.finished {
            self.flush();
        }
    }

    fn finish(&mut self) {
        self.finish_bars(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(ok: usize, failed: usize, rolled_back: usize, running: usize) -> Counts {
        Counts {
            ok,
            failed,
            rolled_back,
            rollback_failed: 0,
            running,
        }
    }

    const PLAIN: Palette = Palette { color: false };

    /// After a failed canary, a region whose hosts never started is `not run`, not done:
    /// its bar stays empty (0/4).
    #[test]
    fn hosts_never_started_are_not_run_never_done() {
        let none = counts(0, 0, 0, 0);
        assert_eq!(region_words(4, 0, 4, "", &none, &PLAIN), "not run");
        // Some ran, the rest never started.
        assert_eq!(
            region_words(4, 1, 3, "canary", &counts(0, 1, 1, 0), &PLAIN),
            "ended · 1 failed · 1 rolled back · 3 not run"
        );
        // Every host ran and is ok: done.
        assert_eq!(
            region_words(4, 4, 0, "world", &counts(4, 0, 0, 0), &PLAIN),
            "done"
        );
        // All ended, some rolled back: ended, not done.
        assert_eq!(
            region_words(4, 4, 0, "world", &counts(0, 1, 4, 0), &PLAIN),
            "ended · 1 failed · 4 rolled back"
        );
        // In progress.
        assert_eq!(
            region_words(4, 1, 0, "world", &counts(1, 0, 0, 2), &PLAIN),
            "wave world · 2 running"
        );
        // The overall bar says how many never ran.
        assert_eq!(
            overall_words(&counts(7, 1, 1, 0), 4, None, &Activity::Going, None, &PLAIN),
            "· 1 failed · 1 rolled back · 4 not run"
        );
    }

    #[test]
    fn waits_are_named_and_hide_the_eta() {
        let soak = Waiting::Soak {
            wave: "canary".into(),
            until: "14:05:10".into(),
        };
        assert_eq!(
            overall_words(
                &counts(1, 0, 0, 0),
                0,
                Some((&soak, Some(Duration::from_millis(12_400)))),
                &Activity::Going,
                eta(Duration::from_secs(10), 1, 11, true),
                &PLAIN
            ),
            "· canary soaking until 14:05:10 (12s left)"
        );
        let approval = Waiting::Approval {
            wave: "canary".into(),
        };
        assert_eq!(
            overall_words(
                &counts(1, 0, 0, 0),
                0,
                Some((&approval, None)),
                &Activity::Going,
                None,
                &PLAIN
            ),
            "· waiting for approval of canary"
        );
        assert_eq!(
            overall_words(
                &counts(1, 0, 0, 3),
                0,
                None,
                &Activity::Paused {
                    by: "ann@ctl".into()
                },
                None,
                &PLAIN
            ),
            "· 3 running · paused by ann@ctl: no new host starts"
        );
        let window = Waiting::Window {
            wave: "world".into(),
            zone: "Asia/Shanghai".into(),
            opens: Some("02:00:00".into()),
        };
        assert_eq!(
            overall_words(
                &counts(1, 0, 0, 0),
                0,
                Some((&window, Some(Duration::from_secs(3600)))),
                &Activity::Going,
                None,
                &PLAIN
            ),
            "· world waiting for the change window (Asia/Shanghai, opens at 02:00:00) (1h left)"
        );
        let checks = Waiting::Checks {
            wave: "canary".into(),
        };
        assert_eq!(
            overall_words(
                &counts(1, 0, 0, 0),
                0,
                Some((&checks, None)),
                &Activity::Going,
                None,
                &PLAIN
            ),
            "· checks of canary running before its approval question"
        );
        for (reason, rollback, words) in [
            (
                "aborted by ann@ctl",
                false,
                "· 1 running · stopping: abort in progress, no new host starts",
            ),
            (
                "failure budget exceeded: halted",
                false,
                "· 1 running · stopping: no new host starts",
            ),
            ("x", true, "· 1 running · stopping: rollback in progress"),
        ] {
            assert_eq!(
                overall_words(
                    &counts(0, 0, 0, 1),
                    0,
                    None,
                    &Activity::Stopping {
                        words: super::super::stopping_words(reason, rollback)
                    },
                    None,
                    &PLAIN
                ),
                words
            );
        }
    }

    #[test]
    fn the_eta_counts_working_time_and_only_once_a_host_ended() {
        // Nothing ended yet: no ETA (not `00:00:00`).
        assert_eq!(eta(Duration::from_secs(30), 0, 12, false), None);
        // 2 of 12 ended in 20s of work: 10 more take 100s.
        assert_eq!(
            eta(Duration::from_secs(20), 2, 10, false),
            Some(Duration::from_secs(100))
        );
        // While waiting, and with nothing left: none.
        assert_eq!(eta(Duration::from_secs(20), 2, 10, true), None);
        assert_eq!(eta(Duration::from_secs(20), 12, 0, false), None);
        assert_eq!(
            overall_words(
                &counts(2, 0, 0, 1),
                0,
                None,
                &Activity::Going,
                Some(Duration::from_secs(100)),
                &PLAIN
            ),
            "· 1 running · ETA 00:01:40"
        );
    }

    /// An abort while h1 and h3 run: the bar says the run is stopping; h1 and h3 finish,
    /// h2 and h4 never start and are `not run`, never drawn as done.
    #[test]
    fn after_an_abort_hosts_never_started_are_not_done() {
        let mut reporter = TerminalReporter::new(PLAIN);
        crate::term::attach_progress(None);
        reporter.multi.set_draw_target(ProgressDrawTarget::hidden());
        reporter.event(&Event::RunStarted {
            run_id: "RUN".into(),
            playbook: "pb".into(),
            inventory: "inv".into(),
            hosts: 4,
            tasks: 4,
            waves: vec!["all".into()],
            regions: vec![("r1".into(), 2), ("r2".into(), 2)],
        });
        let task = |id: usize, host: &str, region: &str| crate::events::TaskRef {
            id,
            step: "work".into(),
            host: host.into(),
            region: region.into(),
            cluster: "c".into(),
            wave: "all".into(),
            label: format!("work@{host}"),
        };
        let host = |name: &str, region: &str, outcome| Event::HostFinished {
            host: name.into(),
            region: region.into(),
            cluster: "c".into(),
            outcome,
        };
        for (id, name, region) in [(1, "h1", "r1"), (3, "h3", "r2")] {
            reporter.event(&Event::TaskStarted {
                task: task(id, name, region),
            });
        }
        reporter.event(&Event::Stopped {
            reason: "aborted by ann@ctl".into(),
            region: None,
            rollback: false,
        });
        assert!(
            reporter
                .overall_message()
                .contains("stopping: abort in progress, no new host starts"),
            "{}",
            reporter.overall_message()
        );
        for (id, name, region) in [(1, "h1", "r1"), (3, "h3", "r2")] {
            reporter.event(&Event::TaskFinished {
                task: task(id, name, region),
                changed: true,
                exit_code: Some(0),
                duration_ms: 1,
                attempts: 1,
                record: Default::default(),
            });
            reporter.event(&host(name, region, HostOutcome::Ok));
        }
        for (name, region) in [("h2", "r1"), ("h4", "r2")] {
            reporter.event(&host(name, region, HostOutcome::Cancelled));
        }
        assert_eq!(reporter.overall_done, 2);
        assert_eq!(reporter.overall_not_run, 2);
        for region in &reporter.regions {
            assert_eq!((region.done, region.not_run), (1, 1));
            assert_eq!(reporter.region_message(region), "ended · 1 not run");
        }
        reporter.finish();
    }
}
