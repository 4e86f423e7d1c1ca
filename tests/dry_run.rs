//! `pony deploy --dry-run` tells the truth about what a run will do: every host's
//! rollback commands under its forward commands, and the order the admission takes the
//! hosts in (`max_unavailable` batches per cluster, per wave). The order is checked
//! against a real run of the same plan (local hosts, events on stdout).

mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Output;
use support::exit_text;

/// A folder with an inventory, a playbook and a state dir.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(inventory: &str, playbook: &str) -> Setup {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("inv.yaml"), inventory).unwrap();
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
            .expect("pony runs")
    }

    fn dry_run(&self, extra: &[&str]) -> String {
        let mut args = vec!["deploy", "pb.yaml", "--dry-run"];
        args.extend_from_slice(extra);
        let out = self.pony(&args);
        assert_eq!(out.status.code(), Some(0), "{}", exit_text(&out));
        assert!(
            !self.state().join("runs").exists(),
            "a dry run records no run"
        );
        assert!(
            !self.state().join("hosts").exists(),
            "a dry run touches no host"
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Two waves; cluster c1 of six hosts, c2 of two; 50% at once.
const INVENTORY: &str = r#"
name: batches
defaults:
  connection: local
regions:
  r1:
    clusters:
      c1:
        hosts:
          a-[1:6]: { roles: [mta] }
      c2:
        hosts:
          b-[1:2]: { roles: [mta] }
  r2:
    clusters:
      c3:
        hosts:
          d-[1:4]: { roles: [mta] }
"#;

const PLAYBOOK: &str = r#"
name: batches
vars:
  version: "2.0"
strategy:
  waves:
    - { name: first, regions: [r1] }
    - { name: second, regions: [r2] }
  max_unavailable: 50%
steps:
  - name: stage
    run: mkdir -p rel && echo {{ version | quote }} > rel/VERSION
    rollback: rm -rf rel
  - name: note
    needs: [stage]
    run: echo {{ host.name }} > note
  - name: switch
    needs: [note]
    run: ln -sfn rel current
    rollback: |
      rm -f current
      echo {{ token | quote }} > rolled-back
"#;

#[test]
fn every_rollback_is_rendered_under_its_forward_command() {
    let setup = Setup::new(INVENTORY, PLAYBOOK);
    let out = setup.dry_run(&["--secret-var", "token=hunter2"]);
    assert!(
        !out.contains("hunter2"),
        "a secret is never printed:\n{out}"
    );
    let lines: Vec<&str> = out.lines().collect();
    let at = |label: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(&format!("{label}  ")))
            .unwrap_or_else(|| panic!("no {label} in\n{out}"))
    };
    // stage: its rollback right below it, marked.
    let stage = at("stage@a-1");
    assert_eq!(lines[stage + 1], "  ↳ rollback: rm -rf rel", "{out}");
    // note has no rollback: the next line is another task or a comment.
    let note = at("note@a-1");
    assert!(!lines[note + 1].contains("rollback"), "{out}");
    // A multi-line rollback, rendered per host, secrets hidden.
    let switch = at("switch@d-4");
    assert_eq!(lines[switch + 1], "  ↳ rollback: rm -f current", "{out}");
    assert_eq!(lines[switch + 2], "      echo *** > rolled-back", "{out}");
    // One rollback line per task that has one: stage and switch on 12 hosts.
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("  ↳ rollback: "))
            .count(),
        24,
        "{out}"
    );
    // Forward lines still start with the label.
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("switch@")).count(),
        12
    );
}

/// The batches printed per cluster and wave, and the order of the commands.
#[test]
fn hosts_come_in_max_unavailable_batches_per_cluster_and_wave() {
    let setup = Setup::new(INVENTORY, PLAYBOOK);
    let out = setup.dry_run(&[]);
    for expected in [
        "# wave first: 8 hosts;",
        "#   r1/c1 (3 at once): batch 1: a-1, a-2, a-3 / batch 2: a-4, a-5, a-6",
        "#   r1/c2 (1 at once): batch 1: b-1 / batch 2: b-2",
        "# wave second: 4 hosts;",
        "#   r2/c3 (2 at once): batch 1: d-1, d-2 / batch 2: d-3, d-4",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in\n{out}");
    }
    let position = |label: &str| {
        out.lines()
            .position(|l| l.starts_with(&format!("{label}  ")))
            .unwrap_or_else(|| panic!("no {label} in\n{out}"))
    };
    // Every command of a batch before any of the next batch, waves in order.
    let batch1 = ["a-1", "a-2", "a-3", "b-1"];
    let batch2 = ["a-4", "a-5", "a-6", "b-2"];
    for early in batch1 {
        for late in batch2 {
            assert!(
                position(&format!("switch@{early}")) < position(&format!("stage@{late}")),
                "{early} before {late}:\n{out}"
            );
        }
    }
    assert!(position("switch@b-2") < position("stage@d-1"), "{out}");
    assert!(position("switch@d-2") < position("stage@d-3"), "{out}");
    // Within a batch, each host's commands together, hosts in the header's order.
    let commands: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_once("  ").map(|(label, _)| label))
        .filter(|label| label.contains('@'))
        .collect();
    let order = [
        "a-1", "a-2", "a-3", "b-1", "a-4", "a-5", "a-6", "b-2", "d-1", "d-2", "d-3", "d-4",
    ];
    let expected: Vec<String> = order
        .iter()
        .flat_map(|h| ["stage", "note", "switch"].map(|step| format!("{step}@{h}")))
        .collect();
    assert_eq!(commands, expected, "{out}");
    let batch_lines: Vec<&str> = out.lines().filter(|l| l.contains(", batch ")).collect();
    assert_eq!(
        batch_lines,
        [
            "# wave first, batch 1",
            "# wave first, batch 2",
            "# wave second, batch 1",
            "# wave second, batch 2"
        ],
        "{out}"
    );
}

/// The real run admits the hosts in the order the dry run shows: per cluster, each
/// host's first task starts in the dry run's order, and no host of a later batch starts
/// before one of the batch before it finished (the window slides).
#[test]
fn the_real_run_takes_the_hosts_in_the_dry_run_order() {
    let setup = Setup::new(INVENTORY, PLAYBOOK);
    let dry = setup.dry_run(&[]);
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in dry.lines() {
        let Some(rest) = line.strip_prefix("#   ") else {
            continue;
        };
        let Some((cluster, batches)) = rest.split_once(" (") else {
            continue;
        };
        let cluster = cluster.rsplit('/').next().unwrap().to_string();
        let (_, batches) = batches.split_once("): ").unwrap();
        for batch in batches.split(" / ") {
            let (_, hosts) = batch.split_once(": ").unwrap();
            expected
                .entry(cluster.clone())
                .or_default()
                .extend(hosts.split(", ").map(str::to_string));
        }
    }
    assert_eq!(expected.len(), 3, "{dry}");

    let out = setup.pony(&["deploy", "pb.yaml", "--yes", "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", exit_text(&out));
    let mut started: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let event: Value = serde_json::from_str(line).expect("one JSON event per line");
        if event["event"] != "task_started" {
            continue;
        }
        let host = event["task"]["host"].as_str().unwrap().to_string();
        let cluster = event["task"]["cluster"].as_str().unwrap().to_string();
        let hosts = started.entry(cluster).or_default();
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    assert_eq!(started, expected, "first task per host, per cluster");
    // The run did what the dry run printed, on every host.
    for host in ["a-1", "a-6", "b-2", "d-4"] {
        let root = setup.state().join("hosts").join(host);
        assert_eq!(
            std::fs::read_to_string(root.join("rel/VERSION")).unwrap(),
            "2.0\n"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("note")).unwrap(),
            format!("{host}\n")
        );
    }
}

#[test]
fn a_run_wide_connections_limit_is_shown_when_it_binds() {
    let setup = Setup::new(INVENTORY, PLAYBOOK);
    let out = setup.dry_run(&[]);
    assert!(!out.contains("(connections)"), "{out}");
    let out = setup.dry_run(&["--connections", "2"]);
    assert!(
        out.contains("#   and at most 2 hosts at once over the whole run (connections)"),
        "{out}"
    );
}

#[test]
fn a_wave_without_hosts_with_tasks_is_shown_as_skipped() {
    let setup = Setup::new(INVENTORY, PLAYBOOK);
    let out = setup.dry_run(&["--limit", "r2"]);
    assert!(
        out.contains("# wave first: no host has tasks; skipped"),
        "{out}"
    );
    assert!(!out.contains("# end of wave first"), "{out}");
    assert!(!out.contains("@a-1"), "{out}");
    assert!(out.contains("#   r2/c3 (2 at once): batch 1: d-1, d-2 / batch 2: d-3, d-4"));
}

#[test]
fn the_gates_checks_and_the_rollback_pace_are_shown() {
    let playbook = PLAYBOOK.replace(
        "    - { name: first, regions: [r1] }\n",
        r#"    - name: first
      regions: [r1]
      pause: 10m
      max_failures: 25%
      verify:
        - { name: version, run: "grep -qx {{ version }} rel/VERSION", hosts: b-2, every: 1m }
"#,
    );
    let setup = Setup::new(INVENTORY, &playbook);
    let out = setup.dry_run(&[]);
    assert!(
        out.starts_with("# rollback: pace window: per cluster at most max_unavailable hosts roll back at once, the failed host first; beyond max_failures 0 per cluster → rollback-region\n"),
        "{out}"
    );
    assert!(out.contains("# end of wave first, pause 10m\n#   wave budget: max_failures 25% of the wave's hosts, then on_failure for the whole run\n#   verify version: run `grep -qx {{ version }} rel/VERSION` on b-2 every 1m\n#     on b-2: grep -qx 2.0 rel/VERSION\n"), "{out}");
    let out = setup.dry_run(&["--rollback-pace", "all"]);
    assert!(
        out.starts_with("# rollback: pace all: every host of a rollback at once;"),
        "{out}"
    );
}

#[test]
fn a_become_step_shows_its_commands_as_written_tagged_become() {
    let setup = Setup::new(
        INVENTORY,
        r#"
name: root
steps:
  - name: restart
    become: true
    unless: test -e it's-done
    run: systemctl restart it's
    rollback: echo undo
"#,
    );
    let out = setup.dry_run(&["--limit", "a-1"]);
    assert!(
        out.lines()
            .any(|l| l == "restart@a-1  [become] [unless test -e it's-done] systemctl restart it's"),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l == "  ↳ rollback: [become] echo undo"),
        "{out}"
    );
    assert!(!out.contains("sudo"), "the wire form is not shown:\n{out}");
}

/// The order comes from the scheduler itself, run over a transport that records what it
/// would send: no host is contacted and nothing runs. An ssh host's port is a listener
/// this test holds (any connection to it would be seen), and a local host's step would
/// leave a marker outside pony's folders; neither happens, and the ssh host is listed as
/// started by the scheduler, not as a host its rehearsal could not reach.
#[test]
fn the_order_is_the_schedulers_and_nothing_is_contacted_or_run() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let markers = tempfile::tempdir().expect("temp dir");
    let setup = Setup::new(
        &format!(
            r#"
name: untouched
defaults:
  connection: local
regions:
  r1:
    clusters:
      c1:
        hosts:
          l-[1:3]: {{}}
      c2:
        connection: ssh
        ssh: {{ port: {port}, connect_retries: 0, connect_timeout: 5s }}
        hosts:
          s-1: {{ address: 127.0.0.1 }}
"#
        ),
        &format!(
            r#"
name: untouched
strategy: {{ max_unavailable: 2 }}
steps:
  - name: mark
    unless: test -e {markers}/never
    run: touch {markers}/ran-{{{{ host.name }}}}
    rollback: touch {markers}/rolled-back-{{{{ host.name }}}}
"#,
            markers = markers.path().display()
        ),
    );
    let out = setup.dry_run(&[]);
    assert!(
        out.contains("#   r1/c1 (2 at once): batch 1: l-1, l-2 / batch 2: l-3\n"),
        "{out}"
    );
    assert!(
        out.contains("#   r1/c2 (2 at once): batch 1: s-1\n"),
        "{out}"
    );
    assert!(
        !out.contains("not started by the scheduler's rehearsal"),
        "{out}"
    );
    // Four tasks; each sent its guard and then its action, and both were only recorded.
    assert!(
        out.ends_with(
            "# order from the scheduler, run in virtual time over a recording transport: 4 tasks started, 8 calls recorded, none run\n"
        ),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l
            == format!(
                "mark@s-1  [unless test -e {m}/never] touch {m}/ran-s-1",
                m = markers.path().display()
            )),
        "{out}"
    );
    let left: Vec<_> = std::fs::read_dir(markers.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "a dry run ran commands: {left:?}");
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("a dry run contacted the ssh host: {other:?}"),
    }
}
