//! End-to-end deploy benchmark against a lab fleet of real sshd servers (SPEC §9).
//!
//! For each fleet size (default 50 and 200 hosts, `pony::lab` grids 5×2×5 and 10×2×10) it
//! measures, in one process and with the order rotated every round so that machine noise
//! hits every contender alike:
//!
//! - **pony**: `pony --state-dir <fresh tmp> deploy -i <inv> <playbook> --yes -q` with a
//!   5-step chained playbook (`s2 needs s1`, …; every step runs `true`) and
//!   `strategy: { max_unavailable: 100%, connections: 1000 }`;
//! - **floor (a)**: one plain `ssh -F <ssh_config> <address> 'true && true && …'` per host,
//!   all hosts at once (spawn all, then wait all);
//! - **floor (b)**: per host one `ssh -M -fN` ControlMaster, then 5 sequential
//!   `ssh -S <ControlPath> <address> true`, all hosts at once (one thread per host); the wall
//!   time includes opening the masters, closing them (`ssh -O exit`) comes after;
//! - **reference (c)**: per host one plain `ssh <address> 'exec sh'` fed the commands one
//!   at a time on stdin (each as `sh -c '<command>' </dev/null`), each answered by a marker
//!   line with its exit status before the next is sent: what a step-by-step controller
//!   with one session per host (a persistent remote shell) would cost;
//!
//! and prints medians, the ratios pony/(a) and pony/(b) and the controller CPU per host-task
//! (CPU / (hosts × 5)) beside the targets (pony ≤ 1.3 × floor (a) at 200 hosts, ≤ 1 ms of
//! controller CPU per host-task). It prints figures only: nothing is asserted on timing. It
//! fails when a deploy or an ssh command fails.
//!
//! Memory: while each run goes on, the summed PSS of the bench's descendants named `pony`
//! or `ssh` is sampled every 250 ms and its peak kept; printed per connected host, it is
//! what a controller and its ssh processes cost in memory per host (for floor (b), its
//! ControlMasters'; for (a), one `ssh` per host).
//!
//! CPU accounting: pony's own CPU (without its children) is read from /proc/<pid>/stat of
//! its zombie (waited for with `waitid(WNOWAIT)`, then reaped). The bench makes itself a
//! child subreaper (`PR_SET_CHILD_SUBREAPER`), so the `ssh -f` masters that pony (through the
//! openssh crate) and floor (b) daemonize are reparented to it instead of init; it reaps them
//! after each run, which adds their CPU to `getrusage(RUSAGE_CHILDREN)`. A run's CPU is the
//! `RUSAGE_CHILDREN` delta around it (pony, the ssh launchers it waited for, which do the
//! key exchange and authentication before forking, and the masters); "ssh" is that minus
//! pony's own CPU; none of this includes server CPU (the fleet's sshd are reaped only when
//! the fleet is dropped). The "sshd" column is the server side: the CPU the fleet's sshd
//! and the per-connection processes they reaped used during the run (utime, stime, cutime
//! and cstime from /proc/<pid>/stat, read once they have no child left). Client + server
//! CPU over the core count bounds the wall time from below on this one machine.
//!
//! Knobs (environment): `PONY_BENCH_SIZES` (host counts, comma separated, each 50 or a
//! multiple of 20: 50 → 5×2×5, 20·n → n×2×10; default `50,200`), `PONY_BENCH_RUNS` (rounds,
//! default 5), `PONY_BENCH_HANDSHAKES` (adds a diagnostic pony row with
//! `strategy.handshakes` set to this), `PONY_BIN` (the pony binary; default the one cargo
//! built for this bench, else target/release/pony), `PONY_BENCH_KEEP=1` (keep pony's state
//! dirs and print where), `PONY_BENCH_BASELINE` (another pony binary, e.g. one built from
//! an earlier commit: adds a "pony (baseline)" row measured in the same rounds, for
//! before/after figures from one run), `PONY_BENCH_TIMEOUT` (e.g. `5m`: every step gets
//! this `timeout:`, so each command goes through the remote `timeout` wrapper) and
//! `PONY_BENCH_BECOME=1` (every step gets `become: true`: each command goes through
//! `sudo -n`). Run it through `scripts/bench`.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use pony::lab::{Fleet, FleetOptions, LabHost};

const STEPS: usize = 5;
const COMMAND: &str = "true";
const TARGET_RATIO_A: f64 = 1.3;
const TARGET_CPU_MS: f64 = 1.0;
/// How long daemonized ssh masters get to exit after their run before they are killed.
const ORPHAN_GRACE: Duration = Duration::from_secs(10);

fn main() {
    if let Err(e) = real_main() {
        eprintln!("bench deploy: {e:#}");
        // Every Fleet has been dropped by now (its sshd killed): exiting is safe.
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let sizes = env_list("PONY_BENCH_SIZES", &[50, 200])?;
    let runs = env_usize("PONY_BENCH_RUNS", 5)?.max(1);
    let handshakes = std::env::var("PONY_BENCH_HANDSHAKES")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse::<usize>())
        .transpose()
        .context("PONY_BENCH_HANDSHAKES must be a number")?;
    let keep = std::env::var_os("PONY_BENCH_KEEP").is_some_and(|v| !v.is_empty());
    let pony = pony_binary()?;
    let subreaper = set_subreaper();

    println!("pony deploy benchmark: {STEPS} chained steps running `{COMMAND}`, {runs} rounds, order rotated each round");
    println!("pony binary: {}", pony.display());
    println!(
        "step options: timeout {}, become {}",
        std::env::var("PONY_BENCH_TIMEOUT").unwrap_or_else(|_| "none".into()),
        std::env::var_os("PONY_BENCH_BECOME").is_some_and(|v| v == "1")
    );
    println!(
        "machine: {} cores, load average {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "?".into())
    );
    if subreaper {
        println!("CPU: \"client\" = every process of the controller side: \"pony\" (the pony process alone) + \"ssh\" (launchers/clients and the daemonized `ssh -M -f` masters, reparented to and reaped by this bench, a subreaper); \"sshd\" = server side");
    } else {
        println!("CPU: PR_SET_CHILD_SUBREAPER failed: daemonized ssh masters are NOT counted (pony's figure covers pony and the processes it waited for only)");
    }

    let mut summaries = Vec::new();
    for &hosts in &sizes {
        let (r, c, h) = grid(hosts)?;
        let tmp = tempfile::Builder::new().prefix("pony-bench-").tempdir()?;
        let fleet = Fleet::start(FleetOptions::grid(tmp.path().join("lab"), r, c, h))
            .context("starting the lab fleet")?;
        let summary = bench_fleet(&fleet, tmp.path(), &pony, runs, handshakes, keep, (r, c, h));
        drop(fleet);
        if keep {
            let kept = tmp.keep();
            println!("kept: {}", kept.display());
        }
        summaries.push(summary?);
    }

    println!();
    println!("== summary (medians) ==");
    println!(
        "{:>6}  {:>9}  {:>9}  {:>9}  {:>8}  {:>8}  {:>13}  {:>13}",
        "hosts",
        "pony",
        "floor(a)",
        "floor(b)",
        "pony/(a)",
        "pony/(b)",
        "CPU/task pony",
        "+ssh procs"
    );
    for s in &summaries {
        println!(
            "{:>6}  {:>8.3}s  {:>8.3}s  {:>8.3}s  {:>8.2}  {:>8.2}  {:>10.3} ms  {:>10.3} ms",
            s.hosts,
            s.pony,
            s.floor_a,
            s.floor_b,
            s.ratio_a,
            s.ratio_b,
            s.cpu_pony_ms,
            s.cpu_total_ms
        );
    }
    if let Some(s) = summaries.iter().find(|s| s.hosts == 200) {
        println!(
            "targets at 200 hosts: pony/(a) {:.2} vs <= {TARGET_RATIO_A} ({}); controller CPU per host-task {:.3} ms (pony process) / {:.3} ms (with its ssh processes) vs <= {TARGET_CPU_MS} ms ({} / {})",
            s.ratio_a,
            verdict(s.ratio_a <= TARGET_RATIO_A),
            s.cpu_pony_ms,
            s.cpu_total_ms,
            verdict(s.cpu_pony_ms <= TARGET_CPU_MS),
            verdict(s.cpu_total_ms <= TARGET_CPU_MS),
        );
    }
    println!("reference measured here earlier at 200 hosts: floor (a) ~3.1 s, floor (b) ~6.3 s");
    Ok(())
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "within"
    } else {
        "OVER"
    }
}

/// Host count → grid (regions, clusters per region, hosts per cluster).
fn grid(hosts: usize) -> Result<(usize, usize, usize)> {
    match hosts {
        50 => Ok((5, 2, 5)),
        n if n > 0 && n % 20 == 0 => Ok((n / 20, 2, 10)),
        n if n > 0 && n % 10 == 0 => Ok((n / 10, 2, 5)),
        n => bail!("PONY_BENCH_SIZES: {n} hosts is not 50 or a multiple of 10"),
    }
}

fn env_usize(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(s) if !s.trim().is_empty() => s
            .trim()
            .parse()
            .with_context(|| format!("{name}={s:?} is not a number")),
        _ => Ok(default),
    }
}

fn env_list(name: &str, default: &[usize]) -> Result<Vec<usize>> {
    match std::env::var(name) {
        Ok(s) if !s.trim().is_empty() => s
            .split(',')
            .map(|p| {
                p.trim()
                    .parse()
                    .with_context(|| format!("{name}={s:?}: {p:?} is not a number"))
            })
            .collect(),
        _ => Ok(default.to_vec()),
    }
}

/// `PONY_BIN`, else the binary cargo built for this bench, else target/release/pony.
fn pony_binary() -> Result<PathBuf> {
    let candidates = [
        std::env::var_os("PONY_BIN").map(PathBuf::from),
        option_env!("CARGO_BIN_EXE_pony").map(PathBuf::from),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/pony")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("no pony binary: run `cargo build --release` or set PONY_BIN"))
}

// ---------------------------------------------------------------- measurement

/// What a run's body reports: its wall time and, for pony, pony's own CPU.
struct Timed {
    wall: Duration,
    own_cpu: Option<Duration>,
}

impl From<Duration> for Timed {
    fn from(wall: Duration) -> Self {
        Timed {
            wall,
            own_cpu: None,
        }
    }
}

/// What one run cost.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    wall: Duration,
    /// The main process's own CPU (pony without the ssh processes it ran).
    own_cpu: Option<Duration>,
    /// CPU of the processes waited for directly (and their waited-for descendants).
    cpu_direct: Duration,
    /// CPU of daemonized ssh masters reaped after the run.
    cpu_masters: Duration,
    /// CPU of the fleet's sshd servers and their sessions (server side).
    cpu_server: Duration,
    /// Masters still alive after the grace period (killed by the bench).
    leftover: usize,
    /// The highest sum of the client processes' proportional set size (PSS) seen while
    /// the run went on: pony and every `ssh` process of the run (launchers, masters).
    peak_client_memory: u64,
}

impl Sample {
    fn cpu(&self) -> Duration {
        self.cpu_direct + self.cpu_masters
    }
}

fn children_cpu() -> Duration {
    // SAFETY: getrusage fills the struct we hand it; RUSAGE_CHILDREN is always valid.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Makes orphaned descendants (`ssh -f` masters) our children, so that we can reap them
/// and count their CPU.
fn set_subreaper() -> bool {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) only sets a flag on this process.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) == 0 }
}

/// Our child processes named `ssh` (reparented masters), from /proc.
fn ssh_children() -> Vec<libc::pid_t> {
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|pid| {
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                return false;
            };
            let comm = &stat[open + 1..close];
            let ppid = stat[close + 1..]
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u32>().ok());
            comm == "ssh" && ppid == Some(me)
        })
        .collect()
}

/// Waits for the reparented ssh masters to exit (killing them after `ORPHAN_GRACE`) and
/// reaps them. Returns how many had to be killed.
fn reap_masters() -> usize {
    let deadline = Instant::now() + ORPHAN_GRACE;
    let mut killed = HashSet::new();
    loop {
        let pids = ssh_children();
        if pids.is_empty() {
            return killed.len();
        }
        for &pid in &pids {
            // SAFETY: waitpid on a specific pid that is our child; no memory involved.
            unsafe {
                libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG);
            }
        }
        if Instant::now() >= deadline {
            for pid in ssh_children() {
                // SAFETY: signalling and reaping a specific child of ours (a leftover master
                // started, through pony or floor (b), by this bench).
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
                killed.insert(pid);
            }
            continue;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `body` (which spawns and waits for its processes), then reaps the masters and
/// waits until the fleet's sshd servers have reaped their per-connection processes.
fn measure(fleet: &Fleet, body: impl FnOnce() -> Result<Timed>) -> Result<Sample> {
    let sshd: Vec<u32> = fleet.hosts().iter().map(|h| h.pid).collect();
    let server_before = server_cpu(&sshd);
    let before = children_cpu();
    let sampler = MemorySampler::start();
    let timed = body();
    let peak_client_memory = sampler.stop();
    let Timed { wall, own_cpu } = timed?;
    let after_direct = children_cpu();
    let leftover = reap_masters();
    let after_masters = children_cpu();
    wait_sessions_gone(&sshd);
    Ok(Sample {
        wall,
        own_cpu,
        cpu_direct: after_direct.saturating_sub(before),
        cpu_masters: after_masters.saturating_sub(after_direct),
        cpu_server: server_cpu(&sshd).saturating_sub(server_before),
        leftover,
        peak_client_memory,
    })
}

/// Samples, every `MEMORY_PERIOD` until stopped, the summed PSS of this bench's
/// descendants named `pony` or `ssh` (the fleet's `sshd` are not clients), and keeps
/// the peak. PSS shares a page among the processes that map it, so a thousand `ssh`
/// processes count their one binary once, not a thousand times as RSS would.
struct MemorySampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

const MEMORY_PERIOD: Duration = Duration::from_millis(250);

impl MemorySampler {
    fn start() -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                peak = peak.max(client_memory());
                std::thread::sleep(MEMORY_PERIOD);
            }
            peak
        });
        MemorySampler { stop, thread }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().unwrap_or(0)
    }
}

/// The summed PSS, in bytes, of this process's descendants named `pony` or `ssh`.
fn client_memory() -> u64 {
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return 0;
    };
    let mut parents = std::collections::HashMap::new();
    let mut names = std::collections::HashMap::new();
    for pid in entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
    {
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let ppid = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or(0);
        parents.insert(pid, ppid);
        names.insert(pid, stat[open + 1..close].to_string());
    }
    let descends = |mut pid: u32| {
        for _ in 0..64 {
            match parents.get(&pid) {
                Some(&parent) if parent == me => return true,
                Some(&parent) if parent > 1 => pid = parent,
                _ => return false,
            }
        }
        false
    };
    names
        .iter()
        .filter(|(pid, name)| matches!(name.as_str(), "pony" | "ssh") && descends(**pid))
        .filter_map(|(pid, _)| fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok())
        .filter_map(|rollup| {
            let line = rollup.lines().find(|l| l.starts_with("Pss:"))?;
            let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb * 1024)
        })
        .sum()
}

/// CPU of the fleet's sshd servers and of every process they started and reaped
/// (utime + stime + cutime + cstime from /proc/<pid>/stat).
fn server_cpu(pids: &[u32]) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100);
    let total: u64 = pids
        .iter()
        .filter_map(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let rest = &stat[stat.rfind(')')? + 1..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // utime(14) stime(15) cutime(16) cstime(17), counted from the pid as field 1.
            fields
                .get(11..15)?
                .iter()
                .map(|f| f.parse::<u64>().ok())
                .sum::<Option<u64>>()
        })
        .sum();
    Duration::from_secs_f64(total as f64 / ticks as f64)
}

/// Waits (up to `ORPHAN_GRACE`) until no sshd of the fleet has a child left: the
/// per-connection processes have exited and been reaped, so their CPU is in `cutime`.
fn wait_sessions_gone(sshd: &[u32]) {
    let servers: HashSet<u32> = sshd.iter().copied().collect();
    let deadline = Instant::now() + ORPHAN_GRACE;
    while Instant::now() < deadline {
        let busy = fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    return false;
                };
                fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|stat| {
                        let rest = &stat[stat.rfind(')')? + 1..];
                        rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                    })
                    .is_some_and(|ppid| servers.contains(&ppid))
            });
        if !busy {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------- contenders

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    Pony,
    PonyHandshakes,
    PonyBaseline,
    FloorA,
    FloorB,
    ShellC,
}

impl Contender {
    fn label(self, handshakes: Option<usize>) -> String {
        match self {
            Contender::Pony => "pony deploy".into(),
            Contender::PonyHandshakes => {
                format!("pony (handshakes: {})", handshakes.unwrap_or_default())
            }
            Contender::PonyBaseline => "pony (baseline)".into(),
            Contender::FloorA => "floor (a) plain ssh".into(),
            Contender::FloorB => "floor (b) ControlMaster".into(),
            Contender::ShellC => "ref (c) 1 shell/host".into(),
        }
    }
}

struct Setup<'a> {
    pony: &'a Path,
    baseline: Option<PathBuf>,
    inventory: PathBuf,
    playbook: PathBuf,
    playbook_handshakes: PathBuf,
    work: &'a Path,
    keep: bool,
}

fn playbook_text(handshakes: Option<usize>) -> String {
    let mut text = String::from(
        "name: bench-deploy\nstrategy:\n  max_unavailable: 100%\n  connections: 1000\n",
    );
    if let Some(h) = handshakes {
        let _ = writeln!(text, "  handshakes: {h}");
    }
    text.push_str("steps:\n");
    let timeout = std::env::var("PONY_BENCH_TIMEOUT")
        .ok()
        .filter(|t| !t.trim().is_empty());
    let become_root = std::env::var_os("PONY_BENCH_BECOME").is_some_and(|v| v == "1");
    for i in 1..=STEPS {
        let _ = writeln!(text, "  - name: s{i}\n    run: {COMMAND}");
        if let Some(timeout) = &timeout {
            let _ = writeln!(text, "    timeout: {}", timeout.trim());
        }
        if become_root {
            let _ = writeln!(text, "    become: true");
        }
        if i > 1 {
            let _ = writeln!(text, "    needs: [s{}]", i - 1);
        }
    }
    text
}

fn run_pony(setup: &Setup<'_>, playbook: &Path, round: usize) -> Result<Timed> {
    run_pony_binary(setup, setup.pony, playbook, round)
}

fn run_pony_binary(
    setup: &Setup<'_>,
    binary: &Path,
    playbook: &Path,
    round: usize,
) -> Result<Timed> {
    let state = setup.work.join(format!("state-{round}-{}", unique()));
    // pony's output goes into its state dir (kept with PONY_BENCH_KEEP=1).
    fs::create_dir_all(&state)?;
    let out_path = state.join("pony.out");
    let err_path = state.join("pony.err");
    let started = Instant::now();
    let mut child = Command::new(binary)
        .arg("--state-dir")
        .arg(&state)
        .arg("deploy")
        .arg("-i")
        .arg(&setup.inventory)
        .arg(playbook)
        .arg("--yes")
        .arg("-q")
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path)?)
        .stderr(fs::File::create(&err_path)?)
        .spawn()
        .context("running pony")?;
    // Wait without reaping, read the zombie's own CPU from /proc, then reap.
    let own_cpu = wait_exited(child.id())
        .then(|| own_cpu(child.id()))
        .flatten();
    let status = child.wait().context("waiting for pony")?;
    let wall = started.elapsed();
    if !status.success() {
        bail!(
            "pony deploy failed ({status}):\n{}\n{}",
            fs::read_to_string(&out_path).unwrap_or_default(),
            fs::read_to_string(&err_path).unwrap_or_default()
        );
    }
    if setup.keep {
        println!("    pony state dir: {}", state.display());
    } else {
        let _ = fs::remove_dir_all(&state);
    }
    Ok(Timed { wall, own_cpu })
}

/// Blocks until child `pid` has exited, leaving it a zombie (waitid with WNOWAIT).
fn wait_exited(pid: u32) -> bool {
    loop {
        // SAFETY: waitid fills the siginfo we hand it; pid is our own unreaped child.
        let rc = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 {
            return true;
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return false;
        }
    }
}

/// utime + stime of `pid` itself (not its children), from /proc/<pid>/stat.
fn own_cpu(pid: u32) -> Option<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the comm: state(3) ppid(4) … utime(14) stime(15).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = u64::try_from(ticks).ok().filter(|&t| t > 0)?;
    Some(Duration::from_secs_f64(
        (utime + stime) as f64 / ticks as f64,
    ))
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

fn ssh(fleet: &Fleet) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.arg("-F")
        .arg(fleet.ssh_config_path())
        // (the lab's ssh_config says ConnectTimeout 5: too short on a loaded 2-core machine)
        .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=30"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

fn check(host: &LabHost, what: &str, child: Child) -> Result<()> {
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{what} on {} ({}) failed ({}): {}",
            host.name,
            host.address,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// One plain ssh per host running all the commands, all hosts at once.
fn floor_a(fleet: &Fleet) -> Result<Duration> {
    let joined = [COMMAND; STEPS].join(" && ");
    let started = Instant::now();
    let children = fleet
        .hosts()
        .iter()
        .map(|h| {
            ssh(fleet)
                .arg(h.address.to_string())
                .arg(&joined)
                .spawn()
                .context("running ssh")
        })
        .collect::<Result<Vec<_>>>()?;
    let mut result = Ok(());
    for (h, child) in fleet.hosts().iter().zip(children) {
        let r = check(h, "plain ssh", child);
        if result.is_ok() {
            result = r;
        }
    }
    result.map(|()| started.elapsed())
}

/// Per host: open a master, then the commands one after another over it; all hosts at once.
/// The masters are closed after the clock stops.
fn floor_b(fleet: &Fleet, control_dir: &Path) -> Result<Duration> {
    let started = Instant::now();
    let control = |i: usize| control_dir.join(i.to_string());
    let results: Vec<Result<Duration>> = std::thread::scope(|scope| {
        let handles: Vec<_> = fleet
            .hosts()
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let path = control(i);
                scope.spawn(move || -> Result<Duration> {
                    let address = h.address.to_string();
                    let master = ssh(fleet)
                        .args(["-o", "ControlMaster=yes", "-o", "ControlPersist=60", "-S"])
                        .arg(&path)
                        .args(["-f", "-N"])
                        .arg(&address)
                        .spawn()
                        .context("running ssh")?;
                    check(h, "ssh -M -fN", master)?;
                    for _ in 0..STEPS {
                        let child = ssh(fleet)
                            .arg("-S")
                            .arg(&path)
                            .arg(&address)
                            .arg(COMMAND)
                            .spawn()
                            .context("running ssh")?;
                        check(h, "ssh over the master", child)?;
                    }
                    Ok(started.elapsed())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("thread panicked"))))
            .collect()
    });
    let wall = started.elapsed();
    // Close every master that came up (also after a failure), not timed.
    let closers: Vec<Child> = fleet
        .hosts()
        .iter()
        .enumerate()
        .filter(|(i, _)| control(*i).exists())
        .filter_map(|(i, h)| {
            ssh(fleet)
                .arg("-S")
                .arg(control(i))
                .args(["-O", "exit"])
                .arg(h.address.to_string())
                .stderr(Stdio::null())
                .spawn()
                .ok()
        })
        .collect();
    for mut c in closers {
        let _ = c.wait();
    }
    for r in results {
        r?;
    }
    Ok(wall)
}

/// Reference (c): per host one plain ssh running `sh`, fed the commands one at a time on
/// its stdin (each in its own `sh -c`, as pony runs steps), each answered by a marker line with its exit status before the next is sent
/// (a step-by-step controller with one session per host); all hosts at once.
fn floor_c(fleet: &Fleet) -> Result<Duration> {
    use std::io::{BufRead, BufReader, Write};
    let started = Instant::now();
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = fleet
            .hosts()
            .iter()
            .map(|h| {
                scope.spawn(move || -> Result<()> {
                    let mut child = ssh(fleet)
                        .arg(h.address.to_string())
                        .arg("exec sh")
                        .stdin(Stdio::piped())
                        .stdout(Stdio::piped())
                        .spawn()
                        .context("running ssh")?;
                    let mut input = child.stdin.take().expect("piped");
                    let mut output = BufReader::new(child.stdout.take().expect("piped"));
                    for step in 0..STEPS {
                        writeln!(
                            input,
                            "sh -c '{COMMAND}' </dev/null; echo \"pony-step-{step} $?\""
                        )?;
                        input.flush()?;
                        let mut line = String::new();
                        loop {
                            line.clear();
                            if output.read_line(&mut line)? == 0 {
                                bail!("{}: the shell ended early", h.name);
                            }
                            if let Some(code) = line.strip_prefix(&format!("pony-step-{step} ")) {
                                if code.trim() != "0" {
                                    bail!("{}: step {step} exited {}", h.name, code.trim());
                                }
                                break;
                            }
                        }
                    }
                    drop(input);
                    drop(output);
                    check(h, "ssh sh", child)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("thread panicked"))))
            .collect()
    });
    let wall = started.elapsed();
    for r in results {
        r?;
    }
    Ok(wall)
}

// ---------------------------------------------------------------- one fleet

struct Summary {
    hosts: usize,
    pony: f64,
    floor_a: f64,
    floor_b: f64,
    ratio_a: f64,
    ratio_b: f64,
    cpu_pony_ms: f64,
    cpu_total_ms: f64,
}

fn bench_fleet(
    fleet: &Fleet,
    work: &Path,
    pony: &Path,
    runs: usize,
    handshakes: Option<usize>,
    keep: bool,
    (r, c, h): (usize, usize, usize),
) -> Result<Summary> {
    let hosts = fleet.hosts().len();
    let tasks = (hosts * STEPS) as f64;
    let setup = Setup {
        pony,
        baseline: std::env::var_os("PONY_BENCH_BASELINE")
            .filter(|b| !b.is_empty())
            .map(PathBuf::from),
        inventory: work.join("inventory.yaml"),
        playbook: work.join("playbook.yaml"),
        playbook_handshakes: work.join("playbook-handshakes.yaml"),
        work,
        keep,
    };
    fleet.write_inventory(&setup.inventory)?;
    fs::write(&setup.playbook, playbook_text(None))?;
    if handshakes.is_some() {
        fs::write(&setup.playbook_handshakes, playbook_text(handshakes))?;
    }
    // Unix socket paths are short: keep the ControlPaths under /tmp.
    let control_dir = PathBuf::from(format!("/tmp/pbench-{}", std::process::id()));
    fs::create_dir_all(&control_dir)?;
    let _cleanup = RemoveOnDrop(control_dir.clone());

    let mut contenders = vec![
        Contender::Pony,
        Contender::FloorA,
        Contender::FloorB,
        Contender::ShellC,
    ];
    if handshakes.is_some() {
        contenders.insert(1, Contender::PonyHandshakes);
    }
    if let Some(baseline) = &setup.baseline {
        println!("baseline pony binary: {}", baseline.display());
        contenders.insert(1, Contender::PonyBaseline);
    }
    println!();
    println!(
        "== {hosts} hosts (grid {r}x{c}x{h}, one sshd each), {STEPS} steps = {} host-tasks, {runs} rounds ==",
        hosts * STEPS
    );
    // Warm-up (not counted): page cache, first-connection costs, pony's binary.
    print!("  warm-up...");
    let _ = std::io::Write::flush(&mut std::io::stdout());
    measure(fleet, || floor_a(fleet).map(Timed::from))?;
    measure(fleet, || run_pony(&setup, &setup.playbook, 0))?;
    println!(" done");

    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); contenders.len()];
    for round in 0..runs {
        let n = contenders.len();
        // Rotate the order, and reverse it every other round.
        let mut order: Vec<usize> = (0..n).map(|k| (k + round) % n).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        let mut line = format!("  round {}:", round + 1);
        for &k in &order {
            let sample = match contenders[k] {
                Contender::Pony => measure(fleet, || run_pony(&setup, &setup.playbook, round + 1))?,
                Contender::PonyHandshakes => measure(fleet, || {
                    run_pony(&setup, &setup.playbook_handshakes, round + 1)
                })?,
                Contender::PonyBaseline => measure(fleet, || {
                    let baseline = setup.baseline.as_deref().expect("a baseline binary");
                    run_pony_binary(&setup, baseline, &setup.playbook, round + 1)
                })?,
                Contender::FloorA => measure(fleet, || floor_a(fleet).map(Timed::from))?,
                Contender::ShellC => measure(fleet, || floor_c(fleet).map(Timed::from))?,
                Contender::FloorB => {
                    measure(fleet, || floor_b(fleet, &control_dir).map(Timed::from))?
                }
            };
            let _ = write!(
                line,
                "  {} {:.3}s/{:.2}+{:.2}s cpu",
                short(contenders[k]),
                sample.wall.as_secs_f64(),
                sample.cpu().as_secs_f64(),
                sample.cpu_server.as_secs_f64()
            );
            if sample.leftover > 0 {
                let _ = write!(line, " ({} masters left running, killed)", sample.leftover);
            }
            samples[k].push(sample);
        }
        println!("{line}");
    }

    println!("  (round lines: wall / client CPU + sshd CPU)");
    println!(
        "  {:<26} {:>8} {:>17} {:>9} {:>8} {:>8} {:>9}   {:>17}",
        "median of rounds",
        "wall",
        "(min..max)",
        "client",
        "pony",
        "ssh",
        "sshd",
        "client CPU/host-task"
    );
    let med = |k: usize, f: &dyn Fn(&Sample) -> f64| {
        median(&samples[k].iter().map(f).collect::<Vec<_>>())
    };
    let mut wall = vec![0.0; contenders.len()];
    let mut cpu_own = vec![None; contenders.len()];
    let mut cpu_total = vec![0.0; contenders.len()];
    let mut cpu_all = vec![0.0; contenders.len()];
    for (k, contender) in contenders.iter().enumerate() {
        cpu_all[k] = med(k, &|x| (x.cpu() + x.cpu_server).as_secs_f64());
        let walls: Vec<f64> = samples[k].iter().map(|x| x.wall.as_secs_f64()).collect();
        wall[k] = median(&walls);
        cpu_total[k] = med(k, &|x| x.cpu().as_secs_f64());
        if samples[k].iter().all(|x| x.own_cpu.is_some()) {
            cpu_own[k] = Some(med(k, &|x| x.own_cpu.unwrap_or_default().as_secs_f64()));
        }
        let ssh = med(k, &|x| {
            x.cpu()
                .saturating_sub(x.own_cpu.unwrap_or_default())
                .as_secs_f64()
        });
        let server = med(k, &|x| x.cpu_server.as_secs_f64());
        println!(
            "  {:<26} {:>7.3}s  ({:>6.3}..{:>6.3}) {:>8.3}s {:>8} {:>7.3}s {:>8.3}s   {:>7.3} ms{}",
            contender.label(handshakes),
            wall[k],
            walls.iter().copied().fold(f64::INFINITY, f64::min),
            walls.iter().copied().fold(0.0, f64::max),
            cpu_total[k],
            cpu_own[k]
                .map(|c| format!("{c:.3}s"))
                .unwrap_or_else(|| "-".into()),
            ssh,
            server,
            cpu_total[k] * 1000.0 / tasks,
            cpu_own[k]
                .map(|c| format!(" (pony alone {:.3} ms)", c * 1000.0 / tasks))
                .unwrap_or_default(),
        );
    }
    println!("  peak client memory (PSS of pony and its ssh processes, sampled every {} ms), median of rounds:", MEMORY_PERIOD.as_millis());
    for (k, contender) in contenders.iter().enumerate() {
        let peak = med(k, &|x| x.peak_client_memory as f64);
        println!(
            "  {:<26} {:>8.1} MiB in all, {:>7.1} KiB per connected host",
            contender.label(handshakes),
            peak / 1048576.0,
            peak / 1024.0 / hosts as f64
        );
    }
    let idx = |c: Contender| contenders.iter().position(|&x| x == c).expect("present");
    let (p, a, b) = (
        idx(Contender::Pony),
        idx(Contender::FloorA),
        idx(Contender::FloorB),
    );
    let paired = |x: usize, y: usize| {
        median(
            &samples[x]
                .iter()
                .zip(&samples[y])
                .map(|(s, t)| s.wall.as_secs_f64() / t.wall.as_secs_f64())
                .collect::<Vec<_>>(),
        )
    };
    let ratio_a = wall[p] / wall[a];
    let ratio_b = wall[p] / wall[b];
    let cpu_pony_ms = cpu_own[p].unwrap_or(f64::NAN) * 1000.0 / tasks;
    let cpu_total_ms = cpu_total[p] * 1000.0 / tasks;
    println!(
        "  pony/(a) = {ratio_a:.2} (median of per-round ratios {:.2}){}",
        paired(p, a),
        if hosts == 200 {
            format!(
                "   target <= {TARGET_RATIO_A}: {}",
                verdict(ratio_a <= TARGET_RATIO_A)
            )
        } else {
            String::new()
        }
    );
    println!(
        "  pony/(b) = {ratio_b:.2} (median of per-round ratios {:.2})",
        paired(p, b)
    );
    let c = idx(Contender::ShellC);
    println!(
        "  client + sshd CPU: pony/(a) = {:.2}, (c)/(a) = {:.2}   (less sensitive to other load; wall ~ CPU / {} cores here)",
        cpu_all[p] / cpu_all[a],
        cpu_all[c] / cpu_all[a],
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
    );
    if handshakes.is_some() {
        let q = idx(Contender::PonyHandshakes);
        println!(
            "  {}/(a) = {:.2}",
            Contender::PonyHandshakes.label(handshakes),
            wall[q] / wall[a]
        );
    }
    println!(
        "  controller CPU per host-task: pony process {cpu_pony_ms:.3} ms ({}), with its ssh processes {cpu_total_ms:.3} ms ({}); target <= {TARGET_CPU_MS} ms",
        verdict(cpu_pony_ms <= TARGET_CPU_MS),
        verdict(cpu_total_ms <= TARGET_CPU_MS)
    );
    println!(
        "  (the floors' ssh client CPU per host-task: (a) {:.3} ms, (b) {:.3} ms)",
        cpu_total[a] * 1000.0 / tasks,
        cpu_total[b] * 1000.0 / tasks
    );
    Ok(Summary {
        hosts,
        pony: wall[p],
        floor_a: wall[a],
        floor_b: wall[b],
        ratio_a,
        ratio_b,
        cpu_pony_ms,
        cpu_total_ms,
    })
}

fn short(c: Contender) -> &'static str {
    match c {
        Contender::Pony => "pony",
        Contender::PonyHandshakes => "pony-hs",
        Contender::PonyBaseline => "pony-base",
        Contender::FloorA => "(a)",
        Contender::FloorB => "(b)",
        Contender::ShellC => "(c)",
    }
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
