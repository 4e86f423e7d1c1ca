//! Secret captures and secret-named `--var`s stay off disk: a `capture:` whose name marks
//! it secret (`*_token`, `*_password`, `*_secret`) lives only in the memory of the
//! controller that captured it, and a `--var` with such a name is a `--secret-var`.
//! Nothing under the state folder but the hosts' own files holds the value; the commands
//! that use it still get it, a resume runs the capturing step again where a later step
//! needs it, and a `pony rollback` that needs it says which capture and how to give it.

mod support;

use std::path::{Path, PathBuf};
use support::{code, deploy_args, exit_text, journal, only_run, pony, write_plan, TINY_INVENTORY};

const TOKEN: &str = "tok-7c1e-SECRET-93ab";
/// How the playbook makes the token: the shell joins the two quoted halves, so the
/// playbook (copied into the run's snapshot) does not hold the value itself.
const TOKEN_IN_SHELL: &str = "'tok-7c1e-SEC''RET-93ab'";

/// Every file under the state folder except the hosts' own working folders.
fn state_files(state: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(state).unwrap().flatten() {
        if entry.file_name() != "hosts" {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, &mut files);
            } else {
                files.push(path);
            }
        }
    }
    files
}

fn assert_not_on_disk(state: &Path, secret: &str, also: &[(&str, &[u8])]) {
    let files = state_files(state);
    assert!(
        files.iter().any(|f| f.ends_with("journal.jsonl")),
        "the scan sees the journal: {files:?}"
    );
    for file in files {
        let body = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).to_string();
        assert!(
            !body.contains(secret),
            "{} holds the secret:\n{body}",
            file.display()
        );
    }
    for (what, bytes) in also {
        assert!(
            !String::from_utf8_lossy(bytes).contains(secret),
            "the {what} shows the secret"
        );
    }
}

fn host_file(state: &Path, host: &str, file: &str) -> Option<String> {
    std::fs::read_to_string(state.join("hosts").join(host).join(file)).ok()
}

/// Deploys `playbook(later_step)` over the tiny local inventory; returns the state
/// folder and the deploy's output.
fn deploy(dir: &Path, later_step: &str) -> (PathBuf, std::process::Output) {
    let state = dir.join("state");
    let (inventory, playbook) = write_plan(dir, TINY_INVENTORY, playbook(later_step));
    let out = pony(&state, &deploy_args(&inventory, &playbook))
        .output()
        .unwrap();
    (state, out)
}

/// The token every host's `file` holds.
fn assert_every_host_holds_the_token(state: &Path, file: &str) {
    for host in ["h1", "h2", "h3", "h4"] {
        assert_eq!(
            host_file(state, host, file).as_deref(),
            Some(format!("{TOKEN}\n").as_str()),
            "{host}"
        );
    }
}

/// `login` captures the token (and prints it among other output); `use` needs it.
fn playbook(use_step: &str) -> String {
    format!(
        r#"name: captures
strategy:
  on_failure: halt
steps:
  - name: login
    run: echo "logging in" >&2; echo x >> logins; echo {TOKEN_IN_SHELL}
    capture: session_token
{use_step}"#
    )
}

#[test]
fn a_secret_capture_reaches_later_commands_but_no_file_of_pony() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (inventory, playbook) = write_plan(
        dir.path(),
        TINY_INVENTORY,
        playbook(
            "  - { name: use, needs: [login], run: 'echo \"using {{ session_token }}\"; echo {{ session_token }} > used' }\n",
        ),
    );
    let mut args = deploy_args(&inventory, &playbook);
    args.extend(["--output", "json", "--junit"]);
    let junit = dir.path().join("junit.xml");
    args.push(junit.to_str().unwrap());
    let out = pony(&state, &args).output().unwrap();
    assert_eq!(code(&out), 0, "{}", exit_text(&out));
    // The later command got the captured value.
    assert_every_host_holds_the_token(&state, "used");
    let junit = std::fs::read(&junit).unwrap();
    assert_not_on_disk(
        &state,
        TOKEN,
        &[
            ("stdout", &out.stdout),
            ("stderr", &out.stderr),
            ("JUnit report", &junit),
        ],
    );
    let (_, run) = only_run(&state);
    let logins: Vec<_> = journal(&run)
        .into_iter()
        .filter(|r| {
            r["type"] == "task_finished" && r["label"].as_str().unwrap().starts_with("login")
        })
        .collect();
    assert_eq!(logins.len(), 4, "{logins:?}");
    for login in logins {
        assert_eq!(login["captures"], serde_json::json!([]), "{login}");
        let tail = login["output_tail"].as_str().unwrap();
        assert!(tail.contains("logging in"), "{tail}");
    }
    let log = std::fs::read_to_string(run.join("logs/h1.log")).unwrap();
    assert!(
        log.contains("logging in") && log.contains("using ***"),
        "the host log keeps the output, with the value hidden:\n{log}"
    );
}

#[test]
fn a_resume_runs_the_capturing_step_again_where_a_later_step_needs_the_value() {
    let dir = tempfile::tempdir().unwrap();
    // `use` fails until the test creates `state/go`; each host works in state/hosts/HOST.
    let (state, first) = deploy(
        dir.path(),
        "  - { name: use, needs: [login], run: 'test -e ../../go && echo {{ session_token }} > used' }\n",
    );
    assert_eq!(code(&first), 3, "halted: {}", exit_text(&first));
    let (run_id, _) = only_run(&state);
    std::fs::write(state.join("go"), "").unwrap();
    let resumed = pony(&state, &["resume", &run_id]).output().unwrap();
    assert_eq!(code(&resumed), 0, "{}", exit_text(&resumed));
    assert_every_host_holds_the_token(&state, "used");
    for host in ["h1", "h2", "h3", "h4"] {
        assert_eq!(
            host_file(&state, host, "logins").as_deref(),
            Some("x\nx\n"),
            "{host}: login ran again, as the journal could not give its capture back"
        );
    }
    assert_not_on_disk(
        &state,
        TOKEN,
        &[("stdout", &resumed.stdout), ("stderr", &resumed.stderr)],
    );
}

#[test]
fn a_rollback_that_needs_a_secret_capture_names_it_and_takes_it_as_a_secret_var() {
    let dir = tempfile::tempdir().unwrap();
    let (state, deployed) = deploy(
        dir.path(),
        "  - { name: switch, needs: [login], run: echo new > release, rollback: 'echo {{ session_token }} > rolled' }\n",
    );
    assert_eq!(code(&deployed), 0, "{}", exit_text(&deployed));
    let (run_id, _) = only_run(&state);

    let without = pony(&state, &["rollback", &run_id, "--yes"])
        .output()
        .unwrap();
    assert_eq!(code(&without), 3, "{}", exit_text(&without));
    let said = exit_text(&without);
    assert!(
        said.contains("`session_token` is the secret capture of step `login`")
            && said.contains("--secret-var session_token=@FILE"),
        "says which capture is missing and how to give it: {said}"
    );
    assert_eq!(host_file(&state, "h1", "rolled"), None, "nothing ran");

    let file = dir.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let given = format!("session_token=@{}", file.display());
    let with = pony(
        &state,
        &["rollback", &run_id, "--yes", "--secret-var", &given],
    )
    .output()
    .unwrap();
    assert_eq!(code(&with), 0, "rolled back: {}", exit_text(&with));
    assert_every_host_holds_the_token(&state, "rolled");
    assert_not_on_disk(
        &state,
        TOKEN,
        &[("stdout", &with.stdout), ("stderr", &with.stderr)],
    );
}

#[test]
fn a_var_named_like_a_secret_is_never_stored_and_a_resume_asks_for_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (inventory, playbook) = write_plan(
        dir.path(),
        TINY_INVENTORY,
        "name: v\nstrategy: { on_failure: halt }\nsteps:\n  - { name: use, run: 'test -e ../../go && echo {{ api_token }} > used' }\n",
    );
    let mut args = deploy_args(&inventory, &playbook);
    let given = format!("api_token={TOKEN}");
    args.extend(["--var", &given]);
    let first = pony(&state, &args).output().unwrap();
    assert_eq!(code(&first), 3, "{}", exit_text(&first));
    assert_not_on_disk(&state, TOKEN, &[("stdout", &first.stdout)]);
    let (run_id, run) = only_run(&state);
    let vars = std::fs::read_to_string(run.join("vars.json")).unwrap();
    assert!(vars.contains("api_token"), "its name is kept: {vars}");

    std::fs::write(state.join("go"), "").unwrap();
    let asked = pony(&state, &["resume", &run_id]).output().unwrap();
    assert_eq!(code(&asked), 2, "{}", exit_text(&asked));
    assert!(
        exit_text(&asked).contains("`api_token`"),
        "{}",
        exit_text(&asked)
    );
    assert_eq!(host_file(&state, "h1", "used"), None, "nothing ran");

    let resumed = pony(&state, &["resume", &run_id, "--secret-var", &given])
        .output()
        .unwrap();
    assert_eq!(code(&resumed), 0, "{}", exit_text(&resumed));
    assert_eq!(
        host_file(&state, "h1", "used").as_deref(),
        Some(format!("{TOKEN}\n").as_str())
    );
    assert_not_on_disk(&state, TOKEN, &[("stdout", &resumed.stdout)]);
}

/// Every command that takes `--secret-var` reads its `@FILE` and `env:` sources before
/// anything else: an unreadable file is refused (exit 2) naming the key and the file, by
/// `pony join` as by `resume` and `rollback` (join once passed the text `@/…` on as the
/// secret's value).
#[test]
fn every_command_taking_secret_vars_reads_their_sources_first() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-secret");
    let source = format!("db_password=@{}", missing.display());
    let root = support::crate_root();
    let playbook = root.join("playbooks/mail-rollout.yaml");
    let playbook = playbook.to_str().unwrap();
    for command in [
        vec!["check", playbook],
        vec!["plan", playbook],
        vec!["simulate", playbook],
        vec!["deploy", playbook, "--yes"],
        vec!["join", "20990101-000000-none", "--regions", "r1"],
        vec!["resume", "20990101-000000-none"],
        vec!["rollback", "20990101-000000-none", "--yes"],
    ] {
        let mut args = command.clone();
        args.extend(["--secret-var", source.as_str()]);
        let out = pony(dir.path(), &args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(code(&out), 2, "{command:?}: {}", exit_text(&out));
        assert!(
            stderr.contains("--secret-var")
                && stderr.contains("db_password")
                && stderr.contains(&missing.display().to_string()),
            "{command:?} did not name the unreadable source: {stderr}"
        );
    }
}
