//! Templates: every string a step runs, uploads or checks is a minijinja template rendered
//! per target with strict undefined, the merged vars, captures and built-ins, and a `quote`
//! filter that shell-quotes a value. Validation renders templates too (rather than listing
//! their names) so that `default`, `is defined` and untaken branches are judged as they run.

use minijinja::value::{Object, Value};
use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// Variables every target has without declaring them.
pub const BUILTINS: [&str; 4] = ["host", "run", "playbook", "wave"];

/// The environment all of pony's templates are rendered in (built once).
pub fn environment() -> &'static Environment<'static> {
    static ENVIRONMENT: std::sync::LazyLock<Environment<'static>> =
        std::sync::LazyLock::new(build_environment);
    &ENVIRONMENT
}

fn build_environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env.add_filter("quote", |value: Value| {
        crate::shell::quote(&value_text(&value))
    });
    env
}

fn value_text(value: &Value) -> String {
    match value.as_str() {
        Some(text) => text.to_string(),
        None => value.to_string(),
    }
}

/// The top-level variables a template reads, or its syntax error.
pub fn variables(
    env: &Environment<'_>,
    source: &str,
) -> Result<BTreeSet<String>, minijinja::Error> {
    let template = env.template_from_str(source)?;
    Ok(template.undeclared_variables(false).into_iter().collect())
}

/// What a var whose value is not known at check time (a capture) is rendered as.
pub const STAND_IN: &str = "captured";

/// The variables that rendering `source` really needs but `known` lacks: printed, tested
/// with `if`, iterated or concatenated, not merely guarded by `is defined` or `default`,
/// nor sitting in a branch that `known`'s values never take. A syntax error yields nothing
/// (it is reported on its own), and so does any other runtime error: a value the check only
/// stands in for (a capture) could make a filter fail that works on the real value.
pub fn undefined_in_use(
    env: &Environment<'_>,
    source: &str,
    known: &Arc<BTreeMap<String, Value>>,
) -> BTreeSet<String> {
    let Ok(template) = env.template_from_str(source) else {
        return BTreeSet::new();
    };
    let globals: BTreeSet<String> = env.globals().map(|(name, _)| name.to_string()).collect();
    // Rendering stops at the first undefined value in use; that name is stood in for and
    // the template rendered again, until it renders.
    let render = |stand_ins: &BTreeSet<String>| -> Result<(), Vec<String>> {
        let recorder = Arc::new(Recorder {
            known: known.clone(),
            stand_ins: stand_ins.clone(),
            misses: Mutex::new(Vec::new()),
        });
        match template.render(Value::from_dyn_object(recorder.clone())) {
            Err(e) if e.kind() == ErrorKind::UndefinedError => {
                let misses = recorder.misses.lock().expect("recorder lock").clone();
                Err(misses
                    .into_iter()
                    .filter(|name| !globals.contains(name))
                    .collect())
            }
            _ => Ok(()),
        }
    };
    let mut stand_ins = BTreeSet::new();
    let mut rounds = 0;
    while let Err(misses) = render(&stand_ins) {
        rounds += 1;
        // The undefined value in use is usually the last one looked up; when it is not
        // (`a ~ b | default('')`), the extra name is taken out again below.
        match misses.last() {
            Some(name) if rounds <= 64 => {
                stand_ins.insert(name.clone());
            }
            // An undefined attribute of a known value (`host.nmae`): reported elsewhere.
            _ => break,
        }
    }
    for name in stand_ins.clone() {
        let mut without = stand_ins.clone();
        without.remove(&name);
        if render(&without).is_ok() {
            stand_ins = without;
        }
    }
    stand_ins
}

/// A template context that answers from `known` and the stand-ins and remembers which other
/// names were looked up, in order.
#[derive(Debug)]
struct Recorder {
    known: Arc<BTreeMap<String, Value>>,
    stand_ins: BTreeSet<String>,
    misses: Mutex<Vec<String>>,
}

impl Object for Recorder {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let name = key.as_str()?;
        if let Some(value) = self.known.get(name) {
            return Some(value.clone());
        }
        if self.stand_ins.contains(name) {
            return Some(Value::from(STAND_IN));
        }
        self.misses
            .lock()
            .expect("recorder lock")
            .push(name.to_string());
        None
    }
}

/// Characters a POSIX shell gives a meaning to inside an unquoted word: a value holding one
/// of them changes the command when it is rendered without `| quote`.
pub fn shell_metacharacters(value: &str) -> Vec<char> {
    let mut found: Vec<char> = value
        .chars()
        .filter(|c| c.is_whitespace() || r#";&|<>()$`\"'*?[]"#.contains(*c))
        .collect();
    found.sort_unstable();
    found.dedup();
    found
}

/// Whether rendering `source` with `known` puts `var`'s value (`value`) into the command
/// where the shell would interpret it: outside quotes, or inside `'…'` or `"…"` that the
/// value itself can break out of. `{{ var | quote }}` never counts.
pub fn renders_unquoted(
    source: &str,
    known: &BTreeMap<String, Value>,
    var: &str,
    value: &str,
) -> bool {
    // The value is replaced by a marker, and `quote` by a constant, so that only the
    // unquoted uses leave a marker in the output.
    const MARKER: &str = "\u{1}pony-var\u{1}";
    let mut context = known.clone();
    context.insert(var.to_string(), Value::from(MARKER));
    let Ok(output) = lint_environment().render_str(source, Value::from(context)) else {
        return false;
    };
    let breaks_single = value.contains('\'');
    let breaks_double = value.chars().any(|c| "$`\\\"".contains(c));
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (at, c) in output.char_indices() {
        if output[at..].starts_with(MARKER) {
            let safe = match quote {
                Some('\'') => !breaks_single,
                Some(_) => !breaks_double,
                None => false,
            };
            if !safe {
                return true;
            }
        }
        if escaped {
            escaped = false;
            continue;
        }
        match (quote, c) {
            (Some('\''), '\'') => quote = None,
            (Some('\''), _) => {}
            (_, '\\') => escaped = true,
            (None, '\'' | '"') => quote = Some(c),
            (Some('"'), '"') => quote = None,
            _ => {}
        }
    }
    false
}

/// pony's environment with `quote` rendering a constant, for [`renders_unquoted`].
fn lint_environment() -> &'static Environment<'static> {
    static ENVIRONMENT: std::sync::LazyLock<Environment<'static>> =
        std::sync::LazyLock::new(|| {
            let mut env = build_environment();
            env.add_filter("quote", |_: Value| "''".to_string());
            env
        });
    &ENVIRONMENT
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shell::quote as shell_quote;

    #[test]
    fn quote_filter_and_strict_undefined() {
        let env = environment();
        let out = env
            .render_str(
                "echo {{ msg | quote }}",
                minijinja::context! { msg => "it's here" },
            )
            .unwrap();
        assert_eq!(out, r"echo 'it'\''s here'");
        assert_eq!(shell_quote("/srv/mail"), "/srv/mail");
        assert_eq!(shell_quote(""), "''");
        assert!(env
            .render_str("{{ missing }}", minijinja::context! {})
            .is_err());
    }

    #[test]
    fn finds_variables() {
        let env = environment();
        let vars = variables(
            env,
            "{{ mail_root }}/{{ host.name }} {% for x in items %}{{ x }}{% endfor %}",
        )
        .unwrap();
        assert_eq!(
            vars.into_iter().collect::<Vec<_>>(),
            vec!["host", "items", "mail_root"]
        );
        assert!(variables(env, "{{ unclosed").is_err());
    }

    fn known(pairs: &[(&str, &str)]) -> Arc<BTreeMap<String, Value>> {
        Arc::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Value::from(*v)))
                .collect(),
        )
    }

    fn missing(source: &str, pairs: &[(&str, &str)]) -> Vec<String> {
        undefined_in_use(environment(), source, &known(pairs))
            .into_iter()
            .collect()
    }

    #[test]
    fn only_values_really_used_are_needed() {
        assert!(missing(r#"{{ x | default("a") }}"#, &[]).is_empty());
        assert!(missing("{% if x is defined %}{{ x }}{% endif %}", &[]).is_empty());
        assert!(missing(
            "{% if mode == 'old' %}{{ x }}{% endif %}",
            &[("mode", "new")]
        )
        .is_empty());
        assert_eq!(
            missing(
                "{% if mode == 'old' %}{{ x }}{% endif %}",
                &[("mode", "old")]
            ),
            ["x"]
        );
        assert_eq!(missing("{{ verison }}", &[("version", "1")]), ["verison"]);
        assert_eq!(
            missing("{{ a }} {{ b | default('') }} {{ c }}", &[]),
            ["a", "c"]
        );
        // The undefined value in use is not the last one looked up.
        assert_eq!(missing("{{ a ~ (b | default('')) }}", &[]), ["a"]);
        assert_eq!(
            missing("{% for i in items %}{{ i }}{% endfor %}", &[]),
            ["items"]
        );
        assert_eq!(missing("{% if flag %}x{% endif %}", &[]), ["flag"]);
        assert!(missing("{% for i in range(3) %}{{ i }}{% endfor %}", &[]).is_empty());
        assert!(missing("{% set y = 1 %}{{ y }}", &[]).is_empty());
        assert!(missing("{{ unclosed", &[]).is_empty());
    }

    #[test]
    fn finds_values_the_shell_would_interpret() {
        assert_eq!(shell_metacharacters("2.0; rm -rf /"), vec![' ', ';']);
        assert!(shell_metacharacters("2.4.1-rc1/x").is_empty());
        let bad = "a b;c";
        let ctx = |_: ()| BTreeMap::<String, Value>::new();
        assert!(renders_unquoted("echo {{ v }}", &ctx(()), "v", bad));
        assert!(renders_unquoted(
            "echo {{ v | default('x') }}",
            &ctx(()),
            "v",
            bad
        ));
        assert!(!renders_unquoted(
            "echo {{ v | quote }}",
            &ctx(()),
            "v",
            bad
        ));
        assert!(!renders_unquoted("echo '{{ v }}'", &ctx(()), "v", bad));
        assert!(!renders_unquoted(r#"echo "{{ v }}""#, &ctx(()), "v", bad));
        assert!(renders_unquoted(
            r#"echo "{{ v }}""#,
            &ctx(()),
            "v",
            "$(id)"
        ));
        assert!(renders_unquoted("echo '{{ v }}'", &ctx(()), "v", "it's"));
        assert!(renders_unquoted("echo 'a' {{ v }}", &ctx(()), "v", bad));
        assert!(!renders_unquoted(
            "echo {{ other }}",
            &known(&[("other", "o")]),
            "v",
            bad
        ));
        assert!(!renders_unquoted(
            "{% if false %}{{ v }}{% endif %}",
            &ctx(()),
            "v",
            bad
        ));
    }
}
