//! `delegate:` on real sshd hosts: the rolling-update pattern of taking each host out of
//! a load balancer (a file on a separate lab host) before its restart and putting it back
//! after, run on the balancer host's own connection on the target's behalf, one task at
//! a time there; and a failed restart's rollback putting the host back, again on the
//! balancer.

mod support;

use serde_yaml::{Mapping, Value as Yaml};
use std::path::Path;
use support::{journal, lab_with, only_run, text, Lab};

const BALANCER: &str = "r1-c1-05";
const TARGETS: [&str; 4] = ["r1-c1-01", "r1-c1-02", "r1-c1-03", "r1-c1-04"];

fn read(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A lab of five hosts; every host's inventory vars name the balancer (`lb_host`) and
/// its folder (`lb_root`); the balancer's pool lists the four targets.
fn balancer_lab() -> Lab {
    let lab = lab_with(1, 1, 5);
    let mut root: Yaml = serde_yaml::from_str(&read(&lab.inventory)).unwrap();
    let defaults = root
        .as_mapping_mut()
        .unwrap()
        .entry("defaults".into())
        .or_insert_with(|| Yaml::Mapping(Mapping::new()))
        .as_mapping_mut()
        .unwrap();
    let vars = defaults
        .entry("vars".into())
        .or_insert_with(|| Yaml::Mapping(Mapping::new()))
        .as_mapping_mut()
        .unwrap();
    vars.insert("lb_host".into(), BALANCER.into());
    let lb_root = lab.root(BALANCER).display().to_string();
    vars.insert("lb_root".into(), lb_root.into());
    std::fs::write(&lab.inventory, serde_yaml::to_string(&root).unwrap()).unwrap();
    std::fs::write(
        lab.root(BALANCER).join("pool"),
        format!("{}\n", TARGETS.join("\n")),
    )
    .unwrap();
    lab
}

/// Drain (delegated), restart (on the host: it refuses to run while the host is still
/// in the pool, and fails where `fail-restart` is), enable (delegated). Each delegated
/// command notes its start and end in the balancer's log under a lock, with the sshd it
/// came through (`$SSH_CONNECTION`), and holds the balancer a moment in between so that
/// two tasks there at once would interleave their notes.
const PLAYBOOK: &str = r#"
name: delegate
strategy: { max_unavailable: 100%, max_failures: 1 }
steps:
  - name: drain
    hosts: "all:!r1-c1-05"
    delegate: "{{ lb_host }}"
    run: |
      note() { flock {{ lb_root }}/lock sh -c 'echo "$1" >> {{ lb_root }}/log' note "$1"; }
      note "start drain {{ host.name }} $SSH_CONNECTION"
      sleep 0.2
      flock {{ lb_root }}/lock sed -i '/^{{ host.name }}$/d' {{ lb_root }}/pool
      note "end drain {{ host.name }}"
    rollback: |
      note() { flock {{ lb_root }}/lock sh -c 'echo "$1" >> {{ lb_root }}/log' note "$1"; }
      note "start undrain {{ host.name }} $SSH_CONNECTION"
      flock {{ lb_root }}/lock sh -c 'grep -qx {{ host.name }} {{ lb_root }}/pool || echo {{ host.name }} >> {{ lb_root }}/pool'
      note "end undrain {{ host.name }}"
  - name: restart
    hosts: "all:!r1-c1-05"
    needs: [drain]
    run: "! grep -qx {{ host.name }} {{ lb_root }}/pool && test ! -e {{ root }}/fail-restart && echo $SSH_CONNECTION > {{ root }}/restarted"
  - name: enable
    hosts: "all:!r1-c1-05"
    needs: [restart]
    delegate: "{{ lb_host }}"
    run: |
      note() { flock {{ lb_root }}/lock sh -c 'echo "$1" >> {{ lb_root }}/log' note "$1"; }
      note "start enable {{ host.name }} $SSH_CONNECTION"
      sleep 0.2
      flock {{ lb_root }}/lock sh -c 'echo {{ host.name }} >> {{ lb_root }}/pool'
      note "end enable {{ host.name }}"
"#;

/// The balancer's log as (start line, end line) pairs, asserting that every start is
/// followed directly by its own end: no two delegated tasks were there at once.
fn serial_intervals(log: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len().is_multiple_of(2), "unpaired notes:\n{log}");
    lines
        .chunks(2)
        .map(|pair| {
            let start: Vec<&str> = pair[0].split_whitespace().collect();
            let end: Vec<&str> = pair[1].split_whitespace().collect();
            assert!(
                start[0] == "start" && end[0] == "end" && start[1..3] == end[1..3],
                "two delegated tasks overlapped on the balancer:\n{log}"
            );
            (pair[0].to_string(), pair[1].to_string())
        })
        .collect()
}

/// `$SSH_CONNECTION` ends with the address and port of the sshd it came through.
fn came_through(lab: &Lab, line: &str, host: &str) -> bool {
    let h = lab.fleet.host(host);
    line.ends_with(&format!(" {} {}", h.address, h.port))
}

fn pool(lab: &Lab) -> Vec<String> {
    let mut names: Vec<String> = read(lab.root(BALANCER).join("pool"))
        .lines()
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

#[test]
fn delegated_steps_run_on_the_balancer_one_at_a_time_for_each_host_around_its_restart() {
    let lab = balancer_lab();
    let playbook = lab.playbook(PLAYBOOK);
    let inventory = lab.inventory.to_str().unwrap();

    let plan = lab
        .pony(&["plan", "-i", inventory, playbook.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(plan.status.success(), "{}", text(&plan));
    let shown = String::from_utf8_lossy(&plan.stdout);
    assert!(
        shown.contains(&format!(
            "delegated to {BALANCER} (4 targets); 1 at a time per delegate host"
        )),
        "{shown}"
    );
    let dry = lab.deploy(&playbook, &["--dry-run"]);
    assert!(dry.status.success(), "{}", text(&dry));
    let dry = String::from_utf8_lossy(&dry.stdout);
    for target in TARGETS {
        assert!(
            dry.lines()
                .any(|l| l.starts_with(&format!("drain@{target}  [on {BALANCER}] ")))
                && dry
                    .lines()
                    .any(|l| l.starts_with(&format!("enable@{target}  [on {BALANCER}] ")))
                && dry
                    .lines()
                    .any(|l| l.starts_with(&format!("restart@{target}  ! grep"))),
            "dry-run shows where {target}'s drain runs:\n{dry}"
        );
    }
    assert!(
        !lab.root(BALANCER).join("log").exists(),
        "plan and dry-run ran nothing"
    );

    let out = lab.deploy(&playbook, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let log = read(lab.root(BALANCER).join("log"));
    let intervals = serial_intervals(&log);
    assert_eq!(intervals.len(), 2 * TARGETS.len(), "{log}");
    for target in TARGETS {
        let position = |what: &str| {
            intervals
                .iter()
                .position(|(start, _)| start.starts_with(&format!("start {what} {target} ")))
                .unwrap_or_else(|| panic!("no {what} of {target} on the balancer:\n{log}"))
        };
        assert!(position("drain") < position("enable"), "{log}");
        // Run through the balancer's sshd, not the target's.
        let (start, _) = &intervals[position("drain")];
        assert!(came_through(&lab, start, BALANCER), "{start}");
        // The restart ran on the target itself, once it was out of the pool.
        let restarted = read(lab.root(target).join("restarted"));
        assert!(came_through(&lab, restarted.trim(), target), "{restarted}");
    }
    assert_eq!(pool(&lab), TARGETS.to_vec());
    assert!(!lab.root(BALANCER).join("restarted").exists());

    // The journal tells the delegated tasks by their targets; the log says where they ran.
    let (_, run_dir) = only_run(&lab.state);
    let records = journal(&run_dir);
    let drain = records
        .iter()
        .find(|r| r["type"] == "task_finished" && r["label"] == "drain@r1-c1-01")
        .unwrap_or_else(|| panic!("no drain@r1-c1-01 in the journal"));
    assert_eq!(drain["state"], "succeeded", "{drain}");
    let host_log = std::fs::read_dir(&run_dir)
        .unwrap()
        .flatten()
        .flat_map(|e| walk(&e.path()))
        .filter(|p| p.to_string_lossy().contains("r1-c1-01"))
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect::<String>();
    assert!(
        host_log.contains(&format!("drain@r1-c1-01 on delegate {BALANCER}")),
        "r1-c1-01's log says where its drain ran:\n{host_log}"
    );
}

fn walk(path: &Path) -> Vec<std::path::PathBuf> {
    if path.is_dir() {
        std::fs::read_dir(path)
            .unwrap()
            .flatten()
            .flat_map(|e| walk(&e.path()))
            .collect()
    } else {
        vec![path.to_path_buf()]
    }
}

#[test]
fn a_failed_restarts_rollback_puts_the_host_back_through_the_balancer() {
    let lab = balancer_lab();
    lab.make_fail("r1-c1-02", "restart");
    let playbook = lab.playbook(PLAYBOOK);
    let out = lab.deploy(&playbook, &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "one host failed and was rolled back: {}",
        text(&out)
    );
    let log = read(lab.root(BALANCER).join("log"));
    let intervals = serial_intervals(&log);
    let undrain: Vec<&(String, String)> = intervals
        .iter()
        .filter(|(start, _)| start.starts_with("start undrain "))
        .collect();
    assert_eq!(
        undrain.len(),
        1,
        "only the failed host is rolled back:\n{log}"
    );
    assert!(undrain[0].0.starts_with("start undrain r1-c1-02 "), "{log}");
    assert!(
        came_through(&lab, &undrain[0].0, BALANCER),
        "the rollback ran on the balancer: {}",
        undrain[0].0
    );
    assert!(!lab.root("r1-c1-02").join("restarted").exists());
    // Back in the pool (by the rollback), like every host that went through enable.
    assert_eq!(pool(&lab), TARGETS.to_vec());
    assert!(
        !log.contains("start enable r1-c1-02 "),
        "the failed host was never enabled:\n{log}"
    );
    let (_, run_dir) = only_run(&lab.state);
    let rolled_back = journal(&run_dir).into_iter().any(|r| {
        r["type"] == "rollback_finished" && r["label"] == "drain@r1-c1-02" && r["ok"] == true
    });
    assert!(rolled_back, "the journal records drain@r1-c1-02's rollback");
}
