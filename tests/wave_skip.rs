//! Runs count, announce and wait for only the hosts that have tasks: a host no step
//! targets is in no header, progress count or wave; a wave without such hosts is skipped
//! (no `wave_started`, its `pause`/`approve` not waited for); a host with tasks in no wave
//! is an error naming it. Local hosts; the events and the hosts' files are checked.

mod support;

use serde_json::Value;
use std::path::PathBuf;
use std::process::Output;
use support::{events, exit_text};

const INVENTORY: &str = r#"
name: skip
defaults:
  connection: local
regions:
  r1:
    clusters:
      c1:
        hosts:
          a-[1:2]: { roles: [mta] }
          w-1: { roles: [web] }
  r2:
    clusters:
      c2:
        hosts:
          w-2: { roles: [web] }
  r3:
    clusters:
      c3:
        hosts:
          a-3: { roles: [mta] }
  r4:
    clusters:
      c4:
        hosts:
          w-4: { roles: [web] }
"#;

/// `second` takes only r2, whose one host has no task: were it not skipped, its `approve`
/// would stop a run without a terminal (exit 10). `fourth` takes r4, whose host has no
/// task either, so `third` is the last wave with hosts.
const PLAYBOOK: &str = r#"
name: skip
strategy:
  waves:
    - { name: first, regions: [r1] }
    - { name: second, regions: [r2], approve: true, pause: 1s }
    - { name: third, regions: [r3], approve: true, pause: 1s }
    - { name: fourth, regions: [r4] }
steps:
  - { name: mark, hosts: mta, run: "echo {{ host.name }} > marked" }
"#;

fn without_fourth() -> String {
    PLAYBOOK.replace("    - { name: fourth, regions: [r4] }\n", "")
}

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(playbook: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("inv.yaml"), INVENTORY).unwrap();
        std::fs::write(dir.path().join("pb.yaml"), playbook).unwrap();
        Setup { dir }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn pony(&self, args: &[&str]) -> Output {
        support::pony_bare()
            .current_dir(self.dir.path())
            .env("PONY_STATE_DIR", self.state())
            .env("PONY_INVENTORY", "inv.yaml")
            .args(args)
            .output()
            .unwrap()
    }
}

#[test]
fn waves_without_hosts_with_tasks_are_skipped_and_counts_are_of_hosts_with_tasks() {
    // Without `fourth`, r4 is in no wave: its host has no task, so that is fine.
    let setup = Setup::new(&without_fourth());
    let out = setup.pony(&["deploy", "pb.yaml", "--yes", "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", exit_text(&out));
    let events = events(&out);
    let started = &events[0];
    assert_eq!(started["event"], "run_started");
    assert_eq!(started["hosts"], 3, "a-1, a-2, a-3 have tasks: {started}");
    assert_eq!(
        started["regions"],
        serde_json::json!([["r1", 2], ["r3", 1]]),
        "{started}"
    );
    let waves: Vec<(String, u64)> = events
        .iter()
        .filter(|e| e["event"] == "wave_started")
        .map(|e| {
            (
                e["wave"].as_str().unwrap().into(),
                e["hosts"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(waves, [("first".into(), 2), ("third".into(), 1)]);
    assert!(
        !events
            .iter()
            .any(|e| e["event"] == "gate_waiting" || e["wave"] == "second"),
        "the skipped wave neither waits nor is announced: {events:?}"
    );
    for host in ["a-1", "a-2", "a-3"] {
        let marked = setup.state().join("hosts").join(host).join("marked");
        assert_eq!(
            std::fs::read_to_string(&marked).unwrap(),
            format!("{host}\n")
        );
    }
    for host in ["w-1", "w-2", "w-4"] {
        assert!(
            !setup
                .state()
                .join("hosts")
                .join(host)
                .join("marked")
                .exists(),
            "{host} has no task"
        );
    }
    // The plain header counts the same hosts.
    let out = setup.pony(&["deploy", "pb.yaml", "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", exit_text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(": skip on skip, 3 hosts, 3 tasks"),
        "{stdout}"
    );
    assert!(stdout.contains("== wave first (2 hosts)"), "{stdout}");
    assert!(!stdout.contains("== wave second"), "{stdout}");
}

/// The last wave with hosts waits for neither its approve nor its pause, even when waves
/// without hosts with tasks follow it; once a later wave has hosts, its approve stops a
/// run without a terminal (exit 10).
#[test]
fn an_approve_before_only_skipped_waves_is_not_waited_for() {
    let setup = Setup::new(PLAYBOOK);
    let out = setup.pony(&["deploy", "pb.yaml", "--yes", "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", exit_text(&out));
    assert!(!events(&out).iter().any(|e| e["event"] == "gate_waiting"));
    assert!(!setup.state().join("hosts/w-4/marked").exists());

    let setup = Setup::new(&PLAYBOOK.replace("hosts: mta,", "hosts: \"mta:w-4\","));
    let out = setup.pony(&["deploy", "pb.yaml", "--yes", "--output", "json"]);
    assert_eq!(out.status.code(), Some(10), "{}", exit_text(&out));
    // Third's gate: its soak first, then its question; nothing of the skipped second.
    let waiting: Vec<(Value, Value)> = events(&out)
        .into_iter()
        .filter(|e| e["event"] == "gate_waiting")
        .map(|e| (e["wave"].clone(), e["reason"].clone()))
        .collect();
    assert_eq!(
        waiting,
        vec![
            ("third".into(), "soak".into()),
            ("third".into(), "approve".into())
        ]
    );
    assert!(setup.state().join("hosts/a-3/marked").exists());
    assert!(
        !setup.state().join("hosts/w-4/marked").exists(),
        "fourth waits"
    );
}

#[test]
fn a_host_with_tasks_in_no_wave_is_named_and_others_need_no_wave() {
    let setup = Setup::new(&without_fourth());
    let out = setup.pony(&["check", "pb.yaml"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "r4 has no task: {}",
        exit_text(&out)
    );
    let setup = Setup::new(&without_fourth().replace("hosts: mta,", "hosts: \"mta:w-4\","));
    let out = setup.pony(&["check", "pb.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", exit_text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("region `r4` (1 hosts) is in no wave, and these hosts have tasks: w-4"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    assert!(!setup.state().join("runs").exists(), "nothing ran");
}
