//! A task's templates rendered for its target: the action (command, upload content or
//! probe), its guards and the `become` wrapping, and the same for its rollback command;
//! also their forms for a person to read (`--dry-run`, without the `sudo` wrapping).

use super::sha256;
use crate::inventory::Vars;
use crate::plan::{Plan, Task};
use crate::playbook::template;
use crate::playbook::{Action, ChangeRule, Step, Until};
use std::time::Duration;

/// A task with every template rendered for its target.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    pub action: RenderedAction,
    pub creates: Option<String>,
    pub unless: Option<String>,
    pub capture: Option<String>,
    pub until: Option<Until>,
    pub timeout: Option<Duration>,
    pub retries: u32,
    pub retry_delay: Duration,
    /// The step's dead man's switch, armed on the host before the action runs.
    pub dead_man: Option<crate::exec::dead_man::Switch>,
    /// `changed_when:` of a `run` step: whether its success reports a change.
    pub changed_when: ChangeRule,
}

#[derive(Debug, Clone)]
pub enum RenderedAction {
    /// The full shell command (already wrapped in `sudo -n sh -s` for `become`).
    Run(String),
    /// File content to place at `dest` with `mode`.
    Put {
        content: Vec<u8>,
        dest: String,
        mode: Option<u32>,
        become_root: bool,
    },
    /// A protocol probe through a port forward over the host's connection.
    Probe(crate::playbook::Probe),
    /// An everyday action (`line`, `service`, `package`), run by [`super::ensure`].
    Ensure {
        action: crate::playbook::ensure::Ensure,
        become_root: bool,
    },
}

impl RenderedAction {
    /// What `--dry-run` prints.
    pub fn describe(&self) -> String {
        match self {
            RenderedAction::Run(command) => command.clone(),
            RenderedAction::Put {
                content,
                dest,
                mode,
                ..
            } => {
                format!(
                    "put {} bytes (sha256 {}) at {dest}{}",
                    content.len(),
                    &sha256(content)[..12],
                    mode.map(|m| format!(" mode {m:o}")).unwrap_or_default()
                )
            }
            RenderedAction::Probe(probe) => {
                format!("probe {}", probe.describe())
            }
            RenderedAction::Ensure { action, .. } => action.describe(),
        }
    }
}

/// The template context of a task: merged vars, captures and built-ins.
pub fn context(plan: &Plan, task: &Task, run_id: &str, captures: &Vars) -> minijinja::Value {
    plan.template_context(task, run_id, captures)
}

fn render(
    env: &minijinja::Environment<'_>,
    field: &str,
    source: &str,
    ctx: &minijinja::Value,
) -> Result<String, String> {
    env.render_str(source, ctx).map_err(|e| {
        format!(
            "cannot render `{field}`: {}",
            e.detail()
                .map(str::to_string)
                .unwrap_or_else(|| e.to_string())
        )
    })
}

/// `become`: the command runs in `sudo -n sh -s`, which reads it from stdin, so neither
/// the host's process list nor sudo's log shows it.
pub(super) fn with_become(command: String, become_root: bool) -> String {
    if become_root {
        crate::transport::on_stdin("sudo -n", &command)
    } else {
        command
    }
}

/// Renders a task's action and guards.
pub fn render_task(plan: &Plan, step: &Step, ctx: &minijinja::Value) -> Result<TaskSpec, String> {
    render_task_as(plan, step, ctx, step.become_root)
}

/// What a person reads of a task (`--dry-run`): the commands as written, without the
/// `sudo -n sh -s` here-document that `become` wraps them in on the way to the host.
pub fn render_task_for_display(
    plan: &Plan,
    step: &Step,
    ctx: &minijinja::Value,
) -> Result<TaskSpec, String> {
    render_task_as(plan, step, ctx, false)
}

/// [`render_rollback`] for a person to read, like [`render_task_for_display`].
pub fn render_rollback_for_display(
    step: &Step,
    ctx: &minijinja::Value,
) -> Result<Option<String>, String> {
    render_rollback_as(step, ctx, false)
}

fn render_task_as(
    plan: &Plan,
    step: &Step,
    ctx: &minijinja::Value,
    become_root: bool,
) -> Result<TaskSpec, String> {
    let env = template::environment();
    let optional = |field: &str, value: &Option<String>| {
        value
            .as_ref()
            .map(|v| render(env, field, v, ctx))
            .transpose()
    };
    let action = match &step.action {
        Action::Run(command) => {
            RenderedAction::Run(with_become(render(env, "run", command, ctx)?, become_root))
        }
        Action::Upload(t) | Action::Template(t) => {
            let src = render(env, "src", &t.src, ctx)?;
            let path = plan.playbook.source_path(&src);
            let bytes = plan.playbook.read_source(&src).map_err(|e| e.to_string())?;
            let content = if matches!(step.action, Action::Template(_)) {
                let text = String::from_utf8(bytes)
                    .map_err(|_| format!("template {} is not UTF-8", path.display()))?;
                render(env, "template", &text, ctx)?.into_bytes()
            } else {
                bytes
            };
            let mut dest = render(env, "dest", &t.dest, ctx)?;
            if dest.ends_with('/') {
                dest.push_str(
                    path.file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or("upload"),
                );
            }
            RenderedAction::Put {
                content,
                dest,
                mode: t.mode,
                become_root: step.become_root,
            }
        }
        Action::Probe(probe) => {
            RenderedAction::Probe(probe.rendered(|field, text| render(env, field, text, ctx))?)
        }
        Action::Ensure(ensure) => RenderedAction::Ensure {
            action: ensure.rendered(|field, text| render(env, field, text, ctx))?,
            become_root: step.become_root,
        },
    };
    Ok(TaskSpec {
        action,
        creates: optional("creates", &step.creates)?,
        unless: optional("unless", &step.unless)?.map(|u| with_become(u, become_root)),
        capture: step.capture.clone(),
        until: step.until,
        timeout: step.timeout,
        retries: step.retries,
        retry_delay: step.retry_delay,
        dead_man: None,
        changed_when: step.changed_when.clone(),
    })
}

/// Renders a step's rollback command for a target, if it has one.
pub fn render_rollback(step: &Step, ctx: &minijinja::Value) -> Result<Option<String>, String> {
    render_rollback_as(step, ctx, step.become_root)
}

fn render_rollback_as(
    step: &Step,
    ctx: &minijinja::Value,
    become_root: bool,
) -> Result<Option<String>, String> {
    let env = template::environment();
    step.rollback
        .as_ref()
        .map(|r| render(env, "rollback", r, ctx).map(|c| with_become(c, become_root)))
        .transpose()
}
