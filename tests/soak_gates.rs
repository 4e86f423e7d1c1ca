//! Mail-safe gates over real sshd hosts: a `verify` check that starts failing during the
//! canary's soak rolls the canary back and stops the rollout; canary analysis against
//! baseline hosts (5× fails, 1.1× within 50% passes); the run-wide budget stops a run
//! whose failures are spread over clusters. The hosts' files are checked.

mod support;

use support::code;

use std::io::BufReader;
use support::{events, lab_with, read_events_until, release_playbook, text, Lab};

/// Two waves: `canary` (r1-c1-01, soaking with `verify`) and `rest`.
fn canary_strategy(verify: &str, pause: &str) -> String {
    format!(
        "  max_failures: 0\n  on_failure: rollback-region\n  waves:\n    - name: canary\n      regions: [r1]\n      hosts: r1-c1-01\n      pause: {pause}\n      verify:\n{verify}    - {{ name: rest, regions: [\"*\"] }}"
    )
}

fn untouched(lab: &Lab, host: &str) {
    assert_eq!(lab.current(host).as_deref(), Some("releases/1.0"), "{host}");
    assert!(
        !lab.root(host).join("srv/mail/releases/2.0").exists(),
        "{host} never started"
    );
}

#[test]
fn a_check_that_starts_failing_during_the_soak_rolls_the_canary_back_and_stops_the_rollout() {
    let lab = lab_with(1, 1, 3);
    lab.install_old_release();
    // The check is a template: each host's own root.
    let verify =
        "        - { name: healthy, run: \"test ! -e {{ root }}/unhealthy\", every: 200ms }\n";
    let playbook = lab.playbook(&release_playbook(&canary_strategy(verify, "1h")));
    let mut child = lab.spawn_deploy(&playbook, &[]);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    // The canary passed its own steps and two soak rounds; then it goes bad.
    let mut passed = 0;
    let mut seen = read_events_until(&mut stdout, |e| {
        passed += usize::from(e["event"] == "verify_check" && e["ok"] == true);
        passed == 2
    });
    assert_eq!(lab.current("r1-c1-01").as_deref(), Some("releases/2.0"));
    std::fs::write(lab.root("r1-c1-01").join("unhealthy"), "").unwrap();
    seen.extend(read_events_until(&mut stdout, |e| e["event"] == "summary"));
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{seen:#?}");
    let failed: Vec<_> = seen
        .iter()
        .filter(|e| e["event"] == "verify_check" && e["ok"] == false)
        .collect();
    assert_eq!(failed.len(), 1, "{seen:#?}");
    assert_eq!(failed[0]["host"], "r1-c1-01");
    assert!(seen
        .iter()
        .any(|e| e["event"] == "wave_failed" && e["wave"] == "canary"));
    // Rolled back although its own steps had passed; nothing of the next wave started.
    untouched(&lab, "r1-c1-01");
    for host in ["r1-c1-02", "r1-c1-03"] {
        untouched(&lab, host);
    }
}

/// A compare check reading a number each host holds in `{{ root }}/errors`.
const COMPARE: &str = "        - { name: errors, run: \"cat {{ root }}/errors\", every: 100ms, compare: median, baseline: \"r1-c1-02,r1-c1-03\", tolerance: \"50%\" }\n";

fn write_errors(lab: &Lab, canary: &str, baseline: &str) {
    std::fs::write(lab.root("r1-c1-01").join("errors"), canary).unwrap();
    for host in ["r1-c1-02", "r1-c1-03"] {
        std::fs::write(lab.root(host).join("errors"), baseline).unwrap();
    }
}

#[test]
fn a_canary_five_times_its_baseline_fails_and_one_point_one_times_within_50_percent_passes() {
    let lab = lab_with(1, 1, 3);
    lab.install_old_release();
    let playbook = lab.playbook(&release_playbook(&canary_strategy(COMPARE, "300ms")));
    write_errors(&lab, "50", "10");
    let out = lab.deploy(&playbook, &["--output", "json"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let checks: Vec<_> = events(&out)
        .into_iter()
        .filter(|e| e["event"] == "verify_check")
        .collect();
    assert_eq!(checks.len(), 1, "the first round fails: {checks:#?}");
    assert_eq!(checks[0]["ok"], false);
    assert!(checks[0]["detail"]
        .as_str()
        .unwrap()
        .contains("canary median 50 vs baseline median 10"));
    for host in ["r1-c1-01", "r1-c1-02", "r1-c1-03"] {
        untouched(&lab, host);
    }

    write_errors(&lab, "11", "10");
    let out = lab.deploy(&playbook, &["--output", "json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let checks: Vec<_> = events(&out)
        .into_iter()
        .filter(|e| e["event"] == "verify_check")
        .collect();
    assert_eq!(checks.len(), 3, "every round of the soak: {checks:#?}");
    assert!(checks.iter().all(|c| c["ok"] == true), "{checks:#?}");
    for host in ["r1-c1-01", "r1-c1-02", "r1-c1-03"] {
        assert_eq!(lab.current(host).as_deref(), Some("releases/2.0"), "{host}");
    }
}

#[test]
fn the_run_wide_budget_stops_a_run_whose_failures_spread_over_clusters() {
    // 12 hosts in three clusters that each allow 1 failure; 20% of the run is 2. The
    // first wave fails one host in each cluster: the third failure stops everything.
    let lab = lab_with(1, 3, 4);
    lab.install_old_release();
    let firsts = ["r1-c1-01", "r1-c2-01", "r1-c3-01"];
    for host in firsts {
        lab.make_fail(host, "verify");
    }
    let playbook = lab.playbook(&release_playbook(
        "  max_failures: 1\n  max_failures_run: 20%\n  on_failure: rollback-region\n  waves:\n    - { name: first, regions: [r1], hosts: \"r1-c1-01,r1-c2-01,r1-c3-01\" }\n    - { name: rest, regions: [\"*\"] }",
    ));
    let out = lab.deploy(&playbook, &["--output", "json"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let crossed: Vec<_> = events(&out)
        .into_iter()
        .filter(|e| e["event"] == "run_budget_exceeded")
        .collect();
    assert_eq!(crossed.len(), 1, "{}", text(&out));
    assert_eq!(crossed[0]["failed_hosts"], 3);
    assert_eq!(crossed[0]["max_failures_run"], 2);
    for host in firsts {
        untouched(&lab, host);
    }
    for host in lab.host_names() {
        if !firsts.contains(&host.as_str()) {
            untouched(&lab, &host);
        }
    }
}

/// How late the journal or a reporter may stamp an event after the scheduler emitted it.
const STAMP_LAG: std::time::Duration = std::time::Duration::from_millis(500);

/// An RFC 3339 time of an event or a journal record.
fn instant(record: &serde_json::Value) -> std::time::SystemTime {
    let time = record["time"]
        .as_str()
        .unwrap_or_else(|| panic!("no time: {record}"));
    humantime::parse_rfc3339(time).unwrap_or_else(|e| panic!("{time}: {e}"))
}

/// The position of the first record of `kind` (journal `type` or event `event`) that
/// `also` accepts.
fn first(
    records: &[serde_json::Value],
    key: &str,
    kind: &str,
    also: impl Fn(&serde_json::Value) -> bool,
) -> usize {
    records
        .iter()
        .position(|r| r[key] == kind && also(r))
        .unwrap_or_else(|| panic!("no {kind}: {records:#?}"))
}

/// `canary` soaks `pause` with `verify`, then asks for approval; `rest` follows.
fn soak_then_approve(verify: &str, pause: &str) -> String {
    canary_strategy(verify, pause).replace(
        &format!("      pause: {pause}\n"),
        &format!("      pause: {pause}\n      approve: true\n"),
    )
}

/// Gate order as documented: first the soak (`pause:` with its `verify:` rounds), then
/// the `approve:` question. The events show the pause's wait at least the pause before
/// the approval's, with the soak's checks in between; approved, the rollout goes on.
#[test]
fn the_approval_question_comes_after_the_soak_with_its_checks() {
    let lab = lab_with(1, 1, 2);
    lab.install_old_release();
    let verify = "        - { name: healthy, run: \"test -d {{ mail_root }}\", every: 500ms }\n";
    let playbook = lab.playbook(&release_playbook(&soak_then_approve(verify, "2s")));
    let mut deploy = support::Reaped::new(lab.spawn_deploy(&playbook, &["--approval-wait", "10m"]));
    let mut stdout = BufReader::new(deploy.child().stdout.take().unwrap());
    let seen = read_events_until(&mut stdout, |e| {
        e["event"] == "gate_waiting" && e["reason"] == "approve"
    });
    let id = seen[0]["run_id"].as_str().unwrap().to_string();
    let pause = first(&seen, "event", "gate_waiting", |e| e["reason"] == "soak");
    let approve = seen.len() - 1;
    assert!(pause < approve, "{seen:#?}");
    let soak = std::time::Duration::from_secs(2);
    let waited = instant(&seen[approve])
        .duration_since(instant(&seen[pause]))
        .unwrap();
    assert!(
        waited + STAMP_LAG >= soak,
        "the question came {waited:?} after the soak began ({soak:?})"
    );
    let checks = seen[pause..approve]
        .iter()
        .filter(|e| e["event"] == "verify_check" && e["ok"] == true)
        .count();
    assert!(
        checks >= 1,
        "the soak's checks come before the question: {seen:#?}"
    );
    assert!(!lab.root("r1-c1-02").join("srv/mail/releases/2.0").exists());

    let approved = lab.pony(&["approve", &id, "canary"]).output().unwrap();
    assert_eq!(approved.status.code(), Some(0), "{}", text(&approved));
    assert!(
        text(&approved).contains("approved: the gate of wave canary passes"),
        "{}",
        text(&approved)
    );
    let output = deploy.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(lab.current("r1-c1-02").as_deref(), Some("releases/2.0"));
    let (_, folder) = support::only_run(&lab.state);
    let records = support::journal(&folder);
    let pause = first(&records, "type", "gate_waiting", |r| r["reason"] == "soak");
    let ask = first(&records, "type", "gate_waiting", |r| {
        r["reason"] == "approve"
    });
    let passed = first(&records, "type", "gate_passed", |r| r["wave"] == "canary");
    assert!(pause < ask && ask < passed, "{records:#?}");
    let waited = instant(&records[ask])
        .duration_since(instant(&records[pause]))
        .unwrap();
    assert!(waited + STAMP_LAG >= soak, "journal: {waited:?}");
}

/// `pony approve` during the soak answers the question up front: it says the soak goes
/// on until its end, the question is never asked, and the gate passes only once the
/// soak is over. The soak's check holds until the test lets it go, so the approval
/// lands inside the soak whatever the machine's speed.
#[test]
fn pony_approve_during_the_soak_pre_approves_and_the_gate_passes_after_the_soak() {
    let lab = lab_with(1, 1, 2);
    lab.install_old_release();
    let verify = "        - { name: held, run: \"while [ ! -e {{ root }}/go ]; do sleep 0.05; done\", every: 1s }\n";
    let playbook = lab.playbook(&release_playbook(&soak_then_approve(verify, "1s")));
    // No terminal, no --approval-wait: a question at the gate would stop the run (10).
    let mut deploy = support::Reaped::new(lab.spawn_deploy(&playbook, &[]));
    let mut stdout = BufReader::new(deploy.child().stdout.take().unwrap());
    let seen = read_events_until(&mut stdout, |e| {
        e["event"] == "gate_waiting" && e["reason"] == "soak"
    });
    let id = seen[0]["run_id"].as_str().unwrap().to_string();
    let approved = lab.pony(&["approve", &id, "canary"]).output().unwrap();
    assert_eq!(approved.status.code(), Some(0), "{}", text(&approved));
    let said = text(&approved);
    assert!(said.contains("approved; the soak runs until "), "{said}");
    assert!(!said.contains("the gate passes"), "{said}");
    std::fs::write(lab.root("r1-c1-01").join("go"), "").unwrap();
    let rest = read_events_until(&mut stdout, |e| e["event"] == "summary");
    let output = deploy.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(lab.current("r1-c1-02").as_deref(), Some("releases/2.0"));
    let passed = first(&rest, "event", "gate_passed", |e| e["wave"] == "canary");
    let waited = instant(&rest[passed])
        .duration_since(instant(seen.last().unwrap()))
        .unwrap();
    assert!(
        waited + STAMP_LAG >= std::time::Duration::from_secs(1),
        "the gate passed {waited:?} after the soak began"
    );

    let (_, folder) = support::only_run(&lab.state);
    let records = support::journal(&folder);
    let pause = first(&records, "type", "gate_waiting", |r| r["reason"] == "soak");
    let control = first(&records, "type", "control", |r| r["accepted"] == true);
    let check = first(&records, "type", "verify_check", |r| r["ok"] == true);
    let passed = first(&records, "type", "gate_passed", |r| r["wave"] == "canary");
    assert!(
        pause < control && control < check && check < passed,
        "approved during the soak, passed after it: {records:#?}"
    );
    assert!(
        !records
            .iter()
            .any(|r| r["type"] == "gate_waiting" && r["reason"] == "approve"),
        "pre-approved: no question"
    );
}
