//! `pony rollback RUN` tells the truth: it counts and reports only the hosts it touches
//! (within `--limit`, and not those an earlier rollback already undid), announces no
//! wave, asks "roll back" at a terminal (tmux) and refuses without one. Also the command
//! line: `--junit`/`--connections` only where they apply, a `--limit` example that works,
//! and a missing default inventory that says what to do.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

use support::tmux::Session;
use support::{events, exit_text};

const PONY: &str = env!("CARGO_BIN_EXE_pony");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn pony(state: &Path, args: &[&str]) -> Output {
    support::pony_bare()
        .current_dir(root())
        .env("PONY_STATE_DIR", state)
        .args(args)
        .output()
        .expect("pony runs")
}

/// Deploys the flagship on the local inventory and returns the run id.
fn deployed(state: &Path) -> String {
    let out = pony(state, &["deploy", "playbooks/mail-rollout.yaml", "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", exit_text(&out));
    let runs: Vec<String> = std::fs::read_dir(state.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(runs.len(), 1);
    runs[0].clone()
}

fn live(state: &Path, host: &str) -> bool {
    state
        .join("hosts")
        .join(host)
        .join("srv/mail/current")
        .symlink_metadata()
        .is_ok()
}

fn finished_hosts(events: &[Value]) -> Vec<String> {
    let mut hosts: Vec<String> = events
        .iter()
        .filter(|e| e["event"] == "host_finished")
        .map(|e| e["host"].as_str().unwrap().to_string())
        .collect();
    hosts.sort();
    hosts
}

const CN_SOUTH: [&str; 4] = ["imap-gz-01", "mx-gz-01", "store-gz-01", "web-gz-01"];

#[test]
fn a_second_rollback_reports_only_what_it_touches() {
    let state = tempfile::tempdir().unwrap();
    let state = state.path();
    let run = deployed(state);

    let out = pony(
        state,
        &[
            "rollback", &run, "--limit", "cn-south", "--yes", "--output", "json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", exit_text(&out));
    let first = events(&out);
    assert_eq!(first[0]["event"], "run_started");
    assert_eq!(first[0]["hosts"], 4, "{}", first[0]);
    assert_eq!(first[0]["regions"], serde_json::json!([["cn-south", 4]]));
    assert_eq!(first[0]["waves"], serde_json::json!([]));
    assert!(
        !first.iter().any(|e| e["event"] == "wave_started"),
        "a rollback has no waves"
    );
    assert_eq!(finished_hosts(&first), CN_SOUTH);
    for host in CN_SOUTH {
        assert!(!live(state, host), "{host} rolled back");
    }
    assert!(live(state, "mx-dub-01"), "outside the limit");

    // The rest, without --limit: cn-south is not rolled back (nor reported) again.
    let out = pony(state, &["rollback", &run, "--yes", "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", exit_text(&out));
    let second = events(&out);
    assert_eq!(second[0]["hosts"], 8, "{}", second[0]);
    assert_eq!(
        second[0]["regions"],
        serde_json::json!([["eu-west", 4], ["us-east", 4]])
    );
    let hosts = finished_hosts(&second);
    assert_eq!(hosts.len(), 8, "{hosts:?}");
    assert!(!hosts.iter().any(|h| h.contains("-gz-")), "{hosts:?}");
    assert!(!live(state, "mx-dub-01") && !live(state, "store-iad-01"));

    // Nothing left: said so, no host touched or reported; the attempt is journaled.
    let journal = state.join("runs").join(&run).join("journal.jsonl");
    let before = std::fs::read_to_string(&journal).unwrap().lines().count();
    let out = pony(state, &["rollback", &run, "--output", "json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "no question either: {}",
        exit_text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing to roll back"),
        "{}",
        exit_text(&out)
    );
    let third = events(&out);
    assert_eq!(third[0]["hosts"], 0, "{}", third[0]);
    assert_eq!(finished_hosts(&third), Vec::<String>::new());
    assert!(!third.iter().any(|e| e["event"] == "rollback_task"));
    let records: Vec<Value> = std::fs::read_to_string(&journal)
        .unwrap()
        .lines()
        .skip(before)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["run_resumed", "run_finished"], "{records:?}");
}

#[test]
fn the_plain_header_counts_the_hosts_of_the_limit_only() {
    let state = tempfile::tempdir().unwrap();
    let state = state.path();
    let run = deployed(state);
    let out = pony(state, &["rollback", &run, "--limit", "eu-west", "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", exit_text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let header = stdout.lines().next().unwrap_or_default();
    assert!(
        header.contains("mail-rollout on local, 4 hosts,"),
        "{stdout}"
    );
    assert!(!stdout.contains("== wave"), "{stdout}");
    assert!(
        !stdout.contains("cn-south") && !stdout.contains("us-east"),
        "{stdout}"
    );
}

#[test]
fn without_a_terminal_rollback_refuses_to_roll_back() {
    let state = tempfile::tempdir().unwrap();
    let state = state.path();
    let run = deployed(state);
    let out = pony(state, &["rollback", &run]);
    assert_eq!(out.status.code(), Some(2), "{}", exit_text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to roll back without confirmation"),
        "{stderr}"
    );
    assert!(stderr.contains("to roll back from CI"), "{stderr}");
    assert!(!stderr.contains("deploy"), "{stderr}");
    assert!(live(state, "mx-gz-01"), "nothing rolled back");
}

#[test]
fn a_terminal_is_asked_to_roll_back() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let run = deployed(&state);
    let exit_file = dir.path().join("exit");
    let command = format!(
        "{PONY} --state-dir {} rollback {run} --limit mx-gz-01; echo $? > {}; sleep 30",
        state.display(),
        exit_file.display()
    );
    let session = Session::start(
        &format!("pony-rollback-prompt-{}", std::process::id()),
        200,
        &command,
    )
    .joining_wrapped_lines();
    let screen = session.wait_for("[y/N]");
    assert!(
        screen.contains("Roll back 5 tasks on 1 hosts of local"),
        "{screen}"
    );
    assert!(
        screen.contains("cn-south       1 hosts: mx-gz-01"),
        "{screen}"
    );
    assert!(!screen.contains("Deploy"), "{screen}");
    assert!(live(&state, "mx-gz-01"), "nothing before the answer");
    session.answer_yes();
    assert_eq!(support::wait_for_exit_code(&exit_file), 0);
    assert!(!live(&state, "mx-gz-01"));
    assert!(live(&state, "web-gz-01"), "outside the limit");
}

#[test]
fn rollback_help_explains_its_arguments() {
    let state = tempfile::tempdir().unwrap();
    let out = pony(state.path(), &["rollback", "--help"]);
    assert_eq!(out.status.code(), Some(0), "{}", exit_text(&out));
    let help = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "The run id, or a unique prefix of one",
        "Only these of the run's hosts",
        "Do not ask for confirmation",
        "--junit <FILE>",
        "--connections <N>",
    ] {
        assert!(help.contains(expected), "missing {expected:?} in\n{help}");
    }
}

/// `--junit` and `--connections` exist only where they do something.
#[test]
fn run_options_only_on_the_commands_that_run() {
    let state = tempfile::tempdir().unwrap();
    let state = state.path();
    for args in [
        &["check", "playbooks/mail-rollout.yaml", "--junit", "x.xml"][..],
        &["plan", "playbooks/mail-rollout.yaml", "--connections", "3"],
        &["inventory", "--junit", "x.xml"],
        &["status", "--connections", "3"],
        &["ping", "--junit", "x.xml"],
    ] {
        let out = pony(state, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", exit_text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("unexpected argument"),
            "{args:?}: {}",
            exit_text(&out)
        );
    }
    let junit = state.join("report.xml");
    let out = pony(
        state,
        &[
            "deploy",
            "playbooks/mail-rollout.yaml",
            "--yes",
            "--connections",
            "2",
            "--junit",
            junit.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", exit_text(&out));
    let xml = std::fs::read_to_string(&junit).expect("the JUnit report is written");
    assert_eq!(xml.matches("<testcase").count(), 12, "{xml}");
    let out = pony(state, &["exec", "--connections", "3", "--", "true"]);
    assert_eq!(out.status.code(), Some(0), "{}", exit_text(&out));
}

/// The example in `--limit`'s help selects hosts on the inventory it names.
#[test]
fn the_limit_example_in_the_help_works() {
    let state = tempfile::tempdir().unwrap();
    let out = pony(state.path(), &["deploy", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let example = help
        .split('`')
        .find(|w| w.contains(":&"))
        .unwrap_or_else(|| panic!("no pattern example in\n{help}"));
    assert!(help.contains("inventories/global.yaml"), "{help}");
    let out = pony(
        state.path(),
        &[
            "inventory",
            "-i",
            "inventories/global.yaml",
            "--limit",
            example,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{example}: {}", exit_text(&out));
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("mx-gz-0001") && !listed.contains("mx-gz-0099 "),
        "{listed}"
    );
}

/// Run from another folder, the default inventory is not there: the error says what the
/// default is and how to give one, instead of repeating the path that failed.
#[test]
fn a_missing_default_inventory_says_what_to_do() {
    let elsewhere = tempfile::tempdir().unwrap();
    let playbook = root().join("playbooks/mail-rollout.yaml");
    for args in [vec!["check", playbook.to_str().unwrap()], vec!["inventory"]] {
        let out = support::pony_bare()
            .current_dir(elsewhere.path())
            .env("PONY_STATE_DIR", elsewhere.path().join("state"))
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", exit_text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("`inventories/local.yaml` (the default without -i) is not in"),
            "{stderr}"
        );
        assert!(stderr.contains("-i FILE"), "{stderr}");
        assert!(
            !stderr.contains("e.g. -i inventories/local.yaml"),
            "{stderr}"
        );
        assert!(out.stdout.is_empty());
    }
}
