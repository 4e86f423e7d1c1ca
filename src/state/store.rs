//! Where runs, journals and locks live, as one seam for the commands: the local state
//! folder (the default, unchanged) or a PostgreSQL database (`--state postgres://…`).
//!
//! With a database, the controller still writes its run folder under the local state
//! folder as a copy (snapshot, `journal.jsonl`, host logs); what other machines see,
//! resume and roll back is what the database holds. Reading a run from the database
//! writes its snapshot into the local folder, so the plan rebuilds from files exactly as
//! for a local run.

use super::journal::{Journal, Mirror};
use super::lock::{self, InventoryLock, LockError, LockInfo};
use super::pg::lease::{self, Lease, LeaseLost};
use super::pg::regions::RegionLease;
use super::pg::sink::{Fence, PgSink};
use super::pg::{Access, PgStore};
use super::runs::{self, ResolveError, RunDetail, RunState};
use crate::cli::GlobalOptions;
use std::path::{Path, PathBuf};

/// The state backend of a command.
#[derive(Debug, Clone)]
pub enum Store {
    /// `<state dir>/runs`, `<state dir>/locks`.
    Local(PathBuf),
    /// Runs, journal and leases in PostgreSQL; `local` is the state folder that keeps
    /// this machine's copy of the runs it works on.
    Postgres { db: Box<PgStore>, local: PathBuf },
}

/// The inventory held for a run: a lock file, or a lease in the database.
pub enum Held {
    File(InventoryLock),
    Lease(Box<Lease>),
    /// This controller's regions of a run split between controllers (`--regions`).
    Regions(Box<RegionLease>),
}

impl Held {
    /// This controller's token in the database's lease rows (None for a lock file).
    pub fn holder(&self) -> Option<&str> {
        match self {
            Held::File(_) => None,
            Held::Lease(lease) => Some(&lease.holder),
            Held::Regions(regions) => Some(&regions.holder),
        }
    }

    pub fn keep_for_approval(self) {
        match self {
            Held::File(lock) => lock.keep_for_approval(),
            Held::Lease(lease) => lease.keep_for_approval(),
            // The run's inventory lease lives on with the other controllers' regions;
            // this controller's regions are left to expire, for `resume --regions`.
            Held::Regions(regions) => regions.keep(),
        }
    }

    /// The run stopped with work left (interrupted, halted, a host left unreachable or a
    /// rollback failed): a controller of a split run marks its regions abandoned, so the
    /// others see them lost and `pony resume RUN --regions …` takes them over. A lock or
    /// lease of a whole run is released as usual (its resume takes the run as a whole).
    pub fn leave_with_work_left(self) {
        match self {
            Held::Regions(regions) => regions.abandon(),
            other => drop(other),
        }
    }
}

impl Store {
    /// The backend the global options name, for a command that writes (deploy,
    /// resume, join, rollback, unlock): see [`Store::open`].
    pub fn from_options(global: &GlobalOptions) -> anyhow::Result<Store> {
        Self::open(global, Access::Write)
    }

    /// The backend the global options name: `--state`/`PONY_STATE` if set, else the
    /// local state folder. Connecting checks the database's schema and the role's
    /// privileges for `access`; a writing command migrates the schema first if its role
    /// may ([`Access`]).
    pub fn open(global: &GlobalOptions, access: Access) -> anyhow::Result<Store> {
        match global.state.as_deref().filter(|s| !s.is_empty()) {
            None => Ok(Store::Local(global.state_dir.clone())),
            Some(url) if super::pg::is_url(url) => Ok(Store::Postgres {
                db: Box::new(PgStore::open_as(url, global.lease, access)?),
                local: global.state_dir.clone(),
            }),
            Some(other) => Err(crate::diag::Diagnostics::from(
                crate::diag::Diagnostic::new(
                    Path::new("--state"),
                    format!(
                        "`{}` is not a postgres:// URL",
                        super::pg::redact_password(other)
                    ),
                )
                .hint("give postgres://USER@HOST/DATABASE, or use --state-dir for a local folder"),
            )
            .into()),
        }
    }

    /// The local state folder (copies of runs, host keys, local hosts' folders).
    pub fn local_dir(&self) -> &Path {
        match self {
            Store::Local(dir) | Store::Postgres { local: dir, .. } => dir,
        }
    }

    /// Why a store lists no runs when that is not only because none was started: a
    /// state database where no pony created the schema yet.
    pub fn empty_note(&self) -> Option<String> {
        match self {
            Store::Postgres { db, .. } if !db.created() => Some(format!(
                "pony has not created its schema `{}` there yet: `pony db migrate`, run as a role with CREATE on the database, creates it (so does the first deploy of such a role)",
                db.schema()
            )),
            _ => None,
        }
    }

    /// Where runs are listed from, for messages.
    pub fn place(&self) -> PathBuf {
        match self {
            Store::Local(dir) => runs::runs_dir(dir),
            Store::Postgres { db, .. } => PathBuf::from(db.shown()),
        }
    }

    /// Run ids, newest first.
    pub fn list(&self) -> anyhow::Result<Vec<String>> {
        match self {
            Store::Local(dir) => Ok(runs::list(dir)?),
            Store::Postgres { db, .. } => Ok(db.list()?),
        }
    }

    /// An exact run id or a unique prefix of one.
    pub fn resolve(&self, run: &str) -> Result<String, ResolveError> {
        match self {
            Store::Local(dir) => runs::resolve(dir, run),
            Store::Postgres { db, .. } => {
                let ids = db.list().map_err(|e| ResolveError::Read {
                    dir: self.place(),
                    source: std::io::Error::other(e.to_string()),
                })?;
                runs::resolve_among(ids, run, self.place())
            }
        }
    }

    /// A run's journal folded into its state. From the database, the run's snapshot is
    /// written into the local folder first (for counting pending tasks), and whether it
    /// is running is whether a live lease holds it.
    pub fn read(&self, id: &str) -> RunDetail {
        self.read_with(id, true)
    }

    /// [`Store::read`] without copying the snapshot (what `pony history` needs).
    pub fn read_summary(&self, id: &str) -> RunDetail {
        self.read_with(id, false)
    }

    fn read_with(&self, id: &str, snapshot: bool) -> RunDetail {
        match self {
            Store::Local(dir) => runs::read(dir, id),
            Store::Postgres { db, local } => {
                let folder = runs::runs_dir(local).join(id);
                let (records, problem) = match db.records(id) {
                    Ok((records, bad)) if bad.is_empty() => (records, None),
                    Ok((records, bad)) => {
                        let rows: Vec<String> = bad.iter().map(i64::to_string).collect();
                        let problem = format!(
                            "{}: skipped unreadable journal row(s) {}",
                            db.shown(),
                            rows.join(", ")
                        );
                        (records, Some(problem))
                    }
                    Err(e) => (Vec::new(), Some(e.to_string())),
                };
                if snapshot {
                    if let Err(e) = db.checkout(id, &folder, false) {
                        tracing::warn!("cannot copy the snapshot of run {id}: {e}");
                    }
                }
                let mut detail = runs::fold_records(id, folder, &records, problem);
                // A run split between controllers has one `run_finished` per controller:
                // it is running while any of its region leases lives.
                let split_running = super::pg::regions::read(db, id)
                    .map(|rows| rows.iter().any(|r| r.live))
                    .unwrap_or(false);
                if split_running
                    || (detail.summary.state != RunState::Finished
                        && detail.summary.state != RunState::Unknown)
                {
                    let running = lease::holds_run(db, id).unwrap_or(false);
                    detail.summary.state = if running {
                        RunState::Running
                    } else {
                        RunState::Stopped
                    };
                    detail.summary.result = runs::result_words(&detail.summary);
                }
                detail
            }
        }
    }

    /// The folder of an existing run to resume or roll back, or None when it never
    /// started. From the database, the folder is (re)written from it first.
    pub fn open_run(&self, id: &str) -> anyhow::Result<Option<super::run_dir::RunDir>> {
        if let Store::Postgres { db, local } = self {
            if !db.checkout(id, &runs::runs_dir(local).join(id), true)? {
                return Ok(None);
            }
        }
        Ok(super::run_dir::RunDir::open(self.local_dir(), id))
    }

    /// The database's last journal `seq` of a run (0 with a local folder or none).
    pub fn last_seq(&self, id: &str) -> anyhow::Result<i64> {
        match self {
            Store::Local(_) => Ok(0),
            Store::Postgres { db, .. } => Ok(db.last_seq(id)?),
        }
    }

    /// Takes the inventory for a run (see [`lock::acquire`], [`lease::acquire`]).
    pub fn acquire(
        &self,
        inventory: &str,
        run_id: &str,
        resuming: bool,
        lost: LeaseLost,
    ) -> Result<Held, LockError> {
        match self {
            Store::Local(dir) => lock::acquire(dir, inventory, run_id, resuming).map(Held::File),
            Store::Postgres { db, .. } => lease::acquire(db, inventory, run_id, resuming, lost)
                .map(|lease| Held::Lease(Box::new(lease))),
        }
    }

    /// Takes `regions` of run `run_id` for `controller` (`--regions`); only with a
    /// database. A new run also takes the inventory's lease for the run.
    pub fn acquire_regions(
        &self,
        inventory: &str,
        run_id: &str,
        regions: &[String],
        controller: &str,
        new_run: bool,
        lost: LeaseLost,
    ) -> Result<Held, LockError> {
        match self {
            Store::Local(_) => Err(LockError::Database(
                "--regions needs --state postgres://…: controllers share a run through the database".into(),
            )),
            Store::Postgres { db, .. } => super::pg::regions::acquire(
                db, inventory, run_id, regions, controller, new_run, lost,
            )
            .map(|lease| Held::Regions(Box::new(lease))),
        }
    }

    /// Each controller's part of a run split by region (empty otherwise, and always
    /// with a local folder).
    pub fn controller_parts(
        &self,
        id: &str,
        plan: Option<&crate::plan::Plan>,
    ) -> Vec<super::pg::regions::ControllerPart> {
        let Store::Postgres { db, .. } = self else {
            return Vec::new();
        };
        let region_of = |label: &str| {
            let plan = plan?;
            let host = label.rsplit_once('@')?.1;
            let spec = plan.inventory.hosts.iter().find(|h| h.name == host)?;
            Some((
                spec.region,
                plan.inventory.regions[spec.region].name.clone(),
            ))
        };
        super::pg::regions::parts(db, id, region_of).unwrap_or_else(|e| {
            tracing::warn!("cannot read the run's controllers: {e}");
            Vec::new()
        })
    }

    /// The region leases of a run split by region (empty otherwise, and always with a
    /// local folder).
    pub fn region_leases(&self, id: &str) -> Vec<super::pg::regions::RegionRow> {
        let Store::Postgres { db, .. } = self else {
            return Vec::new();
        };
        super::pg::regions::read(db, id).unwrap_or_else(|e| {
            tracing::warn!("cannot read the run's region leases: {e}");
            Vec::new()
        })
    }

    /// Who holds the inventory, and whether that run is alive: its process runs (a lock
    /// file; a holder on another machine counts as alive, since this one cannot tell),
    /// or its lease is renewed in time (the database). A run kept for approval is not.
    pub fn holder(&self, inventory: &str) -> anyhow::Result<Option<(LockInfo, bool)>> {
        match self {
            Store::Local(dir) => Ok(lock::holder(dir, inventory).map(|info| {
                let alive = if info.host == crate::state::hostname() {
                    lock::alive(info.pid, &info.host)
                } else {
                    !info.awaiting_approval
                };
                (info, alive)
            })),
            Store::Postgres { db, .. } => Ok(lease::read(db, inventory)?.map(|row| {
                let live = row.live && !row.info.awaiting_approval;
                (row.info, live)
            })),
        }
    }

    /// Breaks the inventory's lock or lease; returns who held it. A lease is broken
    /// with its run's region leases, its holders fenced off ([`super::pg::fence`]).
    pub fn unlock(&self, inventory: &str) -> anyhow::Result<Option<LockInfo>> {
        match self {
            Store::Local(dir) => Ok(lock::unlock(dir, inventory)?),
            Store::Postgres { db, .. } => {
                use super::pg::fence::{break_lease, Unlocked};
                match break_lease(db, inventory, &unlocker(), false)? {
                    Unlocked::NotLocked => Ok(None),
                    Unlocked::Refused(info) => Err(LockError::Live(Box::new(info)).into()),
                    Unlocked::Broken(broken) => Ok(Some(broken.info)),
                }
            }
        }
    }

    /// Stores a new run's snapshot (written into `folder` just before).
    pub fn create_run(
        &self,
        id: &str,
        inventory: &str,
        playbook: &str,
        folder: &Path,
    ) -> anyhow::Result<()> {
        match self {
            Store::Local(_) => Ok(()),
            Store::Postgres { db, .. } => db.create_run(id, inventory, playbook, folder),
        }
    }

    /// The run's journal: its file in the run folder, mirrored into the database under
    /// the lease `held` when there is one.
    pub fn journal(
        &self,
        path: &Path,
        run_id: &str,
        held: &Held,
        lost: LeaseLost,
    ) -> std::io::Result<Journal> {
        let mirror: Option<Box<dyn Mirror>> = match (self, held) {
            (Store::Postgres { db, .. }, Held::Lease(lease)) => Some(Box::new(PgSink::new(
                (**db).clone(),
                run_id.to_string(),
                lease.info.inventory.clone(),
                lease.holder.clone(),
                Fence::Inventory,
                lost,
            ))),
            (Store::Postgres { db, .. }, Held::Regions(lease)) => Some(Box::new(PgSink::new(
                (**db).clone(),
                run_id.to_string(),
                lease.inventory.clone(),
                lease.holder.clone(),
                Fence::Regions {
                    count: lease.regions.len(),
                    controller: lease.controller.clone(),
                },
                lost,
            ))),
            _ => None,
        };
        Journal::create_mirrored(path, mirror)
    }

    /// Refuses to go on with a run read from the database (its journal copied into
    /// `run_dir`) when the database has more records by now: its controller was still
    /// writing when the run was read, so what it was read as is stale.
    pub fn check_current(&self, run_dir: &super::run_dir::RunDir) -> anyhow::Result<()> {
        let Store::Postgres { db, .. } = self else {
            return Ok(());
        };
        let read = super::journal::read_lenient(&run_dir.journal_path())?
            .records
            .len() as i64;
        let now = db.record_count(&run_dir.id)?;
        if read != now {
            anyhow::bail!(
                "run {} moved on while it was being reopened ({read} journal records, now {now}): its controller was still writing\n  hint: run the same command again",
                run_dir.id
            );
        }
        Ok(())
    }
}

/// Who runs this `pony unlock`, as a fence records it: `user@machine (pid N)`.
pub fn unlocker() -> String {
    format!(
        "{}@{} (pid {})",
        crate::state::current_user(),
        crate::state::hostname(),
        std::process::id()
    )
}
