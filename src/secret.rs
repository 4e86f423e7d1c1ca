//! Secrets: values of vars whose name ends in `_secret`, `_password` or `_token`, and of
//! `--secret-var`, are shown as `***` wherever pony prints or journals text. A
//! `--secret-var` value can come from a file or an environment variable
//! ([`read_source`]), so that it is not on pony's own command line either.

use crate::inventory::Vars;

/// Replaces every known secret value in text with `***`.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

/// Whether a var's name marks it as secret.
pub fn is_secret_name(name: &str) -> bool {
    ["_secret", "_password", "_token"]
        .iter()
        .any(|suffix| name.ends_with(suffix))
}

impl Redactor {
    /// Collects secret values from vars maps plus explicitly secret values.
    pub fn new<'a>(
        vars: impl IntoIterator<Item = &'a Vars>,
        explicit: impl IntoIterator<Item = String>,
    ) -> Self {
        let mut secrets: Vec<String> = explicit.into_iter().collect();
        for map in vars {
            for (name, value) in map {
                if is_secret_name(name) {
                    match value {
                        serde_yaml::Value::String(s) => secrets.push(s.clone()),
                        serde_yaml::Value::Number(n) => secrets.push(n.to_string()),
                        _ => {}
                    }
                }
            }
        }
        // Longest first so that a secret containing another is hidden whole.
        secrets.retain(|s| !s.is_empty());
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor { secrets }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "***");
            }
        }
        out
    }
}

/// Why a `--secret-var` source could not be read, and what to do.
#[derive(Debug)]
pub struct SourceError {
    pub problem: String,
    pub fix: String,
}

/// A `--secret-var` value as given: `@FILE` is the file's content without one trailing
/// newline (what `echo` or an editor leaves), `env:VAR` the environment variable's value;
/// anything else is the value itself.
pub fn read_source(given: &str) -> Result<String, SourceError> {
    if let Some(path) = given.strip_prefix('@') {
        let text = std::fs::read_to_string(path).map_err(|e| SourceError {
            problem: format!("cannot read `{path}`: {e}"),
            fix: "give a readable file after `@` (`KEY=@/path/to/file`)".into(),
        })?;
        let text = text.strip_suffix('\n').unwrap_or(&text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        return Ok(text.to_string());
    }
    if let Some(name) = given.strip_prefix("env:") {
        return std::env::var(name).map_err(|e| SourceError {
            problem: format!("environment variable `{name}`: {e}"),
            fix: format!(
                "export {name} before running pony, or pass the value another way (`KEY=@FILE`)"
            ),
        });
    }
    Ok(given.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_come_from_files_and_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from file\n").unwrap();
        assert_eq!(
            read_source(&format!("@{}", file.display())).unwrap(),
            "from file"
        );
        assert_eq!(read_source("plain=value").unwrap(), "plain=value");
        std::env::set_var("PONY_TEST_SECRET_SOURCE", "from env");
        assert_eq!(
            read_source("env:PONY_TEST_SECRET_SOURCE").unwrap(),
            "from env"
        );
        let missing = read_source("@/nonexistent/pony-secret").unwrap_err();
        assert!(
            missing.problem.contains("/nonexistent/pony-secret"),
            "{missing:?}"
        );
        let unset = read_source("env:PONY_TEST_SECRET_UNSET").unwrap_err();
        assert!(
            unset.problem.contains("PONY_TEST_SECRET_UNSET"),
            "{unset:?}"
        );
    }

    #[test]
    fn hides_secret_values() {
        let mut vars = Vars::new();
        vars.insert("db_password".into(), "hunter2".into());
        vars.insert("api_token".into(), "tok-123".into());
        vars.insert("version".into(), "2.4.1".into());
        let r = Redactor::new([&vars], ["s3cr3t".to_string()]);
        assert_eq!(
            r.redact("login hunter2 tok-123 s3cr3t 2.4.1"),
            "login *** *** *** 2.4.1"
        );
    }
}
