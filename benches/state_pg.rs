//! What the PostgreSQL state costs a run: the same deploy with the local state folder and
//! with `--state postgres://…`, on 200 `connection: local` hosts (no SSH: the journal's
//! cost is not hidden behind network round trips; every task is still a real `sh -c`).
//!
//! The playbook is 5 chained steps of `true` with `max_unavailable: 100%` and
//! `connections: 1000`, so 1,000 tasks and 2,000 `task_started`/`task_finished` records,
//! each acknowledged only once durable. The server is a throwaway one
//! (`pony::lab::postgres`) on loopback with `fsync=on`, as in production; with the
//! database the controller still fsyncs its local copy of the journal first, so the
//! figure is the whole cost a user pays for switching.
//!
//! Prints, per contender, the median wall time of `pony deploy` over the rounds (order
//! alternated every round), tasks per second, and for the database the journal rows and
//! the transactions it committed per run (the group commits), and the peak memory of one
//! `pony deploy` process. Figures only: nothing is
//! asserted on timing; it fails when a deploy fails.
//!
//! Knobs: `PONY_BENCH_HOSTS` (default 200, a multiple of 20), `PONY_BENCH_RUNS` (default
//! 5), `PONY_BIN` (default target/release/pony). Run it through `scripts/bench-pg`.

mod local_fleet;

use anyhow::{bail, Context, Result};
use local_fleet::{chained_steps, inventory, median, pony_binary, Cleanup};
use pony::lab::postgres::{Postgres, Sync};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const STEPS: usize = 5;

fn playbook() -> String {
    format!(
        "name: bench-state\nstrategy: {{ max_unavailable: 100%, connections: 1000 }}\nsteps:\n{}",
        chained_steps(STEPS)
    )
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("bench state_pg: {e:#}");
        std::process::exit(1);
    }
}

fn env_usize(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(v) => v.parse().with_context(|| format!("{name}={v}")),
        Err(_) => Ok(default),
    }
}

fn deploy(bin: &Path, dir: &Path, state: Option<&str>, round: usize) -> Result<Duration> {
    let state_dir = dir.join(format!("state-{}-{round}", state.map_or("local", |_| "pg")));
    let mut command = Command::new(bin);
    command
        .arg("--state-dir")
        .arg(&state_dir)
        .args(["deploy", "-i"])
        .arg(dir.join("inventory.yaml"))
        .arg(dir.join("playbook.yaml"))
        .args(["--yes", "-q"])
        .env_remove("PONY_STATE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(url) = state {
        command.env("PONY_STATE", url);
    }
    let start = Instant::now();
    let output = command.output().context("running pony")?;
    let wall = start.elapsed();
    if !output.status.success() {
        bail!(
            "pony deploy failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&state_dir);
    Ok(wall)
}

fn commits(client: &mut postgres::Client) -> Result<i64> {
    Ok(client
        .query_one(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )?
        .get(0))
}

fn real_main() -> Result<()> {
    let hosts = env_usize("PONY_BENCH_HOSTS", 200)?;
    let runs = env_usize("PONY_BENCH_RUNS", 5)?.max(1);
    if hosts == 0 || hosts % 20 != 0 {
        bail!("PONY_BENCH_HOSTS must be a multiple of 20");
    }
    let bin = pony_binary();
    if !bin.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release`",
            bin.display()
        );
    }
    let dir = std::env::temp_dir().join(format!("pony-bench-pg-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let _cleanup = Cleanup(dir.clone());
    std::fs::write(
        dir.join("inventory.yaml"),
        inventory("bench-state", hosts / 20),
    )?;
    std::fs::write(dir.join("playbook.yaml"), playbook())?;
    let server = Postgres::start(Sync::Durable)?;
    let url = server.url();
    let mut stats = postgres::Client::connect(&url, postgres::NoTls)?;
    let tasks = (hosts * STEPS) as f64;
    println!(
        "state backend cost: {hosts} local hosts x {STEPS} chained steps = {tasks} tasks, {runs} rounds, PostgreSQL on loopback (fsync on)"
    );

    // One warm-up run each (page cache, schema creation), not counted.
    deploy(&bin, &dir, None, 0)?;
    deploy(&bin, &dir, Some(&url), 0)?;
    let (mut local, mut pg, mut txs) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=runs {
        let pg_first = round % 2 == 0;
        for pass in 0..2 {
            if (pass == 0) == pg_first {
                let before = commits(&mut stats)?;
                pg.push(deploy(&bin, &dir, Some(&url), round)?.as_secs_f64());
                // The statistics collector reports at transaction end; our own query is one.
                txs.push(commits(&mut stats)? - before - 1);
            } else {
                local.push(deploy(&bin, &dir, None, round)?.as_secs_f64());
            }
        }
    }
    let rows_per_run: i64 = {
        let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
        let rows: i64 = client
            .query_one("SELECT count(*) FROM pony.journal", &[])?
            .get(0);
        let runs_stored: i64 = client
            .query_one("SELECT count(*) FROM pony.runs", &[])?
            .get(0);
        rows / runs_stored.max(1)
    };
    // SAFETY: getrusage only fills the struct it is given.
    let peak_kb = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage.ru_maxrss
    };
    let (local_s, pg_s) = (median(local.clone()), median(pg.clone()));
    println!(
        "  local folder   median {:7.3} s  {:8.0} tasks/s   runs: {}",
        local_s,
        tasks / local_s,
        fmt_runs(&local)
    );
    println!(
        "  postgres       median {:7.3} s  {:8.0} tasks/s   runs: {}",
        pg_s,
        tasks / pg_s,
        fmt_runs(&pg)
    );
    println!(
        "  database journal: {rows_per_run} rows per run in a median of {:.0} transactions (group commits, lease and run rows included)",
        median(txs.iter().map(|&t| t as f64).collect())
    );
    println!(
        "  cost of the database: {:+.1}% wall time ({:+.2} ms per task)",
        100.0 * (pg_s - local_s) / local_s,
        1000.0 * (pg_s - local_s) / tasks
    );
    println!(
        "  peak memory of one pony deploy (max RSS over every run): {:.1} MB",
        peak_kb as f64 / 1024.0
    );
    Ok(())
}

fn fmt_runs(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.2}"))
        .collect::<Vec<_>>()
        .join(" ")
}
