//! Paced rollback over real sshd hosts: a host being rolled back holds one of its
//! cluster's `max_unavailable` slots (automatic rollbacks and `pony rollback`), `pace:
//! all` / `--rollback-pace all` takes every host at once; what `pony plan` says about it,
//! and the errors for bad values. The hosts' files and the run's events are checked.

mod support;

use support::code;

use std::collections::BTreeSet;
use support::{events, lab_with, release_playbook, text};

/// The most hosts rolling back at once (from a host's first rollback command to its
/// outcome), and the order in which hosts began rolling back.
fn rollback_width(events: &[serde_json::Value]) -> (usize, Vec<String>) {
    let mut out = BTreeSet::new();
    let mut first = Vec::new();
    let mut most = 0;
    for e in events {
        match e["event"].as_str().unwrap() {
            "rollback_task_started" => {
                let host = e["task"]["host"].as_str().unwrap().to_string();
                if !first.contains(&host) {
                    first.push(host.clone());
                }
                out.insert(host);
            }
            "host_finished" => {
                out.remove(e["host"].as_str().unwrap());
            }
            _ => {}
        }
        most = most.max(out.len());
    }
    (most, first)
}

const HOSTS: [&str; 4] = ["r1-c1-01", "r1-c1-02", "r1-c1-03", "r1-c1-04"];

#[test]
fn a_region_rollback_goes_one_host_at_a_time_unless_the_pace_is_all() {
    let lab = lab_with(1, 1, 4);
    lab.install_old_release();
    let playbook = lab.playbook(&release_playbook(
        "  max_unavailable: 1\n  max_failures: 0\n  on_failure: rollback-region",
    ));
    lab.make_fail("r1-c1-04", "verify");

    let out = lab.deploy(&playbook, &["--output", "json"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let (most, first) = rollback_width(&events(&out));
    assert_eq!(most, 1, "one slot: one host rolling back at a time");
    assert_eq!(first.first().map(String::as_str), Some("r1-c1-04"));
    assert_eq!(first.len(), 4, "{first:?}");
    for host in HOSTS {
        assert_eq!(lab.current(host).as_deref(), Some("releases/1.0"), "{host}");
        assert!(
            !lab.root(host).join("srv/mail/releases/2.0").exists(),
            "{host}"
        );
    }

    let out = lab.deploy(&playbook, &["--output", "json", "--rollback-pace", "all"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let (most, first) = rollback_width(&events(&out));
    assert_eq!(most, 4, "--rollback-pace all: every host at once");
    assert_eq!(first.len(), 4);
    for host in HOSTS {
        assert_eq!(lab.current(host).as_deref(), Some("releases/1.0"), "{host}");
    }
}

#[test]
fn pony_rollback_of_a_run_is_paced_by_the_slots_too() {
    let lab = lab_with(1, 1, 4);
    lab.install_old_release();
    let playbook = lab.playbook(&release_playbook("  max_unavailable: 2"));
    let out = lab.deploy(&playbook, &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    for host in HOSTS {
        assert_eq!(lab.current(host).as_deref(), Some("releases/2.0"));
    }
    let (run, _) = support::only_run(&lab.state);
    let out = lab
        .pony(&["rollback", &run, "--yes", "--output", "json"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let (most, first) = rollback_width(&events(&out));
    assert_eq!(most, 2, "two slots: two hosts at a time");
    assert_eq!(first.len(), 4);
    for host in HOSTS {
        assert_eq!(lab.current(host).as_deref(), Some("releases/1.0"), "{host}");
        assert!(
            !lab.root(host).join("srv/mail/releases/2.0").exists(),
            "{host}"
        );
    }
}

#[test]
fn plan_shows_the_rollback_pace_and_bad_values_are_refused() {
    let lab = lab_with(1, 2, 3);
    let inventory = lab.inventory.to_str().unwrap();
    let plan = |strategy: &str| {
        let playbook = lab.playbook(&release_playbook(strategy));
        lab.pony(&["plan", "-i", inventory, playbook.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let out = plan(
        "  max_unavailable: 2\n  max_failures_run: 50%\n  unreachable: skip\n  max_unreachable: 1",
    );
    assert_eq!(code(&out), 0, "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("failures: max_failures_run 50% (3 of 6 hosts), unreachable hosts skipped (at most 1, then they fail); rollback pace window"),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("      rollback 2 at a time").count(),
        2,
        "{stdout}"
    );
    let out = plan("  rollback: { pace: all }");
    assert_eq!(code(&out), 0, "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.matches("      rollback all together").count(),
        2,
        "{stdout}"
    );

    for (strategy, says) in [
        ("  rollback: { pace: slow }", "pace"),
        (
            "  max_failures_run: lots",
            "strategy.max_failures_run: bad value `lots`",
        ),
        (
            "  max_unreachable: 2",
            "strategy.max_unreachable is set but unreachable hosts fail",
        ),
        ("  unreachable: maybe", "unreachable"),
    ] {
        let out = plan(strategy);
        assert_eq!(code(&out), 2, "{strategy}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("playbook.yaml"), "{strategy}: {stderr}");
        assert!(stderr.contains(says), "{strategy}: {stderr}");
    }
}

#[test]
fn an_unreachable_host_is_skipped_reported_and_summed_up() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let inventory = dir.path().join("inventory.yaml");
    std::fs::write(
        &inventory,
        format!(
            "name: mixed\ndefaults: {{ connection: local }}\nregions:\n  r1:\n    clusters:\n      c1: {{ hosts: {{ h1: {{}}, h2: {{}} }} }}\n      c2:\n        connection: ssh\n        ssh: {{ port: {port}, connect_retries: 0, connect_timeout: 5s }}\n        hosts: {{ dead: {{ address: 127.0.0.1 }} }}\n"
        ),
    )
    .unwrap();
    let playbook = dir.path().join("playbook.yaml");
    std::fs::write(
        &playbook,
        "name: p\nstrategy: { unreachable: skip }\nsteps:\n  - { name: mark, run: echo mark > marked }\n",
    )
    .unwrap();
    let state = dir.path().join("state");
    let args = |output: &'static str| {
        vec![
            "deploy".to_string(),
            "-i".into(),
            inventory.to_str().unwrap().into(),
            playbook.to_str().unwrap().into(),
            "--yes".into(),
            "--output".into(),
            output.into(),
        ]
    };
    let json: Vec<String> = args("json");
    let out = support::pony(&state, &json.iter().map(String::as_str).collect::<Vec<_>>())
        .output()
        .unwrap();
    assert_eq!(code(&out), 3, "{}", text(&out));
    let outcomes: Vec<(String, String)> = events(&out)
        .iter()
        .filter(|e| e["event"] == "host_finished")
        .map(|e| {
            (
                e["host"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        outcomes.contains(&("dead".into(), "unreachable".into())),
        "{outcomes:?}"
    );
    assert!(
        outcomes.contains(&("h1".into(), "ok".into())),
        "{outcomes:?}"
    );
    for host in ["h1", "h2"] {
        let marked = state.join("hosts").join(host).join("marked");
        assert_eq!(
            std::fs::read_to_string(&marked).unwrap(),
            "mark\n",
            "{host}"
        );
    }
    let human: Vec<String> = args("human");
    let out = support::pony(
        &state,
        &human.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .output()
    .unwrap();
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 unreachable, skipped"),
        "{}",
        text(&out)
    );
}
