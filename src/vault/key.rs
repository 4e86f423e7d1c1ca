//! The vault key: a passphrase, or age identities (`AGE-SECRET-KEY-1…` lines, as
//! `age-keygen` writes them). Taken from `--vault-key-file FILE`, else the environment
//! variable `PONY_VAULT_KEY` (which no child of pony gets, see
//! [`crate::secret::is_withheld_env`]), else asked on the terminal without echo.

use age::secrecy::SecretString;
use std::path::{Path, PathBuf};

/// The environment variable holding the key itself (a passphrase or identity lines).
pub const KEY_ENV: &str = "PONY_VAULT_KEY";

/// Where a key came from, for messages (never the key).
#[derive(Debug, Clone)]
pub enum KeySource {
    File(PathBuf),
    Env,
    Prompt,
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::File(path) => write!(f, "--vault-key-file {}", path.display()),
            KeySource::Env => write!(f, "${KEY_ENV}"),
            KeySource::Prompt => f.write_str("the prompt"),
        }
    }
}

enum Secret {
    Passphrase(SecretString),
    Identities(Vec<age::x25519::Identity>),
}

/// A vault key and where it came from.
pub struct Key {
    secret: Secret,
    pub source: KeySource,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key(from {})", self.source)
    }
}

/// Why no key could be had; `fix` says how to give one.
#[derive(Debug)]
pub struct KeyError {
    pub problem: String,
    pub fix: String,
}

impl Key {
    /// A key from its text: identity lines when any line is an `AGE-SECRET-KEY-1…`,
    /// else the whole text (one trailing newline dropped) is a passphrase.
    pub fn parse(text: &str, source: KeySource) -> Result<Key, KeyError> {
        let bad = |problem: String| KeyError {
            problem,
            fix: "give a passphrase, or identity lines as `age-keygen` writes them".into(),
        };
        let identity_lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("AGE-SECRET-KEY-"))
            .collect();
        let secret = if identity_lines.is_empty() {
            let pass = text.strip_suffix('\n').unwrap_or(text);
            let pass = pass.strip_suffix('\r').unwrap_or(pass);
            if pass.is_empty() {
                return Err(bad(format!("the vault key from {source} is empty")));
            }
            Secret::Passphrase(SecretString::from(pass.to_string()))
        } else {
            let mut identities = Vec::new();
            for (i, line) in identity_lines.iter().enumerate() {
                identities.push(line.parse::<age::x25519::Identity>().map_err(|_| {
                    bad(format!(
                        "the vault key from {source}: identity line {} is not a valid age identity",
                        i + 1
                    ))
                })?);
            }
            Secret::Identities(identities)
        };
        Ok(Key { secret, source })
    }

    /// The key from `--vault-key-file`, `PONY_VAULT_KEY` or the terminal; `what` names
    /// the vault it is asked for (in the prompt and the error).
    pub fn find(key_file: Option<&Path>, what: &str) -> Result<Key, KeyError> {
        if let Some(path) = key_file {
            let text = std::fs::read_to_string(path).map_err(|e| KeyError {
                problem: format!("cannot read the vault key file {}: {e}", path.display()),
                fix: "pass a readable key file with --vault-key-file".into(),
            })?;
            return Key::parse(&text, KeySource::File(path.to_path_buf()));
        }
        if let Ok(text) = std::env::var(KEY_ENV) {
            return Key::parse(&text, KeySource::Env);
        }
        match prompt(&format!("Vault key for {what}: ")) {
            Some(text) => Key::parse(&text, KeySource::Prompt),
            None => Err(KeyError {
                problem: format!("{what} is encrypted and no vault key was given"),
                fix: format!(
                    "pass --vault-key-file FILE or set {KEY_ENV} (or run on a terminal to be asked)"
                ),
            }),
        }
    }

    /// Whom to encrypt to: the passphrase, or each identity's public key.
    pub fn recipients(&self) -> Result<Vec<Box<dyn age::Recipient + Send>>, String> {
        Ok(match &self.secret {
            Secret::Passphrase(pass) => vec![Box::new(age::scrypt::Recipient::new(pass.clone()))],
            Secret::Identities(ids) => ids
                .iter()
                .map(|id| Box::new(id.to_public()) as Box<dyn age::Recipient + Send>)
                .collect(),
        })
    }

    /// What decrypts.
    pub fn identities(&self) -> Vec<Box<dyn age::Identity>> {
        match &self.secret {
            Secret::Passphrase(pass) => vec![Box::new(age::scrypt::Identity::new(pass.clone()))],
            Secret::Identities(ids) => ids
                .iter()
                .map(|id| Box::new(id.clone()) as Box<dyn age::Identity>)
                .collect(),
        }
    }
}

/// Asks on the controlling terminal with echo off (`stty`, so that this module needs
/// no unsafe code); `None` when there is no terminal.
fn prompt(question: &str) -> Option<String> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return None;
    }
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .ok()?;
    let stty = |arg: &str| {
        tty.try_clone().ok().map(|t| {
            std::process::Command::new("stty")
                .arg(arg)
                .stdin(t)
                .status()
        })
    };
    stty("-echo");
    let mut out = &tty;
    let _ = out.write_all(question.as_bytes());
    let _ = out.flush();
    let mut line = String::new();
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    // The terminal gets its echo back whatever was read.
    stty("echo");
    let _ = out.write_all(b"\n");
    read.ok()?;
    Some(line)
}
