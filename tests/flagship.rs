//! The flagship playbook on the embedded default inventory (connection: local): the
//! README's run command, its idempotence, and the mail-safety promise that a queue that
//! will not drain fails the host and rolls it back without losing a queued mail.

mod support;

use std::path::Path;
use std::process::Output;
use support::pony;

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const DEPLOY: [&str; 5] = [
    "deploy",
    "-i",
    "inventories/local.yaml",
    "playbooks/mail-rollout.yaml",
    "--yes",
];
const HOSTS: [&str; 12] = [
    "mx-gz-01",
    "web-gz-01",
    "imap-gz-01",
    "store-gz-01",
    "mx-dub-01",
    "mx-dub-02",
    "imap-dub-01",
    "store-dub-01",
    "mx-iad-01",
    "web-iad-01",
    "imap-iad-01",
    "store-iad-01",
];

fn current(state: &Path, host: &str) -> Option<String> {
    std::fs::read_link(state.join("hosts").join(host).join("srv/mail/current"))
        .ok()
        .map(|p| p.display().to_string())
}

#[test]
fn the_readme_rollout_succeeds_and_a_second_run_changes_nothing_guarded() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path();
    let first = pony(state, &DEPLOY).output().unwrap();
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    for host in HOSTS {
        assert_eq!(
            current(state, host).as_deref(),
            Some("releases/2.4.1"),
            "{host}"
        );
        let running = std::fs::read_to_string(
            state
                .join("hosts")
                .join(host)
                .join("srv/mail/state/running"),
        )
        .unwrap();
        assert_eq!(running.trim(), "2.4.1", "{host}");
    }
    let mut args = DEPLOY.to_vec();
    args.extend(["--output", "json"]);
    let second = pony(state, &args).output().unwrap();
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    let skipped = String::from_utf8_lossy(&second.stdout)
        .lines()
        .filter(|l| l.contains("\"event\":\"task_skipped\"") && l.contains("\"step\":\"stage\""))
        .count();
    assert_eq!(skipped, 12, "stage is guarded by `creates` on every host");
}

#[test]
fn a_queue_that_will_not_drain_fails_the_host_and_keeps_the_mail() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path();
    let queue = state.join("hosts/mx-dub-01/srv/mail/queue");
    std::fs::create_dir_all(&queue).unwrap();
    std::fs::write(
        queue.join("msg-0001"),
        "From: a@example.net\n\nqueued mail\n",
    )
    .unwrap();
    let mut args = DEPLOY.to_vec();
    args.extend(["--var", "drain_wait_seconds=1"]);
    let out = pony(state, &args).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "failed, rollback complete: {}",
        text(&out)
    );
    let all = text(&out);
    assert!(
        all.contains("FAILED mx-dub-01") && all.contains("1 mails still queued"),
        "{all}"
    );
    assert_eq!(
        std::fs::read_to_string(queue.join("msg-0001")).unwrap(),
        "From: a@example.net\n\nqueued mail\n",
        "the queued mail is kept"
    );
    let mail = state.join("hosts/mx-dub-01/srv/mail");
    assert!(
        !mail.join("state/accepting-off").exists(),
        "the rolled-back MTA accepts mail again"
    );
    for host in HOSTS {
        let expected = if host.contains("dub") {
            None
        } else {
            Some("releases/2.4.1")
        };
        assert_eq!(
            current(state, host).as_deref(),
            expected,
            "{host}: eu-west is rolled back, the rest is on the new release"
        );
    }
}

/// The flagship rollout stopped by eu-west's MTA whose queue will not drain (exit 1,
/// eu-west rolled back, wave world stopped); returns the state folder and the run id.
fn stopped_by_a_queue_that_will_not_drain() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let queue = dir.path().join("hosts/mx-dub-01/srv/mail/queue");
    std::fs::create_dir_all(&queue).unwrap();
    std::fs::write(queue.join("msg-0001"), "From: a@example.net\n\nqueued\n").unwrap();
    let mut args = DEPLOY.to_vec();
    args.extend(["--var", "drain_wait_seconds=1"]);
    let out = pony(dir.path(), &args).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let (run, _) = support::only_run(dir.path());
    (dir, run)
}

/// Each command `pony status` offers after a failed wave, typed as printed, does what
/// docs/operating.md says: resume (once the host is fixed) finishes the release,
/// `--skip-failed-wave` leaves the wave's hosts as they are, rollback takes every host
/// the run touched back.
#[test]
fn every_command_status_suggests_after_a_failed_wave_works_on_the_flagship() {
    let (first, run) = stopped_by_a_queue_that_will_not_drain();
    let offered = support::suggestions(first.path(), &run);
    let state = first.path().display().to_string();
    assert_eq!(
        offered,
        [
            format!("pony resume {run} --state-dir {state}"),
            format!("pony resume {run} --skip-failed-wave --state-dir {state}"),
            format!("pony rollback {run} --state-dir {state}"),
        ]
    );

    // Resume, once the queue has been delivered by hand: every host on the new release.
    let queue = first.path().join("hosts/mx-dub-01/srv/mail/queue");
    std::fs::rename(queue.join("msg-0001"), first.path().join("delivered")).unwrap();
    let resumed = support::typed(&offered[0]).output().unwrap();
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed));
    for host in HOSTS {
        assert_eq!(
            current(first.path(), host).as_deref(),
            Some("releases/2.4.1"),
            "{host}"
        );
    }

    // Skip the failed wave: eu-west stays on the old release, the rest on the new one.
    let (second, run) = stopped_by_a_queue_that_will_not_drain();
    let skip = &support::suggestions(second.path(), &run)[1];
    let skipped = support::typed(skip).output().unwrap();
    assert_eq!(skipped.status.code(), Some(0), "{skip}: {}", text(&skipped));
    let journal = support::journal(&second.path().join("runs").join(&run));
    assert!(
        journal
            .iter()
            .any(|r| r["type"] == "wave_skipped" && r["wave"] == "world"),
        "{}",
        text(&skipped)
    );
    for host in HOSTS {
        let expected = (!host.contains("dub")).then_some("releases/2.4.1");
        assert_eq!(current(second.path(), host).as_deref(), expected, "{host}");
    }
    assert!(second
        .path()
        .join("hosts/mx-dub-01/srv/mail/queue/msg-0001")
        .exists());

    // Roll back: every host the run touched leaves the new release. Without a terminal
    // to confirm on, as in CI, PONY_YES answers its question.
    let (third, run) = stopped_by_a_queue_that_will_not_drain();
    let rollback = &support::suggestions(third.path(), &run)[2];
    let rolled = support::typed(rollback)
        .env("PONY_YES", "1")
        .output()
        .unwrap();
    assert_eq!(
        rolled.status.code(),
        Some(0),
        "{rollback}: {}",
        text(&rolled)
    );
    for host in HOSTS {
        assert_eq!(current(third.path(), host), None, "{host}");
    }
    assert!(third
        .path()
        .join("hosts/mx-dub-01/srv/mail/queue/msg-0001")
        .exists());
}
