//! One task: render its templates for its target, then run it on the host's connection
//! with `creates`/`unless` guards, `retries`, `until` polling, `timeout`, reconnects after
//! connection failures, `capture`, and idempotent uploads (sha256 compare, temp + rename).

use super::hosts::HostPool;
use crate::inventory::Vars;
use crate::plan::{Plan, RunsOn, Task};
use crate::playbook::template::{self, shell_quote};
use crate::playbook::{Action, Step, Until};
use crate::transport::{CommandOutput, Connection, TransportError};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Reconnects after a connection broke mid-task, before the task fails.
const RECONNECTS: u32 = 2;
/// Guards are quick checks; they get their own short timeout.
const GUARD_TIMEOUT: Duration = Duration::from_secs(60);

/// Which task (or rollback command) a worker runs. The scheduler scopes each worker in
/// [`WORK`] so that a transport can tell tasks apart: the simulated one samples the
/// task's step duration; ssh and local ignore it. Checks run outside any scope.
#[derive(Debug, Clone, Copy)]
pub struct Work {
    pub node: usize,
    pub step: crate::playbook::StepId,
    pub host: usize,
    pub rollback: bool,
}

tokio::task_local! {
    pub static WORK: Work;
}

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
fn with_become(command: String, become_root: bool) -> String {
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
            let path = plan.playbook.dir().join(&src);
            let bytes =
                std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
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

/// How a task ended.
#[derive(Debug, Clone)]
pub struct TaskRun {
    pub ok: bool,
    /// False when a guard skipped it or an upload found the file already in place.
    pub changed: bool,
    pub skipped_reason: Option<String>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub attempts: u32,
    pub captured: Option<(String, String)>,
    pub duration: Duration,
    /// The commands that ran, for the host's log.
    pub commands: Vec<String>,
    /// Whether the host was reached at all; a task that never reached its host changed
    /// nothing there and has nothing to roll back.
    pub reached: bool,
    /// No connection could be made to the host (refused, timed out, auth, host key).
    pub unreachable: bool,
    /// The delegate host the commands ran on, for a delegated task.
    pub delegate: Option<String>,
}

impl TaskRun {
    fn new() -> Self {
        TaskRun {
            ok: false,
            changed: true,
            skipped_reason: None,
            exit_code: None,
            error: None,
            stdout: Vec::new(),
            stderr: Vec::new(),
            attempts: 0,
            captured: None,
            duration: Duration::ZERO,
            commands: Vec::new(),
            reached: false,
            unreachable: false,
            delegate: None,
        }
    }

    /// Whether the task may have changed its host (and so has something to roll back).
    pub fn changed_host(&self) -> bool {
        if self.ok {
            self.skipped_reason.is_none()
        } else {
            self.reached
        }
    }

    /// A task that could not even start (e.g. a template failed to render).
    pub fn not_started(error: String) -> Self {
        TaskRun {
            changed: false,
            error: Some(error),
            ..TaskRun::new()
        }
    }

    fn with_output(mut self, output: CommandOutput) -> Self {
        self.ok = output.success();
        self.exit_code = output.exit_code;
        if !self.ok && self.error.is_none() {
            self.error = Some(match output.exit_code {
                Some(code) => format!("exited with {code}"),
                None => "killed by a signal".to_string(),
            });
        }
        self.stdout = output.stdout;
        self.stderr = output.stderr;
        self
    }

    fn failed(mut self, error: &TransportError) -> Self {
        self.ok = false;
        self.error = Some(error.to_string());
        self
    }

    /// The last `lines` lines of stderr (or stdout when stderr is empty).
    pub fn tail(&self, lines: usize) -> String {
        let text = if self.stderr.iter().any(|b| !b.is_ascii_whitespace()) {
            &self.stderr
        } else {
            &self.stdout
        };
        tail(&String::from_utf8_lossy(text), lines)
    }
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub fn sha256(content: &[u8]) -> String {
    hex::encode(Sha256::digest(content))
}

/// Runs `command`, reconnecting when the connection broke underneath it.
async fn run_command(
    pool: &HostPool,
    host: usize,
    command: &str,
    timeout: Option<Duration>,
    run: &mut TaskRun,
) -> Result<CommandOutput, TransportError> {
    run.commands.push(command.to_string());
    let mut reconnects = 0;
    loop {
        let connection: Arc<dyn Connection> = pool.connection(host).await?;
        match connection.run(command, timeout).await {
            Err(e @ TransportError::Disconnected(_)) if reconnects < RECONNECTS => {
                tracing::info!("connection lost, reconnecting: {e}");
                pool.reset(host).await;
                reconnects += 1;
            }
            other => return other,
        }
    }
}

/// Runs one rendered task on its host, or on its delegate (after waiting for a turn
/// there; the wait counts in the task's duration).
pub async fn execute(pool: &HostPool, on: impl Into<RunsOn>, spec: &TaskSpec) -> TaskRun {
    let on = on.into();
    let started = Instant::now();
    let _turn = match on {
        RunsOn::Delegate(delegate) => pool.delegate_turn(delegate).await,
        RunsOn::Host(_) => None,
    };
    let mut run = execute_inner(pool, on, spec).await;
    run.duration = started.elapsed();
    if let RunsOn::Delegate(delegate) = on {
        run.delegate = Some(pool.host_name(delegate).to_string());
    }
    run
}

async fn execute_inner(pool: &HostPool, on: RunsOn, spec: &TaskSpec) -> TaskRun {
    let host = on.host();
    let mut run = TaskRun::new();
    if let Err(e) = pool.connection(host).await {
        // The connection attempts were the task's attempts: report the real number.
        run.attempts = e.connect_attempts().unwrap_or(1);
        // An unreachable delegate is the target's failure, not the target being down.
        run.unreachable = on == RunsOn::Host(host);
        return run.failed(&e);
    }
    run.reached = true;
    let _session = pool.session(host).await;
    if let Some(path) = &spec.creates {
        match run_command(
            pool,
            host,
            &format!("test -e {}", shell_quote(path)),
            Some(GUARD_TIMEOUT),
            &mut run,
        )
        .await
        {
            Ok(out) if out.success() => return skipped(run, format!("creates: {path} exists")),
            Ok(_) => {}
            Err(e) => return run.failed(&e),
        }
    }
    if let Some(check) = &spec.unless {
        match run_command(pool, host, check, Some(GUARD_TIMEOUT), &mut run).await {
            Ok(out) if out.success() => return skipped(run, "unless: check succeeded".into()),
            Ok(_) => {}
            Err(e) => return run.failed(&e),
        }
    }
    match &spec.action {
        RenderedAction::Run(command) => run_with_retries(pool, host, command, spec, run).await,
        RenderedAction::Put {
            content,
            dest,
            mode,
            become_root,
        } => put(pool, host, content, dest, *mode, *become_root, run).await,
        RenderedAction::Probe(probe) => probe_with_retries(pool, host, probe, spec, run).await,
    }
}

fn skipped(mut run: TaskRun, reason: String) -> TaskRun {
    run.ok = true;
    run.changed = false;
    run.skipped_reason = Some(reason);
    run
}

async fn run_with_retries(
    pool: &HostPool,
    host: usize,
    command: &str,
    spec: &TaskSpec,
    mut run: TaskRun,
) -> TaskRun {
    let mut retry = Retry::new(spec);
    loop {
        run.attempts += 1;
        let outcome = run_command(pool, host, command, spec.timeout, &mut run).await;
        let failure = match outcome {
            Ok(output) if output.success() => {
                let mut run = run.with_output(output);
                if let Some(name) = &spec.capture {
                    run.captured = Some((
                        name.clone(),
                        String::from_utf8_lossy(&run.stdout).trim().to_string(),
                    ));
                }
                return run;
            }
            Ok(output) => run.with_output(output),
            Err(e @ TransportError::Timeout(_)) => run.failed(&e),
            Err(e) => return run.failed(&e),
        };
        run = failure;
        match retry.next_delay() {
            Some(delay) => tokio::time::sleep(delay).await,
            None => return run,
        }
        run.error = None;
    }
}

/// What is left of a task's `until` polls and `retries`, and how long to wait before
/// the next attempt; `until` polls come first.
struct Retry {
    polls_left: u32,
    poll_delay: Duration,
    retries_left: u32,
    retry_delay: Duration,
}

impl Retry {
    fn new(spec: &TaskSpec) -> Self {
        Retry {
            polls_left: spec.until.map(|u| u.retries).unwrap_or(0),
            poll_delay: spec.until.map(|u| u.delay).unwrap_or_default(),
            retries_left: spec.retries,
            retry_delay: spec.retry_delay,
        }
    }

    fn next_delay(&mut self) -> Option<Duration> {
        if self.polls_left > 0 {
            self.polls_left -= 1;
            Some(self.poll_delay)
        } else if self.retries_left > 0 {
            self.retries_left -= 1;
            Some(self.retry_delay)
        } else {
            None
        }
    }
}

async fn probe_with_retries(
    pool: &HostPool,
    host: usize,
    probe: &crate::playbook::Probe,
    spec: &TaskSpec,
    mut run: TaskRun,
) -> TaskRun {
    let mut retry = Retry::new(spec);
    let what = format!("probe {}", probe.describe());
    loop {
        run.attempts += 1;
        run.commands.push(what.clone());
        let connection = match pool.connection(host).await {
            Ok(connection) => connection,
            Err(e) => return run.failed(&e),
        };
        let checked = match connection.simulated_probe() {
            Some(answer) => answer.await,
            None => super::probe::check(connection.as_ref(), probe, spec.timeout).await,
        };
        match checked {
            Ok(seen) => {
                run.ok = true;
                run.error = None;
                run.exit_code = Some(0);
                run.stdout = format!("{seen}\n").into_bytes();
                return run;
            }
            Err(why) => {
                run.ok = false;
                run.exit_code = None;
                run.stderr = format!("{why}\n").into_bytes();
                run.error = Some(why);
            }
        }
        match retry.next_delay() {
            Some(delay) => tokio::time::sleep(delay).await,
            None => return run,
        }
    }
}

async fn put(
    pool: &HostPool,
    host: usize,
    content: &[u8],
    dest: &str,
    mode: Option<u32>,
    become_root: bool,
    mut run: TaskRun,
) -> TaskRun {
    run.attempts = 1;
    let want = sha256(content);
    let check = format!("sha256sum {} 2>/dev/null || true", shell_quote(dest));
    match run_command(
        pool,
        host,
        &with_become(check, become_root),
        Some(GUARD_TIMEOUT),
        &mut run,
    )
    .await
    {
        Ok(out)
            if String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .next()
                == Some(want.as_str()) =>
        {
            return skipped(run, "upload: content already in place".into());
        }
        Ok(_) => {}
        Err(e) => return run.failed(&e),
    }
    let file_name = std::path::Path::new(dest)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("upload");
    let temp = if become_root {
        format!("/tmp/.pony-{}-{}", file_name, &want[..12])
    } else {
        let dir = std::path::Path::new(dest)
            .parent()
            .map(|p| p.to_string_lossy().to_string())
            .unwrap_or_default();
        let dir = if dir.is_empty() { ".".to_string() } else { dir };
        if let Err(e) = run_command(
            pool,
            host,
            &format!("mkdir -p {}", shell_quote(&dir)),
            Some(GUARD_TIMEOUT),
            &mut run,
        )
        .await
        {
            return run.failed(&e);
        }
        format!("{dir}/.{file_name}.pony-tmp")
    };
    let connection = match pool.connection(host).await {
        Ok(c) => c,
        Err(e) => return run.failed(&e),
    };
    run.commands
        .push(format!("write {} bytes to {temp}", content.len()));
    if let Err(e) = connection.write_file(&temp, content).await {
        return run.failed(&e);
    }
    let chmod = mode
        .map(|m| format!("chmod {m:o} {} && ", shell_quote(&temp)))
        .unwrap_or_default();
    let mkdir = if become_root {
        format!("mkdir -p \"$(dirname {})\" && ", shell_quote(dest))
    } else {
        String::new()
    };
    let install = with_become(
        format!(
            "{mkdir}{chmod}mv -f {} {}",
            shell_quote(&temp),
            shell_quote(dest)
        ),
        become_root,
    );
    match run_command(pool, host, &install, Some(GUARD_TIMEOUT), &mut run).await {
        Ok(out) => run.with_output(out),
        Err(e) => run.failed(&e),
    }
}

/// What a task ran and printed, for its host's log.
pub fn log_text(label: &str, run: &TaskRun) -> String {
    let on = run
        .delegate
        .as_ref()
        .map(|d| format!(" on delegate {d}"))
        .unwrap_or_default();
    let mut text = format!(
        "== {} {label}{on} ({} attempt(s), {:?})\n",
        humantime::format_rfc3339_millis(std::time::SystemTime::now()),
        run.attempts,
        run.duration
    );
    for command in &run.commands {
        text.push_str(&format!("$ {command}\n"));
    }
    text.push_str(&String::from_utf8_lossy(&run.stdout));
    text.push_str(&String::from_utf8_lossy(&run.stderr));
    if let Some(error) = &run.error {
        text.push_str(&format!("!! {error}\n"));
    }
    text
}
