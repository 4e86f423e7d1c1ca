//! A fresh Debian machine has no `/run/sshd` (no systemd created it). This test gives
//! `pony lab up` a mount namespace whose `/run` is an empty tmpfs, so the privilege
//! separation folder is really missing there, whatever this machine has: the lab must
//! create it, its sshd servers must accept connections, and a deploy over them must run.

mod support;

use std::path::Path;
use std::process::{Command, Output};

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn pony(state: &Path, args: &[&str]) -> Output {
    support::pony_bare()
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn lab_up_works_where_run_sshd_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let pony_bin = env!("CARGO_BIN_EXE_pony");
    // In a private mount namespace: an empty /run, proof that /run/sshd is missing, then
    // the lab. Its sshd servers stay in that namespace (and see its /run) after the shell
    // exits.
    let script = format!(
        "set -e; mount -t tmpfs pony-test-run /run; \
         if [ -e /run/sshd ]; then echo 'PRESENT'; exit 9; fi; \
         '{pony_bin}' --state-dir '{state}' lab up --regions 1 --clusters 1 --hosts 2; \
         test -d /run/sshd && echo PRIVSEP-CREATED",
        state = state.display()
    );
    let up = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &support::clean_shell_line(&script),
        ])
        .output()
        .expect("unshare (util-linux) runs");
    let up_text = text(&up);
    assert!(
        up.status.success(),
        "lab up in a namespace without /run/sshd failed (unshare needs root): {up_text}"
    );
    assert!(up_text.contains("PRIVSEP-CREATED"), "{up_text}");
    // From outside the namespace, over loopback TCP: a real SSH deploy.
    let inventory = state.join("lab/inventory.yaml");
    let playbook = dir.path().join("playbook.yaml");
    std::fs::write(
        &playbook,
        "name: fresh\nsteps:\n  - { name: hello, run: 'echo hello-from-{{ host.name }} > {{ root }}/hello' }\n",
    )
    .unwrap();
    let deploy = pony(
        &state,
        &[
            "deploy",
            "-i",
            inventory.to_str().unwrap(),
            playbook.to_str().unwrap(),
            "--yes",
        ],
    );
    let down = pony(&state, &["lab", "down"]);
    assert_eq!(deploy.status.code(), Some(0), "{}", text(&deploy));
    assert!(down.status.success(), "{}", text(&down));
    let hosts: Vec<_> = std::fs::read_dir(state.join("lab/hosts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(hosts.len(), 2, "{hosts:?}");
    for host in hosts {
        let name = host.file_name().unwrap().to_string_lossy().into_owned();
        let hello = std::fs::read_to_string(host.join("hello"))
            .unwrap_or_else(|e| panic!("{name}: no hello file: {e}"));
        assert_eq!(hello.trim(), format!("hello-from-{name}"));
    }
}
