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

/// The variables pony itself reads: every `env =` of the command line, and
/// `PONY_PROGRESS` ([`crate::settings::PROGRESS_ENV`]). They are pony's settings, not a
/// child's, and `PONY_STATE` may hold the database's password. Written out rather than
/// read from the clap command, so that this low module does not import the command
/// line; a test in `cli.rs` keeps the list equal to the command line's.
pub const OWN_SETTINGS: &[&str] = &[
    "PONY_ACCEPT_NEW_HOST_KEYS",
    "PONY_APPROVAL_WAIT",
    "PONY_COLOR",
    "PONY_CONNECTIONS",
    "PONY_CONTROLLER",
    "PONY_INVENTORY",
    "PONY_JUNIT",
    "PONY_LEASE",
    "PONY_LIMIT",
    "PONY_NOTIFY_TIMEOUT",
    "PONY_ON_CONTROLLER_LOSS",
    "PONY_OUTPUT",
    "PONY_PLAYBOOK",
    "PONY_PROGRESS",
    "PONY_PROGRESS_EVERY",
    "PONY_REGIONS",
    "PONY_ROLLBACK_PACE",
    "PONY_STATE",
    "PONY_STATE_DIR",
    "PONY_YES",
];

/// Whether no child of pony may see this variable: one of pony's own settings, libpq's
/// `PGPASSWORD`, the vault key `PONY_VAULT_KEY`, a variable a `--secret-var …=env:VAR` read, or one whose name marks a
/// secret as a var's does (ends in `_PASSWORD`, `_TOKEN` or `_SECRET`, in any case).
pub fn is_withheld_env(name: &str) -> bool {
    name == "PGPASSWORD"
        || name == "PONY_VAULT_KEY"
        || is_secret_name(&name.to_ascii_lowercase())
        || OWN_SETTINGS.contains(&name)
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

/// A `--state` value as messages, logs and events may show it: without any password
/// libpq would read from it. A URL loses the password of its user info
/// (`postgres://ann:secret@db/pony` → `postgres://ann@db/pony`) and every `password=`
/// pair of its query (`?password=secret&sslmode=require` → `?sslmode=require`); a
/// key=value connection string (`host=db password='s e' dbname=pony`, which `--state`
/// refuses but an error message repeats) shows `password=***`. Keys are matched as
/// libpq matches them, percent-decoded in a URL. The one place a state URL is made
/// fit to print: everything that shows one shows what this returns.
pub fn redact_password(state: &str) -> String {
    match state.split_once("://") {
        Some((scheme, rest)) => redact_url(scheme, rest),
        None if !state.contains('=') && state.contains('@') => redact_mistyped_url(state),
        None => redact_conninfo(state),
    }
}

/// A URL with a mistyped scheme separator (`postgres:/ann:pw@db`, `postgress:ann:pw@db`,
/// `ann:pw@db/pony`): where its user info ends is a guess, so everything from the first
/// `:` up to the last `@` is hidden (`postgres:…@db/pony`): a user name may go with it,
/// a password never shows.
fn redact_mistyped_url(state: &str) -> String {
    let at = state.rfind('@').unwrap_or(0);
    match state[..at].find(':') {
        Some(colon) => format!("{}:…{}", &state[..colon], &state[at..]),
        None => state.to_string(),
    }
}

/// [`redact_password`] of `SCHEME://REST`.
fn redact_url(scheme: &str, rest: &str) -> String {
    // The user info ends at the last `@` of the authority. A password with an unescaped
    // `/` (libpq wants it percent-encoded) moves that `@` past the first `/`: then the
    // last `@` before the query counts, so that such a password is cut, never shown.
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let query_start = rest.find('?').unwrap_or(rest.len());
    let at = rest[..authority_end]
        .rfind('@')
        .or_else(|| rest[..query_start].rfind('@'));
    let (user, host) = match at {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or_default();
            (format!("{user}@"), &rest[at + 1..])
        }
        None => (String::new(), rest),
    };
    let shown = match host.split_once('?') {
        Some((path, query)) => {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|pair| {
                    let key = pair.split('=').next().unwrap_or_default();
                    !percent_decode(key).eq_ignore_ascii_case("password")
                })
                .collect();
            if kept.iter().all(|p| p.is_empty()) {
                path.to_string()
            } else {
                format!("{path}?{}", kept.join("&"))
            }
        }
        None => host.to_string(),
    };
    format!("{scheme}://{user}{shown}")
}

/// `%70assword` is `password` to libpq: a key is compared decoded.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// [`redact_password`] of a key=value connection string: each `password` value (bare,
/// or single-quoted with `\'` and `\\` escapes, as libpq reads it) becomes `***`.
fn redact_conninfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(found) = find_password_key(rest) {
        let (before, after) = rest.split_at(found.value_start);
        out.push_str(before);
        out.push_str("***");
        rest = skip_conninfo_value(after);
    }
    out.push_str(rest);
    out
}

/// Where the value of the first `password` key of a connection string starts.
struct PasswordKey {
    value_start: usize,
}

fn find_password_key(text: &str) -> Option<PasswordKey> {
    let lower = text.to_ascii_lowercase();
    let mut from = 0;
    while let Some(offset) = lower[from..].find("password") {
        let start = from + offset;
        let end = start + "password".len();
        let at_word_start = lower[..start]
            .chars()
            .next_back()
            .is_none_or(|c| c.is_whitespace());
        let after = &text[end..];
        let spaces = after.len() - after.trim_start().len();
        if at_word_start && after.trim_start().starts_with('=') {
            let value = &after[spaces + 1..];
            let value_spaces = value.len() - value.trim_start().len();
            return Some(PasswordKey {
                value_start: end + spaces + 1 + value_spaces,
            });
        }
        from = end;
    }
    None
}

/// The text after a connection string's value (quoted or up to the next blank).
fn skip_conninfo_value(text: &str) -> &str {
    if let Some(quoted) = text.strip_prefix('\'') {
        let mut chars = quoted.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '\'' => return &quoted[i + 1..],
                _ => {}
            }
        }
        return "";
    }
    let end = text.find(char::is_whitespace).unwrap_or(text.len());
    &text[end..]
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

    #[test]
    fn urls_lose_their_password() {
        assert_eq!(
            redact_password("postgress:ann:s3cret@db/pony"),
            "postgress:…@db/pony"
        );
        assert_eq!(
            redact_password("postgres:/ann:s3c/r@t@db/pony"),
            "postgres:…@db/pony"
        );
        assert_eq!(redact_password("ann:s3cret@db/pony"), "ann:…@db/pony");
        assert_eq!(redact_password("ann@db/pony"), "ann@db/pony");
        assert_eq!(
            redact_password("postgres://ann:s3cret@db.example:5433/pony"),
            "postgres://ann@db.example:5433/pony"
        );
    }

    #[test]
    fn every_form_of_password_libpq_reads_is_redacted() {
        let cases = [
            // user info
            (
                "postgres://ann:hunter2@db:5433/pony",
                "postgres://ann@db:5433/pony",
            ),
            ("postgresql://:hunter2@db/pony", "postgresql://@db/pony"),
            // an unescaped `/` or `@` in the password
            ("postgres://ann:hun/ter2@db/pony", "postgres://ann@db/pony"),
            ("postgres://ann:hun@ter2@db/pony", "postgres://ann@db/pony"),
            // the query's `password` key, first, last, alone, any case, percent-encoded
            (
                "postgres://u@127.0.0.1:1/db?password=hunter2",
                "postgres://u@127.0.0.1:1/db",
            ),
            (
                "postgres://u@h/db?password=hunter2&schema=mail",
                "postgres://u@h/db?schema=mail",
            ),
            (
                "postgres://u@h/db?sslmode=require&PassWord=hunter2",
                "postgres://u@h/db?sslmode=require",
            ),
            ("postgres://u@h/db?%70assword=hunter2", "postgres://u@h/db"),
            // both forms at once
            (
                "postgres://u:hunter2@h/db?password=hunter2",
                "postgres://u@h/db",
            ),
            // key=value connection strings
            (
                "host=db password=hunter2 dbname=pony",
                "host=db password=*** dbname=pony",
            ),
            (
                "host=db password = 'hun ter\\'2' user=u",
                "host=db password = *** user=u",
            ),
            ("PASSWORD=hunter2", "PASSWORD=***"),
            // nothing to take
            (
                "postgres://u@h/db?sslmode=require",
                "postgres://u@h/db?sslmode=require",
            ),
            ("host=db passwordless=yes", "host=db passwordless=yes"),
        ];
        for (given, shown) in cases {
            assert_eq!(redact_password(given), shown, "{given}");
            assert!(!redact_password(given).contains("hun"), "{given}");
        }
    }
}
