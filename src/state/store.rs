//! Where runs, journals and locks live, as one seam for the commands: the local state
//! folder (the default, unchanged) or a PostgreSQL database (`--state postgres://…`).
//!
//! With a database, the controller still writes its run folder under the local state
//! folder as a copy (snapshot, `journal.jsonl`, host logs); what other machines see,
//! resume and roll back is what the database holds. Reading a run from the database
//! writes its snapshot into the local folder, so the plan rebuilds from files exactly as
//! for a local run.

use super::journal::{merge, Journal, Mirror, Record};
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
    /// started. From the database, the folder is (re)written from it first, and its
    /// journal becomes the database's merged with the records only this machine's copy
    /// holds (a controller here journaled them while the database was out of reach:
    /// they count, and are sent to the database by the run that goes on). The notes say
    /// what was merged, or that another machine's local journal may hold more (each a
    /// whole line, `note: …` or `warning: …`).
    pub fn open_run(&self, id: &str) -> anyhow::Result<Option<OpenedRun>> {
        let mut notes = Vec::new();
        if let Store::Postgres { db, local } = self {
            let folder = runs::runs_dir(local).join(id);
            let path = folder.join("journal.jsonl");
            // This machine's copy, read before the database's replaces the folder.
            let local_records = match super::journal::read_lenient(&path) {
                Ok(read) => read.records,
                Err(_) => Vec::new(),
            };
            if !db.checkout(id, &folder, false)? {
                return Ok(None);
            }
            let (db_records, _) = db.records(id)?;
            let (records, added) = merge::merged(&local_records, &db_records);
            let mut text = String::new();
            for record in &records {
                text.push_str(&serde_json::to_string(record)?);
                text.push('\n');
            }
            let tmp = folder.join("journal.jsonl.tmp");
            std::fs::write(&tmp, text)
                .and_then(|_| std::fs::rename(&tmp, &path))
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            if added > 0 {
                notes.push(format!(
                    "note: merged {added} record(s) of this machine's local journal {} that the state database lacks (journaled while it was out of reach); tasks they show succeeded do not run again, and the records are sent to the database as the run goes on",
                    path.display()
                ));
            } else if let Some(note) = elsewhere(&db_records, &local_records) {
                notes.push(note);
            }
        }
        Ok(super::run_dir::RunDir::open(self.local_dir(), id).map(|dir| OpenedRun { dir, notes }))
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
                let alive = if info.host == crate::process::hostname() {
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
                unsent(db, run_id, path),
            )?)),
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
                unsent(db, run_id, path),
            )?)),
            _ => None,
        };
        Journal::create_mirrored(path, mirror)
    }

    /// Refuses to go on with a run read from the database (its journal copied into
    /// `run_dir`) when the database has records the copy lacks by now: its controller
    /// was still writing when the run was read, so what it was read as is stale.
    pub fn check_current(&self, run_dir: &super::run_dir::RunDir) -> anyhow::Result<()> {
        let Store::Postgres { db, .. } = self else {
            return Ok(());
        };
        let read = super::journal::read_lenient(&run_dir.journal_path())?.records;
        let (now, _) = db.records(&run_dir.id)?;
        let moved = merge::diff(&read, &now).db_only.len();
        if moved > 0 {
            anyhow::bail!(
                "run {} moved on while it was being reopened ({moved} journal record(s) written since): its controller was still writing\n  hint: run the same command again",
                run_dir.id
            );
        }
        Ok(())
    }
}

/// A run reopened from its folder, and what its reading found worth saying.
pub struct OpenedRun {
    pub dir: super::run_dir::RunDir,
    pub notes: Vec<String>,
}

/// The note for a run whose last controller, by the database's journal, did not record
/// the run's end there and did not write this state folder's copy: its own local journal
/// (on the machine the record names) may hold records the database lacks.
fn elsewhere(db: &[Record], local: &[Record]) -> Option<String> {
    let (_, record) = merge::unfinished_controller(db)?;
    let (pid, user, host) = match record {
        Record::RunStarted {
            pid, user, host, ..
        }
        | Record::RunResumed {
            pid, user, host, ..
        } => (pid, user, host),
        _ => return None,
    };
    if *host == crate::process::hostname() && local.contains(record) {
        return None;
    }
    Some(format!(
        "warning: the run's last controller (pid {pid} on {host}, user {user}) did not record the run's end in the state database: the local journal on {host} (its --state-dir) may hold records the database lacks, and tasks that succeeded there would run again here; to merge them, resume the run on {host} with that state folder"
    ))
}

/// The records of the run's local journal at `path` that the database lacks (JSON
/// lines, in order): the outbox a run starts with. Read on a connection of its own,
/// waiting at most a call's bound; if the database cannot be read, nothing is queued
/// (the records stay in the local journal).
fn unsent(db: &PgStore, run_id: &str, path: &Path) -> Vec<String> {
    let local = match super::journal::read_lenient(path) {
        Ok(read) if !read.records.is_empty() => read.records,
        _ => return Vec::new(),
    };
    let (store, id) = (db.clone(), run_id.to_string());
    let read = db.bounded("reading the journal", db.bound() * 3, move || {
        let mut client = store.connect()?;
        let rows = client
            .query(
                "SELECT record::text FROM journal WHERE run_id = $1 ORDER BY seq",
                &[&id],
            )
            .map_err(|e| store.query("reading the journal", e))?;
        Ok::<_, super::pg::PgError>(
            rows.iter()
                .filter_map(|r| serde_json::from_str::<Record>(r.get(0)).ok())
                .collect::<Vec<Record>>(),
        )
    });
    match read.and_then(|r| r) {
        Ok(in_db) => merge::diff(&local, &in_db)
            .local_only
            .into_iter()
            .map(|i| serde_json::to_string(&local[i]).expect("records serialize"))
            .collect(),
        Err(e) => {
            tracing::warn!("cannot compare the local journal with the state database's ({e}): records only the local journal holds are not sent");
            Vec::new()
        }
    }
}

/// Who runs this `pony unlock`, as a fence records it: `user@machine (pid N)`.
pub fn unlocker() -> String {
    format!(
        "{}@{} (pid {})",
        crate::process::current_user(),
        crate::process::hostname(),
        std::process::id()
    )
}
