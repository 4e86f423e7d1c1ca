//! Secrets: values of vars whose name ends in `_secret`, `_password` or `_token`, and of
//! `--secret-var`, are shown as `***` wherever pony prints or journals text.

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

#[cfg(test)]
mod tests {
    use super::*;

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
