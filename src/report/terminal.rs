//! The terminal reporter (indicatif): one bar per region (hosts done of total, the wave it
//! is in, tasks running, failures, rollbacks) and an overall bar with elapsed time and ETA.
//! Failures, budget breaches, rollbacks, gates and waves are printed above the bars as they
//! happen; tracing's log lines go through the same [`MultiProgress`] (see
//! [`crate::term`]) so that nothing garbles the bars. At the end the bars stay on screen
//! in their final state and the summary (shared with the plain reporter) follows.

use super::summary::{self, SummaryNotes};
use super::{event_line, GateNotes, Palette, Reporter};
use crate::events::{Event, HostOutcome};
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
    /// Hosts with a final outcome.
    done: u64,
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
    overall_done: u64,
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
    gate: Option<String>,
    /// When a timed wait (a `pause:` or a change window) ends, for the countdown.
    gate_until: Option<Instant>,
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
        overall.set_style(self.style(
            "green",
            " hosts · {elapsed_precise} elapsed · ETA {eta_precise}",
        ));
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
        let mut message = String::new();
        if region.counts.running == 0 && region.done >= region.size {
            message.push_str(&self.palette.green("done"));
        } else if !region.wave.is_empty() {
            message.push_str(&format!("wave {}", region.wave));
        }
        let counts = region.counts.message(&self.palette);
        if !counts.is_empty() {
            if !message.is_empty() {
                message.push_str(" · ");
            }
            message.push_str(&counts);
        }
        message
    }

    fn overall_message(&self) -> String {
        let mut parts = Vec::new();
        let counts = self.overall_counts.message(&self.palette);
        if !counts.is_empty() {
            parts.push(counts);
        }
        if let Some(gate) = &self.gate {
            let left = self.gate_until.map(|until| {
                let secs = until.saturating_duration_since(Instant::now()).as_secs();
                format!(
                    ": {} left",
                    humantime::format_duration(Duration::from_secs(secs))
                )
            });
            parts.push(
                self.palette
                    .yellow(&format!("{gate}{}", left.unwrap_or_default())),
            );
        }
        let parts: Vec<String> = parts.iter().map(|p| format!("· {p}")).collect();
        parts.join(" ")
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
        match previous {
            Some(previous) => {
                self.regions[i].counts.count(previous, -1);
                self.overall_counts.count(previous, -1);
            }
            None => {
                self.regions[i].done += 1;
                self.overall_done += 1;
            }
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
        for region in self.regions.drain(..) {
            region.bar.finish();
        }
        let drawn = self.overall.is_some();
        if let Some(overall) = self.overall.take() {
            overall.finish();
        }
        crate::term::attach_progress(None);
        if let Some(summary) = summary {
            use std::io::Write;
            // The cursor is still on the last bar's line: end it first.
            let text = summary::render(summary, &self.tally, &self.palette).join("\n");
            let text = format!("\n{text}");
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}").and_then(|_| out.flush());
        } else if drawn {
            println!();
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
            } => {
                self.gate_until =
                    (*seconds > 0).then(|| Instant::now() + Duration::from_secs(*seconds));
                self.gate = Some(match reason.as_str() {
                    "approve" => format!("waiting for approval of {wave}"),
                    "pause" => format!("pausing after {wave}"),
                    window if window.starts_with("window ") => {
                        format!("{wave} waits for its {window}")
                    }
                    other => format!("waiting for {other} after {wave}"),
                });
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
                self.changed();
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
        // A countdown moves even when no event comes.
        if self.gate_until.is_some() && self.last_flush.elapsed() >= Duration::from_secs(1) {
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
