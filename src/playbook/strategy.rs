//! The rollout strategy: waves (which regions and hosts, in order) with the gates after
//! them (`pause`, `approve`, a daily change `window`), and the per-cluster limits
//! (`max_unavailable` slots, the `max_failures` budget, `on_failure`), the run-wide
//! `max_failures_run` budget, `unreachable` hosts, the rollback's pace and what a run
//! split by region does when one of its controllers is lost.

use super::raw::{self, OnControllerLoss, OnFailure, RawWave, RollbackPace, Scalar, Unreachable};
use super::Builder;
use crate::inventory::pattern::HostPattern;
use std::collections::HashMap;
use std::time::Duration;

#[derive(Debug)]
pub struct Strategy {
    /// Never empty: without `waves:` there is one wave `all` taking every region.
    pub waves: Vec<Wave>,
    pub max_unavailable: Limit,
    pub max_failures: Limit,
    pub on_failure: OnFailure,
    pub connections: usize,
    pub sessions_per_host: usize,
    pub handshakes: usize,
    /// How many hosts of a cluster roll back at once (`rollback: { pace: }`).
    pub rollback_pace: RollbackPace,
    /// Failed hosts over the whole run (of its hosts with tasks) before `on_failure`
    /// applies to the whole run; `None`: no run-wide budget.
    pub max_failures_run: Option<Limit>,
    pub unreachable: Unreachable,
    /// Under `unreachable: skip`, how many hosts may be skipped; later ones fail.
    /// `None`: no limit.
    pub max_unreachable: Option<usize>,
    /// In a run split by region: what the other controllers do when one is lost.
    pub on_controller_loss: OnControllerLoss,
    /// Whether the playbook chose `on_controller_loss` (it means to split its runs by
    /// `--regions`): `pony plan` then says what a lost controller does.
    pub on_controller_loss_set: bool,
}

#[derive(Debug)]
pub struct Wave {
    pub name: String,
    /// Region globs; `*` takes every region (host) not yet taken by an earlier wave.
    pub regions: Vec<glob::Pattern>,
    /// Restricts the wave to these hosts of its regions; the rest wait for later waves.
    pub hosts: Option<HostPattern>,
    pub pause: Option<Duration>,
    pub approve: bool,
    pub window: Option<Window>,
    /// Failed hosts of the wave tolerated before `on_failure` applies to the whole run
    /// (the wave's own `max_failures`, else `strategy.max_failures_wave`).
    pub max_failures: Option<Limit>,
    /// Checks that watch the wave's hosts while it soaks.
    pub verify: Vec<Check>,
}

/// A `verify:` check: a command or a probe, run on `hosts` (default: the wave's hosts)
/// every `every` during the wave's `pause:`, and once more before its `approve:` question.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub action: CheckAction,
    pub hosts: Option<HostPattern>,
    pub every: Duration,
    pub compare: Option<Compare>,
}

impl Check {
    /// What the gate checks, as `pony plan` shows it.
    pub fn describe(&self) -> String {
        let what = self.action.describe();
        let hosts = self
            .hosts
            .as_ref()
            .map_or("the wave's hosts", |h| h.as_str());
        let every = humantime::format_duration(self.every);
        let mut text = format!("{}: {what} on {hosts} every {every}", self.name);
        if let Some(c) = &self.compare {
            text.push_str(&format!(
                "; fails when the median exceeds the median on {} by more than {}",
                c.baseline.as_str(),
                c.tolerance
            ));
        }
        text
    }
}

#[derive(Debug, Clone)]
pub enum CheckAction {
    /// A shell command: exit 0 passes (or, with `compare`, it prints a number).
    Run(String),
    Probe(super::Probe),
}

impl CheckAction {
    /// `run `…`` or `probe …`, as `pony plan` and failures show it.
    pub fn describe(&self) -> String {
        match self {
            CheckAction::Run(command) => format!("run `{command}`"),
            CheckAction::Probe(probe) => format!("probe {}", probe.describe()),
        }
    }

    /// The check's template fields: `(field, source)`.
    pub fn templates(&self) -> Vec<(&'static str, &str)> {
        match self {
            CheckAction::Run(command) => vec![("run", command.as_str())],
            CheckAction::Probe(probe) => probe.templates(),
        }
    }

    /// The check with every template field rendered by `render` (for one host).
    pub fn rendered<E>(
        &self,
        mut render: impl FnMut(&'static str, &str) -> Result<String, E>,
    ) -> Result<CheckAction, E> {
        Ok(match self {
            CheckAction::Run(command) => CheckAction::Run(render("run", command)?),
            CheckAction::Probe(probe) => CheckAction::Probe(probe.rendered(render)?),
        })
    }
}

/// Canary analysis: the median of the number the command (or the mail-flow probe: its
/// latency in seconds) prints on the check's hosts (over hosts and samples) may exceed
/// the baseline hosts' median by at most `tolerance`.
#[derive(Debug, Clone)]
pub struct Compare {
    pub baseline: HostPattern,
    pub tolerance: Tolerance,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tolerance {
    /// `50%`: the canary may be up to 1.5× the baseline.
    Ratio(f64),
    /// `+5`: the canary may be up to the baseline + 5.
    Absolute(f64),
}

impl Tolerance {
    /// The most the canary's value may be against this baseline value.
    pub fn limit(self, baseline: f64) -> f64 {
        match self {
            Tolerance::Ratio(r) => baseline + baseline.abs() * r,
            Tolerance::Absolute(a) => baseline + a,
        }
    }
}

impl std::fmt::Display for Tolerance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tolerance::Ratio(r) => write!(f, "{}%", r * 100.0),
            Tolerance::Absolute(a) => write!(f, "+{a}"),
        }
    }
}

/// Parses `50%` (a ratio) or `+5` / `5` (absolute).
pub fn parse_tolerance(text: &str) -> Option<Tolerance> {
    let text = text.trim();
    if let Some(p) = text.strip_suffix('%') {
        let p: f64 = p.trim().parse().ok()?;
        return (p >= 0.0 && p.is_finite()).then_some(Tolerance::Ratio(p / 100.0));
    }
    let a: f64 = text.strip_prefix('+').unwrap_or(text).trim().parse().ok()?;
    (a >= 0.0 && a.is_finite()).then_some(Tolerance::Absolute(a))
}

/// A daily change window such as `02:00-06:00 Asia/Shanghai` (minutes after midnight).
/// `time_zone` is [`LOCAL`] for `02:00-05:00 local`: each host's inventory `tz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub start_minute: u32,
    pub end_minute: u32,
    pub time_zone: String,
    pub text: String,
}

/// A count or a percentage of a cluster's hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Count(u32),
    Percent(u32),
}

impl Limit {
    /// The limit for a cluster of `total` hosts: percentages round down.
    pub fn of(self, total: usize) -> usize {
        match self {
            Limit::Count(n) => n as usize,
            Limit::Percent(p) => total * p as usize / 100,
        }
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::Count(n) => write!(f, "{n}"),
            Limit::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Builder<'_> {
    fn limit(&mut self, what: &str, value: &Scalar) -> Option<Limit> {
        let parsed = match value {
            Scalar::Number(n) => u32::try_from(*n).ok().map(Limit::Count),
            Scalar::Text(text) => match text.trim().strip_suffix('%') {
                Some(p) => p
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|p| *p <= 100)
                    .map(Limit::Percent),
                None => text.trim().parse::<u32>().ok().map(Limit::Count),
            },
        };
        if parsed.is_none() {
            self.error(
                format!("{what}: bad value `{value}`"),
                "write a host count like `2` or a percentage from 0% to 100% like `25%`",
            );
        }
        parsed
    }

    pub(super) fn strategy(&mut self, raw: raw::RawStrategy) -> Strategy {
        let max_unavailable = raw
            .max_unavailable
            .as_ref()
            .and_then(|v| self.limit("strategy.max_unavailable", v))
            .unwrap_or(Limit::Percent(100));
        if max_unavailable == Limit::Count(0) || max_unavailable == Limit::Percent(0) {
            self.error(
                "strategy.max_unavailable: 0 would never deploy anything",
                "use at least 1 or a percentage like 25%",
            );
        }
        let max_failures = raw
            .max_failures
            .as_ref()
            .and_then(|v| self.limit("strategy.max_failures", v))
            .unwrap_or(Limit::Count(0));
        let mut positive = |name: &str, value: Option<usize>, default: usize| match value {
            Some(0) => {
                self.error(
                    format!("strategy.{name}: 0 would never run anything"),
                    format!("use at least 1 (default {default})"),
                );
                default
            }
            Some(n) => n,
            None => default,
        };
        let connections = positive("connections", raw.connections, 256);
        let sessions_per_host = positive("sessions_per_host", raw.sessions_per_host, 8);
        let handshakes = positive("handshakes", raw.handshakes, 16);
        let max_failures_run = raw
            .max_failures_run
            .as_ref()
            .and_then(|v| self.limit("strategy.max_failures_run", v));
        let unreachable = raw.unreachable.unwrap_or_default();
        if raw.max_unreachable.is_some() && unreachable != Unreachable::Skip {
            self.error(
                "strategy.max_unreachable is set but unreachable hosts fail (`unreachable: fail`)",
                "add `unreachable: skip`, or remove max_unreachable",
            );
        }
        let rollback_pace = raw.rollback.and_then(|r| r.pace).unwrap_or_default();
        let max_failures_wave = raw
            .max_failures_wave
            .as_ref()
            .and_then(|v| self.limit("strategy.max_failures_wave", v));
        let mut waves: Vec<Wave> = raw
            .waves
            .into_iter()
            .filter_map(|w| self.wave(w, max_failures_wave))
            .collect();
        let mut names = HashMap::new();
        for wave in &waves {
            if names.insert(wave.name.clone(), ()).is_some() {
                self.error(
                    format!("wave `{}` is defined twice", wave.name),
                    "give every wave a unique name",
                );
            }
        }
        if waves.is_empty() {
            waves.push(Wave {
                name: "all".into(),
                regions: vec![glob::Pattern::new("*").expect("valid glob")],
                hosts: None,
                pause: None,
                approve: false,
                window: None,
                max_failures: max_failures_wave,
                verify: Vec::new(),
            });
        }
        Strategy {
            waves,
            max_unavailable,
            max_failures,
            on_failure: raw.on_failure.unwrap_or_default(),
            connections,
            sessions_per_host,
            handshakes,
            rollback_pace,
            max_failures_run,
            unreachable,
            max_unreachable: raw.max_unreachable,
            on_controller_loss: raw.on_controller_loss.unwrap_or_default(),
            on_controller_loss_set: raw.on_controller_loss.is_some(),
        }
    }

    fn wave(&mut self, raw: RawWave, max_failures_wave: Option<Limit>) -> Option<Wave> {
        let what = format!("wave `{}`", raw.name);
        if raw.regions.is_empty() {
            self.error(
                format!("{what} lists no regions"),
                "add `regions: [\"*\"]` or a list of region names/globs",
            );
        }
        let mut regions = Vec::new();
        for region in &raw.regions {
            match glob::Pattern::new(region) {
                Ok(p) => regions.push(p),
                Err(e) => self.error(
                    format!("{what}: bad region glob `{region}`: {e}"),
                    "use a region name or a glob like `cn-*`",
                ),
            }
        }
        let hosts = raw
            .hosts
            .as_deref()
            .and_then(|h| match HostPattern::parse(h) {
                Ok(p) => Some(p),
                Err(e) => {
                    self.pattern_error(&what, &e, "use a pattern like `canary` or `mta:&cn-*`");
                    None
                }
            });
        let pause = raw
            .pause
            .as_ref()
            .and_then(|p| self.duration(&format!("{what} pause"), p));
        let window = raw.window.as_deref().and_then(|w| match parse_window(w) {
            Ok(window) => Some(window),
            Err(problem) => {
                self.error(
                    format!("{what}: bad window `{w}`: {problem}"),
                    "write it as `HH:MM-HH:MM Area/City`, e.g. `02:00-06:00 Asia/Shanghai`",
                );
                None
            }
        });
        let max_failures = match &raw.max_failures {
            Some(v) => self.limit(&format!("{what} max_failures"), v),
            None => max_failures_wave,
        };
        let verify: Vec<Check> = raw
            .verify
            .into_iter()
            .filter_map(|c| self.check(&what, c))
            .collect();
        if !verify.is_empty() && pause.is_none() && !raw.approve {
            self.error(
                format!("{what}: `verify` needs a gate to run in, and the wave has neither `pause` nor `approve`"),
                "add `pause: 10m` (checks run every `every` for that long) or `approve: true` (checks run once before the question)",
            );
        }
        Some(Wave {
            name: raw.name,
            regions,
            hosts,
            pause,
            approve: raw.approve,
            window,
            max_failures,
            verify,
        })
    }

    fn check(&mut self, wave: &str, raw: raw::RawCheck) -> Option<Check> {
        let what = format!("{wave} verify check `{}`", raw.name);
        let action = match (raw.run, raw.probe) {
            (Some(run), None) => Some(CheckAction::Run(run)),
            (None, Some(probe)) => Some(CheckAction::Probe(probe)),
            (Some(_), Some(_)) => {
                self.error(
                    format!("{what} has both `run` and `probe`"),
                    "give each check one of them; split it into two checks",
                );
                None
            }
            (None, None) => {
                self.error(
                    format!("{what} has nothing to check"),
                    "add `run: <command>` (exit 0 passes) or `probe: { smtp: {...} }`",
                );
                None
            }
        };
        let pattern = |b: &mut Self, field: &str, text: &str| match HostPattern::parse(text) {
            Ok(p) => Some(p),
            Err(e) => {
                b.pattern_error(
                    &format!("{what} {field}"),
                    &e,
                    "use a pattern like `canary` or `mx:&cn-*`",
                );
                None
            }
        };
        let hosts = raw.hosts.as_deref().and_then(|h| pattern(self, "hosts", h));
        let every = raw
            .every
            .as_ref()
            .and_then(|e| self.duration(&format!("{what} every"), e))
            .unwrap_or(Duration::from_secs(30));
        if every.is_zero() {
            self.error(
                format!("{what}: `every` is 0"),
                "check at most as often as `every: 1s`",
            );
        }
        let compare = match (raw.compare.as_deref(), raw.baseline.as_deref()) {
            (None, None) => None,
            (None, Some(_)) => {
                self.error(
                    format!("{what} has a `baseline` but no `compare`"),
                    "add `compare: median` to compare against the baseline, or remove `baseline`",
                );
                None
            }
            (Some(stat), baseline) => {
                if stat != "median" {
                    self.error(
                        format!("{what}: unknown statistic `compare: {stat}`"),
                        "write `compare: median` (the median over hosts and samples)",
                    );
                }
                let baseline = match baseline {
                    Some(b) => pattern(self, "baseline", b),
                    None => {
                        self.error(
                            format!("{what} compares but has no `baseline`"),
                            "add `baseline: <hosts>` naming hosts still on the old release, e.g. the next wave's hosts",
                        );
                        None
                    }
                };
                let tolerance = match &raw.tolerance {
                    None => Some(Tolerance::Ratio(0.0)),
                    Some(t) => {
                        let parsed = parse_tolerance(&t.to_string());
                        if parsed.is_none() {
                            self.error(
                                format!("{what}: bad tolerance `{t}`"),
                                "write a ratio like `50%` or an absolute margin like `+5`",
                            );
                        }
                        parsed
                    }
                };
                baseline
                    .zip(tolerance)
                    .map(|(baseline, tolerance)| Compare {
                        baseline,
                        tolerance,
                    })
            }
        };
        // A compare judges a number each host gives: a command's output, or the latency
        // the mail-flow probe prints; the other probes print what they saw, no number.
        if let (Some(_), Some(CheckAction::Probe(probe))) = (&raw.compare, &action) {
            if !matches!(probe, super::Probe::Mailflow { .. }) {
                self.error(
                    format!(
                        "{what}: `compare` needs a number, and the {} probe prints none",
                        probe_kind(probe)
                    ),
                    "compare the mail-flow probe's latency (`probe: { mailflow: {...} }`) or a `run: <command printing a number>`, or remove `compare`",
                );
            }
        }
        if raw.compare.is_none() && raw.tolerance.is_some() {
            self.error(
                format!("{what} has a `tolerance` but no `compare`"),
                "add `compare: median` and `baseline:`, or remove `tolerance`",
            );
        }
        Some(Check {
            name: raw.name,
            action: action?,
            hosts,
            every,
            compare,
        })
    }
}

/// A probe's kind as a playbook names it (`smtp`, `imap`, …).
fn probe_kind(probe: &super::Probe) -> &'static str {
    use super::Probe;
    match probe {
        Probe::Smtp { .. } => "smtp",
        Probe::Lmtp { .. } => "lmtp",
        Probe::Imap { .. } => "imap",
        Probe::Http { .. } => "http",
        Probe::Tcp { .. } => "tcp",
        Probe::Mailflow { .. } => "mailflow",
    }
}

/// The zone word of a window in each host's own inventory `tz`.
pub const LOCAL: &str = "local";

/// Why a wave's `window:` does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("missing the time zone")]
    NoTimeZone,
    #[error("missing `-` between start and end")]
    NoDash,
    #[error("`{0}` is not HH:MM")]
    NotHhMm(String),
    #[error("`{0}` is not a time of day")]
    NotATime(String),
    #[error("unknown time zone `{0}`")]
    UnknownTimeZone(String),
    #[error("the time zone must be one IANA name like `Asia/Shanghai` or `UTC`")]
    NotOneZone,
}

/// Parses `HH:MM-HH:MM Area/City`.
pub fn parse_window(text: &str) -> Result<Window, WindowError> {
    let (range, zone) = text.trim().split_once(' ').ok_or(WindowError::NoTimeZone)?;
    let (start, end) = range.split_once('-').ok_or(WindowError::NoDash)?;
    let minute = |hhmm: &str| -> Result<u32, WindowError> {
        let (h, m) = hhmm
            .split_once(':')
            .ok_or_else(|| WindowError::NotHhMm(hhmm.to_string()))?;
        match (h.parse::<u32>(), m.parse::<u32>()) {
            (Ok(h), Ok(m)) if h < 24 && m < 60 => Ok(h * 60 + m),
            _ => Err(WindowError::NotATime(hhmm.to_string())),
        }
    };
    let zone = zone.trim();
    if zone == LOCAL {
        return Ok(Window {
            start_minute: minute(start)?,
            end_minute: minute(end)?,
            time_zone: zone.to_string(),
            text: text.to_string(),
        });
    }
    if zone.parse::<chrono_tz::Tz>().is_err() {
        return Err(WindowError::UnknownTimeZone(zone.to_string()));
    }
    if zone.is_empty() || zone.contains(' ') {
        return Err(WindowError::NotOneZone);
    }
    Ok(Window {
        start_minute: minute(start)?,
        end_minute: minute(end)?,
        time_zone: zone.to_string(),
        text: text.to_string(),
    })
}
