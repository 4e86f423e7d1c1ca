//! Live control through the state database (`--state postgres://…`): `pony pause`,
//! `continue`, `abort` and `approve` sent from a process with its own state folder (as
//! from another machine) reach every controller of a run, each answers, and each
//! journals the command with who sent it. On the 12-host sshd lab (regions r1, r2, r3)
//! and a real PostgreSQL started for each test.
//!
//! Steps wait for a marker file the test writes, so each command lands at a known point
//! of the run; nothing here depends on timing.

mod support;

use support::code;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use support::db::{db, pony_db, query_count, server, stored_run};
use support::{deploy_args, lab, text, wait_until, Lab, Reaped};

/// The test's controllers, each killed (by its pid) if the test fails before it ends.
struct Controllers(Vec<Reaped>);

impl Controllers {
    fn spawn(&mut self, mut command: Command) {
        let child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        self.0.push(Reaped::new(child));
    }

    fn all_running(&mut self) {
        for controller in &mut self.0 {
            controller.still_running("a controller");
        }
    }

    /// Waits for every controller to end; each exits 0 and every host of the lab is done.
    fn all_succeed_with_every_host_done(self, lab: &Lab) {
        for output in self.finish() {
            assert_eq!(code(&output), 0, "{}", text(&output));
        }
        for host in lab.host_names() {
            assert!(lab.root(&host).join("done").exists(), "{host} is not done");
        }
    }

    /// Waits for every controller to end and returns their outputs, in spawn order.
    fn finish(self) -> Vec<Output> {
        self.0
            .into_iter()
            .map(|controller| controller.wait_with_output().unwrap())
            .collect()
    }
}

/// `pony ARGS` from the operator's machine: its own state folder, only the database in
/// common with the controllers.
fn from_operator(lab: &Lab, url: &str, args: &[&str]) -> Output {
    pony_db(&lab.path("state-operator"), url, args)
        .output()
        .unwrap()
}

/// A command went through (exit 0) and both controllers answered it with `answer`.
fn answered_by_both(sent: &Output, answer: &str) {
    assert_eq!(code(sent), 0, "{}", text(sent));
    assert_eq!(text(sent).matches(answer).count(), 2, "{}", text(sent));
}

/// The run the first controller stored.
fn run_id(url: &str, controllers: &mut Controllers) -> String {
    stored_run(url, &mut controllers.0[0])
}

/// How many controllers hold a live lease of the run.
fn live_controllers(url: &str, run: &str) -> i64 {
    db(url)
        .query_one(
            "SELECT (SELECT count(DISTINCT controller) FROM region_leases
                      WHERE run_id = $1 AND expires > now())
                  + (SELECT count(*) FROM leases
                      WHERE run_id = $1 AND expires > now() AND holder NOT LIKE 'run:%')",
            &[&run],
        )
        .unwrap()
        .get(0)
}

/// (controller, command, accepted, user, host) of the run's journaled control records.
fn control_records(url: &str, run: &str) -> Vec<(Option<String>, serde_json::Value)> {
    db(url)
        .query(
            "SELECT controller, record::text FROM journal
             WHERE run_id = $1 AND record->>'type' = 'control' ORDER BY seq",
            &[&run],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), serde_json::from_str(r.get::<_, &str>(1)).unwrap()))
        .collect()
}

fn finished_hosts(url: &str, run: &str) -> Vec<String> {
    db(url)
        .query(
            "SELECT split_part(record->>'label', '@', 2) FROM journal
             WHERE run_id = $1 AND record->>'type' = 'task_finished' ORDER BY seq",
            &[&run],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

/// One host per cluster at a time; `work` waits for the file `go`.
fn playbook(lab: &Lab, go: &Path, approve: bool) -> std::path::PathBuf {
    lab.playbook(&format!(
        r#"
name: controlled
strategy:
  max_unavailable: 1
  waves:
    - {{ name: first, regions: [r1, r2], approve: {approve} }}
    - {{ name: second, regions: [r3] }}
steps:
  - {{ name: work, run: "touch {{{{ root }}}}/started; while [ ! -e {go} ]; do sleep 0.02; done; touch {{{{ root }}}}/done" }}
"#,
        go = go.display()
    ))
}

/// Controller A: deploys the run, working on r1 and r3.
fn controller_a(lab: &Lab, url: &str, playbook: &Path, extra: &[&str]) -> Command {
    let mut args = deploy_args(&lab.inventory, playbook);
    args.extend(["--regions", "r1,r3", "--controller", "ctl-a"]);
    args.extend(extra);
    pony_db(&lab.path("state-a"), url, &args)
}

/// Controller A started on `playbook`, waiting (up to 10 minutes, having no terminal) at
/// an `approve:` gate for an answer; returns the test's controllers and A's run.
fn start_a_awaiting_approval(lab: &Lab, url: &str, playbook: &Path) -> (Controllers, String) {
    let mut controllers = Controllers(Vec::new());
    controllers.spawn(controller_a(
        lab,
        url,
        playbook,
        &["--approval-wait", "10m"],
    ));
    let run = run_id(url, &mut controllers);
    (controllers, run)
}

/// Controller B: joins the run for r2; without a terminal it waits at an `approve:`
/// gate for an answer.
fn controller_b(lab: &Lab, url: &str, run: &str) -> Command {
    pony_db(
        &lab.path("state-b"),
        url,
        &[
            "join",
            run,
            "--regions",
            "r2",
            "--controller",
            "ctl-b",
            "--approval-wait",
            "10m",
        ],
    )
}

#[test]
fn pause_continue_and_approve_from_another_machine_reach_every_controller_of_a_split_run() {
    let lab = lab();
    let pg = server();
    let url = pg.url();
    let go = lab.path("go");
    let playbook = playbook(&lab, &go, true);
    // Without a terminal each controller waits at the approve: gate for an answer.
    let (mut controllers, run) = start_a_awaiting_approval(&lab, &url, &playbook);
    controllers.spawn(controller_b(&lab, &url, &run));
    let send = |args: &[&str]| from_operator(&lab, &url, args);

    // One host per cluster of r1 (A) and of r2 (B) is in flight, held by `go`.
    let first_hosts = |region: &str| {
        lab.hosts_in(&[region])
            .into_iter()
            .filter(|h| h.ends_with("-01"))
            .collect::<Vec<_>>()
    };
    let in_flight: Vec<String> = first_hosts("r1")
        .into_iter()
        .chain(first_hosts("r2"))
        .collect();
    wait_until("a host of every cluster of wave first to start", || {
        controllers.all_running();
        in_flight
            .iter()
            .all(|h| lab.root(h).join("started").exists())
    });
    wait_until("both controllers to hold their leases", || {
        live_controllers(&url, &run) == 2
    });

    let paused = send(&["pause", &run]);
    assert_eq!(code(&paused), 0, "{}", text(&paused));
    let said = text(&paused);
    assert!(
        said.contains("controller ctl-a: paused: no new host starts")
            && said.contains("controller ctl-b: paused: no new host starts"),
        "{said}"
    );

    // The hosts in flight finish; no other host starts on either controller.
    std::fs::write(&go, "").unwrap();
    wait_until("the hosts in flight to be journaled finished", || {
        let finished = finished_hosts(&url, &run);
        in_flight.iter().all(|h| finished.contains(h))
    });
    // Each controller answers in order with everything else it does: once both answered
    // this, whatever they did after their hosts finished is on the hosts and journaled.
    let again = send(&["pause", &run]);
    answered_by_both(&again, "already paused by");
    let waiting: Vec<String> = lab
        .hosts_in(&["r1", "r2", "r3"])
        .into_iter()
        .filter(|h| !in_flight.contains(h))
        .collect();
    for host in &waiting {
        assert!(
            !lab.root(host).join("started").exists(),
            "{host} started while the run was paused"
        );
    }
    let status = send(&["status", &run]);
    assert!(text(&status).contains("paused"), "{}", text(&status));

    let continued = send(&["continue", &run]);
    answered_by_both(&continued, "continued: held hosts start");
    let wave_first = lab.hosts_in(&["r1", "r2"]);
    wait_until("wave first to finish on both controllers", || {
        wave_first.iter().all(|h| lab.root(h).join("done").exists())
    });
    let r3 = lab.hosts_in(&["r3"]);
    assert!(
        r3.iter().all(|h| !lab.root(h).join("started").exists()),
        "wave second started before its gate was approved"
    );

    // From any machine, status says what the run waits for and the command that goes on.
    let mut report = serde_json::Value::Null;
    wait_until("status to show the gate waiting for approval", || {
        let status = send(&["status", &run, "--output", "json"]);
        report = serde_json::from_slice(&status.stdout).unwrap_or_default();
        report["waiting"]["reason"] == "approval"
    });
    assert_eq!(report["waiting"]["wave"], "first", "{report}");
    assert_eq!(
        report["waiting"]["next"][0],
        format!("pony approve {run} first").as_str(),
        "{report}"
    );
    let approved = send(&["approve", &run, "first"]);
    assert_eq!(code(&approved), 0, "{}", text(&approved));
    assert!(
        text(&approved).contains("controller ctl-a: ")
            && text(&approved).contains("controller ctl-b: ")
            && !text(&approved).contains("refused"),
        "{}",
        text(&approved)
    );
    let outputs = controllers.finish();
    for output in &outputs {
        assert_eq!(code(output), 0, "{}", text(output));
    }
    assert!(r3.iter().all(|h| lab.root(h).join("done").exists()));

    // Each controller journaled each command once, naming the operator's process.
    let records = control_records(&url, &run);
    for controller in ["ctl-a", "ctl-b"] {
        let commands: Vec<&str> = records
            .iter()
            .filter(|(c, _)| c.as_deref() == Some(controller))
            .map(|(_, r)| r["command"].as_str().unwrap())
            .collect();
        assert_eq!(
            commands,
            ["pause", "pause", "continue", "approve first"],
            "{records:?}"
        );
    }
    for (_, record) in &records {
        assert_eq!(record["accepted"], true, "{record}");
        assert_eq!(record["host"], hostname().as_str(), "{record}");
        assert!(record["pid"].as_u64().unwrap() > 0, "{record}");
    }
    // Nothing is left waiting in the database: each command has both answers.
    let unanswered = query_count(
        &url,
        "SELECT count(*) FROM control c WHERE run_id = $1
               AND (SELECT count(*) FROM control_answers a WHERE a.control_id = c.id) <> 2",
        &[&run],
    );
    assert_eq!(unanswered, 0);
}

#[test]
fn abort_with_rollback_through_the_database_reaches_a_single_controller() {
    let lab = lab();
    let pg = server();
    let url = pg.url();
    let go = lab.path("go");
    let playbook = lab.playbook(&format!(
        r#"
name: controlled
strategy: {{ max_unavailable: 1 }}
steps:
  - name: work
    run: "touch {{{{ root }}}}/started; while [ ! -e {go} ]; do sleep 0.02; done; echo new > {{{{ root }}}}/release"
    rollback: "echo old > {{{{ root }}}}/release"
"#,
        go = go.display()
    ));
    let mut controllers = Controllers(Vec::new());
    controllers.spawn(pony_db(
        &lab.path("state-a"),
        &url,
        &deploy_args(&lab.inventory, &playbook),
    ));
    let run = run_id(&url, &mut controllers);
    let send = |args: &[&str]| from_operator(&lab, &url, args);
    let started = || {
        lab.host_names()
            .into_iter()
            .filter(|h| lab.root(h).join("started").exists())
            .collect::<Vec<_>>()
    };
    wait_until("the first hosts to start", || {
        controllers.all_running();
        !started().is_empty()
    });
    wait_until("the controller to hold its lease", || {
        live_controllers(&url, &run) == 1
    });

    let aborted = send(&["abort", &run, "--rollback"]);
    assert_eq!(code(&aborted), 0, "{}", text(&aborted));
    assert!(
        text(&aborted).contains("rolls back"),
        "one controller's answer is given as it is: {}",
        text(&aborted)
    );
    std::fs::write(&go, "").unwrap();
    let outputs = controllers.finish();
    assert_eq!(code(&outputs[0]), 1, "{}", text(&outputs[0]));
    // Every host that started was rolled back; no other host started.
    let touched = started();
    assert!(!touched.is_empty());
    for host in lab.host_names() {
        let release = std::fs::read_to_string(lab.root(&host).join("release")).ok();
        if touched.contains(&host) {
            assert_eq!(release.as_deref(), Some("old\n"), "{host}");
        } else {
            assert_eq!(release, None, "{host}");
        }
    }
    let records = control_records(&url, &run);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].1["command"], "abort --rollback");

    // The run has ended: a command finds no controller (exit 5) and sends nothing.
    let late = send(&["pause", &run]);
    assert_eq!(code(&late), 5, "{}", text(&late));
    assert!(text(&late).contains("is not running"), "{}", text(&late));
    let sent = query_count(
        &url,
        "SELECT count(*) FROM control WHERE run_id = $1",
        &[&run],
    );
    assert_eq!(sent, 1);
}

#[test]
fn a_controller_that_joins_later_takes_the_approvals_the_run_took() {
    let lab = lab();
    let pg = server();
    let url = pg.url();
    let go = lab.path("go");
    let playbook = playbook(&lab, &go, true);
    let (mut controllers, run) = start_a_awaiting_approval(&lab, &url, &playbook);
    wait_until("A to hold its lease", || live_controllers(&url, &run) == 1);
    let approved = from_operator(&lab, &url, &["approve", &run, "first"]);
    assert_eq!(code(&approved), 0, "{}", text(&approved));
    assert!(
        text(&approved).contains("pre-approved: the gate of wave first passes"),
        "{}",
        text(&approved)
    );
    // B was not there to answer; it takes the approval when it joins, so neither
    // controller waits at the gate and nobody is asked again.
    controllers.spawn(controller_b(&lab, &url, &run));
    std::fs::write(&go, "").unwrap();
    controllers.all_succeed_with_every_host_done(&lab);
}

/// `command` run under `script`, which gives it a terminal: stdin, stdout and stderr are
/// a pseudo-terminal whose input is what the test writes to `script`'s stdin.
fn at_a_terminal(command: &Command, transcript: &Path) -> Command {
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', r"'\''"));
    let line: Vec<String> = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(quote)
        .collect();
    let mut wrapped = Command::new("script");
    wrapped
        .args(["-qfec", &format!("exec {}", line.join(" ")), "/dev/null"])
        .current_dir(command.get_current_dir().unwrap());
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => wrapped.env(name, value),
            None => wrapped.env_remove(name),
        };
    }
    wrapped
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(transcript).unwrap())
        .stderr(Stdio::null());
    wrapped
}

#[test]
fn an_approval_at_one_controllers_terminal_reaches_the_other_controllers() {
    let lab = lab();
    let pg = server();
    let url = pg.url();
    let go = lab.path("go");
    std::fs::write(&go, "").unwrap();
    let playbook = playbook(&lab, &go, true);
    let transcript = lab.path("terminal-a.txt");
    let deploy_a = controller_a(&lab, &url, &playbook, &[]);
    let mut a = Reaped::new(at_a_terminal(&deploy_a, &transcript).spawn().unwrap());
    let mut controllers = Controllers(Vec::new());
    let run = stored_run(&url, &mut a);
    controllers.spawn(controller_b(&lab, &url, &run));
    wait_until("A to ask at its terminal", || {
        std::fs::read_to_string(&transcript)
            .unwrap_or_default()
            .contains("Approve it and continue with the next wave?")
    });
    std::io::Write::write_all(a.stdin.as_mut().unwrap(), b"y\n").unwrap();
    for output in controllers.finish() {
        assert_eq!(code(&output), 0, "B: {}", text(&output));
    }
    let mut status = None;
    wait_until("A to end", || {
        status = a.try_wait().unwrap();
        status.is_some()
    });
    assert!(
        status.unwrap().success(),
        "{}",
        std::fs::read_to_string(&transcript).unwrap()
    );
    assert!(lab
        .host_names()
        .iter()
        .all(|h| lab.root(h).join("done").exists()));
    // B took the approval A's person gave, as a command forwarded by A.
    let records = control_records(&url, &run);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].0.as_deref(), Some("ctl-b"));
    assert_eq!(records[0].1["command"], "approve first");
    let origin: Option<String> = db(&url)
        .query_one("SELECT origin FROM control WHERE run_id = $1", &[&run])
        .unwrap()
        .get(0);
    assert_eq!(origin.as_deref(), Some("ctl-a"));
}

#[test]
fn a_controller_that_joins_a_paused_run_starts_paused_until_continue() {
    let lab = lab();
    let pg = server();
    let url = pg.url();
    let go = lab.path("go");
    let playbook = playbook(&lab, &go, false);
    let mut controllers = Controllers(Vec::new());
    controllers.spawn(controller_a(&lab, &url, &playbook, &[]));
    let run = run_id(&url, &mut controllers);
    wait_until("A to hold its lease", || live_controllers(&url, &run) == 1);
    let send = |args: &[&str]| from_operator(&lab, &url, args);
    let paused = send(&["pause", &run]);
    assert_eq!(code(&paused), 0, "{}", text(&paused));

    // B joins while the run is paused: it journals the operator's pause before anything
    // else, and once it has answered a command of its own, nothing of r2 has started.
    controllers.spawn(controller_b(&lab, &url, &run));
    wait_until("B to hold its lease", || {
        controllers.all_running();
        live_controllers(&url, &run) == 2
    });
    let again = send(&["pause", &run]);
    answered_by_both(&again, "already paused by");
    let r2 = lab.hosts_in(&["r2"]);
    assert!(
        r2.iter().all(|h| !lab.root(h).join("started").exists()),
        "a host of the joining controller started while the run was paused"
    );
    let records = control_records(&url, &run);
    let of_b: Vec<&serde_json::Value> = records
        .iter()
        .filter(|(c, _)| c.as_deref() == Some("ctl-b"))
        .map(|(_, r)| r)
        .collect();
    assert_eq!(of_b.len(), 2, "{records:?}");
    let first_of_a = &records[0].1;
    assert_eq!(of_b[0]["command"], "pause", "{records:?}");
    assert_eq!(of_b[0]["pid"], first_of_a["pid"], "the operator's pause");
    let b_started = query_count(
        &url,
        "SELECT count(*) FROM journal WHERE run_id = $1 AND controller = 'ctl-b'
           AND record->>'type' = 'task_started'",
        &[&run],
    );
    assert_eq!(b_started, 0);

    // One `continue` lets both go on.
    let continued = send(&["continue", &run]);
    answered_by_both(&continued, "continued: held hosts start");
    std::fs::write(&go, "").unwrap();
    controllers.all_succeed_with_every_host_done(&lab);
}

/// When a pause is in force for a joining controller, through the library against the
/// real server: the latest pause or continue up to the last command the joiner has seen
/// decides, and a pause is over once every other controller of the run has ended.
#[test]
fn a_pause_is_in_force_while_another_controller_of_the_run_is_live() {
    use pony::state::pg::{control::pause_in_force, PgStore};
    let pg = server();
    let store = PgStore::open(&pg.url(), std::time::Duration::from_secs(30)).unwrap();
    let mut client = db(&pg.url());
    let in_force = |up_to: i64| {
        pause_in_force(&store, "run-1", up_to, "ctl-b")
            .unwrap()
            .map(|o| o.pid)
    };
    let mut send = |command: &str, pid: i32| -> i64 {
        client
            .query_one(
                "INSERT INTO control (run_id, command, username, machine, pid)
                 VALUES ('run-1', jsonb_build_object('command', $1::text), 'ops', 'm1', $2)
                 RETURNING id",
                &[&command, &pid],
            )
            .unwrap()
            .get(0)
    };
    let lease = |controller: &str, region: &str| {
        db(&pg.url())
            .execute(
                "INSERT INTO region_leases (run_id, region, holder, controller, pid, machine, expires)
                 VALUES ('run-1', $2, 'h', $1, 1, 'm2', now() + interval '1 hour')",
                &[&controller, &region],
            )
            .unwrap();
    };
    assert_eq!(in_force(i64::MAX), None, "never paused");
    let paused = send("pause", 11);
    lease("ctl-b", "r2");
    assert_eq!(in_force(paused), None, "only the joiner itself is live");
    lease("ctl-a", "r1");
    assert_eq!(in_force(paused), Some(11), "paused, and ctl-a is live");
    let continued = send("continue", 12);
    assert_eq!(
        in_force(paused),
        Some(11),
        "a continue after the last command seen comes through the listener"
    );
    assert_eq!(in_force(continued), None, "continued");
    let again = send("pause", 13);
    send("approve", 14);
    assert_eq!(
        in_force(i64::MAX),
        Some(13),
        "other commands change nothing"
    );
    db(&pg.url())
        .execute("DELETE FROM region_leases WHERE controller = 'ctl-a'", &[])
        .unwrap();
    assert_eq!(in_force(again), None, "every other controller has ended");
}
