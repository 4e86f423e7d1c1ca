//! The vault: `pony vault encrypt|view|edit|decrypt`, and a run whose playbook names a
//! vault. The vault's values reach the hosts (inside the script on the command's stdin)
//! and nowhere else: not in any process's command line while a step holds, not in the
//! state folder (snapshot, journal, logs), not in pony's output. A rollback needs the
//! key again (none: exit 2 naming the vault and the fix; a wrong one: exit 2 saying so)
//! and decrypts the snapshot's copy of the vault, not the file as it is now.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use support::{code, lab_with, only_run, pony, text, wait_until};

const SECRET: &str = "vault-s3cret-Zq81";

/// An age identity file (as `age-keygen` writes one) and the identity's line.
fn identity(dir: &Path, name: &str) -> (PathBuf, String) {
    use age::secrecy::ExposeSecret;
    let id = age::x25519::Identity::generate();
    let line = id.to_string().expose_secret().to_string();
    let path = dir.join(name);
    std::fs::write(&path, format!("# created for a test\n{line}\n")).unwrap();
    (path, line)
}

fn processes_showing(needles: &[&str]) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let bytes = std::fs::read(e.path().join("cmdline")).ok()?;
            let args = String::from_utf8_lossy(&bytes).replace('\0', " ");
            needles
                .iter()
                .any(|n| args.contains(n))
                .then(|| format!("{}: {args}", e.file_name().to_string_lossy()))
        })
        .collect()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| match e.path() {
            p if p.is_dir() => files_under(&p),
            p => vec![p],
        })
        .collect()
}

/// Writes the plain vars file, encrypts it with `pony vault encrypt`, and the playbook
/// that names it: one step writes the secret on the host, marks that it runs, and holds
/// until released; its rollback writes the secret again.
fn vault_and_playbook(dir: &Path, key: &Path) -> PathBuf {
    let vault = dir.join("secrets.vault");
    std::fs::write(&vault, format!("db_password: {SECRET}\nunused_key: 7\n")).unwrap();
    let out = pony(
        dir,
        &[
            "--vault-key-file",
            key.to_str().unwrap(),
            "vault",
            "encrypt",
        ],
    )
    .arg(&vault)
    .output()
    .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let cipher = std::fs::read_to_string(&vault).unwrap();
    assert!(cipher.starts_with("-----BEGIN AGE ENCRYPTED FILE-----") && !cipher.contains(SECRET));
    let playbook = dir.join("playbook.yaml");
    std::fs::write(
        &playbook,
        r#"name: vaulted
vault: secrets.vault
strategy: { max_unavailable: 100% }
steps:
  - name: hold
    timeout: 5m
    run: |
      printf '%s\n' "{{ db_password }}" > {{ root }}/got
      touch {{ root }}/running
      while [ ! -e {{ root }}/release ]; do sleep 0.02; done
    rollback: printf '%s\n' "{{ db_password }}" > {{ root }}/rolled
"#,
    )
    .unwrap();
    playbook
}

/// Deploys with the vault, checks the process list while the step holds on every host
/// (`roots`), then the hosts' files, pony's output and everything under `state`.
fn deploy_and_check(
    dir: &Path,
    inventory: &Path,
    state: &Path,
    roots: &[PathBuf],
    key: &Path,
    key_line: &str,
) {
    let playbook = vault_and_playbook(dir, key);
    let child = pony(
        state,
        &[
            "deploy",
            "-i",
            inventory.to_str().unwrap(),
            playbook.to_str().unwrap(),
            "--yes",
        ],
    )
    // The key from the environment: no child of pony may get it.
    .env("PONY_VAULT_KEY", key_line)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    wait_until("the step holding on every host", || {
        roots.iter().all(|r| r.join("running").exists())
    });
    let leaks = processes_showing(&[SECRET, key_line]);
    assert!(
        leaks.is_empty(),
        "processes show the vault's value or key:\n{}",
        leaks.join("\n")
    );
    for root in roots {
        std::fs::write(root.join("release"), "").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    for root in roots {
        assert_eq!(
            std::fs::read_to_string(root.join("got")).unwrap(),
            format!("{SECRET}\n")
        );
    }
    assert!(!text(&out).contains(SECRET), "{}", text(&out));
    let (_, run_dir) = only_run(state);
    let mut redacted = false;
    for file in files_under(state) {
        if file.file_name().is_some_and(|n| n == "got") {
            continue;
        }
        let content = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).to_string();
        assert!(
            !content.contains(SECRET),
            "{} holds the vault's value",
            file.display()
        );
        assert!(
            !content.contains(key_line),
            "{} holds the vault key",
            file.display()
        );
        redacted |= file.starts_with(&run_dir) && content.contains("printf '%s\\n' \"***\"");
    }
    assert!(
        redacted,
        "the run's logs show the command with the value as ***"
    );
}

#[test]
fn a_vault_secret_reaches_local_hosts_only_and_a_rollback_needs_the_key_again() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let roots: Vec<PathBuf> = ["l1", "l2"]
        .iter()
        .map(|h| state.join("hosts").join(h))
        .collect();
    let hosts: String = ["l1", "l2"]
        .iter()
        .zip(&roots)
        .map(|(h, root)| {
            format!(
                "          {h}: {{ vars: {{ root: {} }} }}\n",
                root.display()
            )
        })
        .collect();
    let inventory = dir.path().join("inventory.yaml");
    std::fs::write(
        &inventory,
        format!("name: local-vault\ndefaults:\n  connection: local\nregions:\n  r1:\n    clusters:\n      c1:\n        hosts:\n{hosts}"),
    )
    .unwrap();
    let (key, key_line) = identity(dir.path(), "vault.key");
    deploy_and_check(dir.path(), &inventory, &state, &roots, &key, &key_line);

    let (run, _) = only_run(&state);
    // The vault as it is now is not what the run reads: its snapshot holds the copy.
    std::fs::remove_file(dir.path().join("secrets.vault")).unwrap();
    let rollback = |extra: &[&str]| -> Output {
        let mut args = vec!["rollback", run.as_str(), "--yes"];
        args.extend_from_slice(extra);
        pony(&state, &args)
            .env_remove("PONY_VAULT_KEY")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let resume = pony(&state, &["resume", &run])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(code(&resume), 2, "{}", text(&resume));
    for needed in [
        "secrets.vault",
        "its key is needed again",
        "--vault-key-file FILE or set PONY_VAULT_KEY",
    ] {
        assert!(
            text(&resume).contains(needed),
            "{needed}: {}",
            text(&resume)
        );
    }
    let out = rollback(&[]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        text(&out).contains("its key is needed again"),
        "{}",
        text(&out)
    );
    let (wrong, _) = identity(dir.path(), "other.key");
    let out = rollback(&["--vault-key-file", wrong.to_str().unwrap()]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(text(&out).contains("the key is wrong"), "{}", text(&out));
    assert!(
        roots.iter().all(|r| !r.join("rolled").exists()),
        "nothing ran without the key"
    );

    let out = rollback(&["--vault-key-file", key.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    for root in &roots {
        assert_eq!(
            std::fs::read_to_string(root.join("rolled")).unwrap(),
            format!("{SECRET}\n")
        );
    }
    assert!(!text(&out).contains(SECRET), "{}", text(&out));
}

#[test]
fn over_ssh_a_vault_secret_is_in_no_process_list_and_nowhere_in_the_state_folder() {
    let lab = lab_with(1, 1, 2);
    let roots: Vec<PathBuf> = lab.host_names().iter().map(|h| lab.root(h)).collect();
    let (key, key_line) = identity(lab.dir.path(), "vault.key");
    deploy_and_check(
        lab.dir.path(),
        &lab.inventory,
        &lab.state,
        &roots,
        &key,
        &key_line,
    );
}

#[test]
fn vault_commands_encrypt_view_edit_and_decrypt_with_a_passphrase_and_refuse_a_wrong_one() {
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("v.yaml");
    std::fs::write(&vault, format!("db_password: {SECRET}\n")).unwrap();
    let run = |key: &str, args: &[&str]| -> Output {
        pony(dir.path(), &["vault"])
            .args(args)
            .arg(&vault)
            .env("PONY_VAULT_KEY", key)
            .env(
                "EDITOR",
                "sed -i 's/^db_password: .*/db_password: changed-1/'",
            )
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    assert_eq!(code(&run("pass phrase 1", &["encrypt"])), 0);
    assert!(!std::fs::read_to_string(&vault).unwrap().contains(SECRET));
    let out = run("pass phrase 2", &["view"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(text(&out).contains("the key is wrong"), "{}", text(&out));
    let out = run("pass phrase 1", &["view"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("db_password: {SECRET}\n")
    );
    assert_eq!(code(&run("pass phrase 1", &["edit"])), 0);
    assert!(!std::fs::read_to_string(&vault)
        .unwrap()
        .contains("changed-1"));
    assert_eq!(code(&run("pass phrase 1", &["decrypt"])), 0);
    assert_eq!(
        std::fs::read_to_string(&vault).unwrap(),
        "db_password: changed-1\n"
    );
    // No key at all, and no terminal to ask on.
    let out = pony(dir.path(), &["vault", "view"])
        .arg(&vault)
        .env_remove("PONY_VAULT_KEY")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", text(&out));
}
