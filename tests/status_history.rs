//! `pony status` and `pony history` on runs made by the real binary (a success of the
//! flagship playbook on the local inventory, and a small playbook where one host fails),
//! on a hand-made run folder whose controller died mid-write (no `run_finished`, a torn
//! last journal line), and on a run folder an older pony wrote (`tests/old_journal/`).

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::{deploy_args, pony, TINY_INVENTORY};

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs pony, insists on exit 0, returns stdout.
fn ok(state: &Path, args: &[&str]) -> String {
    let output = pony(state, args).output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "pony {args:?}\nstdout:\n{}\nstderr:\n{}",
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout(&output)
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// One host of a cluster at a time (so h1 is done before h2 starts: no race between h2's
/// failure and h1's `check`). h2 (the `bad` var) fails `check`: region r1 rolls back, and wave `first` does not pass
/// its gate, so r2 (wave `second`) never starts. Each task appends its step's name to `ran`
/// in the host's folder (`<state dir>/hosts/<host>/`).
const TINY_PLAYBOOK: &str = "\
name: tiny-check
vars: { bad: h2 }
strategy:
  waves:
    - { name: first, regions: [r1] }
    - { name: second, regions: [\"*\"] }
  max_unavailable: 1
  max_failures: 0
  on_failure: rollback-region
steps:
  - name: prepare
    run: echo preparing {{ host.name }}; echo prepare >> ran
    rollback: echo undo prepare
  - name: check
    needs: [prepare]
    run: |
      echo check >> ran
      echo checking {{ host.name }}
      test {{ host.name }} != {{ bad }}
    rollback: echo undo check
";

fn write_tiny(dir: &Path) -> (PathBuf, PathBuf) {
    let inventory = dir.join("tiny-inventory.yaml");
    let playbook = dir.join("tiny-playbook.yaml");
    std::fs::write(&inventory, TINY_INVENTORY).unwrap();
    std::fs::write(&playbook, TINY_PLAYBOOK).unwrap();
    (inventory, playbook)
}

#[test]
fn history_and_status_of_a_success_and_a_failure() {
    let files = tempfile::tempdir().unwrap();
    let state = files.path().join("state");
    let (inventory, playbook) = write_tiny(files.path());

    // Nothing yet.
    assert!(ok(&state, &["history"]).contains("no runs"));
    assert_eq!(ok(&state, &["history", "--output", "json"]), "");
    let none = pony(&state, &["status"]).output().unwrap();
    assert_eq!(none.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no runs"));

    ok(
        &state,
        &[
            "deploy",
            "-i",
            "inventories/local.yaml",
            "playbooks/mail-rollout.yaml",
            "--yes",
            "--var",
            "drain_wait_seconds=3",
        ],
    );
    let failing = pony(&state, &deploy_args(&inventory, &playbook))
        .output()
        .unwrap();
    assert_eq!(failing.status.code(), Some(1), "{}", stdout(&failing));

    // history: newest first, with outcomes.
    let human = ok(&state, &["history"]);
    let lines: Vec<&str> = human.lines().collect();
    assert_eq!(lines.len(), 3, "{human}");
    for column in [
        "RUN",
        "PLAYBOOK",
        "INVENTORY",
        "WHO",
        "WHEN",
        "DURATION",
        "OUTCOME",
    ] {
        assert!(lines[0].contains(column), "{human}");
    }
    assert!(lines[1].contains("tiny-check"), "{human}");
    assert!(lines[1].contains("failed, rolled back (exit 1)"), "{human}");
    assert!(lines[2].contains("mail-rollout"), "{human}");
    assert!(lines[2].contains("local"), "{human}");
    assert!(lines[2].contains("succeeded (exit 0)"), "{human}");

    let runs = json_lines(&ok(&state, &["--output", "json", "history"]));
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["playbook"], "tiny-check");
    assert_eq!(runs[0]["inventory"], "tiny");
    assert_eq!(runs[0]["state"], "finished");
    assert_eq!(runs[0]["outcome"], "failed_rolled_back");
    assert_eq!(runs[0]["exit_code"], 1);
    assert_eq!(runs[1]["playbook"], "mail-rollout");
    assert_eq!(runs[1]["outcome"], "succeeded");
    assert_eq!(runs[1]["exit_code"], 0);
    for run in &runs {
        assert!(run["duration_ms"].is_u64(), "{run}");
        // To the millisecond, as the end is: a duration is not off by the second's rest.
        let started = run["started"].as_str().unwrap();
        let fraction = started.rsplit_once('.').map(|(_, f)| f);
        assert!(
            fraction.is_some_and(|f| f.len() == 4 && f.ends_with('Z')),
            "{run}"
        );
        assert!(run["who"].is_string(), "{run}");
    }
    let failed_id = runs[0]["run_id"].as_str().unwrap().to_string();
    let success_id = runs[1]["run_id"].as_str().unwrap().to_string();
    let limited = json_lines(&ok(&state, &["--output", "json", "history", "-n", "1"]));
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0]["run_id"], failed_id.as_str());

    // status without RUN: the latest, the failure.
    let status = ok(&state, &["status"]);
    assert!(
        status.contains(&format!("run {failed_id}: tiny-check on tiny")),
        "{status}"
    );
    assert!(status.contains("failed, rolled back (exit 1)"), "{status}");
    assert!(status.contains("h2 (step check, exit 1"), "{status}");
    assert!(status.contains("| checking h2"), "{status}");
    assert!(status.contains("rollbacks: 4 ok, 0 failed"), "{status}");
    assert!(status.contains("gates passed: none"), "{status}");
    assert!(
        status.contains("stopped at wave first: cluster c1 (region r1) failed 1 host(s)"),
        "{status}"
    );
    assert!(
        status.contains(&format!("pony resume {failed_id} --skip-failed-wave")),
        "{status}"
    );
    let total = status
        .lines()
        .find(|l| l.starts_with("total"))
        .expect("a total row");
    let numbers: Vec<&str> = total.split_whitespace().collect();
    // total: tasks, succeeded, skipped, failed, interrupted, running, pending, rolled back
    assert_eq!(numbers, ["total", "8", "3", "0", "1", "0", "0", "4", "4"]);

    let report: Value =
        serde_json::from_str(&ok(&state, &["status", "--output", "json", &failed_id])).unwrap();
    assert_eq!(report["run_id"], failed_id.as_str());
    assert_eq!(report["outcome"], "failed_rolled_back");
    assert_eq!(report["tasks"]["plan_rebuilt"], true);
    assert_eq!(report["tasks"]["total"]["total"], 8);
    assert_eq!(report["tasks"]["total"]["failed"], 1);
    assert_eq!(report["tasks"]["total"]["pending"], 4);
    let waves: Vec<&str> = report["tasks"]["waves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(waves, ["first", "second"]);
    let r1 = &report["tasks"]["regions"][0];
    assert_eq!(
        (r1["name"].as_str(), r1["failed"].as_u64()),
        (Some("r1"), Some(1))
    );
    assert_eq!(r1["rolled_back"], 4);
    let failed = report["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["target"], "h2");
    assert_eq!(failed[0]["step"], "check");
    assert_eq!(failed[0]["exit_code"], 1);
    assert!(failed[0]["error"].is_string());
    assert_eq!(failed[0]["output_tail"], "checking h2");
    assert_eq!(failed[0]["rolled_back"], true);
    assert_eq!(report["rollbacks"]["ok"], 4);
    assert_eq!(report["stopped_wave"]["wave"], "first");
    assert_eq!(report["waiting"]["reason"], "failed_wave");

    // The success, by a prefix of its id.
    let prefix = &success_id[..success_id.len() - 1];
    let report: Value =
        serde_json::from_str(&ok(&state, &["--output", "json", "status", prefix])).unwrap();
    assert_eq!(report["run_id"], success_id.as_str());
    assert_eq!(report["outcome"], "succeeded");
    let total = &report["tasks"]["total"];
    assert_eq!(total["failed"], 0);
    assert_eq!(total["pending"], 0);
    assert_eq!(
        total["succeeded"].as_u64().unwrap() + total["skipped"].as_u64().unwrap(),
        total["total"].as_u64().unwrap()
    );
    let regions: Vec<&str> = report["tasks"]["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(regions, ["cn-south", "eu-west", "us-east"]);
    assert_eq!(
        report["gates_passed"],
        serde_json::json!(["canary", "china", "world"])
    );

    // An unknown run is a usage error naming where it looked.
    let missing = pony(&state, &["status", "no-such-run"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no run `no-such-run`"));
}

/// A pid no live process has: a child that has exited and been reaped.
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

/// A run folder as a controller killed mid-run leaves it: started with
/// `--var bad=nobody` (so no host fails) and `--secret-var token=…`; `prepare` finished
/// on h1, `prepare@h2` and `check@h1` were running, and the last line is torn.
fn hand_made_run(state: &Path, id: &str, files: &Path) -> PathBuf {
    let run = state.join("runs").join(id);
    std::fs::create_dir_all(run.join("logs")).unwrap();
    std::fs::write(run.join("inventory.yaml"), TINY_INVENTORY).unwrap();
    std::fs::write(run.join("playbook.yaml"), TINY_PLAYBOOK).unwrap();
    std::fs::write(
        run.join("vars.json"),
        r#"{"vars": {"bad": "nobody"}, "secret_vars": ["token"], "limit": null}"#,
    )
    .unwrap();
    std::fs::write(
        run.join("run.json"),
        serde_json::json!({
            "inventory_path": files.join("tiny-inventory.yaml"),
            "playbook_path": files.join("tiny-playbook.yaml"),
        })
        .to_string(),
    )
    .unwrap();
    let journal = [
        serde_json::json!({"type": "run_started", "run_id": id, "playbook": "tiny-check",
            "inventory": "tiny", "time": "2026-01-02T03:04:05Z", "pid": dead_pid(),
            "user": "ann", "host": "ctl-1"}),
        serde_json::json!({"type": "task_started", "node": 3, "label": "prepare@h1",
            "time": "2026-01-02T03:04:05.100Z"}),
        serde_json::json!({"type": "task_started", "node": 4, "label": "prepare@h2",
            "time": "2026-01-02T03:04:05.100Z"}),
        serde_json::json!({"type": "task_finished", "node": 3, "label": "prepare@h1",
            "state": "succeeded", "exit_code": 0, "duration_ms": 12, "captures": [],
            "output_tail": "preparing h1", "error": null}),
        serde_json::json!({"type": "task_started", "node": 5, "label": "check@h1",
            "time": "2026-01-02T03:04:05.200Z"}),
    ];
    let mut text: String = journal.iter().map(|r| format!("{r}\n")).collect();
    text.push_str(r#"{"type":"task_finished","node":4,"label":"prep"#);
    std::fs::write(run.join("journal.jsonl"), text).unwrap();
    run
}

#[test]
fn a_run_whose_controller_died_is_stopped_and_resumes_from_its_journal() {
    let files = tempfile::tempdir().unwrap();
    let state = files.path().join("state");
    let id = "20260102-030405-beef";
    hand_made_run(&state, id, files.path());

    let status = ok(&state, &["status"]);
    assert!(
        status.contains(&format!("run {id}: tiny-check on tiny")),
        "{status}"
    );
    assert!(
        status.contains("started 2026-01-02 03:04:05 UTC by ann@ctl-1"),
        "{status}"
    );
    assert!(status.contains("state: stopped (resumable)"), "{status}");
    assert!(status.contains(&format!("pony resume {id}")), "{status}");
    assert!(status.contains("prepare@h2"), "{status}");
    assert!(status.contains("check@h1"), "{status}");

    let report: Value = serde_json::from_str(&ok(&state, &["--output", "json", "status"])).unwrap();
    assert_eq!(report["state"], "stopped");
    assert!(report["outcome"].is_null());
    assert!(report["duration_ms"].is_null());
    assert_eq!(report["tasks"]["plan_rebuilt"], true);
    let total = &report["tasks"]["total"];
    assert_eq!(total["total"], 8);
    assert_eq!(total["succeeded"], 1);
    assert_eq!(total["running"], 2);
    assert_eq!(total["pending"], 5);
    let mut running: Vec<&str> = report["running"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    running.sort();
    assert_eq!(running, ["check@h1", "prepare@h2"]);
    assert_eq!(report["waiting"]["reason"], "resume");
    // The command to type carries the state folder this status was read from.
    assert_eq!(
        report["waiting"]["next"],
        serde_json::json!([format!("pony resume {id} --state-dir {}", state.display())])
    );

    let history = ok(&state, &["history"]);
    let line = history.lines().nth(1).expect("one run");
    assert!(line.contains(id), "{history}");
    assert!(line.contains("ann@ctl-1"), "{history}");
    assert!(line.contains("stopped"), "{history}");
    assert!(line.contains("stopped (resumable)"), "{history}");
    let runs = json_lines(&ok(&state, &["--output", "json", "history"]));
    assert_eq!(runs[0]["state"], "stopped");
    assert_eq!(runs[0]["result"], "stopped (resumable)");

    // Resumable: the secret var's value was never stored, so it must be given again.
    let without = pony(&state, &["resume", id]).output().unwrap();
    assert_eq!(without.status.code(), Some(2), "{}", stdout(&without));
    let stderr = String::from_utf8_lossy(&without.stderr);
    assert!(
        stderr.contains("secret var `token`") && stderr.contains("--secret-var token=VALUE"),
        "{stderr}"
    );
    assert!(!state.join("hosts").exists(), "nothing ran");

    ok(&state, &["resume", id, "--secret-var", "token=s3cret"]);
    // prepare@h1 finished before the crash and did not run again; the tasks that were
    // running (prepare@h2, check@h1) and the rest ran. `bad` came back from the
    // snapshot's vars, so h2 passed `check`.
    let ran = |host: &str| {
        std::fs::read_to_string(state.join("hosts").join(host).join("ran"))
            .unwrap_or_else(|e| panic!("{host}: {e}"))
    };
    assert_eq!(ran("h1"), "check\n");
    for host in ["h2", "h3", "h4"] {
        assert_eq!(ran(host), "prepare\ncheck\n", "{host}");
    }
    let journal =
        std::fs::read_to_string(state.join("runs").join(id).join("journal.jsonl")).unwrap();
    assert!(journal.ends_with('\n'));
    let records = json_lines(&journal);
    let resumed: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "run_resumed")
        .collect();
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0]["command"], "resume");
    let finished = records.last().unwrap();
    assert_eq!(finished["type"], "run_finished");
    assert_eq!(finished["outcome"], "succeeded");
    assert_eq!(finished["exit_code"], 0);
    assert!(
        !journal.contains("s3cret"),
        "secret values are never journaled"
    );

    let status = ok(&state, &["status", id]);
    assert!(status.contains("state: succeeded (exit 0)"), "{status}");
    assert!(status.contains("resumed "), "{status}");
    let total = status
        .lines()
        .find(|l| l.starts_with("total"))
        .expect("a total row");
    let numbers: Vec<&str> = total.split_whitespace().collect();
    assert_eq!(numbers, ["total", "8", "8", "0", "0", "0", "0", "0", "0"]);
}

#[test]
fn without_a_usable_snapshot_status_counts_from_the_journal() {
    let files = tempfile::tempdir().unwrap();
    let state = files.path().join("state");
    let id = "20260102-030405-dead";
    let run = hand_made_run(&state, id, files.path());
    std::fs::remove_file(run.join("playbook.yaml")).unwrap();

    let status = ok(&state, &["status", id]);
    assert!(status.contains("could not be rebuilt"), "{status}");
    assert!(status.contains("state: stopped (resumable)"), "{status}");
    let report: Value =
        serde_json::from_str(&ok(&state, &["--output", "json", "status", id])).unwrap();
    assert_eq!(report["tasks"]["plan_rebuilt"], false);
    assert!(report["tasks"]["plan_error"].is_string());
    assert!(report["tasks"]["total"]["pending"].is_null());
    assert_eq!(report["tasks"]["total"]["succeeded"], 1);
    assert_eq!(report["tasks"]["total"]["running"], 2);
    // Regions still come from the snapshot inventory.
    assert_eq!(report["tasks"]["regions"][0]["name"], "r1");
}

/// Copies a folder tree (the fixture state dir) into `to`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The journal's records read as their lines in `journal.jsonl` say them.
fn journal_records(run: &Path) -> Vec<Value> {
    json_lines(&std::fs::read_to_string(run.join("journal.jsonl")).unwrap())
}

/// `tests/old_journal/` is a state dir written by the pony binary of before journal
/// records and events shared their structs (commit dac238b), on `connection: local`
/// hosts h1 (wave `canary`, an approval gate with a `verify:` check), h2 and h3 (wave
/// `rest`; `switch` fails on h3, `rollback-all`; `health:` on every host): a deploy that
/// stopped at the approval gate, `resume --approve canary` (h3 failed, every host rolled
/// back), `resume --skip-failed-wave` (the canary deployed again, stopped at its gate).
/// Today's pony reads that journal: status tells its story as the older pony told it
/// (`status.json`), and resume goes on from it (the canary's tasks done, not run again).
#[test]
fn a_journal_written_by_an_older_pony_is_read_by_status_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    copy_tree(&support::crate_root().join("tests/old_journal"), &state);
    let id = "20261207-181639-7e2e";
    let run = state.join("runs").join(id);
    let old = journal_records(&run);
    assert_eq!(old.len(), 50);

    let status = ok(&state, &["status", id]);
    for line in [
        "run 20261207-181639-7e2e: fixture on fixture",
        "state: awaiting approval of wave canary (exit 10)",
        "h3 (step switch, exit 7, rolled back): exited with 7",
        "rollbacks: 5 ok, 0 failed",
        "gates passed: canary, rest (failed; skipped by root)",
    ] {
        assert!(status.contains(line), "no `{line}` in:\n{status}");
    }
    // What the older pony said of it (`status.json`: its `status --output json`, given
    // `--state-dir .`), but for the files on this machine, which the journal does not say.
    let json = ok(&state, &["status", id, "--output", "json"]);
    let mut report: Value = serde_json::from_str(&json.replace(state.to_str().unwrap(), "."))
        .unwrap_or_else(|e| panic!("{e}: {json}"));
    let mut said: Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("status.json")).unwrap()).unwrap();
    report["files_changed"] = Value::Null;
    said["files_changed"] = Value::Null;
    // Since then, a host's health check after its deploy (`health@HOST`) counts in its
    // host's region and wave, beyond the planned tasks; the older pony put the two it
    // saw in an `(unknown)` row. The same tasks, counted where they belong.
    let (tasks, said_tasks) = (report["tasks"].take(), said["tasks"].take());
    assert_eq!(report, said);
    let rows: Vec<&str> = said_tasks["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(rows, ["r1", "r2", "(unknown)"], "{said_tasks}");
    let rows: Vec<&str> = tasks["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(rows, ["r1", "r2"], "{tasks}");
    for field in ["succeeded", "failed", "skipped", "rolled_back", "pending"] {
        assert_eq!(tasks["total"][field], said_tasks["total"][field], "{field}");
    }
    assert_eq!(
        tasks["total"]["total"], 8,
        "6 planned tasks and 2 health checks"
    );
    assert_eq!(tasks["regions"][0]["succeeded"], 5, "{tasks}");
    assert_eq!(tasks["waves"][0]["succeeded"], 3, "{tasks}");
    let history = ok(&state, &["history"]);
    assert!(
        history.contains(id) && history.contains("awaiting approval of wave canary (exit 10)"),
        "{history}"
    );

    let output = pony(&state, &["resume", id, "--approve", "canary"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    let records = journal_records(&run);
    assert_eq!(
        records[..50],
        old[..],
        "the old lines are kept as they were"
    );
    let new = &records[50..];
    assert_eq!(new[0]["type"], "run_resumed", "{new:?}");
    let started: Vec<&str> = new
        .iter()
        .filter(|r| r["type"] == "task_started")
        .filter_map(|r| r["label"].as_str())
        .collect();
    assert!(
        !started.iter().any(|label| label.ends_with("@h1")),
        "the canary's tasks ran again: {started:?}"
    );
    assert!(
        new.iter().any(|r| r["type"] == "task_finished"
            && r["label"] == "switch@h3"
            && r["state"] == "failed"
            && r["exit_code"] == 7),
        "{new:?}"
    );
    let last = new.last().unwrap();
    assert_eq!(
        (&last["type"], &last["outcome"], &last["exit_code"]),
        (
            &"run_finished".into(),
            &"failed_rolled_back".into(),
            &1.into()
        )
    );
    let status = ok(&state, &["status", id]);
    assert!(
        status.contains("state: failed, rolled back (exit 1)"),
        "{status}"
    );
}
