//! Protocol probes through port forwards over the hosts' SSH connections (and plain
//! connects for local hosts), against small SMTP, LMTP, IMAP and HTTP responders on
//! loopback. A responder can insist that a connection came through one of the lab's sshd
//! servers (the far end of a port forward), so a probe that connected directly fails.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use support::{lab_with, text};

type Respond = fn(&str) -> Option<&'static str>;

/// Who may talk to a responder: anyone, or only connections made by a process below one of
/// these sshd pids (a port forward's far end); each such connection is logged by host.
#[derive(Clone, Default)]
struct Through {
    sshd: Vec<(u32, String)>,
    seen: Arc<Mutex<Vec<String>>>,
    refused: Arc<Mutex<usize>>,
}

impl Through {
    fn lab(lab: &support::Lab) -> Through {
        Through {
            sshd: lab
                .fleet
                .hosts()
                .iter()
                .map(|h| (h.pid, h.name.clone()))
                .collect(),
            ..Through::default()
        }
    }

    /// The lab host whose sshd (or a process below it) made the connection `peer` → `ours`.
    fn host_of(&self, peer: SocketAddr, ours: SocketAddr) -> Option<String> {
        let entry = support::tcp_table()
            .into_iter()
            .find(|e| SocketAddr::V4(e.local) == peer && SocketAddr::V4(e.remote) == ours)?;
        let owners = support::socket_owners(entry.inode);
        self.sshd.iter().find_map(|(sshd, name)| {
            owners
                .iter()
                .any(|&pid| support::descends_from(pid, *sshd))
                .then(|| name.clone())
        })
    }

    fn admits(&self, stream: &TcpStream) -> bool {
        if self.sshd.is_empty() {
            return true;
        }
        let (Ok(peer), Ok(ours)) = (stream.peer_addr(), stream.local_addr()) else {
            return false;
        };
        match self.host_of(peer, ours) {
            Some(host) => {
                self.seen.lock().unwrap().push(host);
                true
            }
            None => {
                *self.refused.lock().unwrap() += 1;
                false
            }
        }
    }

    fn hosts(&self) -> BTreeSet<String> {
        self.seen.lock().unwrap().iter().cloned().collect()
    }
}

/// A one-thread line server: `respond(line) -> reply` after sending `greeting`, to the
/// connections `through` admits (others are closed unanswered).
fn serve(greeting: &'static str, respond: Respond, through: &Through) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let through = through.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            if !through.admits(&stream) {
                continue; // dropped: the client sees the connection close
            }
            std::thread::spawn(move || {
                let mut writer = stream.try_clone().unwrap();
                let _ = writer.write_all(greeting.as_bytes());
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    match respond(line.trim_end_matches('\r')) {
                        Some(reply) => {
                            let _ = writer.write_all(reply.as_bytes());
                            if reply.starts_with("HTTP/") {
                                return; // HTTP/1.0: the response ends with the connection
                            }
                        }
                        None => return,
                    }
                }
            });
        }
    });
    port
}

fn smtp_with_starttls(line: &str) -> Option<&'static str> {
    match line.split_whitespace().next()? {
        "EHLO" => Some("250-fake.example\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 SIZE 1000\r\n"),
        "LHLO" => Some("500 5.5.2 unknown command\r\n"),
        _ => None,
    }
}

fn smtp_without_starttls(line: &str) -> Option<&'static str> {
    line.starts_with("EHLO")
        .then_some("250-fake.example\r\n250 SIZE 1000\r\n")
}

/// LMTP (RFC 2033): `LHLO`, never `EHLO`, which gets a 500 as from a real LMTP server.
fn lmtp(line: &str) -> Option<&'static str> {
    match line.split_whitespace().next()? {
        "LHLO" => Some("250-fake.example\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n"),
        "EHLO" | "HELO" => Some("500 5.5.1 this is LMTP: use LHLO\r\n"),
        _ => None,
    }
}

fn imap(line: &str) -> Option<&'static str> {
    line.starts_with("p1 ")
        .then_some("* CAPABILITY IMAP4rev1 IDLE\r\np1 OK done\r\n")
}

fn http(line: &str) -> Option<&'static str> {
    // Request lines get no answer until the blank line that ends the request.
    Some(if line.is_empty() {
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nwebmail ready\r\n"
    } else {
        ""
    })
}

fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The last `task_finished` state of every task label in the run's journal.
fn journal_states(state_dir: &std::path::Path) -> std::collections::BTreeMap<String, String> {
    let (_, run_dir) = support::only_run(state_dir);
    support::journal(&run_dir)
        .into_iter()
        .filter(|r| r["type"] == "task_finished")
        .map(|r| {
            (
                r["label"].as_str().unwrap().to_string(),
                r["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn probes_reach_the_services_only_through_each_hosts_sshd_and_fail_loudly() {
    let lab = lab_with(1, 1, 2);
    let through = Through::lab(&lab);
    let smtp = serve("220 fake ESMTP\r\n", smtp_with_starttls, &through);
    let lmtp = serve("220 fake LMTP\r\n", lmtp, &through);
    let imap = serve("* OK fake IMAP ready\r\n", imap, &through);
    let web = serve("", http, &through);

    // A direct connection (not through an sshd) is refused by the responders.
    let mut direct = TcpStream::connect(("127.0.0.1", smtp)).unwrap();
    let mut greeting = String::new();
    let _ = BufReader::new(&mut direct).read_line(&mut greeting);
    assert_eq!(greeting, "", "a direct connection got an answer");
    support::wait_until("the direct connection to be refused", || {
        *through.refused.lock().unwrap() == 1
    });

    let playbook = lab.playbook(&format!(
        r#"
name: probes
steps:
  - {{ name: smtp-up, probe: {{ smtp: {{ port: {smtp}, starttls: true }} }}, until: {{ retries: 2, delay: 100ms }} }}
  - {{ name: lmtp-up, probe: {{ lmtp: {{ port: {lmtp} }} }} }}
  - {{ name: imap-up, probe: {{ imap: {{ port: {imap} }} }} }}
  - {{ name: web-up, probe: {{ http: {{ port: {web}, path: /health, status: 200, body: ready }} }} }}
  - {{ name: tcp-up, probe: {{ tcp: {{ port: {smtp} }} }} }}
"#
    ));
    let out = lab.deploy(&playbook, &["--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let finished = support::events(&out)
        .into_iter()
        .filter(|e| e["event"] == "task_finished")
        .count();
    assert_eq!(finished, 10, "5 probes × 2 hosts");
    let states = journal_states(&lab.state);
    assert_eq!(states.len(), 10, "{states:?}");
    assert!(states.values().all(|s| s == "succeeded"), "{states:?}");
    // The responders record a connection on their own threads, which may still be at it
    // when the run ends (a `tcp` probe leaves after 300 ms of silence).
    support::wait_until("the responders to record all 10 probe connections", || {
        through.seen.lock().unwrap().len() >= 10
    });
    assert_eq!(
        through.hosts(),
        lab.host_names().into_iter().collect::<BTreeSet<_>>(),
        "every host's probes came through its own sshd"
    );
    assert_eq!(
        through.seen.lock().unwrap().len(),
        10,
        "every probe connection came through an sshd"
    );
    assert_eq!(
        *through.refused.lock().unwrap(),
        1,
        "only the direct connection"
    );

    let no_tls = serve("220 fake ESMTP\r\n", smtp_without_starttls, &through);
    let nothing = closed_port();
    std::fs::remove_dir_all(&lab.state).unwrap();
    let playbook = lab.playbook(&format!(
        r#"
name: probes-fail
strategy: {{ max_failures: 2 }}
steps:
  - {{ name: tls, probe: {{ smtp: {{ port: {no_tls}, starttls: true }} }} }}
  - {{ name: smtp-on-lmtp, probe: {{ smtp: {{ port: {lmtp} }} }} }}
  - {{ name: down, probe: {{ imap: {{ port: {nothing} }} }}, until: {{ retries: 2, delay: 50ms }} }}
"#
    ));
    let out = lab.deploy(&playbook, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("STARTTLS is not offered"), "{stdout}");
    assert!(
        stdout.contains("EHLO answered") && stdout.contains("use LHLO"),
        "an SMTP probe of an LMTP server fails: {stdout}"
    );
    assert!(
        stdout.contains("step down") && stdout.contains("after 3 attempt(s)"),
        "{stdout}"
    );
    let states = journal_states(&lab.state);
    for host in lab.host_names() {
        for step in ["tls", "smtp-on-lmtp", "down"] {
            assert_eq!(
                states.get(&format!("{step}@{host}")).map(String::as_str),
                Some("failed"),
                "{states:?}"
            );
        }
    }
}

#[test]
fn probes_on_local_hosts_connect_directly_and_the_journal_shows_each_outcome() {
    let anyone = Through::default();
    let smtp = serve("220 fake ESMTP\r\n", smtp_with_starttls, &anyone);
    let lmtp = serve("220 fake LMTP\r\n", lmtp, &anyone);
    let dir = tempfile::tempdir().unwrap();
    let deploy = |name: &str, steps: &str| {
        let playbook = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&playbook, format!("name: {name}\nsteps:\n{steps}")).unwrap();
        let state = dir.path().join(name);
        let out = support::pony(
            &state,
            &[
                "deploy",
                "-i",
                "inventories/local.yaml",
                playbook.to_str().unwrap(),
                "--limit",
                "mx-gz-01",
                "--yes",
            ],
        )
        .output()
        .unwrap();
        (out, journal_states(&state))
    };
    let (out, states) = deploy(
        "ok",
        &format!(
            "  - {{ name: lmtp-up, probe: {{ lmtp: {{ port: {lmtp} }} }} }}\n  - {{ name: smtp-up, probe: {{ smtp: {{ port: {smtp}, starttls: true }} }} }}\n"
        ),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        states.get("lmtp-up@mx-gz-01").map(String::as_str),
        Some("succeeded"),
        "{states:?}"
    );
    assert_eq!(
        states.get("smtp-up@mx-gz-01").map(String::as_str),
        Some("succeeded"),
        "{states:?}"
    );

    // LHLO to an SMTP server is not answered with 250: the lmtp probe fails.
    let (out, states) = deploy(
        "bad",
        &format!("  - {{ name: lmtp-on-smtp, probe: {{ lmtp: {{ port: {smtp} }} }} }}\n"),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("LHLO answered"),
        "{}",
        text(&out)
    );
    assert_eq!(
        states.get("lmtp-on-smtp@mx-gz-01").map(String::as_str),
        Some("failed"),
        "{states:?}"
    );
}
