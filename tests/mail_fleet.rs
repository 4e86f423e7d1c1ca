//! The real mail fleet: `pony lab up --mail` runs Postfix and Dovecot on 12 lab hosts
//! (3 regions; MTAs relay to their region's stores over LMTP) and
//! `playbooks/postfix-dovecot.yaml` rolls a release across them while numbered messages
//! flow. Every message the MTAs accepted is counted in the stores' Maildirs: none may be
//! lost. These tests fail (never skip) without root or without the packages; the error
//! says how to install them.

mod support;

use pony::lab::mail::{MailLab, Service};
use pony::lab::traffic;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;
use support::{only_run, pony, text};

/// A detached mail lab, stopped (sshd, Postfix, Dovecot, addresses) when dropped.
struct MailFleet {
    _dir: tempfile::TempDir,
    state: PathBuf,
    lab: MailLab,
}

impl MailFleet {
    fn start() -> MailFleet {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let up = pony(
            &state,
            &[
                "lab",
                "up",
                "--regions",
                "3",
                "--clusters",
                "2",
                "--hosts",
                "2",
                "--mail",
            ],
        )
        .output()
        .unwrap();
        let mut fleet = MailFleet {
            _dir: dir,
            lab: MailLab {
                hosts: Vec::new(),
                added_addresses: Vec::new(),
            },
            state,
        };
        assert!(up.status.success(), "lab up --mail: {}", text(&up));
        fleet.lab = MailLab::load(&fleet.lab_dir()).unwrap();
        assert_eq!(fleet.lab.hosts.len(), 12);
        fleet
    }

    fn lab_dir(&self) -> PathBuf {
        self.state.join("lab")
    }

    fn inventory(&self) -> PathBuf {
        self.lab_dir().join("inventory.yaml")
    }

    fn deploy(&self, extra: &[&str]) -> Output {
        self.deploy_command(extra).output().unwrap()
    }

    fn deploy_command(&self, extra: &[&str]) -> std::process::Command {
        let playbook = self.lab_dir().join("postfix-dovecot.yaml");
        let inventory = self.inventory();
        let mut args = vec![
            "deploy",
            "-i",
            inventory.to_str().unwrap(),
            playbook.to_str().unwrap(),
            "--yes",
            "--var",
            "imap_drain_wait_seconds=3",
        ];
        args.extend(extra);
        pony(&self.state, &args)
    }

    fn release(&self, host: &str) -> Option<String> {
        self.lab.host(host).release()
    }

    /// What a client sees: the SMTP banner and the IMAP greeting of a host.
    fn greetings(&self, host: &str) -> (String, String) {
        use std::io::{BufRead, BufReader};
        let address = self.lab.host(host).address;
        let first_line = |port: u16| {
            let stream = std::net::TcpStream::connect((address, port)).unwrap();
            let mut line = String::new();
            BufReader::new(stream).read_line(&mut line).unwrap();
            line
        };
        (first_line(25), first_line(143))
    }
}

impl Drop for MailFleet {
    fn drop(&mut self) {
        let _ = pony(&self.state, &["lab", "down"]).output();
    }
}

/// Sends steadily on a runtime of its own while `during` runs, until mail relayed by
/// release v2 has arrived, then counts.
fn with_traffic(
    fleet: &MailFleet,
    during: impl FnOnce() -> Output,
) -> (Output, traffic::Sent, traffic::Count) {
    with_traffic_until(fleet, during, "mail relayed by release v2", || {
        delivered_headers(fleet).any(|h| h.starts_with("X-Pony-Release: v2 "))
    })
}

/// Sends steadily on a runtime of its own while `during` runs and until `after` holds,
/// then counts.
fn with_traffic_until(
    fleet: &MailFleet,
    during: impl FnOnce() -> Output,
    what: &str,
    after: impl Fn() -> bool,
) -> (Output, traffic::Sent, traffic::Count) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let options = traffic::Options {
        rate: 15.0,
        ..traffic::Options::default()
    };
    let sending = runtime.spawn(traffic::send(
        traffic::regions(&fleet.lab),
        options,
        stopped,
    ));
    // Mail flows before the rollout starts: the first messages are delivered on lab-1.
    wait_for_delivered_mail(fleet);
    let output = during();
    // ... and after it (e.g. until mail relayed by the new release has arrived).
    support::wait_until(what, after);
    stop.send(true).unwrap();
    let sent = runtime.block_on(sending).unwrap();
    let count = runtime.block_on(traffic::settle(&fleet.lab, &sent, Duration::from_secs(180)));
    (output, sent, count)
}

/// Header lines of every message in the stores' `traffic` Maildirs.
fn delivered_headers(fleet: &MailFleet) -> impl Iterator<Item = String> + '_ {
    fleet.lab.stores().flat_map(|store| {
        ["new", "cur"].into_iter().flat_map(move |sub| {
            std::fs::read_dir(store.maildir().join("traffic").join(sub))
                .into_iter()
                .flatten()
                .flatten()
                .flat_map(|file| {
                    let mail = std::fs::read_to_string(file.path()).unwrap_or_default();
                    let header = mail.split("\n\n").next().unwrap_or_default().to_string();
                    header.lines().map(str::to_string).collect::<Vec<_>>()
                })
        })
    })
}

fn wait_for_delivered_mail(fleet: &MailFleet) {
    support::wait_until("the first traffic to reach a store", || {
        fleet.lab.stores().any(|s| {
            std::fs::read_dir(s.maildir().join("traffic/new"))
                .map(|mut d| d.next().is_some())
                .unwrap_or(false)
        })
    });
}

/// The messages of this traffic run in a store's `traffic` Maildir (new and cur).
fn run_messages(store: &pony::lab::mail::MailHost, sent: &traffic::Sent) -> Vec<String> {
    let run = format!("X-Pony-Run: {}", sent.tag);
    let traffic = store.maildir().join("traffic");
    ["new", "cur"]
        .into_iter()
        .flat_map(|sub| {
            std::fs::read_dir(traffic.join(sub))
                .into_iter()
                .flatten()
                .flatten()
        })
        .filter_map(|file| std::fs::read_to_string(file.path()).ok())
        .filter(|mail| mail.contains(&run))
        .collect()
}

/// The releases that relayed the run's delivered messages (their X-Pony-Release header).
fn relaying_releases(
    fleet: &MailFleet,
    sent: &traffic::Sent,
) -> std::collections::BTreeSet<String> {
    fleet
        .lab
        .stores()
        .flat_map(|store| run_messages(store, sent))
        .filter_map(|mail| {
            let line = mail.lines().find(|l| l.starts_with("X-Pony-Release: "))?;
            let release = line["X-Pony-Release: ".len()..].split(' ').next()?;
            Some(release.to_string())
        })
        .collect()
}

/// Sends numbered mail to us-east's MTAs at `rate` messages per second on `runtime`
/// until the returned sender says stop; the handle gives what was sent.
fn send_to_us_east(
    fleet: &MailFleet,
    runtime: &tokio::runtime::Runtime,
    rate: f64,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<traffic::Sent>,
) {
    let us_east: Vec<traffic::Region> = traffic::regions(&fleet.lab)
        .into_iter()
        .filter(|r| r.name == "us-east")
        .collect();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let options = traffic::Options {
        rate,
        ..traffic::Options::default()
    };
    (
        stop,
        runtime.spawn(traffic::send(us_east, options, stopped)),
    )
}

fn report(name: &str, sent: &traffic::Sent, count: &traffic::Count) {
    eprintln!(
        "{name}: {count}; {} deferrals met by the sender, {} duplicated",
        sent.deferrals,
        count.duplicated.len()
    );
}

#[test]
fn a_rollout_under_live_traffic_moves_every_host_to_v2_and_loses_no_message() {
    let fleet = MailFleet::start();
    let (out, sent, count) = with_traffic(&fleet, || fleet.deploy(&["--var", "version=v2"]));
    report("rollout", &sent, &count);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for host in &fleet.lab.hosts {
        assert_eq!(
            fleet.release(&host.name).as_deref(),
            Some("v2"),
            "{}",
            host.name
        );
        let (smtp, imap) = fleet.greetings(&host.name);
        assert!(smtp.contains("release v2"), "{}: {smtp}", host.name);
        assert!(imap.contains("release v2"), "{}: {imap}", host.name);
    }
    assert!(count.sent > 0);
    assert!(sent.rejected.is_empty(), "5xx bounces: {:?}", sent.rejected);
    assert!(
        sent.given_up.is_empty(),
        "never accepted: {:?}",
        sent.given_up
    );
    assert_eq!(count.lost, Vec::<u64>::new(), "{count}");
    assert!(count.duplicated.is_empty(), "{count:?}");
    // The traffic spanned the rollout: messages were relayed by both releases.
    let releases = relaying_releases(&fleet, &sent);
    assert!(
        releases.contains("lab-1") && releases.contains("v2"),
        "{releases:?}"
    );
}

#[test]
fn a_failing_health_check_rolls_its_region_back_to_v1_and_loses_no_message() {
    let fleet = MailFleet::start();
    // One eu-west MTA gets a banner that does not show the release: its health probe
    // fails on v2, and rollback-region takes eu-west back.
    let inventory = std::fs::read_to_string(fleet.inventory()).unwrap();
    let (head, tail) = inventory.split_once("eu-west-c1-01:").unwrap();
    let (entry, rest) = tail.split_once("mail_home: ").unwrap();
    let edited = format!(
        "{head}eu-west-c1-01:{entry}smtpd_banner_text: $myhostname ESMTP misconfigured\n              mail_home: {rest}"
    );
    std::fs::write(fleet.inventory(), edited).unwrap();
    let (out, sent, count) = with_traffic(&fleet, || fleet.deploy(&["--var", "version=v2"]));
    report("failed health", &sent, &count);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    for host in &fleet.lab.hosts {
        let expected = if host.region == "eu-west" {
            "lab-1"
        } else {
            "v2"
        };
        assert_eq!(
            fleet.release(&host.name).as_deref(),
            Some(expected),
            "{}",
            host.name
        );
        let (smtp, _) = fleet.greetings(&host.name);
        if host.name != "eu-west-c1-01" {
            assert!(
                smtp.contains(&format!("release {expected}")),
                "{}: {smtp}",
                host.name
            );
        }
        // Every MTA takes mail again (no drain left behind).
        let drain = std::fs::read_to_string(host.home.join("state/drain.cidr")).unwrap();
        assert_eq!(drain, "", "{}", host.name);
    }
    let (_, run_dir) = only_run(&fleet.state);
    let journal = support::journal(&run_dir);
    assert!(journal.iter().any(|r| r["type"] == "task_finished"
        && r["label"] == "health-smtp@eu-west-c1-01"
        && r["state"] == "failed"));
    assert!(sent.rejected.is_empty(), "5xx bounces: {:?}", sent.rejected);
    assert_eq!(count.lost, Vec::<u64>::new(), "{count}");
}

fn queued(fleet: &MailFleet, hosts: &[&str]) -> usize {
    hosts.iter().map(|h| fleet.lab.queued(h).unwrap()).sum()
}

#[test]
fn a_drain_that_cannot_finish_fails_keeps_every_queued_message_and_they_arrive_later() {
    let fleet = MailFleet::start();
    let stores = ["us-east-c2-01", "us-east-c2-02"];
    let mtas = ["us-east-c1-01", "us-east-c1-02"];
    for store in stores {
        fleet.lab.stop_service(store, Service::Dovecot).unwrap();
    }
    // us-east's mail cannot leave its MTAs: it waits in their queues.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (stop, sending) = send_to_us_east(&fleet, &runtime, 10.0);
    support::wait_until("mail queued on the us-east MTAs", || {
        queued(&fleet, &mtas) >= 10
    });
    stop.send(true).unwrap();
    let sent = runtime.block_on(sending).unwrap();
    let held = queued(&fleet, &mtas);
    assert_eq!(
        held,
        sent.accepted.len(),
        "every accepted message is queued"
    );

    let out = fleet.deploy(&[
        "--var",
        "version=v2",
        "--var",
        "drain_wait_seconds=3",
        "--limit",
        "us-east-c1-*",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("messages still queued after 3s"),
        "{}",
        text(&out)
    );
    // Rolled back: the old release, accepting again, and not one message gone.
    for mta in mtas {
        assert_eq!(fleet.release(mta).as_deref(), Some("lab-1"), "{mta}");
        let drain = std::fs::read_to_string(fleet.lab.host(mta).home.join("state/drain.cidr"));
        assert_eq!(drain.unwrap(), "", "{mta} accepts mail again");
    }
    assert_eq!(queued(&fleet, &mtas), held, "the queues are intact");
    let count = traffic::count(&fleet.lab, &sent);
    assert_eq!(
        count.delivered, 0,
        "nothing could be delivered yet: {count}"
    );

    // The store comes back: everything queued arrives, once.
    for store in stores {
        fleet.lab.start_service(store, Service::Dovecot).unwrap();
    }
    let count = runtime.block_on(traffic::settle(&fleet.lab, &sent, Duration::from_secs(180)));
    report("stuck drain", &sent, &count);
    assert_eq!(count.lost, Vec::<u64>::new(), "{count}");
    assert_eq!(count.delivered, held);
    assert!(count.duplicated.is_empty(), "{count:?}");
}

#[test]
fn mail_for_a_region_whose_first_store_is_down_goes_to_its_second_store() {
    let fleet = MailFleet::start();
    let (first, second) = ("us-east-c2-01", "us-east-c2-02");
    fleet.lab.stop_service(first, Service::Dovecot).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (stop, sending) = send_to_us_east(&fleet, &runtime, 10.0);
    // The MTAs try the first store, find it down, and hand the message to the second at
    // once (a transport entry Postfix cannot parse stalls every message instead: the LMTP
    // client exits on it and Postfix throttles the transport).
    let second_store = fleet.lab.host(second).maildir().join("traffic/new");
    support::wait_until("ten messages in the second store", || {
        std::fs::read_dir(&second_store).map_or(0, |d| d.count()) >= 10
    });
    stop.send(true).unwrap();
    let sent = runtime.block_on(sending).unwrap();
    let count = runtime.block_on(traffic::settle(&fleet.lab, &sent, Duration::from_secs(60)));
    report("first store down", &sent, &count);
    assert!(sent.rejected.is_empty(), "5xx bounces: {:?}", sent.rejected);
    assert_eq!(count.lost, Vec::<u64>::new(), "{count}");
    assert!(count.duplicated.is_empty(), "{count:?}");
    let in_store = |store| run_messages(fleet.lab.host(store), &sent).len();
    assert_eq!(in_store(second), sent.accepted.len());
    assert_eq!(in_store(first), 0, "the first store stayed down");
}

/// Lines of the MTAs' Postfix logs where a store ended a delivery with `421 … Shutting
/// down` (a Dovecot reload in the middle of an LMTP session: the message may have been
/// saved already, and the MTA delivers it again elsewhere).
fn shutdown_replies(fleet: &MailFleet) -> Vec<String> {
    fleet
        .lab
        .hosts
        .iter()
        .filter(|h| h.is_mta())
        .flat_map(|h| {
            std::fs::read_to_string(h.home.join("log/postfix.log"))
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("said: 421") && l.contains("Shutting down"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn a_release_postfix_rejects_fails_at_stage_and_the_canary_keeps_greeting_on_the_old_release() {
    let fleet = MailFleet::start();
    // The release's main.cf has a value `postconf -n` lists happily and Postfix refuses
    // (`fatal: bad numerical configuration`): the trial's reload failure whose rollback
    // said "complete" over an MTA that no longer answered.
    let template = fleet.lab_dir().join("templates/postfix/main.cf.j2");
    let mut main_cf = std::fs::read_to_string(&template).unwrap();
    main_cf.push_str("message_size_limit = 25MB\n");
    std::fs::write(&template, main_cf).unwrap();
    let canary = "cn-south-c1-01";
    let (out, sent, count) = with_traffic_until(
        &fleet,
        || fleet.deploy(&["--var", "version=v2"]),
        "the run's first messages to be delivered",
        || true,
    );
    report("rejected release", &sent, &count);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    // Postfix's own words, printed by the step that checked the release before anything
    // was drained.
    assert!(
        said.contains("bad numerical configuration: message_size_limit = 25MB"),
        "{said}"
    );
    let (_, run_dir) = only_run(&fleet.state);
    let journal = support::journal(&run_dir);
    assert!(
        journal.iter().any(|r| r["type"] == "task_finished"
            && r["label"] == format!("stage@{canary}")
            && r["state"] == "failed"),
        "the release fails at stage: {said}"
    );
    let drained: Vec<_> = journal
        .iter()
        .filter(|r| r["type"] == "task_started")
        .filter_map(|r| r["label"].as_str())
        .filter(|l| l.starts_with("drain") || l.starts_with("reload"))
        .collect();
    assert!(
        drained.is_empty(),
        "nothing is drained or reloaded: {drained:?}"
    );
    // Verified: the canary's health was checked after its rollback, and passed.
    assert!(
        journal.iter().any(|r| r["type"] == "health_checked"
            && r["host"] == canary
            && r["checked"] == true
            && r["ok"] == true),
        "{said}"
    );
    assert!(!said.contains("unverified"), "{said}");
    for host in fleet.lab.hosts.iter().filter(|h| h.region == "cn-south") {
        assert_eq!(
            fleet.release(&host.name).as_deref(),
            Some("lab-1"),
            "{}",
            host.name
        );
        let (smtp, _) = fleet.greetings(&host.name);
        assert!(
            smtp.starts_with("220 ") && smtp.contains("release lab-1"),
            "{}: {smtp}",
            host.name
        );
    }
    assert!(sent.rejected.is_empty(), "5xx bounces: {:?}", sent.rejected);
    assert_eq!(count.lost, Vec::<u64>::new(), "{count}");
    assert!(count.duplicated.is_empty(), "{count:?}");
}

/// An LMTP delivery as a slow MTA makes it: the message's body goes out one line every
/// `every`, then the final dot. Returns the server's reply to the end of DATA (or what
/// went wrong: a store whose Dovecot reloads mid-session answers `421 4.3.2 Shutting
/// down` and closes).
fn slow_lmtp_delivery(
    address: std::net::Ipv4Addr,
    id: &str,
    lines: usize,
    every: Duration,
) -> String {
    use std::io::{BufRead, BufReader, Write};
    let stream = std::net::TcpStream::connect((address, 24)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    // One reply, multi-line or not: its last line.
    let mut reply = || -> String {
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) => return "connection closed".into(),
                Err(e) => return format!("read error: {e}"),
                Ok(_) if line.as_bytes().get(3) == Some(&b'-') => continue,
                Ok(_) => return line.trim_end().to_string(),
            }
        }
    };
    assert!(reply().starts_with("220"));
    for (command, code) in [
        ("LHLO slow.lab.test".to_string(), "250"),
        ("MAIL FROM:<slow@lab.test>".into(), "250"),
        (
            format!("RCPT TO:<traffic@{}>", pony::lab::mail::DOMAIN),
            "250",
        ),
        ("DATA".into(), "354"),
    ] {
        writer
            .write_all(format!("{command}\r\n").as_bytes())
            .unwrap();
        let answer = reply();
        assert!(answer.starts_with(code), "{command}: {answer}");
    }
    let header = format!("Subject: {id}\r\nX-Slow-Delivery: {id}\r\n\r\n");
    if let Err(e) = writer.write_all(header.as_bytes()) {
        return format!("write error: {e}");
    }
    for n in 0..lines {
        std::thread::sleep(every);
        if let Err(e) = writer.write_all(format!("line {n}\r\n").as_bytes()) {
            return format!("write error after {n} lines: {e}; then {}", reply());
        }
    }
    if let Err(e) = writer.write_all(b".\r\n") {
        return format!("write error at the end: {e}; then {}", reply());
    }
    reply()
}

/// The copies of a message (by its X-Slow-Delivery id) in the stores' `traffic` Maildirs.
fn copies(fleet: &MailFleet, id: &str) -> usize {
    let header = format!("X-Slow-Delivery: {id}");
    fleet
        .lab
        .stores()
        .flat_map(|store| {
            ["new", "cur"].into_iter().flat_map(move |sub| {
                std::fs::read_dir(store.maildir().join("traffic").join(sub))
                    .into_iter()
                    .flatten()
                    .flatten()
            })
        })
        .filter(|file| {
            std::fs::read_to_string(file.path()).is_ok_and(|mail| mail.contains(&header))
        })
        .count()
}

#[test]
fn stores_reloaded_while_their_mtas_deliver_get_every_message_exactly_once() {
    let fleet = MailFleet::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Steady us-east traffic, so that LMTP deliveries are in flight whenever a store's
    // Dovecot reloads.
    let (stop, sending) = send_to_us_east(&fleet, &runtime, 30.0);
    wait_for_delivered_mail(&fleet);
    // Two releases, each reloading both us-east stores one after the other while the
    // MTAs deliver to them. During each, a slow delivery (15 s) to the first store is in
    // flight when the rollout reaches it: it must end with 250 (delivered once), never
    // be cut by the reload.
    let first_store = fleet.lab.host("us-east-c2-01").address;
    for version in ["v2", "v3"] {
        let id = format!("slow-{version}-{}", std::process::id());
        let slow = {
            let id = id.clone();
            std::thread::spawn(move || {
                slow_lmtp_delivery(first_store, &id, 75, Duration::from_millis(200))
            })
        };
        let out = fleet
            .deploy_command(&[
                "--var",
                &format!("version={version}"),
                "--limit",
                "us-east-c2-*",
            ])
            .output()
            .unwrap();
        let answer = slow.join().unwrap();
        assert!(
            answer.starts_with("250"),
            "{version}: the slow delivery ended with {answer:?}\n{}",
            text(&out)
        );
        assert_eq!(copies(&fleet, &id), 1, "{version}: {id}");
        assert_eq!(out.status.code(), Some(0), "{version}: {}", text(&out));
        for store in ["us-east-c2-01", "us-east-c2-02"] {
            assert_eq!(fleet.release(store).as_deref(), Some(version), "{store}");
        }
    }
    stop.send(true).unwrap();
    let sent = runtime.block_on(sending).unwrap();
    let count = runtime.block_on(traffic::settle(&fleet.lab, &sent, Duration::from_secs(120)));
    report("stores reloaded", &sent, &count);
    assert!(count.sent > 0);
    assert!(sent.rejected.is_empty(), "5xx bounces: {:?}", sent.rejected);
    assert_eq!(count.lost, Vec::<u64>::new(), "{count}");
    assert!(count.duplicated.is_empty(), "{count:?}");
    // No reload ended a delivery in flight: the stores were drained of LMTP first.
    assert_eq!(shutdown_replies(&fleet), Vec::<String>::new());
}

/// Waits until the run's journal shows a `task_started` whose label satisfies `which`.
fn wait_for_started(run_dir: &std::path::Path, what: &str, which: impl Fn(&str) -> bool) {
    support::wait_until(what, || {
        std::fs::read_to_string(run_dir.join("journal.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|r| r["type"] == "task_started" && r["label"].as_str().is_some_and(&which))
    });
}

fn signal(child: &std::process::Child, signal: i32) {
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
}

#[test]
fn a_stop_in_every_wave_then_what_status_suggests_completes_the_release_once() {
    let fleet = MailFleet::start();
    // The shipped playbook, with a person's approval after the canary.
    let playbook = fleet.lab_dir().join("postfix-dovecot.yaml");
    let yaml = std::fs::read_to_string(&playbook).unwrap();
    let gated = yaml.replacen(
        "hosts: canary, pause: 1s }",
        "hosts: canary, pause: 1s, approve: true }",
        1,
    );
    assert_ne!(gated, yaml);
    std::fs::write(&playbook, gated).unwrap();
    // A host fault in the last wave: something left a file where eu-west-c1-01's new
    // release folder goes, so the release cannot be written there until a person
    // removes it.
    let faulty = fleet.lab.host("eu-west-c1-01").home.join("releases/v2");
    std::fs::write(&faulty, "left behind\n").unwrap();
    let canary = "cn-south-c1-01";
    let china_hosts: Vec<String> = fleet
        .lab
        .hosts
        .iter()
        .filter(|h| h.region == "cn-south" && h.name != canary)
        .map(|h| h.name.clone())
        .collect();
    let mut stops = Vec::new();
    let state = fleet.state.clone();
    let (out, sent, count) = with_traffic(&fleet, || {
        // Wave canary: Ctrl-C while the canary reloads.
        let deploy = fleet
            .deploy_command(&["--var", "version=v2"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        support::wait_until("the run's folder", || {
            std::fs::read_dir(state.join("runs")).is_ok_and(|mut d| d.next().is_some())
        });
        let (run, run_dir) = only_run(&state);
        wait_for_started(&run_dir, "the canary's reload", |l| {
            l == format!("reload@{canary}")
        });
        signal(&deploy, libc::SIGINT);
        let interrupted = deploy.wait_with_output().unwrap();
        stops.push(("Ctrl-C in wave canary", text(&interrupted)));
        assert_eq!(
            interrupted.status.code(),
            Some(130),
            "{}",
            text(&interrupted)
        );

        // Its suggestion resumes; the run stops at the canary's approval gate (no
        // terminal: exit 10).
        let line = support::suggested_command(&fleet.state, &run);
        let resumed = support::typed(&line).output().unwrap();
        stops.push(("approve gate after wave canary", text(&resumed)));
        assert_eq!(
            resumed.status.code(),
            Some(10),
            "{line}: {}",
            text(&resumed)
        );

        // Its suggestion approves and resumes; kill -9 while a china host reloads.
        let line = support::suggested_command(&fleet.state, &run);
        assert!(line.contains("--approve canary"), "{line}");
        let approved = support::typed(&line).spawn().unwrap();
        wait_for_started(&run_dir, "a china host's reload", |l| {
            china_hosts.iter().any(|h| l == format!("reload@{h}"))
        });
        signal(&approved, libc::SIGKILL);
        let killed = approved.wait_with_output().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(killed.status.signal(), Some(libc::SIGKILL));
        stops.push(("kill -9 in wave china", text(&killed)));

        // Its suggestion resumes; eu-west-c1-01 fails in wave world and eu-west is
        // rolled back (exit 1).
        let line = support::suggested_command(&fleet.state, &run);
        let failed = support::typed(&line).output().unwrap();
        stops.push(("a host fails in wave world", text(&failed)));
        assert_eq!(failed.status.code(), Some(1), "{line}: {}", text(&failed));
        let said = text(&failed);
        assert!(said.contains("eu-west-c1-01"), "{said}");

        // A person fixes the host, then types what status suggests: the release completes.
        std::fs::remove_file(&faulty).unwrap();
        let line = support::suggested_command(&fleet.state, &run);
        support::typed(&line).output().unwrap()
    });
    report("a stop in every wave", &sent, &count);
    for (stop, said) in &stops {
        eprintln!("--- {stop}\n{said}");
    }
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for host in &fleet.lab.hosts {
        assert_eq!(
            fleet.release(&host.name).as_deref(),
            Some("v2"),
            "{}",
            host.name
        );
        let (smtp, imap) = fleet.greetings(&host.name);
        assert!(smtp.contains("release v2"), "{}: {smtp}", host.name);
        assert!(imap.contains("release v2"), "{}: {imap}", host.name);
        let drain = std::fs::read_to_string(host.home.join("state/drain.cidr")).unwrap();
        assert_eq!(drain, "", "{}: still drained", host.name);
    }
    let (_, run_dir) = only_run(&fleet.state);
    let journal = support::journal(&run_dir);
    // The region rollback really happened in wave world before the fix.
    assert!(
        journal.iter().any(|r| r["type"] == "task_finished"
            && r["label"] == "render-main-cf@eu-west-c1-01"
            && r["state"] == "failed"),
        "eu-west-c1-01 failed at its first step"
    );
    assert!(count.sent > 0);
    assert!(sent.rejected.is_empty(), "5xx bounces: {:?}", sent.rejected);
    assert!(
        sent.given_up.is_empty(),
        "never accepted: {:?}",
        sent.given_up
    );
    assert_eq!(count.lost, Vec::<u64>::new(), "{count}");
    assert!(count.duplicated.is_empty(), "{count:?}");
}

/// The reply an MTA gives to `RCPT TO` for the lab's mail domain (a drained MTA defers
/// with 450; one that takes mail says 250). No message is sent.
fn rcpt_reply(address: std::net::Ipv4Addr) -> String {
    use std::io::{BufRead, BufReader, Write};
    let stream = std::net::TcpStream::connect((address, 25)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut reply = || {
        let mut line = String::new();
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            // A multi-line reply continues with `250-`; its last line has a space.
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return line.trim_end().to_string();
            }
        }
    };
    reply();
    for command in ["EHLO probe.test", "MAIL FROM:<probe@sender.test>"] {
        writeln!(writer, "{command}\r").unwrap();
        reply();
    }
    writeln!(writer, "RCPT TO:<traffic@{}>\r", pony::lab::mail::DOMAIN).unwrap();
    let answer = reply();
    let _ = writeln!(writer, "QUIT\r");
    answer
}

#[test]
fn a_controller_killed_while_its_mta_is_drained_leaves_it_taking_mail_and_resume_finishes() {
    let fleet = MailFleet::start();
    // The shipped playbook, with short switches (the shipped 15m would make the test
    // wait 15 minutes), and `switch` held until the test opens a gate: the canary stays
    // drained for as long as the test needs.
    let playbook = fleet.lab_dir().join("postfix-dovecot.yaml");
    let gate = fleet.state.join("gate");
    let yaml = std::fs::read_to_string(&playbook).unwrap();
    let bound = 5;
    let held = yaml.replace("dead_man: 15m", &format!("dead_man: {bound}s")).replacen(
        "      set -eu\n      cd {{ mail_home | quote }}\n      ln -sfn",
        &format!(
            "      set -eu\n      while [ ! -e {} ]; do sleep 0.1; done\n      cd {{{{ mail_home | quote }}}}\n      ln -sfn",
            gate.display()
        ),
        1,
    );
    assert_eq!(held.matches(&format!("dead_man: {bound}s")).count(), 3);
    assert!(held.contains(gate.to_str().unwrap()));
    std::fs::write(&playbook, held).unwrap();
    let canary = fleet.lab.host("cn-south-c1-01");
    assert!(canary.is_mta());
    let state = fleet.state.clone();
    let mut undrained_after = Duration::ZERO;
    let (out, sent, count) = with_traffic(&fleet, || {
        let mut deploy = fleet
            .deploy_command(&["--var", "version=v2"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        support::wait_until("the run's folder", || {
            std::fs::read_dir(state.join("runs")).is_ok_and(|mut d| d.next().is_some())
        });
        let (run, run_dir) = only_run(&state);
        wait_for_started(&run_dir, "the canary's switch", |l| {
            l == format!("switch@{}", canary.name)
        });
        let drained = rcpt_reply(canary.address);
        assert!(drained.starts_with("450"), "drained: {drained}");
        // (An IMAP backend or store among the canary's roles is drained too.)
        let imap_denied = std::fs::read_to_string(canary.home.join("state/imap-deny"))
            .is_ok_and(|t| !t.trim().is_empty());
        deploy.kill().unwrap();
        deploy.wait().unwrap();
        let killed = std::time::Instant::now();
        // No pony process runs now; the canary's switches put it back in service.
        support::wait_until("the canary taking mail again", || {
            rcpt_reply(canary.address).starts_with("250")
        });
        undrained_after = killed.elapsed();
        let home = &canary.home;
        support::wait_until("IMAP logins and LMTP back", || {
            let lmtp_open = || {
                std::process::Command::new("iptables")
                    .args(["-w", "-S", "INPUT"])
                    .output()
                    .is_ok_and(|o| {
                        let address = format!("-d {}/32", canary.address);
                        !String::from_utf8_lossy(&o.stdout)
                            .lines()
                            .any(|l| l.contains("pony-lmtp-drain") && l.contains(&address))
                    })
            };
            let imap_open = || {
                std::fs::read_to_string(home.join("state/imap-deny")).is_ok_and(|t| t.is_empty())
            };
            (!imap_denied || imap_open()) && (!canary.is_store() || lmtp_open())
        });
        // Someone hears of it: `pony watch` (cron, CI) tells its notifier, once.
        let told = state.join("told");
        let notify = format!("cat >> {}; echo >> {}", told.display(), told.display());
        for _ in 0..2 {
            let watched = pony(&state, &["watch", "--notify", &notify])
                .output()
                .unwrap();
            assert_eq!(watched.status.code(), Some(0), "{}", text(&watched));
        }
        let gone: Vec<serde_json::Value> = std::fs::read_to_string(&told)
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(gone.len(), 1, "{gone:?}");
        assert_eq!(gone[0]["event"], "controller_gone");
        assert_eq!(gone[0]["run_id"], run.as_str());
        // The resume drains the canary again before it switches it, and finishes.
        std::fs::write(&gate, "").unwrap();
        let resumed = pony(&state, &["resume", &run]).output().unwrap();
        let journal = support::journal(&run_dir);
        let reported = journal.iter().any(|r| {
            r["type"] == "task_finished"
                && r["label"] == format!("drain@{}", canary.name)
                && r.to_string().contains("dead man's switch fired at")
        });
        assert!(reported, "the resume says the canary's switch fired");
        resumed
    });
    report("kill -9 while drained", &sent, &count);
    eprintln!(
        "the canary took mail again {:.1}s after the controller was killed (dead_man: {bound}s)",
        undrained_after.as_secs_f64()
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for host in &fleet.lab.hosts {
        assert_eq!(
            fleet.release(&host.name).as_deref(),
            Some("v2"),
            "{}",
            host.name
        );
        let drain = std::fs::read_to_string(host.home.join("state/drain.cidr")).unwrap();
        assert_eq!(drain, "", "{}: still drained", host.name);
    }
    assert!(sent.rejected.is_empty(), "5xx bounces: {:?}", sent.rejected);
    assert_eq!(count.lost, Vec::<u64>::new(), "{count}");
    assert!(count.duplicated.is_empty(), "{count:?}");
}

/// Inserted iptables rules, deleted when dropped (also when the test fails).
struct Rules(Vec<Vec<String>>);

impl Rules {
    /// Refuses new connections to `address:port` (as drain-lmtp does).
    fn refuse(&mut self, address: std::net::Ipv4Addr, port: u16) {
        let rule: Vec<String> = format!(
            "INPUT -p tcp -d {address} --dport {port} --syn -m comment --comment pony-test-refuse -j REJECT --reject-with tcp-reset"
        )
        .split(' ')
        .map(str::to_string)
        .collect();
        let status = std::process::Command::new("iptables")
            .args(["-w", "-I"])
            .args(&rule)
            .status()
            .unwrap();
        assert!(status.success());
        self.0.push(rule);
    }
}

impl Drop for Rules {
    fn drop(&mut self) {
        for rule in self.0.drain(..) {
            let _ = std::process::Command::new("iptables")
                .args(["-w", "-D"])
                .args(&rule)
                .status();
        }
    }
}

#[test]
fn a_mail_flow_probe_passes_on_a_healthy_mta_and_names_the_hop_that_fails() {
    let fleet = MailFleet::start();
    let canary = fleet.lab.host("cn-south-c1-01");
    let playbook = fleet.lab_dir().join("mailflow.yaml");
    std::fs::write(
        &playbook,
        r#"name: mailflow
steps:
  - name: mail-flows
    hosts: mta
    probe:
      mailflow:
        to: "alice@{{ mail_domain }}"
        address: "{{ host.address }}"
        imap: { address: "{{ mail_stores[0] }}", user: alice, password: "{{ mail_password }}" }
    timeout: 20s
"#,
    )
    .unwrap();
    let inventory = fleet.inventory();
    let runs = || -> std::collections::BTreeSet<PathBuf> {
        std::fs::read_dir(fleet.state.join("runs"))
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default()
    };
    let probe = || {
        let before = runs();
        let out = pony(
            &fleet.state,
            &[
                "deploy",
                "-i",
                inventory.to_str().unwrap(),
                playbook.to_str().unwrap(),
                "--yes",
                "--limit",
                &canary.name,
            ],
        )
        .output()
        .unwrap();
        // This deploy's run (ids made in the same second do not sort by time).
        let new: Vec<PathBuf> = runs().difference(&before).cloned().collect();
        assert_eq!(new.len(), 1, "{new:?}");
        let newest = &new[0];
        let record = support::journal(newest)
            .into_iter()
            .find(|r| r["type"] == "task_finished")
            .unwrap();
        (out, record)
    };
    let probe_messages = || {
        fleet
            .lab
            .stores()
            .flat_map(|s| {
                walk(&s.home)
                    .into_iter()
                    .filter(|p| p.to_string_lossy().contains("alice"))
            })
            .filter(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("X-Pony-Probe:")))
            .count()
    };

    // Healthy: the message arrives, its latency is the probe's output, and it is gone.
    let (out, record) = probe();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let latency: f64 = record["output_tail"]
        .as_str()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(latency >= 0.0);
    assert_eq!(probe_messages(), 0, "the probe deletes what it sent");
    eprintln!("mail-flow latency through {}: {latency:.3}s", canary.name);

    // The region's stores take no LMTP: the MTA takes the message, it never arrives.
    let mut rules = Rules(Vec::new());
    let stores: Vec<_> = fleet
        .lab
        .stores()
        .filter(|s| s.region == canary.region)
        .map(|s| s.address)
        .collect();
    for store in &stores {
        rules.refuse(*store, 24);
    }
    let (out, record) = probe();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let error = record["error"].as_str().unwrap_or_default().to_string()
        + record["output_tail"].as_str().unwrap_or_default();
    assert!(
        error.contains("delivery: the MTA took the message") && error.contains("alice's mailbox"),
        "{error}"
    );
    drop(rules);

    // The MTA defers (drained): the SMTP hop is named.
    std::fs::write(
        canary.home.join("state/drain.cidr"),
        "0.0.0.0/0 DEFER 4.7.1 draining for a test\n",
    )
    .unwrap();
    let reload = |host: &pony::lab::mail::MailHost| {
        let status = std::process::Command::new("postfix")
            .arg("-c")
            .arg(host.postfix_config())
            .arg("reload")
            .status()
            .unwrap();
        assert!(status.success());
    };
    reload(canary);
    let (out, record) = probe();
    std::fs::write(canary.home.join("state/drain.cidr"), "").unwrap();
    reload(canary);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let error = record["error"].as_str().unwrap_or_default().to_string()
        + record["output_tail"].as_str().unwrap_or_default();
    assert!(
        error.contains("smtp (the MTA)") && error.contains("450") && error.contains("defers"),
        "{error}"
    );
    // The message the stores could not take was kept in the MTA's queue: it arrives now
    // (and shows that the count above looks where messages land).
    let flushed = std::process::Command::new("postqueue")
        .arg("-c")
        .arg(canary.postfix_config())
        .arg("-f")
        .status()
        .unwrap();
    assert!(flushed.success());
    support::wait_until("the held probe message delivered", || probe_messages() == 1);
    // The password is in no record of the runs.
    for run in std::fs::read_dir(fleet.state.join("runs")).unwrap() {
        let journal = std::fs::read_to_string(run.unwrap().path().join("journal.jsonl")).unwrap();
        assert!(!journal.contains(pony::lab::mail::PASSWORD));
    }
}

/// Every file below `dir`.
fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                files.extend(walk(&path));
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// A TCP relay that holds every connection `delay` before it connects on to `upstream`
/// (a store's LMTP): put in a canary MTA's transport, each of its deliveries takes
/// `delay` longer. Counts the connections it took; stops with the test.
struct SlowRelay {
    address: std::net::SocketAddr,
    taken: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl SlowRelay {
    fn start(on: std::net::Ipv4Addr, upstream: std::net::SocketAddr, delay: Duration) -> SlowRelay {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Arc;
        let listener = std::net::TcpListener::bind((on, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let taken = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopped) = (taken.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                count.fetch_add(1, Ordering::Relaxed);
                std::thread::spawn(move || {
                    client.set_nonblocking(false).unwrap();
                    std::thread::sleep(delay);
                    let Ok(server) = std::net::TcpStream::connect(upstream) else {
                        return;
                    };
                    let pipe = |mut from: std::net::TcpStream, mut to: std::net::TcpStream| {
                        std::thread::spawn(move || {
                            let _ = std::io::copy(&mut from, &mut to);
                            let _ = to.shutdown(std::net::Shutdown::Write);
                        })
                    };
                    pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                    pipe(server, client);
                });
            }
        });
        SlowRelay {
            address,
            taken,
            stop,
        }
    }

    fn taken(&self) -> usize {
        self.taken.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for SlowRelay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// `canary median C vs baseline median B` of a compare check's detail.
fn medians(detail: &str) -> (f64, f64) {
    let number = |after: &str| -> f64 {
        let rest = detail
            .split(after)
            .nth(1)
            .unwrap_or_else(|| panic!("{detail}"));
        rest.split_whitespace().next().unwrap().parse().unwrap()
    };
    (number("canary median "), number("baseline median "))
}

#[test]
fn a_mail_flow_median_fails_a_canary_made_slow_and_the_same_canary_fast_passes() {
    let fleet = MailFleet::start();
    let canary = fleet.lab.host("cn-south-c1-01");
    let baseline = fleet.lab.host("cn-south-c1-02");
    let store = fleet
        .lab
        .stores()
        .find(|s| s.region == canary.region)
        .unwrap();
    // A trivial release (a marker on each MTA), gated by the latency of mail through the
    // canary against the next wave's MTA of the same region (same stores, old release).
    let playbook = fleet.lab_dir().join("latency-gate.yaml");
    std::fs::write(
        &playbook,
        format!(
            r#"name: latency-gate
strategy:
  on_failure: rollback-region
  waves:
    - name: canary
      regions: [cn-south]
      hosts: {canary}
      pause: 3s
      verify:
        - name: latency
          probe:
            mailflow:
              to: "alice@{{{{ mail_domain }}}}"
              address: "{{{{ host.address }}}}"
              imap: {{ address: "{{{{ mail_stores[0] }}}}", user: alice, password: "{{{{ mail_password }}}}" }}
          every: 1s
          compare: median
          baseline: {baseline}
          tolerance: "+1"
    - {{ name: rest, regions: ["*"], hosts: mta }}
steps:
  - name: release
    hosts: mta
    run: echo v2 > {{{{ mail_home }}}}/pony-test-release
    rollback: rm -f {{{{ mail_home }}}}/pony-test-release
"#,
            canary = canary.name,
            baseline = baseline.name,
        ),
    )
    .unwrap();
    let inventory = fleet.inventory();
    let runs = || -> std::collections::BTreeSet<PathBuf> {
        std::fs::read_dir(fleet.state.join("runs"))
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default()
    };
    let deploy = || {
        let before = runs();
        let out = pony(
            &fleet.state,
            &[
                "deploy",
                "-i",
                inventory.to_str().unwrap(),
                playbook.to_str().unwrap(),
                "--yes",
                "--output",
                "json",
            ],
        )
        .output()
        .unwrap();
        let new: Vec<PathBuf> = runs().difference(&before).cloned().collect();
        assert_eq!(new.len(), 1, "{new:?}");
        (out, support::journal(&new[0]))
    };
    let released = |host: &pony::lab::mail::MailHost| {
        std::fs::read_to_string(host.home.join("pony-test-release")).ok()
    };
    let transport = canary.postfix_config().join("transport");
    let healthy_transport = std::fs::read_to_string(&transport).unwrap();
    let reload = || {
        let status = std::process::Command::new("postfix")
            .arg("-c")
            .arg(canary.postfix_config())
            .arg("reload")
            .status()
            .unwrap();
        assert!(status.success());
    };
    let latency_checks = |journal: &[serde_json::Value]| -> Vec<serde_json::Value> {
        journal
            .iter()
            .filter(|r| r["type"] == "verify_check" && r["check"] == "latency")
            .cloned()
            .collect()
    };

    // The canary's LMTP hop is held 2 s per delivery: its mail arrives ~2 s late.
    let relay = SlowRelay::start(
        canary.address,
        std::net::SocketAddr::from((store.address, 24)),
        Duration::from_secs(2),
    );
    std::fs::write(
        &transport,
        format!(
            "{} lmtp:[{}]:{}\n",
            pony::lab::mail::DOMAIN,
            relay.address.ip(),
            relay.address.port()
        ),
    )
    .unwrap();
    reload();
    let (out, journal) = deploy();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let checks = latency_checks(&journal);
    assert_eq!(checks.len(), 1, "the first round fails: {checks:#?}");
    assert_eq!(checks[0]["ok"], false, "{checks:#?}");
    let detail = checks[0]["detail"].as_str().unwrap();
    let (slow, base) = medians(detail);
    assert!(slow > base + 1.0, "{detail}");
    // The wave's failure (the `wave_failed` event, journaled as `wave_stopped`) says why.
    let events = support::events(&out);
    let failed = [("wave_failed", &events), ("wave_stopped", &journal)].map(|(kind, records)| {
        let key = if kind == "wave_failed" {
            "event"
        } else {
            "type"
        };
        records
            .iter()
            .find(|r| r[key] == kind && r["wave"] == "canary")
            .unwrap_or_else(|| panic!("no {kind}: {records:#?}"))["reason"]
            .as_str()
            .unwrap()
            .to_string()
    });
    for reason in failed {
        assert!(
            reason.contains("check latency failed")
                && reason.contains(&format!("canary median {slow} "))
                && reason.contains(&format!("baseline median {base} ")),
            "{reason}"
        );
    }
    assert!(
        relay.taken() >= 1,
        "the canary's mail went through the relay"
    );
    // Rolled back (rollback-region); the next wave's hosts never started.
    assert_eq!(released(canary), None);
    assert_eq!(
        support::started_hosts(&journal),
        [canary.name.clone()].into_iter().collect()
    );
    for host in fleet.lab.hosts.iter().filter(|h| h.name != canary.name) {
        assert_eq!(released(host), None, "{}", host.name);
    }
    eprintln!("slowed canary: {detail}");

    // The control: the same rollout with the canary's LMTP as it was passes the gate.
    std::fs::write(&transport, healthy_transport).unwrap();
    reload();
    let through_relay = relay.taken();
    let (out, journal) = deploy();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let checks = latency_checks(&journal);
    assert!(!checks.is_empty(), "{journal:#?}");
    assert!(checks.iter().all(|c| c["ok"] == true), "{checks:#?}");
    let detail = checks.last().unwrap()["detail"].as_str().unwrap();
    let (fast, base) = medians(detail);
    assert!(fast <= base + 1.0, "{detail}");
    assert_eq!(relay.taken(), through_relay, "the relay is out of the path");
    assert!(journal
        .iter()
        .any(|r| r["type"] == "gate_passed" && r["wave"] == "canary"));
    for host in fleet.lab.hosts.iter().filter(|h| h.is_mta()) {
        assert_eq!(released(host).as_deref(), Some("v2\n"), "{}", host.name);
    }
    eprintln!("canary as it was: {detail}");
    // The password is in no record of the runs.
    for run in runs() {
        let journal = std::fs::read_to_string(run.join("journal.jsonl")).unwrap();
        assert!(!journal.contains(pony::lab::mail::PASSWORD));
    }
}

/// A store's Dovecot stopped mid-rollout (after the canary, before the rollout reaches
/// the store's region), under traffic: the store's reload fails, its region rolls back,
/// and pony's word on every host is true: a host it calls ok or rolled back answers on
/// its services, and the store whose Dovecot is down is called neither. The MTAs hand
/// that store's mail to the region's other store: no message is lost, duplicated or
/// bounced.
#[test]
fn a_stores_dovecot_stopped_mid_rollout_is_told_truly_and_loses_no_message() {
    let fleet = MailFleet::start();
    let (canary, store) = ("cn-south-c1-01", "eu-west-c2-01");
    assert!(fleet.lab.host(store).is_store());
    let state = fleet.state.clone();
    let (out, sent, count) = with_traffic_until(
        &fleet,
        || {
            let deploy = fleet
                .deploy_command(&["--var", "version=v2", "--output", "json"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            support::wait_until("the run's folder", || {
                std::fs::read_dir(state.join("runs")).is_ok_and(|mut d| d.next().is_some())
            });
            let (_, run_dir) = only_run(&state);
            // Wave china has started, so wave world (eu-west) has not.
            wait_for_started(&run_dir, "wave china", |l| {
                l.contains("@cn-south-") && !l.ends_with(canary)
            });
            fleet.lab.stop_service(store, Service::Dovecot).unwrap();
            deploy.wait_with_output().unwrap()
        },
        "mail relayed by release v2",
        || delivered_headers(&fleet).any(|h| h.starts_with("X-Pony-Release: v2 ")),
    );
    report("a store's dovecot stopped", &sent, &count);
    let events = support::json_lines(&String::from_utf8_lossy(&out.stdout));
    let verdicts: std::collections::BTreeMap<String, String> = events
        .iter()
        .filter(|e| e["event"] == "host_finished")
        .map(|e| {
            (
                e["host"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(verdicts.len(), 12, "{verdicts:?}\n{}", text(&out));
    let answers = |host: &pony::lab::mail::MailHost, port: u16| {
        use std::io::{BufRead, BufReader};
        std::net::TcpStream::connect((host.address, port)).is_ok_and(|stream| {
            let mut line = String::new();
            BufReader::new(stream).read_line(&mut line).is_ok() && !line.is_empty()
        })
    };
    for host in &fleet.lab.hosts {
        let verdict = verdicts[&host.name].as_str();
        // Half of a cluster at a time: eu-west's -02 hosts never started.
        let expected = match (host.region.as_str(), host.name.as_str()) {
            (_, name) if name == store => "rollback_failed",
            ("eu-west", name) if name.ends_with("-02") => "cancelled",
            ("eu-west", _) => "rolled_back",
            _ => "ok",
        };
        assert_eq!(verdict, expected, "{}: {verdicts:?}", host.name);
        let release = if verdict == "ok" { "v2" } else { "lab-1" };
        assert_eq!(
            fleet.release(&host.name).as_deref(),
            Some(release),
            "{}",
            host.name
        );
        if verdict != "rollback_failed" {
            if host.is_mta() {
                assert!(answers(host, 25), "{} is {verdict}: SMTP", host.name);
            }
            if host.is_store() {
                assert!(answers(host, 143), "{} is {verdict}: IMAP", host.name);
            }
        }
    }
    assert!(
        !answers(fleet.lab.host(store), 143),
        "the store stayed down"
    );
    // rollback failed is exit 3, and the summary says so.
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(sent.rejected.is_empty(), "5xx bounces: {:?}", sent.rejected);
    assert_eq!(count.lost, Vec::<u64>::new(), "{count}");
    assert!(count.duplicated.is_empty(), "{count:?}");
}
