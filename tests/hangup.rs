//! A closed terminal (SIGHUP: the window closed, the SSH session dropped, `tmux
//! kill-session`) does not end a run: it goes on without its terminal, records every
//! task's end and the run's end in the journal, and releases the inventory's lock.

mod support;

use support::tmux::Session;
use support::{journal, only_run, text, wait_until};

const WAITING: &str = r#"
name: waiting
steps:
  - { name: hold, run: "touch {{ root }}/started; until [ -e MARKER ]; do sleep 0.05; done; touch {{ root }}/held" }
"#;

fn alive(pid: u32) -> bool {
    support::proc_stat(pid).is_some_and(|(state, _)| state != 'Z')
}

#[test]
fn a_closed_terminal_does_not_stop_the_run_mid_step() {
    let lab = support::lab_with(1, 1, 2);
    let marker = lab.path("marker");
    let playbook = lab.playbook(&WAITING.replace("MARKER", &marker.display().to_string()));
    let pid_file = lab.path("pid");
    // The shell writes its pid and becomes pony: the pane's process is pony itself.
    let command = format!(
        "echo $$ > {}; exec {} --state-dir {} deploy -i {} {} --yes",
        pid_file.display(),
        env!("CARGO_BIN_EXE_pony"),
        lab.state.display(),
        lab.inventory.display(),
        playbook.display(),
    );
    let session = Session::start(
        &format!("pony-hangup-{}", std::process::id()),
        120,
        &command,
    );
    let hosts = lab.host_names();
    wait_until("a step to start", || {
        hosts.iter().any(|h| lab.root(h).join("started").exists())
    });
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The terminal goes away while the step runs.
    drop(session);
    std::fs::write(&marker, "").unwrap();
    wait_until("pony to finish the run and exit", || !alive(pid));

    let (_, folder) = only_run(&lab.state);
    let records = journal(&folder);
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(kinds.last(), Some(&"run_finished"), "{kinds:?}");
    let started = records.iter().filter(|r| r["type"] == "task_started");
    for start in started {
        assert!(
            records
                .iter()
                .any(|r| r["type"] == "task_finished" && r["node"] == start["node"]),
            "{start} has no end: {kinds:?}"
        );
    }
    for host in &hosts {
        assert!(
            lab.root(host).join("held").exists(),
            "{host} ran its step to the end"
        );
    }
    // The lock is free: a new deploy is not refused.
    let again = lab.deploy(&playbook, &[]);
    assert_ne!(again.status.code(), Some(4), "{}", text(&again));
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
}

/// A run asking at its terminal whether to pass an `approve:` gate when the terminal
/// closes: the question is not taken as a "no"; the gate waits for `pony approve` from
/// another shell, and the run ends as approved.
#[test]
fn a_closed_terminal_at_an_approval_question_leaves_the_gate_to_pony_approve() {
    let lab = support::lab_with(1, 1, 2);
    let playbook = lab.playbook(
        r#"
name: gated
strategy:
  waves:
    - { name: canary, regions: ["*"], hosts: r1-c1-01, approve: true }
    - { name: rest, regions: ["*"] }
steps:
  - { name: mark, run: "touch {{ root }}/marked" }
"#,
    );
    let pid_file = lab.path("pid");
    let command = format!(
        "echo $$ > {}; exec {} --state-dir {} deploy -i {} {} --yes",
        pid_file.display(),
        env!("CARGO_BIN_EXE_pony"),
        lab.state.display(),
        lab.inventory.display(),
        playbook.display(),
    );
    let session = Session::start(
        &format!("pony-hangup-gate-{}", std::process::id()),
        160,
        &command,
    );
    session.wait_for("Approve it and continue");
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    drop(session);
    let (id, folder) = only_run(&lab.state);
    // Still waiting at the gate, not stopped there.
    assert!(alive(pid), "pony ended with its terminal");
    let approved = lab.pony(&["approve", &id, "canary"]).output().unwrap();
    assert_eq!(approved.status.code(), Some(0), "{}", text(&approved));
    wait_until("pony to finish the run and exit", || !alive(pid));
    let records = journal(&folder);
    let last = records.last().unwrap();
    assert_eq!(last["type"], "run_finished", "{records:?}");
    assert_eq!(last["exit_code"], 0, "{last}");
    assert!(lab.root("r1-c1-02").join("marked").exists());
}
