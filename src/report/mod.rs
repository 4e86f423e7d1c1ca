//! Reporters: turn the executor's events into what people and CI read.
//!
//! - [`terminal`]: progress bars (indicatif) when stdout is a terminal;
//! - [`plain`]: one line per host outcome, for CI logs and `-q`;
//! - [`json`]: one JSON object per event per line (`--output json`, docs/events.md);
//! - [`junit`]: a JUnit XML file written when the run ends (`--junit FILE`);
//! - [`summary`]: the end-of-run table the terminal and plain reporters share.
//!
//! Reporters run on a thread of their own, fed by an unbounded channel, so rendering
//! (and a slow terminal or pipe) never blocks the executor.

pub mod json;
pub mod junit;
mod lines;
pub mod plain;
pub mod summary;
pub mod terminal;

use crate::events::{Event, GateReason, HostOutcome};
pub use lines::event_line;

use crate::term::{color_enabled, ColorChoice};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

/// Something that renders events.
pub trait Reporter: Send {
    fn event(&mut self, event: &Event);
    /// Called every [`TICK`] whether events come or not (to redraw, or to print a
    /// progress line during a long quiet stretch).
    fn tick(&mut self) {}
    fn finish(&mut self) {}
}

/// How often [`Reporter::tick`] is called.
pub const TICK: Duration = Duration::from_millis(100);

/// What a command prints on stdout (`--output`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// Progress and summary for people.
    #[default]
    Human,
    /// One JSON object per event per line (docs/events.md).
    Json,
}

/// How human output is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Progress bars with failures above them, then the summary.
    Bars,
    /// Plain lines (CI, pipes, `-q`).
    Plain,
    /// JSON events on stdout.
    Json,
}

/// What the reporters of a run are chosen and set up by, as the settings resolved them.
#[derive(Debug, Clone, Default)]
pub struct ReportOptions {
    pub output: OutputFormat,
    pub color: ColorChoice,
    /// Only errors and the final summary (`-q`).
    pub quiet: bool,
    /// Bars or plain lines whatever stdout is (`PONY_PROGRESS`, for benchmarks and demos).
    pub forced_mode: Option<Mode>,
    /// Plain output's interval between `progress:` lines (default [`plain::PROGRESS_EVERY`]).
    pub progress_every: Option<Duration>,
    /// Where to write the JUnit report (`--junit`).
    pub junit: Option<PathBuf>,
    /// This controller's name when the run is split by region (in every JSON event).
    pub controller: Option<String>,
}

/// The mode the options ask for: JSON with `--output json`, else what `PONY_PROGRESS`
/// forces, else bars on a terminal (not a dumb one, not with `-q`), else plain lines.
pub fn mode(options: &ReportOptions) -> Mode {
    if options.output == OutputFormat::Json {
        return Mode::Json;
    }
    if let Some(forced) = options.forced_mode {
        return forced;
    }
    let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
    if !options.quiet && !dumb && std::io::stdout().is_terminal() {
        Mode::Bars
    } else {
        Mode::Plain
    }
}

/// The reporters a run gets: JSON events on stdout with `--output json`; progress bars
/// when stdout is a terminal; plain lines otherwise; and a JUnit file with `--junit FILE`.
pub fn for_run(options: &ReportOptions) -> Vec<Box<dyn Reporter>> {
    let mode = mode(options);
    let color = color_enabled(options.color, std::io::stdout().is_terminal());
    let mut reporters: Vec<Box<dyn Reporter>> = Vec::new();
    match mode {
        Mode::Json => reporters.push(Box::new(json::JsonReporter {
            controller: options.controller.clone(),
        })),
        Mode::Bars => reporters.push(Box::new(terminal::TerminalReporter::new(Palette::new(
            color,
        )))),
        Mode::Plain => reporters.push(Box::new(plain::PlainReporter::new(
            Box::new(crate::term::Stdout),
            options.quiet,
            Palette::new(color),
            options.progress_every.unwrap_or(plain::PROGRESS_EVERY),
        ))),
    }
    if let Some(path) = &options.junit {
        reporters.push(Box::new(junit::JunitReporter::new(path.clone())));
    }
    reporters
}

/// Feeds every event to every reporter until the sender is dropped, and ticks them every
/// [`TICK`]. The reporters run on a thread of their own: rendering, or a terminal or pipe
/// that is slow to take output, never occupies one of the executor's workers.
pub async fn drive(mut events: UnboundedReceiver<Event>, mut reporters: Vec<Box<dyn Reporter>>) {
    let (done, finished) = tokio::sync::oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("pony-report".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build();
            let Ok(runtime) = runtime else {
                while let Some(event) = events.blocking_recv() {
                    for reporter in &mut reporters {
                        reporter.event(&event);
                    }
                }
                for reporter in &mut reporters {
                    reporter.finish();
                }
                let _ = done.send(());
                return;
            };
            runtime.block_on(async {
                let mut ticks = tokio::time::interval(TICK);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    tokio::select! {
                        event = events.recv() => match event {
                            Some(event) => {
                                for reporter in &mut reporters {
                                    reporter.event(&event);
                                }
                            }
                            None => break,
                        },
                        _ = ticks.tick() => {
                            for reporter in &mut reporters {
                                reporter.tick();
                            }
                        }
                    }
                }
            });
            for reporter in &mut reporters {
                reporter.finish();
            }
            let _ = done.send(());
        });
    if spawned.is_ok() {
        let _ = finished.await;
    }
}

/// Colours for human output; without colour every method returns the text unchanged.
#[derive(Debug, Clone, Copy)]
pub struct Palette {
    pub color: bool,
}

impl Palette {
    pub fn new(color: bool) -> Self {
        Palette { color }
    }

    fn paint(&self, text: &str, style: console::Style) -> String {
        if self.color {
            style.force_styling(true).apply_to(text).to_string()
        } else {
            text.to_string()
        }
    }

    pub fn red(&self, text: &str) -> String {
        self.paint(text, console::Style::new().red().bold())
    }

    pub fn green(&self, text: &str) -> String {
        self.paint(text, console::Style::new().green())
    }

    pub fn yellow(&self, text: &str) -> String {
        self.paint(text, console::Style::new().yellow())
    }

    pub fn bold(&self, text: &str) -> String {
        self.paint(text, console::Style::new().bold())
    }

    pub fn dim(&self, text: &str) -> String {
        self.paint(text, console::Style::new().dim())
    }

    /// A verdict line: green when all went well, red otherwise.
    pub fn verdict(&self, all_well: bool, text: &str) -> String {
        if all_well {
            self.green(text)
        } else {
            self.red(text)
        }
    }

    /// A host outcome's word, coloured by severity.
    pub fn outcome(&self, outcome: HostOutcome) -> String {
        let word = outcome_word(outcome);
        match outcome {
            HostOutcome::Ok => self.green(word),
            HostOutcome::Failed
            | HostOutcome::RollbackFailed
            | HostOutcome::Incomplete
            | HostOutcome::Unreachable => self.red(word),
            HostOutcome::RolledBack => self.yellow(word),
            HostOutcome::Cancelled => self.dim(word),
        }
    }
}

/// A host outcome as the human reporters print it.
pub fn outcome_word(outcome: HostOutcome) -> &'static str {
    match outcome {
        HostOutcome::Ok => "ok",
        HostOutcome::Failed => "FAILED",
        HostOutcome::Incomplete => "INCOMPLETE",
        HostOutcome::RolledBack => "rolled back",
        HostOutcome::RollbackFailed => "ROLLBACK FAILED",
        HostOutcome::Cancelled => "not run",
        HostOutcome::Unreachable => "UNREACHABLE",
    }
}

/// Output lines indented under the line that introduces them.
pub fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The last `lines` lines of `text`.
pub fn last_lines(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The step of a task label (`switch@mx-gz-01` → `switch`).
pub fn label_step(label: &str) -> &str {
    label.rsplit_once('@').map_or(label, |(step, _)| step)
}

/// `14:05:10`: an RFC 3339 time (a soak's end) on this machine's clock, as a person at
/// the terminal reads it; `None` when it does not parse.
pub fn local_clock(rfc3339: &str) -> Option<String> {
    let time = chrono::DateTime::parse_from_rfc3339(rfc3339).ok()?;
    Some(
        time.with_timezone(&chrono::Local)
            .format("%H:%M:%S")
            .to_string(),
    )
}

/// What a run that stops says it is doing until it ends: `stopping: rollback in
/// progress` (every touched host rolls back), `stopping: abort in progress, no new host
/// starts` (`pony abort`, Ctrl-C, SIGTERM), else `stopping: no new host starts` (a halt,
/// a failed wave, a gate that stops the run).
pub fn stopping_words(reason: &str, rollback: bool) -> &'static str {
    if rollback {
        "stopping: rollback in progress"
    } else if reason.starts_with("aborted") || reason.starts_with("interrupted") {
        "stopping: abort in progress, no new host starts"
    } else {
        "stopping: no new host starts"
    }
}

/// What the human reporters remember for the lines of a wave's gate: the run's id (the
/// `pony approve RUN WAVE` they suggest names the real run) and each wave's soak so far
/// (said before its approval question).
#[derive(Debug, Default)]
pub struct GateNotes {
    run_id: Option<String>,
    soaks: std::collections::HashMap<String, SoakSeen>,
}

#[derive(Debug, Default)]
struct SoakSeen {
    /// The pause, once the soak began.
    seconds: Option<u64>,
    ok: usize,
    failed: usize,
}

impl GateNotes {
    pub fn observe(&mut self, event: &Event) {
        match event {
            Event::RunStarted { run_id, .. } => self.run_id = Some(run_id.clone()),
            Event::GateWaiting {
                wave,
                reason,
                seconds,
                ..
            } if *reason == GateReason::Soak => {
                self.soaks.entry(wave.clone()).or_default().seconds = Some(*seconds);
            }
            Event::VerifyCheck(crate::events::VerifyCheck { wave, ok, .. }) => {
                let soak = self.soaks.entry(wave.clone()).or_default();
                if *ok {
                    soak.ok += 1;
                } else {
                    soak.failed += 1;
                }
            }
            _ => {}
        }
    }

    /// The lines of a gate's event, where they differ from [`event_line`]'s: before the
    /// approval question, what the soak showed; the wait for `pony approve` with the
    /// run's id. `None` for every other event.
    pub fn lines(&self, event: &Event) -> Option<Vec<String>> {
        let Event::GateWaiting {
            wave,
            reason,
            seconds,
            ..
        } = event
        else {
            return None;
        };
        if *reason != GateReason::Approve {
            return None;
        }
        let mut lines = Vec::new();
        if let Some(soak) = self.soak_line(wave) {
            lines.push(soak);
        }
        let run = self.run_id.as_deref().unwrap_or("RUN");
        lines.push(if *seconds > 0 {
            format!(
                "== gate after wave {wave}: waiting up to {} for `pony approve {run} {wave}`",
                humantime::format_duration(Duration::from_secs(*seconds))
            )
        } else {
            format!("== gate after wave {wave}: waiting for approval")
        });
        Some(lines)
    }

    /// `== soak after wave canary: 20s, 6 checks ok`; `None` for a wave that neither
    /// soaked nor ran checks.
    fn soak_line(&self, wave: &str) -> Option<String> {
        let soak = self.soaks.get(wave)?;
        let plural = |n: usize| if n == 1 { "check" } else { "checks" };
        let mut results = Vec::new();
        if soak.ok > 0 {
            results.push(format!("{} {} ok", soak.ok, plural(soak.ok)));
        }
        if soak.failed > 0 {
            results.push(format!("{} failed", soak.failed));
        }
        if results.is_empty() {
            results.push("no checks".into());
        }
        let results = results.join(", ");
        Some(match soak.seconds {
            Some(seconds) => format!(
                "== soak after wave {wave}: {}, {results}",
                humantime::format_duration(Duration::from_secs(seconds))
            ),
            None => format!("== checks after wave {wave}: {results}"),
        })
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests;
