//! Running the everyday actions (`line:`, `service:`, `package:`, modelled in
//! [`crate::playbook::ensure`]) on a host, over the connection `run` uses, as sh scripts
//! (wrapped in `sudo` for `become`) whose last line tells whether the host changed and
//! how (`PONY-RESULT changed|unchanged key=value …`). A task whose action found the host
//! as asked is skipped with the reason (as an upload whose file is in place): nothing
//! changed, so nothing to roll back and no handler to notify. A failure names the host
//! and carries what the host printed. Check mode (`--check`) runs the same scripts in
//! their read-only form.

use super::render::with_become;
use super::{run_command, sha256, skipped, Retry, TaskRun, TaskSpec, GUARD_TIMEOUT};
use crate::exec::hosts::HostPool;
use crate::playbook::ensure::{Ensure, Line};
use crate::transport::{CommandOutput, TransportError};
use std::collections::BTreeMap;
use std::time::Duration;

mod line;
mod package;
mod service;

/// The `key=value` fields of a script's last line.
pub struct Fields(BTreeMap<String, String>);

impl Fields {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

/// A script's answer: whether the host changed (or would), and the fields.
struct Reply {
    changed: bool,
    fields: Fields,
    /// What the host printed before the last line.
    said: String,
}

/// Why an action did not get its answer.
enum Failure {
    /// The connection broke or timed out.
    Transport(TransportError),
    /// The host answered with a failure: the message (naming the host), and its output.
    Host {
        error: String,
        output: Option<CommandOutput>,
    },
}

/// Runs the action on `host` (with the step's `retries` for failures the host reports).
pub(super) async fn execute(
    pool: &HostPool,
    host: usize,
    action: &Ensure,
    become_root: bool,
    spec: &TaskSpec,
    mut run: TaskRun,
) -> TaskRun {
    let mut retry = Retry::new(spec);
    loop {
        run.attempts += 1;
        run.error = None;
        let failure = match attempt(pool, host, action, become_root, spec.timeout, &mut run).await {
            Ok((true, text)) => {
                run.ok = true;
                run.exit_code = Some(0);
                run.stdout.extend_from_slice(format!("{text}\n").as_bytes());
                return run;
            }
            Ok((false, text)) => {
                run.exit_code = Some(0);
                run.stdout.extend_from_slice(format!("{text}\n").as_bytes());
                return skipped(run, text);
            }
            Err(failure) => failure,
        };
        match failure {
            Failure::Transport(e) => return run.failed(&e),
            Failure::Host { error, output } => {
                if let Some(out) = output {
                    run = run.with_output(out);
                }
                run.ok = false;
                run.error = Some(error);
            }
        }
        match retry.next_delay() {
            Some(delay) => tokio::time::sleep(delay).await,
            None => return run,
        }
    }
}

/// One attempt: whether the host changed, and what changed (or what it is already).
async fn attempt(
    pool: &HostPool,
    host: usize,
    action: &Ensure,
    become_root: bool,
    timeout: Option<Duration>,
    run: &mut TaskRun,
) -> Result<(bool, String), Failure> {
    let who = pool.host_name(host).to_string();
    if simulated(pool, host).await {
        // Nothing stands behind a simulated host: its answer is the run's sampled time
        // and outcome.
        let out = run_command(pool, host, "true", timeout, run)
            .await
            .map_err(Failure::Transport)?;
        if !out.success() {
            return Err(Failure::Host {
                error: format!("{} on {who} failed (simulated)", action.kind()),
                output: Some(out),
            });
        }
        return Ok((true, format!("{} (simulated)", action.describe())));
    }
    match action {
        Ensure::Line(l) => {
            let old = read(pool, host, l, become_root, run).await?;
            let edit = line::edit(old.as_deref(), l).map_err(|e| host_failure(&who, "line", e))?;
            let Some(edit) = edit else {
                return Ok((false, format!("line: {} already as asked", l.path)));
            };
            let digest = old.as_deref().map(sha256);
            let script = line::write_script(&l.path, digest.as_deref(), &edit.content);
            // The script carries the new content (base64): the log names it only, as an
            // upload's does, so that no secret in the line reaches the log encoded.
            let mut scratch = TaskRun::new();
            let written = ask(
                pool,
                host,
                &who,
                "line",
                script,
                become_root,
                timeout,
                &mut scratch,
            )
            .await;
            run.commands.push(format!(
                "(write {} bytes over {}, if it is still as read)",
                edit.content.len(),
                l.path
            ));
            written?;
            Ok((true, format!("{}: {}", l.path, edit.what)))
        }
        Ensure::Service(s) => {
            let script = service::script(s, false, service::SYSTEMD_DIR);
            let reply = ask(
                pool,
                host,
                &who,
                "service",
                script,
                become_root,
                timeout,
                run,
            )
            .await?;
            run.stdout.extend_from_slice(reply.said.as_bytes());
            Ok((
                reply.changed,
                service::summary(&s.name, &reply.fields, false),
            ))
        }
        Ensure::Package(p) => {
            let script = package::script(p, false);
            let reply = ask(
                pool,
                host,
                &who,
                "package",
                script,
                become_root,
                timeout,
                run,
            )
            .await?;
            run.stdout.extend_from_slice(reply.said.as_bytes());
            Ok((reply.changed, package::summary(&reply.fields, false)))
        }
    }
}

/// What an action would do, as check mode asks it (`super::preview` words it).
pub(super) enum Checked {
    /// A line's file would change from `old` (None: there is none) to `new`.
    File {
        dest: String,
        old: Option<Vec<u8>>,
        new: Vec<u8>,
    },
    /// A line's file is as asked.
    FileAsAsked { dest: String },
    /// A service or package would change: how.
    Would(String),
    /// A service or package is as asked: how it is.
    AsAsked(String),
}

/// What the action would do on `host`, changing nothing (`pony deploy --check`); an
/// error says why the host could not answer.
pub(super) async fn preview(
    pool: &HostPool,
    host: usize,
    action: &Ensure,
    become_root: bool,
) -> Result<Checked, String> {
    let mut run = TaskRun::new();
    let who = pool.host_name(host).to_string();
    let (changed, what) = match action {
        Ensure::Line(l) => {
            let old = read(pool, host, l, become_root, &mut run)
                .await
                .map_err(|f| f.message())?;
            let dest = l.path.clone();
            return match line::edit(old.as_deref(), l) {
                Err(e) => Err(host_failure(&who, "line", e).message()),
                Ok(None) => Ok(Checked::FileAsAsked { dest }),
                Ok(Some(edit)) => Ok(Checked::File {
                    dest,
                    old,
                    new: edit.content,
                }),
            };
        }
        Ensure::Service(s) => {
            let script = service::script(s, true, service::SYSTEMD_DIR);
            let r = ask(
                pool,
                host,
                &who,
                "service",
                script,
                become_root,
                None,
                &mut run,
            )
            .await;
            r.map(|r| (r.changed, service::summary(&s.name, &r.fields, true)))
        }
        Ensure::Package(p) => {
            let script = package::script(p, true);
            let r = ask(
                pool,
                host,
                &who,
                "package",
                script,
                become_root,
                None,
                &mut run,
            )
            .await;
            r.map(|r| (r.changed, package::summary(&r.fields, true)))
        }
    }
    .map_err(|f| f.message())?;
    Ok(if changed {
        Checked::Would(what)
    } else {
        Checked::AsAsked(what)
    })
}

/// The file `line:` edits, as it is on the host (None: there is none).
async fn read(
    pool: &HostPool,
    host: usize,
    l: &Line,
    become_root: bool,
    run: &mut TaskRun,
) -> Result<Option<Vec<u8>>, Failure> {
    let script = with_become(line::read_script(&l.path), become_root);
    let out = run_command(pool, host, &script, Some(GUARD_TIMEOUT), run)
        .await
        .map_err(Failure::Transport)?;
    let who = pool.host_name(host);
    if !out.success() {
        let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let hint = if become_root {
            ""
        } else {
            " (does it need `become: true`?)"
        };
        return Err(Failure::Host {
            error: format!("line on {who}: cannot read {}: {said}{hint}", l.path),
            output: Some(out),
        });
    }
    let newline = out.stdout.iter().position(|&b| b == b'\n');
    let (head, body) = match newline {
        Some(i) => (&out.stdout[..i], out.stdout[i + 1..].to_vec()),
        None => (&out.stdout[..], Vec::new()),
    };
    Ok((head == b"file").then_some(body))
}

/// Runs an action's script; its last line is the reply. A failure names the host and
/// says what the host printed.
#[allow(clippy::too_many_arguments)]
async fn ask(
    pool: &HostPool,
    host: usize,
    who: &str,
    kind: &str,
    script: String,
    become_root: bool,
    timeout: Option<Duration>,
    run: &mut TaskRun,
) -> Result<Reply, Failure> {
    let command = with_become(script, become_root);
    let out = run_command(pool, host, &command, timeout, run)
        .await
        .map_err(Failure::Transport)?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if !out.success() {
        let said = if stderr.is_empty() {
            super::tail(&stdout, 10)
        } else {
            super::tail(&stderr, 10)
        };
        let code = out
            .exit_code
            .map_or("killed by a signal".to_string(), |c| format!("exit {c}"));
        return Err(Failure::Host {
            error: format!("{kind} on {who} failed ({code}): {said}"),
            output: Some(out),
        });
    }
    parse(&stdout).ok_or_else(|| Failure::Host {
        error: format!(
            "{kind} on {who}: the host's answer has no result line (is its shell POSIX sh?): {}",
            super::tail(&stdout, 3)
        ),
        output: Some(out),
    })
}

/// The reply in a script's output: its last `PONY-RESULT` line, and what came before.
fn parse(stdout: &str) -> Option<Reply> {
    let text = stdout.trim_end();
    let (said, last) = match text.rfind('\n') {
        Some(i) => (&text[..=i], &text[i + 1..]),
        None => ("", text),
    };
    let mut words = last.strip_prefix("PONY-RESULT ")?.split_whitespace();
    let changed = match words.next()? {
        "changed" => true,
        "unchanged" => false,
        _ => return None,
    };
    let fields = words
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Some(Reply {
        changed,
        fields: Fields(fields),
        said: said.to_string(),
    })
}

fn host_failure(who: &str, kind: &str, error: String) -> Failure {
    Failure::Host {
        error: format!("{kind} on {who}: {error}"),
        output: None,
    }
}

impl Failure {
    fn message(&self) -> String {
        match self {
            Failure::Transport(e) => e.to_string(),
            Failure::Host { error, .. } => error.clone(),
        }
    }
}

async fn simulated(pool: &HostPool, host: usize) -> bool {
    match pool.connection(host).await {
        Ok(connection) => connection.is_simulated(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests;
