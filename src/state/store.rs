//! Where runs, journals and locks live, as one seam for the commands: the state backend
//! the settings name ([`Store::open`]). The local state folder is the default
//! (`state/local/`); `--state postgres://…` names a database (`state/pg/`). What a
//! backend does is the [`Backend`] trait; a new backend is its folder and one arm in
//! [`Store::open`].

use super::backend::Access;
use super::backend::Backend;
use super::local::LocalStore;
use super::pg;
use super::runs::RunDetail;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// What opening a store needs: where the state is, and how long a lease lasts.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// `--state`/`PONY_STATE`: a database URL, or None (or empty) for the local folder.
    pub url: Option<String>,
    /// `--state-dir`: the local state folder (with a database, this machine's copy).
    pub state_dir: PathBuf,
    /// `--lease`: how long a database lease lasts without renewal.
    pub lease: Duration,
}

/// The state backend of a command; cheap to clone. Its methods are the backend's
/// ([`Backend`], through `Deref`), and a few conveniences.
#[derive(Debug, Clone)]
pub struct Store(Arc<dyn Backend>);

impl std::ops::Deref for Store {
    type Target = dyn Backend;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl Store {
    /// The backend the settings name, for a command that writes (deploy, resume, join,
    /// rollback, unlock): see [`Store::open`].
    pub fn for_writing(settings: &StoreSettings) -> anyhow::Result<Store> {
        Self::open(settings, Access::Write)
    }

    /// The backend the settings name: `--state`/`PONY_STATE` if set, else the local
    /// state folder. Connecting to a database checks its schema and the role's
    /// privileges for `access`; a writing command migrates the schema first if its role
    /// may ([`Access`]).
    pub fn open(settings: &StoreSettings, access: Access) -> anyhow::Result<Store> {
        let local = settings.state_dir.clone();
        let backend: Arc<dyn Backend> =
            match settings.url.as_deref().filter(|s| !s.is_empty()) {
                None => Arc::new(LocalStore::new(local)),
                Some(url) if pg::is_url(url) => Arc::new(pg::backend::PgBackend::open(
                    url,
                    settings.lease,
                    access,
                    local,
                )?),
                Some(other) => return Err(crate::diag::Diagnostics::from(
                    crate::diag::Diagnostic::new(
                        Path::new("--state"),
                        format!("`{}` is not a postgres:// URL", pg::redact_password(other)),
                    )
                    .hint(
                        "give postgres://USER@HOST/DATABASE, or use --state-dir for a local folder",
                    ),
                )
                .into()),
            };
        Ok(Store(backend))
    }

    /// A run's journal folded into its state, its snapshot copied into the local folder
    /// first when it comes from a database ([`Backend::read_run`]).
    pub fn read(&self, id: &str) -> RunDetail {
        self.read_run(id, true)
    }

    /// [`Store::read`] without copying the snapshot (what `pony history` needs).
    pub fn read_summary(&self, id: &str) -> RunDetail {
        self.read_run(id, false)
    }
}
