//! What splitting a run between two controllers by region costs (`--regions`, `pony
//! join`): the same deploy of 200 `connection: local` hosts in 10 regions, 5 chained
//! `true` steps, two waves that each span both controllers' regions, with
//! `--state postgres://…`, run by one controller, then by two processes (`deploy
//! --regions 'r[1-5]'` and `join --regions '!r[1-5]'`). Local hosts keep SSH out of the
//! figure: what is left is the barrier (the other controller's results read by polling
//! the journal every 100 ms) and the serialized journal commits of a split run.
//!
//! Prints the median wall time per contender (from the first process's start to the last
//! one's end; rounds alternated). Figures only: nothing is asserted on timing; it fails
//! when a deploy fails. Knobs: `PONY_BENCH_RUNS` (default 5), `PONY_BIN` (default
//! target/release/pony). Run it through `scripts/bench-regions`.

mod local_fleet;

use anyhow::{bail, Context, Result};
use local_fleet::{chained_steps, inventory, median, pony_binary, Cleanup};
use pony::lab::postgres::{Postgres, Sync};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const REGIONS: usize = 10;
const STEPS: usize = 5;

fn main() {
    if let Err(e) = real_main() {
        eprintln!("bench regions: {e:#}");
        std::process::exit(1);
    }
}

/// Wave `first` has regions of both controllers (r1–r3 of one, r6–r7 of the other).
fn playbook() -> String {
    format!(
        "name: bench-regions\nstrategy:\n  max_unavailable: 100%\n  connections: 1000\n  waves:\n    - {{ name: first, regions: [r1, r2, r3, r6, r7] }}\n    - {{ name: rest, regions: [\"*\"] }}\nsteps:\n{}",
        chained_steps(STEPS)
    )
}

fn pony(bin: &Path, state: &Path, url: &str, args: &[&str]) -> Command {
    let mut command = Command::new(bin);
    command
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .args(["-q"])
        .env("PONY_STATE", url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

fn finish(child: Child, what: &str) -> Result<()> {
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

fn deploy_args(dir: &Path) -> Vec<String> {
    vec![
        "deploy".into(),
        "-i".into(),
        dir.join("inventory.yaml").display().to_string(),
        dir.join("playbook.yaml").display().to_string(),
        "--yes".into(),
    ]
}

fn one(bin: &Path, dir: &Path, url: &str, round: usize) -> Result<Duration> {
    let state = dir.join(format!("one-{round}"));
    let args = deploy_args(dir);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let start = Instant::now();
    finish(pony(bin, &state, url, &args).spawn()?, "pony deploy")?;
    let wall = start.elapsed();
    let _ = std::fs::remove_dir_all(&state);
    Ok(wall)
}

fn two(bin: &Path, dir: &Path, url: &str, round: usize) -> Result<Duration> {
    let (state_a, state_b) = (
        dir.join(format!("a-{round}")),
        dir.join(format!("b-{round}")),
    );
    let known = run_ids(url)?;
    let mut args = deploy_args(dir);
    args.extend(["--regions".into(), "r[1-5]".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let start = Instant::now();
    let a = pony(bin, &state_a, url, &args).spawn()?;
    let run = new_run(url, &known)?;
    let b = pony(bin, &state_b, url, &["join", &run, "--regions", "!r[1-5]"]).spawn()?;
    finish(a, "pony deploy --regions")?;
    finish(b, "pony join --regions")?;
    let wall = start.elapsed();
    let _ = std::fs::remove_dir_all(&state_a);
    let _ = std::fs::remove_dir_all(&state_b);
    Ok(wall)
}

fn real_main() -> Result<()> {
    let runs: usize = match std::env::var("PONY_BENCH_RUNS") {
        Ok(v) => v.parse().with_context(|| format!("PONY_BENCH_RUNS={v}"))?,
        Err(_) => 5,
    };
    let bin = pony_binary();
    if !bin.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release`",
            bin.display()
        );
    }
    let dir = std::env::temp_dir().join(format!("pony-bench-regions-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let _cleanup = Cleanup(dir.clone());
    std::fs::write(
        dir.join("inventory.yaml"),
        inventory("bench-regions", REGIONS),
    )?;
    std::fs::write(dir.join("playbook.yaml"), playbook())?;
    let server = Postgres::start(Sync::Durable)?;
    let url = server.url();
    let tasks = (REGIONS * 20 * STEPS) as f64;
    println!(
        "split by region: {} local hosts in {REGIONS} regions x {STEPS} chained steps = {tasks} tasks, 2 waves, {runs} rounds, PostgreSQL on loopback (fsync on)",
        REGIONS * 20
    );
    one(&bin, &dir, &url, 0)?;
    two(&bin, &dir, &url, 0)?;
    let (mut single, mut split) = (Vec::new(), Vec::new());
    for round in 1..=runs {
        for pass in 0..2 {
            if (pass == 0) == (round % 2 == 0) {
                split.push(two(&bin, &dir, &url, round)?.as_secs_f64());
            } else {
                single.push(one(&bin, &dir, &url, round)?.as_secs_f64());
            }
        }
    }
    let (one_s, two_s) = (median(single), median(split));
    println!(
        "  one controller    median {one_s:7.3} s  {:8.0} tasks/s",
        tasks / one_s
    );
    println!(
        "  two controllers   median {two_s:7.3} s  {:8.0} tasks/s",
        tasks / two_s
    );
    println!(
        "  split costs {:+.3} s ({:+.1} %)",
        two_s - one_s,
        (two_s / one_s - 1.0) * 100.0
    );

    // The database's side: transactions per controller while working (counted once both
    // processes ended, when every backend has reported), and while waiting.
    let before = transactions(&url)?;
    let wall = two(&bin, &dir, &url, runs + 1)?;
    // The backends report at exit; give the last one a moment.
    std::thread::sleep(Duration::from_millis(500));
    let busy = transactions(&url)? - before;
    println!(
        "  database load, working: {busy} transactions for the split run ({:.0} per controller-second over {:.2} s)",
        busy as f64 / wall.as_secs_f64() / 2.0,
        wall.as_secs_f64()
    );
    let idle = Duration::from_secs(20);
    let (waiting, round_trips) = waiting_load(&bin, &dir, &url, idle)?;
    println!(
        "  database load, waiting at an approve: gate: {waiting:.1} transactions/s per controller (over {} s)",
        idle.as_secs()
    );
    println!(
        "  pony pause/continue through the database, answered by both controllers: median {:.0} ms over {} commands (each a new process)",
        median(round_trips.clone()),
        round_trips.len()
    );
    Ok(())
}

/// The database's transactions so far (committed and rolled back). A backend reports
/// its counts when it goes idle (at most once a second) and when it exits, so a sample
/// taken while controllers run lags by up to a second of their work.
fn transactions(url: &str) -> Result<i64> {
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    Ok(client
        .query_one(
            "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database
             WHERE datname = current_database()",
            &[],
        )?
        .get(0))
}

/// The run the database stored since `known` (the run ids before).
fn new_run(url: &str, known: &[String]) -> Result<String> {
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    loop {
        let ids: Vec<String> = client
            .query("SELECT run_id FROM pony.runs", &[])?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if let Some(id) = ids.into_iter().find(|id| !known.contains(id)) {
            return Ok(id);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn run_ids(url: &str) -> Result<Vec<String>> {
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    Ok(client
        .query("SELECT run_id FROM pony.runs", &[])?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// The database load of two controllers waiting at an `approve:` gate (each polls the
/// shared journal, listens for commands and renews its leases), and how long a command
/// through the database takes to be answered by both (`pony pause` / `continue`, each a
/// new process: start, connect, send, both answers).
fn waiting_load(bin: &Path, dir: &Path, url: &str, idle: Duration) -> Result<(f64, Vec<f64>)> {
    let gated = dir.join("gated.yaml");
    std::fs::write(
        &gated,
        playbook().replace(
            "regions: [r1, r2, r3, r6, r7] }",
            "regions: [r1, r2, r3, r6, r7], approve: true }",
        ),
    )?;
    let known = run_ids(url)?;
    let (state_a, state_b, state_op) = (dir.join("wa"), dir.join("wb"), dir.join("wop"));
    let a = pony(
        bin,
        &state_a,
        url,
        &[
            "deploy",
            "-i",
            &dir.join("inventory.yaml").display().to_string(),
            &gated.display().to_string(),
            "--yes",
            "--regions",
            "r[1-5]",
            "--approval-wait",
            "1h",
        ],
    )
    .spawn()?;
    let run = new_run(url, &known)?;
    let b = pony(
        bin,
        &state_b,
        url,
        &[
            "join",
            &run,
            "--regions",
            "!r[1-5]",
            "--approval-wait",
            "1h",
        ],
    )
    .spawn()?;
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    loop {
        let waiting: i64 = client
            .query_one(
                "SELECT count(DISTINCT controller) FROM pony.journal
                 WHERE run_id = $1 AND record->>'type' = 'gate_waiting'",
                &[&run],
            )?
            .get(0);
        if waiting == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let the gate's own writes reach the statistics before counting from here.
    std::thread::sleep(Duration::from_secs(2));
    let before = transactions(url)?;
    std::thread::sleep(idle);
    let after = transactions(url)?;
    let per_controller = (after - before - 1) as f64 / idle.as_secs_f64() / 2.0;
    let mut round_trips = Vec::new();
    for command in ["pause", "continue"].iter().cycle().take(10) {
        let start = Instant::now();
        finish(
            pony(bin, &state_op, url, &[command, &run]).spawn()?,
            &format!("pony {command}"),
        )?;
        round_trips.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    finish(
        pony(bin, &state_op, url, &["approve", &run, "first"]).spawn()?,
        "pony approve",
    )?;
    finish(a, "pony deploy --regions (gated)")?;
    finish(b, "pony join --regions (gated)")?;
    for state in [state_a, state_b, state_op] {
        let _ = std::fs::remove_dir_all(state);
    }
    Ok((per_controller, round_trips))
}
