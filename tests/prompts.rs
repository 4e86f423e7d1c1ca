//! What a person at a terminal sees: the confirmation before a deploy and the question at
//! an `approve:` gate, answered through a real pseudo-terminal (tmux); and what CI gets
//! instead (a refusal without --yes, exit 10 at the gate).

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux")
        .args(args)
        .output()
        .expect("tmux is needed for terminal tests: apt-get install -y tmux");
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn wait_for_screen(session: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let screen = tmux(&["capture-pane", "-p", "-t", session, "-S", "-200"]);
        if screen.contains(needle) {
            return screen;
        }
        assert!(
            Instant::now() < deadline,
            "never saw {needle:?} on the terminal:\n{screen}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

const APPROVE: &str = "name: gated\nstrategy:\n  waves:\n    - { name: china, regions: [\"cn-*\"], approve: true }\n    - { name: world, regions: [\"*\"] }\nsteps:\n  - { name: mark, run: \"touch marked\" }\n";

fn write_playbook(dir: &Path) -> String {
    let playbook = dir.join("gated.yaml");
    std::fs::write(&playbook, APPROVE).unwrap();
    playbook.display().to_string()
}

#[test]
fn a_terminal_is_asked_to_confirm_and_to_approve() {
    let dir = tempfile::tempdir().unwrap();
    let playbook = write_playbook(dir.path());
    let state = dir.path().join("state");
    let exit_file = dir.path().join("exit");
    let session = format!("pony-prompt-{}", std::process::id());
    let command = format!(
        "{} --state-dir {} deploy -i inventories/local.yaml {playbook}; echo $? > {}; sleep 30",
        env!("CARGO_BIN_EXE_pony"),
        state.display(),
        exit_file.display()
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "160",
        "-y",
        "50",
        &command,
    ]);
    let guard = scopeguard(&session);
    let screen = wait_for_screen(&session, "[y/N]");
    assert!(
        screen.contains("Deploy gated to 12 hosts of local?"),
        "{screen}"
    );
    tmux(&["send-keys", "-t", &session, "y", "Enter"]);
    wait_for_screen(&session, "Approve it and continue");
    assert!(
        state.join("hosts/mx-gz-01/marked").exists(),
        "china ran before the question"
    );
    assert!(
        !state.join("hosts/mx-dub-01/marked").exists(),
        "world waits for the answer"
    );
    tmux(&["send-keys", "-t", &session, "y", "Enter"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !exit_file.exists() {
        assert!(Instant::now() < deadline, "pony never finished");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(std::fs::read_to_string(&exit_file).unwrap().trim(), "0");
    assert!(state.join("hosts/mx-dub-01/marked").exists());
    drop(guard);
}

/// Kills the tmux session even when the test fails.
struct Session(String);
impl Drop for Session {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .output();
    }
}
fn scopeguard(name: &str) -> Session {
    Session(name.to_string())
}

#[test]
fn without_a_terminal_deploy_refuses_and_a_gate_stops_with_10() {
    let dir = tempfile::tempdir().unwrap();
    let playbook = write_playbook(dir.path());
    let state = dir.path().join("state");
    let run = |extra: &[&str]| {
        support::pony(
            &state,
            &["deploy", "-i", "inventories/local.yaml", &playbook],
        )
        .args(extra)
        .output()
        .unwrap()
    };
    let refused = run(&[]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(refused.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("pass --yes"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(!state.join("runs").exists(), "nothing ran");
    let paused = run(&["--yes"]);
    assert_eq!(paused.status.code(), Some(10));
    assert!(String::from_utf8_lossy(&paused.stdout).contains("--approve china"));
}
