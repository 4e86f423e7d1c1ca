//! Host key checking against real sshd servers: `--accept-new-host-keys` is ssh's
//! `accept-new` (an unknown key is accepted and recorded in known_hosts), never "no
//! checking": a host whose key changed is refused with or without the flag, and the step
//! does not run there (its marker file stays absent).

mod support;

use std::path::Path;
use std::process::Command;
use support::{lab_with, text, Lab};

const HOST: &str = "r1-c1-01";

/// A playbook whose only step leaves `ran` in the host's root.
fn marker_playbook(lab: &Lab) -> std::path::PathBuf {
    lab.playbook(
        r#"
name: marker
steps:
  - name: touch
    run: touch {{ root }}/ran
"#,
    )
}

/// `[address]:port`, how known_hosts names a lab host.
fn known_name(lab: &Lab, host: &str) -> String {
    let h = lab.fleet.host(host);
    format!("[{}]:{}", h.address, h.port)
}

/// Rewrites the lab's known_hosts: `host`'s line is dropped (`None`) or holds `key`.
fn set_known_key(lab: &Lab, host: &str, key: Option<&str>) {
    let path = lab.fleet.known_hosts_path();
    let name = known_name(lab, host);
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with(&format!("{name} ")))
        .map(String::from)
        .collect();
    assert_eq!(
        lines.len() + 1,
        text.lines().count(),
        "{host} was listed once"
    );
    if let Some(key) = key {
        lines.push(format!("{name} {key}"));
    }
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// The public half (`ssh-ed25519 AAAA…`) of a fresh key: not the lab's host key.
fn other_key(dir: &Path) -> String {
    let path = dir.join("other_host_key");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    let mut words = public.split_whitespace();
    format!("{} {}", words.next().unwrap(), words.next().unwrap())
}

/// Whether known_hosts lists `name` (`ssh-keygen -F` also finds hashed entries).
fn is_known(lab: &Lab, name: &str) -> bool {
    Command::new("ssh-keygen")
        .arg("-F")
        .arg(name)
        .arg("-f")
        .arg(lab.fleet.known_hosts_path())
        .output()
        .unwrap()
        .status
        .success()
}

fn deploy(lab: &Lab, accept_new: bool) -> std::process::Output {
    let playbook = marker_playbook(lab);
    let mut extra = vec!["--limit", HOST];
    if accept_new {
        extra.push("--accept-new-host-keys");
    }
    lab.deploy(&playbook, &extra)
}

fn exec(lab: &Lab, accept_new: bool) -> std::process::Output {
    let inventory = lab.inventory.to_str().unwrap();
    let mut args = vec!["exec", "-i", inventory, "--limit", HOST];
    if accept_new {
        args.push("--accept-new-host-keys");
    }
    args.extend(["--", "touch \"$PONY_LAB_ROOT/ran\""]);
    lab.pony(&args).output().unwrap()
}

#[test]
fn a_changed_host_key_is_refused_with_and_without_accept_new_host_keys() {
    let lab = lab_with(1, 1, 2);
    set_known_key(&lab, HOST, Some(&other_key(lab.dir.path())));
    let marker = lab.root(HOST).join("ran");

    for accept_new in [false, true] {
        let out = deploy(&lab, accept_new);
        // 1: the host failed and its rollback completed (nothing had run there).
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let all = text(&out);
        assert!(
            all.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
                || all.contains("Host key verification failed"),
            "accept_new={accept_new}: {all}"
        );
        assert!(
            !marker.exists(),
            "accept_new={accept_new}: the step ran on a host whose key changed: {all}"
        );

        let out = exec(&lab, accept_new);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("did not run (host key)"),
            "accept_new={accept_new}: {stdout}"
        );
        assert!(
            !marker.exists(),
            "accept_new={accept_new}: exec ran on a host whose key changed: {stdout}"
        );
    }
    // The changed entry is still the one known: nothing replaced it.
    let known = std::fs::read_to_string(lab.fleet.known_hosts_path()).unwrap();
    assert_eq!(known.matches(&known_name(&lab, HOST)).count(), 1, "{known}");
}

#[test]
fn an_unknown_host_key_is_refused_by_default_and_accepted_and_recorded_with_the_flag() {
    let lab = lab_with(1, 1, 2);
    set_known_key(&lab, HOST, None);
    let marker = lab.root(HOST).join("ran");
    let name = known_name(&lab, HOST);

    let out = deploy(&lab, false);
    // 1: the host failed and its rollback completed (nothing had run there).
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!marker.exists(), "strict checking let an unknown key in");
    assert!(
        !is_known(&lab, &name),
        "nothing was recorded without the flag"
    );

    let out = deploy(&lab, true);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(marker.exists(), "the step ran once the key was accepted");
    assert!(is_known(&lab, &name), "accept-new records the key");

    // Recorded: the next run needs no flag.
    std::fs::remove_file(&marker).unwrap();
    let out = exec(&lab, false);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(marker.exists());
}
