//! The mail built-ins (`mail: { action: … }`) against a real lab host: Postfix and
//! Dovecot on loopback (`pony lab up --mail`, one MTA and one store). Each action is
//! judged by what a client and the host's files show: the MTA's reply to RCPT, its
//! queue, the messages in the store's Maildir, `soft_bounce` in main.cf, the iptables
//! rule, the deny list, the daemons' logs. These tests fail (never skip) without root
//! or without the packages; the error says how to install them.

mod support;

use pony::lab::mail::{MailLab, Service};
use pony::lab::traffic;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;
use support::{pony, text};

const MTA: &str = "cn-south-c1-01";
const STORE: &str = "cn-south-c2-01";

/// A one-region mail lab (an MTA and a store), stopped when dropped.
struct Lab {
    _dir: tempfile::TempDir,
    state: PathBuf,
    lab: MailLab,
}

impl Lab {
    fn start() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let args = [
            "lab",
            "up",
            "--regions",
            "1",
            "--clusters",
            "2",
            "--hosts",
            "1",
            "--mail",
        ];
        let up = pony(&state, &args).output().unwrap();
        let lab_dir = state.join("lab");
        let mut lab = Lab {
            _dir: dir,
            state,
            lab: MailLab {
                hosts: Vec::new(),
                added_addresses: Vec::new(),
            },
        };
        assert!(up.status.success(), "lab up --mail: {}", text(&up));
        lab.lab = MailLab::load(&lab_dir).unwrap();
        assert!(lab.lab.host(MTA).is_mta() && lab.lab.host(STORE).is_store());
        lab
    }

    /// Deploys a playbook of these steps (with the lab's inventory).
    fn deploy(&self, name: &str, steps: &str) -> Output {
        let playbook = self.state.join(format!("{name}.yaml"));
        let strategy = "strategy: { max_failures: 100%, on_failure: halt }\n";
        std::fs::write(
            &playbook,
            format!("name: {name}\n{strategy}steps:\n{steps}"),
        )
        .unwrap();
        let inventory = self.state.join("lab/inventory.yaml");
        let args = [
            "deploy",
            "-i",
            inventory.to_str().unwrap(),
            playbook.to_str().unwrap(),
            "--yes",
        ];
        pony(&self.state, &args).output().unwrap()
    }

    fn home(&self, host: &str) -> &Path {
        &self.lab.host(host).home
    }

    fn soft_bounce(&self, host: &str) -> String {
        let out = std::process::Command::new("postconf")
            .arg("-c")
            .arg(self.lab.host(host).postfix_config())
            .args(["-h", "soft_bounce"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Whether the store's LMTP port has pony's drain rule.
    fn lmtp_refused(&self) -> bool {
        let out = std::process::Command::new("iptables")
            .args(["-w", "-S", "INPUT"])
            .output()
            .unwrap();
        let address = format!("-d {}/32", self.lab.host(STORE).address);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.contains("pony-lmtp-drain") && l.contains(&address))
    }

    /// Lines of a host's log (`postfix.log`, `dovecot.log`) that contain `what`.
    fn log_lines(&self, host: &str, log: &str, what: &str) -> usize {
        std::fs::read_to_string(self.home(host).join("log").join(log))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(what))
            .count()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = pony(&self.state, &["lab", "down"]).output();
        // A failed test may leave the drain rule behind: it names this lab's store.
        if let Some(store) = self.lab.hosts.iter().find(|h| h.is_store()) {
            let rule = format!(
                "INPUT -p tcp -d {} --dport 24 --syn -m comment --comment pony-lmtp-drain -j REJECT --reject-with tcp-reset",
                store.address
            );
            let rule: Vec<&str> = rule.split(' ').collect();
            while std::process::Command::new("iptables")
                .args(["-w", "-D"])
                .args(&rule)
                .output()
                .is_ok_and(|o| o.status.success())
            {}
        }
    }
}

/// The reply an MTA gives to `RCPT TO` (a drained MTA defers with 450; one that takes
/// mail says 250). No message is sent.
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

/// The state of a task in the journal of the run a deploy printed (`run ID: …`).
fn task_state(state: &Path, deployed: &str, label: &str) -> String {
    let run = deployed
        .lines()
        .find_map(|l| l.strip_prefix("run ")?.split(':').next())
        .unwrap_or_else(|| panic!("no run id in: {deployed}"));
    support::journal(&state.join("runs").join(run))
        .iter()
        .rev()
        .find(|r| r["type"] == "task_finished" && r["label"] == label)
        .map(|r| r["state"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

/// Mail queued on the MTA (its store down), then: drain_mta defers new mail with a 4xx,
/// sets soft_bounce and empties the queue into the store, every message once;
/// drain_imap and lmtp_out take the store out; accept_mta, accept_imap and lmtp_in put
/// everything back; a reload of a config the daemons reject fails with their own words
/// and reloads nothing.
#[test]
fn mail_actions_drain_accept_and_refuse_a_broken_reload_on_a_real_lab() {
    let lab = Lab::start();
    let mta = lab.lab.host(MTA).address;

    // Mail waits in the MTA's queue while the store's Dovecot is down.
    lab.lab.stop_service(STORE, Service::Dovecot).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let options = traffic::Options {
        rate: 20.0,
        ..traffic::Options::default()
    };
    let sending = runtime.spawn(traffic::send(traffic::regions(&lab.lab), options, stopped));
    support::wait_until("mail queued on the MTA", || {
        lab.lab.queued(MTA).unwrap() >= 5
    });
    stop.send(true).unwrap();
    let sent = runtime.block_on(sending).unwrap();
    let held = lab.lab.queued(MTA).unwrap();
    assert_eq!(
        held,
        sent.accepted.len(),
        "every accepted message is queued"
    );
    lab.lab.start_service(STORE, Service::Dovecot).unwrap();

    // Out of service. The store leaves LMTP only once the MTA's queue is delivered.
    let out = lab.deploy(
        "out",
        r#"
  - name: drain
    hosts: mta
    mail: { action: drain_mta, postfix: "{{ mail_home }}/current/postfix", map: "{{ mail_home }}/state/drain.cidr", reply: "4.7.1 out for a test", wait: 60s }
  - name: drain-imap
    hosts: store
    mail: { action: drain_imap, dovecot: "{{ mail_home }}/current/dovecot/dovecot.conf", deny: "{{ mail_home }}/state/imap-deny", users: "{{ mail_users | join(' ') }}", wait: 1 }
  - name: drain-lmtp
    hosts: store
    needs: [{ step: drain, scope: run }]
    mail: { action: lmtp_out, address: "{{ host.address }}" }
"#,
    );
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    let reply = rcpt_reply(mta);
    assert!(
        reply.starts_with("450 4.7.1 ") && reply.ends_with("out for a test"),
        "{reply}"
    );
    assert_eq!(
        lab.lab.queued(MTA).unwrap(),
        0,
        "the drain waited for the queue"
    );
    assert_eq!(lab.soft_bounce(MTA), "yes");
    let count = traffic::count(&lab.lab, &sent);
    assert_eq!(count.delivered, held, "{count}");
    assert_eq!(count.lost, Vec::<u64>::new(), "{count}");
    assert!(count.duplicated.is_empty(), "{count:?}");
    assert!(lab.lmtp_refused(), "{said}");
    let deny = std::fs::read_to_string(lab.home(STORE).join("state/imap-deny")).unwrap();
    assert_eq!(deny, "alice\nbob\ntraffic\n");

    // Back in service.
    let out = lab.deploy(
        "in",
        r#"
  - name: accept
    hosts: mta
    mail: { action: accept_mta, postfix: "{{ mail_home }}/current/postfix", map: "{{ mail_home }}/state/drain.cidr" }
  - name: accept-store
    hosts: store
    mail:
      - { action: lmtp_in, address: "{{ host.address }}" }
      - { action: accept_imap, deny: "{{ mail_home }}/state/imap-deny" }
"#,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let reply = rcpt_reply(mta);
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(lab.soft_bounce(MTA), "no");
    assert!(!lab.lmtp_refused());
    let deny = std::fs::read_to_string(lab.home(STORE).join("state/imap-deny")).unwrap();
    assert_eq!(deny, "");

    // Configs the daemons reject: Postfix's in a copy of the MTA's config directory
    // (a reload through it would signal the running master), Dovecot's in the store's
    // live dovecot.conf.
    let copy = lab.home(MTA).join("broken-postfix");
    let live = lab.lab.host(MTA).postfix_config();
    std::fs::create_dir_all(&copy).unwrap();
    for file in ["main.cf", "master.cf"] {
        std::fs::copy(live.join(file), copy.join(file)).unwrap();
    }
    let mut main_cf = std::fs::read_to_string(copy.join("main.cf")).unwrap();
    main_cf.push_str("message_size_limit = 25MB\n");
    std::fs::write(copy.join("main.cf"), main_cf).unwrap();
    let dovecot_conf = lab.lab.host(STORE).dovecot_config();
    let good = std::fs::read_to_string(&dovecot_conf).unwrap();
    std::fs::write(&dovecot_conf, format!("{good}bogus_setting = 1\n")).unwrap();
    let postfix_reloads = lab.log_lines(MTA, "postfix.log", "reload --");
    let dovecot_reloads = lab.log_lines(STORE, "dovecot.log", "SIGHUP received");
    let out = lab.deploy(
        "broken",
        r#"
  - name: reload-postfix
    hosts: mta
    mail: { action: reload, postfix: "{{ mail_home }}/broken-postfix" }
  - name: reload-dovecot
    hosts: store
    mail: { action: reload, dovecot: "{{ mail_home }}/current/dovecot/dovecot.conf", lmtp: "{{ host.address }}" }
"#,
    );
    std::fs::write(&dovecot_conf, good).unwrap();
    let said = text(&out);
    // Each failed host is rolled back: reload's rollback reloads again, after the same
    // test, which still refuses (the configs are still broken): `rollback failed`.
    assert_eq!(out.status.code(), Some(3), "{said}");
    assert_eq!(
        task_state(&lab.state, &said, &format!("reload-postfix@{MTA}")),
        "failed"
    );
    assert_eq!(
        task_state(&lab.state, &said, &format!("reload-dovecot@{STORE}")),
        "failed"
    );
    // The daemons' own words, in the tasks' output.
    assert!(
        said.contains("Postfix rejects the config")
            && said.contains("bad numerical configuration: message_size_limit = 25MB"),
        "{said}"
    );
    assert!(
        said.contains("Dovecot rejects") && said.contains("bogus_setting"),
        "{said}"
    );
    assert!(said.contains("nothing was reloaded"), "{said}");
    // Nothing was reloaded; both serve the old config, and the store takes LMTP.
    assert_eq!(
        lab.log_lines(MTA, "postfix.log", "reload --"),
        postfix_reloads
    );
    assert_eq!(
        lab.log_lines(STORE, "dovecot.log", "SIGHUP received"),
        dovecot_reloads
    );
    assert!(!lab.lmtp_refused(), "the store was never taken out: {said}");
    let reply = rcpt_reply(mta);
    assert!(reply.starts_with("250"), "{reply}");
}
