//! Promises about what pony gives away and how it ends (issue #20, defects 3-7):
//! a state database's password is never printed; the SSH control directory is private
//! and a planted one is refused (exit 2); a notifier and a `connection: local` host's
//! commands get no secret through their environment; a reader that stops early
//! (`| head`) ends no command with a panic; every printed `pony …` hint carries the
//! options that chose the state, and `-q` prints only what a person must see.

mod support;

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use support::{code, exit_text, pony, write_plan, TINY_INVENTORY};

/// stdout and stderr as one text (what a person or a CI log would see).
fn all_output(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

// ---- defect 3: the state URL's password ------------------------------------------

#[test]
fn a_state_database_password_is_printed_in_no_form() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1: the connection is refused at once.
    for state in [
        "postgres://u@127.0.0.1:1/db?password=hunter2",
        "postgres://u@127.0.0.1:1/db?sslmode=disable&password=hunter2",
        "postgresql://u:hunter2@127.0.0.1:1/db",
        // A key=value string is not a URL pony takes, and its refusal repeats it.
        "host=127.0.0.1 port=1 password=hunter2 dbname=db",
    ] {
        for command in [&["history"][..], &["status"], &["-v", "history"]] {
            let output = pony(dir.path(), command)
                .arg("--state")
                .arg(state)
                .output()
                .unwrap();
            assert_eq!(code(&output), 2, "{state}: {}", exit_text(&output));
            let shown = all_output(&output);
            assert!(!shown.contains("hunter2"), "{state}: {shown}");
            assert!(
                shown.contains("127.0.0.1"),
                "the message still says which database: {shown}"
            );
        }
    }
    // The same through PONY_STATE.
    let output = pony(dir.path(), &["history"])
        .env("PONY_STATE", "postgres://u@127.0.0.1:1/db?password=hunter2")
        .output()
        .unwrap();
    assert_eq!(code(&output), 2, "{}", exit_text(&output));
    let shown = all_output(&output);
    assert!(shown.contains("cannot reach the state database"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

// ---- defect 4: the SSH control directory -----------------------------------------

/// An inventory of one SSH host that nothing answers for (port 1 on loopback).
fn ssh_inventory(dir: &Path) -> PathBuf {
    let path = dir.join("ssh.yaml");
    std::fs::write(
        &path,
        "name: ssh\nregions:\n  r1:\n    clusters:\n      c1:\n        hosts:\n          h1: { address: 127.0.0.1, ssh: { port: 1, connect_retries: 0, connect_timeout: 2s } }\n",
    )
    .unwrap();
    path
}

/// `pony ping` of [`ssh_inventory`] with `$XDG_RUNTIME_DIR` = `runtime`.
fn ping_with_runtime(dir: &Path, runtime: &Path) -> Output {
    let inventory = ssh_inventory(dir);
    pony(
        &dir.join("state"),
        &["ping", "-i", inventory.to_str().unwrap()],
    )
    .env("XDG_RUNTIME_DIR", runtime)
    .output()
    .unwrap()
}

/// The control directory pony uses under `runtime`: `pony-ssh-<uid>`.
fn control_dir(runtime: &Path) -> PathBuf {
    let uid = std::fs::metadata(runtime).unwrap().uid();
    runtime.join(format!("pony-ssh-{uid}"))
}

#[test]
fn a_fresh_ssh_control_dir_is_made_private() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("runtime");
    std::fs::create_dir(&runtime).unwrap();
    let output = ping_with_runtime(dir.path(), &runtime);
    // The host does not answer (exit 1), but the folder was made for this user alone.
    assert_eq!(code(&output), 1, "{}", exit_text(&output));
    let made = std::fs::symlink_metadata(control_dir(&runtime)).unwrap();
    assert!(made.is_dir());
    assert_eq!(made.mode() & 0o777, 0o700);
}

#[test]
fn a_planted_ssh_control_dir_is_refused_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("runtime");
    std::fs::create_dir(&runtime).unwrap();
    let planted = control_dir(&runtime);
    std::fs::create_dir(&planted).unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o777)).unwrap();

    let output = ping_with_runtime(dir.path(), &runtime);
    assert_eq!(code(&output), 2, "{}", exit_text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&planted.display().to_string()), "{stderr}");
    assert!(stderr.contains("mode 0777"), "{stderr}");
    assert!(stderr.contains("hint:"), "{stderr}");

    // A deploy refuses it before it takes the lock or starts a run.
    let playbook = dir.path().join("playbook.yaml");
    std::fs::write(
        &playbook,
        "name: p\nsteps:\n  - { name: a, run: \"true\" }\n",
    )
    .unwrap();
    let inventory = ssh_inventory(dir.path());
    let state = dir.path().join("state");
    let output = pony(&state, &support::deploy_args(&inventory, &playbook))
        .env("XDG_RUNTIME_DIR", &runtime)
        .output()
        .unwrap();
    assert_eq!(code(&output), 2, "{}", exit_text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("mode 0777"),
        "{}",
        exit_text(&output)
    );
    assert!(!state.join("runs").exists(), "no run was started");
}

#[test]
fn a_symlink_in_place_of_the_ssh_control_dir_is_refused_and_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("runtime");
    std::fs::create_dir(&runtime).unwrap();
    let target = dir.path().join("attacker");
    std::fs::create_dir(&target).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700)).unwrap();
    let link = control_dir(&runtime);
    std::os::unix::fs::symlink(&target, &link).unwrap();

    let output = ping_with_runtime(dir.path(), &runtime);
    assert_eq!(code(&output), 2, "{}", exit_text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("symbolic link"), "{stderr}");
    assert!(stderr.contains(&link.display().to_string()), "{stderr}");
    assert_eq!(
        std::fs::read_dir(&target).unwrap().count(),
        0,
        "nothing was made through the link"
    );
}

// ---- defect 5: secrets in children's environments --------------------------------

#[test]
fn notifiers_and_local_hosts_get_no_secret_through_the_environment() {
    let server = support::db::server();
    let state_url = format!("{}?password=st4te-pw-in-url", server.url());
    let dir = tempfile::tempdir().unwrap();
    let (inventory, playbook) = write_plan(
        dir.path(),
        TINY_INVENTORY,
        "name: env\nsteps:\n  - name: dump\n    run: \"test -n '{{ api_key }}' && env > envfile\"\n",
    );
    let notified = dir.path().join("notifier-env");
    let state = dir.path().join("state");
    let mut args = support::deploy_args(&inventory, &playbook);
    args.extend([
        "--limit",
        "h1",
        "--secret-var",
        "api_key=env:HARDENING_API_KEY",
    ]);
    let notifier = format!("env >> {}", notified.display());
    args.extend(["--notify", &notifier]);
    let output = pony(&state, &args)
        .env("PONY_STATE", &state_url)
        .env("HARDENING_API_KEY", "s3cret-api-key-from-env")
        .env("RELEASE_SIGNING_TOKEN", "t0ken-by-its-name")
        .env("PONY_WEBHOOK_URL", "https://hooks.example/notifier-setting")
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{}", exit_text(&output));

    let host_env = std::fs::read_to_string(state.join("hosts/h1/envfile")).unwrap();
    let notifier_env = std::fs::read_to_string(&notified).unwrap();
    for (whose, env) in [
        ("the local host's", &host_env),
        ("the notifier's", &notifier_env),
    ] {
        for leak in [
            "st4te-pw-in-url",
            "PONY_STATE",
            "s3cret-api-key-from-env",
            "HARDENING_API_KEY",
            "t0ken-by-its-name",
        ] {
            assert!(
                !env.contains(leak),
                "{whose} environment has {leak}:\n{env}"
            );
        }
        assert!(
            env.contains("PATH="),
            "{whose} environment has PATH:\n{env}"
        );
    }
    // A notifier keeps its own settings; a local host gets a login environment only.
    assert!(notifier_env.contains("PONY_WEBHOOK_URL="), "{notifier_env}");
    assert!(notifier_env.contains("PONY_RUN_ID="), "{notifier_env}");
    assert!(!host_env.contains("PONY_WEBHOOK_URL"), "{host_env}");
}

// ---- defect 6: a reader that stops early -----------------------------------------

/// A local inventory of `hosts` hosts (`h-00001` …) and a playbook of one step.
fn big_plan(dir: &Path, hosts: usize) -> (PathBuf, PathBuf) {
    write_plan(
        dir,
        &format!(
            "name: big\ndefaults:\n  connection: local\nregions:\n  r1:\n    clusters:\n      c1:\n        hosts:\n          h-[00001:{hosts:05}]: {{}}\n"
        ),
        "name: big\nsteps:\n  - { name: hello, run: \"echo hello from a host with a longish command line\" }\n",
    )
}

/// Starts pony with stdout piped, reads a little of it and closes the pipe: pony must
/// end as it would have (exit 0), not panic on the closed pipe.
fn stops_reading_early(state: &Path, args: &[&str]) {
    let mut child = pony(state, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 64];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!stderr.contains("panicked"), "pony {args:?}: {stderr}");
    assert_eq!(status.code(), Some(0), "pony {args:?}: {status}\n{stderr}");
}

#[test]
fn a_reader_that_stops_early_ends_no_command_with_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    // Every output below is far more than a pipe holds (64 KiB), so pony writes into
    // the closed pipe.
    let (inventory, playbook) = big_plan(dir.path(), 4000);
    let (inventory, playbook) = (inventory.to_str().unwrap(), playbook.to_str().unwrap());
    let state = dir.path().join("state");
    stops_reading_early(&state, &["inventory", "-i", inventory]);
    stops_reading_early(&state, &["graph", "-i", inventory, playbook, "--tasks"]);
    stops_reading_early(&state, &["deploy", "-i", inventory, playbook, "--dry-run"]);
    stops_reading_early(
        &state,
        &[
            "exec", "-i", inventory, "--limit", "h-00001", "--", "seq", "1", "300000",
        ],
    );
}

// ---- defect 7: hints carry the state options; -q ---------------------------------

#[test]
fn lab_ups_stop_hint_carries_the_state_dir_and_works() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("lab state");
    let output = pony(
        &state,
        &[
            "lab",
            "up",
            "--regions",
            "1",
            "--clusters",
            "1",
            "--hosts",
            "1",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(code(&output), 0, "{}", exit_text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stop = stdout
        .lines()
        .find_map(|l| l.strip_prefix("stop with: "))
        .unwrap_or_else(|| panic!("no stop hint: {stdout}"))
        .to_string();
    assert!(stop.contains("--state-dir"), "{stop}");
    // Typed as printed, from another folder, with the pony under test first on PATH.
    let bin = Path::new(env!("CARGO_BIN_EXE_pony")).parent().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let down = Command::new("sh")
        .arg("-c")
        .arg(&stop)
        .current_dir(dir.path())
        .env("PATH", path)
        .env_remove("PONY_STATE_DIR")
        .output()
        .unwrap();
    assert_eq!(code(&down), 0, "`{stop}`: {}", exit_text(&down));
    assert!(
        String::from_utf8_lossy(&down.stdout).contains("lab down: stopped 1 sshd servers"),
        "{}",
        exit_text(&down)
    );
}

#[test]
fn summary_hints_carry_the_state_dir_and_quiet_prints_no_routine_line() {
    let dir = tempfile::tempdir().unwrap();
    let (inventory, playbook) = write_plan(
        dir.path(),
        TINY_INVENTORY,
        "name: gated\nstrategy:\n  on_failure: halt\n  waves:\n    - { name: first, regions: [r1], pause: 1s }\n    - { name: rest, regions: [\"*\"] }\nsteps:\n  - { name: a, run: \"true\" }\n  - { name: b, needs: [a], run: \"test $(basename $PWD) != h4\" }\n",
    );
    let state = dir.path().join("state");
    let mut args = vec!["-q"];
    args.extend(support::deploy_args(&inventory, &playbook));
    let output = pony(&state, &args).output().unwrap();
    assert_eq!(code(&output), 3, "{}", exit_text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    // The halt's hint names this state folder.
    let next = stdout
        .lines()
        .find(|l| l.starts_with("next:"))
        .unwrap_or_else(|| panic!("no next: line\n{stdout}"));
    assert!(
        next.contains(&format!("--state-dir {}", state.display())),
        "{next}"
    );
    // -q: the failure, the stop and the summary; no wave, gate or progress line.
    assert!(stdout.contains("FAILED h4"), "{stdout}");
    for routine in ["== wave", "== gate", "progress:"] {
        assert!(
            !stdout.lines().any(|l| l.starts_with(routine)),
            "-q printed {routine:?}:\n{stdout}"
        );
    }
    assert!(
        !stdout.contains(": gated on tiny"),
        "no run-started line: {stdout}"
    );
    assert!(stdout.contains("REGION"), "{stdout}");
}
