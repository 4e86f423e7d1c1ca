//! Protocol probes through port forwards over the hosts' SSH connections (and plain
//! connects for local hosts), against small SMTP, IMAP and HTTP responders on loopback.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use support::{lab_with, text};

/// A one-thread line server: `respond(line) -> reply` after sending `greeting`.
fn serve(greeting: &'static str, respond: fn(&str) -> Option<&'static str>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
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
        _ => None,
    }
}

fn smtp_without_starttls(line: &str) -> Option<&'static str> {
    line.starts_with("EHLO")
        .then_some("250-fake.example\r\n250 SIZE 1000\r\n")
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

#[test]
fn probes_pass_over_ssh_port_forwards_and_fail_loudly() {
    let lab = lab_with(1, 1, 2);
    let smtp = serve("220 fake ESMTP\r\n", smtp_with_starttls);
    let imap = serve("* OK fake IMAP ready\r\n", imap);
    let web = serve("", http);
    let playbook = lab.playbook(&format!(
        r#"
name: probes
steps:
  - {{ name: smtp-up, probe: {{ smtp: {{ port: {smtp}, starttls: true }} }}, until: {{ retries: 2, delay: 100ms }} }}
  - {{ name: imap-up, probe: {{ imap: {{ port: {imap} }} }} }}
  - {{ name: web-up, probe: {{ http: {{ port: {web}, path: /health, status: 200, body: ready }} }} }}
  - {{ name: tcp-up, probe: {{ tcp: {{ port: {smtp} }} }} }}
"#
    ));
    let out = lab.deploy(&playbook, &["--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let finished = String::from_utf8_lossy(&out.stdout)
        .matches("\"event\":\"task_finished\"")
        .count();
    assert_eq!(finished, 8, "4 probes × 2 hosts");

    let no_tls = serve("220 fake ESMTP\r\n", smtp_without_starttls);
    let nothing = closed_port();
    let playbook = lab.playbook(&format!(
        r#"
name: probes-fail
strategy: {{ max_failures: 2 }}
steps:
  - {{ name: tls, probe: {{ smtp: {{ port: {no_tls}, starttls: true }} }} }}
  - {{ name: down, probe: {{ imap: {{ port: {nothing} }} }}, until: {{ retries: 2, delay: 50ms }} }}
"#
    ));
    let out = lab.deploy(&playbook, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("STARTTLS is not offered"), "{stdout}");
    assert!(
        stdout.contains("step down") && stdout.contains("after 3 attempt(s)"),
        "{stdout}"
    );
}

#[test]
fn probes_work_on_local_hosts() {
    let smtp = serve("220 fake ESMTP\r\n", smtp_with_starttls);
    let dir = tempfile::tempdir().unwrap();
    let playbook = dir.path().join("p.yaml");
    std::fs::write(
        &playbook,
        format!(
            "name: p\nsteps:\n  - {{ name: lmtp-like, probe: {{ smtp: {{ port: {smtp} }} }} }}\n"
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pony"))
        .args([
            "--state-dir",
            dir.path().join("state").to_str().unwrap(),
            "deploy",
            "-i",
            "inventories/local.yaml",
            playbook.to_str().unwrap(),
            "--yes",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}
