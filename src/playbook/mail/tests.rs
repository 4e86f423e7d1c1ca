use super::*;

fn yaml(text: &str) -> Value {
    serde_yaml::from_str(text).unwrap()
}

fn messages(text: &str) -> Vec<String> {
    match expand(&yaml(text)) {
        Ok(_) => panic!("accepted: {text}"),
        Err(problems) => problems
            .into_iter()
            .map(|p| format!("{} -- {}", p.message, p.hint))
            .collect(),
    }
}

/// Renders `template` with `vars` the way a task's command is rendered.
fn render(template: &str, vars: serde_json::Value) -> String {
    crate::playbook::template::environment()
        .render_str(template, minijinja::Value::from_serialize(vars))
        .unwrap()
}

/// Runs a rendered command under `sh`; its status and output.
fn sh(command: &str, env: &[(&str, &str)]) -> (bool, String) {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn no_body_is_template_syntax() {
    for body in [
        scripts::PRELUDE,
        scripts::DRAIN_MTA,
        scripts::ACCEPT_MTA,
        scripts::DRAIN_IMAP,
        scripts::ACCEPT_IMAP,
        scripts::LMTP_OUT,
        scripts::LMTP_IN,
        scripts::CHECK,
        scripts::RELOAD,
        scripts::RELINK,
    ] {
        for marker in ["{{", "{%", "{#"] {
            assert!(!body.contains(marker), "{marker} in {body}");
        }
    }
}

#[test]
fn drain_mta_expands_to_a_quoted_command_and_accept_mta_as_its_rollback() {
    let e = expand(&yaml(
        r#"{ action: drain_mta, postfix: "{{ home }}/postfix", map: "{{ home }}/drain.cidr", wait: "{{ w }}" }"#,
    ))
    .unwrap();
    let vars = serde_json::json!({ "home": "/srv/it's mail", "w": 5 });
    let run = render(&e.run, vars.clone());
    assert!(
        run.contains(r"postfix='/srv/it'\''s mail/postfix'"),
        "{run}"
    );
    assert!(run.contains("map='/srv/it'\\''s mail/drain.cidr'"), "{run}");
    assert!(run.contains("wait=5\n"), "{run}");
    assert!(run.contains("queue_bound=0\n"), "{run}");
    assert!(run.contains("pony_action=drain_mta"), "{run}");
    assert!(run.contains("DEFER"), "{run}");
    let rollback = render(e.rollback.as_deref().unwrap(), vars);
    assert!(rollback.contains("pony_action=accept_mta"), "{rollback}");
    assert!(!rollback.contains("DEFER"), "{rollback}");
    // The plan checks the arguments, not pony's own text.
    let fields: Vec<&str> = e.checks.iter().map(|(f, _)| *f).collect();
    assert!(fields.contains(&"mail.postfix") && fields.contains(&"mail.wait"));
    // Both are valid sh.
    assert!(sh(&format!("sh -n <<'EOF'\n{run}\nEOF"), &[]).0);
}

#[test]
fn a_list_runs_in_order_and_rolls_back_in_reverse_with_only_natural_rollbacks() {
    let e = expand(&yaml(
        r#"
- { action: drain_imap, dovecot: /d.conf, deny: /deny, users: "a b" }
- { action: lmtp_out, address: 10.0.0.1 }
- { action: accept_mta, postfix: /p, map: /m }
"#,
    ))
    .unwrap();
    let run = render(&e.run, serde_json::json!({}));
    let order: Vec<usize> = ["=drain_imap", "=lmtp_out", "=accept_mta"]
        .iter()
        .map(|a| run.find(a).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{run}");
    let rollback = render(e.rollback.as_deref().unwrap(), serde_json::json!({}));
    let lmtp_in = rollback.find("=lmtp_in").unwrap();
    let accept_imap = rollback.find("=accept_imap").unwrap();
    assert!(lmtp_in < accept_imap, "{rollback}");
    assert!(!rollback.contains("=accept_mta"), "{rollback}");
    // No action rolls back `accept_*` or `lmtp_in`.
    let e = expand(&yaml("{ action: lmtp_in, address: 10.0.0.1 }")).unwrap();
    assert!(e.rollback.is_none());
}

#[test]
fn when_guards_the_action_and_its_argument_checks() {
    let e = expand(&yaml(
        r#"{ action: lmtp_out, when: "'store' in host.roles", address: "{{ store_address }}" }"#,
    ))
    .unwrap();
    // Off: the undefined argument is never rendered.
    let off = render(
        &e.run,
        serde_json::json!({ "host": { "roles": ["mta"], "name": "mx-1" } }),
    );
    assert!(off.contains("echo 'mail lmtp_out: not on 'mx-1"), "{off}");
    assert!(!off.contains("pony_action"), "{off}");
    let (ok, said) = sh(&off, &[]);
    assert!(ok, "{said}");
    assert!(said.contains("not on mx-1 (its when is false)"), "{said}");
    for (_, check) in &e.checks {
        render(check, serde_json::json!({ "host": { "roles": ["mta"] } }));
    }
    let on = render(
        &e.run,
        serde_json::json!({ "host": { "roles": ["store"], "name": "st-1" }, "store_address": "10.1.0.5" }),
    );
    assert!(on.contains("address=10.1.0.5"), "{on}");
}

#[test]
fn a_bad_templated_value_fails_the_action_with_a_clear_message() {
    let e = expand(&yaml(
        r#"{ action: lmtp_out, address: "{{ a }}", wait: "{{ w }}" }"#,
    ))
    .unwrap();
    let run = render(&e.run, serde_json::json!({ "a": "10.0.0.1", "w": "soon" }));
    let (ok, said) = sh(&run, &[]);
    assert!(!ok);
    assert!(
        said.contains("mail lmtp_out: wait must be a duration like 30, 30s, 5m or 1h, not 'soon'"),
        "{said}"
    );
    let run = render(&e.run, serde_json::json!({ "a": "mx.example", "w": "1" }));
    let (ok, said) = sh(&run, &[]);
    assert!(!ok);
    assert!(
        said.contains("address must be the store's IPv4 address"),
        "{said}"
    );
}

#[test]
fn a_rollback_tries_every_action_and_fails_if_one_failed() {
    // accept_imap of an unwritable deny file fails; lmtp_in's address is bad: both run.
    let e = expand(&yaml(
        r#"
- { action: drain_imap, dovecot: /nonexistent.conf, deny: /nonexistent/dir/deny, users: a }
- { action: lmtp_out, address: "not-an-address" }
"#,
    ))
    .unwrap();
    let rollback = render(e.rollback.as_deref().unwrap(), serde_json::json!({}));
    let (ok, said) = sh(&rollback, &[]);
    assert!(!ok, "{said}");
    assert!(said.contains("mail lmtp_in: address must be"), "{said}");
    assert!(said.contains("/nonexistent/dir/deny"), "{said}");
}

#[test]
fn unknown_actions_and_arguments_and_missing_ones_are_named_with_the_fix() {
    let said = messages("{ action: drain_mt, postfix: /p }");
    assert!(said[0].contains("unknown action `drain_mt`"), "{said:?}");
    assert!(said[0].contains("did you mean `drain_mta`?"), "{said:?}");

    let said = messages("{ action: drain_mta, postfix: /p, mpa: /m }");
    assert!(
        said.iter()
            .any(|s| s.contains("drain_mta: unknown argument `mpa`")
                && s.contains("did you mean `map`?")),
        "{said:?}"
    );
    assert!(
        said.iter()
            .any(|s| s.contains("drain_mta: missing argument `map`")),
        "{said:?}"
    );

    let said = messages("{ postfix: /p }");
    assert!(said[0].contains("no `action`"), "{said:?}");

    let said = messages("{ action: reload }");
    assert!(
        said[0].contains("reload: neither `postfix` nor `dovecot`"),
        "{said:?}"
    );

    let said = messages("[]");
    assert!(said[0].contains("non-empty list"), "{said:?}");

    let said = messages(
        "[ { action: lmtp_out, address: 10.0.0.1, wait: soon }, { action: drain_mta, postfix: /p, map: /m, reply: 5.0.0 go away, queue_bound: many } ]",
    );
    assert!(
        said.iter()
            .any(|s| s.starts_with("mail (item 1): lmtp_out: `wait` is `soon`, not a duration")),
        "{said:?}"
    );
    assert!(
        said.iter().any(|s| s
            .contains("(item 2): drain_mta: `reply` is `5.0.0 go away`, not a temporary status")),
        "{said:?}"
    );
    assert!(
        said.iter()
            .any(|s| s.contains("`queue_bound` is `many`, not a whole number")),
        "{said:?}"
    );
}

#[test]
fn reload_rolls_back_by_pointing_the_link_at_previous_and_reloading() {
    let e = expand(&yaml(
        r#"{ action: reload, dovecot: /d.conf, link: /srv/current, previous: "{{ previous }}" }"#,
    ))
    .unwrap();
    let run = render(&e.run, serde_json::json!({ "previous": "releases/v1" }));
    assert!(!run.contains("ln -sfn"), "{run}");
    let rollback = render(
        e.rollback.as_deref().unwrap(),
        serde_json::json!({ "previous": "releases/v1" }),
    );
    let relink = rollback.find("ln -sfn").unwrap();
    let check = rollback.find("doveconf -c \"$dovecot\" -n").unwrap();
    assert!(relink < check, "{rollback}");
}

#[test]
fn the_config_test_refuses_before_anything_is_reloaded() {
    // A dovecot config that does not exist: the check says so and exits non-zero.
    let e = expand(&yaml(
        "{ action: check, dovecot: /nonexistent/dovecot.conf }",
    ))
    .unwrap();
    let (ok, said) = sh(&render(&e.run, serde_json::json!({})), &[]);
    assert!(!ok);
    assert!(
        said.contains("mail check: no Dovecot config at /nonexistent/dovecot.conf"),
        "{said}"
    );
}
