//! Signals to a real `pony deploy` over the lab's sshd hosts: SIGTERM acts as the first
//! Ctrl-C (no new host starts, running tasks finish, exit 130, resumable), and a second
//! Ctrl-C kills the running tasks (journaled `interrupted`, their hosts reported
//! `incomplete`, exit 130), leaving every host fully done, untouched or reported
//! incomplete, and the run resumable.

mod support;

use std::collections::BTreeSet;
use std::io::{BufReader, Read};
use std::process::Child;
use support::{journal, lab_with, only_run, read_events_until, text, wait_until, Lab};

/// One host at a time per cluster: the `-01` hosts run while the `-02` hosts queue.
/// `slow` holds until the test opens the gate, so the signals come while it runs.
const PLAYBOOK: &str = r#"
name: interrupted
strategy: { max_unavailable: 1 }
steps:
  - { name: one, run: "echo one >> {{ root }}/count-one" }
  - { name: slow, needs: [one], run: "echo slow >> {{ root }}/count-slow; while [ ! -e GATE ]; do sleep 0.02; done" }
  - { name: three, needs: [slow], run: "echo three >> {{ root }}/count-three" }
"#;

fn setup() -> (Lab, std::path::PathBuf, std::path::PathBuf) {
    let lab = lab_with(1, 2, 2);
    let gate = lab.path("gate");
    let playbook = lab.playbook(&PLAYBOOK.replace("GATE", gate.to_str().unwrap()));
    (lab, playbook, gate)
}

fn lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

fn spawn(lab: &Lab, playbook: &std::path::Path) -> Child {
    let child = lab.spawn_deploy(playbook, &[]);
    wait_until("`slow` to run on both -01 hosts", || {
        ["r1-c1-01", "r1-c2-01"]
            .iter()
            .all(|h| lab.root(h).join("count-slow").exists())
    });
    child
}

fn signal(child: &Child, signal: i32) {
    // Our own child, by its pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
}

const IN_FLIGHT: [&str; 2] = ["r1-c1-01", "r1-c2-01"];
const QUEUED: [&str; 2] = ["r1-c1-02", "r1-c2-02"];

#[test]
fn sigterm_starts_no_queued_host_lets_running_tasks_finish_exits_130_and_the_run_resumes() {
    let (lab, playbook, gate) = setup();
    let mut child = spawn(&lab, &playbook);
    signal(&child, libc::SIGTERM);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut events = read_events_until(&mut stdout, |e| e["event"] == "stopped");
    assert!(
        events.last().unwrap()["reason"]
            .as_str()
            .unwrap()
            .starts_with("interrupted"),
        "{events:?}"
    );
    std::fs::write(&gate, "").unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    events.extend(support::json_lines(&rest));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{events:#?}\n{}", text(&out));
    let (run, run_dir) = only_run(&lab.state);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("pony resume {run}")),
        "{}",
        text(&out)
    );
    assert!(
        !events.iter().any(|e| e["event"] == "task_interrupted"),
        "{events:#?}"
    );
    let records = journal(&run_dir);
    assert_eq!(
        support::started_hosts(&records),
        IN_FLIGHT
            .iter()
            .map(|h| h.to_string())
            .collect::<BTreeSet<_>>(),
        "no queued host started after SIGTERM"
    );
    for host in IN_FLIGHT {
        assert_eq!(
            lines(&lab.root(host).join("count-three")),
            1,
            "{host} finished its tasks"
        );
    }
    for host in QUEUED {
        assert!(!lab.root(host).join("count-one").exists(), "{host} started");
    }
    let last = records.last().unwrap();
    assert_eq!(last["type"], "run_finished");
    assert_eq!(last["outcome"], "interrupted");
    assert_eq!(last["exit_code"], 130);

    let resumed = lab.pony(&["resume", &run]).output().unwrap();
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed));
    for host in lab.host_names() {
        for step in ["one", "slow", "three"] {
            assert_eq!(
                lines(&lab.root(&host).join(format!("count-{step}"))),
                1,
                "{host}: `{step}` ran once over the run and its resume"
            );
        }
    }
}

#[test]
fn a_second_ctrl_c_kills_running_tasks_journals_them_interrupted_and_reports_their_hosts_incomplete(
) {
    let (lab, playbook, gate) = setup();
    let mut child = spawn(&lab, &playbook);
    signal(&child, libc::SIGINT);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut events = read_events_until(&mut stdout, |e| e["event"] == "stopped");
    // The gate stays shut: only the second Ctrl-C can end the held tasks.
    signal(&child, libc::SIGINT);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    events.extend(support::json_lines(&rest));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{events:#?}\n{}", text(&out));

    let interrupted: BTreeSet<String> = events
        .iter()
        .filter(|e| e["event"] == "task_interrupted")
        .map(|e| {
            format!(
                "{}@{}",
                e["task"]["step"].as_str().unwrap(),
                e["task"]["host"].as_str().unwrap()
            )
        })
        .collect();
    let expected: BTreeSet<String> = IN_FLIGHT.iter().map(|h| format!("slow@{h}")).collect();
    assert_eq!(interrupted, expected, "{events:#?}");
    let summary = events.last().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["outcome"], "interrupted");
    assert_eq!(summary["exit_code"], 130);
    let incomplete: BTreeSet<String> = summary["incomplete"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        incomplete,
        IN_FLIGHT.iter().map(|h| h.to_string()).collect(),
        "{summary}"
    );
    let last_outcome = |host: &str| -> Option<String> {
        events
            .iter()
            .rfind(|e| e["event"] == "host_finished" && e["host"] == host)
            .map(|e| e["outcome"].as_str().unwrap().to_string())
    };

    let (run, run_dir) = only_run(&lab.state);
    let records = journal(&run_dir);
    for task in &expected {
        let finish = records
            .iter()
            .rfind(|r| r["type"] == "task_finished" && r["label"] == task.as_str())
            .unwrap_or_else(|| panic!("{task} has no task_finished: {records:#?}"));
        assert_eq!(finish["state"], "interrupted", "{finish}");
    }
    assert_eq!(records.last().unwrap()["outcome"], "interrupted");

    // Every host on disk is fully done, untouched (and never started), or reported
    // incomplete.
    let started = support::started_hosts(&records);
    for host in lab.host_names() {
        let root = lab.root(&host);
        let ran: Vec<bool> = ["one", "slow", "three"]
            .iter()
            .map(|s| root.join(format!("count-{s}")).exists())
            .collect();
        match ran.as_slice() {
            [true, true, true] => assert_eq!(last_outcome(&host).as_deref(), Some("ok"), "{host}"),
            [false, false, false] => {
                assert!(!started.contains(&host), "{host} started yet did nothing");
                assert_ne!(last_outcome(&host).as_deref(), Some("ok"), "{host}");
            }
            _ => {
                assert!(
                    incomplete.contains(&host),
                    "{host} is half done ({ran:?}) and not reported incomplete"
                );
                assert_eq!(last_outcome(&host).as_deref(), Some("incomplete"), "{host}");
            }
        }
    }
    for host in QUEUED {
        assert!(
            !started.contains(host),
            "{host} started after the first Ctrl-C"
        );
    }
    // The killed commands are gone from the hosts, not left running there.
    for host in IN_FLIGHT {
        let sshd = lab.fleet.host(host).pid;
        wait_until("the killed `slow` commands to end on the hosts", || {
            support::descendants(sshd).iter().all(|pid| {
                !std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains("count-slow"))
                    .unwrap_or(false)
            })
        });
    }

    // Resume runs the interrupted tasks again and finishes the run.
    std::fs::write(&gate, "").unwrap();
    let resumed = lab.pony(&["resume", &run]).output().unwrap();
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed));
    for host in lab.host_names() {
        assert_eq!(
            lines(&lab.root(&host).join("count-one")),
            1,
            "{host}: `one` once"
        );
        assert_eq!(lines(&lab.root(&host).join("count-three")), 1, "{host}");
    }
    for host in IN_FLIGHT {
        assert_eq!(
            lines(&lab.root(host).join("count-slow")),
            2,
            "{host}: interrupted `slow` ran again"
        );
    }
}
