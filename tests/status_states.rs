//! `pony status` (text and `--output json`) names what a running run is doing, read from
//! its journal by another process: checking a wave before its approval question, waiting
//! for approval, paused by a person at that gate, waiting for a change window (zone,
//! opening time), soaking until a time, stopping with an abort or a rollback in progress.
//! A run that stopped at its approval gate names the wave, and `pony abort` of it offers
//! both `pony resume` and `pony rollback`; while that rollback runs, status says so.
//!
//! Local hosts (`TINY_INVENTORY`: h1, h2 in r1; h3, h4 in r2) hold the run in each state
//! with marker files: a command touches a file when it starts and loops until the test
//! writes another. The test waits on those files and on journal records, never on time.

mod support;

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use support::{only_run, pony, text, wait_until, write_plan, Reaped, TINY_INVENTORY};

/// A run folder's place, its files and the deploy's output files.
struct Run {
    dir: tempfile::TempDir,
    state: PathBuf,
    inventory: PathBuf,
    playbook: PathBuf,
}

impl Run {
    fn new(playbook: &str) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let (inventory, playbook) = write_plan(dir.path(), TINY_INVENTORY, playbook);
        Run {
            dir,
            state,
            inventory,
            playbook,
        }
    }

    /// `pony deploy … --yes <extra>`, its output in files (no pipe to fill).
    fn spawn(&self, extra: &[&str]) -> Reaped {
        let mut args = support::deploy_args(&self.inventory, &self.playbook);
        args.extend_from_slice(extra);
        let out = std::fs::File::create(self.dir.path().join("deploy.out")).unwrap();
        let err = std::fs::File::create(self.dir.path().join("deploy.err")).unwrap();
        Reaped::new(
            pony(&self.state, &args)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .unwrap(),
        )
    }

    fn deploy_output(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap();
        format!("{}{}", read("deploy.out"), read("deploy.err"))
    }

    /// A local host's working folder (marker files go there).
    fn host(&self, host: &str) -> PathBuf {
        self.state.join("hosts").join(host)
    }

    fn mark(&self, host: &str, file: &str) {
        std::fs::create_dir_all(self.host(host)).unwrap();
        std::fs::write(self.host(host).join(file), "").unwrap();
    }

    fn id(&self) -> String {
        wait_until("the run folder", || {
            std::fs::read_dir(self.state.join("runs"))
                .map(|mut d| d.next().is_some())
                .unwrap_or(false)
        });
        only_run(&self.state).0
    }

    /// The journal's whole lines so far (the controller may be writing the next one).
    fn records(&self) -> Vec<Value> {
        let path = only_run(&self.state).1.join("journal.jsonl");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let whole = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
        support::json_lines(whole)
    }

    /// Waits for a journal record that `wanted` picks, and returns it.
    fn record(&self, what: &str, deploy: &mut Reaped, wanted: impl Fn(&Value) -> bool) -> Value {
        let mut found = None;
        wait_until(what, || {
            deploy.still_running(what);
            found = self.records().into_iter().find(|r| wanted(r));
            found.is_some()
        });
        found.unwrap()
    }

    fn pony(&self, args: &[&str]) -> Output {
        pony(&self.state, args).output().unwrap()
    }

    /// `pony status RUN` as text and as JSON, both exit 0.
    fn status(&self, id: &str) -> (String, Value) {
        let human = self.pony(&["status", id]);
        assert_eq!(human.status.code(), Some(0), "{}", text(&human));
        let json = self.pony(&["status", id, "--output", "json"]);
        assert_eq!(json.status.code(), Some(0), "{}", text(&json));
        let report = serde_json::from_slice(&json.stdout).unwrap();
        (String::from_utf8(human.stdout).unwrap(), report)
    }

    fn ok(&self, args: &[&str]) {
        let output = self.pony(args);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {}", text(&output));
    }
}

/// The `state:` line of `pony status`.
fn state_line(status: &str) -> &str {
    status
        .lines()
        .find(|l| l.starts_with("state: "))
        .unwrap_or_else(|| panic!("no state line:\n{status}"))
}

fn next(report: &Value) -> Vec<String> {
    report["waiting"]["next"]
        .as_array()
        .unwrap_or_else(|| panic!("no waiting.next: {report}"))
        .iter()
        // Hints carry the state options the command was given.
        .map(|c| {
            c.as_str()
                .unwrap()
                .split(" --state-dir ")
                .next()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn started(records: &[Value], host: &str) -> bool {
    records.iter().any(|r| {
        r["type"] == "task_started" && r["label"].as_str().unwrap().ends_with(&format!("@{host}"))
    })
}

/// `HH:MM` this many hours from now, in UTC.
fn utc_in(hours: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::hours(hours))
        .format("%H:%M")
        .to_string()
}

#[test]
fn checks_before_approval_then_approval_then_paused_at_the_gate_then_a_closed_window() {
    // The window opens two hours from now: closed for the whole test.
    let (opens, closes) = (utc_in(2), utc_in(3));
    let run = Run::new(&format!(
        r#"
name: gates
strategy:
  waves:
    - name: first
      regions: [r1]
      approve: true
      verify:
        - {{ name: ready, run: "touch checking; while [ ! -e checks-go ]; do sleep 0.02; done" }}
    - {{ name: second, regions: ["*"], window: "{opens}-{closes} UTC" }}
steps:
  - {{ name: work, run: "echo work >> ran" }}
"#
    ));
    let mut deploy = run.spawn(&["--approval-wait", "1h"]);
    let id = run.id();

    // The gate's checks run before its question.
    run.record("the checks before the question", &mut deploy, |r| {
        r["type"] == "gate_waiting" && r["reason"] == "verify" && r["wave"] == "first"
    });
    wait_until("the check on h1", || {
        run.host("h1").join("checking").exists()
    });
    let (status, report) = run.status(&id);
    assert!(
        state_line(&status)
            .starts_with("state: checking first before approval (its verify checks) (pid "),
        "{status}"
    );
    assert!(!status.contains("waiting: nothing"), "{status}");
    assert!(
        status.contains(
            "waiting: wave first's `verify:` checks run before its gate asks for approval"
        ),
        "{status}"
    );
    assert_eq!(report["state"], "running", "{report}");
    assert_eq!(report["activity"]["state"], "checks", "{report}");
    assert_eq!(report["activity"]["wave"], "first", "{report}");
    assert_eq!(report["waiting"]["reason"], "checks", "{report}");

    // The checks pass: the question waits for a person.
    for host in ["h1", "h2"] {
        run.mark(host, "checks-go");
    }
    run.record("the approval question", &mut deploy, |r| {
        r["type"] == "gate_waiting" && r["reason"] == "approve" && r["wave"] == "first"
    });
    let (status, report) = run.status(&id);
    assert!(
        state_line(&status).starts_with("state: waiting for approval of first (pid "),
        "{status}"
    );
    assert_eq!(report["activity"]["state"], "approval", "{report}");
    assert_eq!(report["activity"]["wave"], "first", "{report}");
    assert_eq!(report["waiting"]["reason"], "approval", "{report}");
    assert!(
        next(&report).contains(&format!("pony approve {id} first")),
        "{report}"
    );

    // Paused at that gate: both are said, and both ways on.
    run.ok(&["pause", &id]);
    let (status, report) = run.status(&id);
    let state = state_line(&status);
    assert!(
        state.starts_with("state: paused by ")
            && state.contains(", and waiting for approval of first (pid "),
        "{status}"
    );
    assert_eq!(report["activity"]["state"], "paused", "{report}");
    assert_eq!(report["activity"]["gate"], "first", "{report}");
    assert!(
        report["activity"]["by"].as_str().unwrap().contains("(pid "),
        "{report}"
    );
    assert_eq!(report["waiting"]["reason"], "continue", "{report}");
    let commands = next(&report);
    for command in [
        format!("pony continue {id}"),
        format!("pony approve {id} first"),
        format!("pony abort {id}"),
    ] {
        assert!(commands.contains(&command), "{command} in {commands:?}");
    }

    // Approved: wave second's hosts wait for their window.
    run.ok(&["continue", &id]);
    run.ok(&["approve", &id, "first"]);
    let window = run.record("the window's wait", &mut deploy, |r| {
        r["type"] == "window_waiting" && r["wave"] == "second"
    });
    assert_eq!(window["zone"], "UTC", "{window}");
    let (status, report) = run.status(&id);
    assert!(
        state_line(&status).starts_with(&format!(
            "state: waiting for the change window (UTC, opens at {}",
            support_format_time(window["opens"].as_str().unwrap())
        )),
        "{status}"
    );
    assert!(
        state_line(&status).contains(&format!("{opens}:00 UTC) (wave second)")),
        "{status}"
    );
    assert_eq!(report["activity"]["state"], "window", "{report}");
    assert_eq!(report["activity"]["wave"], "second", "{report}");
    assert_eq!(report["activity"]["windows"][0]["zone"], "UTC", "{report}");
    assert_eq!(
        report["activity"]["windows"][0]["opens"], window["opens"],
        "{report}"
    );
    assert_eq!(report["waiting"]["reason"], "window", "{report}");
    let records = run.records();
    assert!(
        !started(&records, "h3") && !started(&records, "h4"),
        "nothing of wave second started"
    );

    run.ok(&["abort", &id]);
    let output = deploy.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", run.deploy_output());
    let (status, report) = run.status(&id);
    assert!(!status.contains("change window"), "{status}");
    assert!(report["activity"].is_null(), "{report}");
}

/// `2026-12-07 13:37:00 UTC`, as `pony status` writes a journaled time.
fn support_format_time(rfc3339: &str) -> String {
    let time = chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap();
    time.with_timezone(&chrono::Utc)
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string()
}

#[test]
fn a_soak_then_an_abort_with_its_rollback_in_progress() {
    let run = Run::new(
        r#"
name: soak
strategy:
  waves:
    - { name: first, regions: [r1], pause: 1h }
    - { name: second, regions: ["*"] }
steps:
  - name: work
    run: echo work >> ran
    rollback: "touch rolling; while [ ! -e rollback-go ]; do sleep 0.02; done; echo undone >> ran"
"#,
    );
    let mut deploy = run.spawn(&[]);
    let id = run.id();
    let soak = run.record("the soak", &mut deploy, |r| {
        r["type"] == "gate_waiting" && r["reason"] == "soak" && r["wave"] == "first"
    });
    let until = soak["until"].as_str().expect("the soak's end is journaled");
    let (status, report) = run.status(&id);
    assert!(
        state_line(&status).starts_with(&format!(
            "state: soaking until {} (wave first) (pid ",
            support_format_time(until)
        )),
        "{status}"
    );
    assert!(
        !status.contains("pausing") && !status.contains("waiting: nothing"),
        "{status}"
    );
    assert_eq!(report["activity"]["state"], "soaking", "{report}");
    assert_eq!(report["activity"]["wave"], "first", "{report}");
    assert_eq!(report["activity"]["until"], until, "{report}");
    assert_eq!(report["waiting"]["reason"], "soak", "{report}");

    run.ok(&["abort", &id, "--rollback"]);
    run.record("the stop with rollback", &mut deploy, |r| {
        r["type"] == "stopping" && r["rollback"] == true
    });
    wait_until("a rollback command", || {
        run.host("h1").join("rolling").exists() || run.host("h2").join("rolling").exists()
    });
    let (status, report) = run.status(&id);
    assert!(
        state_line(&status).starts_with("state: stopping: rollback in progress (pid "),
        "{status}"
    );
    assert!(
        status.contains("waiting: rollback in progress: aborted by "),
        "{status}"
    );
    assert_eq!(report["activity"]["state"], "stopping", "{report}");
    assert_eq!(report["activity"]["rollback"], true, "{report}");
    assert_eq!(report["activity"]["cause"], "abort", "{report}");
    assert_eq!(report["waiting"]["reason"], "rollback", "{report}");

    for host in ["h1", "h2"] {
        run.mark(host, "rollback-go");
    }
    let output = deploy.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", run.deploy_output());
    for host in ["h1", "h2"] {
        let ran = std::fs::read_to_string(run.host(host).join("ran")).unwrap();
        assert_eq!(ran, "work\nundone\n", "{host}");
    }
    let (status, report) = run.status(&id);
    assert!(!state_line(&status).contains("stopping"), "{status}");
    assert!(report["activity"].is_null(), "{report}");
}

#[test]
fn an_abort_in_progress_while_hosts_in_flight_finish_and_hosts_never_started_are_not_run() {
    let run = Run::new(
        r#"
name: held
strategy: { max_unavailable: 1 }
steps:
  - { name: work, run: "touch started; while [ ! -e go ]; do sleep 0.02; done; echo work >> ran" }
"#,
    );
    let events = run.dir.path().join("events.jsonl");
    let mut deploy = run.spawn(&["--output", "json"]);
    let id = run.id();
    // One host per cluster at a time: h1 and h3 run, h2 and h4 wait for their slots.
    wait_until("h1 and h3 to start", || {
        run.host("h1").join("started").exists() && run.host("h3").join("started").exists()
    });
    run.ok(&["abort", &id]);
    run.record("the stop", &mut deploy, |r| {
        r["type"] == "stopping" && r["rollback"] == false
    });
    let (status, report) = run.status(&id);
    assert!(
        state_line(&status).starts_with("state: stopping: abort in progress (pid "),
        "{status}"
    );
    assert!(
        status.contains("waiting: abort in progress: aborted by ")
            && status.contains("hosts in flight finish all their tasks"),
        "{status}"
    );
    assert_eq!(report["activity"]["state"], "stopping", "{report}");
    assert_eq!(report["activity"]["rollback"], false, "{report}");
    assert_eq!(report["activity"]["cause"], "abort", "{report}");
    assert_eq!(report["waiting"]["reason"], "stopping", "{report}");
    assert!(
        next(&report).contains(&format!("pony abort --rollback {id}")),
        "{report}"
    );

    for host in ["h1", "h3"] {
        run.mark(host, "go");
    }
    let output = deploy.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", run.deploy_output());
    std::fs::copy(run.dir.path().join("deploy.out"), &events).unwrap();
    let events = support::json_lines(&std::fs::read_to_string(&events).unwrap());
    let outcome = |host: &str| -> Value {
        events
            .iter()
            .find(|e| e["event"] == "host_finished" && e["host"] == host)
            .map(|e| e["outcome"].clone())
            .unwrap_or(Value::Null)
    };
    // The hosts in flight finished; the others never started and are not run, not done.
    for host in ["h1", "h3"] {
        assert_eq!(outcome(host), "ok", "{host}");
        assert!(run.host(host).join("ran").exists());
    }
    for host in ["h2", "h4"] {
        assert_eq!(outcome(host), "cancelled", "{host}");
        assert!(!run.host(host).join("ran").exists(), "{host} never ran");
    }
    let summary = events.iter().find(|e| e["event"] == "summary").unwrap();
    assert_eq!(summary["ok"], 2, "{summary}");
    assert_eq!(summary["cancelled"], 2, "{summary}");
}

#[test]
fn a_run_stopped_at_its_approval_gate_names_the_wave_and_abort_offers_resume_and_rollback_in_progress(
) {
    let run = Run::new(
        r#"
name: gated
strategy:
  waves:
    - { name: first, regions: [r1], approve: true }
    - { name: second, regions: ["*"] }
steps:
  - name: work
    run: echo work >> ran
    rollback: "touch rolling; while [ ! -e rollback-go ]; do sleep 0.02; done; echo undone >> ran"
"#,
    );
    let deploy = run.spawn(&[]);
    let id = run.id();
    let output = deploy.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(10), "{}", run.deploy_output());

    let (status, report) = run.status(&id);
    assert!(
        state_line(&status).starts_with("state: awaiting approval of wave first (exit 10)"),
        "{status}"
    );
    assert_eq!(report["awaiting_wave"], "first", "{report}");
    let commands = next(&report);
    assert_eq!(
        commands,
        [
            format!("pony resume {id} --approve first"),
            format!("pony rollback {id}")
        ],
        "{report}"
    );

    let aborted = run.pony(&["abort", &id]);
    let said = text(&aborted);
    assert_eq!(aborted.status.code(), Some(5), "{said}");
    assert!(
        said.contains(&format!("`pony resume {id} --approve first "))
            && said.contains(&format!("`pony rollback {id} ")),
        "{said}"
    );
    // Nothing was touched by the refused abort.
    assert_eq!(
        run.records()
            .iter()
            .filter(|r| r["type"] == "control")
            .count(),
        0
    );

    // Rolled back as offered: while its commands run, the run says so.
    let out = std::fs::File::create(run.dir.path().join("deploy.out")).unwrap();
    let err = std::fs::File::create(run.dir.path().join("deploy.err")).unwrap();
    let mut rollback = Reaped::new(
        pony(&run.state, &["rollback", &id, "--yes"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap(),
    );
    run.record("the rollback's start", &mut rollback, |r| {
        r["type"] == "run_resumed" && r["command"] == "rollback"
    });
    wait_until("a rollback command", || {
        run.host("h1").join("rolling").exists() || run.host("h2").join("rolling").exists()
    });
    let (status, report) = run.status(&id);
    assert!(
        state_line(&status).starts_with("state: stopping: rollback in progress (pid "),
        "{status}"
    );
    assert!(
        status.contains("waiting: rollback in progress: `pony rollback` by "),
        "{status}"
    );
    assert_eq!(report["activity"]["state"], "stopping", "{report}");
    assert_eq!(report["activity"]["rollback"], true, "{report}");
    assert_eq!(report["activity"]["cause"], "rollback", "{report}");
    assert_eq!(report["waiting"]["reason"], "rollback", "{report}");
    for host in ["h1", "h2"] {
        run.mark(host, "rollback-go");
    }
    let output = rollback.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", run.deploy_output());
    for host in ["h1", "h2"] {
        let ran = std::fs::read_to_string(run.host(host).join("ran")).unwrap();
        assert_eq!(ran, "work\nundone\n", "{host}");
    }
    let (status, report) = run.status(&id);
    assert!(!state_line(&status).contains("stopping"), "{status}");
    assert!(report["activity"].is_null(), "{report}");
}

/// A host's health check after its deploy (`health@HOST` among the tasks) counts in its
/// host's wave and region, beyond the planned tasks: no `(unknown)` row.
#[test]
fn health_checks_after_deploy_count_in_their_hosts_region_and_wave() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (inventory, playbook) = write_plan(
        dir.path(),
        TINY_INVENTORY,
        "name: checked\nhealth:\n  checks:\n    - { name: up, run: \"true\" }\nstrategy: { max_unavailable: 100% }\nsteps:\n  - { name: mark, run: \"true\" }\n",
    );
    let out = pony(&state, &support::deploy_args(&inventory, &playbook))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let status = pony(&state, &["status", "--output", "json"])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&status.stdout).unwrap();
    let regions = &report["tasks"]["regions"];
    let names: Vec<&str> = regions
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["r1", "r2"], "{report}");
    for region in regions.as_array().unwrap() {
        // Two hosts: a task and a health check each.
        assert_eq!(region["total"], 4, "{region}");
        assert_eq!(region["succeeded"], 4, "{region}");
        assert_eq!(region["pending"], 0, "{region}");
    }
    assert_eq!(report["tasks"]["total"]["total"], 8, "{report}");
    assert_eq!(report["tasks"]["waves"][0]["succeeded"], 8, "{report}");
}
