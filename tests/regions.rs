//! One run split between controller processes by region (`--state postgres://…
//! --regions`), on the 12-host sshd lab (regions r1, r2, r3) and a real PostgreSQL
//! started for each test: wave barriers hold across controllers (compared by journal
//! order, no timing), a `per: run` step runs once and its capture reaches the other
//! controller's hosts, a failure beyond budget under `rollback-all` rolls back the other
//! controller's regions too, and a controller killed mid-run has its regions taken over
//! by `pony resume RUN --regions …` from another state folder. A lost controller (killed,
//! or interrupted with work left) is journaled by the others, which wait for its regions
//! or stop by `strategy.on_controller_loss`.

mod support;

use support::code;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use support::db::{db, expire_leases, pony_db, query_count, server, stored_run};
use support::{deploy_args, lab, pony, text, wait_until, Lab, Reaped};

fn spawn(mut command: Command) -> Reaped {
    Reaped::new(
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// A journaled, once, that B (with r2 and r3) is lost and it waits (the default
/// `on_controller_loss: wait`), and it is still running.
fn assert_a_waits_for_lost_b(url: &str, run: &str, a: &mut Reaped) {
    assert_eq!(
        losses(url, run),
        [(
            Some("ctl-a".to_string()),
            "ctl-b".to_string(),
            vec!["r2".to_string(), "r3".to_string()],
            "wait".to_string()
        )]
    );
    assert!(
        a.try_wait().unwrap().is_none(),
        "A stopped instead of waiting"
    );
}

/// Controller C takes r2 and r3 over with `pony resume RUN --regions` and finishes them.
fn take_over_r2_r3(state: &Path, url: &str, run: &str) {
    let resumed = pony_db(
        state,
        url,
        &["resume", run, "--regions", "r2,r3", "--controller", "ctl-c"],
    )
    .output()
    .unwrap();
    assert_eq!(code(&resumed), 0, "C: {}", text(&resumed));
}

/// (seq, type, label, controller) of every task record of the run, in order.
fn task_rows(url: &str, run: &str) -> Vec<(i64, String, String, Option<String>)> {
    db(url)
        .query(
            "SELECT seq, record->>'type', record->>'label', controller FROM journal
             WHERE run_id = $1 AND record->>'type' IN ('task_started', 'task_finished')
             ORDER BY seq",
            &[&run],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

/// The run's `controller_lost` records: (who journaled it, the lost controller, its
/// regions, the policy applied).
fn losses(url: &str, run: &str) -> Vec<(Option<String>, String, Vec<String>, String)> {
    db(url)
        .query(
            "SELECT controller, record->>'lost_controller', record->>'regions', record->>'policy'
             FROM journal WHERE run_id = $1 AND record->>'type' = 'controller_lost'
             ORDER BY seq",
            &[&run],
        )
        .unwrap()
        .iter()
        .map(|r| {
            let regions: String = r.get(2);
            (
                r.get(0),
                r.get(1),
                serde_json::from_str(&regions).unwrap(),
                r.get(3),
            )
        })
        .collect()
}

/// The JSON events a controller prints (`--output json`), read by a thread as they come.
fn events_of(child: &mut Child) -> Receiver<serde_json::Value> {
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let (send, events) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(stdout).map_while(Result::ok) {
            let event = serde_json::from_str(&line).expect("a JSON event");
            if send.send(event).is_err() {
                return;
            }
        }
    });
    events
}

/// Events up to the first that satisfies `last`, that one included (gives up after a
/// minute, as `wait_until` does, rather than hanging when it never comes).
fn events_until(
    events: &Receiver<serde_json::Value>,
    last: impl Fn(&serde_json::Value) -> bool,
) -> Vec<serde_json::Value> {
    let mut seen = Vec::new();
    loop {
        match events.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(event) => {
                let done = last(&event);
                seen.push(event);
                if done {
                    return seen;
                }
            }
            Err(e) => panic!("gave up waiting for an event ({e}); events so far: {seen:#?}"),
        }
    }
}

/// How many times a counter file of `step` was appended to on `host`.
fn count(lab: &Lab, host: &str, step: &str) -> usize {
    std::fs::read_to_string(lab.root(host).join(format!("count-{step}")))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// `pony status RUN`'s row of `controller`, split into words, if it has one.
fn status_row(state: &Path, url: &str, run: &str, controller: &str) -> Option<Vec<String>> {
    let status = pony_db(state, url, &["status", run]).output().unwrap();
    assert_eq!(code(&status), 0, "{}", text(&status));
    String::from_utf8_lossy(&status.stdout)
        .lines()
        .find(|l| l.starts_with(controller))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
}

fn region_of(label: &str) -> &str {
    let host = label.split_once('@').map_or(label, |(_, h)| h);
    &host[..2]
}

/// Controller A: `pony deploy PLAYBOOK --regions REGIONS --controller ctl-a <extra>`
/// started from the state folder `state-a`; returns it with the id of the run it stored.
fn start_a(
    lab: &Lab,
    url: &str,
    playbook: &Path,
    regions: &str,
    extra: &[&str],
) -> (Reaped, String) {
    let mut args = deploy_args(&lab.inventory, playbook);
    args.extend(["--regions", regions, "--controller", "ctl-a"]);
    args.extend_from_slice(extra);
    let mut a = spawn(pony_db(&lab.path("state-a"), url, &args));
    let run = stored_run(url, &mut a);
    (a, run)
}

/// Controller B: `pony join RUN --regions REGIONS --controller ctl-b <extra>` started
/// from the state folder `state-b`.
fn join_b(lab: &Lab, url: &str, run: &str, regions: &str, extra: &[&str]) -> Reaped {
    let mut args = vec!["join", run, "--regions", regions, "--controller", "ctl-b"];
    args.extend_from_slice(extra);
    spawn(pony_db(&lab.path("state-b"), url, &args))
}

/// (controller, `record->>field`) of the run's journal records of type `kind`, in order.
fn records_by(url: &str, run: &str, kind: &str, field: &str) -> Vec<(Option<String>, String)> {
    db(url)
        .query(
            "SELECT controller, record->>$3::text FROM journal
             WHERE run_id = $1 AND record->>'type' = $2 ORDER BY seq",
            &[&run, &kind, &field],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Asserts that `pony status RUN` shows the lease of each of `controllers` as `lease`
/// (`expired`, `left`).
fn assert_leases(state: &Path, url: &str, run: &str, controllers: &[&str], lease: &str) {
    for controller in controllers {
        let row = status_row(state, url, run, controller).expect("in status");
        assert_eq!(row.last().unwrap(), lease, "{controller}: {row:?}");
    }
}

#[test]
fn waves_wait_for_every_controller_and_a_per_run_step_runs_once() {
    let lab = lab();
    let pg = server();
    let url = pg.url();
    let shared = lab.path("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let gate = lab.path("gate-open");
    // Wave `first` is r1 (controller A) and r2 (controller B, held until the test opens
    // the gate); wave `second` is r3 (controller A): it must wait for B's r2.
    let playbook = lab.playbook(&format!(
        r#"
name: split
strategy:
  max_unavailable: 100%
  waves:
    - {{ name: first, regions: [r1, r2] }}
    - {{ name: second, regions: [r3] }}
steps:
  - {{ name: a, run: "touch {{{{ root }}}}/a-started; if [ {{{{ host.region }}}} = r2 ]; then while [ ! -e {gate} ]; do sleep 0.02; done; fi" }}
  - {{ name: announce, per: run, run: "echo {{{{ host.name }}}} >> {shared}/run.log; echo token-{{{{ host.name }}}}", capture: token }}
  - {{ name: b, needs: [a, announce], run: "echo {{{{ token }}}} > {{{{ root }}}}/token" }}
"#,
        gate = gate.display(),
        shared = shared.display()
    ));
    let (a, run) = start_a(&lab, &url, &playbook, "r1,r3", &[]);

    // A finishes r1 alone; without B nothing of r2 ran, so wave `second` must not start.
    let r1 = lab.hosts_in(&["r1"]);
    wait_until("A's hosts of wave first to finish", || {
        r1.iter().all(|h| lab.root(h).join("token").exists())
    });
    let r3 = lab.hosts_in(&["r3"]);
    assert!(
        r3.iter().all(|h| !lab.root(h).join("a-started").exists()),
        "wave second started before r2 (B's part of wave first) ran"
    );

    let b = join_b(&lab, &url, &run, "!r1,!r3", &["--output", "json"]);
    let r2 = lab.hosts_in(&["r2"]);
    wait_until("B's hosts to start", || {
        r2.iter().all(|h| lab.root(h).join("a-started").exists())
    });
    // A region has one controller: a third one is refused (exit 4), naming the holder.
    let third = pony_db(
        &lab.path("state-c"),
        &url,
        &["join", &run, "--regions", "r2"],
    )
    .output()
    .unwrap();
    assert_eq!(code(&third), 4, "{}", text(&third));
    assert!(
        String::from_utf8_lossy(&third.stderr).contains("region `r2` of run")
            && String::from_utf8_lossy(&third.stderr).contains("held by controller ctl-b"),
        "{}",
        text(&third)
    );
    assert!(
        r3.iter().all(|h| !lab.root(h).join("a-started").exists()),
        "wave second started while B's part of wave first ran"
    );
    std::fs::write(&gate, "").unwrap();
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert_eq!(code(&a), 0, "A: {}", text(&a));
    assert_eq!(code(&b), 0, "B: {}", text(&b));
    // B's events carry its name, and only its own hosts' tasks are in them.
    let events = support::json_lines(&String::from_utf8_lossy(&b.stdout));
    assert!(
        events.iter().all(|e| e["controller"] == "ctl-b"),
        "{events:?}"
    );
    let task_hosts: std::collections::BTreeSet<&str> = events
        .iter()
        .filter(|e| e["event"] == "task_finished")
        .filter_map(|e| e["task"]["host"].as_str())
        .collect();
    assert_eq!(
        task_hosts,
        r2.iter().map(String::as_str).collect(),
        "{events:?}"
    );

    // Every wave-second start comes after every wave-first end, across controllers.
    let rows = task_rows(&url, &run);
    let last_first_end = rows
        .iter()
        .filter(|r| r.1 == "task_finished" && ["r1", "r2"].contains(&region_of(&r.2)))
        .map(|r| r.0)
        .max()
        .unwrap();
    let second_starts: Vec<i64> = rows
        .iter()
        .filter(|r| r.1 == "task_started" && region_of(&r.2) == "r3")
        .map(|r| r.0)
        .collect();
    assert_eq!(second_starts.len(), 4 * 2, "{rows:?}");
    assert!(
        second_starts.iter().all(|&s| s > last_first_end),
        "{rows:?}"
    );
    // Each controller journaled its own regions' tasks, once.
    for (_, _, label, controller) in &rows {
        let expected = if region_of(label) == "r2" {
            "ctl-b"
        } else {
            "ctl-a"
        };
        assert_eq!(controller.as_deref(), Some(expected), "{label}");
    }
    let finished = rows.iter().filter(|r| r.1 == "task_finished").count();
    assert_eq!(finished, 12 * 2 + 1, "{rows:?}");

    // `per: run` ran once, on A (its host is r1-c1-01), and B's hosts got its capture.
    assert_eq!(
        std::fs::read_to_string(shared.join("run.log")).unwrap(),
        "r1-c1-01\n"
    );
    for host in lab.host_names() {
        assert_eq!(
            std::fs::read_to_string(lab.root(&host).join("token")).unwrap(),
            "token-r1-c1-01\n",
            "{host}"
        );
    }
    // The last controller out released the inventory.
    let leases = query_count(
        &url,
        "SELECT (SELECT count(*) FROM leases) + (SELECT count(*) FROM region_leases)",
        &[],
    );
    assert_eq!(leases, 0);
}

#[test]
fn a_failure_beyond_budget_under_rollback_all_rolls_back_the_other_controllers_regions() {
    let lab = lab();
    let pg = server();
    let url = pg.url();
    let gate = lab.path("gate-open");
    // r1-c1-01 (controller A) fails once the test opens the gate, after every host of
    // controller B staged.
    std::fs::write(lab.root("r1-c1-01").join("fail-here"), "").unwrap();
    let playbook = lab.playbook(&format!(
        r#"
name: all-or-nothing
strategy:
  max_unavailable: 100%
  max_failures: 0
  on_failure: rollback-all
steps:
  - {{ name: stage, run: "touch {{{{ root }}}}/staged", rollback: "rm -f {{{{ root }}}}/staged; touch {{{{ root }}}}/rolled-back" }}
  - {{ name: check, needs: [stage], run: "if [ -e {{{{ root }}}}/fail-here ]; then while [ ! -e {gate} ]; do sleep 0.02; done; exit 1; fi" }}
"#,
        gate = gate.display()
    ));
    let (a, run) = start_a(&lab, &url, &playbook, "r1", &[]);
    let b = join_b(&lab, &url, &run, "!r1", &[]);
    let others = lab.hosts_in(&["r2", "r3"]);
    wait_until("B's hosts to stage", || {
        others.iter().all(|h| lab.root(h).join("staged").exists())
    });
    std::fs::write(&gate, "").unwrap();
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    // Exit 1 (failed, rollback complete), as README and docs/scale.md document: every
    // host below is rolled back. Each controller's verdict counts its own regions; A saw
    // B's hosts' forward tasks through the database but not their rollbacks, and used to
    // call two of them incomplete (exit 3).
    assert_eq!(code(&a), 1, "A: {}", text(&a));
    assert_eq!(code(&b), 1, "B: {}", text(&b));
    for (name, out) in [("A", &a), ("B", &b)] {
        assert!(
            text(out).contains("4 hosts, 0 ok, 1 failed (rolled back), 4 rolled back")
                || text(out).contains("8 hosts, 0 ok, 0 failed, 8 rolled back"),
            "{name}'s summary counts its own regions: {}",
            text(out)
        );
    }

    // Every host of both controllers was rolled back, each by its own controller.
    for host in lab.host_names() {
        let root = lab.root(&host);
        assert!(
            root.join("rolled-back").exists() && !root.join("staged").exists(),
            "{host} was not rolled back\nA: {}\nB: {}",
            text(&a),
            text(&b)
        );
    }
    let rollbacks = records_by(&url, &run, "rollback_finished", "label");
    assert_eq!(rollbacks.len(), 12, "{rollbacks:?}");
    for (controller, label) in &rollbacks {
        let expected = if region_of(label) == "r1" {
            "ctl-a"
        } else {
            "ctl-b"
        };
        assert_eq!(controller.as_deref(), Some(expected), "{label}");
    }
}

#[test]
fn a_killed_controllers_regions_are_taken_over_by_resume_with_regions() {
    let lab = lab();
    let pg = server();
    let url = pg.url();
    let gate = lab.path("gate-open");
    let playbook = lab.playbook(&format!(
        r#"
name: counted
strategy: {{ max_unavailable: 100% }}
steps:
  - {{ name: one, run: "echo one >> {{{{ root }}}}/count-one" }}
  - {{ name: slow, needs: [one], run: "echo slow >> {{{{ root }}}}/count-slow; touch {{{{ root }}}}/slow-started; if [ {{{{ host.region }}}} != r1 ]; then while [ ! -e {gate} ]; do sleep 0.02; done; fi" }}
  - {{ name: three, needs: [slow], run: "echo three >> {{{{ root }}}}/count-three" }}
"#,
        gate = gate.display()
    ));
    let state_c = lab.path("state-c");
    let (mut a, run) = start_a(&lab, &url, &playbook, "r1", &[]);
    let mut b = join_b(&lab, &url, &run, "!r1", &[]);
    let others = lab.hosts_in(&["r2", "r3"]);
    wait_until("B's `slow` tasks to start", || {
        others
            .iter()
            .all(|h| lab.root(h).join("slow-started").exists())
    });
    let b_pid = b.id();
    b.kill().unwrap(); // SIGKILL: B's region leases are left to expire
    b.wait().unwrap();
    std::fs::write(&gate, "").unwrap();

    // `pony status` (from any state folder) shows the run per controller; once B's
    // region leases expired, another machine takes its regions over. Until then B reads
    // live; its expiry is brought forward in SQL (what the database's clock does a lease
    // after B's last renewal), so that nothing waits out the lease.
    let status_line = |controller: &str| status_row(&state_c, &url, &run, controller);
    let before = status_line("ctl-b").expect("ctl-b in status");
    assert_eq!(
        (before[1].as_str(), before.last().unwrap().as_str()),
        ("r2,r3", "live")
    );
    assert_eq!(
        expire_leases(&url, "region_leases", "controller = 'ctl-b'"),
        2
    );
    let b_row = status_line("ctl-b").expect("ctl-b in status");
    assert_eq!(
        (b_row[1].as_str(), b_row.last().unwrap().as_str()),
        ("r2,r3", "expired")
    );
    assert_eq!(status_line("ctl-a").unwrap()[1], "r1");
    let status = pony_db(&state_c, &url, &["status", &run]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&status.stdout).contains(&format!(
            "controller ctl-b is lost (it died, was cut off, or stopped with work left): take its regions over with `pony resume {run} --regions r2,r3`"
        )),
        "{}",
        text(&status)
    );
    // A (`on_controller_loss: wait`, the default) goes on waiting for r2 and r3, and says
    // so once: journaled, naming the lost controller and its regions.
    wait_until("A to journal the loss of B", || {
        !losses(&url, &run).is_empty()
    });
    assert_a_waits_for_lost_b(&url, &run, &mut a);
    take_over_r2_r3(&state_c, &url, &run);
    let a = a.wait_with_output().unwrap();
    assert_eq!(code(&a), 0, "A: {}", text(&a));
    // Told once, with the command that takes the regions over; after the takeover the
    // regions are live again: no second loss.
    let told = format!(
        "controller ctl-b (pid {b_pid} on {}) is lost: its lease on r2, r3 expired; waiting for its regions (on_controller_loss: wait); take them over with `pony resume {run} --regions r2,r3`",
        pony::process::hostname()
    );
    assert_eq!(text(&a).matches(&told).count(), 1, "{}", text(&a));
    assert_eq!(losses(&url, &run).len(), 1);

    for host in lab.host_names() {
        let count = |step: &str| count(&lab, &host, step);
        // `one` had succeeded before the kill: never again; `slow` was running: again.
        assert_eq!(count("one"), 1, "{host}");
        assert_eq!(count("three"), 1, "{host}");
        let slow = if host.starts_with("r1") { 1 } else { 2 };
        assert_eq!(count("slow"), slow, "{host}");
    }
    // Nothing lost: B's records are in the journal, and every task finished once
    // successfully, r2 and r3's last ones by C.
    let rows = task_rows(&url, &run);
    let by = |controller: &str| {
        rows.iter()
            .filter(|r| r.3.as_deref() == Some(controller))
            .count()
    };
    assert!(by("ctl-b") >= 8 * 3, "{rows:?}");
    assert!(by("ctl-c") > 0, "{rows:?}");
    let succeeded = query_count(
        &url,
        "SELECT count(DISTINCT record->>'label') FROM journal WHERE run_id = $1
               AND record->>'type' = 'task_finished' AND record->>'state' = 'succeeded'",
        &[&run],
    );
    assert_eq!(succeeded, 12 * 3);
    let c = status_line("ctl-c").expect("ctl-c in status");
    assert_eq!(
        (c[1].as_str(), c.last().unwrap().as_str()),
        ("r2,r3", "left")
    );
    let b = status_line("ctl-b").unwrap();
    assert_eq!(b[1], "r2,r3");
    let a = status_line("ctl-a").unwrap();
    // A journaled its 4 hosts × 3 tasks, started and finished, none failed.
    assert_eq!(a[1..5], ["r1", "12", "12", "0"], "{a:?}");
}

#[test]
fn bad_regions_are_refused_before_anything_runs() {
    let lab = lab();
    let pg = server();
    let url = pg.url();
    let playbook = lab
        .playbook("name: touch\nsteps:\n  - { name: touch, run: \"touch {{ root }}/touched\" }\n");
    let state = lab.path("state-x");
    let untouched = |lab: &Lab| {
        lab.host_names()
            .iter()
            .all(|h| !lab.root(h).join("touched").exists())
    };
    // No region matches: exit 2, naming the option, the inventory and its regions.
    let mut args = deploy_args(&lab.inventory, &playbook);
    args.extend(["--regions", "cn-*"]);
    let none = pony_db(&state, &url, &args).output().unwrap();
    assert_eq!(code(&none), 2, "{}", text(&none));
    let stderr = String::from_utf8_lossy(&none.stderr);
    assert!(
        stderr.contains("--regions")
            && stderr.contains("`cn-*` names no region of inventory `lab`")
            && stderr.contains("regions are: r1, r2, r3"),
        "{stderr}"
    );
    // Without a database there is nothing to share the run through: exit 2.
    let mut local = deploy_args(&lab.inventory, &playbook);
    local.extend(["--regions", "r1"]);
    let no_db = pony(&state, &local).output().unwrap();
    assert_eq!(code(&no_db), 2, "{}", text(&no_db));
    assert!(
        String::from_utf8_lossy(&no_db.stderr).contains("--regions needs --state postgres://"),
        "{}",
        text(&no_db)
    );
    assert!(untouched(&lab));
    let runs = query_count(&url, "SELECT count(*) FROM runs", &[]);
    assert_eq!(runs, 0, "a refused deploy stores no run");

    // `pony join` without --regions: exit 2 with the fix. (The first controller takes
    // every region, so its run ends without anyone joining.)
    let mut args = deploy_args(&lab.inventory, &playbook);
    args.extend(["--regions", "r*", "--controller", "ctl-a"]);
    let first = pony_db(&state, &url, &args).output().unwrap();
    assert_eq!(code(&first), 0, "{}", text(&first));
    let run: String = db(&url)
        .query_one("SELECT run_id FROM runs", &[])
        .unwrap()
        .get(0);
    let join = pony_db(&lab.path("state-y"), &url, &["join", &run])
        .output()
        .unwrap();
    assert_eq!(code(&join), 2, "{}", text(&join));
    assert!(
        String::from_utf8_lossy(&join.stderr).contains("give --regions GLOBS"),
        "{}",
        text(&join)
    );
    // A run with one live controller is not split from outside: joining it is refused.
    let gate = lab.path("gate-open");
    let held = lab.playbook(&format!(
        "name: held\nsteps:\n  - {{ name: hold, run: \"touch {{{{ root }}}}/holding; while [ ! -e {} ]; do sleep 0.02; done\" }}\n",
        gate.display()
    ));
    let single = spawn(pony_db(
        &lab.path("state-z"),
        &url,
        &deploy_args(&lab.inventory, &held),
    ));
    let newest = |url: &str| -> String {
        db(url)
            .query_one("SELECT run_id FROM runs ORDER BY created DESC LIMIT 1", &[])
            .unwrap()
            .get(0)
    };
    wait_until("the single controller to start", || {
        lab.host_names()
            .iter()
            .any(|h| lab.root(h).join("holding").exists())
    });
    let single_run = newest(&url);
    assert_ne!(single_run, run);
    let refused = pony_db(
        &lab.path("state-y"),
        &url,
        &["join", &single_run, "--regions", "r2"],
    )
    .output()
    .unwrap();
    std::fs::write(&gate, "").unwrap();
    let single = single.wait_with_output().unwrap();
    assert_eq!(code(&refused), 4, "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("is locked by run"),
        "{}",
        text(&refused)
    );
    assert_eq!(
        code(&single),
        0,
        "the single controller was not disturbed: {}",
        text(&single)
    );

    // `pony rollback` works on the whole run.
    let rollback = pony_db(
        &lab.path("state-y"),
        &url,
        &["rollback", &run, "--regions", "r1", "--yes"],
    )
    .output()
    .unwrap();
    assert_eq!(code(&rollback), 2, "{}", text(&rollback));
    assert!(
        String::from_utf8_lossy(&rollback.stderr).contains("not on regions"),
        "{}",
        text(&rollback)
    );
}

#[test]
fn a_wave_that_fails_on_one_controller_stops_the_next_wave_on_the_other() {
    let lab = lab();
    let pg = server();
    let url = pg.url();
    // B's host r2-c1-01 fails in wave `first`, beyond max_failures 0: wave `second` (r3,
    // controller A) never starts, on either controller.
    std::fs::write(lab.root("r2-c1-01").join("fail-here"), "").unwrap();
    let playbook = lab.playbook(
        r#"
name: halting
strategy:
  max_unavailable: 100%
  max_failures: 0
  on_failure: halt
  waves:
    - { name: first, regions: [r1, r2] }
    - { name: second, regions: [r3] }
steps:
  - { name: a, run: "touch {{ root }}/a-started; test ! -e {{ root }}/fail-here" }
"#,
    );
    let (a, run) = start_a(&lab, &url, &playbook, "r1,r3", &[]);
    let b = join_b(&lab, &url, &run, "r2", &[]);
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    // Both halted (exit 3): B's host failed beyond the budget under `halt`, and A's
    // wave `second` never started. A counts its own hosts only: r1's four ok, r3's four
    // not run (it once also counted B's hosts as it had seen them).
    assert_eq!(code(&a), 3, "A: {}", text(&a));
    assert_eq!(code(&b), 3, "B: {}", text(&b));
    assert!(
        text(&a).contains("8 hosts, 4 ok, 0 failed, 0 rolled back, 4 not run (exit 3)"),
        "A: {}",
        text(&a)
    );
    for host in lab.hosts_in(&["r3"]) {
        assert!(
            !lab.root(&host).join("a-started").exists(),
            "{host} of wave second started after wave first failed on the other controller"
        );
    }
    let rows = task_rows(&url, &run);
    assert!(rows.iter().all(|r| region_of(&r.2) != "r3"), "{rows:?}");
    // Each controller journaled its end as halted (exit 3).
    let mut ends = records_by(&url, &run, "run_finished", "exit_code");
    ends.sort();
    assert_eq!(
        ends,
        [
            (Some("ctl-a".to_string()), "3".to_string()),
            (Some("ctl-b".to_string()), "3".to_string())
        ]
    );
    // Each left its regions expired (halted with work left), yet neither is told the
    // other is lost: B's failure, journaled before its leases expired, stopped A first.
    assert_eq!(losses(&url, &run), []);
    assert_leases(
        &lab.path("state-c"),
        &url,
        &run,
        &["ctl-a", "ctl-b"],
        "expired",
    );
}

#[test]
fn under_on_controller_loss_stop_the_others_stop_when_a_controller_is_killed_and_resume_finishes() {
    let lab = lab();
    let pg = server();
    let url = pg.url();
    let (gate_a, gate_b) = (lab.path("gate-a"), lab.path("gate-b"));
    // One host per cluster at a time: the -01 hosts run `one`, held by the gates, while
    // the -02 hosts queue. Wave `first` is r1 (A) and r2 (B); wave `second` is r3 (A).
    let playbook = lab.playbook(&format!(
        r#"
name: stopping
strategy:
  max_unavailable: 1
  on_controller_loss: stop
  waves:
    - {{ name: first, regions: [r1, r2] }}
    - {{ name: second, regions: [r3] }}
steps:
  - {{ name: one, run: "echo one >> {{{{ root }}}}/count-one; if [ {{{{ host.region }}}} = r1 ]; then g={gate_a}; else g={gate_b}; fi; while [ ! -e $g ]; do sleep 0.02; done" }}
  - {{ name: two, needs: [one], run: "echo two >> {{{{ root }}}}/count-two" }}
"#,
        gate_a = gate_a.display(),
        gate_b = gate_b.display()
    ));
    let state_c = lab.path("state-c");
    let (mut a, run) = start_a(&lab, &url, &playbook, "r1,r3", &["--output", "json"]);
    let events = events_of(&mut a);
    let mut b = join_b(&lab, &url, &run, "r2", &[]);
    let in_flight = ["r1-c1-01", "r1-c2-01", "r2-c1-01", "r2-c2-01"];
    wait_until("the -01 hosts of both controllers to run `one`", || {
        in_flight.iter().all(|h| count(&lab, h, "one") == 1)
    });
    b.kill().unwrap(); // SIGKILL: B's region leases are left to expire
    b.wait().unwrap();
    std::fs::write(&gate_b, "").unwrap(); // B's orphaned commands end
                                          // B's expiry, brought forward in SQL (what the database's clock does a lease later).
    assert_eq!(
        expire_leases(&url, "region_leases", "controller = 'ctl-b'"),
        1
    );

    // Once B's leases expired, A stops as on a first Ctrl-C, saying why.
    let seen = events_until(&events, |e| e["event"] == "stopped");
    let lost = seen
        .iter()
        .find(|e| e["event"] == "controller_lost")
        .unwrap_or_else(|| panic!("no controller_lost before stopping: {seen:#?}"));
    assert_eq!(
        (
            &lost["controller"],
            &lost["lost_controller"],
            &lost["regions"],
            &lost["policy"]
        ),
        (
            &serde_json::json!("ctl-a"),
            &serde_json::json!("ctl-b"),
            &serde_json::json!(["r2"]),
            &serde_json::json!("stop")
        ),
        "{lost}"
    );
    assert_eq!(
        lost["resume"],
        format!("pony resume {run} --regions r2"),
        "{lost}"
    );
    let reason = seen.last().unwrap()["reason"].as_str().unwrap().to_string();
    assert!(
        reason.contains("controller ctl-b lost its regions r2"),
        "{reason}"
    );
    // Its hosts in flight finish all their tasks; no other host starts.
    std::fs::write(&gate_a, "").unwrap();
    let a = a.wait_with_output().unwrap();
    assert_eq!(code(&a), 130, "A: {}", text(&a));
    assert_eq!(
        losses(&url, &run),
        [(
            Some("ctl-a".to_string()),
            "ctl-b".to_string(),
            vec!["r2".to_string()],
            "stop".to_string()
        )]
    );
    for host in ["r1-c1-01", "r1-c2-01"] {
        assert_eq!(count(&lab, host, "two"), 1, "{host} finished its tasks");
    }
    for host in ["r1-c1-02", "r1-c2-02"]
        .into_iter()
        .map(String::from)
        .chain(lab.hosts_in(&["r3"]))
    {
        assert_eq!(
            count(&lab, &host, "one"),
            0,
            "{host} started after the stop"
        );
    }
    let ends = records_by(&url, &run, "run_finished", "outcome");
    assert_eq!(
        ends,
        [(Some("ctl-a".to_string()), "interrupted".to_string())]
    );
    // A left with work left: its lease reads expired, as B's does.
    assert_leases(&state_c, &url, &run, &["ctl-a", "ctl-b"], "expired");

    // One `pony resume RUN` takes the whole run over and finishes it: tasks the journal
    // had as succeeded do not run again.
    let resumed = pony_db(&state_c, &url, &["resume", &run]).output().unwrap();
    assert_eq!(code(&resumed), 0, "resume: {}", text(&resumed));
    for host in lab.host_names() {
        let killed = ["r2-c1-01", "r2-c2-01"].contains(&host.as_str());
        assert_eq!(
            count(&lab, &host, "one"),
            if killed { 2 } else { 1 },
            "{host}"
        );
        assert_eq!(count(&lab, &host, "two"), 1, "{host}");
    }
    // The resume took every region: no controller's lease is left expired.
    assert_leases(&state_c, &url, &run, &["ctl-a", "ctl-b"], "left");
}

#[test]
fn an_interrupted_controller_leaves_its_regions_expired_and_resume_with_regions_takes_them() {
    let lab = lab();
    let pg = server();
    let url = pg.url();
    let gate = lab.path("gate-b");
    // B's -01 hosts run `one` until the gate opens; its -02 hosts queue behind them. The
    // playbook says `stop`; A's command line overrides it with `wait`.
    let playbook = lab.playbook(&format!(
        r#"
name: interrupted
strategy: {{ max_unavailable: 1, on_controller_loss: stop }}
steps:
  - {{ name: one, run: "echo one >> {{{{ root }}}}/count-one; if [ {{{{ host.region }}}} != r1 ]; then while [ ! -e {gate} ]; do sleep 0.02; done; fi" }}
  - {{ name: two, needs: [one], run: "echo two >> {{{{ root }}}}/count-two" }}
"#,
        gate = gate.display()
    ));
    let state_c = lab.path("state-c");
    let (mut a, run) = start_a(
        &lab,
        &url,
        &playbook,
        "r1",
        &["--on-controller-loss", "wait"],
    );
    let mut b = join_b(&lab, &url, &run, "!r1", &["--output", "json"]);
    let events = events_of(&mut b);
    let b_in_flight = ["r2-c1-01", "r2-c2-01", "r3-c1-01", "r3-c2-01"];
    wait_until("B's -01 hosts to run `one`", || {
        b_in_flight.iter().all(|h| count(&lab, h, "one") == 1)
    });
    // SIGINT, as Ctrl-C: B drains and ends interrupted, with its -02 hosts not started.
    assert_eq!(unsafe { libc::kill(b.id() as i32, libc::SIGINT) }, 0);
    let seen = events_until(&events, |e| e["event"] == "stopped");
    assert!(
        seen.last().unwrap()["reason"]
            .as_str()
            .unwrap()
            .starts_with("interrupted"),
        "{seen:#?}"
    );
    std::fs::write(&gate, "").unwrap();
    let b = b.wait_with_output().unwrap();
    assert_eq!(code(&b), 130, "B: {}", text(&b));
    for host in b_in_flight {
        assert_eq!(count(&lab, host, "two"), 1, "{host} finished its tasks");
    }
    let b_queued = ["r2-c1-02", "r2-c2-02", "r3-c1-02", "r3-c2-02"];
    for host in b_queued {
        assert_eq!(count(&lab, host, "one"), 0, "{host} started after Ctrl-C");
    }

    // B's region leases are expired at once, not deleted: `pony status` shows it lost,
    // and A (waiting) journals the loss.
    let row = status_row(&state_c, &url, &run, "ctl-b").expect("ctl-b in status");
    assert_eq!(
        (row[1].as_str(), row.last().unwrap().as_str()),
        ("r2,r3", "expired")
    );
    let expired = query_count(
        &url,
        "SELECT count(*) FROM region_leases
             WHERE run_id = $1 AND controller = 'ctl-b' AND expires <= now()",
        &[&run],
    );
    assert_eq!(expired, 2);
    wait_until("A to journal the loss of B", || {
        !losses(&url, &run).is_empty()
    });
    assert_a_waits_for_lost_b(&url, &run, &mut a);

    // `resume --regions` takes them over at once (no lease to wait out), and both finish.
    take_over_r2_r3(&state_c, &url, &run);
    let a = a.wait_with_output().unwrap();
    assert_eq!(code(&a), 0, "A: {}", text(&a));
    for host in lab.host_names() {
        assert_eq!(count(&lab, &host, "one"), 1, "{host}");
        assert_eq!(count(&lab, &host, "two"), 1, "{host}");
    }
    assert_leases(&state_c, &url, &run, &["ctl-a", "ctl-b", "ctl-c"], "left");
}
