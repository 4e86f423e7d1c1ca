//! The playbook model: validated steps and strategy, and their loading. Everything that can
//! be checked without the inventory is checked here; the plan checks the rest.
//!
//! - [`raw`]: the YAML shape (serde), before any check;
//! - [`strategy`]: waves, gates, change windows and the per-cluster limits;
//! - [`step`]: steps, their action, guards, retries and `needs`;
//! - [`ensure`]: the everyday actions (`line:`, `service:`, `package:`);
//! - [`mail`]: the mail built-ins (`mail: { action: drain_mta, … }`) a step expands into;
//! - [`template`]: the minijinja environment, and what a template reads;
//! - [`include`]: `include:` steps, replaced by the steps of the file they name.

pub mod ensure;
pub mod health;
pub mod include;
pub mod mail;
pub mod raw;
pub mod step;
pub mod strategy;
pub mod template;

use crate::diag::{Diagnostic, Diagnostics};
use crate::inventory::Vars;
pub use raw::{NeedScope, OnControllerLoss, OnFailure, Per, Probe, RollbackPace, Unreachable};
use raw::{RawPlaybook, Scalar};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
pub use step::{Action, ChangeRule, Need, Step, Transfer, Until};
pub use strategy::{
    Check, CheckAction, Compare, Limit, Strategy, Tolerance, Wave, Window, WindowError,
};

pub type StepId = usize;

/// A validated playbook.
#[derive(Debug)]
pub struct Playbook {
    pub name: String,
    pub file: PathBuf,
    /// Where `template:` and `upload:` sources are found: the playbook's directory (for a
    /// resumed run, the original playbook's absolute directory, for messages only: the
    /// files are then read from the run's snapshot, [`Playbook::held`]).
    pub files_dir: PathBuf,
    /// Once a run holds its files (`pony deploy` after writing the snapshot, `resume`,
    /// `rollback`, `join`, `status`): the snapshot's copies of the template and upload
    /// sources, read instead of `files_dir`.
    pub held: std::sync::OnceLock<HeldFiles>,
    /// Defaults; inventory vars and `--var` override them.
    pub vars: Vars,
    pub strategy: Strategy,
    /// `notify:`: commands told about run start and end, approval waits, failures.
    pub notify: Vec<Notifier>,
    /// `health:`: the checks that say a host serves, run after its rollback.
    pub health: health::Health,
    pub steps: Vec<Step>,
    /// The files `include:` steps read, relative to the playbook's folder (a run's
    /// snapshot keeps them with the template and upload sources).
    pub includes: Vec<String>,
}

impl Playbook {
    pub fn step_id(&self, name: &str) -> Option<StepId> {
        self.steps.iter().position(|s| s.name == name)
    }

    /// The directory relative paths (`template:` and `upload:` sources) resolve against.
    pub fn dir(&self) -> &Path {
        &self.files_dir
    }

    /// Where a `template:` or `upload:` source (`src` rendered) is, for messages.
    pub fn source_path(&self, src: &str) -> PathBuf {
        self.files_dir.join(src)
    }

    /// The content of a `template:` or `upload:` source (`src` rendered): the run's
    /// snapshot copy once the run holds its files, else the file next to the playbook.
    pub fn read_source(&self, src: &str) -> Result<Vec<u8>, SourceError> {
        if let Some(held) = self.held.get() {
            match held.blobs.get(src) {
                Some(blob) => {
                    return std::fs::read(blob).map_err(|e| SourceError::Blob {
                        src: src.to_string(),
                        blob: blob.clone(),
                        error: e,
                    })
                }
                None if !held.fallback => {
                    return Err(SourceError::NotHeld {
                        src: src.to_string(),
                    })
                }
                None => {}
            }
        }
        let path = self.source_path(src);
        std::fs::read(&path).map_err(|error| SourceError::Read { path, error })
    }
}

impl Playbook {
    /// Where each included step came from, and the files included.
    fn with_includes(mut self, expanded: include::Expanded) -> Self {
        for step in &mut self.steps {
            step.origin = expanded.origins.get(&step.name).cloned();
        }
        self.includes = expanded.files;
        self
    }
}

/// The template and upload sources a run's snapshot holds.
#[derive(Debug, Default)]
pub struct HeldFiles {
    /// Each source as the playbook names it (`src`, rendered for its targets) → its
    /// content's blob file.
    pub blobs: std::collections::BTreeMap<String, PathBuf>,
    /// Whether a source the snapshot does not hold is read from the playbook's
    /// directory: only in the process that wrote the snapshot (a `src` rendered from a
    /// capture is known only once the capture ran).
    pub fallback: bool,
}

/// Why a template or upload source cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read {}: {error}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("cannot read `{src}` from the run's snapshot ({}): {error}", blob.display())]
    Blob {
        src: String,
        blob: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("`{src}` is not in the run's snapshot (its `src` was rendered from a capture, or the run was started by an older pony)")]
    NotHeld { src: String },
}

/// One notifier command (`notify:`, `--notify`; run by `crate::notify`) and how long one
/// call of it may take before it is killed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notifier {
    pub command: String,
    pub timeout: Duration,
}

/// How long a notifier may run when nothing says otherwise.
pub const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

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
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    load_with(path, &|key| std::fs::read_to_string(dir.join(key)))
}

/// [`load_partial`] with included files read by `read` (a run's snapshot: its copies).
pub fn load_with(path: &Path, read: include::Reader) -> (Option<Playbook>, Diagnostics) {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_with(path, &text, read),
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
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    parse_with(path, text, &|key| std::fs::read_to_string(dir.join(key)))
}

/// [`parse_partial`] with included files read by `read`. A playbook without includes
/// is deserialized from its text (so that errors point at their line); one with
/// includes from its YAML with the includes expanded.
fn parse_with(path: &Path, text: &str, read: include::Reader) -> (Option<Playbook>, Diagnostics) {
    let mut value = serde_yaml::from_str::<serde_yaml::Value>(text).unwrap_or_default();
    if !include::has_includes(&value) {
        return parse_raw(path, text, serde_yaml::from_str(text), Default::default());
    }
    let expanded = match include::expand(path, &mut value, read) {
        Ok(expanded) => expanded,
        Err(errors) => return (None, errors),
    };
    let text = serde_yaml::to_string(&value).unwrap_or_default();
    parse_raw(path, &text, serde_yaml::from_value(value), expanded)
}

fn parse_raw(
    path: &Path,
    text: &str,
    raw: Result<RawPlaybook, serde_yaml::Error>,
    expanded: include::Expanded,
) -> (Option<Playbook>, Diagnostics) {
    match raw {
        Ok(raw) => {
            let (playbook, errors) = Builder {
                path,
                errors: Diagnostics::default(),
            }
            .build(raw);
            (playbook.map(|p| p.with_includes(expanded)), errors)
        }
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
        if steps.len() == raw_steps {
            self.check_listened(&steps);
        }
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
        let vault_ok = match &raw.vault {
            None | Some(serde_yaml::Value::String(_)) => true,
            Some(serde_yaml::Value::Sequence(files)) => files.iter().all(|f| f.is_string()),
            Some(_) => false,
        };
        if !vault_ok {
            self.error(
                "`vault:` must be a file or a list of files",
                "write `vault: secrets.vault` or `vault: [a.vault, b.vault]`",
            );
        }
        let notify = self.notifiers(raw.notify);
        let health = self.health(raw.health);
        let playbook = Playbook {
            notify,
            health,
            name: raw.name,
            file: self.path.to_path_buf(),
            files_dir: self.path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            held: std::sync::OnceLock::new(),
            vars: raw.vars,
            strategy,
            steps,
            includes: Vec::new(),
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

    fn notifiers(&mut self, raw: Vec<raw::RawNotify>) -> Vec<Notifier> {
        let mut notifiers = Vec::new();
        for (i, notify) in raw.into_iter().enumerate() {
            let (command, timeout) = match notify {
                raw::RawNotify::Command(command) => (command, None),
                raw::RawNotify::Full { command, timeout } => (command, timeout),
            };
            if command.trim().is_empty() {
                self.error(
                    format!("notify[{i}]: the command is empty"),
                    "write the command to run, e.g. `notify: [\"curl -sS -d @- $WEBHOOK\"]`",
                );
                continue;
            }
            let timeout = match timeout {
                Some(t) => self.duration(&format!("notify[{i}].timeout"), &t),
                None => Some(DEFAULT_NOTIFY_TIMEOUT),
            };
            if let Some(timeout) = timeout {
                notifiers.push(Notifier { command, timeout });
            }
        }
        notifiers
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
}

#[cfg(test)]
mod tests;
