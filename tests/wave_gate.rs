//! A wave whose hosts failed beyond budget does not pass its gate: no task of a later wave
//! starts (checked on the hosts' folders and in the journal), the other regions of a
//! multi-region wave finish, a failure within budget lets the rollout go on, and
//! `pony resume` goes on only once the failed wave's hosts succeed (or with
//! `--skip-failed-wave`, journaled). All on `connection: local` hosts.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use support::{deploy_args, pony};

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const CN_SOUTH: [&str; 4] = ["mx-gz-01", "web-gz-01", "imap-gz-01", "store-gz-01"];
const EU_WEST: [&str; 4] = ["mx-dub-01", "mx-dub-02", "imap-dub-01", "store-dub-01"];
const US_EAST: [&str; 4] = ["mx-iad-01", "web-iad-01", "imap-iad-01", "store-iad-01"];

fn host_dir(state: &Path, host: &str) -> PathBuf {
    state.join("hosts").join(host)
}

fn current(state: &Path, host: &str) -> Option<String> {
    std::fs::read_link(host_dir(state, host).join("srv/mail/current"))
        .ok()
        .map(|p| p.display().to_string())
}

/// One mail that cannot leave the host's queue: its drain fails.
fn stuck_mail(state: &Path, host: &str) -> PathBuf {
    let queue = host_dir(state, host).join("srv/mail/queue");
    std::fs::create_dir_all(&queue).unwrap();
    let mail = queue.join("msg-0001");
    std::fs::write(&mail, "From: a@example.net\n\nqueued mail\n").unwrap();
    mail
}

fn only_run(state: &Path) -> String {
    let runs: Vec<String> = std::fs::read_dir(state.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs[0].clone()
}

fn journal(state: &Path, run: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(state.join("runs").join(run).join("journal.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn of_type<'a>(records: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    records.iter().filter(|r| r["type"] == kind).collect()
}

/// Hosts with at least one `task_started` record.
fn started_hosts(records: &[serde_json::Value]) -> Vec<String> {
    let mut hosts: Vec<String> = of_type(records, "task_started")
        .iter()
        .map(|r| {
            let label = r["label"].as_str().unwrap();
            label.split_once('@').unwrap().1.to_string()
        })
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

/// The flagship rollout playbook.
const FLAGSHIP: &str = "playbooks/mail-rollout.yaml";

/// `pony deploy -i inventories/local.yaml PLAYBOOK --yes --var drain_wait_seconds=1
/// <extra>` to completion.
fn deploy_local(state: &Path, playbook: impl AsRef<Path>, extra: &[&str]) -> Output {
    let mut args = deploy_args(Path::new("inventories/local.yaml"), playbook.as_ref());
    args.extend(["--var", "drain_wait_seconds=1"]);
    args.extend_from_slice(extra);
    pony(state, &args).output().unwrap()
}

/// The flagship playbook with its strategy edited.
fn flagship_with(dir: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    let text = std::fs::read_to_string(FLAGSHIP).unwrap();
    let edited = edit(text.clone());
    assert_ne!(edited, text, "the edit applies");
    let path = dir.join("playbook.yaml");
    std::fs::write(&path, edited).unwrap();
    path
}

#[test]
fn a_failed_canary_stops_the_rollout_before_any_other_host_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path();
    let mail = stuck_mail(state, "mx-gz-01");
    let out = deploy_local(state, FLAGSHIP, &["--output", "json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "failed, rolled back: {}",
        text(&out)
    );
    // On disk: only the canary was touched, and it is back on the old release with its
    // mail kept and accepting again.
    for host in CN_SOUTH.iter().chain(&EU_WEST).chain(&US_EAST) {
        if *host == "mx-gz-01" {
            continue;
        }
        assert!(
            !host_dir(state, host).exists(),
            "{host} is outside the canary and must not be touched"
        );
    }
    assert_eq!(
        current(state, "mx-gz-01"),
        None,
        "the canary is rolled back"
    );
    assert!(mail.exists(), "the queued mail is kept");
    assert!(!host_dir(state, "mx-gz-01")
        .join("srv/mail/state/accepting-off")
        .exists());
    // The journal: no task of another host started, the canary gate did not pass, and the
    // record says why.
    let run = only_run(state);
    let records = journal(state, &run);
    assert_eq!(started_hosts(&records), vec!["mx-gz-01".to_string()]);
    assert!(of_type(&records, "gate_passed").is_empty(), "{records:?}");
    let stopped = of_type(&records, "wave_stopped");
    assert_eq!(stopped.len(), 1);
    assert_eq!(stopped[0]["wave"], "canary");
    assert!(
        stopped[0]["reason"]
            .as_str()
            .unwrap()
            .contains("cluster gz-edge-1 (region cn-south) failed 1 host(s)"),
        "{}",
        stopped[0]
    );
    // The events say it too, and the summary names the wave.
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events
        .iter()
        .any(|e| e["event"] == "wave_failed" && e["wave"] == "canary"));
    assert!(!events.iter().any(|e| e["event"] == "gate_passed"));
    assert!(!events
        .iter()
        .any(|e| e["event"] == "wave_started" && e["wave"] != "canary"));
    let summary = events.iter().find(|e| e["event"] == "summary").unwrap();
    assert_eq!(summary["stopped_wave"], "canary");
    assert_eq!(summary["exit_code"], 1);
    // `pony status` shows the failed wave, not under "gates passed".
    let status = pony(state, &["status", &run]).output().unwrap();
    let status_text = text(&status);
    assert!(
        status_text.contains("stopped at wave canary: cluster gz-edge-1"),
        "{status_text}"
    );
    assert!(status_text.contains("gates passed: none"), "{status_text}");
    // Its one host failed at drain: every host of the wave failed at the same step, so
    // skipping the wave is not offered (it would carry a release at fault on).
    assert!(!status_text.contains("--skip-failed-wave"), "{status_text}");
    assert!(
        status_text.contains("every host of it failed at step drain"),
        "{status_text}"
    );
    let json = pony(state, &["status", &run, "--output", "json"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["stopped_wave"]["wave"], "canary");
    assert_eq!(json["waiting"]["reason"], "failed_wave");
}

#[test]
fn a_canary_failure_within_budget_lets_the_rollout_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // gz-edge-1 has two hosts: one failure is within max_failures 1.
    let playbook = flagship_with(dir.path(), |t| {
        t.replace("max_failures: 0", "max_failures: 1")
    });
    stuck_mail(&state, "mx-gz-01");
    let out = deploy_local(&state, &playbook, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        current(&state, "mx-gz-01"),
        None,
        "the canary is rolled back"
    );
    for host in CN_SOUTH.iter().chain(&EU_WEST).chain(&US_EAST) {
        if *host != "mx-gz-01" {
            assert_eq!(
                current(&state, host).as_deref(),
                Some("releases/2.4.1"),
                "{host} goes on"
            );
        }
    }
    let records = journal(&state, &only_run(&state));
    assert!(of_type(&records, "wave_stopped").is_empty());
    let passed: Vec<&str> = of_type(&records, "gate_passed")
        .iter()
        .map(|r| r["wave"].as_str().unwrap())
        .collect();
    assert_eq!(passed, vec!["canary", "china", "world"]);
}

/// Two waves: eu-west and us-east together, then cn-south.
fn two_region_wave(dir: &Path) -> PathBuf {
    flagship_with(dir, |t| {
        let start = t.find("  waves:\n").unwrap();
        let end = t.find("  # At most a quarter").unwrap();
        format!(
            "{}  waves:\n    - {{ name: west, regions: [eu-west, us-east] }}\n    - {{ name: rest, regions: [\"*\"] }}\n{}",
            &t[..start],
            &t[end..]
        )
    })
}

#[test]
fn a_failed_region_lets_the_other_regions_of_its_wave_finish_but_no_later_wave_starts() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let playbook = two_region_wave(dir.path());
    stuck_mail(&state, "mx-dub-01");
    let out = deploy_local(&state, &playbook, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("wave west FAILED"), "{}", text(&out));
    for host in US_EAST {
        assert_eq!(
            current(&state, host).as_deref(),
            Some("releases/2.4.1"),
            "{host}: the other region of the wave finishes"
        );
    }
    for host in EU_WEST {
        assert_eq!(current(&state, host), None, "{host}: eu-west rolled back");
    }
    for host in CN_SOUTH {
        assert!(
            !host_dir(&state, host).exists(),
            "{host}: the next wave does not start"
        );
    }
    // One host of eight failed: skipping the wave is offered.
    let run = only_run(&state);
    let status = text(&pony(&state, &["status", &run]).output().unwrap());
    assert!(
        status.contains(&format!("pony resume {run} --skip-failed-wave")),
        "{status}"
    );
}

/// The flagship rollout on the local inventory with a mail stuck in the canary's queue:
/// the canary wave fails (exit 1). Returns the stuck mail and the run id.
fn failed_canary_run(state: &Path) -> (PathBuf, String) {
    let mail = stuck_mail(state, "mx-gz-01");
    assert_eq!(deploy_local(state, FLAGSHIP, &[]).status.code(), Some(1));
    (mail, only_run(state))
}

#[test]
fn resume_goes_on_only_once_the_failed_wave_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path();
    let (mail, run) = failed_canary_run(state);
    // Not fixed yet: the canary fails again and the rollout stays stopped.
    let again = pony(state, &["resume", &run]).output().unwrap();
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(!host_dir(state, "web-gz-01").exists());
    assert!(!host_dir(state, "mx-dub-01").exists());
    // Fixed (the mail was delivered elsewhere): the resume runs the canary and the rest.
    std::fs::remove_file(&mail).unwrap();
    let fixed = pony(state, &["resume", &run]).output().unwrap();
    assert_eq!(fixed.status.code(), Some(0), "{}", text(&fixed));
    for host in CN_SOUTH.iter().chain(&EU_WEST).chain(&US_EAST) {
        assert_eq!(
            current(state, host).as_deref(),
            Some("releases/2.4.1"),
            "{host}"
        );
    }
    let records = journal(state, &run);
    let kinds: Vec<String> = records
        .iter()
        .filter(|r| r["type"] == "wave_stopped" || r["type"] == "gate_passed")
        .map(|r| {
            format!(
                "{} {}",
                r["type"].as_str().unwrap(),
                r["wave"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            "wave_stopped canary",
            "wave_stopped canary",
            "gate_passed canary",
            "gate_passed china",
            "gate_passed world"
        ]
    );
    let status = text(&pony(state, &["status", &run]).output().unwrap());
    assert!(!status.contains("stopped at wave"), "{status}");
}

#[test]
fn skip_failed_wave_goes_on_without_the_failed_hosts_and_is_journaled() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path();
    let (mail, run) = failed_canary_run(state);
    let before = journal(state, &run)
        .iter()
        .filter(|r| r["type"] == "task_started")
        .count();
    let skipped = pony(state, &["resume", &run, "--skip-failed-wave"])
        .output()
        .unwrap();
    assert_eq!(skipped.status.code(), Some(0), "{}", text(&skipped));
    // The canary is left as it was (rolled back, mail kept); everyone else is deployed.
    assert_eq!(current(state, "mx-gz-01"), None);
    assert!(mail.exists());
    for host in CN_SOUTH.iter().chain(&EU_WEST).chain(&US_EAST) {
        if *host != "mx-gz-01" {
            assert_eq!(
                current(state, host).as_deref(),
                Some("releases/2.4.1"),
                "{host}"
            );
        }
    }
    let records = journal(state, &run);
    let skip = of_type(&records, "wave_skipped");
    assert_eq!(skip.len(), 1, "{records:?}");
    assert_eq!(skip[0]["wave"], "canary");
    assert!(!skip[0]["user"].as_str().unwrap().is_empty());
    // No canary task ran again.
    let canary_after: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["type"] == "task_started")
        .skip(before)
        .filter(|r| r["label"].as_str().unwrap().ends_with("@mx-gz-01"))
        .collect();
    assert!(canary_after.is_empty(), "{canary_after:?}");
    // Skipping again: there is no failed wave any more.
    let nothing = pony(state, &["resume", &run, "--skip-failed-wave"])
        .output()
        .unwrap();
    assert_eq!(nothing.status.code(), Some(2), "{}", text(&nothing));
    assert!(
        text(&nothing).contains("was not stopped by a failed wave"),
        "{}",
        text(&nothing)
    );
}

/// A resume names the waves that are left: after the canary and china passed their gates
/// and a host of `world` failed, it announces `world`, not the run's first wave.
#[test]
fn resume_announces_the_waves_that_are_left() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path();
    let mail = stuck_mail(state, "mx-dub-01");
    let first = deploy_local(state, FLAGSHIP, &[]);
    assert_eq!(first.status.code(), Some(1), "{}", text(&first));
    let run = only_run(state);
    let passed: Vec<String> = journal(state, &run)
        .iter()
        .filter(|r| r["type"] == "gate_passed")
        .map(|r| r["wave"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(passed, ["canary", "china"], "world failed");
    std::fs::remove_file(&mail).unwrap();
    let resumed = pony(state, &["resume", &run, "--output", "json"])
        .output()
        .unwrap();
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed));
    let waves: Vec<String> = support::events(&resumed)
        .iter()
        .filter(|e| e["event"] == "wave_started")
        .map(|e| e["wave"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(waves, ["world"], "{}", text(&resumed));
}
