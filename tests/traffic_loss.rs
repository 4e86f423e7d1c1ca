//! `pony lab traffic` exits 1 when a message is lost, and says which: on a one-host mail
//! lab whose Postfix discards message 1 after accepting it (a `header_checks` DISCARD on
//! its `X-Pony-Seq` header: the MTA answers 250, then drops it), the count says lost 1 and
//! names it. The count ends as soon as every queue is empty, not after its 120 s bound.
//! Like tests/mail_fleet.rs, this fails (never skips) without root or the packages.

mod support;

use pony::lab::mail::{MailLab, Service};
use std::path::PathBuf;
use support::{code, pony, text};

/// A one-host mail lab, stopped (`pony lab down`) when dropped.
struct OneHostLab {
    _dir: tempfile::TempDir,
    state: PathBuf,
}

impl Drop for OneHostLab {
    fn drop(&mut self) {
        let _ = pony(&self.state, &["lab", "down"]).output();
    }
}

#[test]
fn lab_traffic_exits_1_and_names_a_message_the_mta_accepted_and_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let lab = OneHostLab {
        _dir: dir,
        state: state.clone(),
    };
    let up = pony(
        &lab.state,
        &[
            "lab",
            "up",
            "--mail",
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
    assert_eq!(code(&up), 0, "lab up --mail: {}", text(&up));
    let mail = MailLab::load(&state.join("lab")).unwrap();
    assert_eq!(mail.hosts.len(), 1);
    let host = mail.hosts[0].name.clone();

    // Without the rule, nothing is lost.
    let traffic = || {
        pony(
            &lab.state,
            &["lab", "traffic", "--rate", "5", "--duration", "2s"],
        )
        .output()
        .unwrap()
    };
    let clean = traffic();
    assert_eq!(code(&clean), 0, "{}", text(&clean));
    assert!(
        String::from_utf8_lossy(&clean.stdout).contains(" / lost 0 / duplicated 0"),
        "{}",
        text(&clean)
    );

    // The rule is read when Postfix starts: stop, add it, start (start waits until it
    // listens).
    mail.stop_service(&host, Service::Postfix).unwrap();
    let rules = mail.host(&host).postfix_config().join("header_checks");
    let mut text_of_rules = std::fs::read_to_string(&rules).unwrap();
    text_of_rules.push_str("/^X-Pony-Seq: 1$/ DISCARD lost on purpose by the test\n");
    std::fs::write(&rules, text_of_rules).unwrap();
    mail.start_service(&host, Service::Postfix).unwrap();

    let started = std::time::Instant::now();
    let lossy = traffic();
    let took = started.elapsed();
    let said = text(&lossy);
    assert_eq!(code(&lossy), 1, "{said}");
    let stdout = String::from_utf8_lossy(&lossy.stdout);
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("sent "))
        .unwrap_or_else(|| panic!("no count: {said}"));
    let sent: usize = summary
        .strip_prefix("sent ")
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{summary}"));
    assert!(sent >= 2, "{said}");
    assert_eq!(
        summary,
        format!(
            "sent {sent} / delivered {} / lost 1 / duplicated 0 (lost: [1])",
            sent - 1
        ),
        "{said}"
    );
    // A hang guard, not a speed: the count stopped once the queue was empty, not at its
    // 120 s bound of retries.
    assert!(
        took < std::time::Duration::from_secs(90),
        "{took:?}: {said}"
    );
}
