//! The playbook model: validated steps and strategy, and their loading. Everything that can
//! be checked without the inventory is checked here; the plan checks the rest.

pub mod raw;
pub mod template;

use crate::diag::{closest, Diagnostic, Diagnostics};
use crate::inventory::pattern::HostPattern;
use crate::inventory::Vars;
pub use raw::{NeedScope, OnFailure, Per, Probe};
use raw::{RawPlaybook, RawStep, RawTransfer, RawWave, Scalar};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub type StepId = usize;

/// A validated playbook.
#[derive(Debug)]
pub struct Playbook {
    pub name: String,
    pub file: PathBuf,
    /// Where `template:` and `upload:` sources are found: the playbook's directory (for a
    /// resumed run, the original playbook's, not the snapshot's).
    pub files_dir: PathBuf,
    /// Defaults; inventory vars and `--var` override them.
    pub vars: Vars,
    pub strategy: Strategy,
    pub steps: Vec<Step>,
}

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
}

/// A daily change window such as `02:00-06:00 Asia/Shanghai` (minutes after midnight).
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

#[derive(Debug)]
pub struct Step {
    pub name: String,
    /// Defaults to `all`.
    pub hosts: HostPattern,
    pub action: Action,
    pub rollback: Option<String>,
    pub needs: Vec<Need>,
    pub per: Per,
    pub creates: Option<String>,
    pub unless: Option<String>,
    pub capture: Option<String>,
    pub until: Option<Until>,
    pub timeout: Option<Duration>,
    pub retries: u32,
    pub retry_delay: Duration,
    pub become_root: bool,
    pub estimate: Option<Duration>,
}

impl Step {
    /// Every template string of the step with the field it came from.
    pub fn templates(&self) -> Vec<(&'static str, &str)> {
        let mut out = Vec::new();
        match &self.action {
            Action::Run(command) => out.push(("run", command.as_str())),
            Action::Upload(t) | Action::Template(t) => {
                out.push(("src", t.src.as_str()));
                out.push(("dest", t.dest.as_str()));
            }
            Action::Probe(probe) => out.extend(probe.templates()),
        }
        for (field, value) in [
            ("rollback", &self.rollback),
            ("creates", &self.creates),
            ("unless", &self.unless),
        ] {
            if let Some(value) = value {
                out.push((field, value.as_str()));
            }
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    pub step: StepId,
    pub scope: NeedScope,
}

#[derive(Debug)]
pub enum Action {
    Run(String),
    Upload(Transfer),
    Template(Transfer),
    Probe(Probe),
}

impl Action {
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Run(_) => "run",
            Action::Upload(_) => "upload",
            Action::Template(_) => "template",
            Action::Probe(_) => "probe",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Transfer {
    pub src: String,
    pub dest: String,
    pub mode: Option<u32>,
}

#[derive(Debug, Clone, Copy)]
pub struct Until {
    pub retries: u32,
    pub delay: Duration,
}

impl Playbook {
    pub fn step_id(&self, name: &str) -> Option<StepId> {
        self.steps.iter().position(|s| s.name == name)
    }

    /// The directory relative paths (`template:` and `upload:` sources) resolve against.
    pub fn dir(&self) -> &Path {
        &self.files_dir
    }
}

/// Reads and validates a playbook file; every problem is reported at once.
pub fn load(path: &Path) -> Result<Playbook, Diagnostics> {
    match load_partial(path) {
        (Some(playbook), errors) => errors.into_result(playbook),
        (None, errors) => Err(errors.sorted()),
    }
}

/// Like [`load`], but also hands back the playbook when only some values were bad, so
/// that the checks against the inventory run too and every problem is reported at once.
pub fn load_partial(path: &Path) -> (Option<Playbook>, Diagnostics) {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_partial(path, &text),
        Err(e) => (
            None,
            Diagnostic::new(path, format!("cannot read playbook: {e}"))
                .hint("pass an existing playbook, e.g. playbooks/mail-rollout.yaml")
                .into(),
        ),
    }
}

pub fn parse(path: &Path, text: &str) -> Result<Playbook, Diagnostics> {
    match parse_partial(path, text) {
        (Some(playbook), errors) => errors.into_result(playbook),
        (None, errors) => Err(errors.sorted()),
    }
}

/// The playbook (`None` when its shape is wrong or a step had to be dropped) and every
/// problem found in it.
pub fn parse_partial(path: &Path, text: &str) -> (Option<Playbook>, Diagnostics) {
    match serde_yaml::from_str::<RawPlaybook>(text) {
        Ok(raw) => Builder {
            path,
            errors: Diagnostics::default(),
        }
        .build(raw),
        Err(e) => (
            None,
            Diagnostic::from_yaml(path, &e)
                .map_message(|message| name_the_step(text, message))
                .into(),
        ),
    }
}

/// serde names a step by its index (`steps[1].needs[0]: …`); people know it by name.
fn name_the_step(text: &str, message: &str) -> String {
    let Some(rest) = message.strip_prefix("steps[") else {
        return message.to_string();
    };
    let Some((index, rest)) = rest.split_once(']') else {
        return message.to_string();
    };
    let name = index.parse::<usize>().ok().and_then(|i| {
        let value: serde_yaml::Value = serde_yaml::from_str(text).ok()?;
        value
            .get("steps")?
            .get(i)?
            .get("name")?
            .as_str()
            .map(str::to_string)
    });
    match name {
        Some(name) => format!(
            "step `{name}`{}{}",
            if rest.starts_with('.') { ": " } else { "" },
            rest.trim_start_matches('.')
        ),
        None => message.to_string(),
    }
}

struct Builder<'a> {
    path: &'a Path,
    errors: Diagnostics,
}

impl Builder<'_> {
    fn error(&mut self, message: impl Into<String>, hint: impl Into<String>) {
        self.errors
            .push(Diagnostic::new(self.path, message).hint(hint));
    }

    fn build(mut self, raw: RawPlaybook) -> (Option<Playbook>, Diagnostics) {
        if raw.steps.is_empty() {
            self.error(
                "playbook has no steps",
                "add `steps:` with at least one step",
            );
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for step in &raw.steps {
            if seen.insert(step.name.as_str(), 0).is_some() {
                self.error(
                    format!("step `{}` is defined twice", step.name),
                    "give every step a unique name",
                );
            }
            if step.name.trim().is_empty() {
                self.error(
                    "a step has an empty name",
                    "give every step a unique `name:`",
                );
            }
        }
        let names: Vec<&str> = raw.steps.iter().map(|s| s.name.as_str()).collect();
        let strategy = self.strategy(raw.strategy);
        let raw_steps = raw.steps.len();
        let steps: Vec<Step> = raw
            .steps
            .iter()
            .filter_map(|s| self.step(s, &names))
            .collect();
        let env = template::environment();
        for step in &steps {
            for (field, source) in step.templates() {
                if let Err(e) = template::variables(env, source) {
                    self.error(
                        format!(
                            "step `{}`: `{field}` is not a valid template: {}",
                            step.name,
                            e.detail().unwrap_or(&e.to_string())
                        ),
                        "fix the {{ }} / {% %} syntax (minijinja, like Jinja2)",
                    );
                }
            }
        }
        let playbook = Playbook {
            name: raw.name,
            file: self.path.to_path_buf(),
            files_dir: self.path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            vars: raw.vars,
            strategy,
            steps,
        };
        let complete = playbook.steps.len() == raw_steps;
        (complete.then_some(playbook), self.errors)
    }

    /// A host pattern that cannot be parsed (a `~regex` gets the glob to use).
    fn pattern_error(
        &mut self,
        what: &str,
        e: &crate::inventory::pattern::PatternError,
        example: &str,
    ) {
        match &e.suggestion {
            Some(glob) => self.error(format!("{what}: {e}"), format!("did you mean `{glob}`?")),
            None => self.error(format!("{what}: {e}"), example),
        }
    }

    fn duration(&mut self, what: &str, value: &Scalar) -> Option<Duration> {
        match value {
            Scalar::Number(seconds) => Some(Duration::from_secs(*seconds)),
            Scalar::Text(text) => match humantime::parse_duration(text.trim()) {
                Ok(d) => Some(d),
                Err(_) => {
                    self.error(
                        format!("{what}: `{text}` is not a duration"),
                        "write durations like `30s`, `10m` or `1h 30m`",
                    );
                    None
                }
            },
        }
    }

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

    fn strategy(&mut self, raw: raw::RawStrategy) -> Strategy {
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
        let mut waves: Vec<Wave> = raw.waves.into_iter().filter_map(|w| self.wave(w)).collect();
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
        }
    }

    fn wave(&mut self, raw: RawWave) -> Option<Wave> {
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
        Some(Wave {
            name: raw.name,
            regions,
            hosts,
            pause,
            approve: raw.approve,
            window,
        })
    }

    fn step(&mut self, raw: &RawStep, names: &[&str]) -> Option<Step> {
        let what = format!("step `{}`", raw.name);
        let mut actions = Vec::new();
        if let Some(run) = &raw.run {
            actions.push(Action::Run(run.clone()));
        }
        if let Some(t) = &raw.upload {
            actions.push(Action::Upload(self.transfer(&what, t)?));
        }
        if let Some(t) = &raw.template {
            actions.push(Action::Template(self.transfer(&what, t)?));
        }
        if let Some(p) = &raw.probe {
            actions.push(Action::Probe(p.clone()));
        }
        if actions.len() != 1 {
            let found: Vec<&str> = actions.iter().map(Action::kind).collect();
            self.error(
                if found.is_empty() {
                    format!("{what} has no action")
                } else {
                    format!("{what} has {} actions ({})", found.len(), found.join(", "))
                },
                "give each step exactly one of `run`, `upload`, `template` or `probe`",
            );
            return None;
        }
        let action = actions.pop().expect("one action");
        let hosts = match HostPattern::parse(raw.hosts.as_deref().unwrap_or("all")) {
            Ok(p) => p,
            Err(e) => {
                self.pattern_error(
                    &what,
                    &e,
                    "use a pattern like `mta`, `cn-*` or `mta:&cn-*:!mx-gz-99`",
                );
                return None;
            }
        };
        let mut needs = Vec::new();
        for need in &raw.needs {
            let (name, scope) = match need {
                raw::RawNeed::Step(name) => (name.as_str(), NeedScope::Auto),
                raw::RawNeed::Scoped(s) => (s.step.as_str(), s.scope),
            };
            match names.iter().position(|n| *n == name) {
                Some(step) => needs.push(Need { step, scope }),
                None => {
                    let mut d =
                        Diagnostic::new(self.path, format!("{what} needs unknown step `{name}`"));
                    d = match closest(name, names.iter().copied()) {
                        Some(best) => d.hint(format!("did you mean `{best}`?")),
                        None => d.hint(format!("steps are: {}", names.join(", "))),
                    };
                    self.errors.push(d);
                }
            }
        }
        if let Some(capture) = &raw.capture {
            let valid = capture
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && capture
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                self.error(
                    format!("{what}: capture `{capture}` is not a valid variable name"),
                    "use letters, digits and `_`, e.g. `previous_release`",
                );
            }
        }
        let until = raw.until.as_ref().map(|u| Until {
            retries: u.retries,
            delay: u
                .delay
                .as_ref()
                .and_then(|d| self.duration(&format!("{what} until.delay"), d))
                .unwrap_or(Duration::from_secs(1)),
        });
        Some(Step {
            name: raw.name.clone(),
            hosts,
            action,
            rollback: raw.rollback.clone(),
            needs,
            per: raw.per.unwrap_or_default(),
            creates: raw.creates.clone(),
            unless: raw.unless.clone(),
            capture: raw.capture.clone(),
            until,
            timeout: raw
                .timeout
                .as_ref()
                .and_then(|t| self.duration(&format!("{what} timeout"), t)),
            retries: raw.retries.unwrap_or(0),
            retry_delay: raw
                .retry_delay
                .as_ref()
                .and_then(|d| self.duration(&format!("{what} retry_delay"), d))
                .unwrap_or(Duration::from_secs(1)),
            become_root: raw.become_root,
            estimate: raw
                .estimate
                .as_ref()
                .and_then(|e| self.duration(&format!("{what} estimate"), e)),
        })
    }

    fn transfer(&mut self, what: &str, raw: &RawTransfer) -> Option<Transfer> {
        let mode = match &raw.mode {
            None => None,
            Some(m) => match u32::from_str_radix(m.trim_start_matches("0o"), 8) {
                Ok(mode) if mode <= 0o7777 => Some(mode),
                _ => {
                    self.error(
                        format!("{what}: bad file mode `{m}`"),
                        "write an octal mode as a string, e.g. \"0644\"",
                    );
                    return None;
                }
            },
        };
        Some(Transfer {
            src: raw.src.clone(),
            dest: raw.dest.clone(),
            mode,
        })
    }
}

fn parse_window(text: &str) -> Result<Window, String> {
    let (range, zone) = text.trim().split_once(' ').ok_or("missing the time zone")?;
    let (start, end) = range
        .split_once('-')
        .ok_or("missing `-` between start and end")?;
    let minute = |hhmm: &str| -> Result<u32, String> {
        let (h, m) = hhmm
            .split_once(':')
            .ok_or(format!("`{hhmm}` is not HH:MM"))?;
        match (h.parse::<u32>(), m.parse::<u32>()) {
            (Ok(h), Ok(m)) if h < 24 && m < 60 => Ok(h * 60 + m),
            _ => Err(format!("`{hhmm}` is not a time of day")),
        }
    };
    let zone = zone.trim();
    if zone.parse::<chrono_tz::Tz>().is_err() {
        return Err(format!("unknown time zone `{zone}`"));
    }
    if zone.is_empty() || zone.contains(' ') {
        return Err("the time zone must be one IANA name like `Asia/Shanghai` or `UTC`".into());
    }
    Ok(Window {
        start_minute: minute(start)?,
        end_minute: minute(end)?,
        time_zone: zone.to_string(),
        text: text.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Playbook {
        parse(Path::new("p.yaml"), text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn errors(text: &str) -> String {
        parse(Path::new("p.yaml"), text).unwrap_err().to_string()
    }

    #[test]
    fn parses_every_field() {
        let pb = parse_ok(
            r#"
name: t
vars: { version: "1", mail_root: /srv/mail }
strategy:
  waves:
    - { name: canary, regions: [cn-south], hosts: canary, pause: 10m }
    - { name: china, regions: ["cn-*", eu-west], approve: true, window: "02:00-06:30 Asia/Shanghai" }
    - { name: world, regions: ["*"] }
  max_unavailable: 25%
  max_failures: 2
  on_failure: rollback-all
  connections: 100
  sessions_per_host: 6
  handshakes: 12
steps:
  - { name: a, hosts: "mta:!canary", run: "echo {{ version }}", creates: /x, unless: "test -f /y", timeout: 2m, retries: 2, retry_delay: 5s, estimate: 20s, capture: out, become: true, rollback: "rm -f /x" }
  - { name: b, needs: [a, { step: a, scope: run }], per: region, hosts: store, probe: { smtp: { port: 2525, starttls: true } }, until: { retries: 10, delay: 3s } }
  - { name: c, per: run, upload: { src: "a-{{ version }}.tar", dest: /srv/, mode: "0644" } }
  - { name: d, per: host, template: { src: t.j2, dest: /etc/x, mode: "0o600" } }
  - { name: e, probe: { lmtp: { port: 2424 } } }
  - { name: f, probe: { imap: { port: 1143 } } }
  - { name: g, probe: { http: { port: 8080, path: /health, status: 204, body: ok } } }
  - { name: h, probe: { tcp: { port: 22 } }, until: { retries: 1 } }
"#,
        );
        // Top level.
        assert_eq!(pb.name, "t");
        assert_eq!(pb.file, Path::new("p.yaml"));
        assert_eq!(pb.vars["version"], serde_yaml::Value::from("1"));
        assert_eq!(pb.vars["mail_root"], serde_yaml::Value::from("/srv/mail"));
        assert_eq!(pb.vars.len(), 2);

        // Strategy and its waves.
        let strategy = &pb.strategy;
        assert_eq!(strategy.max_unavailable, Limit::Percent(25));
        assert_eq!(strategy.max_failures, Limit::Count(2));
        assert_eq!(strategy.on_failure, OnFailure::RollbackAll);
        assert_eq!(strategy.connections, 100);
        assert_eq!(strategy.sessions_per_host, 6);
        assert_eq!(strategy.handshakes, 12);
        type WaveFields<'a> = (
            &'a str,
            Vec<&'a str>,
            Option<&'a str>,
            Option<Duration>,
            bool,
        );
        let waves: Vec<WaveFields> = strategy
            .waves
            .iter()
            .map(|w| {
                (
                    w.name.as_str(),
                    w.regions.iter().map(|r| r.as_str()).collect(),
                    w.hosts.as_ref().map(|h| h.as_str()),
                    w.pause,
                    w.approve,
                )
            })
            .collect();
        assert_eq!(
            waves,
            [
                (
                    "canary",
                    vec!["cn-south"],
                    Some("canary"),
                    Some(Duration::from_secs(600)),
                    false
                ),
                ("china", vec!["cn-*", "eu-west"], None, None, true),
                ("world", vec!["*"], None, None, false),
            ]
        );
        assert_eq!(
            strategy.waves[1].window,
            Some(Window {
                start_minute: 120,
                end_minute: 390,
                time_zone: "Asia/Shanghai".into(),
                text: "02:00-06:30 Asia/Shanghai".into(),
            })
        );
        assert!(strategy.waves[0].window.is_none() && strategy.waves[2].window.is_none());

        // Step a: every field but the action kinds.
        let a = &pb.steps[0];
        assert_eq!(a.name, "a");
        assert_eq!(a.hosts.as_str(), "mta:!canary");
        assert!(matches!(&a.action, Action::Run(run) if run == "echo {{ version }}"));
        assert_eq!(a.creates.as_deref(), Some("/x"));
        assert_eq!(a.unless.as_deref(), Some("test -f /y"));
        assert_eq!(a.rollback.as_deref(), Some("rm -f /x"));
        assert_eq!(a.timeout, Some(Duration::from_secs(120)));
        assert_eq!(a.retries, 2);
        assert_eq!(a.retry_delay, Duration::from_secs(5));
        assert_eq!(a.estimate, Some(Duration::from_secs(20)));
        assert_eq!(a.capture.as_deref(), Some("out"));
        assert!(a.become_root);
        assert_eq!(a.per, Per::Host);
        assert!(a.needs.is_empty() && a.until.is_none());

        // Step b: needs in both forms, per, hosts, an smtp probe, until.
        let b = &pb.steps[1];
        assert_eq!(
            b.needs,
            vec![
                Need {
                    step: 0,
                    scope: NeedScope::Auto
                },
                Need {
                    step: 0,
                    scope: NeedScope::Run
                }
            ]
        );
        assert_eq!(b.per, Per::Region);
        assert_eq!(b.hosts.as_str(), "store");
        let until = b.until.expect("until");
        assert_eq!((until.retries, until.delay), (10, Duration::from_secs(3)));
        assert!(!b.become_root && b.rollback.is_none() && b.timeout.is_none());
        assert_eq!(b.retries, 0);

        // Transfers.
        assert_eq!(pb.steps[2].per, Per::Run);
        match &pb.steps[2].action {
            Action::Upload(t) => {
                assert_eq!(
                    (t.src.as_str(), t.dest.as_str(), t.mode),
                    ("a-{{ version }}.tar", "/srv/", Some(0o644))
                )
            }
            other => panic!("expected an upload, got {other:?}"),
        }
        assert_eq!(pb.steps[3].per, Per::Host);
        match &pb.steps[3].action {
            Action::Template(t) => {
                assert_eq!(
                    (t.src.as_str(), t.dest.as_str(), t.mode),
                    ("t.j2", "/etc/x", Some(0o600))
                )
            }
            other => panic!("expected a template, got {other:?}"),
        }

        // Every probe kind with its fields.
        let probe = |step: usize| match &pb.steps[step].action {
            Action::Probe(probe) => serde_json::to_value(probe).unwrap(),
            other => panic!("step {step}: expected a probe, got {other:?}"),
        };
        assert_eq!(
            probe(1),
            serde_json::json!({"smtp": {"port": 2525, "starttls": true}})
        );
        assert_eq!(probe(4), serde_json::json!({"lmtp": {"port": 2424}}));
        assert_eq!(probe(5), serde_json::json!({"imap": {"port": 1143}}));
        assert_eq!(
            probe(6),
            serde_json::json!({"http": {"port": 8080, "path": "/health", "status": 204, "body": "ok"}})
        );
        assert_eq!(probe(7), serde_json::json!({"tcp": {"port": 22}}));
        let until = pb.steps[7].until.expect("until");
        assert_eq!(
            (until.retries, until.delay),
            (1, Duration::from_secs(1)),
            "until's delay defaults to 1s"
        );
        assert_eq!(Limit::Percent(25).of(10), 2);
    }

    #[test]
    fn a_minimal_playbook_gets_the_documented_defaults() {
        let pb = parse_ok(
            "name: m\nsteps:\n  - { name: a, run: \"true\" }\n  - { name: p, probe: { smtp: {} } }\n  - { name: h, probe: { http: {} } }\n",
        );
        assert!(pb.vars.is_empty());
        let strategy = &pb.strategy;
        assert_eq!(strategy.waves.len(), 1);
        assert_eq!(strategy.waves[0].name, "all");
        assert_eq!(strategy.max_unavailable, Limit::Percent(100));
        assert_eq!(strategy.max_failures, Limit::Count(0));
        assert_eq!(strategy.on_failure, OnFailure::RollbackRegion);
        assert_eq!(
            (
                strategy.connections,
                strategy.sessions_per_host,
                strategy.handshakes
            ),
            (256, 8, 16)
        );
        let a = &pb.steps[0];
        assert_eq!(a.hosts.as_str(), "all");
        assert_eq!(a.per, Per::Host);
        assert_eq!((a.retries, a.retry_delay), (0, Duration::from_secs(1)));
        assert!(a.timeout.is_none() && a.estimate.is_none() && !a.become_root);
        let probe = |step: usize| match &pb.steps[step].action {
            Action::Probe(probe) => serde_json::to_value(probe).unwrap(),
            other => panic!("expected a probe, got {other:?}"),
        };
        assert_eq!(
            probe(1),
            serde_json::json!({"smtp": {"port": 25, "starttls": false}})
        );
        assert_eq!(
            probe(2),
            serde_json::json!({"http": {"port": 80, "path": "/", "status": 200, "body": null}})
        );
    }

    #[test]
    fn collects_all_errors() {
        let text = errors(
            r#"
name: t
strategy: { max_unavailable: 125%, waves: [ { name: w, regions: [], pause: 10 minutes please } ] }
steps:
  - { name: a, run: "x", timeout: soon }
  - { name: b, run: "x", needs: [aa] }
  - { name: c }
  - { name: b, run: "{{ x" }
"#,
        );
        for expected in [
            "strategy.max_unavailable: bad value `125%`",
            "wave `w` lists no regions",
            "`10 minutes please` is not a duration",
            "step `a` timeout: `soon` is not a duration",
            "step `b` needs unknown step `aa`",
            "did you mean `a`?",
            "step `c` has no action",
            "step `b` is defined twice",
            "is not a valid template",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }
}
