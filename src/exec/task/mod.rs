//! One task: render its templates for its target, then run it on the host's connection
//! with `creates`/`unless` guards, `retries`, `until` polling, `timeout`, reconnects after
//! connection failures, `capture`, and idempotent uploads (sha256 compare, temp + rename).

use super::hosts::HostPool;
use crate::plan::RunsOn;
use crate::shell::quote as shell_quote;
use crate::transport::{CommandOutput, Connection, TransportError};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

mod chain;
mod ensure;
mod preview;
mod render;
mod upload;

pub use chain::{execute_chain, Cut, Link, NotRun};
pub use preview::{handler_preview, preview, Preview};

pub use render::{
    context, render_rollback, render_rollback_for_display, render_task, render_task_for_display,
    RenderedAction, TaskSpec,
};
use upload::put;

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

/// How a task ended.
#[derive(Debug, Clone)]
pub struct TaskRun {
    pub ok: bool,
    /// False when a guard skipped it, an upload found the file already in place, or a
    /// `run` step's `changed_when:` said so. It tells handlers and reports whether the
    /// task changed its host; [`TaskRun::changed_host`] (what a rollback undoes) does
    /// not read it.
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
    /// Its start could not be journaled, so it did not start.
    pub not_journaled: bool,
    /// A task of a chain that did not start on its host, and why.
    pub not_run: Option<NotRun>,
    /// What pony itself has to say on the task's stderr, before the command's own
    /// (e.g. that the step's dead man's switch fired while no controller watched).
    preface: Vec<u8>,
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
            not_journaled: false,
            not_run: None,
            preface: Vec::new(),
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

    /// Whether the task reports a change on its host: it succeeded, ran its action (no
    /// guard skipped it) and changed something (what a handler listens for).
    pub fn reports_change(&self) -> bool {
        self.ok && self.changed && self.skipped_reason.is_none()
    }

    /// A handler that nothing it listens to notified on its host: skipped, without
    /// contacting the host.
    pub fn unnotified(reason: String) -> Self {
        // Its reason is also its output: the journal's record and the host's log say
        // why it did not run.
        TaskRun {
            stdout: format!("{reason}\n").into_bytes(),
            ..skipped(TaskRun::new(), reason)
        }
    }

    /// A task whose start the journal could not record: it did not run.
    pub fn not_journaled() -> Self {
        TaskRun {
            not_journaled: true,
            ..TaskRun::not_started("the journal could not record its start".into())
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
        self.stderr = [self.preface.as_slice(), &output.stderr].concat();
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
    if let Some(switch) = &spec.dead_man {
        if let Err(error) = arm(pool, host, switch, &mut run).await {
            return run.failed(&TransportError::Other(error));
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
        RenderedAction::Ensure {
            action,
            become_root,
        } => ensure::execute(pool, host, action, *become_root, spec, run).await,
    }
}

/// Arms the step's dead man's switch on the host (after the guards: a skipped step took
/// nothing out of service), and has it re-armed from now on. A switch that cannot be
/// armed fails the task before its action runs.
async fn arm(
    pool: &HostPool,
    host: usize,
    switch: &crate::exec::dead_man::Switch,
    run: &mut TaskRun,
) -> Result<(), String> {
    let connection = pool.connection(host).await.map_err(|e| e.to_string())?;
    if connection.is_simulated() {
        return Ok(());
    }
    let command = switch.arm_command();
    run.commands.push(format!(
        "(arm the dead man's switch: its rollback runs on the host after {} without the controller)",
        humantime::format_duration(switch.bound)
    ));
    let out = connection
        .run(&command, Some(GUARD_TIMEOUT))
        .await
        .map_err(|e| format!("could not arm the dead man's switch: {e}"))?;
    // What the host said of an earlier controller's switch goes to the task's output.
    run.preface.extend_from_slice(&out.stderr);
    run.stderr.extend_from_slice(&out.stderr);
    if !out.success() || !String::from_utf8_lossy(&out.stdout).contains("armed") {
        return Err(format!(
            "could not arm the dead man's switch (exit {:?}): {}",
            out.exit_code,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    pool.dead_men().armed(switch);
    Ok(())
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
                // What handlers and reports see; a rollback still undoes the step.
                run.changed = spec.changed_when.changed(&run.stdout);
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
