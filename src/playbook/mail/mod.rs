//! Mail built-ins: the steps every Postfix + Dovecot rollout repeats, as actions pony
//! implements once and tests against the real lab instead of shell each operator
//! rewrites (and re-creates the defects of: a hidden reload error, a store reloaded
//! under LMTP delivery).
//!
//! A step says `mail: { action: drain_mta, postfix: …, map: … }` (or a list of such
//! actions, run in order). The loader checks the action and its arguments (unknown or
//! missing ones are validation errors, with "did you mean") and expands the step into a
//! plain shell command and, where the action has one, its natural rollback
//! (`drain_mta` ↔ `accept_mta`, `drain_imap` ↔ `accept_imap`, `lmtp_out` ↔ `lmtp_in`,
//! `reload` → point `link` back at `previous` and reload). Being plain commands, they go
//! through the normal task path: journal, retries, timeouts, rollback, `dead_man` and
//! `--dry-run` treat them like any `run:`.
//!
//! Arguments are templates: each is rendered per target, then shell-quoted
//! (`crate::shell::quote` via the `quote` filter) into a variable the action's body
//! (`scripts`) reads; an action with `when:` (a template condition) runs only where it
//! holds. Each action's arguments, guarantees and failure modes: docs/playbook.md
//! ("`mail`: mail built-ins").

mod scripts;

use serde_yaml::Value;

/// How an argument's literal value is checked at load time (a templated one is checked
/// by the action's body when it runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    /// Seconds, or `30s`, `5m`, `1h`.
    Duration,
    Count,
    /// A temporary SMTP status and text, `4.x.x …`.
    Reply,
}

#[derive(Debug)]
struct Arg {
    name: &'static str,
    /// The field name messages use (`mail.postfix`).
    field: &'static str,
    kind: Kind,
    /// `None`: required.
    default: Option<&'static str>,
}

const fn required(name: &'static str, field: &'static str) -> Arg {
    Arg {
        name,
        field,
        kind: Kind::Text,
        default: None,
    }
}

const fn optional(
    name: &'static str,
    field: &'static str,
    kind: Kind,
    default: &'static str,
) -> Arg {
    Arg {
        name,
        field,
        kind,
        default: Some(default),
    }
}

const POSTFIX: Arg = required("postfix", "mail.postfix");
const MAP: Arg = required("map", "mail.map");
const NEXT: Arg = optional("next", "mail.next", Kind::Text, "");
const DOVECOT: Arg = required("dovecot", "mail.dovecot");
const DENY: Arg = required("deny", "mail.deny");
const ADDRESS: Arg = required("address", "mail.address");
const PORT: Arg = optional("port", "mail.port", Kind::Count, "24");
const LMTP_WAIT: Arg = optional("wait", "mail.wait", Kind::Duration, "30s");
const MAYBE_POSTFIX: Arg = optional("postfix", "mail.postfix", Kind::Text, "");
const MAYBE_DOVECOT: Arg = optional("dovecot", "mail.dovecot", Kind::Text, "");

/// One action: its arguments, body and natural rollback.
#[derive(Debug)]
struct Spec {
    name: &'static str,
    args: &'static [Arg],
    body: &'static [&'static str],
    /// The action that undoes this one, given the same arguments.
    rollback: Option<&'static str>,
}

const SPECS: &[Spec] = &[
    Spec {
        name: "drain_mta",
        args: &[
            POSTFIX,
            MAP,
            NEXT,
            optional("reply", "mail.reply", Kind::Reply, "4.7.1 draining for maintenance, try another MX"),
            optional("queue_bound", "mail.queue_bound", Kind::Count, "0"),
            optional("wait", "mail.wait", Kind::Duration, "60s"),
        ],
        body: &[scripts::DRAIN_MTA],
        rollback: Some("accept_mta"),
    },
    Spec {
        name: "accept_mta",
        args: &[POSTFIX, MAP, NEXT],
        body: &[scripts::ACCEPT_MTA],
        rollback: None,
    },
    Spec {
        name: "drain_imap",
        args: &[
            DOVECOT,
            DENY,
            required("users", "mail.users"),
            optional("wait", "mail.wait", Kind::Duration, "20s"),
        ],
        body: &[scripts::DRAIN_IMAP],
        rollback: Some("accept_imap"),
    },
    Spec {
        name: "accept_imap",
        args: &[DENY],
        body: &[scripts::ACCEPT_IMAP],
        rollback: None,
    },
    Spec {
        name: "lmtp_out",
        args: &[ADDRESS, PORT, LMTP_WAIT],
        body: &[scripts::LMTP_OUT],
        rollback: Some("lmtp_in"),
    },
    Spec {
        name: "lmtp_in",
        args: &[ADDRESS, PORT],
        body: &[scripts::LMTP_IN],
        rollback: None,
    },
    Spec {
        name: "check",
        args: &[MAYBE_POSTFIX, MAYBE_DOVECOT],
        body: &[scripts::CHECK, "echo \"mail check: the config passed ${postfix:+postfix check }${dovecot:+doveconf -n}\"\n"],
        rollback: None,
    },
    Spec {
        name: "reload",
        args: &[
            MAYBE_POSTFIX,
            MAYBE_DOVECOT,
            optional("lmtp", "mail.lmtp", Kind::Text, ""),
            optional("lmtp_port", "mail.lmtp_port", Kind::Count, "24"),
            LMTP_WAIT,
            optional("link", "mail.link", Kind::Text, ""),
            optional("previous", "mail.previous", Kind::Text, ""),
        ],
        body: &[scripts::CHECK, scripts::RELOAD],
        rollback: Some("relink_reload"),
    },
];

/// `reload`'s rollback: not an action a step names, only a rollback.
const RELINK_RELOAD: Spec = Spec {
    name: "reload",
    args: &[],
    body: &[scripts::RELINK, scripts::CHECK, scripts::RELOAD],
    rollback: None,
};

fn spec(name: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.name == name)
}

/// The action names, for messages.
pub fn action_names() -> Vec<&'static str> {
    SPECS.iter().map(|s| s.name).collect()
}

/// One action of a step, checked: its arguments' templates (given or defaulted).
#[derive(Debug, Clone)]
struct Call {
    spec: &'static Spec,
    args: Vec<(&'static Arg, String)>,
    when: Option<String>,
}

/// A `mail:` step expanded: its command, its natural rollback, and the templates the
/// plan checks per target (each argument, under the action's `when`).
#[derive(Debug, Clone)]
pub struct Expanded {
    pub run: String,
    pub rollback: Option<String>,
    pub checks: Vec<(&'static str, String)>,
}

/// A problem with a `mail:` value: what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub message: String,
    pub hint: String,
}

fn problem(message: impl Into<String>, hint: impl Into<String>) -> Problem {
    Problem {
        message: message.into(),
        hint: hint.into(),
    }
}

/// Checks a step's `mail:` value (one action, or a list run in order) and expands it.
pub fn expand(value: &Value) -> Result<Expanded, Vec<Problem>> {
    let items: Vec<&Value> = match value {
        Value::Sequence(items) if !items.is_empty() => items.iter().collect(),
        Value::Mapping(_) => vec![value],
        _ => {
            return Err(vec![problem(
                "`mail` must be an action (`{ action: NAME, ARG: VALUE, … }`) or a non-empty list of them",
                format!("e.g. `mail: {{ action: drain_mta, postfix: /etc/postfix, map: /etc/postfix/drain.cidr }}`; actions: {}", action_names().join(", ")),
            )])
        }
    };
    let mut problems = Vec::new();
    let calls: Vec<Call> = items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| {
            let at = if items.len() > 1 {
                format!(" (item {})", i + 1)
            } else {
                String::new()
            };
            call(item)
                .map_err(|found| {
                    problems.extend(found.into_iter().map(|mut p| {
                        p.message = format!("mail{at}: {}", p.message);
                        p
                    }))
                })
                .ok()
        })
        .collect();
    if !problems.is_empty() {
        return Err(problems);
    }
    let run = script(&calls, false);
    let undo: Vec<Call> = calls
        .iter()
        .rev()
        .filter_map(|c| {
            let name = c.spec.rollback?;
            let spec = if name == "relink_reload" {
                &RELINK_RELOAD
            } else {
                spec(name).expect("a known rollback")
            };
            Some(Call {
                spec,
                args: c.args.clone(),
                when: c.when.clone(),
            })
        })
        .collect();
    let rollback = (!undo.is_empty()).then(|| script(&undo, true));
    let checks = calls
        .iter()
        .flat_map(|c| {
            let guarded = |text: &str| match &c.when {
                Some(when) => format!("{{% if {when} %}}{text}{{% endif %}}"),
                None => text.to_string(),
            };
            let when = c
                .when
                .iter()
                .map(|w| ("mail.when", format!("{{% if {w} %}}{{% endif %}}")));
            when.chain(
                c.args
                    .iter()
                    .map(move |(arg, text)| (arg.field, guarded(text))),
            )
            .collect::<Vec<_>>()
        })
        .collect();
    Ok(Expanded {
        run,
        rollback,
        checks,
    })
}

/// One `{ action: …, … }` checked against its spec.
fn call(item: &Value) -> Result<Call, Vec<Problem>> {
    let Value::Mapping(map) = item else {
        return Err(vec![problem(
            "each entry must be `{ action: NAME, ARG: VALUE, … }`",
            format!("actions: {}", action_names().join(", ")),
        )]);
    };
    let name = match map.get("action") {
        Some(Value::String(name)) => name.as_str(),
        _ => {
            return Err(vec![problem(
                "no `action`",
                format!("add `action: NAME`, one of {}", action_names().join(", ")),
            )])
        }
    };
    let Some(spec) = spec(name) else {
        let hint = match crate::diag::closest(name, action_names()) {
            Some(best) => format!(
                "did you mean `{best}`? (actions: {})",
                action_names().join(", ")
            ),
            None => format!("actions are: {}", action_names().join(", ")),
        };
        return Err(vec![problem(format!("unknown action `{name}`"), hint)]);
    };
    let mut problems = Vec::new();
    let known: Vec<&str> = spec
        .args
        .iter()
        .map(|a| a.name)
        .chain(["action", "when"])
        .collect();
    let mut when = None;
    let mut given: Vec<(&str, String)> = Vec::new();
    for (key, value) in map {
        let key = key.as_str().unwrap_or_default();
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                problems.push(problem(
                    format!("{name}: `{key}` must be a string or a number"),
                    "write one value (a template is fine: \"{{ mail_home }}/…\")",
                ));
                continue;
            }
        };
        match key {
            "action" => {}
            "when" => when = Some(text),
            _ if known.contains(&key) => given.push((key, text)),
            _ => {
                let hint = match crate::diag::closest(key, known.iter().copied()) {
                    Some(best) => {
                        format!("did you mean `{best}`? ({name} takes: {})", arguments(spec))
                    }
                    None => format!("{name} takes: {}", arguments(spec)),
                };
                problems.push(problem(format!("{name}: unknown argument `{key}`"), hint));
            }
        }
    }
    let mut args = Vec::new();
    for arg in spec.args {
        let value = given
            .iter()
            .find(|(k, _)| *k == arg.name)
            .map(|(_, v)| v.clone());
        match (value, arg.default) {
            (Some(v), _) => {
                if let Some(p) = literal_problem(name, arg, &v) {
                    problems.push(p);
                }
                args.push((arg, v));
            }
            (None, Some(default)) => args.push((arg, default.to_string())),
            (None, None) => problems.push(problem(
                format!("{name}: missing argument `{}`", arg.name),
                format!("add `{}: …` ({name} needs: {})", arg.name, needed(spec)),
            )),
        }
    }
    if matches!(name, "check" | "reload")
        && !given
            .iter()
            .any(|(k, _)| matches!(*k, "postfix" | "dovecot"))
    {
        problems.push(problem(
            format!("{name}: neither `postfix` nor `dovecot`"),
            "give Postfix's config directory (`postfix:`), Dovecot's config file (`dovecot:`) or both",
        ));
    }
    if problems.is_empty() {
        Ok(Call { spec, args, when })
    } else {
        Err(problems)
    }
}

fn arguments(spec: &Spec) -> String {
    spec.args
        .iter()
        .map(|a| a.name)
        .chain(["when"])
        .collect::<Vec<_>>()
        .join(", ")
}

fn needed(spec: &Spec) -> String {
    let needed: Vec<&str> = spec
        .args
        .iter()
        .filter(|a| a.default.is_none())
        .map(|a| a.name)
        .collect();
    needed.join(", ")
}

/// A literal (untemplated) value that cannot be right.
fn literal_problem(action: &str, arg: &Arg, value: &str) -> Option<Problem> {
    if value.contains("{{") || value.contains("{%") {
        return None;
    }
    let bad = |what: &str| {
        Some(problem(
            format!("{action}: `{}` is `{value}`, not {what}", arg.name),
            format!("e.g. `{}: {}`", arg.name, arg.default.unwrap_or("…")),
        ))
    };
    match arg.kind {
        Kind::Text => None,
        Kind::Count if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) => {
            bad("a whole number")
        }
        Kind::Duration => {
            let digits = value.strip_suffix(['s', 'm', 'h']).unwrap_or(value);
            (digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| bad("a duration (`30`, `30s`, `5m`, `1h`)"))
                .flatten()
        }
        Kind::Reply if !value.starts_with("4.") || value.contains('\n') => {
            bad("a temporary status and text on one line (`4.7.1 …`)")
        }
        _ => None,
    }
}

/// The shell command of calls run in order (`rollback`: every call is tried, the
/// command fails if one did).
fn script(calls: &[Call], rollback: bool) -> String {
    let mut out = String::from("(\n");
    out.push_str(if rollback {
        "pony_failed=0\n"
    } else {
        "set -e\n"
    });
    for (i, call) in calls.iter().enumerate() {
        if let Some(when) = &call.when {
            out.push_str(&format!("{{% if {when} %}}\n"));
        }
        for (arg, text) in &call.args {
            out.push_str(&format!(
                "{{% set pony_m{i}_{} %}}{text}{{% endset %}}",
                arg.name
            ));
        }
        out.push_str(if rollback {
            "\nset +e\n(\nset -eu\n"
        } else {
            "\n(\nset -eu\n"
        });
        out.push_str(&format!("pony_action={}\n", call.spec.name));
        for (arg, _) in &call.args {
            out.push_str(&format!(
                "{name}={{{{ pony_m{i}_{name} | quote }}}}\n",
                name = arg.name
            ));
        }
        out.push_str(scripts::PRELUDE);
        for body in call.spec.body {
            out.push_str(body);
        }
        out.push_str(")\n");
        if rollback {
            out.push_str("[ $? -eq 0 ] || pony_failed=1\n");
        }
        if call.when.is_some() {
            out.push_str(&format!(
                "{{% else %}}\necho 'mail {}: not on '{{{{ host.name | quote }}}}' (its when is false)'\n{{% endif %}}\n",
                call.spec.name
            ));
        }
    }
    if rollback {
        out.push_str("[ \"$pony_failed\" -eq 0 ]\n");
    }
    out.push_str(")\n");
    out
}

#[cfg(test)]
mod tests;
