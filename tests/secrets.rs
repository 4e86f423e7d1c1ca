//! Secrets never reach a process list: a step's command travels to the host's shell on
//! stdin, with and without `become` and under a `timeout`, so while the step runs no
//! process on the machine (the lab hosts are loopback sshd servers on this machine, and
//! pony itself runs here) has a secret value in `/proc/*/cmdline`. The values come from
//! `--secret-var NAME=@FILE` and `NAME=env:VAR`, so they are not on pony's command line
//! either; they reach the hosts, and are `***` in everything pony prints or stores.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use support::{lab_with, only_run, text, wait_until, Lab};

const FILE_SECRET: &str = "s3cret-from-a-file-7Qx";
const ENV_SECRET: &str = "t0ken-from-the-env-9Vw";

/// Every process's command line, as `pid: arg arg …` (processes that end while being
/// read are skipped).
fn process_list() -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| {
            let bytes = std::fs::read(e.path().join("cmdline")).ok()?;
            let args = String::from_utf8_lossy(&bytes).replace('\0', " ");
            Some(format!("{}: {args}", e.file_name().to_string_lossy()))
        })
        .collect()
}

/// Fails naming the processes that show a secret.
fn assert_no_secret_in_process_list(during: &str) {
    let leaks: Vec<String> = process_list()
        .into_iter()
        .filter(|line| line.contains(FILE_SECRET) || line.contains(ENV_SECRET))
        .collect();
    assert!(
        leaks.is_empty(),
        "during {during}, processes show a secret:\n{}",
        leaks.join("\n")
    );
}

/// Checks that the process list shows what the test looks for: a process of this test
/// with a marker in its arguments is seen.
fn assert_process_list_sees_arguments() {
    let marker = format!("pony-secrets-probe-{}", std::process::id());
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg("read _line")
        .arg(&marker)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the probe process in the process list", || {
        process_list().iter().any(|l| l.contains(&marker))
    });
    drop(child.stdin.take());
    child.wait().unwrap();
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            let path = e.path();
            if path.is_dir() {
                files_under(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

/// A step per way of running: plain, `become`, each under a `timeout`; each writes the
/// secrets where the test can read them, marks that it runs, and holds until released.
fn playbook(dir: &Path) -> PathBuf {
    let step = |name: &str, become_root: bool| {
        format!(
            r#"  - name: {name}
    become: {become_root}
    timeout: 5m
    run: |
      printf '%s %s\n' "{{{{ db_password }}}}" "{{{{ api_token }}}}" > {{{{ root }}}}/{name}.got
      touch {{{{ root }}}}/{name}.running
      while [ ! -e {{{{ root }}}}/{name}.release ]; do sleep 0.02; done
"#
        )
    };
    let path = dir.join("secrets.yaml");
    std::fs::write(
        &path,
        format!(
            "name: secrets\nstrategy: {{ max_unavailable: 100% }}\nsteps:\n{}{}    needs: [plain]\n",
            step("plain", false),
            step("root", true)
        ),
    )
    .unwrap();
    path
}

/// Deploys the playbook with the secrets from a file and the environment, checks the
/// process list while each step runs on every host (`roots`: host name and the folder
/// its `root` var names), then that the values arrived and are nowhere in pony's output
/// or state.
fn deploy_and_watch_the_process_list(
    dir: &Path,
    inventory: &Path,
    state: &Path,
    roots: &[(String, PathBuf)],
) {
    assert_process_list_sees_arguments();
    let playbook = playbook(dir);
    let secret_file = dir.join("db_password");
    std::fs::write(&secret_file, format!("{FILE_SECRET}\n")).unwrap();
    let file_arg = format!("db_password=@{}", secret_file.display());
    let child = support::pony(
        state,
        &[
            "deploy",
            "-i",
            inventory.to_str().unwrap(),
            playbook.to_str().unwrap(),
            "--yes",
            "--secret-var",
            &file_arg,
            "--secret-var",
            "api_token=env:MAIL_API_TOKEN_FOR_TEST",
        ],
    )
    .env("MAIL_API_TOKEN_FOR_TEST", ENV_SECRET)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    for step in ["plain", "root"] {
        wait_until(&format!("`{step}` running on every host"), || {
            roots
                .iter()
                .all(|(_, root)| root.join(format!("{step}.running")).exists())
        });
        assert_no_secret_in_process_list(&format!("step `{step}`"));
        for (_, root) in roots {
            std::fs::write(root.join(format!("{step}.release")), "").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // The values reached the hosts, through sudo for `root`.
    for (host, root) in roots {
        for step in ["plain", "root"] {
            let got = std::fs::read_to_string(root.join(format!("{step}.got"))).unwrap();
            assert_eq!(
                got,
                format!("{FILE_SECRET} {ENV_SECRET}\n"),
                "{host} {step}"
            );
        }
    }
    // Nothing pony printed or stored shows them; its host logs show them redacted.
    let output = text(&out);
    assert!(
        !output.contains(FILE_SECRET) && !output.contains(ENV_SECRET),
        "{output}"
    );
    let (_, run_dir) = only_run(state);
    let mut redacted = false;
    for file in files_under(state) {
        let content = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).to_string();
        if file
            .extension()
            .is_some_and(|e| e == "got" || e == "running" || e == "release")
        {
            continue;
        }
        assert!(
            !content.contains(FILE_SECRET) && !content.contains(ENV_SECRET),
            "{} shows a secret",
            file.display()
        );
        redacted |=
            file.starts_with(&run_dir) && content.contains("printf '%s %s\\n' \"***\" \"***\"");
    }
    assert!(
        redacted,
        "the run's logs show the command with the values as ***"
    );
}

#[test]
fn over_ssh_secrets_from_a_file_and_the_environment_never_show_in_a_process_list_with_or_without_become(
) {
    let lab: Lab = lab_with(1, 1, 2);
    let roots: Vec<(String, PathBuf)> = lab
        .host_names()
        .into_iter()
        .map(|h| (h.clone(), lab.root(&h)))
        .collect();
    deploy_and_watch_the_process_list(lab.dir.path(), &lab.inventory, &lab.state, &roots);
}

#[test]
fn on_local_hosts_secrets_never_show_in_the_controllers_process_list_with_or_without_become() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let roots: Vec<(String, PathBuf)> = ["l1", "l2"]
        .iter()
        .map(|h| (h.to_string(), state.join("hosts").join(h)))
        .collect();
    let hosts: String = roots
        .iter()
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
        format!(
            "name: local-secrets\ndefaults:\n  connection: local\nregions:\n  r1:\n    clusters:\n      c1:\n        hosts:\n{hosts}"
        ),
    )
    .unwrap();
    deploy_and_watch_the_process_list(dir.path(), &inventory, &state, &roots);
}
