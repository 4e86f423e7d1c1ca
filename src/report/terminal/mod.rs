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

#[cfg(test)]
mod tests;
mod words;

pub use words::eta;
use words::{overall_words, region_words, Activity, Counts, Waiting};

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
            Event::Control(crate::events::Control {
                command,
                accepted: true,
                user,
                host,
                ..
            }) if command == "pause" || command == "continue" => {
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
