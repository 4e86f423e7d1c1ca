//! `pony exec`: an ad-hoc command (run by `sh`) on many hosts in parallel, at most
//! `--connections` at once (256 by default). The output is grouped: hosts whose stdout,
//! stderr and exit code are identical are folded into one group, so 6,000 hosts that agree
//! print one block and the odd ones stand out. Successful groups come first (largest
//! first), failures last, nearest the prompt. Exit 0 when the command succeeded everywhere,
//! 1 when it failed or could not run on some host. Connections are opened as for a deploy
//! (`transport::connect`): the hosts' own connect timeout and retries, `--handshakes` per
//! sshd.

use super::ping::{connections, connector, on_each_host, one_line, select, Reason};
use crate::events::SCHEMA_VERSION;
use crate::exit::Exit;
use crate::inventory::{HostId, Inventory};
use crate::report::{OutputFormat, Palette};
use crate::settings::Settings;
use crate::term::color_enabled;
use crate::transport::connect::Connector;
use crate::transport::{CommandOutput, TransportError};
use indexmap::IndexMap;
use serde::Serialize;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// What one host did.
enum Answer {
    Ran(CommandOutput),
    /// The connection could not be opened or broke, or the command timed out.
    Failed {
        reason: Option<Reason>,
        error: String,
    },
}

/// Hosts that answered alike.
#[derive(Debug, Serialize)]
struct Group {
    /// How many hosts.
    count: usize,
    hosts: Vec<String>,
    /// Whether the command succeeded (exit 0) there.
    ok: bool,
    exit_code: Option<i32>,
    stdout: String,
    stderr: String,
    /// Why the command did not run or finish (unreachable, timeout), if so.
    reason: Option<Reason>,
    error: Option<String>,
}

pub fn run(
    settings: &Settings,
    inventory: &Path,
    limit: Option<&str>,
    accept_new_host_keys: bool,
    timeout: Option<Duration>,
    handshakes: usize,
    command: &[String],
) -> anyhow::Result<Exit> {
    let command = command.join(" ");
    // A task renders `{{ var }}` with the host's vars; an ad-hoc command does not (it
    // runs as typed, like `ansible -m shell -a`), and says so rather than surprise.
    if command.contains("{{") || command.contains("{%") {
        eprintln!(
            "note: pony exec runs the command as typed: `{{{{ … }}}}` is not rendered with inventory vars (a playbook step renders them); the shell sees the braces"
        );
    }
    let (inventory, hosts) = select(inventory, limit)?;
    // The hosts' own connect timeout and retries, as a deploy would use them.
    let opener = connector(
        settings,
        &inventory,
        &hosts,
        accept_new_host_keys,
        handshakes,
    )?;
    let (inventory, opener, command) = (Arc::new(inventory), Arc::new(opener), Arc::new(command));
    let (answers, wall) = on_each_host(hosts.clone(), connections(settings), |host| {
        let (inventory, opener, command) = (inventory.clone(), opener.clone(), command.clone());
        async move {
            (
                host,
                exec(&inventory, host, &opener, &command, timeout).await,
            )
        }
    })?;
    let groups = group(&inventory, &hosts, answers);
    let failed: usize = groups.iter().filter(|g| !g.ok).map(|g| g.count).sum();
    match settings.output {
        OutputFormat::Json => print_json(&groups, hosts.len(), failed, wall),
        OutputFormat::Human => {
            let palette = Palette::new(color_enabled(
                settings.color,
                std::io::stdout().is_terminal(),
            ));
            crate::out!("{}", render(&groups, hosts.len(), failed, wall, &palette));
        }
    }
    // 1: the command failed somewhere (the code a failed run gets).
    Ok(if failed == 0 {
        Exit::Success
    } else {
        Exit::SOME_HOSTS_FAILED
    })
}

/// Runs the command on one host.
async fn exec(
    inventory: &Inventory,
    host: HostId,
    opener: &Connector,
    command: &str,
    timeout: Option<Duration>,
) -> Answer {
    let spec = &inventory.hosts[host];
    match opener.open(spec).await {
        Err(e) => failed(&e, spec.destination()),
        Ok(connection) => match connection.run(command, timeout).await {
            Ok(output) => Answer::Ran(output),
            Err(e) => failed(&e, spec.destination()),
        },
    }
}

/// A failure, with the host's own address taken out of the message so that hosts that
/// failed alike fold together, and the number of connection attempts when there were
/// retries.
fn failed(error: &TransportError, destination: &str) -> Answer {
    let reason = Reason::classify(&error.to_string());
    let mut text = one_line(&error.to_string());
    if let Some(attempts @ 2..) = error.connect_attempts() {
        text = format!("{text} (after {attempts} connection attempts)");
    }
    let error = text;
    let error = if destination.is_empty() {
        error
    } else {
        error.replace(destination, "HOST")
    };
    Answer::Failed {
        reason: Some(reason),
        error,
    }
}

/// Folds identical answers; groups in order: successes (largest first), then failures
/// (largest first); hosts in inventory order within a group.
fn group(inventory: &Inventory, order: &[HostId], answers: Vec<(HostId, Answer)>) -> Vec<Group> {
    let position: std::collections::HashMap<HostId, usize> =
        order.iter().enumerate().map(|(i, h)| (*h, i)).collect();
    let mut answers = answers;
    answers.sort_by_key(|(h, _)| position.get(h).copied().unwrap_or(usize::MAX));
    type Key = (Option<i32>, String, String, Option<Reason>, Option<String>);
    let mut groups: IndexMap<Key, Group> = IndexMap::new();
    for (host, answer) in answers {
        let key: Key = match answer {
            Answer::Ran(output) => (
                output.exit_code,
                String::from_utf8_lossy(&output.stdout).into_owned(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
                None,
                None,
            ),
            Answer::Failed { reason, error } => {
                (None, String::new(), String::new(), reason, Some(error))
            }
        };
        let name = inventory.hosts[host].name.clone();
        groups
            .entry(key.clone())
            .or_insert_with(|| Group {
                count: 0,
                hosts: Vec::new(),
                ok: key.0 == Some(0) && key.4.is_none(),
                exit_code: key.0,
                stdout: key.1.clone(),
                stderr: key.2.clone(),
                reason: key.3,
                error: key.4.clone(),
            })
            .hosts
            .push(name);
    }
    let mut groups: Vec<Group> = groups
        .into_values()
        .map(|mut g| {
            g.count = g.hosts.len();
            g
        })
        .collect();
    // Stable: equal groups keep the order of their first host.
    groups.sort_by_key(|g| (!g.ok, std::cmp::Reverse(g.count)));
    groups
}

/// `r1-c1-01, r1-c1-02, r1-c1-03, r2-c1-01` → `r1-c1-[01:03], r2-c1-01`: runs of names
/// that differ only in a trailing number, consecutive and of the same width, are written
/// as the inventory's ranges.
pub fn fold_names(names: &[String]) -> String {
    fn split(name: &str) -> Option<(&str, &str)> {
        let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        (digits > 0).then(|| name.split_at(name.len() - digits))
    }
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < names.len() {
        let Some((prefix, first)) = split(&names[i]) else {
            parts.push(names[i].clone());
            i += 1;
            continue;
        };
        let start: u64 = first.parse().unwrap_or(0);
        let mut j = i + 1;
        while j < names.len() {
            match split(&names[j]) {
                Some((p, n))
                    if p == prefix
                        && n.len() == first.len()
                        && n.parse::<u64>().ok() == Some(start + (j - i) as u64) =>
                {
                    j += 1
                }
                _ => break,
            }
        }
        if j - i >= 2 {
            let last = split(&names[j - 1]).map(|(_, n)| n).unwrap_or(first);
            parts.push(format!("{prefix}[{first}:{last}]"));
        } else {
            parts.push(names[i].clone());
        }
        i = j;
    }
    parts.join(", ")
}

fn render(
    groups: &[Group],
    hosts: usize,
    failed: usize,
    wall: Duration,
    palette: &Palette,
) -> String {
    let mut out = String::new();
    for g in groups {
        let what = match (&g.error, g.exit_code) {
            (Some(_), _) => format!(
                "did not run ({})",
                g.reason.map(|r| r.word()).unwrap_or("other")
            ),
            (None, Some(code)) => format!("exit {code}"),
            (None, None) => "killed by a signal".to_string(),
        };
        let noun = if g.count == 1 { "host" } else { "hosts" };
        let header = format!("{} {noun} ({what}): {}", g.count, fold_names(&g.hosts));
        out.push_str(&if g.ok {
            palette.green(&header)
        } else {
            palette.red(&header)
        });
        out.push('\n');
        if let Some(error) = &g.error {
            out.push_str(error);
            out.push('\n');
        }
        if !g.stdout.is_empty() {
            out.push_str(&g.stdout);
            if !g.stdout.ends_with('\n') {
                out.push('\n');
            }
        }
        if !g.stderr.is_empty() {
            out.push_str(&palette.dim("--- stderr"));
            out.push('\n');
            out.push_str(&g.stderr);
            if !g.stderr.ends_with('\n') {
                out.push('\n');
            }
        }
        if g.error.is_none() && g.stdout.is_empty() && g.stderr.is_empty() {
            out.push_str(&palette.dim("(no output)"));
            out.push('\n');
        }
        out.push('\n');
    }
    let distinct = groups.len();
    let line = format!(
        "{hosts} hosts: {} ok, {failed} failed; {distinct} distinct {}; {}",
        hosts - failed,
        if distinct == 1 { "output" } else { "outputs" },
        crate::duration::short(wall)
    );
    out.push_str(&palette.verdict(failed == 0, &line));
    out.push('\n');
    out
}

/// One JSON object per line: an `exec_group` per group (in the human order), then
/// `exec_summary`.
fn print_json(groups: &[Group], hosts: usize, failed: usize, wall: Duration) {
    use std::io::Write;
    let time = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let mut out = crate::term::Stdout;
    for g in groups {
        let mut line = serde_json::Map::new();
        line.insert("schema".into(), SCHEMA_VERSION.into());
        line.insert("time".into(), time.clone().into());
        line.insert("event".into(), "exec_group".into());
        if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(g) {
            line.extend(fields);
        }
        let _ = writeln!(out, "{}", serde_json::Value::Object(line));
    }
    let summary = serde_json::json!({
        "schema": SCHEMA_VERSION,
        "time": time,
        "event": "exec_summary",
        "hosts": hosts,
        "ok": hosts - failed,
        "failed": failed,
        "groups": groups.len(),
        "duration_ms": wall.as_millis() as u64,
    });
    let _ = writeln!(out, "{summary}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::fold_names;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn consecutive_names_fold_into_ranges() {
        assert_eq!(
            fold_names(&names(&["r1-c1-01", "r1-c1-02", "r1-c1-03", "r2-c1-01"])),
            "r1-c1-[01:03], r2-c1-01"
        );
        assert_eq!(
            fold_names(&names(&["mx-1", "mx-3", "web", "mx-4", "mx-5"])),
            "mx-1, mx-3, web, mx-[4:5]"
        );
        assert_eq!(fold_names(&names(&["a9", "a10"])), "a9, a10");
    }
}
