//! Live control of a real `pony deploy` over the lab's sshd hosts from a second process:
//! `pony pause` holds every new host until `pony continue`, `pony abort --rollback` rolls
//! back what the run touched (exit 1), `pony approve` lets a run without a terminal go on
//! past its `approve:` gate; each command journaled with who, when and from where. A
//! command for a run that is not running exits 5.
//!
//! Steps that must be caught in the act wait for a marker file the test writes, so each
//! command lands at a known point of the run; nothing here depends on timing.

mod support;

use std::io::BufReader;
use std::path::Path;
use std::process::{ExitStatus, Output};
use support::tmux::Session;
use support::{
    journal, lab_with, only_run, read_events_until, started_hosts, text, wait_until, Lab, Reaped,
};

const HOSTS: [&str; 3] = ["r1-c1-01", "r1-c1-02", "r1-c1-03"];

/// Waits for the deploy to end and returns how it ended, with its output.
fn finish(deploy: Reaped) -> (ExitStatus, String) {
    let output = deploy.wait_with_output().unwrap();
    (output.status, text(&output))
}

fn control(lab: &Lab, args: &[&str]) -> Output {
    lab.pony(args).output().unwrap()
}

fn run_id(lab: &Lab, deploy: &mut Reaped) -> String {
    let mut id = None;
    wait_until("the run folder", || {
        if let Some(status) = deploy.child().try_wait().unwrap() {
            let output = deploy.0.take().unwrap().wait_with_output().unwrap();
            panic!("pony ended first ({status}): {}", text(&output));
        }
        id = std::fs::read_dir(lab.state.join("runs"))
            .ok()
            .and_then(|mut d| d.next())
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string());
        id.is_some()
    });
    id.unwrap()
}

/// Starts `pony deploy` of `playbook` (events piped) and waits for its run folder;
/// returns the deploy with its run id.
fn start(lab: &Lab, playbook: &Path, extra: &[&str]) -> (Reaped, String) {
    let mut deploy = Reaped::new(lab.spawn_deploy(playbook, extra));
    let id = run_id(lab, &mut deploy);
    (deploy, id)
}

fn control_records(records: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    records.iter().filter(|r| r["type"] == "control").collect()
}

/// A control record names the sender as the kernel sees it: this user, this machine, the
/// pid of the `pony` that sent it.
fn assert_sender(record: &serde_json::Value, command: &str) {
    assert_eq!(record["command"], command, "{record}");
    assert_eq!(record["accepted"], true, "{record}");
    assert_eq!(
        record["host"].as_str().unwrap(),
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap()
            .trim()
    );
    let me = unsafe { libc::getuid() };
    let name = unsafe { std::ffi::CStr::from_ptr((*libc::getpwuid(me)).pw_name) };
    assert_eq!(record["user"].as_str().unwrap(), name.to_str().unwrap());
    assert!(record["pid"].as_u64().unwrap() > 0, "{record}");
    assert!(record["time"].as_str().is_some(), "{record}");
}

/// One host at a time; `work` waits on each host until its `go` file exists.
const ONE_AT_A_TIME: &str = r#"
name: paced
strategy: { max_unavailable: 1 }
steps:
  - { name: work, run: "touch {{ root }}/started; while [ ! -e {{ root }}/go ]; do sleep 0.02; done; touch {{ root }}/done" }
"#;

#[test]
fn a_run_paused_from_another_process_starts_no_new_host_until_continue() {
    let lab = lab_with(1, 1, 3);
    let playbook = lab.playbook(ONE_AT_A_TIME);
    let (mut deploy, id) = start(&lab, &playbook, &[]);
    wait_until("the first host to start", || {
        lab.root(HOSTS[0]).join("started").exists()
    });

    let paused = control(&lab, &["pause", &id]);
    assert_eq!(paused.status.code(), Some(0), "{}", text(&paused));
    assert!(
        text(&paused).contains("paused: no new host starts"),
        "{}",
        text(&paused)
    );
    let status = control(&lab, &["status", &id]);
    assert!(
        text(&status).contains("state: paused"),
        "status shows the run paused: {}",
        text(&status)
    );
    let json = control(&lab, &["status", &id, "--output", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(
        report["paused"]["by"].as_str().unwrap().contains("(pid "),
        "{report}"
    );
    assert_eq!(report["waiting"]["reason"], "continue", "{report}");

    // The host in flight finishes its task.
    std::fs::write(lab.root(HOSTS[0]).join("go"), "").unwrap();
    let mut stdout = BufReader::new(deploy.child().stdout.take().unwrap());
    read_events_until(&mut stdout, |e| {
        e["event"] == "host_finished" && e["host"] == HOSTS[0]
    });
    // The scheduler handles commands in order with everything else: once it answers
    // this one, whatever it did after the first host finished is in the journal.
    let again = control(&lab, &["pause", &id]);
    assert!(text(&again).contains("already paused"), "{}", text(&again));
    let (_, folder) = only_run(&lab.state);
    let records = journal(&folder);
    assert_eq!(
        started_hosts(&records),
        [HOSTS[0].to_string()].into(),
        "no new host started while paused"
    );
    assert!(!lab.root(HOSTS[1]).join("started").exists());

    for host in &HOSTS[1..] {
        std::fs::write(lab.root(host).join("go"), "").unwrap();
    }
    let continued = control(&lab, &["continue", &id]);
    assert_eq!(continued.status.code(), Some(0), "{}", text(&continued));
    let (status, output) = finish(deploy);
    assert_eq!(status.code(), Some(0), "{output}");
    for host in HOSTS {
        assert!(lab.root(host).join("done").exists(), "{host} ran");
    }

    let records = journal(&folder);
    let controls = control_records(&records);
    assert_eq!(controls.len(), 3, "{controls:#?}");
    assert_sender(controls[0], "pause");
    assert_sender(controls[2], "continue");
    let status = text(&control(&lab, &["status", &id]));
    assert!(
        status.contains("commands from other shells (3):") && status.contains(" continue by "),
        "{status}"
    );
    assert!(!status.contains("state: paused"), "{status}");
    let position = |p: &dyn Fn(&serde_json::Value) -> bool| records.iter().position(p).unwrap();
    let continue_at = position(&|r| r["type"] == "control" && r["command"] == "continue");
    for host in &HOSTS[1..] {
        let label = format!("work@{host}");
        let started = position(&|r| r["type"] == "task_started" && r["label"] == label);
        assert!(started > continue_at, "{host} started only after continue");
    }
}

/// `stage`/`switch` as in the release playbook (rolled back); `hold` waits on hosts with
/// a `block` file until their `go` file exists.
const ROLLOUT: &str = r#"
name: release
vars: { version: "2.0" }
strategy: { max_unavailable: 1 }
steps:
  - name: stage
    run: mkdir -p {{ mail_root }}/releases/{{ version }}
    rollback: rm -rf {{ mail_root }}/releases/{{ version }}
  - name: previous
    run: readlink {{ mail_root }}/current || true
    capture: previous
  - name: switch
    needs: [stage, previous]
    run: ln -sfn releases/{{ version }} {{ mail_root }}/current.tmp && mv -T {{ mail_root }}/current.tmp {{ mail_root }}/current
    rollback: ln -sfn {{ previous }} {{ mail_root }}/current.tmp && mv -T {{ mail_root }}/current.tmp {{ mail_root }}/current
  - name: hold
    needs: [switch]
    run: "touch {{ root }}/holding; while [ -e {{ root }}/block ] && [ ! -e {{ root }}/go ]; do sleep 0.02; done"
"#;

#[test]
fn abort_with_rollback_from_another_process_rolls_back_every_touched_host_and_exits_1() {
    let lab = lab_with(1, 1, 3);
    lab.install_old_release();
    std::fs::write(lab.root(HOSTS[1]).join("block"), "").unwrap();
    let playbook = lab.playbook(ROLLOUT);
    let (deploy, id) = start(&lab, &playbook, &[]);
    // The first host is done; the second holds in `hold`, on the new release.
    wait_until("the second host to hold", || {
        lab.root(HOSTS[1]).join("holding").exists()
    });
    assert_eq!(lab.current(HOSTS[0]).as_deref(), Some("releases/2.0"));
    assert_eq!(lab.current(HOSTS[1]).as_deref(), Some("releases/2.0"));

    let aborted = control(&lab, &["abort", &id, "--rollback"]);
    assert_eq!(aborted.status.code(), Some(0), "{}", text(&aborted));
    std::fs::write(lab.root(HOSTS[1]).join("go"), "").unwrap();
    let (status, output) = finish(deploy);
    assert_eq!(status.code(), Some(1), "{output}");

    for host in &HOSTS[..2] {
        assert_eq!(lab.current(host).as_deref(), Some("releases/1.0"), "{host}");
        let mail = lab.root(host).join("srv/mail/releases/2.0");
        assert!(!mail.exists(), "{host}: the staged release is removed");
    }
    assert!(
        !lab.root(HOSTS[2]).join("holding").exists(),
        "the third host never started"
    );
    assert_eq!(lab.current(HOSTS[2]).as_deref(), Some("releases/1.0"));

    let (_, folder) = only_run(&lab.state);
    let records = journal(&folder);
    assert_sender(control_records(&records)[0], "abort --rollback");
    let finished = records.last().unwrap();
    assert_eq!(finished["type"], "run_finished");
    assert_eq!(finished["outcome"], "failed_rolled_back");
    assert_eq!(finished["exit_code"], 1);
    let rolled_back: Vec<&str> = records
        .iter()
        .filter(|r| r["type"] == "rollback_finished" && r["ok"] == true)
        .map(|r| r["label"].as_str().unwrap())
        .collect();
    for label in [
        "switch@r1-c1-01",
        "stage@r1-c1-01",
        "switch@r1-c1-02",
        "stage@r1-c1-02",
    ] {
        assert!(rolled_back.contains(&label), "{label}: {rolled_back:?}");
    }
}

const GATED: &str = r#"
name: gated
strategy:
  waves:
    - { name: canary, regions: ["*"], hosts: r1-c1-01, approve: true }
    - { name: rest, regions: ["*"] }
steps:
  - { name: mark, run: "touch {{ root }}/marked" }
"#;

#[test]
fn approve_from_another_process_lets_a_run_without_a_terminal_go_past_its_gate() {
    let lab = lab_with(1, 1, 3);
    let playbook = lab.playbook(GATED);
    let (mut deploy, id) = start(&lab, &playbook, &["--approval-wait", "10m"]);
    let mut stdout = BufReader::new(deploy.child().stdout.take().unwrap());
    let waiting = read_events_until(&mut stdout, |e| e["event"] == "gate_waiting");
    assert_eq!(waiting.last().unwrap()["reason"], "approve");
    assert!(!lab.root(HOSTS[1]).join("marked").exists());

    let unknown = control(&lab, &["approve", &id, "nope"]);
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown));
    assert!(
        text(&unknown).contains("no wave `nope`"),
        "{}",
        text(&unknown)
    );

    let approved = control(&lab, &["approve", &id, "canary"]);
    assert_eq!(approved.status.code(), Some(0), "{}", text(&approved));
    let (status, output) = finish(deploy);
    assert_eq!(status.code(), Some(0), "not 10: {output}");
    for host in HOSTS {
        assert!(lab.root(host).join("marked").exists(), "{host}");
    }
    let (_, folder) = only_run(&lab.state);
    let records = journal(&folder);
    let controls = control_records(&records);
    assert_eq!(controls[0]["accepted"], false);
    assert_sender(controls[1], "approve canary");
    assert!(records
        .iter()
        .any(|r| r["type"] == "gate_passed" && r["wave"] == "canary"));

    // The run is over: a command for it says so and exits 5.
    let late = control(&lab, &["pause", &id]);
    assert_eq!(late.status.code(), Some(5), "{}", text(&late));
    assert!(text(&late).contains("is not running"), "{}", text(&late));
}

/// A gate asked at a terminal and approved from another shell: the question is
/// withdrawn, the run goes on and its process ends without anyone typing an answer.
#[test]
fn approve_from_another_process_answers_the_question_at_the_terminal() {
    let lab = lab_with(1, 1, 3);
    let playbook = lab.playbook(GATED);
    let exit_file = lab.path("exit");
    let command = format!(
        "{} --state-dir {} deploy -i {} {} --yes; echo $? > {}; sleep 30",
        env!("CARGO_BIN_EXE_pony"),
        lab.state.display(),
        lab.inventory.display(),
        playbook.display(),
        exit_file.display()
    );
    let session = Session::start(
        &format!("pony-control-{}", std::process::id()),
        160,
        &command,
    );
    let screen = || session.screen();
    wait_until("the approval question", || {
        screen().contains("Approve it and continue")
    });
    let id = only_run(&lab.state).0;
    let approved = control(&lab, &["approve", &id, "canary"]);
    assert_eq!(approved.status.code(), Some(0), "{}", text(&approved));
    assert_eq!(support::wait_for_exit_code(&exit_file), 0);
    for host in HOSTS {
        assert!(lab.root(host).join("marked").exists(), "{host}");
    }
    assert!(screen().contains("withdrawn"), "{}", screen());
}

#[test]
fn abort_from_another_process_stops_as_an_interrupt_and_exits_130() {
    let lab = lab_with(1, 1, 3);
    let playbook = lab.playbook(ONE_AT_A_TIME);
    let (deploy, id) = start(&lab, &playbook, &[]);
    wait_until("the first host to start", || {
        lab.root(HOSTS[0]).join("started").exists()
    });
    let aborted = control(&lab, &["abort", &id]);
    assert_eq!(aborted.status.code(), Some(0), "{}", text(&aborted));
    for host in HOSTS {
        std::fs::write(lab.root(host).join("go"), "").unwrap();
    }
    let (status, output) = finish(deploy);
    assert_eq!(status.code(), Some(130), "{output}");
    assert!(
        lab.root(HOSTS[0]).join("done").exists(),
        "the host in flight finished"
    );
    let (_, folder) = only_run(&lab.state);
    let records = journal(&folder);
    assert_sender(control_records(&records)[0], "abort");
    assert_eq!(
        started_hosts(&records),
        [HOSTS[0].to_string()].into(),
        "no other host started"
    );
    assert_eq!(records.last().unwrap()["outcome"], "interrupted");
}

#[test]
fn a_command_for_a_run_whose_process_died_exits_5_and_says_how_to_go_on() {
    let lab = lab_with(1, 1, 1);
    let playbook = lab.playbook(ONE_AT_A_TIME);
    let (mut deploy, id) = start(&lab, &playbook, &[]);
    wait_until("the host to start", || {
        lab.root(HOSTS[0]).join("started").exists()
    });
    // Our own child, by its pid: its socket file stays behind, nobody listens on it.
    deploy.child().kill().unwrap();
    deploy.child().wait().unwrap();
    // The step it left running on the host ends.
    std::fs::write(lab.root(HOSTS[0]).join("go"), "").unwrap();
    assert!(lab
        .state
        .join("runs")
        .join(&id)
        .join("control.sock")
        .exists());
    let paused = control(&lab, &["pause", &id]);
    assert_eq!(paused.status.code(), Some(5), "{}", text(&paused));
    let said = text(&paused);
    assert!(said.contains(&format!("run {id} is not running")), "{said}");
    assert!(said.contains(&format!("pony resume {id}")), "{said}");
    let unknown = control(&lab, &["pause", "no-such-run"]);
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown));
}

/// How late the journal or a reporter may stamp an event (see below).
const STAMP_LAG: std::time::Duration = std::time::Duration::from_millis(500);

/// An RFC 3339 time of an event or a journal record.
fn instant(record: &serde_json::Value) -> std::time::SystemTime {
    let time = record["time"]
        .as_str()
        .unwrap_or_else(|| panic!("no time: {record}"));
    humantime::parse_rfc3339(time).unwrap_or_else(|e| panic!("{time}: {e}"))
}

/// The run waits the whole `--approval-wait` for an answer before it stops: the gate's
/// event announces the bound, and the run's next event, as the journal's next record,
/// is about that much later. Times are taken when the journal and the reporter get an
/// event, a little after the scheduler emitted it: [`STAMP_LAG`] allows for that lag on
/// the gate's own event (a slow machine only makes the wait look longer otherwise); a
/// run that did not wait shows next to nothing.
#[test]
fn without_an_approve_within_the_approval_wait_the_run_stops_with_10() {
    let lab = lab_with(1, 1, 2);
    let playbook = lab.playbook(GATED);
    let deploy = Reaped(Some(
        lab.spawn_deploy(&playbook, &["--approval-wait", "2s"]),
    ));
    let output = deploy.wait_with_output().unwrap();
    let said = text(&output);
    assert_eq!(output.status.code(), Some(10), "{said}");
    assert!(said.contains("--approve canary"), "{said}");
    assert!(!lab.root(HOSTS[1]).join("marked").exists());

    let bound = std::time::Duration::from_secs(2);
    let events = support::events(&output);
    let at = events
        .iter()
        .position(|e| e["event"] == "gate_waiting" && e["reason"] == "approve")
        .unwrap_or_else(|| panic!("no approval wait: {said}"));
    assert_eq!(events[at]["wave"], "canary", "{said}");
    assert_eq!(events[at]["seconds"], bound.as_secs(), "{said}");
    let next = events
        .get(at + 1)
        .unwrap_or_else(|| panic!("nothing after the wait: {said}"));
    let waited = instant(next).duration_since(instant(&events[at])).unwrap();
    assert!(
        waited + STAMP_LAG >= bound,
        "the run went on {waited:?} after the gate started waiting ({bound:?}): {next}"
    );

    let (_, folder) = support::only_run(&lab.state);
    let records = support::journal(&folder);
    let at = records
        .iter()
        .position(|r| r["type"] == "gate_waiting")
        .unwrap_or_else(|| panic!("no gate_waiting record: {records:#?}"));
    let next = &records[at + 1];
    let waited = instant(next).duration_since(instant(&records[at])).unwrap();
    assert!(
        waited + STAMP_LAG >= bound,
        "the journal's next record came {waited:?} after the wait began: {next}"
    );
}

#[test]
fn approve_before_the_gate_is_reached_pre_approves_it() {
    let lab = lab_with(1, 1, 2);
    // The canary holds until the test lets it go; without an answer the gate would stop
    // this run (no terminal, no --approval-wait) with exit 10.
    let playbook = lab.playbook(&GATED.replace(
        "touch {{ root }}/marked",
        "touch {{ root }}/started; while [ ! -e {{ root }}/go ]; do sleep 0.02; done; touch {{ root }}/marked",
    ));
    let (deploy, id) = start(&lab, &playbook, &[]);
    wait_until("the canary to start", || {
        lab.root(HOSTS[0]).join("started").exists()
    });
    let idle = control(&lab, &["continue", &id]);
    assert_eq!(idle.status.code(), Some(0), "{}", text(&idle));
    assert!(text(&idle).contains("not paused"), "{}", text(&idle));
    let approved = control(&lab, &["approve", &id, "canary"]);
    assert_eq!(approved.status.code(), Some(0), "{}", text(&approved));
    assert!(
        text(&approved).contains("pre-approved"),
        "{}",
        text(&approved)
    );
    for host in &HOSTS[..2] {
        std::fs::write(lab.root(host).join("go"), "").unwrap();
    }
    let (status, output) = finish(deploy);
    assert_eq!(status.code(), Some(0), "{output}");
    assert!(lab.root(HOSTS[1]).join("marked").exists());
}

/// `pony approve RUN w2` while w1 runs is a journaled pre-approval: the run stops at w1's
/// gate (no terminal: exit 10), `pony status` lists w2 as pre-approved, and
/// `pony resume RUN --approve w1` goes past w2's gate without stopping there.
#[test]
fn a_pre_approval_survives_a_stop_and_a_resume_honours_it() {
    let lab = lab_with(1, 1, 3);
    let playbook = lab.playbook(
        r#"
name: two-gates
strategy:
  waves:
    - { name: w1, regions: ["*"], hosts: r1-c1-01, approve: true }
    - { name: w2, regions: ["*"], hosts: r1-c1-02, approve: true }
    - { name: w3, regions: ["*"] }
steps:
  - { name: mark, run: "touch {{ root }}/started; while [ ! -e {{ root }}/go ]; do sleep 0.02; done; touch {{ root }}/marked" }
"#,
    );
    let (deploy, id) = start(&lab, &playbook, &[]);
    wait_until("w1 to start", || {
        lab.root(HOSTS[0]).join("started").exists()
    });
    let approved = control(&lab, &["approve", &id, "w2"]);
    assert_eq!(approved.status.code(), Some(0), "{}", text(&approved));
    assert!(
        text(&approved).contains("pre-approved"),
        "{}",
        text(&approved)
    );
    for host in HOSTS {
        std::fs::write(lab.root(host).join("go"), "").unwrap();
    }
    let (status, output) = finish(deploy);
    assert_eq!(status.code(), Some(10), "stops at w1's gate: {output}");

    let shown = control(&lab, &["status", &id]);
    assert!(
        text(&shown).contains("pre-approved: w2"),
        "{}",
        text(&shown)
    );
    let json = control(&lab, &["status", &id, "--output", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["pre_approved"], serde_json::json!(["w2"]), "{json}");

    let resumed = control(&lab, &["resume", &id, "--approve", "w1"]);
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed));
    for host in HOSTS {
        assert!(lab.root(host).join("marked").exists(), "{host}");
    }
}

/// Another user may not send a command to a running run (the socket is not writable for
/// it): it is told so, with the owner's name, and exit 2 — never "not running" (5).
#[test]
fn another_user_is_told_permission_denied_not_not_running() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to run a command as nobody (setpriv)");
        return;
    }
    let lab = lab_with(1, 1, 2);
    let playbook = lab.playbook(&GATED.replace(
        "touch {{ root }}/marked",
        "touch {{ root }}/started; while [ ! -e {{ root }}/go ]; do sleep 0.02; done; touch {{ root }}/marked",
    ));
    let (deploy, id) = start(&lab, &playbook, &[]);
    wait_until("the canary to start", || {
        lab.root(HOSTS[0]).join("started").exists()
    });
    // nobody may read the state (to find the run), not write to its socket.
    let opened = std::process::Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(lab.dir.path())
        .status()
        .unwrap();
    assert!(opened.success());
    let sent = std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_pony"))
        .arg("--state-dir")
        .arg(&lab.state)
        .args(["pause", &id])
        .env("HOME", "/")
        .output()
        .unwrap();
    for host in &HOSTS[..2] {
        std::fs::write(lab.root(host).join("go"), "").unwrap();
    }
    let (status, output) = finish(deploy);
    assert_eq!(status.code(), Some(10), "{output}");
    assert_eq!(sent.status.code(), Some(2), "{}", text(&sent));
    assert!(
        text(&sent).contains("permission denied: the run is owned by root"),
        "{}",
        text(&sent)
    );
    assert!(!text(&sent).contains("not running"), "{}", text(&sent));
}
