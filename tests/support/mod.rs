//! Shared harness for tests against a fleet of real sshd servers on loopback
//! (`pony::lab`): a fleet with its inventory, a state dir, and running the pony binary.
//! Every sshd is killed when the `Lab` drops, also when a test panics.

#![allow(dead_code)]

pub mod db;
pub mod tmux;

use pony::lab::{Fleet, FleetOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The crate root: the tests' working directory, where `inventories/` and `playbooks/` are.
pub fn crate_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The pony binary with stdin closed, `NO_COLOR=1`, and none of the test's own `PONY_*`
/// or `RUST_LOG` settings (a test that checks an environment variable sets it on the
/// returned command); no arguments, the test's working directory. Every test starts pony
/// through this (mostly through [`pony`]), or in a terminal through [`clean_shell_line`].
pub fn pony_bare() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pony"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PONY_") {
            command.env_remove(name);
        }
    }
    command
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    command
}

/// `pony --state-dir STATE <args>` ([`pony_bare`]), run from the crate root.
pub fn pony(state: &Path, args: &[&str]) -> Command {
    let mut command = pony_bare();
    command
        .current_dir(crate_root())
        .arg("--state-dir")
        .arg(state)
        .args(args);
    command
}

/// A shell line for a terminal (tmux) that first unsets every `PONY_*` variable and
/// `RUST_LOG` the shell got (from the test, or from a tmux server started before it),
/// then runs `line`: the terminal tests' [`pony_bare`].
pub fn clean_shell_line(line: &str) -> String {
    format!("unset RUST_LOG $(env | sed -n 's/^\\(PONY_[A-Za-z0-9_]*\\)=.*/\\1/p'); {line}")
}

/// `deploy -i INVENTORY PLAYBOOK --yes`: the arguments of an unattended deploy.
pub fn deploy_args<'a>(inventory: &'a Path, playbook: &'a Path) -> Vec<&'a str> {
    vec![
        "deploy",
        "-i",
        inventory.to_str().unwrap(),
        playbook.to_str().unwrap(),
        "--yes",
    ]
}

/// Writes `inventory` and `playbook` into `dir` as `inventory.yaml` and `playbook.yaml`;
/// returns their paths.
pub fn write_plan(dir: &Path, inventory: &str, playbook: impl AsRef<[u8]>) -> (PathBuf, PathBuf) {
    let (inventory_path, playbook_path) = (dir.join("inventory.yaml"), dir.join("playbook.yaml"));
    std::fs::write(&inventory_path, inventory).unwrap();
    std::fs::write(&playbook_path, playbook).unwrap();
    (inventory_path, playbook_path)
}

/// The local inventory `tiny` (no SSH): region r1 (cluster c1: h1, h2) and r2 (c2: h3,
/// h4); each host works in `<state dir>/hosts/<host>/`.
pub const TINY_INVENTORY: &str = "\
name: tiny
defaults:
  connection: local
regions:
  r1:
    clusters:
      c1:
        hosts:
          h1: {}
          h2: {}
  r2:
    clusters:
      c2:
        hosts:
          h3: {}
          h4: {}
";

/// Lines of JSON (events on stdout, journal records); every line must parse.
pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// The events of a run made with `--output json`.
pub fn events(output: &Output) -> Vec<serde_json::Value> {
    json_lines(&String::from_utf8_lossy(&output.stdout))
}

/// The only run in a state dir: (its id, its folder).
pub fn only_run(state: &Path) -> (String, PathBuf) {
    let runs: Vec<PathBuf> = std::fs::read_dir(state.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    (
        runs[0].file_name().unwrap().to_string_lossy().to_string(),
        runs[0].clone(),
    )
}

/// The journal of a run folder, every line parsed.
pub fn journal(run_dir: &Path) -> Vec<serde_json::Value> {
    json_lines(&std::fs::read_to_string(run_dir.join("journal.jsonl")).unwrap())
}

/// Waits until `done()` holds; fails naming `what` after 60 s (a bound for a hung test,
/// not a speed: the condition is what the test waits for).
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct Lab {
    pub fleet: Fleet,
    pub dir: tempfile::TempDir,
    pub inventory: PathBuf,
    pub state: PathBuf,
}

/// 3 regions × 2 clusters × 2 hosts (r1-c1-01 … r3-c2-02); the first cluster of each
/// region has roles mta + store, the second mta. Fails with the install hint when sshd
/// is missing.
pub fn lab() -> Lab {
    lab_with(3, 2, 2)
}

pub fn lab_with(regions: usize, clusters: usize, hosts: usize) -> Lab {
    let dir = tempfile::tempdir().expect("temp dir");
    let fleet = Fleet::start(FleetOptions::grid(
        dir.path().join("lab"),
        regions,
        clusters,
        hosts,
    ))
    .unwrap_or_else(|e| panic!("cannot start the sshd test fleet: {e:#}"));
    let inventory = dir.path().join("inventory.yaml");
    fleet.write_inventory(&inventory).expect("inventory");
    let state = dir.path().join("state");
    Lab {
        fleet,
        dir,
        inventory,
        state,
    }
}

impl Lab {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a playbook into the lab's folder.
    pub fn playbook(&self, yaml: &str) -> PathBuf {
        let path = self.path("playbook.yaml");
        std::fs::write(&path, yaml).expect("playbook");
        path
    }

    /// The lab's hosts in these regions (`r1`, …), in inventory order.
    pub fn hosts_in(&self, regions: &[&str]) -> Vec<String> {
        self.host_names()
            .into_iter()
            .filter(|h| regions.contains(&&h[..2]))
            .collect()
    }

    pub fn root(&self, host: &str) -> PathBuf {
        self.fleet.host(host).root.clone()
    }

    pub fn host_names(&self) -> Vec<String> {
        self.fleet.hosts().iter().map(|h| h.name.clone()).collect()
    }

    /// [`pony`] with the lab's state dir.
    pub fn pony(&self, args: &[&str]) -> Command {
        pony(&self.state, args)
    }

    /// `pony deploy -i INVENTORY PLAYBOOK --yes <extra>`, not started yet.
    pub fn deploy_command(&self, playbook: &Path, extra: &[&str]) -> Command {
        let mut args = deploy_args(&self.inventory, playbook);
        args.extend_from_slice(extra);
        self.pony(&args)
    }

    /// `pony deploy -i INVENTORY PLAYBOOK --yes <extra>` to completion.
    pub fn deploy(&self, playbook: &Path, extra: &[&str]) -> Output {
        self.deploy_command(playbook, extra)
            .output()
            .expect("running pony")
    }

    /// `pony deploy -i INVENTORY PLAYBOOK --yes --output json <extra>`, started with its
    /// stdout (the events) and stderr piped.
    pub fn spawn_deploy(&self, playbook: impl AsRef<Path>, extra: &[&str]) -> std::process::Child {
        let mut args = vec!["--output", "json"];
        args.extend_from_slice(extra);
        self.deploy_command(playbook.as_ref(), &args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("starting pony")
    }

    /// Edits the lab's inventory file in place, as YAML.
    pub fn edit_inventory(&self, edit: impl FnOnce(&mut serde_yaml::Mapping)) {
        let text = std::fs::read_to_string(&self.inventory).unwrap();
        let mut root: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        edit(root.as_mapping_mut().unwrap());
        std::fs::write(&self.inventory, serde_yaml::to_string(&root).unwrap()).unwrap();
    }

    /// Where `current` points on a host (relative target), if anywhere.
    pub fn current(&self, host: &str) -> Option<String> {
        std::fs::read_link(self.root(host).join("srv/mail/current"))
            .ok()
            .map(|p| p.to_string_lossy().to_string())
    }

    /// Puts every host on an "old" release 1.0 before the run.
    pub fn install_old_release(&self) {
        for name in self.host_names() {
            let mail = self.root(&name).join("srv/mail");
            std::fs::create_dir_all(mail.join("releases/1.0")).unwrap();
            std::os::unix::fs::symlink("releases/1.0", mail.join("current")).unwrap();
        }
    }

    /// Marks a host so that the test playbooks' `fail_marker` check fails there.
    pub fn make_fail(&self, host: &str, step: &str) {
        std::fs::write(self.root(host).join(format!("fail-{step}")), "").unwrap();
    }
}

/// The YAML mapping at `path` below `map` (created as needed).
pub fn yaml_at<'m>(
    mut map: &'m mut serde_yaml::Mapping,
    path: &[&str],
) -> &'m mut serde_yaml::Mapping {
    for key in path {
        map = map
            .entry(serde_yaml::Value::String(key.to_string()))
            .or_insert_with(|| serde_yaml::Value::Mapping(serde_yaml::Mapping::new()))
            .as_mapping_mut()
            .unwrap();
    }
    map
}

/// How a process ended, then its stdout and stderr: for failure messages.
pub fn exit_text(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub fn text(output: &Output) -> String {
    format!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A release playbook over the lab: stage, previous (captured), switch (rolled back to
/// the captured previous release), verify. A step fails on hosts whose root holds
/// `fail-<step>`. `strategy` is spliced in as YAML.
pub fn release_playbook(strategy: &str) -> String {
    format!(
        r#"
name: release
vars: {{ version: "2.0" }}
strategy:
{strategy}
steps:
  - name: stage
    run: mkdir -p {{{{ mail_root }}}}/releases/{{{{ version }}}} && test ! -e {{{{ root }}}}/fail-stage
    creates: "{{{{ mail_root }}}}/releases/{{{{ version }}}}/.staged"
    rollback: rm -rf {{{{ mail_root }}}}/releases/{{{{ version }}}}
  - name: previous
    run: readlink {{{{ mail_root }}}}/current || true
    capture: previous
  - name: switch
    needs: [stage, previous]
    run: ln -sfn releases/{{{{ version }}}} {{{{ mail_root }}}}/current.tmp && mv -T {{{{ mail_root }}}}/current.tmp {{{{ mail_root }}}}/current && test ! -e {{{{ root }}}}/fail-switch
    rollback: if [ -n "{{{{ previous }}}}" ]; then ln -sfn {{{{ previous }}}} {{{{ mail_root }}}}/current.tmp && mv -T {{{{ mail_root }}}}/current.tmp {{{{ mail_root }}}}/current; else rm -f {{{{ mail_root }}}}/current; fi
  - name: verify
    needs: [switch]
    run: test "$(readlink {{{{ mail_root }}}}/current)" = releases/{{{{ version }}}} && test ! -e {{{{ root }}}}/fail-verify
"#
    )
}

/// Reads JSON events from a running pony's stdout until one satisfies `last`; returns
/// every event read, that one included. Fails if the output ends first.
pub fn read_events_until(
    stdout: &mut impl std::io::BufRead,
    mut last: impl FnMut(&serde_json::Value) -> bool,
) -> Vec<serde_json::Value> {
    let mut seen = Vec::new();
    loop {
        let mut line = String::new();
        let read = stdout.read_line(&mut line).expect("reading pony's stdout");
        assert!(
            read > 0,
            "pony's output ended first; events so far: {seen:#?}"
        );
        let event: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad JSON line {line:?}: {e}"));
        seen.push(event);
        if last(seen.last().unwrap()) {
            return seen;
        }
    }
}

/// The hosts the journal shows a `task_started` for (labels are `step@host`).
pub fn started_hosts(journal: &[serde_json::Value]) -> std::collections::BTreeSet<String> {
    journal
        .iter()
        .filter(|r| r["type"] == "task_started")
        .filter_map(|r| {
            r["label"]
                .as_str()?
                .split_once('@')
                .map(|(_, h)| h.to_string())
        })
        .collect()
}

/// (state, parent pid) of a live process, from `/proc/PID/stat`.
pub fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = text.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    Some((state, parent))
}

/// The exit code a shell line wrote with `echo $? > FILE` (a command run in a terminal),
/// once it is all there: the shell creates the file before `echo` writes into it, so a
/// file that exists may still be empty.
pub fn wait_for_exit_code(file: &Path) -> i32 {
    let mut written = String::new();
    wait_until("the command's exit code", || {
        written = std::fs::read_to_string(file).unwrap_or_default();
        written.ends_with('\n')
    });
    written
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("not an exit code: {written:?}"))
}

/// Whether `root` and every process below it are stopped (SIGSTOP). A child that ended
/// as its tree froze stays a zombie, since its stopped parent cannot reap it: it runs
/// nothing either, so it counts as frozen.
pub fn tree_is_frozen(root: u32) -> bool {
    descendants(root)
        .into_iter()
        .chain([root])
        .all(|pid| proc_stat(pid).is_none_or(|(state, _)| matches!(state, 'T' | 'Z' | 'X')))
}

/// Whether `pid` is alive and not a zombie.
pub fn is_running(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| !matches!(state, 'Z' | 'X'))
}

/// Whether `pid` is `ancestor` or runs below it.
pub fn descends_from(mut pid: u32, ancestor: u32) -> bool {
    for _ in 0..64 {
        if pid == ancestor {
            return true;
        }
        match proc_stat(pid) {
            Some((_, parent)) if parent > 1 => pid = parent,
            _ => return false,
        }
    }
    false
}

/// Every live process below `root` (not `root` itself).
pub fn descendants(root: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|&pid| pid != root && descends_from(pid, root))
        .collect()
}

/// One TCP connection of this machine, from `/proc/net/tcp`.
#[derive(Debug, Clone)]
pub struct TcpEntry {
    pub local: std::net::SocketAddrV4,
    pub remote: std::net::SocketAddrV4,
    /// `01` is ESTABLISHED, `0A` LISTEN.
    pub state: String,
    pub inode: u64,
}

fn hex_addr(text: &str) -> std::net::SocketAddrV4 {
    let (ip, port) = text.split_once(':').unwrap();
    let ip = u32::from_str_radix(ip, 16).unwrap();
    std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::from(ip.to_le_bytes()),
        u16::from_str_radix(port, 16).unwrap(),
    )
}

/// The machine's IPv4 TCP sockets.
pub fn tcp_table() -> Vec<TcpEntry> {
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            TcpEntry {
                local: hex_addr(f[1]),
                remote: hex_addr(f[2]),
                state: f[3].to_string(),
                inode: f[9].parse().unwrap(),
            }
        })
        .collect()
}

/// The processes holding socket `inode` open.
pub fn socket_owners(inode: u64) -> Vec<u32> {
    let needle = format!("socket:[{inode}]");
    let mut owners = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        if fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == needle))
        {
            owners.push(pid);
        }
    }
    owners
}

/// Kills a process of the test's own (by its pid, SIGKILL) if it is still there after
/// `bound`: a blocking read of its output then ends instead of hanging the suite (a
/// bound for a hung test, not a speed). Dropping the guard calls it off.
pub struct Watchdog {
    cancel: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    pub fn new(pid: u32, bound: Duration, what: &str) -> Watchdog {
        let (cancel, cancelled) = std::sync::mpsc::channel::<()>();
        let what = what.to_string();
        let thread = std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = cancelled.recv_timeout(bound) {
                eprintln!("watchdog: {what} still runs after {bound:?}; killing pid {pid}");
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        });
        Watchdog {
            cancel: Some(cancel),
            thread: Some(thread),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.cancel.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A `pony` process of the test's own, killed (by its pid) if the test fails before it
/// ends: a controller waiting for another's regions, or a run held by a marker, would
/// otherwise wait for good.
pub struct Reaped(pub Option<std::process::Child>);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Reaped {
    pub fn new(child: std::process::Child) -> Reaped {
        Reaped(Some(child))
    }

    pub fn child(&mut self) -> &mut std::process::Child {
        self.0.as_mut().expect("not taken yet")
    }

    /// Waits for the process to end (60 s bound for a hung test) and returns its output.
    pub fn wait_with_output(mut self) -> std::io::Result<Output> {
        let mut child = self.0.take().expect("not taken yet");
        wait_until("a pony process to end", || {
            child.try_wait().map(|s| s.is_some()).unwrap_or(true)
        });
        child.wait_with_output()
    }

    /// Fails the test with the process's stderr if it ended already.
    pub fn still_running(&mut self, what: &str) {
        let child = self.child();
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(stderr) = child.stderr.as_mut() {
                std::io::Read::read_to_string(stderr, &mut err).unwrap();
            }
            panic!("{what} ended early ({status}): {err}");
        }
    }
}

impl std::ops::Deref for Reaped {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        self.0.as_ref().expect("not taken yet")
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        self.0.as_mut().expect("not taken yet")
    }
}

/// A process's exit code (-1 when a signal ended it).
pub fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

/// The commands `pony status RUN` suggests to go on (`waiting.next` of its JSON), each
/// checked to be a `pony` command.
pub fn suggestions(state: &Path, run: &str) -> Vec<String> {
    let status = pony(state, &["status", run, "--output", "json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&status.stdout)
        .unwrap_or_else(|e| panic!("status JSON: {e}: {}", text(&status)));
    let next: Vec<String> = report["waiting"]["next"]
        .as_array()
        .unwrap_or_else(|| panic!("status suggests nothing: {report:#}"))
        .iter()
        .map(|line| line.as_str().unwrap().to_string())
        .collect();
    assert!(
        !next.is_empty() && next.iter().all(|line| line.starts_with("pony ")),
        "{report:#}"
    );
    next
}

/// The first of [`suggestions`].
pub fn suggested_command(state: &Path, run: &str) -> String {
    suggestions(state, run).remove(0)
}

/// `line` as a person types it in a shell: through `sh -c`, with this build's pony
/// first on PATH, from the crate root, without the test's `PONY_*` variables.
pub fn typed(line: &str) -> Command {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_pony"))
        .parent()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new("sh");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PONY_") {
            command.env_remove(name);
        }
    }
    command
        .arg("-c")
        .arg(line)
        .env("PATH", path)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .current_dir(crate_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}
