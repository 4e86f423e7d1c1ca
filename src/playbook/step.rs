//! A step: one action (`run`, `upload`, `template`, `probe`, or an everyday action
//! `line`, `service`, `package`) on the hosts of a
//! pattern, with its guards, retries, rollback command and the steps it `needs`.

use super::raw::{self, NeedScope, Per, Probe, RawStep, RawTransfer};
use super::{Builder, StepId};
use crate::diag::{closest, Diagnostic};
use crate::inventory::pattern::HostPattern;
use std::time::Duration;

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
    /// `delegate:`: a template that renders, per target, to a pattern matching the one
    /// host that runs the step's commands (and rollback) on the target's behalf.
    pub delegate: Option<String>,
    /// Tasks run at once on one delegate host (`delegate_parallel:`, default 1).
    pub delegate_parallel: usize,
    /// `dead_man:`: when a task of the step starts, a watchdog on its host runs the
    /// step's rollback once this long passes without word from the controller (see
    /// [`crate::exec::dead_man`]).
    pub dead_man: Option<Duration>,
    /// `mail:`: the built-in the step's `run` (and, unless given, `rollback`) was
    /// expanded from; its argument templates are what the plan checks.
    pub mail: Option<super::mail::Expanded>,
    /// `vars:` of this step only (an included step's: its file's and its include's),
    /// over the playbook's vars; inventory vars and `--var` override them.
    pub vars: crate::inventory::Vars,
    /// Where an included step came from (`FILE:LINE (include NAME)`), for plan and graph.
    pub origin: Option<String>,
    /// `changed_when:` of a `run` step: whether its success counts as a change (what a
    /// handler listens for and reports show; a rollback still undoes the step).
    pub changed_when: ChangeRule,
    /// `listen:`: the steps this handler listens to (empty: not a handler). They are
    /// also in `needs`; on each host the handler runs only when one of them changed
    /// something there, and is skipped otherwise.
    pub listen: Vec<StepId>,
}

impl Step {
    /// Whether the step is a handler (it has `listen:`).
    pub fn is_handler(&self) -> bool {
        !self.listen.is_empty()
    }

    /// Every template string of the step with the field it came from.
    pub fn templates(&self) -> Vec<(&'static str, &str)> {
        let mut out = Vec::new();
        match &self.action {
            // A mail built-in's command is pony's; its arguments are the templates.
            Action::Run(_) if self.mail.is_some() => {}
            Action::Run(command) => out.push(("run", command.as_str())),
            Action::Upload(t) | Action::Template(t) => {
                out.push(("src", t.src.as_str()));
                out.push(("dest", t.dest.as_str()));
            }
            Action::Probe(probe) => out.extend(probe.templates()),
            Action::Ensure(ensure) => out.extend(ensure.templates()),
        }
        let natural = self.mail.as_ref().map(|m| m.rollback.as_deref());
        let rollback = match natural {
            Some(natural) if natural == self.rollback.as_deref() => &None,
            _ => &self.rollback,
        };
        if let Some(mail) = &self.mail {
            out.extend(mail.checks.iter().map(|(f, t)| (*f, t.as_str())));
        }
        for (field, value) in [
            ("delegate", &self.delegate),
            ("rollback", rollback),
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

/// `changed_when:`: how a successful `run` task reports whether it changed its host.
/// It feeds handlers and reports only; rollback decisions do not read it (a command
/// that ran may have changed the host whatever it printed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ChangeRule {
    /// `true` (the default): every success is a change.
    #[default]
    Always,
    /// `false`: never a change (a check, a read-only command).
    Never,
    /// `{ stdout_contains: TEXT }`: a change when the output holds TEXT.
    StdoutContains(String),
    /// `{ stdout_lacks: TEXT }`: a change when the output does not hold TEXT.
    StdoutLacks(String),
}

impl ChangeRule {
    /// Whether a successful run that printed `stdout` changed its host.
    pub fn changed(&self, stdout: &[u8]) -> bool {
        let holds = |text: &str| String::from_utf8_lossy(stdout).contains(text);
        match self {
            ChangeRule::Always => true,
            ChangeRule::Never => false,
            ChangeRule::StdoutContains(text) => holds(text),
            ChangeRule::StdoutLacks(text) => !holds(text),
        }
    }

    /// As `plan` shows it (`None` for the default).
    pub fn describe(&self) -> Option<String> {
        match self {
            ChangeRule::Always => None,
            ChangeRule::Never => Some("changed_when: false".into()),
            ChangeRule::StdoutContains(t) => Some(format!("changed_when: stdout contains {t:?}")),
            ChangeRule::StdoutLacks(t) => Some(format!("changed_when: stdout lacks {t:?}")),
        }
    }
}

fn per_name(per: Per) -> &'static str {
    match per {
        Per::Host => "host",
        Per::Region => "region",
        Per::Run => "run",
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
    /// `line:`, `service:` or `package:` (see [`super::ensure`]).
    Ensure(super::ensure::Ensure),
}

impl Action {
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Run(_) => "run",
            Action::Upload(_) => "upload",
            Action::Template(_) => "template",
            Action::Probe(_) => "probe",
            Action::Ensure(ensure) => ensure.kind(),
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

impl Builder<'_> {
    pub(super) fn step(&mut self, raw: &RawStep, names: &[&str]) -> Option<Step> {
        let what = format!("step `{}`", raw.name);
        let mail = self.mail(&what, raw);
        let action = self.action(&what, raw, mail.as_ref())?;
        let rollback = raw
            .rollback
            .clone()
            .or_else(|| mail.as_ref().and_then(|m| m.rollback.clone()));
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
        let (needs, listen) = self.needs_and_listen(&what, raw, names);
        let changed_when = self.changed_when(&what, raw, &action);
        if let Some(capture) = &raw.capture {
            self.check_capture(&what, capture);
        }
        let until = raw.until.as_ref().map(|u| Until {
            retries: u.retries,
            delay: u
                .delay
                .as_ref()
                .and_then(|d| self.duration(&format!("{what} until.delay"), d))
                .unwrap_or(Duration::from_secs(1)),
        });
        let delegate_parallel = self.delegate_parallel(&what, raw);
        let dead_man = raw
            .dead_man
            .as_ref()
            .and_then(|d| self.duration(&format!("{what} dead_man"), d));
        if let Some(bound) = dead_man {
            self.dead_man_rules(&what, raw, rollback.is_some(), bound);
        }
        Some(Step {
            name: raw.name.clone(),
            hosts,
            action,
            rollback,
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
            delegate: raw.delegate.clone(),
            delegate_parallel,
            dead_man,
            mail,
            vars: raw.vars.clone(),
            origin: None,
            changed_when,
            listen,
        })
    }

    /// A `mail:` built-in checked and expanded (its problems are validation errors).
    fn mail(&mut self, what: &str, raw: &RawStep) -> Option<super::mail::Expanded> {
        match super::mail::expand(raw.mail.as_ref()?) {
            Ok(expanded) => Some(expanded),
            Err(problems) => {
                for p in problems {
                    self.error(format!("{what}: {}", p.message), p.hint);
                }
                None
            }
        }
    }

    /// The step's one action (`run`, `upload`, `template`, `probe`, or `mail`, which is
    /// a `run` pony wrote).
    fn action(
        &mut self,
        what: &str,
        raw: &RawStep,
        mail: Option<&super::mail::Expanded>,
    ) -> Option<Action> {
        let mut actions = Vec::new();
        if let Some(run) = &raw.run {
            actions.push(("run", Action::Run(run.clone())));
        }
        if raw.mail.is_some() {
            // A `mail:` that did not check out is reported on its own.
            actions.push(("mail", Action::Run(mail?.run.clone())));
        }
        if let Some(t) = &raw.upload {
            actions.push(("upload", Action::Upload(self.transfer(what, t)?)));
        }
        if let Some(t) = &raw.template {
            actions.push(("template", Action::Template(self.transfer(what, t)?)));
        }
        if let Some(p) = &raw.probe {
            actions.push(("probe", Action::Probe(p.clone())));
        }
        actions.extend(self.ensure_actions(what, raw));
        if actions.len() != 1 {
            let found: Vec<&str> = actions.iter().map(|(kind, _)| *kind).collect();
            self.error(
                if found.is_empty() {
                    format!("{what} has no action")
                } else {
                    format!("{what} has {} actions ({})", found.len(), found.join(", "))
                },
                "give each step exactly one of `run`, `upload`, `template` or `probe`, an everyday action (`line`, `service`, `package`), or `mail` (a mail built-in)",
            );
            return None;
        }
        actions.pop().map(|(_, action)| action)
    }

    /// The step's `line:`, `service:` and `package:`, each checked (its problems are
    /// validation errors, and it counts as the step's action all the same).
    fn ensure_actions(&mut self, what: &str, raw: &RawStep) -> Vec<(&'static str, Action)> {
        use super::ensure::Ensure;
        let written = [
            raw.line.clone().map(Ensure::Line),
            raw.service.clone().map(Ensure::Service),
            raw.package.clone().map(Ensure::Package),
        ];
        let mut out = Vec::new();
        for ensure in written.into_iter().flatten() {
            for p in ensure.problems(true) {
                self.error(format!("{what}: {}", p.message), p.hint);
            }
            out.push((ensure.kind(), Action::Ensure(ensure)));
        }
        out
    }

    /// The steps this one needs, each known (else an error with "did you mean").
    fn needs(&mut self, what: &str, raw: &RawStep, names: &[&str]) -> Vec<Need> {
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
        needs
    }

    /// The step's `needs` and, for a handler, what it listens to: a handler also needs
    /// the steps it listens to (on its own host, see `crate::plan`).
    fn needs_and_listen(
        &mut self,
        what: &str,
        raw: &RawStep,
        names: &[&str],
    ) -> (Vec<Need>, Vec<StepId>) {
        let mut needs = self.needs(what, raw, names);
        let listen = self.listen(what, raw, names);
        for &step in &listen {
            if !needs.iter().any(|n| n.step == step) {
                needs.push(Need {
                    step,
                    scope: NeedScope::Auto,
                });
            }
        }
        (needs, listen)
    }

    /// `changed_when:` checked: only on a `run` step, one of its four forms.
    fn changed_when(&mut self, what: &str, raw: &RawStep, action: &Action) -> ChangeRule {
        use serde_yaml::Value;
        let Some(value) = &raw.changed_when else {
            return ChangeRule::Always;
        };
        if !matches!(action, Action::Run(_)) {
            self.error(
                format!("{what}: `changed_when` on a `{}` step", action.kind()),
                "`changed_when` says how a `run` command reports a change; `template` and `upload` report one themselves (the file differed), a `probe` never changes anything: remove it",
            );
            return ChangeRule::Always;
        }
        let text = |map: &serde_yaml::Mapping, key: &str| match map.get(key) {
            Some(Value::String(t)) if !t.is_empty() => Some(t.clone()),
            _ => None,
        };
        let rule = match value {
            Value::Bool(true) => Some(ChangeRule::Always),
            Value::Bool(false) => Some(ChangeRule::Never),
            Value::Mapping(map) if map.len() == 1 => text(map, "stdout_contains")
                .map(ChangeRule::StdoutContains)
                .or_else(|| text(map, "stdout_lacks").map(ChangeRule::StdoutLacks)),
            _ => None,
        };
        rule.unwrap_or_else(|| {
            let shown = serde_json::to_string(value).unwrap_or_default();
            self.error(
                format!("{what}: `changed_when: {shown}` is not a rule pony knows"),
                "write `changed_when: false` (never a change), `true` (the default: every success is a change), `{ stdout_contains: \"TEXT\" }` or `{ stdout_lacks: \"TEXT\" }` (TEXT not empty)",
            );
            ChangeRule::Always
        })
    }

    /// `listen:` checked: known steps (else "did you mean"), not the step itself, a
    /// `per: host` handler listening to `per: host` steps (a handler runs per host on
    /// what changed on that host).
    fn listen(&mut self, what: &str, raw: &RawStep, names: &[&str]) -> Vec<StepId> {
        let Some(listened) = &raw.listen else {
            return Vec::new();
        };
        if listened.is_empty() {
            self.error(
                format!("{what}: `listen` is empty"),
                "name the steps whose changes run this handler, e.g. `listen: [postfix config]`, or remove `listen`",
            );
        }
        if matches!(raw.per, Some(Per::Region | Per::Run)) {
            self.error(
                format!("{what}: a handler (`listen`) with `per: region|run`"),
                "a handler runs on each host where a step it listens to changed something: remove `per`",
            );
        }
        let mut out = Vec::new();
        for name in listened {
            let Some(step) = names.iter().position(|n| *n == name.as_str()) else {
                let mut d = Diagnostic::new(
                    self.path,
                    format!("{what} listens to unknown step `{name}`"),
                );
                d = match closest(name, names.iter().copied()) {
                    Some(best) => d.hint(format!("did you mean `{best}`?")),
                    None => d.hint(format!("steps are: {}", names.join(", "))),
                };
                self.errors.push(d);
                continue;
            };
            if *name == raw.name {
                self.error(
                    format!("{what} listens to itself"),
                    "a handler listens to the steps that notify it: remove its own name from `listen`",
                );
            } else if !out.contains(&step) {
                out.push(step);
            }
        }
        out
    }

    /// What a handler listens to must run per host (it is told of a change on its
    /// own host).
    pub(super) fn check_listened(&mut self, steps: &[Step]) {
        for step in steps {
            for &listened in &step.listen {
                let Some(heard) = steps.get(listened) else {
                    continue;
                };
                if heard.per != Per::Host {
                    self.error(
                        format!(
                            "step `{}` listens to `{}`, a `per: {}` step",
                            step.name,
                            heard.name,
                            per_name(heard.per)
                        ),
                        "a handler runs on each host where a step it listens to changed something: listen to steps that run per host, or use `needs:`",
                    );
                }
            }
        }
    }

    /// A capture names a variable later templates use.
    fn check_capture(&mut self, what: &str, capture: &str) {
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

    /// How many of the step's tasks one delegate host runs at once (at least 1).
    fn delegate_parallel(&mut self, what: &str, raw: &RawStep) -> usize {
        let delegate_parallel = raw.delegate_parallel.unwrap_or(1);
        if raw.delegate_parallel.is_some() && raw.delegate.is_none() {
            self.error(
                format!("{what}: `delegate_parallel` without `delegate`"),
                "add `delegate: HOST` (e.g. `delegate: \"{{ lb_host }}\"`), or remove `delegate_parallel`",
            );
        }
        if delegate_parallel == 0 {
            self.error(
                format!("{what}: `delegate_parallel` is 0, so no task could ever run"),
                "give at least 1 (the default: one task at a time per delegate host)",
            );
        }
        delegate_parallel
    }

    /// A dead man's switch runs the step's rollback on the host the step took out of
    /// service: it needs a rollback, one host per task, and that host to run it.
    fn dead_man_rules(&mut self, what: &str, raw: &RawStep, rollback: bool, bound: Duration) {
        if !rollback {
            self.error(
                format!("{what}: `dead_man` without `rollback`"),
                "a dead man's switch runs the step's rollback on the host when the controller goes silent: add `rollback:` (e.g. the command that puts the host back in service), or remove `dead_man`",
            );
        }
        if matches!(raw.per, Some(Per::Region | Per::Run)) {
            self.error(
                format!("{what}: `dead_man` on a `per: region|run` step"),
                "a dead man's switch watches one host: use it on a step that runs per host",
            );
        }
        if raw.delegate.is_some() {
            self.error(
                format!("{what}: `dead_man` with `delegate`"),
                "the watchdog runs on the host the step works on; a delegated step's commands run elsewhere: remove one of them",
            );
        }
        if bound < Duration::from_secs(2) {
            self.error(
                format!("{what}: `dead_man` of {} is shorter than the controller's re-arming can keep up with", humantime::format_duration(bound)),
                "give at least 2s (e.g. `dead_man: 10m`): the controller re-arms every third of it",
            );
        }
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
