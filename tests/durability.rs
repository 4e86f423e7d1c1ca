//! Durability against the real sshd fleet: a controller killed with SIGKILL and resumed,
//! SIGINT, `pony rollback` of a finished run, the inventory lock (held, stale, kept by a
//! run paused for approval), approval gates in CI, a torn journal line, and runs named
//! by a prefix of their id.

mod support;

use support::code;

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};
use support::{
    deploy_args, json_lines, lab, read_events_until, release_playbook, text, write_plan, Lab,
};

/// Every step appends its name to a per-host counter file, so a task that runs twice
/// shows up as two lines; `slow` holds until the test opens the gate (`GATE`, replaced
/// by [`counted`]), so a test can act while tasks are running.
const COUNTED: &str = r#"
name: counted
strategy: { max_unavailable: 50% }
steps:
  - { name: one, run: "echo one >> {{ root }}/count-one" }
  - { name: slow, needs: [one], run: "echo slow >> {{ root }}/count-slow; touch {{ root }}/slow-started; while [ ! -e GATE ]; do sleep 0.02; done" }
  - { name: three, needs: [slow], run: "echo three >> {{ root }}/count-three" }
"#;

/// The gate file `slow` waits for.
fn gate(lab: &Lab) -> PathBuf {
    lab.path("gate-open")
}

fn open_gate(lab: &Lab) {
    std::fs::write(gate(lab), "").unwrap();
}

/// [`COUNTED`] with its gate in the lab's folder.
fn counted(lab: &Lab) -> String {
    COUNTED.replace("GATE", gate(lab).to_str().unwrap())
}

/// The journal's lines as JSON. Every line must parse, but for a torn last one when
/// `torn_last_allowed`; a journal left by a controller that exited normally ends in a
/// newline.
fn journal_lines(run_dir: &Path, torn_last_allowed: bool) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(run_dir.join("journal.jsonl")).unwrap();
    if !torn_last_allowed {
        assert!(text.ends_with('\n'), "the journal ends mid-line:\n{text}");
    }
    let lines: Vec<&str> = text.lines().collect();
    let mut records = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(record) => {
                assert!(record["type"].is_string(), "line {}: {line}", i + 1);
                records.push(record);
            }
            Err(_) if torn_last_allowed && i + 1 == lines.len() => {}
            Err(e) => panic!("journal line {} does not parse ({e}): {line}", i + 1),
        }
    }
    records
}

/// [`Lab::deploy_command`] with stdout and stderr piped.
fn deploy_command(lab: &Lab, playbook: &Path, extra: &[&str]) -> Command {
    let mut command = lab.deploy_command(playbook, extra);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

fn spawn_deploy(lab: &Lab, playbook: &Path, extra: &[&str]) -> Child {
    deploy_command(lab, playbook, extra).spawn().expect("pony")
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn only_run(lab: &Lab) -> (String, PathBuf) {
    let runs: Vec<PathBuf> = std::fs::read_dir(lab.state.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    (
        runs[0].file_name().unwrap().to_string_lossy().to_string(),
        runs[0].clone(),
    )
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// Labels the journal shows succeeded.
fn succeeded(run_dir: &Path) -> Vec<String> {
    std::fs::read_to_string(run_dir.join("journal.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["type"] == "task_finished" && r["state"] == "succeeded")
        .map(|r| r["label"].as_str().unwrap().to_string())
        .collect()
}

fn resume(lab: &Lab, run: &str, extra: &[&str]) -> Output {
    let mut args = vec!["resume", run];
    args.extend_from_slice(extra);
    lab.pony(&args).output().unwrap()
}

/// Deploys `playbook` (a [`counted`] one) and SIGKILLs the controller, no cleanup at all,
/// once `host` started `slow`; then opens the gate, which lets the orphaned `slow`
/// commands on the hosts end and the resumed ones run. Returns (run id, run folder).
fn killed_mid_run(lab: &Lab, playbook: &Path, host: &str) -> (String, PathBuf) {
    let mut child = spawn_deploy(lab, playbook, &[]);
    wait_for(&lab.root(host).join("slow-started"));
    child.kill().unwrap();
    child.wait().unwrap();
    open_gate(lab);
    only_run(lab)
}

fn assert_all_counted_once_or_more(lab: &Lab) {
    for host in lab.host_names() {
        for step in ["one", "slow", "three"] {
            assert!(
                lines(&lab.root(&host).join(format!("count-{step}"))) >= 1,
                "{step} never ran on {host}"
            );
        }
    }
}

#[test]
fn a_controller_killed_mid_run_resumes_without_running_a_succeeded_task_twice() {
    let lab = lab();
    let playbook = lab.playbook(&counted(&lab));
    let (run, run_dir) = killed_mid_run(&lab, &playbook, "r2-c1-01");
    let done_before = succeeded(&run_dir);
    assert!(!done_before.is_empty());

    // The dead controller's lock is stale: a new deploy is refused and told how to go on.
    let blocked = lab.deploy(&playbook, &[]);
    assert_eq!(code(&blocked), 4, "{}", text(&blocked));
    let stderr = String::from_utf8_lossy(&blocked.stderr);
    assert!(
        stderr.contains("stale lock")
            && stderr.contains(&run)
            && stderr.contains("pony unlock lab"),
        "{stderr}"
    );

    let resumed = resume(&lab, &run, &[]);
    assert_eq!(code(&resumed), 0, "{}", text(&resumed));
    assert_all_counted_once_or_more(&lab);
    for label in done_before {
        let (step, host) = label.split_once('@').unwrap();
        assert_eq!(
            lines(&lab.root(host).join(format!("count-{step}"))),
            1,
            "{label} succeeded before the crash and ran again"
        );
    }
}

#[test]
fn sigint_stops_with_130_hosts_in_flight_finish_every_task_no_host_starts_and_the_run_resumes() {
    let lab = lab();
    let playbook = lab.playbook(&counted(&lab));
    let mut child = spawn_deploy(&lab, &playbook, &["--output", "json"]);
    wait_for(&lab.root("r1-c1-01").join("slow-started"));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    // The `stopped` event says pony took the interrupt; only then may the held `slow`
    // tasks finish, so any task started after them was started after the interrupt.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let before = read_events_until(&mut stdout, |e| e["event"] == "stopped");
    let stopped = before.last().unwrap();
    assert!(
        stopped["reason"]
            .as_str()
            .unwrap()
            .starts_with("interrupted"),
        "{stopped}"
    );
    open_gate(&lab);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let after = json_lines(&rest);
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 130, "{before:#?}\n{rest}\n{}", text(&out));
    let (run, run_dir) = only_run(&lab);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("pony resume {run}")),
        "{}",
        text(&out)
    );

    // Hosts in flight at the interrupt finished every task; no other host started.
    let host_of = |e: &serde_json::Value| e["task"]["host"].as_str().unwrap().to_string();
    let in_flight: std::collections::BTreeSet<String> = before
        .iter()
        .filter(|e| e["event"] == "task_started")
        .map(host_of)
        .collect();
    assert!(in_flight.contains("r1-c1-01"), "{in_flight:?}");
    for event in &after {
        if event["event"] == "task_started" {
            assert!(
                in_flight.contains(&host_of(event)),
                "a host started after the interrupt: {event}"
            );
        }
    }
    let records = journal_lines(&run_dir, false);
    let label = |r: &serde_json::Value| r["label"].as_str().unwrap().to_string();
    let started: Vec<String> = records
        .iter()
        .filter(|r| r["type"] == "task_started")
        .map(label)
        .collect();
    for task in &started {
        let finish = records
            .iter()
            .rfind(|r| r["type"] == "task_finished" && label(r) == *task)
            .unwrap_or_else(|| panic!("{task} started and never finished"));
        assert_eq!(finish["state"], "succeeded", "{finish}");
    }
    for host in lab.host_names() {
        let root = lab.root(&host);
        if in_flight.contains(&host) {
            for step in ["one", "slow", "three"] {
                assert!(
                    succeeded(&run_dir).contains(&format!("{step}@{host}")),
                    "{host} was in flight: `{step}` finished"
                );
            }
            assert!(root.join("count-three").exists(), "{host}");
        } else {
            assert!(
                !root.join("count-one").exists(),
                "{host} started after the interrupt"
            );
        }
    }
    let finished = records.last().unwrap();
    assert_eq!(finished["type"], "run_finished");
    assert_eq!(finished["outcome"], "interrupted");
    assert_eq!(finished["exit_code"], 130);

    let resumed = resume(&lab, &run, &[]);
    assert_eq!(code(&resumed), 0, "{}", text(&resumed));
    assert_all_counted_once_or_more(&lab);
    for host in lab.host_names() {
        assert_eq!(
            lines(&lab.root(&host).join("count-one")),
            1,
            "{host}: `one` ran twice"
        );
    }
}

#[test]
fn rollback_of_a_successful_run_puts_every_host_back_on_the_previous_release() {
    let lab = lab();
    lab.install_old_release();
    let playbook =
        lab.playbook(&release_playbook("  max_unavailable: 100%").replace("/.staged", ""));
    let out = lab.deploy(&playbook, &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let (run, _) = only_run(&lab);
    assert_eq!(lab.current("r3-c2-01").as_deref(), Some("releases/2.0"));
    let limited = lab
        .pony(&["rollback", &run, "--yes", "--limit", "r1"])
        .output()
        .unwrap();
    assert_eq!(code(&limited), 0, "{}", text(&limited));
    for host in lab.host_names() {
        let expected = if host.starts_with("r1-") {
            "releases/1.0"
        } else {
            "releases/2.0"
        };
        assert_eq!(lab.current(&host).as_deref(), Some(expected), "{host}");
    }
    let rest = lab.pony(&["rollback", &run, "--yes"]).output().unwrap();
    assert_eq!(code(&rest), 0, "{}", text(&rest));
    for host in lab.host_names() {
        assert_eq!(
            lab.current(&host).as_deref(),
            Some("releases/1.0"),
            "{host}"
        );
        assert!(
            !lab.root(&host).join("srv/mail/releases/2.0").exists(),
            "{host}: stage rolled back"
        );
    }
    // The rollback is journaled: r1's rollbacks ran once, in the first call.
    let journal =
        std::fs::read_to_string(lab.state.join("runs").join(&run).join("journal.jsonl")).unwrap();
    assert_eq!(
        journal.matches("\"type\":\"rollback_finished\"").count(),
        24,
        "12 hosts × (switch, stage)"
    );
}

#[test]
fn a_concurrent_deploy_exits_4_naming_the_holder_its_pid_host_user_and_start_time() {
    let lab = lab();
    let playbook = lab.playbook(&counted(&lab));
    let before = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let first = deploy_command(&lab, &playbook, &[])
        .env("USER", "lock-holder")
        .spawn()
        .expect("pony");
    wait_for(&lab.root("r1-c1-01").join("slow-started"));
    let second = lab.deploy(&playbook, &[]);
    let (run, _) = only_run(&lab);
    assert_eq!(code(&second), 4, "{}", text(&second));
    let stderr = String::from_utf8_lossy(&second.stderr);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let holder = format!(
        "locked by run {run} (pid {} on {host}, user lock-holder, since ",
        first.id()
    );
    let at = stderr
        .find(&holder)
        .unwrap_or_else(|| panic!("no {holder:?} in:\n{stderr}"));
    let since = &stderr[at + holder.len()..];
    let since = &since[..since.find(')').expect("a closing parenthesis")];
    let started = humantime::parse_rfc3339(since)
        .unwrap_or_else(|e| panic!("start time {since:?}: {e}"))
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let after = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        (before..=after).contains(&started),
        "the lock's start time {since} is not when the first deploy started"
    );
    // The lock file says the same.
    let lock: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(lab.state.join("locks/lab.lock")).unwrap())
            .unwrap();
    assert_eq!(lock["run_id"], run.as_str());
    assert_eq!(lock["pid"], first.id());
    assert_eq!(lock["host"], host.as_str());
    assert_eq!(lock["user"], "lock-holder");
    assert_eq!(lock["started"], since);
    assert!(second.stdout.is_empty());
    assert!(
        lab.state.join("runs").read_dir().unwrap().nth(1).is_none(),
        "the refused deploy made no run folder"
    );

    open_gate(&lab);
    let out = first.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    // Released at the end: the next deploy runs.
    assert!(!lab.state.join("locks/lab.lock").exists());
    let third = lab.deploy(&playbook, &[]);
    assert_eq!(code(&third), 0, "{}", text(&third));
}

#[test]
fn an_approve_gate_in_ci_exits_10_keeps_the_lock_and_resume_approve_completes() {
    let lab = lab();
    open_gate(&lab);
    let playbook = lab.playbook(&counted(&lab).replace(
        "strategy: { max_unavailable: 50% }",
        "strategy:\n  waves:\n    - { name: first, regions: [r1], approve: true }\n    - { name: rest, regions: [\"*\"] }",
    ));
    let out = lab.deploy(&playbook, &[]);
    assert_eq!(code(&out), 10, "{}", text(&out));
    let (run, _) = only_run(&lab);
    let all = text(&out);
    assert!(
        all.contains(&format!("pony resume {run} --approve first")),
        "{all}"
    );
    for host in lab.host_names() {
        let ran = lines(&lab.root(&host).join("count-three"));
        assert_eq!(
            ran,
            usize::from(host.starts_with("r1-")),
            "{host}: only wave `first` ran"
        );
    }
    let blocked = lab.deploy(&playbook, &[]);
    assert_eq!(
        code(&blocked),
        4,
        "the paused run keeps the lock: {}",
        text(&blocked)
    );
    assert!(String::from_utf8_lossy(&blocked.stderr).contains("paused awaiting approval"));
    let resumed = resume(&lab, &run, &["--approve", "first"]);
    assert_eq!(code(&resumed), 0, "{}", text(&resumed));
    for host in lab.host_names() {
        assert_eq!(lines(&lab.root(&host).join("count-three")), 1, "{host}");
        assert_eq!(
            lines(&lab.root(&host).join("count-one")),
            1,
            "{host}: nothing ran twice"
        );
    }
}

#[test]
fn a_journal_with_a_torn_last_line_resumes_and_unlock_breaks_a_stale_lock() {
    let lab = lab();
    let playbook = lab.playbook(&counted(&lab));
    let (run, run_dir) = killed_mid_run(&lab, &playbook, "r3-c2-01");
    use std::io::Write;
    let mut journal = std::fs::OpenOptions::new()
        .append(true)
        .open(run_dir.join("journal.jsonl"))
        .unwrap();
    journal
        .write_all(b"{\"type\":\"task_finished\",\"node\":3,\"lab")
        .unwrap();
    drop(journal);
    journal_lines(&run_dir, true);
    let unlocked = lab.pony(&["unlock", "lab"]).output().unwrap();
    assert_eq!(code(&unlocked), 0, "{}", text(&unlocked));
    assert!(String::from_utf8_lossy(&unlocked.stdout).contains(&run));
    let resumed = resume(&lab, &run, &[]);
    assert_eq!(code(&resumed), 0, "{}", text(&resumed));
    assert_all_counted_once_or_more(&lab);
    // The resume appended behind the torn fragment without gluing onto it.
    let records = journal_lines(&run_dir, false);
    assert!(records.iter().any(|r| r["type"] == "run_resumed"));
    assert_eq!(records.last().unwrap()["outcome"], "succeeded");

    // So the run can still be worked on: a second resume (nothing left to do) and a
    // status read the whole journal.
    let again = resume(&lab, &run, &[]);
    assert_eq!(code(&again), 0, "{}", text(&again));
    for host in lab.host_names() {
        assert_eq!(
            lines(&lab.root(&host).join("count-three")),
            1,
            "{host}: the second resume ran `three` again"
        );
    }
    let status = lab.pony(&["status", &run]).output().unwrap();
    assert_eq!(code(&status), 0, "{}", text(&status));
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(!status.contains("unreadable"), "{status}");
    assert!(status.contains("state: succeeded (exit 0)"), "{status}");
    journal_lines(&run_dir, false);
}

/// A local inventory (no SSH): each host works in `<state dir>/hosts/<host>/`.
const LOCAL_INVENTORY: &str = "\
name: local-two
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

/// Stages a release and points `current` at it; both are undone by rollback.
const LOCAL_RELEASE: &str = "\
name: local-release
steps:
  - name: stage
    run: mkdir -p releases/2.0
    rollback: rm -rf releases/2.0
  - name: switch
    needs: [stage]
    run: ln -sfn releases/2.0 current
    rollback: rm -f current
";

/// [`support::pony`] to completion.
fn local_pony(state: &Path, args: &[&str]) -> Output {
    support::pony(state, args).output().unwrap()
}

#[test]
fn after_a_torn_last_line_rollback_rollback_and_resume_keep_every_line_parseable() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (inventory, playbook) = write_plan(dir.path(), LOCAL_INVENTORY, LOCAL_RELEASE);
    let deployed = local_pony(&state, &deploy_args(&inventory, &playbook));
    assert_eq!(code(&deployed), 0, "{}", text(&deployed));
    let host = |name: &str| state.join("hosts").join(name);
    let current = |name: &str| std::fs::read_link(host(name).join("current")).ok();
    for name in ["h1", "h2"] {
        assert_eq!(current(name), Some(PathBuf::from("releases/2.0")), "{name}");
    }
    let run_dir = std::fs::read_dir(state.join("runs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let run = run_dir.file_name().unwrap().to_str().unwrap().to_string();
    journal_lines(&run_dir, false);

    // The controller died mid-write.
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(run_dir.join("journal.jsonl"))
        .unwrap()
        .write_all(b"{\"type\":\"rollback_finished\",\"node\":2,\"la")
        .unwrap();
    journal_lines(&run_dir, true);

    let rollback = local_pony(&state, &["rollback", &run, "--yes"]);
    assert_eq!(code(&rollback), 0, "{}", text(&rollback));
    journal_lines(&run_dir, false);
    for name in ["h1", "h2"] {
        assert_eq!(current(name), None, "{name}: switch rolled back");
        assert!(!host(name).join("releases/2.0").exists(), "{name}");
    }
    // The second rollback reads the journal the first one appended to.
    let again = local_pony(&state, &["rollback", &run, "--yes"]);
    assert_eq!(code(&again), 0, "{}", text(&again));
    let records = journal_lines(&run_dir, false);
    assert_eq!(
        records
            .iter()
            .filter(|r| r["type"] == "rollback_finished")
            .count(),
        4,
        "2 hosts × (switch, stage), each rolled back once"
    );

    let resumed = local_pony(&state, &["resume", &run]);
    assert_eq!(code(&resumed), 0, "{}", text(&resumed));
    let records = journal_lines(&run_dir, false);
    for name in ["h1", "h2"] {
        assert_eq!(current(name), Some(PathBuf::from("releases/2.0")), "{name}");
    }
    let finished: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["type"] == "run_finished")
        .collect();
    let outcomes: Vec<&str> = finished
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["succeeded", "rolled_back", "rolled_back", "succeeded"]
    );
}

#[test]
fn resume_of_an_unknown_run_is_a_clear_error() {
    let lab = lab();
    let out = resume(&lab, "20990101-000000-dead", &[]);
    assert_eq!(code(&out), 2);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no run `20990101-000000-dead`"),
        "{}",
        text(&out)
    );
}

#[test]
fn every_command_that_takes_a_run_accepts_a_unique_prefix_and_refuses_an_ambiguous_one() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (inventory, playbook) = write_plan(dir.path(), LOCAL_INVENTORY, LOCAL_RELEASE);
    let deploy = || {
        let out = local_pony(&state, &deploy_args(&inventory, &playbook));
        assert_eq!(code(&out), 0, "{}", text(&out));
    };
    deploy();
    deploy();
    let mut ids: Vec<String> = std::fs::read_dir(state.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().to_string())
        .collect();
    ids.sort();
    assert_eq!(ids.len(), 2);
    // Both ids start with the year; their longest common prefix matches both, and one
    // more character of an id matches that run alone.
    let common = ids[0]
        .chars()
        .zip(ids[1].chars())
        .take_while(|(a, b)| a == b)
        .count();
    let run_ids = [ids[0].as_str(), ids[1].as_str()];
    let journal = |id: &str| state.join("runs").join(id).join("journal.jsonl");

    let shared = &ids[0][..common];
    for args in [
        vec!["status", shared],
        vec!["resume", shared],
        vec!["rollback", shared, "--yes"],
    ] {
        let before = std::fs::read_to_string(journal(run_ids[0])).unwrap();
        let out = local_pony(&state, &args);
        assert_eq!(code(&out), 2, "{args:?}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("`{shared}` matches 2 runs"))
                && stderr.contains(run_ids[0])
                && stderr.contains(run_ids[1])
                && stderr.contains("give more of the run id"),
            "{args:?}: {stderr}"
        );
        assert_eq!(
            std::fs::read_to_string(journal(run_ids[0])).unwrap(),
            before,
            "{args:?}: nothing ran"
        );
    }

    let unique = &ids[1][..common + 1];
    let status = local_pony(&state, &["--output", "json", "status", unique]);
    assert_eq!(code(&status), 0, "{}", text(&status));
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(report["run_id"], run_ids[1]);
    let rollback = local_pony(&state, &["rollback", unique, "--yes"]);
    assert_eq!(code(&rollback), 0, "{}", text(&rollback));
    let records = journal_lines(&state.join("runs").join(run_ids[1]), false);
    assert_eq!(records.last().unwrap()["outcome"], "rolled_back");
    assert!(
        std::fs::read_link(state.join("hosts/h1/current")).is_err(),
        "the rollback ran"
    );
    let resumed = local_pony(&state, &["resume", unique]);
    assert_eq!(code(&resumed), 0, "{}", text(&resumed));
    let records = journal_lines(&state.join("runs").join(run_ids[1]), false);
    assert_eq!(records.last().unwrap()["outcome"], "succeeded");
    assert_eq!(
        std::fs::read_link(state.join("hosts/h1/current")).unwrap(),
        PathBuf::from("releases/2.0")
    );
    // The other run was never touched.
    assert!(!std::fs::read_to_string(journal(run_ids[0]))
        .unwrap()
        .contains("run_resumed"));
}
