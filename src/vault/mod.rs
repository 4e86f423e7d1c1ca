//! The vault: a vars file encrypted with age (a passphrase or an age identity), whose
//! values are secrets everywhere (`pony vault …`, a playbook's `vault:`, `--vault`).
//!
//! - [`key`]: where the key comes from (`--vault-key-file`, `PONY_VAULT_KEY`, a prompt);
//! - this module: encrypting, decrypting and reading the vars a vault holds.
//!
//! Plain text never touches the disk here: decryption is to memory, and a run hands the
//! values on as `--secret-var`s (never stored, `***` in output, sent to hosts inside the
//! script on the command's stdin, not on its argv).

pub mod key;

use crate::inventory::Vars;
pub use key::{Key, KeySource};
use std::io::{Read, Write};
use std::path::Path;

/// Why a vault could not be opened or written (`file` for whoever reports it; the
/// message is what went wrong with it).
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("cannot decrypt it with the vault key from {source_name}: the key is wrong (or the file was encrypted for another key)")]
    WrongKey { file: String, source_name: String },
    #[error("it is not an age-encrypted vault ({detail})")]
    NotEncrypted { file: String, detail: String },
    #[error("{detail}")]
    Other { file: String, detail: String },
}

impl VaultError {
    /// What to do about it.
    pub fn fix(&self) -> String {
        match self {
            VaultError::WrongKey { .. } => "give the key the vault was encrypted with (--vault-key-file FILE or PONY_VAULT_KEY)".into(),
            VaultError::NotEncrypted { .. } => "encrypt it first: `pony vault encrypt FILE`".into(),
            VaultError::Other { .. } => "check the file and the key".into(),
        }
    }
}

/// Whether `bytes` look like an age file (armored or binary).
pub fn is_encrypted(bytes: &[u8]) -> bool {
    bytes.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----")
        || bytes.starts_with(b"age-encryption.org/")
}

/// Encrypts `plain` to the key (ASCII-armored, so that a vault diffs and commits as text).
pub fn encrypt(key: &Key, plain: &[u8], file: &str) -> Result<Vec<u8>, VaultError> {
    let other = |detail: String| VaultError::Other {
        file: file.to_string(),
        detail,
    };
    let recipients = key.recipients().map_err(other)?;
    let encryptor = age::Encryptor::with_recipients(recipients.iter().map(|r| r.as_ref() as _))
        .map_err(|e| other(format!("cannot encrypt: {e}")))?;
    let mut out = Vec::new();
    let armor = age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor)
        .map_err(|e| other(e.to_string()))?;
    let mut writer = encryptor
        .wrap_output(armor)
        .map_err(|e| other(e.to_string()))?;
    writer.write_all(plain).map_err(|e| other(e.to_string()))?;
    writer
        .finish()
        .and_then(|armor| armor.finish())
        .map_err(|e| other(e.to_string()))?;
    Ok(out)
}

/// Decrypts a vault's bytes with the key.
pub fn decrypt(key: &Key, cipher: &[u8], file: &str) -> Result<Vec<u8>, VaultError> {
    if !is_encrypted(cipher) {
        return Err(VaultError::NotEncrypted {
            file: file.to_string(),
            detail: "no age header".into(),
        });
    }
    let reader = age::armor::ArmoredReader::new(cipher);
    let decryptor = age::Decryptor::new(reader).map_err(|e| VaultError::NotEncrypted {
        file: file.to_string(),
        detail: e.to_string(),
    })?;
    let identities = key.identities();
    let mut reader = decryptor
        .decrypt(identities.iter().map(|i| i.as_ref() as _))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys | age::DecryptError::DecryptionFailed => {
                VaultError::WrongKey {
                    file: file.to_string(),
                    source_name: key.source.to_string(),
                }
            }
            other => VaultError::Other {
                file: file.to_string(),
                detail: format!("cannot decrypt: {other}"),
            },
        })?;
    let mut plain = Vec::new();
    reader
        .read_to_end(&mut plain)
        .map_err(|e| VaultError::WrongKey {
            file: format!("{file} ({e})"),
            source_name: key.source.to_string(),
        })?;
    Ok(plain)
}

/// The vars of a decrypted vault: a YAML mapping of names to strings or numbers.
pub fn parse_vars(plain: &[u8], file: &str) -> Result<Vec<(String, String)>, VaultError> {
    let other = |detail: String| VaultError::Other {
        file: file.to_string(),
        detail,
    };
    let text =
        std::str::from_utf8(plain).map_err(|_| other("the vault is not UTF-8 text".into()))?;
    let vars: Vars = serde_yaml::from_str(text).map_err(|_| {
        other("the vault does not hold a YAML mapping of vars (`name: value` lines)".into())
    })?;
    let mut out = Vec::new();
    for (name, value) in vars {
        let value = match value {
            serde_yaml::Value::String(s) => s,
            serde_yaml::Value::Number(n) => n.to_string(),
            serde_yaml::Value::Bool(b) => b.to_string(),
            _ => {
                return Err(other(format!(
                    "`{name}`: a vault value must be a string or a number"
                )))
            }
        };
        out.push((name, value));
    }
    Ok(out)
}

/// Reads, decrypts and parses a vault file.
pub fn open(path: &Path, key: &Key) -> Result<Vec<(String, String)>, VaultError> {
    let file = path.display().to_string();
    let cipher = std::fs::read(path).map_err(|e| VaultError::Other {
        file: file.clone(),
        detail: format!("cannot read the vault: {e}"),
    })?;
    open_bytes(&cipher, &file, key)
}

/// [`open`] of a vault's bytes (a run's snapshot holds them as a blob).
pub fn open_bytes(
    cipher: &[u8],
    file: &str,
    key: &Key,
) -> Result<Vec<(String, String)>, VaultError> {
    parse_vars(&decrypt(key, cipher, file)?, file)
}
