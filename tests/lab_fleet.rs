//! The lab fleet against the system OpenSSH client: real sshd servers on loopback.
//! These tests fail (never skip) when sshd is missing: the error says how to install it.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use pony::lab::{self, Fleet, FleetOptions, HostState, LabHost};
use support::{is_running, wait_until};

mod support;

/// `ssh -F <ssh_config> -p <port> <address> <command>` with extra `-o` options.
fn ssh(fleet: &Fleet, host: &LabHost, options: &[&str], command: &str) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.arg("-F").arg(fleet.ssh_config_path());
    for o in options {
        cmd.arg("-o").arg(o);
    }
    cmd.arg(host.address.to_string())
        .arg("-p")
        .arg(host.port.to_string())
        .arg(command)
        .stdin(Stdio::null());
    cmd
}

fn run(mut cmd: Command) -> Output {
    cmd.output().expect("running ssh (install openssh-client)")
}

fn check_hello(host: &LabHost, out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ssh to {} ({}) failed: {}\nstderr: {}",
        host.name,
        host.socket_addr(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        3,
        "{}: unexpected output {stdout:?}",
        host.name
    );
    assert_eq!(lines[0], "hi");
    assert!(lines[1].starts_with('/'), "pwd printed {:?}", lines[1]);
    // Each address reaches its own sshd.
    assert_eq!(lines[2], format!("{} {}", host.name, host.root.display()));
}

const HELLO: &str = "echo hi && pwd && echo \"$PONY_LAB_HOST $PONY_LAB_ROOT\"";

#[test]
fn fleet_of_real_sshd_servers() {
    let tmp = tempfile::tempdir().unwrap();
    let mut fleet = Fleet::start(FleetOptions::grid(tmp.path().join("lab"), 2, 2, 2))
        .expect("starting the lab fleet");

    // Layout, names, distinct addresses, host roots.
    let hosts = fleet.hosts().to_vec();
    assert_eq!(hosts.len(), 8);
    assert_eq!(hosts[0].name, "r1-c1-01");
    assert_eq!(hosts[7].name, "r2-c2-02");
    assert_eq!(hosts[0].roles, ["mta", "store"]);
    assert_eq!(hosts[2].roles, ["mta"]);
    let mut addresses: Vec<_> = hosts.iter().map(|h| h.address).collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 8, "every host has its own address");
    for h in &hosts {
        assert!(h.address.is_loopback());
        assert!(h.root.is_dir(), "{} exists", h.root.display());
        assert_eq!(fleet.host(&h.name), h);
        assert_eq!(fleet.state(&h.name).unwrap(), HostState::Running);
    }
    assert!(fleet.identity_file().is_file());
    assert!(fleet.known_hosts_path().is_file());

    // Every host answers over ssh, with strict host key checking (all at once).
    let running: Vec<_> = hosts
        .iter()
        .map(|h| {
            ssh(&fleet, h, &[], HELLO)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (h, child) in hosts.iter().zip(running) {
        check_hello(h, &child.wait_with_output().unwrap());
    }

    // A killed host refuses connections; restarted, it answers again.
    let victim = hosts[1].clone();
    fleet.kill(&victim.name).unwrap();
    assert_eq!(fleet.state(&victim.name).unwrap(), HostState::Down);
    assert!(!is_running(victim.pid), "the killed sshd is gone");
    let out = run(ssh(&fleet, &victim, &["ConnectTimeout=2"], "echo hi"));
    assert!(!out.status.success(), "ssh to a killed host must fail");
    fleet.kill(&victim.name).unwrap(); // already down: a no-op
    fleet.restart(&victim.name).unwrap();
    check_hello(&victim, &run(ssh(&fleet, &victim, &[], HELLO)));

    // A paused host hangs until ConnectTimeout; resumed, it answers.
    let frozen = hosts[4].clone();
    fleet.pause(&frozen.name).unwrap();
    assert_eq!(fleet.state(&frozen.name).unwrap(), HostState::Paused);
    let out = run(ssh(&fleet, &frozen, &["ConnectTimeout=2"], "echo hi"));
    assert!(!out.status.success(), "ssh to a paused host must fail");
    // The TCP handshake completes (the kernel does it) but no banner ever comes.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("timed out during banner exchange"),
        "ssh to a paused host should time out waiting for the banner: {stderr}"
    );
    fleet.resume(&frozen.name).unwrap();
    check_hello(&frozen, &run(ssh(&fleet, &frozen, &[], HELLO)));

    // The others were not disturbed.
    check_hello(&hosts[7], &run(ssh(&fleet, &hosts[7], &[], HELLO)));

    // The inventory parses and lists all 8 hosts with address and vars.
    let inventory = tmp.path().join("lab-inventory.yaml");
    fleet.write_inventory(&inventory).unwrap();
    let text = std::fs::read_to_string(&inventory).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(doc["name"].as_str(), Some("lab"));
    assert_eq!(doc["defaults"]["connection"].as_str(), Some("ssh"));
    assert_eq!(
        doc["defaults"]["ssh"]["config_file"]
            .as_str()
            .map(Path::new),
        Some(fleet.ssh_config_path())
    );
    assert_eq!(
        doc["defaults"]["ssh"]["port"].as_u64(),
        Some(u64::from(fleet.port()))
    );
    assert_eq!(doc["defaults"]["ssh"]["user"].as_str(), Some(fleet.user()));
    let mut count = 0;
    for (_, region) in doc["regions"].as_mapping().unwrap() {
        for (cluster_name, cluster) in region["clusters"].as_mapping().unwrap() {
            let roles: Vec<&str> = cluster["roles"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap())
                .collect();
            assert!(roles.contains(&"mta"), "{cluster_name:?}: {roles:?}");
            for (name, host) in cluster["hosts"].as_mapping().unwrap() {
                let lab_host = fleet.host(name.as_str().unwrap());
                assert_eq!(
                    host["address"].as_str(),
                    Some(lab_host.address.to_string().as_str())
                );
                assert_eq!(
                    host["vars"]["root"].as_str().map(Path::new),
                    Some(lab_host.root.as_path())
                );
                assert_eq!(
                    host["vars"]["mail_root"].as_str().map(Path::new),
                    Some(lab_host.mail_root().as_path())
                );
                count += 1;
            }
        }
    }
    assert_eq!(count, 8);

    // Dropping the fleet kills every sshd it started.
    let pids: Vec<u32> = fleet.hosts().iter().map(|h| h.pid).collect();
    drop(fleet);
    for pid in pids {
        assert!(!is_running(pid), "sshd {pid} survived the fleet");
    }
}

/// A kill or pause takes the host's open sessions with it, as on a real machine.
#[test]
fn kill_and_pause_reach_open_sessions() {
    let tmp = tempfile::tempdir().unwrap();
    let mut fleet =
        Fleet::start(FleetOptions::grid(tmp.path(), 1, 1, 1)).expect("starting the lab fleet");
    let host = fleet.hosts()[0].clone();

    // An open session, ticking once every 50 ms.
    let marker = host.root.join("ticks");
    let script = format!(
        "while :; do date +%s%N >> {}; sleep 0.05; done",
        marker.display()
    );
    let mut session = ssh(&fleet, &host, &[], &script)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = |p: &Path| {
        std::fs::read_to_string(p)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    wait_until("the session to start ticking", || lines(&marker) >= 2);

    // A clock of our own: a ticker on the controller, outside the lab. "Nothing happened
    // on the host while ours ticked 5 times" replaces a sleep.
    let reference = tmp.path().join("reference-ticks");
    let clock = KillOnDrop(
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "while :; do date +%s%N >> {}; sleep 0.05; done",
                reference.display()
            ))
            .spawn()
            .unwrap(),
    );
    let five_ticks_later = |what: &str| {
        let start = lines(&reference);
        wait_until(what, || lines(&reference) >= start + 5);
    };

    fleet.pause(&host.name).unwrap();
    // Every process of the host is stopped (state T) before we look.
    wait_until("the host's processes to stop", || {
        support::tree_is_frozen(host.pid)
    });
    let frozen = lines(&marker);
    five_ticks_later("the reference clock");
    assert_eq!(lines(&marker), frozen, "a paused host's session must stall");
    fleet.resume(&host.name).unwrap();
    wait_until("the resumed session to tick", || lines(&marker) > frozen);

    fleet.kill(&host.name).unwrap();
    let status = session.wait().unwrap();
    assert!(!status.success(), "the session must end with the host");
    let after = lines(&marker);
    five_ticks_later("the reference clock");
    drop(clock);
    assert_eq!(
        lines(&marker),
        after,
        "nothing of a killed host keeps running"
    );
}

/// `pony lab up|down`: a detached fleet keeps running until `lab::down`.
#[test]
fn detach_and_down() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet =
        Fleet::start(FleetOptions::grid(tmp.path(), 1, 1, 2)).expect("starting the lab fleet");
    let state = fleet.detach().unwrap();
    assert!(tmp.path().join("lab.json").is_file());
    assert_eq!(state.pids.len(), 2);
    for pid in state.pids.values() {
        assert!(is_running(*pid), "a detached sshd keeps running");
    }
    // Starting another fleet over a running lab is refused.
    let err = Fleet::start(FleetOptions::grid(tmp.path(), 1, 1, 1)).unwrap_err();
    assert!(err.to_string().contains("already running"), "{err:#}");

    let inventory = tmp.path().join("inventory.yaml");
    state.write_inventory(&inventory).unwrap();
    assert!(std::fs::read_to_string(&inventory)
        .unwrap()
        .contains(&state.hosts[1].name));

    let summary = lab::down(tmp.path()).unwrap();
    assert_eq!(summary.killed.len(), 2);
    assert!(summary.already_gone.is_empty());
    for pid in state.pids.values() {
        assert!(!is_running(*pid), "sshd {pid} survived lab::down");
    }
    assert!(!tmp.path().join("lab.json").exists());
    assert!(lab::down(tmp.path()).is_err(), "nothing left to stop");
}

#[test]
fn missing_sshd_says_how_to_install_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = FleetOptions::grid(tmp.path(), 1, 1, 1);
    opts.sshd = Some(tmp.path().join("no-such-sshd"));
    let err = Fleet::start(opts).unwrap_err();
    assert_eq!(
        err.to_string(),
        "sshd not found: install it with 'apt-get install -y openssh-server'"
    );
}

#[test]
fn bad_layouts_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dup = FleetOptions::new(
        tmp.path(),
        "x",
        vec![
            lab::RegionSpec::new("eu", vec![lab::ClusterSpec::new("mx", 1, ["mta"])]),
            lab::RegionSpec::new("us", vec![lab::ClusterSpec::new("mx", 1, ["mta"])]),
        ],
    );
    assert!(Fleet::start(dup)
        .unwrap_err()
        .to_string()
        .contains("duplicate"));
    let clash = FleetOptions::new(
        tmp.path(),
        "x",
        vec![lab::RegionSpec::new(
            "eu",
            vec![lab::ClusterSpec::new("mx", 1, ["eu"])],
        )],
    );
    let err = Fleet::start(clash).unwrap_err();
    assert_eq!(
        err.to_string(),
        "\"eu\" is both a role and a region or cluster name"
    );
    let host_clash = FleetOptions::new(
        tmp.path(),
        "x",
        vec![lab::RegionSpec::new(
            "c1-01",
            vec![lab::ClusterSpec::new("c1", 1, ["mta"])],
        )],
    );
    let err = Fleet::start(host_clash).unwrap_err();
    assert_eq!(
        err.to_string(),
        "host name \"c1-01\" clashes with a group name"
    );
}

/// A child process of the test, killed (by its pid) when dropped, also on a panic.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
