//! What a person at a terminal sees: the confirmation before a deploy and the question at
//! an `approve:` gate, answered through a real pseudo-terminal (tmux); and what CI gets
//! instead (a refusal without --yes, exit 10 at the gate).

mod support;

use std::path::Path;
use support::tmux::Session;

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
    let command = format!(
        "{} --state-dir {} deploy -i inventories/local.yaml {playbook}; echo $? > {}; sleep 30",
        env!("CARGO_BIN_EXE_pony"),
        state.display(),
        exit_file.display()
    );
    let session = Session::start(
        &format!("pony-prompt-{}", std::process::id()),
        160,
        &command,
    );
    let screen = session.wait_for("[y/N]");
    assert!(
        screen.contains("Deploy gated to 12 hosts of local?"),
        "{screen}"
    );
    session.answer_yes();
    session.wait_for("Approve it and continue");
    assert!(
        state.join("hosts/mx-gz-01/marked").exists(),
        "china ran before the question"
    );
    assert!(
        !state.join("hosts/mx-dub-01/marked").exists(),
        "world waits for the answer"
    );
    session.answer_yes();
    assert_eq!(support::wait_for_exit_code(&exit_file), 0);
    assert!(state.join("hosts/mx-dub-01/marked").exists());
    drop(session);
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

/// `--yes` at a terminal: the gates ask nothing unless `approve:` asks. A wave that only
/// soaks (`pause:`) goes on by itself; the `approve:` gate after the next wave asks.
#[test]
fn with_yes_a_terminal_is_asked_only_at_an_approve_gate() {
    let dir = tempfile::tempdir().unwrap();
    let playbook = dir.path().join("soaked.yaml");
    std::fs::write(
        &playbook,
        "name: soaked\nstrategy:\n  waves:\n    - { name: canary, regions: [\"cn-*\"], pause: 1s }\n    - { name: eu, regions: [\"eu-*\"], approve: true }\n    - { name: world, regions: [\"*\"] }\nsteps:\n  - { name: mark, run: \"touch marked\" }\n",
    )
    .unwrap();
    let state = dir.path().join("state");
    let exit_file = dir.path().join("exit");
    let command = format!(
        "{} --state-dir {} deploy -i inventories/local.yaml {} --yes; echo $? > {}; sleep 30",
        env!("CARGO_BIN_EXE_pony"),
        state.display(),
        playbook.display(),
        exit_file.display()
    );
    let session = Session::start(&format!("pony-yes-{}", std::process::id()), 160, &command);
    let screen = session.wait_for("Approve it and continue");
    // The soak after canary passed without a question; the only one is eu's.
    assert_eq!(screen.matches("[y/N]").count(), 1, "{screen}");
    assert!(screen.contains("Wave eu is done"), "{screen}");
    assert!(state.join("hosts/mx-dub-01/marked").exists(), "eu ran");
    assert!(
        !state.join("hosts/mx-iad-01/marked").exists(),
        "world waits"
    );
    session.answer_yes();
    assert_eq!(support::wait_for_exit_code(&exit_file), 0);
    assert!(state.join("hosts/mx-iad-01/marked").exists());
}
