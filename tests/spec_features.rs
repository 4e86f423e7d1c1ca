//! Playbook and command-line features of the spec checked on real sshd hosts (the lab) or
//! in the journal and the event stream: `become`, jump hosts at deploy time, template
//! `mode`, `unless` at run time, step `retries`/`retry_delay`, `max_failures` as a
//! percentage, the `connections` and `sessions_per_host` limits, secrets in every output,
//! the CI progress line, resume after a halt, `PONY_*` defaults, `--var` precedence, and
//! `plan --limit`'s "N at once" against what deploy does.

mod support;

use support::code;

use serde_json::Value;
use serde_yaml::Value as Yaml;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use support::{
    events, journal, lab_with, only_run, release_playbook, text, wait_until, yaml_at as at, Lab,
};

fn read(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The last `task_finished` state of each label in the journal of the state dir's only run.
fn states(lab: &Lab) -> BTreeMap<String, String> {
    let (_, run_dir) = only_run(&lab.state);
    journal(&run_dir)
        .into_iter()
        .filter(|r| r["type"] == "task_finished")
        .map(|r| {
            let label = r["label"].as_str().unwrap().to_string();
            (label, r["state"].as_str().unwrap().to_string())
        })
        .collect()
}

fn state_of<'a>(states: &'a BTreeMap<String, String>, label: &str) -> &'a str {
    states
        .get(label)
        .map(String::as_str)
        .unwrap_or_else(|| panic!("no task_finished for {label}: {states:?}"))
}

/// The most hosts "in flight" (between their first `task_started` and their
/// `host_finished`) at any point of the event stream, per key (`cluster`, or one key for
/// the whole run).
fn most_in_flight(events: &[Value], key: impl Fn(&str, &str) -> String) -> BTreeMap<String, usize> {
    let mut flying: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut most: BTreeMap<String, usize> = BTreeMap::new();
    for e in events {
        let (host, cluster, start) = match e["event"].as_str().unwrap() {
            "task_started" => (&e["task"]["host"], &e["task"]["cluster"], true),
            "host_finished" => (&e["host"], &e["cluster"], false),
            _ => continue,
        };
        let (host, cluster) = (host.as_str().unwrap(), cluster.as_str().unwrap());
        let set = flying.entry(key(host, cluster)).or_default();
        if start {
            set.insert(host.to_string());
        } else {
            set.remove(host);
        }
        let n = set.len();
        let m = most.entry(key(host, cluster)).or_default();
        *m = (*m).max(n);
    }
    most
}

fn s(text: &str) -> Yaml {
    Yaml::String(text.into())
}

#[test]
fn become_runs_the_command_its_unless_and_rollback_through_sudo_and_a_plain_step_does_not() {
    let lab = lab_with(1, 1, 2);
    lab.make_fail("r1-c1-02", "root");
    let playbook = lab.playbook(
        r#"
name: become
strategy: { max_failures: 1 }
steps:
  - name: plain
    run: env > {{ root }}/plain.env
  - name: root
    needs: [plain]
    become: true
    unless: env > {{ root }}/unless.env; false
    run: env > {{ root }}/become.env; test ! -e {{ root }}/fail-root
    rollback: env > {{ root }}/rollback.env
"#,
    );
    let out = lab.deploy(&playbook, &[]);
    assert_eq!(
        code(&out),
        1,
        "one host failed and was rolled back: {}",
        text(&out)
    );
    for host in lab.host_names() {
        let root = lab.root(&host);
        for file in ["become.env", "unless.env"] {
            let env = read(root.join(file));
            assert!(
                env.lines().any(|l| l == "SUDO_USER=root"),
                "{host} {file}: {env}"
            );
            assert!(
                env.lines()
                    .any(|l| l.starts_with("SUDO_COMMAND=") && l.ends_with("sh -s")),
                "{host} {file}: {env}"
            );
        }
        let plain = read(root.join("plain.env"));
        assert!(
            !plain.contains("SUDO_"),
            "{host}: a plain step ran through sudo: {plain}"
        );
    }
    let rollback = read(lab.root("r1-c1-02").join("rollback.env"));
    assert!(
        rollback.lines().any(|l| l == "SUDO_USER=root"),
        "{rollback}"
    );
    assert!(!lab.root("r1-c1-01").join("rollback.env").exists());
}

#[test]
fn a_deploy_through_a_jump_host_reaches_every_other_host_via_the_bastions_sshd() {
    let lab = lab_with(1, 1, 3);
    let bastion = lab.fleet.host("r1-c1-01").clone();
    lab.edit_inventory(|root| {
        let jump = format!("{}:{}", bastion.address, bastion.port);
        at(root, &["defaults", "ssh"]).insert(s("jump"), s(&jump));
        at(
            root,
            &[
                "regions", "r1", "clusters", "r1-c1", "hosts", "r1-c1-01", "ssh",
            ],
        )
        .insert(s("jump"), s("none"));
    });
    let gate = lab.path("gate");
    let playbook = lab.playbook(&format!(
        "name: jump\nsteps:\n  - name: hold\n    run: touch {{{{ root }}}}/started; while [ ! -e {} ]; do sleep 0.02; done; touch {{{{ root }}}}/done\n",
        gate.display()
    ));
    let child = lab
        .deploy_command(&playbook, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let hosts = lab.host_names();
    wait_until("every host's task to start", || {
        hosts.iter().all(|h| lab.root(h).join("started").exists())
    });
    // While the tasks run, each target's sshd has exactly the connections the bastion's
    // sshd opened to it (the hop), and none from the controller.
    let table = support::tcp_table();
    for host in lab.fleet.hosts().iter().filter(|h| h.name != bastion.name) {
        let into: Vec<_> = table
            .iter()
            .filter(|e| {
                e.state == "01" && e.remote == std::net::SocketAddrV4::new(host.address, host.port)
            })
            .collect();
        assert!(!into.is_empty(), "no connection to {}", host.name);
        for entry in into {
            let owners = support::socket_owners(entry.inode);
            assert!(
                !owners.is_empty()
                    && owners
                        .iter()
                        .all(|&pid| support::descends_from(pid, bastion.pid)),
                "{}: a connection not made by the bastion's sshd (owners {owners:?})",
                host.name
            );
        }
    }
    std::fs::write(&gate, "").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    for host in &hosts {
        assert!(lab.root(host).join("done").exists(), "{host}");
    }
}

#[test]
fn upload_and_template_mode_set_the_files_permissions_on_the_hosts() {
    let lab = lab_with(1, 1, 2);
    std::fs::write(lab.path("secret.key"), "key material\n").unwrap();
    std::fs::write(lab.path("main.cf.j2"), "myhostname = {{ host.name }}\n").unwrap();
    let playbook = lab.playbook(
        r#"
name: modes
steps:
  - name: key
    upload: { src: secret.key, dest: "{{ root }}/etc/secret.key", mode: "0600" }
  - name: config
    template: { src: main.cf.j2, dest: "{{ root }}/etc/main.cf", mode: "0o640" }
  - name: script
    template: { src: main.cf.j2, dest: "{{ root }}/etc/run.sh", mode: "0750" }
"#,
    );
    let out = lab.deploy(&playbook, &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    for host in lab.host_names() {
        let etc = lab.root(&host).join("etc");
        let mode = |f: &str| std::fs::metadata(etc.join(f)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode("secret.key"), 0o600, "{host}");
        assert_eq!(mode("main.cf"), 0o640, "{host}");
        assert_eq!(mode("run.sh"), 0o750, "{host}");
        assert_eq!(read(etc.join("main.cf")), format!("myhostname = {host}\n"));
    }
}

#[test]
fn unless_is_checked_on_the_host_when_the_task_runs_and_a_skipped_task_is_not_rolled_back() {
    let lab = lab_with(1, 1, 2);
    lab.make_fail("r1-c1-01", "after");
    lab.make_fail("r1-c1-02", "after");
    // `prepare` makes the guard true on r1-c1-01 during the run, so only a check made at
    // run time (not when planning) skips `guarded` there.
    let playbook = lab.playbook(
        r#"
name: unless
strategy: { max_failures: 2 }
steps:
  - { name: prepare, hosts: r1-c1-01, run: "touch {{ root }}/already" }
  - name: guarded
    needs: [{ step: prepare, scope: run }]
    unless: test -e {{ root }}/already
    run: touch {{ root }}/ran
    rollback: touch {{ root }}/guarded-rolled-back
  - name: after
    needs: [guarded]
    run: test ! -e {{ root }}/fail-after
"#,
    );
    let out = lab.deploy(&playbook, &["--output", "json"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(!lab.root("r1-c1-01").join("ran").exists());
    assert!(lab.root("r1-c1-02").join("ran").exists());
    let skipped: Vec<Value> = events(&out)
        .into_iter()
        .filter(|e| e["event"] == "task_skipped")
        .collect();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0]["task"]["host"], "r1-c1-01");
    assert!(
        skipped[0]["reason"].as_str().unwrap().starts_with("unless"),
        "{}",
        skipped[0]
    );
    let states = states(&lab);
    assert_eq!(state_of(&states, "guarded@r1-c1-01"), "skipped");
    assert_eq!(state_of(&states, "guarded@r1-c1-02"), "succeeded");
    // Both hosts failed `after` and were rolled back: only the task that ran is undone.
    assert!(!lab.root("r1-c1-01").join("guarded-rolled-back").exists());
    assert!(lab.root("r1-c1-02").join("guarded-rolled-back").exists());
}

/// Nanosecond timestamps, one a line, from a host's file.
fn stamps(path: &Path) -> Vec<u128> {
    read(path)
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect()
}

#[test]
fn retries_rerun_a_failing_command_retry_delay_apart_and_give_up_after_the_last() {
    let lab = lab_with(1, 1, 2);
    // r1-c1-01 succeeds on its third attempt; r1-c1-02 never does.
    lab.make_fail("r1-c1-02", "flaky");
    let playbook = lab.playbook(
        r#"
name: retries
strategy: { max_failures: 1 }
steps:
  - name: flaky
    retries: 2
    retry_delay: 300ms
    run: date +%s%N >> {{ root }}/tries; test ! -e {{ root }}/fail-flaky && test $(wc -l < {{ root }}/tries) -ge 3
"#,
    );
    let out = lab.deploy(&playbook, &["--output", "json"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let events = events(&out);
    let finished: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "task_finished")
        .collect();
    assert_eq!(finished.len(), 1, "{events:?}");
    assert_eq!(finished[0]["task"]["host"], "r1-c1-01");
    assert_eq!(finished[0]["attempts"], 3);
    let failed: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "task_failed")
        .collect();
    assert_eq!(failed.len(), 1, "{events:?}");
    assert_eq!(failed[0]["task"]["host"], "r1-c1-02");
    assert_eq!(failed[0]["attempts"], 3, "1 attempt + retries 2");
    for host in lab.host_names() {
        let tries = stamps(&lab.root(&host).join("tries"));
        assert_eq!(tries.len(), 3, "{host}: the command ran 3 times");
        for pair in tries.windows(2) {
            assert!(
                pair[1] - pair[0] >= 300_000_000,
                "{host}: attempts less than retry_delay apart: {tries:?}"
            );
        }
    }
    let states = states(&lab);
    assert_eq!(state_of(&states, "flaky@r1-c1-01"), "succeeded");
    assert_eq!(state_of(&states, "flaky@r1-c1-02"), "failed");
}

#[test]
fn max_failures_as_a_percentage_is_a_count_of_the_clusters_hosts() {
    let lab = lab_with(1, 1, 4);
    lab.install_old_release();
    // 50% of 4 hosts = 2 failures tolerated, each rolled back alone.
    lab.make_fail("r1-c1-01", "verify");
    lab.make_fail("r1-c1-03", "verify");
    let playbook = lab.playbook(&release_playbook(
        "  max_failures: 50%\n  on_failure: rollback-region",
    ));
    let out = lab.deploy(&playbook, &["--output", "json"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let events = events(&out);
    assert!(
        !events.iter().any(|e| e["event"] == "budget_exceeded"),
        "{events:?}"
    );
    for (host, release) in [
        ("r1-c1-01", "releases/1.0"),
        ("r1-c1-02", "releases/2.0"),
        ("r1-c1-03", "releases/1.0"),
        ("r1-c1-04", "releases/2.0"),
    ] {
        assert_eq!(lab.current(host).as_deref(), Some(release), "{host}");
    }

    // A third failure is beyond the budget: the region is rolled back.
    std::fs::remove_dir_all(&lab.state).unwrap();
    for host in lab.host_names() {
        std::fs::remove_dir_all(lab.root(&host).join("srv")).unwrap();
    }
    lab.install_old_release();
    lab.make_fail("r1-c1-04", "verify");
    let out = lab.deploy(&playbook, &["--output", "json"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let events = support::events(&out);
    let exceeded: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "budget_exceeded")
        .collect();
    assert_eq!(exceeded.len(), 1, "{events:?}");
    assert_eq!(exceeded[0]["max_failures"], 2, "{}", exceeded[0]);
    assert_eq!(exceeded[0]["failed_hosts"], 3, "{}", exceeded[0]);
    for host in lab.host_names() {
        assert_eq!(
            lab.current(&host).as_deref(),
            Some("releases/1.0"),
            "{host}"
        );
    }
}

#[test]
fn the_connections_limit_bounds_the_hosts_in_flight_over_the_whole_run() {
    let lab = lab_with(2, 2, 2);
    let playbook = lab.playbook(
        r#"
name: connections
strategy: { connections: 3 }
steps:
  - { name: a, run: "sleep 0.1; touch {{ root }}/a" }
  - { name: b, needs: [a], run: "sleep 0.1; touch {{ root }}/b" }
"#,
    );
    let out = lab.deploy(&playbook, &["--output", "json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let most = most_in_flight(&events(&out), |_, _| "run".into());
    assert_eq!(
        most["run"], 3,
        "strategy.connections 3: 3 hosts at once, and no more"
    );
    // --connections overrides the playbook.
    std::fs::remove_dir_all(&lab.state).unwrap();
    let out = lab.deploy(&playbook, &["--output", "json", "--connections", "2"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let most = most_in_flight(&events(&out), |_, _| "run".into());
    assert_eq!(most["run"], 2, "--connections 2");
    for host in lab.host_names() {
        assert!(lab.root(&host).join("b").exists(), "{host}");
    }
}

#[test]
fn sessions_per_host_bounds_the_commands_running_at_once_on_one_host() {
    let lab = lab_with(1, 1, 1);
    let steps: String = (1..=6)
        .map(|n| {
            format!(
                "  - {{ name: s{n}, run: \"echo start >> {{{{ root }}}}/s.log; sleep 0.3; echo end >> {{{{ root }}}}/s.log\" }}\n"
            )
        })
        .collect();
    let playbook = lab.playbook(&format!(
        "name: sessions\nstrategy: {{ sessions_per_host: 2 }}\nsteps:\n{steps}"
    ));
    let out = lab.deploy(&playbook, &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let log = read(lab.root("r1-c1-01").join("s.log"));
    let (mut now, mut most) = (0i32, 0i32);
    for line in log.lines() {
        now += if line == "start" { 1 } else { -1 };
        most = most.max(now);
    }
    assert_eq!(log.lines().count(), 12, "{log}");
    assert!(
        most <= 2,
        "{most} commands at once on one host with sessions_per_host 2:\n{log}"
    );
}

#[test]
fn a_secret_var_never_appears_in_junit_dry_run_status_history_journal_or_host_logs() {
    let lab = lab_with(1, 1, 2);
    lab.make_fail("r1-c1-02", "login");
    let secret = "hunter2-s3cret-value";
    let playbook = lab.playbook(
        r#"
name: secret
strategy: { max_failures: 1 }
steps:
  - name: login
    run: echo "{{ db_pass }}" > {{ root }}/pass; echo "login with {{ db_pass }}"; if [ -e {{ root }}/fail-login ]; then echo "refused {{ db_pass }}" >&2; exit 1; fi
    rollback: echo "logout {{ db_pass }}"
"#,
    );
    let secret_var = format!("db_pass={secret}");
    let junit = lab.path("junit.xml");
    let out = lab.deploy(
        &playbook,
        &[
            "--secret-var",
            &secret_var,
            "--junit",
            junit.to_str().unwrap(),
            "-v",
        ],
    );
    assert_eq!(code(&out), 1, "{}", text(&out));
    let mut seen = vec![("deploy", text(&out))];
    let junit_text = read(&junit);
    assert!(
        junit_text.contains("refused ***"),
        "the failure is in the report, masked: {junit_text}"
    );
    seen.push(("junit", junit_text));
    let (run, run_dir) = only_run(&lab.state);
    seen.push(("journal", read(run_dir.join("journal.jsonl"))));
    seen.push(("vars.json", read(run_dir.join("vars.json"))));
    for log in std::fs::read_dir(run_dir.join("logs")).unwrap() {
        seen.push(("host log", read(log.unwrap().path())));
    }
    for args in [
        vec!["status", run.as_str()],
        vec!["--output", "json", "status", run.as_str()],
        vec!["history"],
        vec!["--output", "json", "history"],
    ] {
        let out = lab.pony(&args).output().unwrap();
        assert_eq!(code(&out), 0, "{args:?}: {}", text(&out));
        seen.push(("status/history", text(&out)));
    }
    let dry = lab.deploy(&playbook, &["--secret-var", &secret_var, "--dry-run"]);
    assert_eq!(code(&dry), 0, "{}", text(&dry));
    let dry_text = text(&dry);
    assert!(dry_text.contains("login with ***"), "{dry_text}");
    seen.push(("dry run", dry_text));
    for (what, body) in &seen {
        assert!(
            !body.contains(secret),
            "the secret is in the {what}:\n{body}"
        );
    }
    // The hosts themselves got the real value.
    assert_eq!(read(lab.root("r1-c1-01").join("pass")).trim(), secret);
}

#[test]
fn ci_output_prints_progress_lines_at_the_chosen_interval_without_colour_or_redraws() {
    let lab = lab_with(1, 1, 3);
    // One host at a time. With `--progress-every 0s` every outcome brings a progress
    // line; at the default 10 s a run this short would print three only if it took 20 s.
    // How the interval holds lines back is the reporter's unit test (`report::plain`, on
    // a paused clock); this one checks what reaches a CI log.
    let playbook = lab.playbook(
        "name: progress\nstrategy: { max_unavailable: 1 }\nsteps:\n  - { name: work, run: \"true\" }\n",
    );
    let out = lab
        .deploy_command(&playbook, &["--progress-every", "0s"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("run "), "{stdout}");
    // Each counts the hosts whose outcome was printed above it, and each count is there.
    let mut counts = Vec::new();
    for (at, line) in lines.iter().enumerate() {
        let Some(progress) = line.strip_prefix("progress: ") else {
            continue;
        };
        let done = lines[..at]
            .iter()
            .filter(|l| l.starts_with("ok ") && l.contains("r1-c1-0"))
            .count();
        assert!(
            progress.starts_with(&format!("{done}/3 hosts done, 0 failed")),
            "{stdout}"
        );
        counts.push(done);
    }
    counts.dedup();
    assert_eq!(counts, [0, 1, 2, 3], "{stdout}");
    assert!(
        !stdout.contains('\u{1b}'),
        "no colour or cursor control on a pipe: {stdout:?}"
    );
    assert!(
        !stdout.contains('\r'),
        "no bar redraws on a pipe: {stdout:?}"
    );
    // A value that is not a duration is refused before anything runs.
    let bad = lab
        .deploy_command(&playbook, &["--progress-every", "often"])
        .output()
        .unwrap();
    assert_eq!(code(&bad), 2, "{}", text(&bad));
    assert!(text(&bad).contains("--progress-every"), "{}", text(&bad));
}

#[test]
fn resume_after_a_halt_runs_the_hosts_that_never_started_and_retries_the_failed_one() {
    let lab = lab_with(1, 1, 3);
    lab.install_old_release();
    lab.make_fail("r1-c1-01", "switch");
    let playbook = lab.playbook(
        &release_playbook("  max_unavailable: 1\n  max_failures: 0\n  on_failure: halt")
            .replace(
                "run: mkdir -p",
                "run: echo x >> {{ root }}/count-stage && mkdir -p",
            )
            .replace("/.staged", ""),
    );
    let out = lab.deploy(&playbook, &[]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    let (run, run_dir) = only_run(&lab.state);
    assert_eq!(
        support::started_hosts(&journal(&run_dir))
            .into_iter()
            .collect::<Vec<_>>(),
        ["r1-c1-01"],
        "the halt came before the other hosts started"
    );
    assert_eq!(lab.current("r1-c1-02").as_deref(), Some("releases/1.0"));

    std::fs::remove_file(lab.root("r1-c1-01").join("fail-switch")).unwrap();
    let out = lab.pony(&["resume", &run]).output().unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    for host in lab.host_names() {
        assert_eq!(
            lab.current(&host).as_deref(),
            Some("releases/2.0"),
            "{host}"
        );
        assert_eq!(
            read(lab.root(&host).join("count-stage")).lines().count(),
            1,
            "{host}: stage once"
        );
    }
    let records = journal(&run_dir);
    let switch_runs = records
        .iter()
        .filter(|r| r["type"] == "task_started" && r["label"] == "switch@r1-c1-01")
        .count();
    assert_eq!(switch_runs, 2, "the failed switch ran again on resume");
    assert_eq!(records.last().unwrap()["outcome"], "succeeded");
}

/// `pony` with no `--state-dir` argument: everything from `PONY_*`.
fn pony_from_env() -> std::process::Command {
    support::pony_bare()
}

#[test]
fn pony_environment_variables_give_the_state_dir_inventory_playbook_limit_output_and_yes() {
    let lab = lab_with(1, 2, 2);
    let playbook =
        lab.playbook("name: env\nsteps:\n  - { name: mark, run: \"touch {{ root }}/marked\" }\n");
    let out = pony_from_env()
        .arg("deploy")
        .env("PONY_STATE_DIR", &lab.state)
        .env("PONY_INVENTORY", &lab.inventory)
        .env("PONY_PLAYBOOK", &playbook)
        .env("PONY_LIMIT", "r1-c2")
        .env("PONY_OUTPUT", "json")
        .env("PONY_YES", "true")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let events = events(&out);
    assert_eq!(events.last().unwrap()["event"], "summary", "JSON on stdout");
    for host in lab.host_names() {
        assert_eq!(
            lab.root(&host).join("marked").exists(),
            host.starts_with("r1-c2-"),
            "{host}: PONY_LIMIT=r1-c2"
        );
    }
    only_run(&lab.state);
    // A command-line flag beats its variable.
    let out = pony_from_env()
        .args(["deploy", "--limit", "r1-c1-01", "--output", "human"])
        .env("PONY_STATE_DIR", &lab.state)
        .env("PONY_INVENTORY", &lab.inventory)
        .env("PONY_PLAYBOOK", &playbook)
        .env("PONY_LIMIT", "r1-c2")
        .env("PONY_OUTPUT", "json")
        .env("PONY_YES", "true")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        !String::from_utf8_lossy(&out.stdout).starts_with('{'),
        "{}",
        text(&out)
    );
    assert!(lab.root("r1-c1-01").join("marked").exists());
    assert!(!lab.root("r1-c1-02").join("marked").exists());
}

#[test]
fn a_var_on_the_command_line_beats_inventory_vars_which_beat_the_playbooks() {
    let lab = lab_with(1, 2, 2);
    lab.edit_inventory(|root| {
        at(root, &["defaults", "vars"]).insert(s("color"), s("inventory"));
        at(root, &["regions", "r1", "clusters", "r1-c2", "vars"]).insert(s("color"), s("cluster"));
        at(
            root,
            &[
                "regions", "r1", "clusters", "r1-c2", "hosts", "r1-c2-02", "vars",
            ],
        )
        .insert(s("color"), s("host"));
    });
    let playbook = lab.playbook(
        "name: vars\nvars: { color: playbook, shape: playbook }\nsteps:\n  - { name: paint, run: \"echo {{ color }} {{ shape }} > {{ root }}/paint\" }\n",
    );
    let painted = |host: &str| read(lab.root(host).join("paint")).trim().to_string();
    let out = lab.deploy(&playbook, &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(painted("r1-c1-01"), "inventory playbook");
    assert_eq!(painted("r1-c2-01"), "cluster playbook");
    assert_eq!(painted("r1-c2-02"), "host playbook");
    let out = lab.deploy(&playbook, &["--var", "color=cli", "-e", "shape=cli"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    for host in lab.host_names() {
        assert_eq!(painted(&host), "cli cli", "{host}");
    }
}

#[test]
fn plan_limit_prints_per_cluster_the_hosts_at_once_that_deploy_then_has_in_flight() {
    let lab = lab_with(1, 2, 4);
    let playbook = lab.playbook(
        r#"
name: window
strategy: { max_unavailable: 50% }
steps:
  - { name: a, run: "sleep 0.1" }
  - { name: b, needs: [a], run: "sleep 0.1" }
"#,
    );
    // r1-c1 keeps 4 hosts (50% = 2), r1-c2 3 of its 4 (50% = 1).
    let limit = "r1-c1:r1-c2-0[1-3]";
    let inventory = lab.inventory.to_str().unwrap();
    let out = lab
        .pony(&[
            "plan",
            "-i",
            inventory,
            playbook.to_str().unwrap(),
            "--limit",
            limit,
        ])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let plan = String::from_utf8_lossy(&out.stdout).to_string();
    let mut planned: BTreeMap<String, usize> = BTreeMap::new();
    for line in plan.lines().filter(|l| l.ends_with(" at once")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        planned.insert(
            words[0].to_string(),
            words[words.len() - 3].parse().unwrap(),
        );
    }
    assert_eq!(
        planned,
        BTreeMap::from([("r1-c1".to_string(), 2), ("r1-c2".to_string(), 1)]),
        "{plan}"
    );
    let out = lab.deploy(&playbook, &["--limit", limit, "--output", "json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let in_flight = most_in_flight(&events(&out), |_, cluster| cluster.to_string());
    assert_eq!(
        in_flight, planned,
        "deploy keeps to the plan's numbers, and uses them"
    );
}
