//! A host's chain of tasks in one round trip, against the real sshd fleet: the chain's
//! starts are all journaled before it runs and its results stream into the journal as
//! they arrive on the host; a controller killed with SIGKILL in the middle of a chain
//! resumes without running any task whose success was journaled; a failure in the
//! middle stops the chain there with each task's verdict.

mod support;

use std::path::{Path, PathBuf};
use std::process::Child;
use support::{code, lab_with, text, wait_until, Lab};

/// Five steps one after the other; each appends its name to the host's `count` file, so
/// a task that runs twice shows as two lines. `hold` waits for the test's gate file.
const CHAINED: &str = r#"
name: chained
strategy: { max_unavailable: 100% }
steps:
  - { name: one, run: "echo one >> {{ root }}/count" }
  - { name: two, needs: [one], run: "echo two >> {{ root }}/count" }
  - { name: hold, needs: [two], run: "echo hold >> {{ root }}/count; touch {{ root }}/hold-started; while [ ! -e GATE ]; do sleep 0.02; done" }
  - { name: four, needs: [hold], run: "echo four >> {{ root }}/count" }
  - { name: five, needs: [four], run: "echo five >> {{ root }}/count" }
"#;

/// Four steps one after the other; `two` fails where the host's root holds `fail-two`.
const FAILING: &str = r#"
name: failing
strategy: { max_unavailable: 100%, max_failures: 100% }
steps:
  - { name: one, run: "echo one >> {{ root }}/count" }
  - { name: two, needs: [one], run: "echo two >> {{ root }}/count; test ! -e {{ root }}/fail-two" }
  - { name: three, needs: [two], run: "echo three >> {{ root }}/count" }
  - { name: four, needs: [three], run: "echo four >> {{ root }}/count" }
"#;

fn only_run(lab: &Lab) -> PathBuf {
    let runs: Vec<PathBuf> = std::fs::read_dir(lab.state.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs[0].clone()
}

/// The journal's records (a torn last line, left by a SIGKILL, is left out).
fn journal(run_dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run_dir.join("journal.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The labels of the journal's records of `kind` (with `state`, for `task_finished`).
fn labels(records: &[serde_json::Value], kind: &str, state: Option<&str>) -> Vec<String> {
    records
        .iter()
        .filter(|r| r["type"] == kind && state.is_none_or(|s| r["state"] == s))
        .map(|r| r["label"].as_str().unwrap().to_string())
        .collect()
}

fn position(records: &[serde_json::Value], kind: &str, label: &str) -> usize {
    records
        .iter()
        .position(|r| r["type"] == kind && r["label"] == label)
        .unwrap_or_else(|| panic!("no {kind} of {label} in {records:#?}"))
}

fn count(lab: &Lab, host: &str) -> Vec<String> {
    std::fs::read_to_string(lab.root(host).join("count"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// How many chains' cut files are in a run's marker folder.
fn cuts(markers: &Path) -> usize {
    cut_names(markers).len()
}

/// The chains' cut files in a run's marker folder.
fn cut_names(markers: &Path) -> Vec<String> {
    std::fs::read_dir(markers).map_or(Vec::new(), |entries| {
        entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".cut"))
            .collect()
    })
}

fn kill_9(mut child: Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_controller_killed_mid_chain_resumes_and_no_journaled_success_runs_twice() {
    let lab = lab_with(1, 1, 2);
    let gate = lab.path("gate-open");
    let playbook = lab.playbook(&CHAINED.replace("GATE", gate.to_str().unwrap()));
    let hosts = lab.host_names();
    let child = lab.spawn_deploy(&playbook, &[]);
    for host in &hosts {
        wait_until(&format!("`hold` to start on {host}"), || {
            lab.root(host).join("hold-started").exists()
        });
    }
    let run_dir = only_run(&lab);
    // While `hold` runs, the results before it are journaled already (streamed, not
    // held for the whole chain), and the starts after it too: the whole chain went to
    // the host at once. Task by task, `four` would not have started yet.
    wait_until("the results of `one` and `two` in the journal", || {
        let succeeded = labels(&journal(&run_dir), "task_finished", Some("succeeded"));
        hosts.iter().all(|h| {
            succeeded.contains(&format!("one@{h}")) && succeeded.contains(&format!("two@{h}"))
        })
    });
    let records = journal(&run_dir);
    let started = labels(&records, "task_started", None);
    let finished = labels(&records, "task_finished", None);
    for host in &hosts {
        for step in ["hold", "four", "five"] {
            let label = format!("{step}@{host}");
            assert!(started.contains(&label), "{label} not journaled as started");
            assert!(
                !finished.contains(&label),
                "{label} finished while `hold` ran"
            );
        }
        assert_eq!(count(&lab, host), ["one", "two", "hold"], "{host}");
    }
    kill_9(child);
    let journaled = labels(&journal(&run_dir), "task_finished", Some("succeeded"));
    // With its controller gone, each host's chain cuts itself (its shell's stdin ended):
    // the orphaned `hold` may finish, nothing after it starts without a controller.
    let run = run_dir.file_name().unwrap().to_str().unwrap().to_string();
    let markers = PathBuf::from(format!("/tmp/pony-{}/{run}", unsafe { libc::getuid() }));
    wait_until("both chains to cut themselves", || {
        cuts(&markers) == hosts.len()
    });
    std::fs::write(&gate, "").unwrap();

    let resumed = lab.pony(&["resume", &run]).output().unwrap();
    assert_eq!(code(&resumed), 0, "{}", text(&resumed));
    for host in &hosts {
        let lines = count(&lab, host);
        for step in ["one", "two", "hold", "four", "five"] {
            let runs = lines.iter().filter(|l| *l == step).count();
            assert!(runs >= 1, "{step} never ran on {host}: {lines:?}");
            if journaled.contains(&format!("{step}@{host}")) || ["four", "five"].contains(&step) {
                assert_eq!(
                    runs, 1,
                    "{step}@{host} succeeded before the kill and ran again"
                );
            }
        }
    }
    let succeeded = labels(&journal(&run_dir), "task_finished", Some("succeeded"));
    for host in &hosts {
        for step in ["one", "two", "hold", "four", "five"] {
            assert!(
                succeeded.contains(&format!("{step}@{host}")),
                "{step}@{host}"
            );
        }
    }
}

#[test]
fn a_failure_in_the_middle_of_a_chain_stops_it_there_with_each_tasks_verdict() {
    let lab = lab_with(1, 1, 2);
    let hosts = lab.host_names();
    let (bad, good) = (&hosts[0], &hosts[1]);
    std::fs::write(lab.root(bad).join("fail-two"), "").unwrap();
    let playbook = lab.playbook(FAILING);
    let out = lab.deploy(&playbook, &["--output", "json"]);
    assert_ne!(code(&out), 0, "{}", text(&out));
    let records = journal(&only_run(&lab));

    // The good host ran all four, as one chain: every start is journaled before the
    // first result (task by task, `two` would start only after `one` finished).
    assert_eq!(count(&lab, good), ["one", "two", "three", "four"]);
    let first_result = position(&records, "task_finished", &format!("one@{good}"));
    for step in ["two", "three", "four"] {
        let label = format!("{step}@{good}");
        assert!(
            position(&records, "task_started", &label) < first_result,
            "{label}"
        );
        let finish = &records[position(&records, "task_finished", &label)];
        assert_eq!(finish["state"], "succeeded", "{finish}");
    }

    // The bad host stopped at `two`: `three` and `four` never ran there; their journal
    // has their start, then `task_not_run` (no verdict: a resume runs them).
    assert_eq!(count(&lab, bad), ["one", "two"]);
    let verdict = |step: &str| {
        let label = format!("{step}@{bad}");
        records
            .iter()
            .rfind(|r| r["type"] == "task_finished" && r["label"] == label.as_str())
            .cloned()
    };
    assert_eq!(verdict("one").unwrap()["state"], "succeeded");
    let failed = verdict("two").unwrap();
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(failed["exit_code"], 1, "{failed}");
    for step in ["three", "four"] {
        let label = format!("{step}@{bad}");
        assert!(verdict(step).is_none(), "{label} has a verdict");
        let not_run = position(&records, "task_not_run", &label);
        assert!(
            position(&records, "task_started", &label) < not_run,
            "{label}"
        );
        assert_eq!(
            records[not_run]["reason"], "a dependency failed or was cancelled",
            "{label}"
        );
    }
    // `pony status` says no task was running: they never ran.
    let status = lab.pony(&["status", "--output", "json"]).output().unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["running"], serde_json::json!([]), "{status:#}");
    assert_eq!(status["interrupted"], serde_json::json!([]), "{status:#}");
    // The events say so: both skipped as dependents of a failed task.
    let events = support::json_lines(&String::from_utf8_lossy(&out.stdout));
    for step in ["three", "four"] {
        let label = format!("{step}@{bad}");
        let skipped = events
            .iter()
            .find(|e| {
                e["event"] == "task_skipped"
                    && e["task"]["step"] == step
                    && e["task"]["host"] == bad.as_str()
            })
            .unwrap_or_else(|| panic!("no task_skipped for {label}: {}", text(&out)));
        assert_eq!(skipped["reason"], "a dependency failed or was cancelled");
    }
}

/// Three steps one after the other; `one` fails where the host's root holds `fail-one`,
/// once another host holds in `hold`.
const HALTING: &str = r#"
name: halting
strategy: { max_unavailable: 100%, max_failures: 0, on_failure: halt }
steps:
  - { name: one, run: "if [ -e {{ root }}/fail-one ]; then while [ ! -e HOLDING ]; do sleep 0.02; done; exit 1; fi; echo one >> {{ root }}/count" }
  - { name: hold, needs: [one], run: "echo hold >> {{ root }}/count; touch HOLDING; while [ ! -e GATE ]; do sleep 0.02; done" }
  - { name: four, needs: [hold], run: "echo four >> {{ root }}/count" }
"#;

/// A halt stops starting tasks: the chain of a host in flight is cut on the host, so the
/// task after the running one never starts there, though the script holding it was
/// sent before the halt.
#[test]
fn a_halt_cuts_a_running_chain_before_its_next_task() {
    let lab = lab_with(1, 1, 2);
    let hosts = lab.host_names();
    let (bad, good) = (&hosts[0], &hosts[1]);
    std::fs::write(lab.root(bad).join("fail-one"), "").unwrap();
    let gate = lab.path("gate-open");
    let holding = lab.path("holding");
    let playbook = lab.playbook(
        &HALTING
            .replace("GATE", gate.to_str().unwrap())
            .replace("HOLDING", holding.to_str().unwrap()),
    );
    let child = lab.spawn_deploy(&playbook, &[]);
    wait_until("the host in flight to hold", || holding.exists());
    let run_dir = only_run(&lab);
    let run = run_dir.file_name().unwrap().to_str().unwrap().to_string();
    // The cut lands in the run's marker folder on the host (this user's, on loopback).
    let markers = PathBuf::from(format!("/tmp/pony-{}/{run}", unsafe { libc::getuid() }));
    // The cut of the good host's chain (named after its first task's node), not the
    // failed host's, which may come first.
    let good_chain: Vec<String> = journal(&run_dir)
        .iter()
        .filter(|r| {
            r["type"] == "task_started"
                && r["label"]
                    .as_str()
                    .is_some_and(|l| l.ends_with(&format!("@{good}")))
        })
        .map(|r| format!("c{}-", r["node"]))
        .collect();
    wait_until("the good host's chain's cut file", || {
        cut_names(&markers)
            .iter()
            .any(|name| good_chain.iter().any(|head| name.starts_with(head)))
    });
    std::fs::write(&gate, "").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_ne!(code(&out), 0, "{}", text(&out));
    assert_eq!(count(&lab, good), ["one", "hold"], "{}", text(&out));
    let records = journal(&run_dir);
    let finished = |label: String| {
        records
            .iter()
            .rfind(|r| r["type"] == "task_finished" && r["label"] == label.as_str())
            .map(|r| r["state"].as_str().unwrap().to_string())
    };
    assert_eq!(
        finished(format!("hold@{good}")).as_deref(),
        Some("succeeded")
    );
    assert_eq!(finished(format!("four@{good}")), None);
    position(&records, "task_started", &format!("four@{good}"));
    let events = support::json_lines(&String::from_utf8_lossy(&out.stdout));
    assert!(
        events.iter().any(|e| e["event"] == "task_skipped"
            && e["task"]["step"] == "four"
            && e["task"]["host"] == good.as_str()
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("the run stopped"))),
        "{}",
        text(&out)
    );
}
