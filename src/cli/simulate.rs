//! The arguments of `pony simulate`: the plan, and what the simulated rollout meets
//! (durations, failures, unreachable hosts, a start time, a person answering gates).

use super::{parse_key_value, PlanArgs};
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args, Clone)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Step durations (YAML: `step: 10m`, a range `8m..12m`, or rules per host pattern);
    /// without it, earlier runs' journals, then `estimate:`, then 10s.
    #[arg(long, value_name = "FILE")]
    pub durations: Option<PathBuf>,
    /// Seed of every random draw (durations, failures); the same seed gives the same result.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Share of task attempts that fail (e.g. 2% or 0.02).
    #[arg(long, value_name = "RATE", default_value = "0", value_parser = parse_rate)]
    pub fail: f64,
    /// This task (`step@host`, `step@region`, as the journal names it) fails on every
    /// attempt, e.g. as it did in a past run; repeatable.
    #[arg(long = "fail-task", value_name = "TASK")]
    pub fail_tasks: Vec<String>,
    /// Share of hosts that cannot be reached.
    #[arg(long, value_name = "RATE", default_value = "0", value_parser = parse_rate)]
    pub unreachable: f64,
    /// Wall-clock start (RFC 3339, or `YYYY-MM-DD HH:MM` in UTC), so change windows open
    /// when they would; default now.
    #[arg(long, value_name = "TIME", value_parser = parse_start)]
    pub start: Option<chrono::DateTime<chrono::Utc>>,
    /// How long a person takes to answer an `approve:` gate (and, in the `--compare`
    /// baselines, to start each next region).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = humantime::parse_duration)]
    pub approve_after: std::time::Duration,
    /// Override a playbook value, e.g. strategy.max_unavailable=10% or
    /// strategy.waves.canary.pause=30m (a list element by its name).
    #[arg(long = "set", value_name = "PATH=VALUE", value_parser = parse_key_value)]
    pub sets: Vec<(String, String)>,
    /// Also simulate the rollout done by hand, one region after the other (with the
    /// playbook's policy, and one host per cluster at a time), and print the speed-ups.
    #[arg(long)]
    pub compare: bool,
    /// Write the timeline picture (SVG) here.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Keep the timeline and the report in the state dir (`simulations/`, named by the
    /// playbook's and inventory's content), where the run page of `pony serve` shows it
    /// beside the real timeline of a run of the same files.
    #[arg(long)]
    pub save: bool,
    /// Hosts worked on at once (overrides strategy.connections).
    #[arg(long, value_name = "N")]
    pub connections: Option<usize>,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    let rate = match text.trim().strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().map(|p| p / 100.0),
        None => text.trim().parse::<f64>(),
    }
    .map_err(|_| format!("`{text}` is not a rate such as 2% or 0.02"))?;
    if !(0.0..=1.0).contains(&rate) {
        return Err(format!("`{text}` is not between 0 and 100%"));
    }
    Ok(rate)
}

fn parse_start(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    chrono::NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M")
        .map(|t| t.and_utc())
        .map_err(|_| {
            format!(
                "`{text}` is not a time such as 2026-03-10T20:00:00Z or `2026-03-10 20:00` (UTC)"
            )
        })
}
