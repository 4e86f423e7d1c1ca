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

use anyhow::{bail, Context, Result};
use pony::lab::postgres::{Postgres, Sync};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
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

fn inventory() -> String {
    let mut text = String::from("name: bench-regions\ndefaults: { connection: local }\nregions:\n");
    for r in 1..=REGIONS {
        let _ = writeln!(text, "  r{r}:\n    clusters:");
        for c in 1..=2 {
            let _ = writeln!(text, "      r{r}c{c}:\n        hosts:");
            for h in 1..=10 {
                let _ = writeln!(text, "          r{r}c{c}h{h:02}: {{}}");
            }
        }
    }
    text
}

/// Wave `first` has regions of both controllers (r1–r3 of one, r6–r7 of the other).
fn playbook() -> String {
    let mut text = String::from(
        "name: bench-regions\nstrategy:\n  max_unavailable: 100%\n  connections: 1000\n  waves:\n    - { name: first, regions: [r1, r2, r3, r6, r7] }\n    - { name: rest, regions: [\"*\"] }\nsteps:\n",
    );
    for s in 1..=STEPS {
        let needs = if s == 1 {
            String::new()
        } else {
            format!(", needs: [s{}]", s - 1)
        };
        let _ = writeln!(text, "  - {{ name: s{s}, run: \"true\"{needs} }}");
    }
    text
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
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    let known: Vec<String> = client
        .query("SELECT run_id FROM pony.runs", &[])?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut args = deploy_args(dir);
    args.extend(["--regions".into(), "r[1-5]".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let start = Instant::now();
    let a = pony(bin, &state_a, url, &args).spawn()?;
    let run = loop {
        let ids: Vec<String> = client
            .query("SELECT run_id FROM pony.runs", &[])?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if let Some(id) = ids.into_iter().find(|id| !known.contains(id)) {
            break id;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let b = pony(bin, &state_b, url, &["join", &run, "--regions", "!r[1-5]"]).spawn()?;
    finish(a, "pony deploy --regions")?;
    finish(b, "pony join --regions")?;
    let wall = start.elapsed();
    let _ = std::fs::remove_dir_all(&state_a);
    let _ = std::fs::remove_dir_all(&state_b);
    Ok(wall)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn real_main() -> Result<()> {
    let runs: usize = match std::env::var("PONY_BENCH_RUNS") {
        Ok(v) => v.parse().with_context(|| format!("PONY_BENCH_RUNS={v}"))?,
        Err(_) => 5,
    };
    let bin = std::env::var_os("PONY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/pony"));
    if !bin.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release`",
            bin.display()
        );
    }
    let dir = std::env::temp_dir().join(format!("pony-bench-regions-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let _cleanup = Cleanup(dir.clone());
    std::fs::write(dir.join("inventory.yaml"), inventory())?;
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
    Ok(())
}

/// Removes the bench's temp folder when it ends, also on error.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
