//! Notifiers over a real `pony deploy` on the lab's sshd hosts: a notifier (the
//! playbook's `notify:` or `--notify`) gets the
//! approval-waiting and host-failed events (and the run's start and end) as JSON on
//! stdin; a notifier that hangs is killed, with what it started, after its timeout, and
//! the run neither waits for it nor fails because of it.

mod support;

use std::io::BufReader;
use std::path::Path;
use std::process::Stdio;
use support::{json_lines, lab_with, only_run, read_events_until, text, wait_until};

const GATED: &str = r#"
name: gated
strategy:
  waves:
    - { name: canary, regions: ["*"], hosts: r1-c1-01, approve: true }
    - { name: rest, regions: ["*"] }
steps:
  - { name: mark, run: "test ! -e {{ root }}/fail-mark && touch {{ root }}/marked" }
"#;

#[test]
fn a_notifier_gets_approval_waiting_and_host_failed_events_as_json() {
    let lab = lab_with(1, 1, 3);
    lab.make_fail("r1-c1-03", "mark");
    let notes = lab.path("notes.jsonl");
    // The playbook's own notifier: each event on a line of its own, appended.
    let playbook = lab.playbook(&format!(
        "{GATED}notify:\n  - {{ command: \"cat >> {}\", timeout: 30s }}\n",
        notes.display()
    ));
    let mut deploy = lab.spawn_deploy(&playbook, &["--approval-wait", "10m"]);
    let mut stdout = BufReader::new(deploy.stdout.take().unwrap());
    read_events_until(&mut stdout, |e| e["event"] == "gate_waiting");
    // The notifier hears of the wait while the run waits.
    wait_until("the approval-waiting notification", || {
        std::fs::read_to_string(&notes).is_ok_and(|t| t.contains("gate_waiting"))
    });
    let id = only_run(&lab.state).0;
    let approved = lab.pony(&["approve", &id, "canary"]).output().unwrap();
    assert_eq!(approved.status.code(), Some(0), "{}", text(&approved));
    let status = deploy.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(1),
        "r1-c1-03 failed and was rolled back"
    );

    let events = json_lines(&std::fs::read_to_string(&notes).unwrap());
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"run_started"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"summary"), "{kinds:?}");
    let waiting = events
        .iter()
        .find(|e| e["event"] == "gate_waiting")
        .unwrap();
    assert_eq!(waiting["wave"], "canary");
    assert_eq!(waiting["reason"], "approve");
    assert_eq!(waiting["schema"], 1);
    let failed = events.iter().find(|e| e["event"] == "task_failed").unwrap();
    assert_eq!(failed["task"]["host"], "r1-c1-03");
    assert_eq!(failed["task"]["step"], "mark");
    let control = events.iter().find(|e| e["event"] == "control").unwrap();
    assert_eq!(control["command"], "approve canary");
    assert!(
        !kinds.contains(&"task_finished") && !kinds.contains(&"task_started"),
        "only what a person must know: {kinds:?}"
    );
    let (_, folder) = only_run(&lab.state);
    let log = std::fs::read_to_string(folder.join("notify.log")).unwrap();
    assert!(log.contains("gate_waiting ok"), "{log}");
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && support::proc_stat(pid).is_some_and(|(state, _)| state != 'Z')
}

#[test]
fn a_hanging_notifier_is_killed_after_its_timeout_and_the_run_goes_on_without_it() {
    let lab = lab_with(1, 1, 1);
    let playbook =
        lab.playbook("name: quick\nsteps:\n  - { name: mark, run: \"touch {{ root }}/marked\" }\n");
    let pids = lab.path("pids");
    let grandchildren = lab.path("grandchildren");
    std::fs::create_dir(&grandchildren).unwrap();
    let saw = lab.path("saw-finish");
    let release = lab.path("release");
    let state = lab.state.display().to_string();
    // Hangs until released (nothing releases it while pony runs). Each call first starts
    // a grandchild (a shell that starts `sleep` and waits for it) and waits until it
    // wrote its `sleep`'s pid to `grandchildren/<call's pid>`: killing only the call's own
    // shell would leave that `sleep` running. On `run_started` it then waits for the
    // run's end in the journal: the run finishes while its first notification still hangs.
    let notifier = format!(
        "echo $$ >> {pids}; sh -c 'sleep 600 & echo $! > {gc}/$1.tmp && mv {gc}/$1.tmp {gc}/$1; wait' grandchild $$ & until [ -e {gc}/$$ ]; do sleep 0.02; done; if grep -q run_started; then until grep -qs run_finished {state}/runs/*/journal.jsonl; do sleep 0.02; done; touch {saw}; fi; until [ -e {release} ]; do sleep 0.02; done",
        pids = pids.display(),
        gc = grandchildren.display(),
        saw = saw.display(),
        release = release.display(),
    );
    let mut deploy = lab
        .deploy_command(
            &playbook,
            &["--notify", &notifier, "--notify-timeout", "5s"],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut status = None;
    wait_until("pony to exit without the notifier", || {
        status = deploy.try_wait().unwrap();
        status.is_some()
    });
    let recorded: Vec<u32> = std::fs::read_to_string(&pids)
        .unwrap_or_default()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    // Each call's grandchild `sleep`, by the call's pid.
    let grandchild_pids: Vec<u32> = recorded
        .iter()
        .map(|call| {
            let written = std::fs::read_to_string(grandchildren.join(call.to_string()))
                .unwrap_or_else(|e| panic!("call {call} recorded no grandchild: {e}"));
            written.trim().parse().unwrap()
        })
        .collect();
    let survivors: Vec<u32> = recorded
        .iter()
        .chain(&grandchild_pids)
        .copied()
        .filter(|&p| alive(p))
        .collect();
    // Whatever happens, nothing of this test keeps running.
    std::fs::write(&release, "").unwrap();
    for &pid in &survivors {
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    let output = deploy.wait_with_output().unwrap();
    assert_eq!(status.unwrap().code(), Some(0), "{}", text(&output));
    assert!(lab.root("r1-c1-01").join("marked").exists());
    assert_eq!(recorded.len(), 2, "run_started and summary: {recorded:?}");
    assert_eq!(grandchild_pids.len(), 2, "{grandchild_pids:?}");
    assert!(
        survivors.is_empty(),
        "still running after the timeout (calls {recorded:?}, their grandchildren {grandchild_pids:?}): {survivors:?}"
    );
    assert!(
        saw.exists(),
        "the run finished while its first notification still hung"
    );
    let (_, folder) = only_run(&lab.state);
    let log = std::fs::read_to_string(folder.join("notify.log")).unwrap();
    assert_eq!(log.matches("killed").count(), 2, "{log}");
    assert!(log.contains("after 5s"), "{log}");
    assert!(
        text(&output).contains("killed"),
        "the kill is logged on stderr too: {}",
        text(&output)
    );
}

/// Reads one HTTP request from `stream` and answers 200; returns its body.
fn answer_http(stream: std::net::TcpStream) -> String {
    use std::io::{BufRead, Read, Write};
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let mut stream = stream;
    stream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    String::from_utf8(body).unwrap()
}

/// The documented examples, as shipped: `examples/notify/chat.sh` posts to a webhook (a
/// listener on loopback here) and `examples/notify/mail.sh` hands a mail to sendmail (a
/// stand-in that keeps what it is given).
#[test]
fn the_documented_chat_and_mail_notifiers_work() {
    let lab = lab_with(1, 1, 1);
    lab.make_fail("r1-c1-01", "mark");
    let playbook = lab.playbook(
        "name: failing\nsteps:\n  - { name: mark, run: \"test ! -e {{ root }}/fail-mark\" }\n",
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    // Every post until the run's summary.
    let webhook = std::thread::spawn(move || {
        let mut bodies = Vec::new();
        while !bodies
            .last()
            .is_some_and(|b: &String| b.contains("finished:"))
        {
            bodies.push(answer_http(listener.accept().unwrap().0));
        }
        bodies
    });
    let mails = lab.path("mails");
    let sendmail = lab.path("sendmail");
    std::fs::write(
        &sendmail,
        format!(
            "#!/bin/sh\necho \"args: $*\" >> {m}\ncat >> {m}\n",
            m = mails.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &sendmail,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let output = lab
        .deploy_command(
            &playbook,
            &[
                "--notify",
                "examples/notify/chat.sh",
                "--notify",
                "examples/notify/mail.sh",
            ],
        )
        .env("PONY_WEBHOOK_URL", &url)
        .env("PONY_MAIL_TO", "oncall@example.com")
        .env("SENDMAIL", &sendmail)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let id = only_run(&lab.state).0;
    let posts: Vec<serde_json::Value> = webhook
        .join()
        .unwrap()
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    let texts: Vec<&str> = posts.iter().map(|p| p["text"].as_str().unwrap()).collect();
    assert_eq!(
        texts,
        [
            format!("pony run {id} of failing on lab started: 1 hosts"),
            format!("pony run {id}: host r1-c1-01 (r1) failed at step mark: exited with 1"),
            format!("pony run {id}: rollback of region r1 complete"),
            format!("pony run {id}: wave all FAILED: cluster r1-c1 (region r1) failed 1 host(s), beyond max_failures 0"),
            format!("pony run {id} finished: failed_rolled_back (exit 1); 0 ok, 0 failed, 1 rolled back"),
        ]
    );

    let mail = std::fs::read_to_string(&mails).unwrap();
    assert!(mail.contains("args: -t -oi"), "{mail}");
    assert!(mail.contains("To: oncall@example.com"), "{mail}");
    assert!(
        mail.contains(&format!("Subject: [pony] run {id}: task_failed")),
        "{mail}"
    );
    assert_eq!(mail.matches("Subject: ").count(), texts.len(), "{mail}");
}

/// An inventory of `n` local hosts (no SSH) in one cluster.
fn local_fleet(n: usize) -> String {
    let mut inventory =
        String::from("name: local\ndefaults:\n  connection: local\nregions:\n  r1:\n    clusters:\n      c1:\n        hosts:\n");
    for i in 1..=n {
        inventory.push_str(&format!("          h{i:02}: {{}}\n"));
    }
    inventory
}

/// Waits for `child` to exit (bounded at 120 s for a hung test); its status and when.
fn exit_of(child: &mut std::process::Child) -> (std::process::ExitStatus, std::time::SystemTime) {
    let mut status = None;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while status.is_none() {
        status = child.try_wait().unwrap();
        if status.is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("pony did not exit");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    (status.unwrap(), std::time::SystemTime::now())
}

/// The journal time of the run's `run_finished` record, which is the last.
fn finished_at(folder: &Path) -> std::time::SystemTime {
    let records = support::journal(folder);
    let last = records.last().unwrap();
    assert_eq!(last["type"], "run_finished", "{records:?}");
    humantime::parse_rfc3339_weak(last["time"].as_str().unwrap()).unwrap()
}

#[test]
fn a_notifier_printing_30_mb_leaves_notify_log_bounded_and_the_exit_code_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (inventory, playbook) = support::write_plan(
        dir.path(),
        &local_fleet(2),
        "name: quick\nsteps:\n  - { name: mark, run: \"true\" }\n",
    );
    let state = dir.path().join("state");
    let mut args = support::deploy_args(&inventory, &playbook);
    let notifier = "head -c 31457280 /dev/zero | tr '\\0' x";
    args.extend(["--notify", notifier, "--notify-timeout", "60s"]);
    let output = support::pony(&state, &args).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let (_, folder) = only_run(&state);
    let log = std::fs::read_to_string(folder.join("notify.log")).unwrap();
    assert!(
        (log.len() as u64) < pony::notify::RUN_OUTPUT + 64 * 1024,
        "notify.log is {} bytes",
        log.len()
    );
    assert!(log.contains("run_started ok"), "{}", &log[..200]);
    assert!(log.contains("summary ok"), "{}", &log[log.len() - 400..]);
    assert!(
        log.contains("output truncated"),
        "{}",
        &log[log.len() - 400..]
    );
}

/// A notifier that hangs, with 40 hosts failing: 40 `task_failed` calls wait behind it.
/// The process exits within one bounded wait (the grace and the `summary`'s timeout) of
/// the run's end as journaled, and the lock is free at once.
#[test]
fn a_hanging_notifier_holds_the_end_of_a_run_of_40_failing_hosts_only_one_bounded_wait() {
    let dir = tempfile::tempdir().unwrap();
    let (inventory, playbook) = support::write_plan(
        dir.path(),
        &local_fleet(40),
        "name: failing\nstrategy:\n  max_failures: 100%\n  on_failure: halt\nsteps:\n  - { name: mark, run: \"false\" }\n",
    );
    let state = dir.path().join("state");
    let mut args = support::deploy_args(&inventory, &playbook);
    args.extend(["--notify", "sleep 600", "--notify-timeout", "2s"]);
    let mut deploy = support::pony(&state, &args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (status, exited) = exit_of(&mut deploy);
    assert_ne!(status.code(), Some(0));
    assert_ne!(status.code(), Some(4));
    let (_, folder) = only_run(&state);
    let finished = finished_at(&folder);
    let held = exited.duration_since(finished).unwrap_or_default();
    let bound = pony::notify::GRACE + std::time::Duration::from_secs(2 + 3);
    assert!(held < bound, "exited {held:?} after the run's end");
    // The lock is free right away.
    let again = support::pony(&state, &support::deploy_args(&inventory, &playbook))
        .output()
        .unwrap();
    assert_ne!(again.status.code(), Some(4), "{}", text(&again));
    let log = std::fs::read_to_string(folder.join("notify.log")).unwrap();
    assert!(log.contains("task_failed dropped"), "{log}");
    assert!(log.contains("summary killed"), "{log}");
}

/// SIGTERM while the run's end waits for a hanging notifier ends the wait at once.
#[test]
fn sigterm_ends_the_wait_for_notifiers() {
    let dir = tempfile::tempdir().unwrap();
    let (inventory, playbook) = support::write_plan(
        dir.path(),
        &local_fleet(1),
        "name: quick\nsteps:\n  - { name: mark, run: \"true\" }\n",
    );
    let state = dir.path().join("state");
    let mut args = support::deploy_args(&inventory, &playbook);
    args.extend(["--notify", "sleep 600", "--notify-timeout", "300s"]);
    let mut deploy = support::pony(&state, &args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the run's end in the journal", || {
        std::fs::read_dir(state.join("runs")).is_ok_and(|mut d| {
            d.next().is_some_and(|e| {
                std::fs::read_to_string(e.unwrap().path().join("journal.jsonl"))
                    .is_ok_and(|j| j.contains("run_finished"))
            })
        })
    });
    unsafe { libc::kill(deploy.id() as i32, libc::SIGTERM) };
    let (status, exited) = exit_of(&mut deploy);
    assert_eq!(status.code(), Some(0), "the run's own exit code");
    let (_, folder) = only_run(&state);
    let held = exited
        .duration_since(finished_at(&folder))
        .unwrap_or_default();
    assert!(held < std::time::Duration::from_secs(60), "{held:?}");
    let log = std::fs::read_to_string(folder.join("notify.log")).unwrap();
    assert!(log.contains("interrupted"), "{log}");
}

/// What a notifier starts in the background ends with its call.
#[test]
fn a_notifiers_background_child_does_not_outlive_its_call() {
    let dir = tempfile::tempdir().unwrap();
    let (inventory, playbook) = support::write_plan(
        dir.path(),
        &local_fleet(1),
        "name: quick\nsteps:\n  - { name: mark, run: \"true\" }\n",
    );
    let state = dir.path().join("state");
    let pids = dir.path().join("pids");
    let notifier = format!("sleep 300 & echo $! >> {}", pids.display());
    let mut args = support::deploy_args(&inventory, &playbook);
    args.extend(["--notify", &notifier]);
    let output = support::pony(&state, &args).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let children: Vec<u32> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(children.len(), 2, "run_started and summary: {children:?}");
    let left: Vec<u32> = children.iter().copied().filter(|&p| alive(p)).collect();
    for &pid in &left {
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    assert!(left.is_empty(), "still running: {left:?}");
}
