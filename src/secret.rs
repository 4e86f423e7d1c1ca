//! Secrets: values of vars whose name ends in `_secret`, `_password` or `_token`, and of
//! `--secret-var`, are shown as `***` wherever pony prints or journals text. A
//! `--secret-var` value can come from a file or an environment variable
//! ([`read_source`]), so that it is not on pony's own command line either.
//!
//! Nor does a secret reach the processes pony starts through their environment:
//! [`notifier_env`] and [`local_host_env`] are what a notifier and a `connection: local`
//! host's commands get instead of pony's whole environment.

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
        note_secret_env(name);
        return std::env::var(name).map_err(|e| SourceError {
            problem: format!("environment variable `{name}`: {e}"),
            fix: format!(
                "export {name} before running pony, or pass the value another way (`KEY=@FILE`)"
            ),
        });
    }
    Ok(given.to_string())
}

/// Variables that `--secret-var KEY=env:VAR` read in this process: their values are
/// secrets, so no child of pony gets them. One set per process, since the children are
/// started far below the command line (a host's transport, a notifier's thread).
static SECRET_ENV_NAMES: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Marks an environment variable as holding a secret (see [`SECRET_ENV_NAMES`]).
pub fn note_secret_env(name: &str) {
    SECRET_ENV_NAMES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(name.to_string());
}

/// The variables pony itself reads (`PONY_STATE`, `PONY_STATE_DIR`, …, as the command
/// line declares them, and `PONY_PROGRESS`): pony's settings, not a child's, and
/// `PONY_STATE` may hold the database's password.
fn own_settings() -> &'static std::collections::BTreeSet<String> {
    static NAMES: std::sync::OnceLock<std::collections::BTreeSet<String>> =
        std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        fn collect(command: &clap::Command, names: &mut std::collections::BTreeSet<String>) {
            for arg in command.get_arguments() {
                if let Some(env) = arg.get_env() {
                    names.insert(env.to_string_lossy().into_owned());
                }
            }
            for sub in command.get_subcommands() {
                collect(sub, names);
            }
        }
        let mut names = std::collections::BTreeSet::new();
        collect(
            &<crate::cli::Cli as clap::CommandFactory>::command(),
            &mut names,
        );
        names.insert(crate::report::PROGRESS_ENV.to_string());
        names
    })
}

/// Whether no child of pony may see this variable: one of pony's own settings, libpq's
/// `PGPASSWORD`, a variable a `--secret-var …=env:VAR` read, or one whose name marks a
/// secret as a var's does (ends in `_PASSWORD`, `_TOKEN` or `_SECRET`, in any case).
pub fn is_withheld_env(name: &str) -> bool {
    name == "PGPASSWORD"
        || is_secret_name(&name.to_ascii_lowercase())
        || own_settings().contains(name)
        || SECRET_ENV_NAMES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name)
}

/// What a `connection: local` host's commands see, as the login environment an SSH
/// host would give them: `PATH`, `HOME`, `USER`, `LOGNAME`, `SHELL`, `LANG`, `LC_*`,
/// `TZ`, `TERM`, `TMPDIR` and `SSH_AUTH_SOCK`, as pony has them; nothing else (and none
/// of these when [`is_withheld_env`]).
pub fn local_host_env() -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    const PASSED: &[&str] = &[
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "TZ",
        "TERM",
        "TMPDIR",
        "SSH_AUTH_SOCK",
    ];
    child_env(|name| PASSED.contains(&name) || name.starts_with("LC_"))
}

/// What a notifier sees: pony's environment (a notifier is the operator's own command,
/// and reads its webhook or address from there) without what [`is_withheld_env`] names.
/// pony adds `PONY_RUN_ID`.
pub fn notifier_env() -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    child_env(|_| true)
}

fn child_env(passed: impl Fn(&str) -> bool) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    std::env::vars_os()
        .filter(|(name, _)| {
            name.to_str()
                .is_some_and(|name| passed(name) && !is_withheld_env(name))
        })
        .collect()
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

    #[test]
    fn children_get_no_secret_and_none_of_ponys_settings() {
        for withheld in [
            "PONY_STATE",
            "PONY_STATE_DIR",
            "PONY_PROGRESS",
            "PONY_INVENTORY",
            "PGPASSWORD",
            "DB_PASSWORD",
            "GITHUB_TOKEN",
            "api_secret",
        ] {
            assert!(is_withheld_env(withheld), "{withheld}");
        }
        note_secret_env("CHILD_ENV_TEST_SOURCE");
        assert!(is_withheld_env("CHILD_ENV_TEST_SOURCE"));
        // A notifier's own settings (the examples' webhook and address) pass.
        for passed in [
            "PATH",
            "PONY_WEBHOOK_URL",
            "PONY_MAIL_TO",
            "TOKENS",
            "PASSWORD_FILE",
        ] {
            assert!(!is_withheld_env(passed), "{passed}");
        }
    }
}
