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
