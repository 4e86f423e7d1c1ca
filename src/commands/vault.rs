//! `pony vault encrypt|decrypt|edit|view FILE`, and opening the vaults of a plan (the
//! command line's `--vault`, the playbook's `vault:`) or of a past run's snapshot into
//! secret vars.

use crate::cli::{PlanArgs, VaultAction};
use crate::diag::{Diagnostic, Diagnostics};
use crate::exit::Exit;
use crate::settings::Settings;
use crate::vault::{self, Key, VaultError};
use std::path::{Path, PathBuf};

pub fn run(settings: &Settings, action: &VaultAction) -> anyhow::Result<Exit> {
    Ok(vault_command(settings, action)?)
}

fn vault_command(settings: &Settings, action: &VaultAction) -> Result<Exit, Diagnostics> {
    let key_file = settings.vault_key_file.as_deref();
    let (VaultAction::Encrypt { file }
    | VaultAction::Decrypt { file }
    | VaultAction::Edit { file }
    | VaultAction::View { file }) = action;
    let bytes = std::fs::read(file).map_err(|e| {
        Diagnostics::from(
            Diagnostic::new(file, format!("cannot read it: {e}")).hint("name an existing file"),
        )
    })?;
    let key = find_key(key_file, file)?;
    let name = file.display().to_string();
    match action {
        VaultAction::Encrypt { .. } => {
            if vault::is_encrypted(&bytes) {
                return Err(Diagnostic::new(file, "is already encrypted")
                    .hint("`pony vault edit` changes it")
                    .into());
            }
            vault::parse_vars(&bytes, &name).map_err(|e| vault_error(file, e))?;
            let cipher = vault::encrypt(&key, &bytes, &name).map_err(|e| vault_error(file, e))?;
            write_beside(file, &cipher)?;
            eprintln!("{name}: encrypted");
        }
        VaultAction::Decrypt { .. } => {
            let plain = vault::decrypt(&key, &bytes, &name).map_err(|e| vault_error(file, e))?;
            write_beside(file, &plain)?;
            eprintln!("{name}: decrypted (it is now plain text on disk)");
        }
        VaultAction::View { .. } => {
            let plain = vault::decrypt(&key, &bytes, &name).map_err(|e| vault_error(file, e))?;
            crate::out!("{}", String::from_utf8_lossy(&plain));
        }
        VaultAction::Edit { .. } => {
            let plain = vault::decrypt(&key, &bytes, &name).map_err(|e| vault_error(file, e))?;
            let edited = edit(&plain, file)?;
            vault::parse_vars(&edited, &name).map_err(|e| vault_error(file, e))?;
            if edited != plain {
                let cipher =
                    vault::encrypt(&key, &edited, &name).map_err(|e| vault_error(file, e))?;
                write_beside(file, &cipher)?;
                eprintln!("{name}: saved, encrypted");
            } else {
                eprintln!("{name}: unchanged");
            }
        }
    }
    Ok(Exit::Success)
}

/// The plain text in a file only its owner reads, in a fresh private folder (on
/// `/dev/shm` where there is one, so in memory), through `$EDITOR`; removed after.
fn edit(plain: &[u8], file: &Path) -> Result<Vec<u8>, Diagnostics> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let base = Path::new("/dev/shm");
    let base = if base.is_dir() {
        base.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("pony-vault-{}", std::process::id()));
    let fail = |what: &str, e: std::io::Error| {
        Diagnostics::from(Diagnostic::new(
            file,
            format!("cannot edit it: {what}: {e}"),
        ))
    };
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| fail("private folder", e))?;
    let temp = dir.join(file.file_name().unwrap_or("vault".as_ref()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(|e| fail("temporary file", e))?;
        std::io::Write::write_all(&mut f, plain).map_err(|e| fail("temporary file", e))?;
        drop(f);
        let editor = std::env::var("EDITOR").unwrap_or_else(|_| "vi".into());
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{editor} \"$1\""))
            .arg("sh")
            .arg(&temp)
            .status()
            .map_err(|e| fail("the editor", e))?;
        if !status.success() {
            return Err(Diagnostic::new(
                file,
                format!("the editor `{editor}` failed ({status}); the vault is unchanged"),
            )
            .hint("set EDITOR to an editor that exits 0 on save")
            .into());
        }
        std::fs::read(&temp).map_err(|e| fail("temporary file", e))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Replaces `file` whole: written beside it, then renamed over it.
fn write_beside(file: &Path, bytes: &[u8]) -> Result<(), Diagnostics> {
    let temp = file.with_extension(format!("pony-{}.tmp", std::process::id()));
    std::fs::write(&temp, bytes)
        .and_then(|_| std::fs::rename(&temp, file))
        .map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            Diagnostic::new(file, format!("cannot write it: {e}")).into()
        })
}

fn find_key(key_file: Option<&Path>, file: &Path) -> Result<Key, Diagnostics> {
    Key::find(key_file, &file.display().to_string())
        .map_err(|e| Diagnostic::new(file, e.problem).hint(e.fix).into())
}

fn vault_error(file: &Path, e: VaultError) -> Diagnostics {
    let fix = e.fix();
    Diagnostic::new(file, e.to_string()).hint(fix).into()
}

/// The vault files a playbook's `vault:` names, relative to the playbook. The playbook
/// is read here only for that; a playbook that does not read is reported by its loading.
pub fn playbook_vaults(playbook: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string(playbook) else {
        return Vec::new();
    };
    let Ok(value) = serde_yaml::from_str::<serde_yaml::Value>(&text) else {
        return Vec::new();
    };
    let dir = playbook.parent().unwrap_or(Path::new("."));
    match value.get("vault") {
        Some(serde_yaml::Value::String(one)) => vec![dir.join(one)],
        Some(serde_yaml::Value::Sequence(many)) => many
            .iter()
            .filter_map(|v| v.as_str())
            .map(|v| dir.join(v))
            .collect(),
        _ => Vec::new(),
    }
}

/// Decrypts every vault of the plan (the playbook's first, then `--vault`s, later ones
/// winning) and adds its vars to the secret vars; the key is looked for once.
pub fn open_for_plan(args: &mut PlanArgs, key_file: Option<&Path>) -> Result<(), Diagnostics> {
    let files: Vec<PathBuf> = playbook_vaults(&args.playbook)
        .into_iter()
        .chain(args.vault.files.iter().cloned())
        .collect();
    let mut key = None;
    for file in files {
        let key = match &key {
            Some(key) => key,
            None => key.insert(find_key(key_file, &file)?),
        };
        let vars = vault::open(&file, key).map_err(|e| vault_error(&file, e))?;
        let names = vars.iter().map(|(k, _)| k.clone()).collect();
        args.secret_vars.extend(vars);
        let absolute = std::path::absolute(&file).unwrap_or(file);
        args.vault.opened.push((absolute, names));
    }
    Ok(())
}

/// The vars of a past run's vaults (their encrypted copies in the run's snapshot, as
/// they were at its start), for resume, join and rollback: the key is needed again.
pub fn open_for_run(
    run: &str,
    vaults: &[(PathBuf, PathBuf)],
    key_file: Option<&Path>,
) -> Result<Vec<(String, String)>, Diagnostics> {
    let mut out = Vec::new();
    let mut key = None;
    for (file, blob) in vaults {
        let key = match &key {
            Some(key) => key,
            None => key.insert(
                Key::find(key_file, &file.display().to_string()).map_err(|e| {
                    Diagnostic::new(
                        file,
                        format!(
                            "run {run} was started with this vault; its key is needed again: {}",
                            e.problem
                        ),
                    )
                    .hint(e.fix)
                })?,
            ),
        };
        let cipher = std::fs::read(blob).map_err(|e| {
            Diagnostic::new(
                blob,
                format!(
                    "cannot read run {run}'s copy of vault {}: {e}",
                    file.display()
                ),
            )
        })?;
        out.extend(
            vault::open_bytes(&cipher, &file.display().to_string(), key)
                .map_err(|e| vault_error(file, e))?,
        );
    }
    Ok(out)
}
