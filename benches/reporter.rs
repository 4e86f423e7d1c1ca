//! Reporter overhead: does drawing progress bars slow a big run down?
//!
//! 2,000 hosts on the local transport (4 regions × 5 clusters × 100 hosts,
//! `connection: local`) and a 3-step chained playbook of `true` (`max_unavailable: 100%`,
//! default `connections: 256`): 6,000 tasks, 12,000+ events. Every round runs, in a rotated
//! order, `pony deploy` with:
//!
//! - **json**: `--output json > /dev/null` (the baseline: no rendering at all);
//! - **plain**: human output with stdout not a terminal (`> /dev/null`): plain lines;
//! - **bars**: human output on a real terminal: a tmux pane (200×50), so stdout is a pty
//!   and the terminal reporter draws its bars (and tmux parses every byte of them);
//! - **bars→null**: the terminal reporter forced (`PONY_PROGRESS=bars`) onto `/dev/null`:
//!   the rendering cost without a terminal emulator.
//!
//! Every run happens inside a tmux pane through the same `sh` wrapper, with a fresh state
//! dir, so that all contenders pay the same fixed costs. The wrapper measures the wall time
//! (`date +%s%N`) and the CPU of pony and everything it ran (`times`). It prints medians and
//! each mode's overhead against json and plain; it asserts nothing on timing. It fails when
//! a deploy fails.
//!
//! Knobs (environment): `PONY_BENCH_HOSTS` (default 2000; a multiple of 20),
//! `PONY_BENCH_RUNS` (rounds, default 5), `PONY_BIN` (default: the pony cargo built for
//! this bench). Needs tmux. Run with `cargo bench --bench reporter`.

use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const STEPS: usize = 3;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Json,
    Plain,
    Bars,
    BarsToNull,
}

impl Mode {
    const ALL: [Mode; 4] = [Mode::Json, Mode::Plain, Mode::Bars, Mode::BarsToNull];

    fn name(self) -> &'static str {
        match self {
            Mode::Json => "json > /dev/null",
            Mode::Plain => "plain > /dev/null",
            Mode::Bars => "bars on a terminal (tmux)",
            Mode::BarsToNull => "bars > /dev/null (forced)",
        }
    }

    /// The shell words around the pony command.
    fn wrap(self, pony: &str) -> String {
        match self {
            Mode::Json => format!("{pony} --output json > /dev/null"),
            Mode::Plain => format!("{pony} > /dev/null"),
            Mode::Bars => pony.to_string(),
            Mode::BarsToNull => format!("PONY_PROGRESS=bars {pony} > /dev/null"),
        }
    }
}

struct Sample {
    wall: Duration,
    cpu: Duration,
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("bench reporter: {e:#}");
        std::process::exit(1);
    }
}

fn env_usize(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v} is not a number")),
        Err(_) => Ok(default),
    }
}

fn real_main() -> Result<()> {
    let hosts = env_usize("PONY_BENCH_HOSTS", 2000)?;
    let runs = env_usize("PONY_BENCH_RUNS", 5)?.max(1);
    if hosts == 0 || hosts % 20 != 0 {
        bail!("PONY_BENCH_HOSTS must be a positive multiple of 20");
    }
    let bin = std::env::var("PONY_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_pony").into());
    if Command::new("tmux").arg("-V").output().is_err() {
        bail!("tmux is needed (apt-get install -y tmux)");
    }
    let dir = tempfile::tempdir()?;
    let inventory = dir.path().join("inventory.yaml");
    let playbook = dir.path().join("playbook.yaml");
    std::fs::write(&inventory, inventory_yaml(hosts))?;
    std::fs::write(&playbook, playbook_yaml())?;
    let tmux = Tmux::start(dir.path())?;

    eprintln!("bench reporter: {hosts} local hosts × {STEPS} steps, {runs} rounds, pony = {bin}");
    let mut samples: Vec<(Mode, Vec<Sample>)> = Mode::ALL.iter().map(|m| (*m, vec![])).collect();
    // A warm-up run (page cache, first directory creations), not counted.
    run_one(
        &tmux,
        dir.path(),
        &bin,
        &inventory,
        &playbook,
        Mode::Json,
        0,
    )?;
    for round in 0..runs {
        for k in 0..Mode::ALL.len() {
            let i = (round + k) % Mode::ALL.len();
            let mode = Mode::ALL[i];
            let sample = run_one(&tmux, dir.path(), &bin, &inventory, &playbook, mode, round)?;
            eprintln!(
                "  round {} {:<28} {:>7.3} s wall {:>7.3} s cpu",
                round + 1,
                mode.name(),
                sample.wall.as_secs_f64(),
                sample.cpu.as_secs_f64()
            );
            samples[i].1.push(sample);
        }
    }

    let median = |v: &[Sample], f: fn(&Sample) -> Duration| {
        let mut d: Vec<Duration> = v.iter().map(f).collect();
        d.sort();
        d[d.len() / 2]
    };
    let wall = |m: Mode| median(&samples[m as usize].1, |s| s.wall);
    let cpu = |m: Mode| median(&samples[m as usize].1, |s| s.cpu);
    let pct = |a: Duration, b: Duration| (a.as_secs_f64() / b.as_secs_f64() - 1.0) * 100.0;
    let mut out = String::new();
    writeln!(
        out,
        "\nreporter overhead: {hosts} hosts × {STEPS} steps on the local transport ({} tasks), medians of {runs} rounds",
        hosts * STEPS
    )?;
    writeln!(
        out,
        "{:<28} {:>9} {:>10} {:>10} {:>9} {:>10}",
        "mode", "wall", "vs json", "vs plain", "cpu", "cpu vs json"
    )?;
    for mode in Mode::ALL {
        writeln!(
            out,
            "{:<28} {:>7.3} s {:>+9.1}% {:>+9.1}% {:>7.3} s {:>+9.1}%",
            mode.name(),
            wall(mode).as_secs_f64(),
            pct(wall(mode), wall(Mode::Json)),
            pct(wall(mode), wall(Mode::Plain)),
            cpu(mode).as_secs_f64(),
            pct(cpu(mode), cpu(Mode::Json)),
        )?;
    }
    writeln!(
        out,
        "target: the terminal reporter costs at most a few percent of wall time (bars vs json: {:+.1}%)",
        pct(wall(Mode::Bars), wall(Mode::Json))
    )?;
    print!("{out}");
    Ok(())
}

fn run_one(
    tmux: &Tmux,
    dir: &Path,
    bin: &str,
    inventory: &Path,
    playbook: &Path,
    mode: Mode,
    round: usize,
) -> Result<Sample> {
    let state = dir.join("state");
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let result = dir.join(format!("result-{n}-{round}-{mode:?}"));
    let pony = format!(
        "{} --state-dir {} deploy -i {} {} --yes",
        quote(bin),
        quote(&state.display().to_string()),
        quote(&inventory.display().to_string()),
        quote(&playbook.display().to_string()),
    );
    // `times` prints the shell's own and its children's CPU; taken before and after the
    // run (in this shell, not a subshell), the difference is pony's and its commands'.
    let times = |n: u8| quote(&format!("{}.times{n}", result.display()));
    let script = format!(
        "rm -rf {state}; times > {t0}; s=$(date +%s%N); {run}; rc=$?; e=$(date +%s%N); \
         times > {t1}; echo \"$rc $((e - s))\" > {tmp} && mv {tmp} {result}",
        state = quote(&state.display().to_string()),
        run = mode.wrap(&pony),
        t0 = times(0),
        t1 = times(1),
        tmp = quote(&format!("{}.tmp", result.display())),
        result = quote(&result.display().to_string()),
    );
    tmux.run(&script)?;
    let started = Instant::now();
    while !result.exists() {
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("{} did not finish within 30 minutes", mode.name());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(&result)?;
    let fields: Vec<&str> = text.split_whitespace().collect();
    if fields.first() != Some(&"0") {
        bail!("{} failed: {text}", mode.name());
    }
    let wall = Duration::from_nanos(fields.get(1).context("wall")?.parse()?);
    let children_cpu = |n: u8| -> Result<Duration> {
        let text = std::fs::read_to_string(format!("{}.times{n}", result.display()))?;
        // The second line: the children's user and system time, `0m1.234s 0m0.567s`.
        let line = text.lines().nth(1).context("times printed one line")?;
        line.split_whitespace().map(parse_times).sum()
    };
    let cpu = children_cpu(1)?.saturating_sub(children_cpu(0)?);
    Ok(Sample { wall, cpu })
}

/// `1m2.345s` (as `times` prints it) → 62.345 s.
fn parse_times(text: &str) -> Result<Duration> {
    let (minutes, seconds) = text
        .trim_end_matches('s')
        .split_once('m')
        .with_context(|| format!("times printed {text:?}"))?;
    let secs = minutes.parse::<f64>()? * 60.0 + seconds.parse::<f64>()?;
    Ok(Duration::from_secs_f64(secs))
}

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// A tmux server of our own (socket in the bench's folder), killed when dropped. A
/// keeper session holds it up between runs.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn start(dir: &Path) -> Result<Tmux> {
        let tmux = Tmux {
            socket: dir.join("tmux.sock"),
        };
        tmux.tmux(&["new-session", "-d", "-s", "keeper", "sleep 100000"])?;
        Ok(tmux)
    }

    fn tmux(&self, args: &[&str]) -> Result<()> {
        let status = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .status()?;
        if !status.success() {
            bail!("tmux {args:?} failed");
        }
        Ok(())
    }

    /// Runs `script` with `sh` in a new detached 200×50 session.
    fn run(&self, script: &str) -> Result<()> {
        self.tmux(&[
            "new-session",
            "-d",
            "-x",
            "200",
            "-y",
            "50",
            &format!("sh -c {}", quote(script)),
        ])
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

fn inventory_yaml(hosts: usize) -> String {
    let (regions, clusters) = (4, 5);
    let per_cluster = hosts / (regions * clusters);
    let width = per_cluster.to_string().len().max(2);
    let mut yaml =
        String::from("name: bench-reporter\ndefaults: { connection: local }\nregions:\n");
    for r in 1..=regions {
        let _ = writeln!(yaml, "  region-{r}:\n    clusters:");
        for c in 1..=clusters {
            let _ = writeln!(
                yaml,
                "      r{r}-c{c}:\n        hosts:\n          \"r{r}-c{c}-[{:0width$}:{per_cluster:0width$}]\":",
                1
            );
        }
    }
    yaml
}

fn playbook_yaml() -> String {
    let mut yaml = String::from(
        "name: bench-reporter\nstrategy: { max_unavailable: 100%, max_failures: 0 }\nsteps:\n",
    );
    for s in 1..=STEPS {
        let _ = writeln!(yaml, "  - name: s{s}\n    run: \"true\"");
        if s > 1 {
            let _ = writeln!(yaml, "    needs: [s{}]", s - 1);
        }
    }
    yaml
}
