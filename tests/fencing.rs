//! One set of hands per host: what a controller started on a host dies with it.
//!
//! - A second Ctrl-C kills a running step's whole command on every host (real sshd hosts
//!   and `connection: local` hosts alike): once pony has exited 130, no host's tick file
//!   grows any more and no process of the step is left (the lab hosts run on this
//!   machine, so `/proc` shows them).
//! - A controller killed outright (SIGKILL: no cleanup at all) leaves its step running;
//!   `pony resume` kills that copy on each host before it starts the task again, and the
//!   task's log says so.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use support::{journal, lab_with, only_run, pony, text, wait_until, write_plan};

/// Appends a line to `$1/ticks` every 50 ms, for ever; its command line names the
/// script, so that its processes can be found in `/proc`.
const TICKER: &str = "while :; do date +%s%N >> \"$1/ticks\"; sleep 0.05; done\n";

fn signal(child: &Child, signal: i32) {
    // Our own child, by its pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
}

/// Live (not zombie) processes whose command line mentions `script`.
fn processes_running(script: &Path) -> Vec<u32> {
    let needle = script.to_string_lossy().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|&pid| support::is_running(pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                .unwrap_or(false)
        })
        .collect()
}

/// A spawned pony that a failing test does not leave running.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Waits (bounded) until no process of the step is left, then checks that no tick file
/// grows any more over a few of the step's periods.
fn assert_step_is_dead(script: &Path, ticks: &[PathBuf]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = processes_running(script);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the step still runs after pony exited: pids {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let before: Vec<u64> = ticks.iter().map(|t| size(t)).collect();
    assert!(
        before.iter().all(|&s| s > 0),
        "every host ticked: {before:?}"
    );
    // Ten of the step's periods: a live ticker would have written in each.
    std::thread::sleep(Duration::from_millis(500));
    let after: Vec<u64> = ticks.iter().map(|t| size(t)).collect();
    assert_eq!(before, after, "a tick file grew after pony exited");
}

/// Sends two SIGINTs to a running deploy once every host ticks; it exits 130.
fn interrupt_twice(mut child: Child, ticks: &[PathBuf]) -> std::process::Output {
    // The reads below block until pony closes its output; a pony that never stops (a
    // lost Ctrl-C once left it draining a step that never ends) is killed so that the
    // test fails with the events so far instead of hanging the suite.
    let watchdog = support::Watchdog::new(child.id(), Duration::from_secs(120), "pony deploy");
    wait_until("every host to tick", || ticks.iter().all(|t| size(t) > 0));
    signal(&child, libc::SIGINT);
    // The first Ctrl-C is taken (the run drains) before the second one comes.
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut events = support::read_events_until(&mut stdout, |e| e["event"] == "stopped");
    signal(&child, libc::SIGINT);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    events.extend(support::json_lines(&rest));
    let out = child.wait_with_output().unwrap();
    drop(watchdog);
    assert_eq!(out.status.code(), Some(130), "{events:#?}\n{}", text(&out));
    let killed = events
        .iter()
        .filter(|e| e["event"] == "task_interrupted")
        .inspect(|e| {
            assert!(
                e["kill"]
                    .as_str()
                    .unwrap_or("")
                    .contains("killed on the host"),
                "{e}"
            )
        })
        .count();
    assert_eq!(killed, ticks.len(), "{events:#?}");
    out
}

#[test]
fn a_second_ctrl_c_kills_the_steps_whole_command_on_every_ssh_host() {
    let lab = lab_with(1, 2, 2);
    let script = lab.path("ticker-ssh.sh");
    std::fs::write(&script, TICKER).unwrap();
    let playbook = lab.playbook(&format!(
        "name: ticking\nstrategy: {{ max_unavailable: 100% }}\nsteps:\n  - {{ name: tick, run: \"sh {} {{{{ root }}}}\" }}\n",
        script.display()
    ));
    let ticks: Vec<PathBuf> = lab
        .host_names()
        .iter()
        .map(|h| lab.root(h).join("ticks"))
        .collect();
    let child = lab.spawn_deploy(&playbook, &[]);
    interrupt_twice(child, &ticks);
    assert_step_is_dead(&script, &ticks);

    // The journal says the tasks were interrupted and that their commands were killed.
    let (_, run_dir) = only_run(&lab.state);
    let ended: Vec<_> = journal(&run_dir)
        .into_iter()
        .filter(|r| r["state"] == "interrupted")
        .collect();
    assert_eq!(ended.len(), ticks.len(), "{ended:#?}");
    for record in ended {
        let error = record["error"].as_str().unwrap_or_default();
        assert!(error.contains("killed on the host"), "{record}");
    }
}

const LOCAL_INVENTORY: &str = "\
name: local-fence
defaults:
  connection: local
regions:
  r1:
    clusters:
      c1:
        hosts:
          h1: {}
          h2: {}
";

#[test]
fn a_second_ctrl_c_kills_the_steps_whole_command_on_local_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("ticker-local.sh");
    std::fs::write(&script, TICKER).unwrap();
    let (inventory, playbook) = write_plan(
        dir.path(),
        LOCAL_INVENTORY,
        format!(
            "name: ticking\nstrategy: {{ max_unavailable: 100% }}\nsteps:\n  - {{ name: tick, run: \"sh {} .\" }}\n",
            script.display()
        ),
    );
    let state = dir.path().join("state");
    let ticks: Vec<PathBuf> = ["h1", "h2"]
        .iter()
        .map(|h| state.join("hosts").join(h).join("ticks"))
        .collect();
    let child = pony(
        &state,
        &[
            "deploy",
            "-i",
            inventory.to_str().unwrap(),
            playbook.to_str().unwrap(),
            "--yes",
            "--output",
            "json",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    interrupt_twice(child, &ticks);
    assert_step_is_dead(&script, &ticks);
}

#[test]
fn resume_kills_the_copy_a_killed_controller_left_running_before_it_starts_the_task() {
    let lab = lab_with(1, 1, 2);
    let script = lab.path("ticker-resume.sh");
    std::fs::write(&script, TICKER).unwrap();
    // The resumed run finds `second` on each host and ends the step at once.
    let playbook = lab.playbook(&format!(
        "name: ticking\nstrategy: {{ max_unavailable: 100% }}\nsteps:\n  - {{ name: tick, run: \"[ -e {{{{ root }}}}/second ] && exit 0; sh {} {{{{ root }}}}\" }}\n",
        script.display()
    ));
    let hosts = lab.host_names();
    let ticks: Vec<PathBuf> = hosts.iter().map(|h| lab.root(h).join("ticks")).collect();
    let mut child = lab.spawn_deploy(&playbook, &[]);
    wait_until("every host to tick", || ticks.iter().all(|t| size(t) > 0));
    // No cleanup at all: the steps on the hosts live on.
    signal(&child, libc::SIGKILL);
    child.wait().unwrap();
    for host in &hosts {
        std::fs::write(lab.root(host).join("second"), "").unwrap();
    }
    let (run, run_dir) = only_run(&lab.state);
    let out = lab.pony(&["resume", &run]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_step_is_dead(&script, &ticks);
    // Each host's log says that a copy was killed.
    let mut said = 0;
    for entry in walk(&run_dir) {
        let content = String::from_utf8_lossy(&std::fs::read(&entry).unwrap()).to_string();
        said += content
            .matches("pony: killed a copy of this task that an earlier controller left running")
            .count();
    }
    assert!(
        said >= hosts.len(),
        "{said} mentions in {}",
        run_dir.display()
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn unlock_refuses_a_live_runs_lock_naming_it_and_breaks_it_only_with_force() {
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let (inventory, playbook) = write_plan(
        dir.path(),
        LOCAL_INVENTORY,
        format!(
            "name: held\nsteps:\n  - {{ name: hold, run: \"touch started; while [ ! -e {} ]; do sleep 0.02; done\" }}\n",
            gate.display()
        ),
    );
    let state = dir.path().join("state");
    let mut deploy = KillOnDrop(
        pony(
            &state,
            &[
                "deploy",
                "-i",
                inventory.to_str().unwrap(),
                playbook.to_str().unwrap(),
                "--yes",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    wait_until("the run to hold its hosts", || {
        state.join("hosts/h1/started").exists()
    });
    let (run, _) = only_run(&state);

    let refused = pony(&state, &["unlock", "local-fence"]).output().unwrap();
    let said = text(&refused);
    assert_eq!(refused.status.code(), Some(4), "{said}");
    assert!(said.contains("held by a live run"), "{said}");
    assert!(said.contains(&run), "names the run: {said}");
    assert!(
        said.contains(&format!("pid {}", deploy.0.id())),
        "names the pid: {said}"
    );
    assert!(said.contains("--force"), "{said}");
    assert!(
        state.join("locks/local-fence.lock").exists(),
        "the lock is still there"
    );

    let forced = pony(&state, &["unlock", "local-fence", "--force"])
        .output()
        .unwrap();
    let said = text(&forced);
    assert_eq!(forced.status.code(), Some(0), "{said}");
    assert!(said.contains("broke the live lock"), "{said}");
    assert!(
        said.contains(&run) && said.contains("is not stopped"),
        "{said}"
    );
    assert!(!state.join("locks/local-fence.lock").exists());

    std::fs::write(&gate, "").unwrap();
    assert!(deploy.0.wait().unwrap().success());
    // A lock whose run is gone needs no --force (as before).
    let again = pony(&state, &["unlock", "local-fence"]).output().unwrap();
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
}

/// A refusal of the command line: exit 2, the message says what is wrong, nothing ran.
fn refused(args: &[&str], env: &[(&str, &str)], says: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (inventory, playbook) = write_plan(
        dir.path(),
        LOCAL_INVENTORY,
        "name: p\nsteps:\n  - { name: s, run: \"touch ran\" }\n",
    );
    let state = dir.path().join("state");
    let mut full = vec![
        "deploy",
        "-i",
        inventory.to_str().unwrap(),
        playbook.to_str().unwrap(),
        "--yes",
    ];
    full.extend_from_slice(args);
    let out = pony(&state, &full)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {said}");
    assert!(said.contains(says), "{args:?} {env:?}: {said}");
    assert!(!state.join("hosts/h1/ran").exists(), "nothing ran");
}

#[test]
fn empty_regions_are_refused_not_taken_as_every_region() {
    let state = ["--state", "postgres://pony@127.0.0.1:1/pony"];
    for regions in ["", ",", " , ", " "] {
        let mut args = state.to_vec();
        args.extend(["--regions", regions]);
        refused(&args, &[], "names no region");
    }
    // An empty CI variable is the same.
    refused(&state, &[("PONY_REGIONS", "")], "names no region");
}

#[test]
fn controller_names_are_short_and_printable() {
    let state = [
        "--state",
        "postgres://pony@127.0.0.1:1/pony",
        "--regions",
        "r1",
    ];
    let long = "x".repeat(5000);
    for (name, says) in [
        ("ops\nfake line", "control character"),
        ("ops\u{1b}[2J", "control character"),
        (long.as_str(), "at most 64"),
        ("  ", "empty"),
    ] {
        let mut args = state.to_vec();
        args.extend(["--controller", name]);
        refused(&args, &[], says);
    }
}

#[test]
fn a_lease_beyond_a_day_is_refused_up_front() {
    refused(&["--lease", "597h"], &[], "too long");
    refused(&[], &[("PONY_LEASE", "25h")], "too long");
    refused(&["--lease", "0s"], &[], "too short");
}

#[test]
fn a_mistyped_state_scheme_never_prints_the_password() {
    for url in [
        "postgress://ann:Secr3tPW@db.example/pony",
        "postgress:ann:Secr3tPW@db.example/pony",
        "postgres:/ann:Secr3tPW@db.example/pony",
        "ann:Secr3tPW@db.example/pony",
    ] {
        let dir = tempfile::tempdir().unwrap();
        for args in [vec!["history"], vec!["status"], vec!["unlock", "x"]] {
            let mut full = vec!["--state", url];
            full.extend(args.iter().copied());
            let out = pony(&dir.path().join("state"), &full).output().unwrap();
            let said = text(&out);
            assert_eq!(out.status.code(), Some(2), "{url} {args:?}: {said}");
            assert!(said.contains("not a postgres:// URL"), "{url}: {said}");
            assert!(!said.contains("Secr3tPW"), "{url} {args:?}: {said}");
        }
        let out = pony(&dir.path().join("state"), &["history"])
            .env("PONY_STATE", url)
            .output()
            .unwrap();
        assert!(!text(&out).contains("Secr3tPW"), "{url}: {}", text(&out));
    }
}
