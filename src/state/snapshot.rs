//! A run's snapshot: the inventory, playbook and vars it was started with, kept in its
//! folder so that `pony resume`, `pony rollback` and `pony status` rebuild the very plan
//! the run used, whatever happened to the original files since. This module is the one
//! writer (`pony deploy`) and the one reader of `vars.json` and `run.json`.

use crate::diag::Diagnostics;
use crate::inventory::Vars;
use crate::plan::{Plan, PlanOptions};
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
}

/// `run.json`: where the snapshot's files came from. Template and upload sources are
/// read next to the original playbook (they are not copied).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub inventory_path: PathBuf,
    pub playbook_path: PathBuf,
}

/// A run's snapshot, read from or written to its folder.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The run folder.
    pub dir: PathBuf,
    pub vars: SnapshotVars,
    pub origin: Origin,
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
    /// Writes the snapshot into a run folder (which must exist): copies of both files,
    /// `vars.json` and `run.json`.
    pub fn write(
        dir: &Path,
        inventory: &Path,
        playbook: &Path,
        vars: SnapshotVars,
    ) -> Result<Snapshot, SnapshotError> {
        for (from, name) in [(inventory, INVENTORY_FILE), (playbook, PLAYBOOK_FILE)] {
            let to = dir.join(name);
            std::fs::copy(from, &to).map_err(|source| SnapshotError::Write { path: to, source })?;
        }
        let origin = Origin {
            inventory_path: inventory.to_path_buf(),
            playbook_path: playbook.to_path_buf(),
        };
        write_json(&dir.join(VARS_FILE), &vars)?;
        write_json(&dir.join(ORIGIN_FILE), &origin)?;
        Ok(Snapshot {
            dir: dir.to_path_buf(),
            vars,
            origin,
        })
    }

    /// Reads a run folder's `vars.json` and `run.json` (the YAML files are read when the
    /// plan is rebuilt).
    pub fn load(dir: &Path) -> Result<Snapshot, SnapshotError> {
        Ok(Snapshot {
            dir: dir.to_path_buf(),
            vars: read_json(&dir.join(VARS_FILE))?,
            origin: read_json(&dir.join(ORIGIN_FILE))?,
        })
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
    /// template and upload sources read next to the original playbook.
    pub fn plan(&self, secrets: Secrets) -> Result<Plan, SnapshotError> {
        let options = self.plan_options(secrets)?;
        let inventory = crate::inventory::load(&self.dir.join(INVENTORY_FILE))
            .map_err(SnapshotError::Invalid)?;
        let mut playbook =
            crate::playbook::load(&self.dir.join(PLAYBOOK_FILE)).map_err(SnapshotError::Invalid)?;
        playbook.files_dir = self
            .origin
            .playbook_path
            .parent()
            .unwrap_or(Path::new("."))
            .to_path_buf();
        crate::plan::build(Arc::new(inventory), Arc::new(playbook), &options)
            .map_err(SnapshotError::Invalid)
    }
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
mod tests {
    use super::*;

    const INVENTORY: &str = "name: one\ndefaults: { connection: local }\nregions:\n  r1:\n    clusters:\n      c1:\n        hosts:\n          h1: {}\n          h2: {}\n";
    const PLAYBOOK: &str =
        "name: greet\nsteps:\n  - { name: hello, run: \"echo {{ greeting }} {{ token }}\" }\n";

    fn written(dir: &Path, vars: SnapshotVars) -> Snapshot {
        let inventory = dir.join("inv.yaml");
        let playbook = dir.join("sub/pb.yaml");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::create_dir_all(dir.join("run")).unwrap();
        std::fs::write(&inventory, INVENTORY).unwrap();
        std::fs::write(&playbook, PLAYBOOK).unwrap();
        Snapshot::write(&dir.join("run"), &inventory, &playbook, vars).unwrap()
    }

    #[test]
    fn what_is_written_loads_back_into_the_same_plan_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let vars = SnapshotVars {
            vars: BTreeMap::from([("greeting".to_string(), "hi".to_string())]),
            secret_vars: vec!["token".into()],
            limit: Some("h2".into()),
        };
        let first = written(dir.path(), vars.clone());
        // The original files may change or go: the snapshot does not.
        std::fs::remove_file(dir.path().join("inv.yaml")).unwrap();
        let snapshot = Snapshot::load(&first.dir).unwrap();
        assert_eq!(snapshot.vars, vars);
        assert_eq!(
            snapshot.origin.playbook_path,
            dir.path().join("sub/pb.yaml")
        );
        // Secret values are not on disk.
        let on_disk = std::fs::read_to_string(first.dir.join(VARS_FILE)).unwrap();
        assert!(!on_disk.contains("s3cret"));

        let given = [("token".to_string(), "s3cret".to_string())];
        let plan = snapshot.plan(Secrets::Given(&given)).unwrap();
        assert_eq!(plan.host_count(), 1, "the limit came back");
        assert_eq!(plan.extra_vars["greeting"], serde_yaml::Value::from("hi"));
        assert_eq!(plan.extra_vars["token"], serde_yaml::Value::from("s3cret"));
        assert_eq!(plan.playbook.dir(), dir.path().join("sub"));

        let shown = snapshot.plan(Secrets::Placeholder).unwrap();
        assert_eq!(
            shown.extra_vars["token"],
            serde_yaml::Value::from(SECRET_PLACEHOLDER)
        );

        match snapshot.plan(Secrets::Given(&[])) {
            Err(SnapshotError::MissingSecrets { names }) => assert_eq!(names, ["token"]),
            other => panic!("expected MissingSecrets, got {other:?}"),
        }
    }

    #[test]
    fn a_damaged_snapshot_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = written(dir.path(), SnapshotVars::default());
        std::fs::write(snapshot.dir.join(VARS_FILE), "{\"vars\": [1]}").unwrap();
        let error = Snapshot::load(&snapshot.dir).unwrap_err();
        assert!(matches!(error, SnapshotError::Json { .. }), "{error:?}");
        assert!(error.to_string().contains("vars.json"), "{error}");
        std::fs::remove_file(snapshot.dir.join(ORIGIN_FILE)).unwrap();
        std::fs::write(snapshot.dir.join(VARS_FILE), "{}").unwrap();
        let error = Snapshot::load(&snapshot.dir).unwrap_err();
        assert!(matches!(error, SnapshotError::Read { .. }), "{error:?}");
        assert!(error.to_string().contains("run.json"), "{error}");
    }
}
