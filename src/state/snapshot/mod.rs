//! A run's snapshot: the inventory, playbook, template and upload sources and vars it was
//! started with, kept in its folder (and the sources' contents in the state folder's
//! content-addressed `blobs/sha256/`, shared by every run) so that `pony resume`,
//! `pony rollback` and `pony status` rebuild the very plan the run used, from any
//! working directory, whatever happened to the original files since. This module is the
//! one writer (`pony deploy`) and the one reader of `vars.json`, `run.json` and
//! `files.json`.

use crate::diag::Diagnostics;
use crate::inventory::Vars;
use crate::plan::{Plan, PlanOptions};
use crate::playbook::HeldFiles;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The value secret vars get when a plan is rebuilt only to be shown: their values are
/// never stored, and only the shape of the plan is needed.
pub const SECRET_PLACEHOLDER: &str = "***";

pub const INVENTORY_FILE: &str = "inventory.yaml";
pub const PLAYBOOK_FILE: &str = "playbook.yaml";
pub const VARS_FILE: &str = "vars.json";
pub const ORIGIN_FILE: &str = "run.json";
pub const FILES_FILE: &str = "files.json";
/// Under the state folder: one file per distinct content, named by its sha256.
pub const BLOBS_DIR: &str = "blobs/sha256";

/// `vars.json`: what was given on the command line besides the two files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotVars {
    /// `--var NAME=VALUE`.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// The names of the `--secret-var`s; their values are never stored.
    #[serde(default)]
    pub secret_vars: Vec<String>,
    /// `--limit`.
    #[serde(default)]
    pub limit: Option<String>,
    /// The vaults the run opened (absolute); `files.json` holds their encrypted copies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vaults: Vec<PathBuf>,
}

/// `run.json`: where the snapshot's files came from, as absolute paths (runs started by
/// an older pony may hold them as typed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub inventory_path: PathBuf,
    pub playbook_path: PathBuf,
}

/// One file of the snapshot: where it was (absolute) and its content's sha256, the name
/// of its blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: PathBuf,
    pub sha256: String,
    /// The inventory was a command's output (a dynamic inventory): the blob is what it
    /// printed at the start, and the command's own file is not compared with it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub generated: bool,
}

/// `files.json`: every file the run reads, as it was at the start. Runs started by an
/// older pony have none (their template and upload sources are read next to the
/// original playbook).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub playbook: FileEntry,
    pub inventory: FileEntry,
    /// Each `template:` and `upload:` source as the playbook names it (`src`, rendered
    /// for every target of the plan).
    #[serde(default)]
    pub files: BTreeMap<String, FileEntry>,
    /// Each vault (absolute path) → its encrypted content's blob: a resume decrypts
    /// these with the key given again.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vaults: BTreeMap<PathBuf, FileEntry>,
}

impl Manifest {
    /// Every blob the manifest names (each once).
    pub fn hashes(&self) -> std::collections::BTreeSet<&str> {
        [&self.playbook, &self.inventory]
            .into_iter()
            .chain(self.files.values())
            .chain(self.vaults.values())
            .map(|f| f.sha256.as_str())
            .collect()
    }
}

/// A file of the snapshot that is no longer on disk as it was when the run started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileChange {
    /// `playbook`, `inventory`, or the source as the playbook names it.
    pub name: String,
    pub path: PathBuf,
    /// `changed` or `gone`.
    pub change: &'static str,
}

/// A run's snapshot, read from or written to its folder.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The run folder.
    pub dir: PathBuf,
    pub vars: SnapshotVars,
    pub origin: Origin,
    /// `None` for a run started by an older pony.
    pub files: Option<Manifest>,
}

/// Where the values of secret vars come from when a plan is rebuilt.
#[derive(Debug, Clone, Copy)]
pub enum Secrets<'a> {
    /// Given again on the command line (`--secret-var NAME=VALUE`), to run the plan:
    /// every secret var the run was started with must be there.
    Given(&'a [(String, String)]),
    /// [`SECRET_PLACEHOLDER`] for each: the plan is only looked at.
    Placeholder,
}

/// Why a snapshot could not be written, read or turned back into a plan.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a valid {file}: {source}", path.display(), file = path.file_name().unwrap_or_default().to_string_lossy())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the run was started with secret var(s) {}, whose values are never stored", names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "))]
    MissingSecrets { names: Vec<String> },
    /// The snapshot's inventory or playbook does not load, or the plan does not build.
    #[error("{0}")]
    Invalid(#[source] Diagnostics),
}

impl Snapshot {
    /// Writes the snapshot into a run folder (which must exist, under
    /// `<state dir>/runs/`): copies of both files, `vars.json`, `run.json`, and
    /// `files.json` with the blobs of the playbook, the inventory and every template and
    /// upload source `plan` reads (`run_id` renders the sources named per target).
    pub fn write(
        dir: &Path,
        inventory: &Path,
        playbook: &Path,
        vars: SnapshotVars,
        plan: &Plan,
        run_id: &str,
    ) -> Result<Snapshot, SnapshotError> {
        let absolute = |path: &Path| std::path::absolute(path).unwrap_or(path.to_path_buf());
        let blobs = blobs_dir(dir);
        std::fs::create_dir_all(&blobs).map_err(|source| SnapshotError::Write {
            path: blobs.clone(),
            source,
        })?;
        let mut entries = Vec::new();
        for (from, name) in [(inventory, INVENTORY_FILE), (playbook, PLAYBOOK_FILE)] {
            // A dynamic inventory's command is not run again: its output at the start is
            // the fleet the run keeps.
            let generated = (name == INVENTORY_FILE)
                .then_some(plan.inventory.generated.as_ref())
                .flatten();
            let bytes = match generated {
                Some(text) => text.clone().into_bytes(),
                None => std::fs::read(from).map_err(|source| SnapshotError::Read {
                    path: from.to_path_buf(),
                    source,
                })?,
            };
            let to = dir.join(name);
            std::fs::write(&to, &bytes)
                .map_err(|source| SnapshotError::Write { path: to, source })?;
            entries.push(FileEntry {
                path: absolute(from),
                sha256: put_blob(&blobs, &bytes)?,
                generated: generated.is_some(),
            });
        }
        let mut files = BTreeMap::new();
        for src in plan.file_sources(run_id) {
            // A source that cannot be read now fails its task as it would have; the
            // snapshot then does not hold it.
            let Ok(bytes) = plan.playbook.read_source(&src) else {
                continue;
            };
            let entry = FileEntry {
                path: absolute(&plan.playbook.source_path(&src)),
                sha256: put_blob(&blobs, &bytes)?,
                generated: false,
            };
            files.insert(src, entry);
        }
        // The files `include:` steps read: a resume rebuilds the playbook from them.
        for included in &plan.playbook.includes {
            let path = plan.playbook.dir().join(included);
            let bytes = std::fs::read(&path).map_err(|source| SnapshotError::Read {
                path: path.clone(),
                source,
            })?;
            let entry = FileEntry {
                path: absolute(&path),
                sha256: put_blob(&blobs, &bytes)?,
                generated: false,
            };
            files.insert(included.clone(), entry);
        }
        let mut vaults = BTreeMap::new();
        for vault in &vars.vaults {
            let bytes = std::fs::read(vault).map_err(|source| SnapshotError::Read {
                path: vault.clone(),
                source,
            })?;
            let entry = FileEntry {
                path: vault.clone(),
                sha256: put_blob(&blobs, &bytes)?,
                generated: false,
            };
            vaults.insert(vault.clone(), entry);
        }
        let playbook_entry = entries.pop().expect("two entries");
        let inventory_entry = entries.pop().expect("two entries");
        let origin = Origin {
            inventory_path: inventory_entry.path.clone(),
            playbook_path: playbook_entry.path.clone(),
        };
        let manifest = Manifest {
            playbook: playbook_entry,
            inventory: inventory_entry,
            files,
            vaults,
        };
        write_json(&dir.join(VARS_FILE), &vars)?;
        write_json(&dir.join(ORIGIN_FILE), &origin)?;
        write_json(&dir.join(FILES_FILE), &manifest)?;
        Ok(Snapshot {
            dir: dir.to_path_buf(),
            vars,
            origin,
            files: Some(manifest),
        })
    }

    /// Reads a run folder's `vars.json`, `run.json` and `files.json` (the YAML files are
    /// read when the plan is rebuilt).
    pub fn load(dir: &Path) -> Result<Snapshot, SnapshotError> {
        let files = dir.join(FILES_FILE);
        Ok(Snapshot {
            dir: dir.to_path_buf(),
            vars: read_json(&dir.join(VARS_FILE))?,
            origin: read_json(&dir.join(ORIGIN_FILE))?,
            files: files.exists().then(|| read_json(&files)).transpose()?,
        })
    }

    /// The template and upload sources the snapshot holds, for [`Playbook::held`]
    /// (`None` for a run started by an older pony). `fallback`: sources it does not
    /// hold are read from the playbook's directory (only the process that wrote it).
    ///
    /// [`Playbook::held`]: crate::playbook::Playbook::held
    pub fn held_files(&self, fallback: bool) -> Option<HeldFiles> {
        let manifest = self.files.as_ref()?;
        let blobs = blobs_dir(&self.dir);
        Some(HeldFiles {
            blobs: manifest
                .files
                .iter()
                .map(|(src, entry)| (src.clone(), blobs.join(&entry.sha256)))
                .collect(),
            fallback,
        })
    }

    /// Each vault the run opened and its encrypted copy's blob.
    pub fn vaults(&self) -> Vec<(PathBuf, PathBuf)> {
        let blobs = blobs_dir(&self.dir);
        self.files
            .iter()
            .flat_map(|m| &m.vaults)
            .map(|(path, entry)| (path.clone(), blobs.join(&entry.sha256)))
            .collect()
    }

    /// The snapshot's files that are no longer on disk as they were at the run's start
    /// (the run goes on with the snapshot's copies): the playbook, the inventory and
    /// every template and upload source, in that order.
    pub fn changed_files(&self) -> Vec<FileChange> {
        let Some(manifest) = &self.files else {
            return Vec::new();
        };
        let named = [
            ("playbook".to_string(), &manifest.playbook),
            ("inventory".to_string(), &manifest.inventory),
        ];
        named
            .into_iter()
            .chain(manifest.files.iter().map(|(src, e)| (src.clone(), e)))
            .filter(|(_, entry)| !entry.generated)
            .filter_map(|(name, entry)| {
                let change = match std::fs::read(&entry.path) {
                    Err(_) => "gone",
                    Ok(bytes) if sha256(&bytes) != entry.sha256 => "changed",
                    Ok(_) => return None,
                };
                Some(FileChange {
                    name,
                    path: entry.path.clone(),
                    change,
                })
            })
            .collect()
    }

    /// The `--limit` and vars the run used, with the secret vars' values from `secrets`.
    pub fn plan_options(&self, secrets: Secrets) -> Result<PlanOptions, SnapshotError> {
        let mut extra_vars: Vars = self
            .vars
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), serde_yaml::Value::String(v.clone())))
            .collect();
        let mut missing = Vec::new();
        for name in &self.vars.secret_vars {
            let value = match secrets {
                Secrets::Placeholder => SECRET_PLACEHOLDER.to_string(),
                Secrets::Given(given) => match given.iter().rev().find(|(k, _)| k == name) {
                    Some((_, value)) => value.clone(),
                    None => {
                        missing.push(name.clone());
                        continue;
                    }
                },
            };
            extra_vars.insert(name.clone(), serde_yaml::Value::String(value));
        }
        if !missing.is_empty() {
            return Err(SnapshotError::MissingSecrets { names: missing });
        }
        // Other secret values given now stand in for what the run never stored: a
        // secret capture that a `pony rollback` needs, say.
        if let Secrets::Given(given) = secrets {
            for (name, value) in given {
                extra_vars
                    .entry(name.clone())
                    .or_insert_with(|| serde_yaml::Value::String(value.clone()));
            }
        }
        Ok(PlanOptions {
            limit: self.vars.limit.clone(),
            extra_vars,
        })
    }

    /// Rebuilds the plan the run used from the snapshot's inventory and playbook, with
    /// template and upload sources read from the snapshot's blobs (a run started by an
    /// older pony: next to the original playbook).
    pub fn plan(&self, secrets: Secrets) -> Result<Plan, SnapshotError> {
        let options = self.plan_options(secrets)?;
        let inventory = crate::inventory::load(&self.dir.join(INVENTORY_FILE))
            .map_err(SnapshotError::Invalid)?;
        // Included files are read from the snapshot's copies.
        let blobs = blobs_dir(&self.dir);
        let read = |key: &str| match self.files.as_ref().and_then(|m| m.files.get(key)) {
            Some(entry) => std::fs::read_to_string(blobs.join(&entry.sha256)),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "not in the run's snapshot",
            )),
        };
        let mut playbook = match crate::playbook::load_with(&self.dir.join(PLAYBOOK_FILE), &read) {
            (Some(playbook), errors) => errors.into_result(playbook),
            (None, errors) => Err(errors.sorted()),
        }
        .map_err(SnapshotError::Invalid)?;
        playbook.files_dir = self
            .origin
            .playbook_path
            .parent()
            .unwrap_or(Path::new("."))
            .to_path_buf();
        if let Some(held) = self.held_files(false) {
            playbook.held = held.into();
        }
        crate::plan::build(Arc::new(inventory), Arc::new(playbook), &options)
            .map_err(SnapshotError::Invalid)
    }
}

/// `<state dir>/blobs/sha256/` of a run folder `<state dir>/runs/<id>/`.
pub fn blobs_dir(run_dir: &Path) -> PathBuf {
    run_dir
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."))
        .join(BLOBS_DIR)
}

pub fn sha256(content: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(content))
}

/// Stores `content` as the blob named by its sha256, once: a blob already there is the
/// same content. Written beside and renamed, so a blob is never half there.
pub fn put_blob(blobs: &Path, content: &[u8]) -> Result<String, SnapshotError> {
    let hash = sha256(content);
    let path = blobs.join(&hash);
    if !path.exists() {
        let tmp = blobs.join(format!(".{hash}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, content)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|source| SnapshotError::Write { path, source })?;
    }
    Ok(hash)
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), SnapshotError> {
    let text = serde_json::to_vec_pretty(value).expect("snapshot types serialize");
    std::fs::write(path, text).map_err(|source| SnapshotError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, SnapshotError> {
    let text = std::fs::read_to_string(path).map_err(|source| SnapshotError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| SnapshotError::Json {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests;
