//! `pony plan --estimate` learns step durations from earlier runs' journals.

use std::process::Command;

#[test]
fn plan_estimate_uses_durations_from_earlier_runs() {
    let dir = tempfile::tempdir().unwrap();
    let playbook = dir.path().join("timed.yaml");
    std::fs::write(&playbook, "name: timed\nsteps:\n  - { name: a, run: \"sleep 0.3\" }\n  - { name: b, needs: [a], run: \"true\", estimate: 2s }\n").unwrap();
    let pony = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_pony"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(args)
            .output()
            .unwrap()
    };
    let before = pony(&[
        "plan",
        "-i",
        "inventories/local.yaml",
        playbook.to_str().unwrap(),
        "--estimate",
    ]);
    let before = String::from_utf8_lossy(&before.stdout).to_string();
    assert!(
        before.contains("critical path 2s") && before.contains("count as 0s: a"),
        "{before}"
    );
    let run = pony(&[
        "deploy",
        "-i",
        "inventories/local.yaml",
        playbook.to_str().unwrap(),
        "--yes",
        "-q",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let after = pony(&[
        "plan",
        "-i",
        "inventories/local.yaml",
        playbook.to_str().unwrap(),
        "--estimate",
    ]);
    let after = String::from_utf8_lossy(&after.stdout).to_string();
    assert!(
        after.contains("from earlier runs' journals: a 3"),
        "a took about 300 ms: {after}"
    );
    assert!(
        after.contains("critical path 2.3s")
            || after.contains("critical path 2s 300ms")
            || after.contains("critical path 2s 400ms"),
        "{after}"
    );
}
