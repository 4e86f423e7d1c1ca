//! `pony deploy` against a fleet of real sshd servers on loopback (12 hosts, 3 regions,
//! 2 clusters each): every test checks the files on the hosts' root dirs, not just the
//! exit code.

mod support;

use support::code;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::{lab, lab_with, read_events_until, release_playbook, started_hosts, text, Reaped};

const FAST: &str = "  max_unavailable: 100%\n  max_failures: 0\n  on_failure: rollback-region";

/// JSON events of a run made with `--output json`.
fn events(output: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

fn count_events(events: &[serde_json::Value], kind: &str, step: &str) -> usize {
    events
        .iter()
        .filter(|e| e["event"] == kind && e["task"]["step"] == step)
        .count()
}

#[test]
fn success_puts_every_host_on_the_new_release_and_a_rerun_changes_nothing() {
    let lab = lab();
    lab.install_old_release();
    let playbook = lab.playbook(&release_playbook(FAST).replace("/.staged", ""));
    let first = lab.deploy(&playbook, &[]);
    assert_eq!(code(&first), 0, "{}", text(&first));
    for host in lab.host_names() {
        assert_eq!(
            lab.current(&host).as_deref(),
            Some("releases/2.0"),
            "{host}"
        );
        assert!(lab.root(&host).join("srv/mail/releases/2.0").is_dir());
    }
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(stdout.contains("12 ok"), "{stdout}");
    let second = lab.deploy(&playbook, &["--output", "json"]);
    assert_eq!(code(&second), 0, "{}", text(&second));
    let events = events(&second);
    assert_eq!(
        count_events(&events, "task_skipped", "stage"),
        12,
        "stage is guarded by creates"
    );
    assert_eq!(count_events(&events, "task_finished", "stage"), 0);
}

#[test]
fn one_failure_within_budget_rolls_back_only_that_host_using_the_captured_release() {
    let lab = lab();
    lab.install_old_release();
    lab.make_fail("r2-c1-01", "verify");
    let playbook = lab.playbook(&release_playbook("  max_failures: 1\n  on_failure: halt"));
    let out = lab.deploy(&playbook, &[]);
    assert_eq!(code(&out), 1, "failed, rollback complete: {}", text(&out));
    assert_eq!(
        lab.current("r2-c1-01").as_deref(),
        Some("releases/1.0"),
        "rolled back to the captured previous release"
    );
    assert!(
        !lab.root("r2-c1-01").join("srv/mail/releases/2.0").exists(),
        "stage rolled back"
    );
    for host in lab.host_names().iter().filter(|h| *h != "r2-c1-01") {
        assert_eq!(
            lab.current(host).as_deref(),
            Some("releases/2.0"),
            "{host} stays on the new release"
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("FAILED r2-c1-01"), "{stdout}");
    assert!(
        stdout.contains("rolled back") && stdout.contains("r2-c1-01"),
        "{stdout}"
    );
}

#[test]
fn beyond_budget_halt_starts_no_queued_host_lets_running_tasks_finish_and_rolls_nothing_back() {
    let lab = lab();
    lab.install_old_release();
    lab.make_fail("r2-c1-01", "switch");
    let shared = lab.path("started");
    std::fs::create_dir_all(&shared).unwrap();
    let gate = lab.path("gate");
    // One host at a time per cluster: the six `-01` hosts start, the six `-02` hosts
    // queue. The failing host goes on once all six are in `stage`; the others hold there
    // until the test has seen the halt, so they are running when it comes.
    let hold = format!(
        "touch {shared}/{{{{ host.name }}}}; if [ -e {{{{ root }}}}/fail-switch ]; then while [ $(ls {shared} | wc -l) -lt 6 ]; do sleep 0.02; done; else while [ ! -e {gate} ]; do sleep 0.02; done; fi; ",
        shared = shared.display(),
        gate = gate.display()
    );
    let playbook = lab.playbook(
        &release_playbook("  max_unavailable: 1\n  max_failures: 0\n  on_failure: halt").replace(
            "run: mkdir -p {{ mail_root }}/releases",
            &format!("run: {hold}mkdir -p {{{{ mail_root }}}}/releases"),
        ),
    );
    let mut child = lab.spawn_deploy(&playbook, &[]);
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut seen = read_events_until(&mut stdout, |e| e["event"] == "stopped");
    std::fs::write(&gate, "").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    seen.extend(support::json_lines(&rest));
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 3, "halted needs a person: {}", text(&out));
    let summary = seen.last().unwrap();
    assert_eq!(summary["outcome"], "needs_attention", "{summary}");

    // Nothing was rolled back: no rollback event, no rollback in the journal, and the
    // failed host stays where its failed step left it.
    assert!(
        !seen
            .iter()
            .any(|e| e["event"].as_str().unwrap().starts_with("rollback")),
        "{seen:#?}"
    );
    let (_, run_dir) = support::only_run(&lab.state);
    let journal = support::journal(&run_dir);
    assert!(
        !journal
            .iter()
            .any(|r| r["type"].as_str().unwrap().starts_with("rollback")),
        "{journal:#?}"
    );
    assert_eq!(lab.current("r2-c1-01").as_deref(), Some("releases/2.0"));
    assert!(lab.root("r2-c1-01").join("srv/mail/releases/2.0").is_dir());

    // It stopped: the queued hosts never started, on the hosts and in the journal; the
    // hosts in flight finished the task they were running and started no other.
    let in_flight: Vec<String> = lab
        .host_names()
        .into_iter()
        .filter(|h| h.ends_with("-01"))
        .collect();
    assert_eq!(
        started_hosts(&journal).into_iter().collect::<Vec<_>>(),
        in_flight,
        "only the hosts in flight at the halt ever started"
    );
    for host in lab.host_names() {
        let root = lab.root(&host);
        if in_flight.contains(&host) {
            assert!(
                root.join("srv/mail/releases/2.0").is_dir(),
                "{host}: stage finished"
            );
            if host != "r2-c1-01" {
                assert_eq!(
                    lab.current(&host).as_deref(),
                    Some("releases/1.0"),
                    "{host}: switch never started"
                );
                let labels: Vec<&str> = journal
                    .iter()
                    .filter(|r| r["type"] == "task_started")
                    .filter_map(|r| r["label"].as_str())
                    .filter(|l| l.ends_with(&format!("@{host}")))
                    .collect();
                assert!(
                    !labels.contains(&format!("switch@{host}").as_str()),
                    "{host}: {labels:?}"
                );
            }
        } else {
            assert!(
                !shared.join(&host).exists(),
                "{host} started after the halt"
            );
            assert!(!root.join("srv/mail/releases/2.0").exists(), "{host}");
            assert_eq!(
                lab.current(&host).as_deref(),
                Some("releases/1.0"),
                "{host}"
            );
        }
    }
}

#[test]
fn beyond_budget_rollback_region_restores_that_region_only() {
    let lab = lab();
    lab.install_old_release();
    lab.make_fail("r2-c1-01", "switch");
    let playbook = lab.playbook(&release_playbook(
        "  max_failures: 0\n  on_failure: rollback-region",
    ));
    let out = lab.deploy(&playbook, &[]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    for host in lab.host_names() {
        let expected = if host.starts_with("r2-") {
            "releases/1.0"
        } else {
            "releases/2.0"
        };
        assert_eq!(
            lab.current(&host).as_deref(),
            Some(expected),
            "{host}\n{}",
            text(&out)
        );
        if host.starts_with("r2-") {
            assert!(
                !lab.root(&host).join("srv/mail/releases/2.0").exists(),
                "{host}: stage rolled back"
            );
        }
    }
}

#[test]
fn beyond_budget_rollback_all_restores_every_touched_host() {
    let lab = lab();
    lab.install_old_release();
    lab.make_fail("r2-c1-01", "switch");
    let playbook = lab.playbook(&release_playbook(
        "  max_failures: 0\n  on_failure: rollback-all",
    ));
    let out = lab.deploy(&playbook, &[]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    for host in lab.host_names() {
        assert_eq!(
            lab.current(&host).as_deref(),
            Some("releases/1.0"),
            "{host}\n{}",
            text(&out)
        );
        assert!(
            !lab.root(&host).join("srv/mail/releases/2.0").exists(),
            "{host}"
        );
    }
}

#[test]
fn a_host_killed_before_the_run_fails_alone() {
    let mut lab = lab();
    lab.install_old_release();
    lab.fleet.kill("r3-c2-02").unwrap();
    let playbook = lab.playbook(&release_playbook("  max_failures: 1"));
    let out = lab.deploy(&playbook, &[]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("FAILED r3-c2-02") && stdout.contains("cannot connect"),
        "{stdout}"
    );
    assert_eq!(lab.current("r3-c2-02").as_deref(), Some("releases/1.0"));
    for host in lab.host_names().iter().filter(|h| *h != "r3-c2-02") {
        assert_eq!(lab.current(host).as_deref(), Some("releases/2.0"), "{host}");
    }
}

/// Starts a deploy in the background and waits for `marker` to appear on `host`.
fn deploy_until_marker(
    lab: &support::Lab,
    playbook: &std::path::Path,
    host: &str,
    marker: &str,
) -> std::process::Child {
    let mut command = lab.deploy_command(playbook, &[]);
    command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = command.spawn().expect("pony");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !lab.root(host).join(marker).exists() {
        assert!(
            Instant::now() < deadline,
            "{marker} never appeared on {host}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Opens the `slow` step's gate on every host but `held` (whose `slow` holds until the
/// test acts on that host: no race between the task and a kill or pause).
fn open_gates_except(lab: &support::Lab, held: &str) {
    for host in lab.host_names().iter().filter(|h| *h != held) {
        std::fs::write(lab.root(host).join("go"), "").unwrap();
    }
}

const SLOW: &str = r#"
name: slow
vars: { version: "2.0" }
strategy: { max_failures: 1, max_unavailable: 100% }
steps:
  - name: stage
    run: mkdir -p {{ mail_root }}/releases/{{ version }}
    rollback: rm -rf {{ mail_root }}/releases/{{ version }}
    timeout: 3s
  - name: slow
    needs: [stage]
    run: touch {{ root }}/slow-started; while [ ! -e {{ root }}/go ]; do sleep 0.02; done
    timeout: 3s
  - name: switch
    needs: [slow]
    run: ln -sfn releases/{{ version }} {{ mail_root }}/current.tmp && mv -T {{ mail_root }}/current.tmp {{ mail_root }}/current
"#;

#[test]
fn a_host_killed_mid_run_fails_and_its_rollback_is_reported_incomplete() {
    let mut lab = lab();
    let playbook = lab.playbook(SLOW);
    open_gates_except(&lab, "r1-c2-01");
    let child = deploy_until_marker(&lab, &playbook, "r1-c2-01", "slow-started");
    lab.fleet.kill("r1-c2-01").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        code(&out),
        3,
        "rollback could not reach the dead host: {}",
        text(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("FAILED r1-c2-01"), "{stdout}");
    assert!(stdout.contains("ROLLBACK FAILED"), "{stdout}");
    assert!(lab.current("r1-c2-01").is_none());
    for host in lab.host_names().iter().filter(|h| *h != "r1-c2-01") {
        assert_eq!(lab.current(host).as_deref(), Some("releases/2.0"), "{host}");
    }
}

#[test]
fn a_hung_host_hits_the_step_timeout() {
    let mut lab = lab();
    let playbook = lab.playbook(SLOW);
    open_gates_except(&lab, "r2-c2-02");
    let child = Reaped::new(deploy_until_marker(
        &lab,
        &playbook,
        "r2-c2-02",
        "slow-started",
    ));
    lab.fleet.pause("r2-c2-02").unwrap();
    // Once every process of the host is stopped, its gate opens: only the pause can keep
    // its `slow` from finishing now.
    let sshd = lab.fleet.host("r2-c2-02").pid;
    support::wait_until("the paused host's processes to stop", || {
        support::tree_is_frozen(sshd)
    });
    std::fs::write(lab.root("r2-c2-02").join("go"), "").unwrap();
    // The run ends while the host is still stopped: it gave up on the host rather than
    // hang with it (a run that hung would fail the wait's bound).
    let out = child.wait_with_output().unwrap();
    lab.fleet.resume("r2-c2-02").unwrap();
    assert_eq!(code(&out), 3, "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("FAILED r2-c2-02") && stdout.contains("timed out after 3s"),
        "{stdout}"
    );
    assert!(
        lab.current("r2-c2-02").is_none(),
        "switch never ran on the hung host"
    );
    for host in lab.host_names().iter().filter(|h| *h != "r2-c2-02") {
        assert_eq!(lab.current(host).as_deref(), Some("releases/2.0"), "{host}");
    }
}

#[test]
fn until_polls_until_the_third_try_succeeds() {
    let lab = lab();
    let playbook = lab.playbook(
        r#"
name: poll
steps:
  - name: health
    run: n=$(cat {{ root }}/tries 2>/dev/null || echo 0); n=$((n+1)); echo $n > {{ root }}/tries; [ $n -ge 3 ]
    until: { retries: 5, delay: 100ms }
"#,
    );
    let out = lab.deploy(&playbook, &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    for host in lab.host_names() {
        assert_eq!(
            std::fs::read_to_string(lab.root(&host).join("tries"))
                .unwrap()
                .trim(),
            "3",
            "{host}"
        );
    }
}

#[test]
fn per_region_and_per_run_steps_run_once_per_region_and_once() {
    let lab = lab();
    let shared = lab.path("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let playbook = lab.playbook(
        r#"
name: once
steps:
  - { name: stage, run: "touch {{ root }}/staged" }
  - { name: schema, hosts: store, per: region, needs: [stage], run: "echo {{ host.region }} {{ host.name }} >> {{ shared }}/region.log" }
  - { name: announce, per: run, needs: [schema], run: "echo {{ host.name }} >> {{ shared }}/run.log" }
"#,
    );
    let out = lab.deploy(
        &playbook,
        &["--var", &format!("shared={}", shared.display())],
    );
    assert_eq!(code(&out), 0, "{}", text(&out));
    let mut regions: Vec<String> = std::fs::read_to_string(shared.join("region.log"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    regions.sort();
    assert_eq!(regions, vec!["r1 r1-c1-01", "r2 r2-c1-01", "r3 r3-c1-01"]);
    assert_eq!(
        std::fs::read_to_string(shared.join("run.log"))
            .unwrap()
            .lines()
            .count(),
        1
    );
}

#[test]
fn no_task_of_a_wave_starts_before_the_previous_wave_is_done() {
    let lab = lab();
    let shared = lab.path("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let playbook = lab.playbook(
        r#"
name: waves
strategy:
  waves:
    - { name: first, regions: [r1] }
    - { name: second, regions: [r2], pause: 200ms }
    - { name: rest, regions: ["*"] }
steps:
  - { name: a, run: "echo {{ wave.name }} start $(date +%s%N) >> {{ shared }}/waves.log; sleep 0.2" }
  - { name: b, needs: [a], run: "sleep 0.1; echo {{ wave.name }} end $(date +%s%N) >> {{ shared }}/waves.log" }
"#,
    );
    let out = lab.deploy(
        &playbook,
        &["--var", &format!("shared={}", shared.display())],
    );
    assert_eq!(code(&out), 0, "{}", text(&out));
    let mut starts: BTreeMap<String, Vec<u128>> = BTreeMap::new();
    let mut ends: BTreeMap<String, Vec<u128>> = BTreeMap::new();
    for line in std::fs::read_to_string(shared.join("waves.log"))
        .unwrap()
        .lines()
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let map = if parts[1] == "start" {
            &mut starts
        } else {
            &mut ends
        };
        map.entry(parts[0].to_string())
            .or_default()
            .push(parts[2].parse().unwrap());
    }
    for (earlier, later) in [("first", "second"), ("second", "rest")] {
        let last_end = ends[earlier].iter().max().unwrap();
        let first_start = starts[later].iter().min().unwrap();
        assert!(
            last_end < first_start,
            "wave {later} started before wave {earlier} ended"
        );
    }
    assert_eq!(starts["rest"].len(), 4);
}

#[test]
fn max_unavailable_is_never_exceeded() {
    let lab = lab_with(1, 1, 8);
    let shared = lab.path("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let playbook = lab.playbook(
        r#"
name: window
strategy: { max_unavailable: 25% }
steps:
  - { name: first, run: "echo start $(date +%s%N) {{ host.name }} >> {{ shared }}/c.log; sleep 0.3" }
  - { name: last, needs: [first], run: "sleep 0.2; echo end $(date +%s%N) {{ host.name }} >> {{ shared }}/c.log" }
"#,
    );
    let out = lab.deploy(
        &playbook,
        &["--var", &format!("shared={}", shared.display())],
    );
    assert_eq!(code(&out), 0, "{}", text(&out));
    let mut points: Vec<(u128, i32)> = Vec::new();
    for line in std::fs::read_to_string(shared.join("c.log"))
        .unwrap()
        .lines()
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        points.push((
            parts[1].parse().unwrap(),
            if parts[0] == "start" { 1 } else { -1 },
        ));
    }
    assert_eq!(points.len(), 16);
    points.sort_by_key(|(t, delta)| (*t, *delta));
    let (mut now, mut most) = (0, 0);
    for (_, delta) in points {
        now += delta;
        most = most.max(now);
    }
    assert_eq!(
        most, 2,
        "25% of 8 hosts: at most 2 between their first and last task, and the window is used"
    );
}

#[test]
fn dry_run_renders_every_command_and_touches_nothing() {
    let mut lab = lab();
    for host in lab.host_names() {
        lab.fleet.kill(&host).unwrap();
    }
    let playbook = lab.playbook(&release_playbook(FAST));
    let out = lab.deploy(&playbook, &["--dry-run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let root = lab.root("r1-c1-01");
    assert!(stdout.contains(&format!("stage@r1-c1-01  [creates {}/srv/mail/releases/2.0/.staged] mkdir -p {}/srv/mail/releases/2.0", root.display(), root.display())), "{stdout}");
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("switch@")).count(),
        12
    );
    for host in lab.host_names() {
        assert!(!lab.root(&host).join("srv").exists(), "{host} touched");
    }
    assert!(!lab.state.join("runs").exists(), "a dry run records no run");
}

#[test]
fn an_upload_is_skipped_the_second_time_and_templates_render_per_host() {
    let lab = lab();
    std::fs::write(
        lab.path("mail-2.0.tar.gz"),
        b"pretend this is a release tarball\n",
    )
    .unwrap();
    std::fs::write(
        lab.path("main.cf.j2"),
        "myhostname = {{ host.name }}.mail.example.net\nrelease = {{ version }}\n",
    )
    .unwrap();
    let playbook = lab.playbook(
        r#"
name: files
vars: { version: "2.0" }
steps:
  - name: upload-release
    upload: { src: "mail-{{ version }}.tar.gz", dest: "{{ mail_root }}/incoming/", mode: "0640" }
  - name: postfix-config
    template: { src: main.cf.j2, dest: "{{ root }}/etc/postfix/main.cf" }
"#,
    );
    let first = lab.deploy(&playbook, &["--output", "json"]);
    assert_eq!(code(&first), 0, "{}", text(&first));
    let uploaded = lab
        .root("r2-c2-01")
        .join("srv/mail/incoming/mail-2.0.tar.gz");
    assert_eq!(
        std::fs::read(&uploaded).unwrap(),
        b"pretend this is a release tarball\n"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&uploaded).unwrap().permissions().mode() & 0o7777,
        0o640
    );
    assert_eq!(
        std::fs::read_to_string(lab.root("r3-c1-02").join("etc/postfix/main.cf")).unwrap(),
        "myhostname = r3-c1-02.mail.example.net\nrelease = 2.0\n"
    );
    assert_eq!(
        count_events(&events(&first), "task_finished", "upload-release"),
        12
    );
    let modified = std::fs::metadata(&uploaded).unwrap().modified().unwrap();
    let second = lab.deploy(&playbook, &["--output", "json"]);
    assert_eq!(code(&second), 0, "{}", text(&second));
    let events = events(&second);
    assert_eq!(
        count_events(&events, "task_skipped", "upload-release"),
        12,
        "sha256 matched everywhere"
    );
    assert_eq!(count_events(&events, "task_skipped", "postfix-config"), 12);
    assert_eq!(
        std::fs::metadata(&uploaded).unwrap().modified().unwrap(),
        modified,
        "not rewritten"
    );
}

#[test]
fn a_secret_never_appears_in_output_journal_or_logs() {
    let lab = lab();
    lab.make_fail("r1-c2-02", "login");
    let playbook = lab.playbook(
        r#"
name: secret
vars: { api_token: tok-ABCDEF-123 }
strategy: { max_failures: 1 }
steps:
  - name: login
    run: echo "using {{ db_password }} and {{ api_token }}"; if [ -e {{ root }}/fail-login ]; then echo "bad password {{ db_password }}" >&2; exit 1; fi
"#,
    );
    for output in ["human", "json"] {
        let out = lab.deploy(
            &playbook,
            &[
                "--secret-var",
                "db_password=hunter2-s3cret",
                "--output",
                output,
                "-v",
            ],
        );
        assert_eq!(code(&out), 1, "{}", text(&out));
        let all = text(&out);
        assert!(
            !all.contains("hunter2-s3cret") && !all.contains("tok-ABCDEF-123"),
            "{all}"
        );
        assert!(all.contains("bad password ***"), "{all}");
    }
    let mut stored = String::new();
    for run in std::fs::read_dir(lab.state.join("runs")).unwrap() {
        let run = run.unwrap().path();
        stored.push_str(&std::fs::read_to_string(run.join("journal.jsonl")).unwrap());
        stored.push_str(&std::fs::read_to_string(run.join("vars.json")).unwrap());
        for log in std::fs::read_dir(run.join("logs")).unwrap() {
            stored.push_str(&std::fs::read_to_string(log.unwrap().path()).unwrap());
        }
    }
    assert!(stored.contains("***"));
    assert!(
        !stored.contains("hunter2-s3cret") && !stored.contains("tok-ABCDEF-123"),
        "{stored}"
    );
}

#[test]
fn a_failed_host_keeps_its_place_in_the_window_until_it_is_rolled_back() {
    let lab = lab_with(1, 1, 3);
    let shared = lab.path("shared");
    std::fs::create_dir_all(&shared).unwrap();
    lab.make_fail("r1-c1-01", "a");
    let playbook = lab.playbook(
        r#"
name: window-held
strategy: { max_unavailable: 1, max_failures: 1 }
steps:
  - name: a
    run: echo start $(date +%s%N) {{ host.name }} >> {{ shared }}/log; test ! -e {{ root }}/fail-a
    rollback: sleep 0.5; echo restored $(date +%s%N) {{ host.name }} >> {{ shared }}/log
"#,
    );
    let out = lab.deploy(
        &playbook,
        &["--var", &format!("shared={}", shared.display())],
    );
    assert_eq!(code(&out), 1, "{}", text(&out));
    let log = std::fs::read_to_string(shared.join("log")).unwrap();
    let time = |what: &str, host: &str| -> u128 {
        log.lines()
            .find(|l| l.starts_with(what) && l.ends_with(host))
            .unwrap_or_else(|| panic!("no {what} of {host} in\n{log}"))
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap()
    };
    let restored = time("restored", "r1-c1-01");
    assert!(time("start", "r1-c1-01") < restored);
    assert!(
        time("start", "r1-c1-02") > restored,
        "with max_unavailable 1, r1-c1-02 waits for r1-c1-01's rollback:\n{log}"
    );
}
