//! Templates: every string a step runs, uploads or checks is a minijinja template rendered
//! per target with strict undefined, the merged vars, captures and built-ins, and a `quote`
//! filter that shell-quotes a value.

use minijinja::{Environment, UndefinedBehavior, Value};
use std::collections::BTreeSet;

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
    env.add_filter("quote", |value: Value| shell_quote(&value_text(&value)));
    env
}

fn value_text(value: &Value) -> String {
    match value.as_str() {
        Some(text) => text.to_string(),
        None => value.to_string(),
    }
}

/// POSIX shell single quoting: `it's` becomes `'it'\''s'`.
pub fn shell_quote(text: &str) -> String {
    if !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b))
    {
        return text.to_string();
    }
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The top-level variables a template reads, or its syntax error.
pub fn variables(
    env: &Environment<'_>,
    source: &str,
) -> Result<BTreeSet<String>, minijinja::Error> {
    let template = env.template_from_str(source)?;
    Ok(template.undeclared_variables(false).into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
