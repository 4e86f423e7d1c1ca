//! The everyday actions (`line:`, `service:`, `package:`) deployed on real sshd hosts:
//! a first run changes the hosts (the file edited, a real init.d service started with
//! its daemon's pid in its pidfile, a real .deb installed, then upgraded 1.0 → 2.0) and
//! journals `changed: true`; the same run again changes nothing and journals
//! `changed: false`; `--check --diff` before each says what would change (the file's
//! diff, "would start", "would upgrade 1.0 → 2.0") and changes nothing. A missing file,
//! an unknown service and a version apt cannot find fail their task with the host and
//! what the host said. The test has no systemd, so `service:` goes through the host's
//! `service` command, the init script the test writes and update-rc.d (all removed at
//! the end, as are the daemon and the package).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use support::{code, deploy_args, journal, lab_with, text, Lab};

/// What the test put on the machine outside the lab's folder: removed on drop, pass or fail.
struct Cleanup {
    service: String,
    package: String,
    pidfile: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(pid) = daemon_pid(&self.pidfile) {
            // The daemon the init script started for this test (its pid from its pidfile).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let _ = std::fs::remove_file(format!("/etc/init.d/{}", self.service));
        // The links `enabled: true` made in /etc/rc?.d.
        let _ = Command::new("update-rc.d")
            .args(["-f", &self.service, "remove"])
            .output();
        let _ = Command::new("dpkg")
            .args(["--purge", &self.package])
            .output();
    }
}

fn daemon_pid(pidfile: &Path) -> Option<u32> {
    std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()
}

/// Whether the init script starts at boot (an S link in /etc/rc2.d, as update-rc.d makes).
fn enabled(service: &str) -> bool {
    std::fs::read_dir("/etc/rc2.d").unwrap().flatten().any(|e| {
        let name = e.file_name().to_string_lossy().to_string();
        name.starts_with('S') && name.get(3..) == Some(service)
    })
}

fn running(pid: u32) -> bool {
    support::proc_stat(pid).is_some_and(|(state, _)| state != 'Z')
}

/// An LSB init script that starts a real daemon (a `sleep`) with a pidfile; it notes each
/// start/stop/reload in `calls`.
fn init_script(dir: &Path) -> String {
    let (pidfile, calls) = (dir.join("pid"), dir.join("calls"));
    format!(
        r#"#!/bin/sh
### BEGIN INIT INFO
# Provides: pony-test
# Default-Start: 2 3 4 5
# Default-Stop: 0 1 6
### END INIT INFO
P={pidfile}; C={calls}
alive() {{ [ -f "$P" ] && kill -0 "$(cat "$P")" 2>/dev/null; }}
case "$1" in
  start) alive && exit 0; setsid sleep 100000 </dev/null >/dev/null 2>&1 & echo $! > "$P"; echo start >> "$C"; echo "Starting the pony test daemon" ;;
  stop) alive && kill "$(cat "$P")"; rm -f "$P"; echo stop >> "$C" ;;
  status) alive || {{ echo "not running"; exit 3; }}; echo running ;;
  reload) echo reload >> "$C" ;;
  *) echo "usage: $0 start|stop|status|reload"; exit 2 ;;
esac
"#,
        pidfile = pidfile.display(),
        calls = calls.display()
    )
}

/// A .deb of `name` at `version` (no files, only its control data), built with dpkg-deb.
fn build_deb(dir: &Path, name: &str, version: &str) -> PathBuf {
    let tree = dir.join(format!("{name}-{version}"));
    std::fs::create_dir_all(tree.join("DEBIAN")).unwrap();
    std::fs::write(
        tree.join("DEBIAN/control"),
        format!("Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: pony tests <tests@example.org>\nDescription: a package the pony tests install\n"),
    )
    .unwrap();
    let deb = dir.join(format!("{name}_{version}_all.deb"));
    let out = Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group"])
        .arg(&tree)
        .arg(&deb)
        .output()
        .expect("dpkg-deb (the dpkg package) is needed by this test");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    deb
}

fn installed_version(package: &str) -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${db:Status-Abbrev}|${Version}", package])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.strip_prefix("ii |").map(str::to_string)
}

fn playbook(service: &str, deb: &Path) -> String {
    format!(
        r#"name: everyday
steps:
  - name: banner
    line: {{ path: "{{{{ root }}}}/main.cf", regexp: '^smtpd_banner\s*=', line: 'smtpd_banner = {{{{ host.name }}}} ESMTP' }}
  - name: relay
    needs: [banner]
    line: {{ path: "{{{{ root }}}}/main.cf", line: "relayhost = [relay.example]:25" }}
  - name: no-debug
    needs: [relay]
    line: {{ path: "{{{{ root }}}}/main.cf", regexp: '^debug_peer', state: absent }}
  - name: daemon
    hosts: r1-c1-01
    service: {{ name: {service}, state: started, enabled: true }}
  - name: tools
    hosts: r1-c1-01
    package: {{ deb: "{deb}" }}
"#,
        deb = deb.display()
    )
}

/// A deploy (or check) with its own state dir, so that each has its one run.
fn pony_run(
    lab: &Lab,
    state: &str,
    playbook: &Path,
    extra: &[&str],
) -> (std::process::Output, PathBuf) {
    let state = lab.path(state);
    let mut args = deploy_args(&lab.inventory, playbook);
    args.extend_from_slice(extra);
    let out = support::pony(&state, &args).output().unwrap();
    (out, state)
}

/// `label` → (state, changed, output tail, error) from the journal of the state dir's run.
fn results(state: &Path) -> std::collections::BTreeMap<String, (String, bool, String, String)> {
    let (_, run_dir) = support::only_run(state);
    journal(&run_dir)
        .into_iter()
        .filter(|r| r["type"] == "task_finished")
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            (
                s("label"),
                (
                    s("state"),
                    r["changed"] == true,
                    s("output_tail"),
                    s("error"),
                ),
            )
        })
        .collect()
}

const MAIN_CF: &str = "myhostname = mx\nsmtpd_banner = old banner\ndebug_peer_list = 10.0.0.1\n";

#[test]
fn lines_services_and_packages_change_once_check_changes_nothing_and_failures_say_why() {
    let b = bench();
    let first = b.lab.playbook(&playbook(&b.service, &b.v1));
    dry_run_and_plan(&b, &first);
    check_changes_nothing(&b, &first);
    let pid = first_run_changes_everything(&b, &first);
    upgrade_changes_the_package_only(&b, pid);
    failures_name_the_host_and_the_cause(&b, pid);
}

/// The lab and what the test put on the machine for it.
struct Bench {
    // First: fields drop in order, and the cleanup reads the daemon's pidfile in the lab.
    _cleanup: Cleanup,
    lab: Lab,
    hosts: Vec<String>,
    tag: u32,
    service: String,
    package: String,
    daemon: PathBuf,
    v1: PathBuf,
    v2: PathBuf,
}

/// Two hosts with a main.cf each, an init script, two versions of a package.
fn bench() -> Bench {
    let lab = lab_with(1, 1, 2);
    let hosts = lab.host_names();
    let tag = std::process::id();
    let service = format!("pony-test-{tag}");
    let package = format!("pony-test-{tag}");
    let daemon = lab.path("daemon");
    std::fs::create_dir_all(&daemon).unwrap();
    let cleanup = Cleanup {
        service: service.clone(),
        package: package.clone(),
        pidfile: daemon.join("pid"),
    };
    let script = format!("/etc/init.d/{service}");
    std::fs::write(&script, init_script(&daemon)).unwrap();
    Command::new("chmod")
        .args(["755", &script])
        .status()
        .unwrap();
    let debs = lab.path("debs");
    let (v1, v2) = (
        build_deb(&debs, &package, "1.0"),
        build_deb(&debs, &package, "2.0"),
    );
    for host in &hosts {
        std::fs::write(lab.root(host).join("main.cf"), MAIN_CF).unwrap();
    }

    Bench {
        _cleanup: cleanup,
        lab,
        hosts,
        tag,
        service,
        package,
        daemon,
        v1,
        v2,
    }
}

/// `--dry-run` and `plan` say what each action ensures, contacting nothing.
fn dry_run_and_plan(b: &Bench, first: &Path) {
    let Bench {
        lab, service, v1, ..
    } = b;
    // --dry-run and plan say what each action ensures, contacting nothing.
    let (out, _) = pony_run(lab, "dry", first, &["--dry-run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let shown = text(&out);
    let root = lab.root("r1-c1-01");
    assert!(shown.contains(&format!("ensure line `smtpd_banner = r1-c1-01 ESMTP` (replacing the last line matching `^smtpd_banner\\s*=`) in {}/main.cf", root.display())), "{shown}");
    assert!(
        shown.contains(&format!("ensure service {service} started")),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("ensure the package in {} installed", v1.display())),
        "{shown}"
    );
    let plan = support::pony(
        &lab.path("plan"),
        &[
            "plan",
            "-i",
            lab.inventory.to_str().unwrap(),
            first.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    assert!(
        text(&plan).contains("ensure no line matching `^debug_peer` in {{ root }}/main.cf"),
        "{}",
        text(&plan)
    );
}

/// `--check --diff`: what would change, and nothing changes.
fn check_changes_nothing(b: &Bench, first: &Path) {
    let Bench {
        lab,
        hosts,
        service,
        package,
        daemon,
        ..
    } = b;
    // --check --diff: what would change, and nothing changes.
    let (out, _) = pony_run(lab, "check-1", first, &["--check", "--diff"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(report.contains("-smtpd_banner = old banner\n"), "{report}");
    assert!(
        report.contains("+smtpd_banner = r1-c1-02 ESMTP\n"),
        "{report}"
    );
    assert!(
        report.contains(&format!(
            "service {service} would start and would enable (stopped now) via service"
        )),
        "{report}"
    );
    assert!(
        report.contains(&format!("would install {package} 1.0")),
        "{report}"
    );
    for host in hosts {
        assert_eq!(
            std::fs::read_to_string(lab.root(host).join("main.cf")).unwrap(),
            MAIN_CF
        );
    }
    assert_eq!(daemon_pid(&daemon.join("pid")), None);
    assert_eq!(installed_version(package), None);
}

/// The first run changes everything, and the journal says so; the pid of the daemon.
fn first_run_changes_everything(b: &Bench, first: &Path) -> u32 {
    let Bench {
        lab,
        hosts,
        service,
        package,
        daemon,
        ..
    } = b;
    // The first run changes everything, and the journal says so.
    let (out, state) = pony_run(lab, "run-1", first, &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    for host in hosts {
        assert_eq!(
            std::fs::read_to_string(lab.root(host).join("main.cf")).unwrap(),
            format!(
                "myhostname = mx\nsmtpd_banner = {host} ESMTP\nrelayhost = [relay.example]:25\n"
            )
        );
    }
    let pid = daemon_pid(&daemon.join("pid")).expect("the daemon's pidfile");
    assert!(running(pid), "the daemon {pid} runs");
    assert!(enabled(service), "update-rc.d linked it to start at boot");
    assert_eq!(installed_version(package).as_deref(), Some("1.0"));
    let results1 = results(&state);
    for (label, (state, changed, ..)) in &results1 {
        assert_eq!(
            (state.as_str(), *changed),
            ("succeeded", true),
            "{label}: {results1:?}"
        );
    }
    assert_eq!(results1.len(), 8, "{results1:?}");
    assert!(
        results1["tools@r1-c1-01"]
            .2
            .contains(&format!("installed {package} 1.0")),
        "{results1:?}"
    );
    assert!(
        results1["daemon@r1-c1-01"]
            .2
            .contains("Starting the pony test daemon"),
        "{results1:?}"
    );
    // The host's log names the write; the new content (base64 in the script) is not in it.
    let (_, run_dir) = support::only_run(&state);
    let log = std::fs::read_to_string(run_dir.join("logs/r1-c1-01.log")).unwrap();
    assert!(
        log.contains("(write ") && !log.contains("base64 -d"),
        "{log}"
    );

    pid
}

/// The upgrade, then the same run again.
fn upgrade_changes_the_package_only(b: &Bench, pid: u32) {
    let Bench {
        lab,
        service,
        package,
        daemon,
        v2,
        ..
    } = b;
    // The upgrade: 1.0 → 2.0 said by --check and done by the run; the rest unchanged.
    let second = lab.playbook(&playbook(service, v2));
    let (out, _) = pony_run(lab, "check-2", &second, &["--check"]);
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        report.contains(&format!("would upgrade {package} 1.0 → 2.0")),
        "{report}"
    );
    assert!(
        report.contains(&format!(
            "unchanged: service {service} already as asked (running)"
        )),
        "{report}"
    );
    assert_eq!(installed_version(package).as_deref(), Some("1.0"));
    let (out, state) = pony_run(lab, "run-2", &second, &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(installed_version(package).as_deref(), Some("2.0"));
    let results2 = results(&state);
    let tools = &results2["tools@r1-c1-01"];
    assert_eq!(
        (tools.0.as_str(), tools.1),
        ("succeeded", true),
        "{results2:?}"
    );
    assert!(
        tools.2.contains(&format!("upgraded {package} 1.0 → 2.0")),
        "{results2:?}"
    );
    for (label, (state, changed, ..)) in results2.iter().filter(|(l, _)| !l.starts_with("tools@")) {
        assert_eq!(
            (state.as_str(), *changed),
            ("skipped", false),
            "{label}: {results2:?}"
        );
    }
    assert_eq!(
        daemon_pid(&daemon.join("pid")),
        Some(pid),
        "the daemon was not restarted"
    );
    let calls = std::fs::read_to_string(daemon.join("calls")).unwrap();
    assert_eq!(calls, "start\n", "one start in all");

    // The same again: nothing changes anywhere.
    let (out, state) = pony_run(lab, "run-3", &second, &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let results3 = results(&state);
    for (label, (state, changed, ..)) in &results3 {
        assert_eq!(
            (state.as_str(), *changed),
            ("skipped", false),
            "{label}: {results3:?}"
        );
    }
    assert!(
        results3["tools@r1-c1-01"]
            .2
            .contains(&format!("{package} 2.0 already in place")),
        "{results3:?}"
    );
}

/// Failures name the host and what it said.
fn failures_name_the_host_and_the_cause(b: &Bench, pid: u32) {
    let Bench {
        lab,
        tag,
        service,
        package,
        ..
    } = b;
    // Failures name the host and what it said.
    let failing = lab.playbook(&format!(
        r#"name: failing
strategy: {{ max_failures: 100% }}
steps:
  - name: missing
    hosts: r1-c1-01
    line: {{ path: "{{{{ root }}}}/absent.cf", line: "a = 1" }}
  - name: unknown
    hosts: r1-c1-02
    service: {{ name: pony-no-such-service-{tag}, state: stopped }}
  - name: stop
    hosts: r1-c1-02
    needs: [unknown]
    service: {{ name: {service}, state: stopped }}
"#
    ));
    let (out, state) = pony_run(lab, "run-4", &failing, &[]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let results4 = results(&state);
    let missing = &results4["missing@r1-c1-01"];
    assert_eq!(missing.0, "failed");
    assert!(
        missing.3.contains("line on r1-c1-01: ")
            && missing
                .3
                .contains("absent.cf does not exist (give `create: true` to create it)"),
        "{results4:?}"
    );
    let unknown = &results4["unknown@r1-c1-02"];
    assert_eq!(unknown.0, "failed");
    assert!(unknown.3.contains(&format!("service on r1-c1-02 failed (exit 1): no service `pony-no-such-service-{tag}`: this host runs no systemd and has no /etc/init.d/pony-no-such-service-{tag}")), "{results4:?}");
    assert!(!results4.contains_key("stop@r1-c1-02"), "{results4:?}");
    assert!(running(pid), "the daemon still runs");

    // A version apt does not know: the task fails with what apt said.
    let unknown_version = lab.playbook(&format!(
        "name: pinned\nsteps:\n  - name: pin\n    hosts: r1-c1-01\n    package: {{ name: {package}, version: \"9.9-1\" }}\n"
    ));
    let (out, state) = pony_run(lab, "run-5", &unknown_version, &[]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let pin = &results(&state)["pin@r1-c1-01"];
    assert_eq!(pin.0, "failed");
    assert!(
        pin.3.starts_with(&format!(
            "package on r1-c1-01 failed (exit 1): apt finds no version 9.9-1 of {package}"
        )),
        "{pin:?}"
    );
    assert_eq!(installed_version(package).as_deref(), Some("2.0"));
}
