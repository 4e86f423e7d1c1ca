//! Loading playbooks: every field, the defaults, and every problem reported at once.

use super::*;

fn parse_ok(text: &str) -> Playbook {
    parse(Path::new("p.yaml"), text).unwrap_or_else(|e| panic!("{e}"))
}

fn errors(text: &str) -> String {
    parse(Path::new("p.yaml"), text).unwrap_err().to_string()
}

#[test]
fn parses_every_field() {
    let pb = parse_ok(
        r#"
name: t
vars: { version: "1", mail_root: /srv/mail }
strategy:
  waves:
    - { name: canary, regions: [cn-south], hosts: canary, pause: 10m }
    - { name: china, regions: ["cn-*", eu-west], approve: true, window: "02:00-06:30 Asia/Shanghai" }
    - { name: world, regions: ["*"] }
  max_unavailable: 25%
  max_failures: 2
  on_failure: rollback-all
  connections: 100
  sessions_per_host: 6
  handshakes: 12
steps:
  - { name: a, hosts: "mta:!canary", run: "echo {{ version }}", creates: /x, unless: "test -f /y", timeout: 2m, retries: 2, retry_delay: 5s, estimate: 20s, capture: out, become: true, rollback: "rm -f /x" }
  - { name: b, needs: [a, { step: a, scope: run }], per: region, hosts: store, probe: { smtp: { port: 2525, starttls: true } }, until: { retries: 10, delay: 3s } }
  - { name: c, per: run, upload: { src: "a-{{ version }}.tar", dest: /srv/, mode: "0644" } }
  - { name: d, per: host, template: { src: t.j2, dest: /etc/x, mode: "0o600" } }
  - { name: e, probe: { lmtp: { port: 2424 } } }
  - { name: f, probe: { imap: { port: 1143 } } }
  - { name: g, probe: { http: { port: 8080, path: /health, status: 204, body: ok } } }
  - { name: h, probe: { tcp: { port: 22 } }, until: { retries: 1 } }
"#,
    );
    // Top level.
    assert_eq!(pb.name, "t");
    assert_eq!(pb.file, Path::new("p.yaml"));
    assert_eq!(pb.vars["version"], serde_yaml::Value::from("1"));
    assert_eq!(pb.vars["mail_root"], serde_yaml::Value::from("/srv/mail"));
    assert_eq!(pb.vars.len(), 2);

    // Strategy and its waves.
    let strategy = &pb.strategy;
    assert_eq!(strategy.max_unavailable, Limit::Percent(25));
    assert_eq!(strategy.max_failures, Limit::Count(2));
    assert_eq!(strategy.on_failure, OnFailure::RollbackAll);
    assert_eq!(strategy.connections, 100);
    assert_eq!(strategy.sessions_per_host, 6);
    assert_eq!(strategy.handshakes, 12);
    type WaveFields<'a> = (
        &'a str,
        Vec<&'a str>,
        Option<&'a str>,
        Option<Duration>,
        bool,
    );
    let waves: Vec<WaveFields> = strategy
        .waves
        .iter()
        .map(|w| {
            (
                w.name.as_str(),
                w.regions.iter().map(|r| r.as_str()).collect(),
                w.hosts.as_ref().map(|h| h.as_str()),
                w.pause,
                w.approve,
            )
        })
        .collect();
    assert_eq!(
        waves,
        [
            (
                "canary",
                vec!["cn-south"],
                Some("canary"),
                Some(Duration::from_secs(600)),
                false
            ),
            ("china", vec!["cn-*", "eu-west"], None, None, true),
            ("world", vec!["*"], None, None, false),
        ]
    );
    assert_eq!(
        strategy.waves[1].window,
        Some(Window {
            start_minute: 120,
            end_minute: 390,
            time_zone: "Asia/Shanghai".into(),
            text: "02:00-06:30 Asia/Shanghai".into(),
        })
    );
    assert!(strategy.waves[0].window.is_none() && strategy.waves[2].window.is_none());

    // Step a: every field but the action kinds.
    let a = &pb.steps[0];
    assert_eq!(a.name, "a");
    assert_eq!(a.hosts.as_str(), "mta:!canary");
    assert!(matches!(&a.action, Action::Run(run) if run == "echo {{ version }}"));
    assert_eq!(a.creates.as_deref(), Some("/x"));
    assert_eq!(a.unless.as_deref(), Some("test -f /y"));
    assert_eq!(a.rollback.as_deref(), Some("rm -f /x"));
    assert_eq!(a.timeout, Some(Duration::from_secs(120)));
    assert_eq!(a.retries, 2);
    assert_eq!(a.retry_delay, Duration::from_secs(5));
    assert_eq!(a.estimate, Some(Duration::from_secs(20)));
    assert_eq!(a.capture.as_deref(), Some("out"));
    assert!(a.become_root);
    assert_eq!(a.per, Per::Host);
    assert!(a.needs.is_empty() && a.until.is_none());

    // Step b: needs in both forms, per, hosts, an smtp probe, until.
    let b = &pb.steps[1];
    assert_eq!(
        b.needs,
        vec![
            Need {
                step: 0,
                scope: NeedScope::Auto
            },
            Need {
                step: 0,
                scope: NeedScope::Run
            }
        ]
    );
    assert_eq!(b.per, Per::Region);
    assert_eq!(b.hosts.as_str(), "store");
    let until = b.until.expect("until");
    assert_eq!((until.retries, until.delay), (10, Duration::from_secs(3)));
    assert!(!b.become_root && b.rollback.is_none() && b.timeout.is_none());
    assert_eq!(b.retries, 0);

    // Transfers.
    assert_eq!(pb.steps[2].per, Per::Run);
    match &pb.steps[2].action {
        Action::Upload(t) => {
            assert_eq!(
                (t.src.as_str(), t.dest.as_str(), t.mode),
                ("a-{{ version }}.tar", "/srv/", Some(0o644))
            )
        }
        other => panic!("expected an upload, got {other:?}"),
    }
    assert_eq!(pb.steps[3].per, Per::Host);
    match &pb.steps[3].action {
        Action::Template(t) => {
            assert_eq!(
                (t.src.as_str(), t.dest.as_str(), t.mode),
                ("t.j2", "/etc/x", Some(0o600))
            )
        }
        other => panic!("expected a template, got {other:?}"),
    }

    // Every probe kind with its fields.
    let probe = |step: usize| match &pb.steps[step].action {
        Action::Probe(probe) => serde_json::to_value(probe).unwrap(),
        other => panic!("step {step}: expected a probe, got {other:?}"),
    };
    assert_eq!(
        probe(1),
        serde_json::json!({"smtp": {"port": 2525, "starttls": true}})
    );
    assert_eq!(probe(4), serde_json::json!({"lmtp": {"port": 2424}}));
    assert_eq!(probe(5), serde_json::json!({"imap": {"port": 1143}}));
    assert_eq!(
        probe(6),
        serde_json::json!({"http": {"port": 8080, "path": "/health", "status": 204, "body": "ok"}})
    );
    assert_eq!(probe(7), serde_json::json!({"tcp": {"port": 22}}));
    let until = pb.steps[7].until.expect("until");
    assert_eq!(
        (until.retries, until.delay),
        (1, Duration::from_secs(1)),
        "until's delay defaults to 1s"
    );
    assert_eq!(Limit::Percent(25).of(10), 2);
}

#[test]
fn a_minimal_playbook_gets_the_documented_defaults() {
    let pb = parse_ok(
            "name: m\nsteps:\n  - { name: a, run: \"true\" }\n  - { name: p, probe: { smtp: {} } }\n  - { name: h, probe: { http: {} } }\n",
        );
    assert!(pb.vars.is_empty());
    let strategy = &pb.strategy;
    assert_eq!(strategy.waves.len(), 1);
    assert_eq!(strategy.waves[0].name, "all");
    assert_eq!(strategy.max_unavailable, Limit::Percent(100));
    assert_eq!(strategy.max_failures, Limit::Count(0));
    assert_eq!(strategy.on_failure, OnFailure::RollbackRegion);
    assert_eq!(
        (
            strategy.connections,
            strategy.sessions_per_host,
            strategy.handshakes
        ),
        (256, 8, 16)
    );
    let a = &pb.steps[0];
    assert_eq!(a.hosts.as_str(), "all");
    assert_eq!(a.per, Per::Host);
    assert_eq!((a.retries, a.retry_delay), (0, Duration::from_secs(1)));
    assert!(a.timeout.is_none() && a.estimate.is_none() && !a.become_root);
    let probe = |step: usize| match &pb.steps[step].action {
        Action::Probe(probe) => serde_json::to_value(probe).unwrap(),
        other => panic!("expected a probe, got {other:?}"),
    };
    assert_eq!(
        probe(1),
        serde_json::json!({"smtp": {"port": 25, "starttls": false}})
    );
    assert_eq!(
        probe(2),
        serde_json::json!({"http": {"port": 80, "path": "/", "status": 200, "body": null}})
    );
}

#[test]
fn collects_all_errors() {
    let text = errors(
        r#"
name: t
strategy: { max_unavailable: 125%, waves: [ { name: w, regions: [], pause: 10 minutes please } ] }
steps:
  - { name: a, run: "x", timeout: soon }
  - { name: b, run: "x", needs: [aa] }
  - { name: c }
  - { name: b, run: "{{ x" }
"#,
    );
    for expected in [
        "strategy.max_unavailable: bad value `125%`",
        "wave `w` lists no regions",
        "`10 minutes please` is not a duration",
        "step `a` timeout: `soon` is not a duration",
        "step `b` needs unknown step `aa`",
        "did you mean `a`?",
        "step `c` has no action",
        "step `b` is defined twice",
        "is not a valid template",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
}

#[test]
fn notifiers_are_a_command_or_a_command_with_its_timeout() {
    let playbook = parse_ok(
        "name: n\nnotify:\n  - \"cat >> /tmp/events\"\n  - { command: mail.sh, timeout: 30s }\nsteps:\n  - { name: a, run: \"true\" }\n",
    );
    assert_eq!(
        playbook.notify,
        [
            Notifier {
                command: "cat >> /tmp/events".into(),
                timeout: DEFAULT_NOTIFY_TIMEOUT,
            },
            Notifier {
                command: "mail.sh".into(),
                timeout: std::time::Duration::from_secs(30),
            },
        ]
    );
    let errors = parse(
        Path::new("p.yaml"),
        "name: n\nnotify:\n  - { command: mail.sh, timeout: soon }\n  - \" \"\nsteps:\n  - { name: a, run: \"true\" }\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        errors.contains("notify[0].timeout: `soon` is not a duration"),
        "{errors}"
    );
    assert!(
        errors.contains("notify[1]: the command is empty"),
        "{errors}"
    );
}

#[test]
fn delegate_and_its_parallelism_are_read_and_default_to_one_at_a_time() {
    let pb = parse_ok(
        r#"
name: p
steps:
  - { name: drain, run: "lbctl off {{ host.name }}", delegate: "{{ lb_host }}" }
  - { name: enable, run: "lbctl on", delegate: lb-1, delegate_parallel: 3 }
  - { name: plain, run: "true" }
"#,
    );
    let [drain, enable, plain] = &pb.steps[..] else {
        panic!("three steps")
    };
    assert_eq!(drain.delegate.as_deref(), Some("{{ lb_host }}"));
    assert_eq!(drain.delegate_parallel, 1);
    assert!(drain.templates().contains(&("delegate", "{{ lb_host }}")));
    assert_eq!(enable.delegate_parallel, 3);
    assert!(plain.delegate.is_none());
}

#[test]
fn a_handler_listens_to_steps_it_also_needs_and_changed_when_takes_four_forms() {
    let pb = parse_ok(
        r#"
name: t
steps:
  - { name: conf, template: { src: t.j2, dest: /etc/x } }
  - { name: edit, run: "postconf -e x=1 && echo updated", changed_when: { stdout_contains: "updated" } }
  - { name: read, run: cat /etc/x, changed_when: false }
  - { name: gone, run: "true", changed_when: { stdout_lacks: "kept" } }
  - { name: plain, run: "true", changed_when: true }
  - { name: reload, listen: [conf, edit], needs: [read, conf], run: postfix reload }
"#,
    );
    let step = |name: &str| &pb.steps[pb.step_id(name).unwrap()];
    assert_eq!(
        step("edit").changed_when,
        ChangeRule::StdoutContains("updated".into())
    );
    assert_eq!(step("read").changed_when, ChangeRule::Never);
    assert_eq!(
        step("gone").changed_when,
        ChangeRule::StdoutLacks("kept".into())
    );
    assert_eq!(step("plain").changed_when, ChangeRule::Always);
    assert_eq!(step("conf").changed_when, ChangeRule::Always);
    let reload = step("reload");
    assert!(reload.is_handler() && !step("conf").is_handler());
    assert_eq!(reload.listen, [0, 1]);
    // Listened steps join its needs once each.
    let needs: Vec<StepId> = reload.needs.iter().map(|n| n.step).collect();
    assert_eq!(needs, [2, 0, 1]);

    assert!(ChangeRule::StdoutContains("updated".into()).changed(b"updated x = 1\n"));
    assert!(!ChangeRule::StdoutContains("updated".into()).changed(b"already\n"));
    assert!(ChangeRule::StdoutLacks("kept".into()).changed(b"removed\n"));
    assert!(!ChangeRule::Never.changed(b"updated"));
}

#[test]
fn bad_listen_and_changed_when_are_reported_with_the_fix() {
    let e = errors(
        r#"
name: t
steps:
  - { name: conf, run: "true", changed_when: maybe }
  - { name: probe, probe: { tcp: { port: 22 } }, changed_when: false }
  - { name: once, per: region, run: "true" }
  - { name: reload, listen: [conff], run: "true" }
  - { name: self, listen: [self], run: "true" }
  - { name: empty, listen: [], run: "true" }
  - { name: regional, per: region, listen: [conf], run: "true" }
"#,
    );
    assert!(
        e.contains("step `conf`: `changed_when: \"maybe\"` is not a rule pony knows"),
        "{e}"
    );
    assert!(
        e.contains("step `probe`: `changed_when` on a `probe` step"),
        "{e}"
    );
    assert!(
        e.contains("step `reload` listens to unknown step `conff`"),
        "{e}"
    );
    assert!(e.contains("did you mean `conf`?"), "{e}");
    assert!(e.contains("step `self` listens to itself"), "{e}");
    assert!(e.contains("step `empty`: `listen` is empty"), "{e}");
    assert!(
        e.contains("step `regional`: a handler (`listen`) with `per: region|run`"),
        "{e}"
    );
    let e = errors(
        "name: t\nsteps:\n  - { name: once, per: region, run: 'true' }\n  - { name: h, listen: [once], run: 'true' }\n",
    );
    assert!(
        e.contains("step `h` listens to `once`, a `per: region` step"),
        "{e}"
    );
}
