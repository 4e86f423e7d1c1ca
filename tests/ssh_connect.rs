//! How pony opens SSH connections, against real sshd servers on loopback: handshake gates
//! through a jump host (counted by a wrapper around the real `ssh` that logs each master
//! launch), honest connection attempts to a hung host with the inventory's
//! `connect_timeout`/`connect_retries`, `ssh.options` reaching ssh, and no ssh process
//! outliving a killed pony.

mod support;

use serde_yaml::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::{lab_with, text, yaml_at as at};

fn s(text: &str) -> Value {
    Value::String(text.into())
}

/// A `bin/ssh` that runs the real ssh and, for master launches (`-M`), logs `start PID
/// ARGS` before and `end PID` after (the launch ends once the master is authenticated and
/// has gone to the background). Returns (PATH for pony, the log).
fn ssh_wrapper(dir: &Path) -> (String, PathBuf) {
    let real = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v ssh"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    assert!(real.starts_with('/'), "no ssh on PATH: {real:?}");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.join("ssh-launches.log");
    let script = format!(
        "#!/bin/sh\n\
         case \" $* \" in *\" -M \"*) ;; *) exec {real} \"$@\" ;; esac\n\
         echo \"start $$ $*\" >> {log}\n\
         {real} \"$@\"\n\
         rc=$?\n\
         echo \"end $$ $rc\" >> {log}\n\
         exit $rc\n",
        log = log.display()
    );
    let path = bin.join("ssh");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path_var = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (path_var, log)
}

/// Master launches in the log: (how many started, the most in progress at once).
fn launches(log: &Path) -> (usize, usize) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let (mut started, mut now, mut most) = (0, 0usize, 0);
    for line in text.lines() {
        if line.starts_with("start ") {
            started += 1;
            now += 1;
            most = most.max(now);
        } else if line.starts_with("end ") {
            now -= 1;
        }
    }
    (started, most)
}

fn json_lines(output: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn ping_and_exec_through_one_jump_host_open_at_most_handshakes_connections_at_once() {
    let lab = lab_with(1, 2, 4);
    let bastion = lab.fleet.host("r1-c1-01").clone();
    let user = lab.fleet.user().to_string();
    // One bastion, spelled two ways; the bastion itself is a host with `jump: none`.
    lab.edit_inventory(|root| {
        let jump = format!("{}:{}", bastion.address, bastion.port);
        at(root, &["defaults", "ssh"]).insert(s("jump"), s(&jump));
        at(root, &["regions", "r1", "clusters", "r1-c2", "ssh"])
            .insert(s("jump"), s(&format!("{user}@{jump}")));
        at(
            root,
            &[
                "regions", "r1", "clusters", "r1-c1", "hosts", "r1-c1-01", "ssh",
            ],
        )
        .insert(s("jump"), s("none"));
    });
    let (path, log) = ssh_wrapper(lab.dir.path());
    let inventory = lab.inventory.to_str().unwrap();

    let out = lab
        .pony(&[
            "ping",
            "-i",
            inventory,
            "--handshakes",
            "2",
            "--output",
            "json",
        ])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let summary = json_lines(&out).pop().unwrap();
    assert_eq!(summary["reachable"], 8, "{}", text(&out));
    let (started, most) = launches(&log);
    assert_eq!(started, 8, "one master per host");
    assert!(
        most <= 2,
        "{most} handshakes at once through the bastion's sshd"
    );
    let launched = std::fs::read_to_string(&log).unwrap();
    let bastion_sshd = format!("{}:{} ", bastion.address, bastion.port);
    assert_eq!(
        launched.matches(" -J none ").count(),
        1,
        "the bastion itself does not jump: {launched}"
    );
    assert_eq!(
        launched.matches(&bastion_sshd).count(),
        7,
        "every other host jumps through it: {launched}"
    );

    std::fs::remove_file(&log).unwrap();
    let out = lab
        .pony(&[
            "exec",
            "-i",
            inventory,
            "--handshakes",
            "3",
            "--",
            "echo $PONY_LAB_HOST",
        ])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("8 hosts: 8 ok, 0 failed"), "{stdout}");
    assert!(stdout.contains("r1-c2-04"), "{stdout}");
    let (started, most) = launches(&log);
    assert_eq!(started, 8, "one master per host");
    assert!(
        most <= 3,
        "{most} handshakes at once through the bastion's sshd"
    );
}

#[test]
fn a_hung_host_is_given_up_on_after_the_configured_attempts_and_says_so() {
    let mut lab = lab_with(1, 1, 2);
    let hung = lab.fleet.host("r1-c1-02").clone();
    lab.edit_inventory(|root| {
        let ssh = at(root, &["defaults", "ssh"]);
        ssh.insert(s("connect_timeout"), s("1s"));
        ssh.insert(s("connect_retries"), Value::from(2));
    });
    lab.fleet.pause("r1-c1-02").unwrap();
    let (path, log) = ssh_wrapper(lab.dir.path());
    let playbook =
        lab.playbook("name: marker\nsteps:\n  - name: touch\n    run: touch {{ root }}/ran\n");
    let out = lab
        .deploy_command(&playbook, &["--output", "json"])
        .env("PATH", &path)
        .output()
        .unwrap();
    lab.fleet.resume("r1-c1-02").unwrap();
    // 1: the host failed and its rollback completed (nothing had run there).
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(lab.root("r1-c1-01").join("ran").exists(), "{}", text(&out));
    assert!(!lab.root("r1-c1-02").join("ran").exists());

    // The real number of launches towards the hung host...
    let launched = std::fs::read_to_string(&log).unwrap();
    let toward_hung = launched
        .lines()
        .filter(|l| l.starts_with("start ") && l.ends_with(&format!(" {}", hung.address)))
        .count();
    assert_eq!(toward_hung, 3, "1 attempt + connect_retries 2: {launched}");
    // ...is what the event stream and the host's log say.
    let failed: Vec<serde_json::Value> = json_lines(&out)
        .into_iter()
        .filter(|e| e["event"] == "task_failed")
        .collect();
    assert_eq!(failed.len(), 1, "{}", text(&out));
    assert_eq!(failed[0]["task"]["host"], "r1-c1-02");
    assert_eq!(failed[0]["attempts"], 3, "{}", failed[0]);
    assert!(
        failed[0]["error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("timed out"),
        "{}",
        failed[0]
    );
    let logs: Vec<PathBuf> = glob::glob(&format!("{}/**/logs/r1-c1-02.log", lab.state.display()))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    let host_log = std::fs::read_to_string(&logs[0]).unwrap();
    assert!(host_log.contains("(3 attempt(s)"), "{host_log}");
}

#[test]
fn bad_connect_settings_are_refused_naming_the_file_and_key() {
    let lab = lab_with(1, 1, 1);
    for (key, value, shown) in [
        ("connect_timeout", s("500ms"), "connect_timeout: 500ms"),
        ("connect_retries", Value::from(-1), "connect_retries: -1"),
        ("control_persist", s("forever"), "control_persist: forever"),
    ] {
        lab.edit_inventory(|root| {
            at(root, &["regions", "r1", "ssh"]).insert(s(key), value.clone());
        });
        let out = lab
            .pony(&["ping", "-i", lab.inventory.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("{}:", lab.inventory.display())),
            "{stderr}"
        );
        assert!(stderr.contains(shown), "{stderr}");
        assert!(stderr.contains("nothing ran"), "{stderr}");
        lab.edit_inventory(|root| {
            at(root, &["regions", "r1", "ssh"]).remove(s(key));
        });
    }
}

#[test]
fn ssh_options_reach_ssh() {
    let lab = lab_with(1, 1, 2);
    let recorded = lab.path("recorded_known_hosts");
    // Keys go where the option says, not to the lab's known_hosts.
    lab.edit_inventory(|root| {
        at(root, &["defaults", "ssh", "options"])
            .insert(s("UserKnownHostsFile"), s(&recorded.display().to_string()));
    });
    let before = std::fs::read_to_string(lab.fleet.known_hosts_path()).unwrap();
    let inventory = lab.inventory.to_str().unwrap();
    let out = lab.pony(&["ping", "-i", inventory]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 host key"),
        "the option's empty known_hosts knows no host: {}",
        text(&out)
    );
    let out = lab
        .pony(&["ping", "-i", inventory, "--accept-new-host-keys"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let recorded_text = std::fs::read_to_string(&recorded).unwrap();
    for host in lab.fleet.hosts() {
        let name = format!("[{}]:{}", host.address, host.port);
        let found = Command::new("ssh-keygen")
            .arg("-F")
            .arg(&name)
            .arg("-f")
            .arg(&recorded)
            .output()
            .unwrap();
        assert!(found.status.success(), "{name} not in {recorded_text}");
    }
    assert_eq!(
        std::fs::read_to_string(lab.fleet.known_hosts_path()).unwrap(),
        before
    );
}

/// Pids of live processes whose command line contains `needle`.
fn processes_mentioning(needle: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        // Zombies have an empty command line and hold no connection.
        if cmdline.contains(needle) {
            found.push((pid, cmdline));
        }
    }
    found
}

fn wait_for(what: &str, bound: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + bound;
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn no_ssh_process_outlives_a_killed_pony_and_resume_starts_clean() {
    let lab = lab_with(1, 1, 2);
    // The control directory lives under $XDG_RUNTIME_DIR: this test's own.
    let runtime = lab.path("rt");
    std::fs::create_dir_all(&runtime).unwrap();
    let runtime_text = runtime.display().to_string();
    let playbook = lab.playbook(
        r#"
name: wait
steps:
  - name: hold
    run: touch {{ root }}/started; while [ ! -e {{ root }}/go ]; do sleep 0.1; done
  - name: after
    needs: [hold]
    run: touch {{ root }}/after
"#,
    );
    let stdout_path = lab.path("pony.out");
    let mut pony = lab
        .deploy_command(&playbook, &[])
        .env("XDG_RUNTIME_DIR", &runtime)
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let hosts = lab.host_names();
    wait_for(
        "the step to start on every host",
        Duration::from_secs(60),
        || hosts.iter().all(|h| lab.root(h).join("started").exists()),
    );
    let masters = processes_mentioning(&runtime_text);
    assert!(
        masters.len() >= hosts.len(),
        "one master per host under {runtime_text}: {masters:?}"
    );
    let control_dirs: Vec<PathBuf> = glob::glob(&format!("{runtime_text}/*/.ssh-connection*"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(control_dirs.len(), hosts.len(), "{control_dirs:?}");

    pony.kill().unwrap(); // SIGKILL: no cleanup of any kind runs in pony.
    pony.wait().unwrap();
    all_gone(&runtime_text, "the killed pony");

    // Resume finishes the run; it is not bothered by what the dead run left, and sweeps it.
    for host in &hosts {
        std::fs::write(lab.root(host).join("go"), "").unwrap();
    }
    let first_line = std::fs::read_to_string(&stdout_path).unwrap();
    let run_id = first_line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .trim_end_matches(':')
        .to_string();
    assert!(!run_id.is_empty(), "{first_line}");
    let out = lab
        .pony(&["resume", &run_id])
        .env("XDG_RUNTIME_DIR", &runtime)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for host in &hosts {
        assert!(lab.root(host).join("after").exists(), "{}", text(&out));
    }
    for dir in &control_dirs {
        assert!(!dir.exists(), "the dead run's {} was swept", dir.display());
    }
    all_gone(&runtime_text, "the resumed pony");
}

/// Waits (90 s at most: a bound, not a speed) until no process mentions `needle`; fails
/// naming the survivors, after killing them (they are this test's: its temp dir is in
/// their command line).
fn all_gone(needle: &str, after: &str) {
    let bound = Duration::from_secs(90);
    let deadline = Instant::now() + bound;
    let mut left = processes_mentioning(needle);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        left = processes_mentioning(needle);
    }
    if !left.is_empty() {
        for (pid, _) in &left {
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
        panic!("processes outlived {after} by {bound:?}: {left:?}");
    }
}

#[test]
fn a_task_longer_than_control_persist_keeps_its_master() {
    let lab = lab_with(1, 1, 2);
    lab.edit_inventory(|root| {
        at(root, &["defaults", "ssh"]).insert(s("control_persist"), s("1s"));
    });
    let (path, log) = ssh_wrapper(lab.dir.path());
    // `hold` outlasts control_persist several times; `after` runs on the same master.
    let playbook = lab.playbook(
        r#"
name: long
steps:
  - name: hold
    run: sleep 4 && touch {{ root }}/held
  - name: after
    needs: [hold]
    run: touch {{ root }}/after
"#,
    );
    let out = lab
        .deploy_command(&playbook, &[])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for host in lab.host_names() {
        assert!(lab.root(&host).join("held").exists());
        assert!(lab.root(&host).join("after").exists());
    }
    let (started, _) = launches(&log);
    let launched = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        started,
        2,
        "no master was lost and reopened:\n{launched}\n{}",
        text(&out)
    );
    assert!(launched.contains("ControlPersist=1s"), "{launched}");
}
