//! A failed rollback stops the rollbacks that would come after it on its host: rollback
//! runs in reverse dependency order, so when the rollback of a task fails, the rollbacks
//! of the tasks it needed (transitively) are not attempted on that host, also when the
//! failed rollback ran on a `delegate:` host on the host's behalf (a load balancer that
//! cannot be reached: the host must not be restarted while the balancer may still send
//! it traffic). The host ends `rollback failed` (exit 3), and the summary, the JSON
//! events, JUnit, the journal and `pony status` name what was not attempted and why.
//! Marker files on the hosts prove which rollback commands ran.

mod support;

use support::{code, journal, lab_with, only_run, text, Lab, Reaped};

/// a ← b ← c ← d on every host (each `needs` the one before), and e on its own. Every
/// rollback leaves a marker; b's rollback fails where `fail-rollback-b` is, d fails
/// where `fail-d` is.
const CHAIN: &str = r#"
name: chain
strategy: { max_unavailable: 100%, max_failures: 1 }
steps:
  - name: a
    run: touch {{ root }}/ran-a
    rollback: touch {{ root }}/rolled-a
  - name: b
    needs: [a]
    run: touch {{ root }}/ran-b
    rollback: touch {{ root }}/rolled-b && test ! -e {{ root }}/fail-rollback-b
  - name: c
    needs: [b]
    run: touch {{ root }}/ran-c
    rollback: touch {{ root }}/rolled-c
  - name: d
    needs: [c]
    run: test ! -e {{ root }}/fail-d
  - name: e
    run: touch {{ root }}/ran-e
    rollback: touch {{ root }}/rolled-e
"#;

fn marker(lab: &Lab, host: &str, name: &str) -> bool {
    lab.root(host).join(name).exists()
}

/// The journal's records of one type.
fn records<'a>(records: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    records.iter().filter(|r| r["type"] == kind).collect()
}

#[test]
fn a_failed_rollback_in_the_middle_stops_the_rollbacks_of_what_it_needed() {
    let lab = lab_with(1, 1, 2);
    let (good, bad) = ("r1-c1-01", "r1-c1-02");
    lab.make_fail(bad, "d");
    lab.make_fail(bad, "rollback-b");
    let playbook = lab.playbook(CHAIN);
    let junit = lab.path("junit.xml");
    let out = lab.deploy(&playbook, &["--junit", junit.to_str().unwrap()]);
    assert_eq!(
        code(&out),
        3,
        "a rollback failed: a person must look\n{}",
        text(&out)
    );

    // The failed host: c's rollback ran, b's ran and failed, a's was not attempted; e
    // does not depend on b and was rolled back.
    for step in ["a", "b", "c", "e"] {
        assert!(marker(&lab, bad, &format!("ran-{step}")), "{step} ran");
    }
    assert!(marker(&lab, bad, "rolled-c"), "{}", text(&out));
    assert!(marker(&lab, bad, "rolled-b"), "{}", text(&out));
    assert!(marker(&lab, bad, "rolled-e"), "{}", text(&out));
    assert!(
        !marker(&lab, bad, "rolled-a"),
        "a's rollback must not run after b's failed\n{}",
        text(&out)
    );
    // The other host succeeded and was left alone.
    for step in ["a", "b", "c", "e"] {
        assert!(!marker(&lab, good, &format!("rolled-{step}")), "{step}");
    }

    // The summary says what was not attempted and why, and the host's verdict.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("ROLLBACK NOT ATTEMPTED"))
        .unwrap_or_else(|| panic!("no line for the rollback not attempted:\n{stdout}"));
    assert!(
        line.contains(bad) && line.contains("step a") && line.contains("rollback of b failed"),
        "{line}"
    );
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("not attempted:"))
        .unwrap_or_else(|| panic!("no `not attempted:` summary line:\n{stdout}"));
    assert_eq!(
        summary,
        format!(
            "not attempted: 1 rollback(s) after a failed one: a@{bad} (rollback of b@{bad} failed)"
        ),
    );
    assert!(
        stdout.contains("1 with a failed rollback"),
        "the verdict counts the host:\n{stdout}"
    );

    // The journal: b's rollback failed, a's is recorded as not attempted, naming b.
    let (run_id, run_dir) = only_run(&lab.state);
    let journal = journal(&run_dir);
    let finished = records(&journal, "rollback_finished");
    let outcome = |label: &str| {
        finished
            .iter()
            .find(|r| r["label"] == label)
            .map(|r| r["ok"].as_bool().unwrap())
    };
    assert_eq!(outcome(&format!("c@{bad}")), Some(true));
    assert_eq!(outcome(&format!("b@{bad}")), Some(false));
    assert_eq!(outcome(&format!("e@{bad}")), Some(true));
    assert_eq!(outcome(&format!("a@{bad}")), None, "a's rollback never ran");
    assert!(
        !records(&journal, "rollback_started")
            .iter()
            .any(|r| r["label"] == format!("a@{bad}")),
        "a's rollback never started"
    );
    let skipped = records(&journal, "rollback_not_attempted");
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0]["label"], format!("a@{bad}"));
    assert_eq!(skipped[0]["blocked_by"], format!("b@{bad}"));
    assert_eq!(
        skipped[0]["reason"],
        format!("not attempted: rollback of b@{bad} failed")
    );
    // The run's end, as journaled: a person must look (the host is not "rolled back").
    let end = records(&journal, "run_finished");
    assert_eq!(end.len(), 1, "{end:?}");
    assert_eq!(end[0]["outcome"], "needs_attention");
    assert_eq!(end[0]["exit_code"], 3);

    // JUnit lists it with the host's rollback errors.
    let xml = std::fs::read_to_string(&junit).expect("the JUnit file");
    assert!(
        xml.contains("rollback not attempted: step a: rollback of b failed"),
        "{xml}"
    );

    // `pony status` shows it too.
    let status = lab.pony(&["status", &run_id]).output().unwrap();
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(
        shown.contains("1 not attempted")
            && shown.contains(&format!(
                "not attempted a@{bad}: rollback of b@{bad} failed"
            )),
        "{}",
        text(&status)
    );

    // `pony rollback` of the run tries again, in order: b (which fails again), and a
    // still not.
    let again = lab.pony(&["rollback", &run_id, "--yes"]).output().unwrap();
    assert_eq!(code(&again), 3, "{}", text(&again));
    assert!(!marker(&lab, bad, "rolled-a"), "{}", text(&again));
    // Once b's rollback can succeed, a's runs.
    std::fs::remove_file(lab.root(bad).join("fail-rollback-b")).unwrap();
    let fixed = lab
        .pony(&["rollback", &run_id, "--limit", bad, "--yes"])
        .output()
        .unwrap();
    assert!(marker(&lab, bad, "rolled-a"), "{}", text(&fixed));
    assert_eq!(code(&fixed), 0, "{}", text(&fixed));
}

/// Taking a host out of the balancer's pool and putting it back run on the balancer
/// (`delegate:`); the restart between runs on the host; `check` fails where `fail-check`
/// is, once the test created `go`. `enable`'s rollback takes the host out of the pool
/// again: if that fails, the balancer may still send the host traffic, so the restart's
/// rollback (and the drain's) must not run.
const BALANCED: &str = r#"
name: balanced
strategy: { max_unavailable: 100%, max_failures: 1 }
steps:
  - name: drain
    hosts: "r1-c1-01"
    delegate: "r1-c1-02"
    run: touch {{ lb_root }}/drained-{{ host.name }}
    rollback: touch {{ lb_root }}/undrained-{{ host.name }}
  - name: restart
    hosts: "r1-c1-01"
    needs: [drain]
    run: touch {{ root }}/restarted
    rollback: touch {{ root }}/restarted-old
  - name: enable
    hosts: "r1-c1-01"
    needs: [restart]
    delegate: "r1-c1-02"
    run: touch {{ lb_root }}/enabled-{{ host.name }}
    rollback: touch {{ lb_root }}/disabled-{{ host.name }}
  - name: check
    hosts: "r1-c1-01"
    needs: [enable]
    run: |
      touch {{ root }}/checking
      while [ ! -e {{ root }}/go ]; do sleep 0.05; done
      test ! -e {{ root }}/fail-check
"#;

#[test]
fn a_delegated_rollback_that_cannot_reach_the_balancer_stops_the_hosts_restart_rollback() {
    let mut lab = lab_with(1, 1, 2);
    let (target, balancer) = ("r1-c1-01", "r1-c1-02");
    let lb_root = lab.root(balancer).display().to_string();
    lab.edit_inventory(|root| {
        support::yaml_at(root, &["defaults", "vars"]).insert("lb_root".into(), lb_root.into());
    });
    lab.make_fail(target, "check");
    let playbook = lab.playbook(BALANCED);
    let mut pony = Reaped::new(lab.spawn_deploy(&playbook, &[]));
    support::wait_until("the check to start on the target", || {
        marker(&lab, target, "checking")
    });
    pony.still_running("the deploy");
    assert!(marker(&lab, balancer, &format!("enabled-{target}")));
    // The balancer goes down (its sshd and every session), then the check fails.
    lab.fleet.kill(balancer).unwrap();
    std::fs::write(lab.root(target).join("go"), "").unwrap();
    let out = pony.wait_with_output().unwrap();
    assert_eq!(code(&out), 3, "{}", text(&out));

    assert!(
        !marker(&lab, balancer, &format!("disabled-{target}")),
        "the balancer was down"
    );
    assert!(
        !marker(&lab, target, "restarted-old"),
        "the host was restarted while the balancer could still send it traffic\n{}",
        text(&out)
    );
    assert!(
        !marker(&lab, balancer, &format!("undrained-{target}")),
        "{}",
        text(&out)
    );

    // The events name both rollbacks not attempted and the failed one that stopped them.
    let events = support::events(&out);
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "rollback_task" && e["ok"] == false)
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["task"]["step"], "enable");
    let mut skipped: Vec<String> = events
        .iter()
        .filter(|e| e["event"] == "rollback_not_attempted")
        .map(|e| {
            assert_eq!(e["blocked_by"], format!("enable@{target}"), "{e}");
            assert_eq!(
                e["reason"],
                format!("not attempted: rollback of enable@{target} failed"),
                "{e}"
            );
            e["task"]["step"].as_str().unwrap().to_string()
        })
        .collect();
    skipped.sort();
    assert_eq!(skipped, ["drain", "restart"], "{}", text(&out));
    assert!(
        events.iter().any(|e| e["event"] == "host_finished"
            && e["host"] == target
            && e["outcome"] == "rollback_failed"),
        "{}",
        text(&out)
    );

    let summary = events
        .iter()
        .find(|e| e["event"] == "summary")
        .expect("a summary event");
    let mut listed: Vec<String> = summary["rollbacks_not_attempted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [format!("drain@{target}"), format!("restart@{target}")]
    );
    assert_eq!(summary["rollback_failed"], 1, "{summary}");
    assert_eq!(summary["rolled_back"], 0, "{summary}");

    let (run_id, run_dir) = only_run(&lab.state);
    let journal = journal(&run_dir);
    let mut labels: Vec<String> = records(&journal, "rollback_not_attempted")
        .iter()
        .map(|r| r["label"].as_str().unwrap().to_string())
        .collect();
    labels.sort();
    assert_eq!(
        labels,
        [format!("drain@{target}"), format!("restart@{target}")]
    );
    assert!(
        !records(&journal, "rollback_started")
            .iter()
            .any(|r| r["label"] == format!("restart@{target}")),
        "the restart's rollback never started"
    );

    // `pony status --output json` lists them among the rollbacks' problems, with why.
    let status = lab
        .pony(&["status", &run_id, "--output", "json"])
        .output()
        .unwrap();
    let report: serde_json::Value =
        serde_json::from_slice(&status.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&status)));
    let rollbacks = &report["rollbacks"];
    assert_eq!(rollbacks["failed"], 1, "{rollbacks}");
    assert_eq!(rollbacks["not_attempted"], 2, "{rollbacks}");
    assert_eq!(rollbacks["unfinished"], 0, "{rollbacks}");
    let problem = rollbacks["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["label"] == format!("restart@{target}"))
        .unwrap_or_else(|| panic!("{rollbacks}"));
    assert_eq!(
        problem["not_attempted"],
        format!("not attempted: rollback of enable@{target} failed")
    );
    // The host's log says it after the failed rollback.
    let log = std::fs::read_to_string(run_dir.join("logs").join(format!("{target}.log")))
        .expect("the host's log");
    assert!(
        log.contains(&format!(
            "rollback restart@{target} not attempted: rollback of enable@{target} failed"
        )),
        "{log}"
    );
}
