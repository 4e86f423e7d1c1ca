//! `pony ping`: reachability of every selected host, in parallel. Each host's connection is
//! opened (ssh: a multiplexed master, as a deploy opens it; local: its directory) and `true`
//! is run on it; the round trip is the time for both. Unreachable hosts are classified from
//! ssh's own words: auth, host key, timeout, refused, dns, network or other. Exit 0 only
//! when every host answered, 1 otherwise.
//!
//! [`select`], [`connector`] and [`on_each_host`] serve `pony exec` too; connections are opened and errors
//! classified by `transport::connect`, as for a deploy. Ping makes one attempt per host
//! (what is measured is what the host does now) with `--timeout` as its limit.

use crate::events::SCHEMA_VERSION;
use crate::exit::Exit;
use crate::inventory::{ConnectionKind, HostId, Inventory};
use crate::report::{OutputFormat, Palette};
use crate::settings::Settings;
use crate::term::color_enabled;
use crate::transport::connect::Connector;
pub use crate::transport::connect::Reason;
use crate::transport::ssh::{ControlDirError, SshOptions};
use serde::Serialize;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Connections open at once without `--connections`, as `strategy.connections` defaults to.
const CONNECTIONS: usize = 256;

/// The inventory and the hosts `--limit` selects (all without it), in inventory order.
pub fn select(path: &Path, limit: Option<&str>) -> anyhow::Result<(Inventory, Vec<HostId>)> {
    let inventory = crate::inventory::load(path)?;
    let selected = crate::inventory::pattern::select(&inventory, limit)
        .map_err(crate::diag::Diagnostics::from)?;
    let hosts = selected.iter().collect();
    Ok((inventory, hosts))
}

/// Opens the selected hosts' connections as a deploy does (the shared [`Connector`]):
/// `handshakes` at once per sshd; `timeout`, when given, replaces every host's
/// `ssh.connect_timeout` and `retries` its `ssh.connect_retries`.
pub fn connector(
    settings: &Settings,
    inventory: &Inventory,
    hosts: &[HostId],
    accept_new_host_keys: bool,
    handshakes: usize,
) -> Result<Connector, ControlDirError> {
    let ssh = SshOptions::new(&settings.state_dir, accept_new_host_keys);
    let selected = || hosts.iter().map(|&h| &inventory.hosts[h]);
    if selected().any(|h| h.connection == ConnectionKind::Ssh) {
        ssh.secure_control_dir()?;
    }
    Ok(Connector::new(
        ssh,
        settings.state_dir.join("hosts"),
        selected(),
        handshakes,
    ))
}

/// Connections open at once: `--connections`, else [`CONNECTIONS`]; at least one.
pub fn connections(settings: &Settings) -> usize {
    settings.connections.unwrap_or(CONNECTIONS).max(1)
}

/// Runs `each` for every host on a runtime of its own, at most `connections` hosts at
/// once; returns the answers in the order of `hosts`, and how long it all took.
pub fn on_each_host<T, F, Fut>(
    hosts: Vec<HostId>,
    connections: usize,
    each: F,
) -> anyhow::Result<(Vec<T>, Duration)>
where
    F: Fn(HostId) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let answers = runtime.block_on(async {
        let limit = Arc::new(Semaphore::new(connections));
        let mut set = tokio::task::JoinSet::new();
        for (i, host) in hosts.into_iter().enumerate() {
            let (limit, work) = (limit.clone(), each(host));
            set.spawn(async move {
                let _permit = limit.acquire_owned().await;
                (i, work.await)
            });
        }
        let mut answers: Vec<(usize, T)> = Vec::new();
        while let Some(joined) = set.join_next().await {
            if let Ok(answer) = joined {
                answers.push(answer);
            }
        }
        answers.sort_by_key(|(i, _)| *i);
        answers.into_iter().map(|(_, answer)| answer).collect()
    });
    Ok((answers, started.elapsed()))
}

/// The most telling part of a transport error, on one line.
pub fn one_line(error: &str) -> String {
    let lines: Vec<&str> = error
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines.join("; ")
}

/// One host's answer.
#[derive(Debug, Serialize)]
struct Pong {
    host: String,
    region: String,
    cluster: String,
    address: String,
    reachable: bool,
    /// Why not, when unreachable.
    reason: Option<Reason>,
    error: Option<String>,
    /// Time to open the connection.
    connect_ms: u64,
    /// Time to open the connection and run `true` on it.
    rtt_ms: u64,
}

pub fn run(
    settings: &Settings,
    inventory: &Path,
    limit: Option<&str>,
    accept_new_host_keys: bool,
    timeout: Duration,
    handshakes: usize,
) -> anyhow::Result<Exit> {
    let (inventory, hosts) = select(inventory, limit)?;
    let opener = connector(
        settings,
        &inventory,
        &hosts,
        accept_new_host_keys,
        handshakes,
    )?
    .with_connect_timeout(timeout)
    .with_connect_retries(0);
    let (inventory, opener) = (Arc::new(inventory), Arc::new(opener));
    let (pongs, wall) = on_each_host(hosts, connections(settings), |host| {
        let (inventory, opener) = (inventory.clone(), opener.clone());
        async move { ping(&inventory, host, &opener).await }
    })?;
    let unreachable = pongs.iter().filter(|p| !p.reachable).count();
    match settings.output {
        OutputFormat::Json => print_json(&pongs, wall),
        OutputFormat::Human => {
            let palette = Palette::new(color_enabled(
                settings.color,
                std::io::stdout().is_terminal(),
            ));
            crate::out!("{}", table(&pongs, wall, settings.quiet, &palette));
        }
    }
    // 1: some host did not answer (the code a failed run gets).
    Ok(if unreachable == 0 {
        Exit::Success
    } else {
        Exit::SOME_HOSTS_FAILED
    })
}

async fn ping(inventory: &Inventory, id: HostId, opener: &Connector) -> Pong {
    let host = &inventory.hosts[id];
    let started = Instant::now();
    let opened = opener.open(host).await;
    let connect = started.elapsed();
    let result = match opened {
        Ok(connection) => match connection
            .run("true", Some(opener.connect_timeout(host)))
            .await
        {
            Ok(output) if output.success() => Ok(()),
            Ok(output) => Err(format!(
                "`true` failed (exit {:?}): {}",
                output.exit_code,
                String::from_utf8_lossy(&output.stderr).trim()
            )),
            Err(e) => Err(e.to_string()),
        },
        Err(e) => Err(e.to_string()),
    };
    let rtt = started.elapsed();
    let (reachable, reason, error) = match result {
        Ok(()) => (true, None, None),
        Err(e) => (false, Some(Reason::classify(&e)), Some(one_line(&e))),
    };
    Pong {
        host: host.name.clone(),
        region: inventory.regions[host.region].name.clone(),
        cluster: inventory.clusters[host.cluster].name.clone(),
        address: host.destination().to_string(),
        reachable,
        reason,
        error,
        connect_ms: connect.as_millis() as u64,
        rtt_ms: rtt.as_millis() as u64,
    }
}

/// One JSON object per line: a `ping` per host, in inventory order, then `ping_summary`.
fn print_json(pongs: &[Pong], wall: Duration) {
    use std::io::Write;
    let time = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let mut out = crate::term::Stdout;
    for pong in pongs {
        let mut value = serde_json::to_value(pong).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            let mut line = serde_json::Map::new();
            line.insert("schema".into(), SCHEMA_VERSION.into());
            line.insert("time".into(), time.clone().into());
            line.insert("event".into(), "ping".into());
            line.extend(std::mem::take(map));
            let _ = writeln!(out, "{}", serde_json::Value::Object(line));
        }
    }
    let reachable = pongs.iter().filter(|p| p.reachable).count();
    let mut reasons: std::collections::BTreeMap<&str, usize> = Default::default();
    for p in pongs.iter().filter_map(|p| p.reason) {
        *reasons.entry(p.word()).or_default() += 1;
    }
    let summary = serde_json::json!({
        "schema": SCHEMA_VERSION,
        "time": time,
        "event": "ping_summary",
        "hosts": pongs.len(),
        "reachable": reachable,
        "unreachable": pongs.len() - reachable,
        "reasons": reasons,
        "duration_ms": wall.as_millis() as u64,
    });
    let _ = writeln!(out, "{summary}");
    let _ = out.flush();
}

/// The human table: every host (only unreachable ones with `-q`), then a summary line.
fn table(pongs: &[Pong], wall: Duration, quiet: bool, palette: &Palette) -> String {
    let shown: Vec<&Pong> = pongs.iter().filter(|p| !quiet || !p.reachable).collect();
    let name_w = shown.iter().map(|p| p.host.len()).max().unwrap_or(0).max(4);
    let region_w = shown
        .iter()
        .map(|p| p.region.len())
        .max()
        .unwrap_or(0)
        .max(6);
    let mut out = String::new();
    if !shown.is_empty() {
        out.push_str(&palette.bold(&format!(
            "{:<name_w$} {:<region_w$} {:<11} {:>8}  {}",
            "HOST", "REGION", "STATUS", "RTT", "REASON"
        )));
        out.push('\n');
    }
    for p in &shown {
        let status = format!(
            "{:<11}",
            if p.reachable {
                "reachable"
            } else {
                "UNREACHABLE"
            }
        );
        let status = if p.reachable {
            palette.green(&status)
        } else {
            palette.red(&status)
        };
        let reason = match (&p.reason, &p.error) {
            (Some(r), Some(e)) => format!("{}: {e}", r.word()),
            _ => String::new(),
        };
        let row = format!(
            "{:<name_w$} {:<region_w$} {status} {:>8}  {reason}",
            p.host,
            p.region,
            crate::duration::short(Duration::from_millis(p.rtt_ms)),
        );
        out.push_str(row.trim_end());
        out.push('\n');
    }
    let reachable: Vec<u64> = {
        let mut v: Vec<u64> = pongs
            .iter()
            .filter(|p| p.reachable)
            .map(|p| p.rtt_ms)
            .collect();
        v.sort_unstable();
        v
    };
    let unreachable = pongs.len() - reachable.len();
    let mut line = format!(
        "{} hosts: {} reachable, {} unreachable",
        pongs.len(),
        reachable.len(),
        unreachable
    );
    if unreachable > 0 {
        let mut reasons: std::collections::BTreeMap<Reason, usize> = Default::default();
        for r in pongs.iter().filter_map(|p| p.reason) {
            *reasons.entry(r).or_default() += 1;
        }
        let parts: Vec<String> = reasons
            .iter()
            .map(|(r, n)| format!("{n} {}", r.word()))
            .collect();
        line = format!("{line} ({})", parts.join(", "));
    }
    if !reachable.is_empty() {
        let ms = |v: u64| crate::duration::short(Duration::from_millis(v));
        line.push_str(&format!(
            "; round trip min {}, median {}, max {}",
            ms(reachable[0]),
            ms(reachable[reachable.len() / 2]),
            ms(reachable[reachable.len() - 1])
        ));
    }
    line.push_str(&format!("; {} in all", crate::duration::short(wall)));
    out.push_str(&palette.verdict(unreachable == 0, &line));
    out.push('\n');
    out
}
