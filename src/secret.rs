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
        let mut redactor = Redactor { secrets };
        redactor.settle();
        redactor
    }

    /// Hides one more value from now on: a secret learned during the run (a `capture:`
    /// whose name marks it secret).
    /// Each line of a multi-line secret (a key, say) is hidden too, as it may be
    /// printed alone; lines shorter than four characters are not secrets of their own.
    pub fn add(&mut self, secret: String) {
        let lines: Vec<String> = secret
            .lines()
            .map(str::trim)
            .filter(|line| line.len() >= 4 && *line != secret)
            .map(str::to_string)
            .collect();
        self.secrets.push(secret);
        self.secrets.extend(lines);
        self.settle();
    }

    /// Longest first so that a secret containing another is hidden whole.
    fn settle(&mut self) {
        self.secrets.retain(|s| !s.is_empty());
        self.secrets
            .sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        self.secrets.dedup();
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

    #[test]
    fn a_secret_learned_later_is_hidden_from_then_on() {
        let mut r = Redactor::new(std::iter::empty(), ["abc".to_string()]);
        r.add("abcdef".into());
        r.add("abc".into());
        assert_eq!(r.redact("x abcdef abc"), "x *** ***");
        assert_eq!(r.secrets.len(), 2, "the same secret is kept once");
        r.add("-----BEGIN KEY-----\nMIIEvQ\nab\n-----END KEY-----".into());
        assert_eq!(
            r.redact("got MIIEvQ ab"),
            "got *** ab",
            "a line alone is hidden"
        );
    }
}
