//! Durability against the real sshd fleet: a controller killed with SIGKILL and resumed,
//! SIGINT, `pony rollback` of a finished run, the inventory lock (held, stale, kept by a
//! run paused for approval), approval gates in CI, and a torn journal line.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};
use support::{lab, release_playbook, text, Lab};

fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

/// Every step appends its name to a per-host counter file, so a task that runs twice
/// shows up as two lines; `slow` gives the tests time to interrupt.
const COUNTED: &str = r#"
name: counted
strategy: { max_unavailable: 50% }
steps:
  - { name: one, run: "echo one >> {{ root }}/count-one" }
  - { name: slow, needs: [one], run: "echo slow >> {{ root }}/count-slow; touch {{ root }}/slow-started; sleep 1" }
  - { name: three, needs: [slow], run: "echo three >> {{ root }}/count-three" }
"#;

fn spawn_deploy(lab: &Lab, playbook: &Path, extra: &[&str]) -> Child {
    let mut args = vec![
        "deploy",
        "-i",
        lab.inventory.to_str().unwrap(),
        playbook.to_str().unwrap(),
        "--yes",
    ];
    args.extend_from_slice(extra);
    let mut command = lab.pony(&args);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    command.spawn().expect("pony")
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
    let playbook = lab.playbook(COUNTED);
    let mut child = spawn_deploy(&lab, &playbook, &[]);
    wait_for(&lab.root("r2-c1-01").join("slow-started"));
    child.kill().unwrap(); // SIGKILL: no cleanup at all
    child.wait().unwrap();
    let (run, run_dir) = only_run(&lab);
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
fn sigint_stops_with_130_and_the_run_resumes() {
    let lab = lab();
    let playbook = lab.playbook(COUNTED);
    let child = spawn_deploy(&lab, &playbook, &[]);
    wait_for(&lab.root("r1-c1-01").join("slow-started"));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 130, "{}", text(&out));
    let (run, _) = only_run(&lab);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("pony resume {run}")),
        "{}",
        text(&out)
    );
    // Running tasks were let finish: every started `slow` also wrote its journal line.
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
fn a_concurrent_deploy_exits_4_naming_the_holder() {
    let lab = lab();
    let playbook = lab.playbook(COUNTED);
    let first = spawn_deploy(&lab, &playbook, &[]);
    wait_for(&lab.root("r1-c1-01").join("slow-started"));
    let second = lab.deploy(&playbook, &[]);
    let (run, _) = only_run(&lab);
    assert_eq!(code(&second), 4, "{}", text(&second));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains(&format!("locked by run {run} (pid {}", first.id())),
        "{stderr}"
    );
    assert!(second.stdout.is_empty());
    let out = first.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    // Released at the end: the next deploy runs.
    let third = lab.deploy(&playbook, &[]);
    assert_eq!(code(&third), 0, "{}", text(&third));
}

#[test]
fn an_approve_gate_in_ci_exits_10_keeps_the_lock_and_resume_approve_completes() {
    let lab = lab();
    let playbook = lab.playbook(&COUNTED.replace(
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
    let playbook = lab.playbook(COUNTED);
    let mut child = spawn_deploy(&lab, &playbook, &[]);
    wait_for(&lab.root("r3-c2-02").join("slow-started"));
    child.kill().unwrap();
    child.wait().unwrap();
    let (run, run_dir) = only_run(&lab);
    use std::io::Write;
    let mut journal = std::fs::OpenOptions::new()
        .append(true)
        .open(run_dir.join("journal.jsonl"))
        .unwrap();
    journal
        .write_all(b"{\"type\":\"task_finished\",\"node\":3,\"lab")
        .unwrap();
    drop(journal);
    let unlocked = lab.pony(&["unlock", "lab"]).output().unwrap();
    assert_eq!(code(&unlocked), 0, "{}", text(&unlocked));
    assert!(String::from_utf8_lossy(&unlocked.stdout).contains(&run));
    let resumed = resume(&lab, &run, &[]);
    assert_eq!(code(&resumed), 0, "{}", text(&resumed));
    assert_all_counted_once_or_more(&lab);
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
