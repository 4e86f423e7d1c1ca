//! PostgreSQL as a state backend (`--state postgres://…`): runs, journal and leases in
//! the database ([`super`]), and this machine's copy of the runs it works on in the
//! local state folder.
//!
//! With a database, the controller still writes its run folder under the local state
//! folder as a copy (snapshot, `journal.jsonl`, host logs); what other machines see,
//! resume and roll back is what the database holds. Reading a run from the database
//! writes its snapshot into the local folder, so the plan rebuilds from files exactly as
//! for a local run.

use super::fence::{self, Unlocked as Broke};
use super::lease::{self, Lease};
use super::regions::{self, RegionLease};
use super::sink::{Fence, PgSink};
use super::{control, PgError, PgStore};
use crate::control::{ControlCommand, ControlRequest, Operator};
use crate::state::backend::{
    Access, Backend, Delivery, Fenced, Forward, Held, Hold, OpenedRun, RemoteControl, Unlocked,
};
use crate::state::deadline::{LeaseClock, LeaseLost};
use crate::state::journal::{merge, Journal, Mirror, Record};
use crate::state::lock::{LockError, LockInfo};
use crate::state::run_dir::RunDir;
use crate::state::runs::{self, ResolveError, RunDetail, RunState};
use crate::state::split::{ControllerPart, RegionRow, SplitFeed};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// A state database, and `local`, the state folder that keeps this machine's copy of
/// the runs it works on.
#[derive(Debug)]
pub struct PgBackend {
    db: PgStore,
    local: PathBuf,
}

impl PgBackend {
    /// Connects to `url` and checks its schema and the role's privileges for `access`
    /// (a writing command migrates the schema first if its role may).
    pub fn open(
        url: &str,
        lease: Duration,
        access: Access,
        local: PathBuf,
    ) -> Result<PgBackend, PgError> {
        Ok(PgBackend {
            db: PgStore::open_as(url, lease, access)?,
            local,
        })
    }
}

impl Backend for PgBackend {
    fn local_dir(&self) -> &Path {
        &self.local
    }

    fn place(&self) -> PathBuf {
        PathBuf::from(self.db.shown())
    }

    fn empty_note(&self) -> Option<String> {
        (!self.db.created()).then(|| format!(
            "pony has not created its schema `{}` there yet: `pony db migrate`, run as a role with CREATE on the database, creates it (so does the first deploy of such a role)",
            self.db.schema()
        ))
    }

    fn list(&self) -> anyhow::Result<Vec<String>> {
        Ok(self.db.list()?)
    }

    fn resolve(&self, run: &str) -> Result<String, ResolveError> {
        let ids = self.db.list().map_err(|e| ResolveError::Read {
            dir: self.place(),
            source: std::io::Error::other(e.to_string()),
        })?;
        runs::resolve_among(ids, run, self.place())
    }

    fn read_run(&self, id: &str, snapshot: bool) -> RunDetail {
        let (db, local) = (&self.db, &self.local);
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
        let split_running = regions::read(db, id)
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

    fn open_run(&self, id: &str) -> anyhow::Result<Option<OpenedRun>> {
        let mut notes = Vec::new();
        let folder = runs::runs_dir(&self.local).join(id);
        let path = folder.join("journal.jsonl");
        // This machine's copy, read before the database's replaces the folder.
        let local_records = match crate::state::journal::read_lenient(&path) {
            Ok(read) => read.records,
            Err(_) => Vec::new(),
        };
        if !self.db.checkout(id, &folder, false)? {
            return Ok(None);
        }
        let (db_records, _) = self.db.records(id)?;
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
        Ok(RunDir::open(&self.local, id).map(|dir| OpenedRun { dir, notes }))
    }

    fn check_current(&self, run_dir: &RunDir) -> anyhow::Result<()> {
        let read = crate::state::journal::read_lenient(&run_dir.journal_path())?.records;
        let (now, _) = self.db.records(&run_dir.id)?;
        let moved = merge::diff(&read, &now).db_only.len();
        if moved > 0 {
            anyhow::bail!(
                "run {} moved on while it was being reopened ({moved} journal record(s) written since): its controller was still writing\n  hint: run the same command again",
                run_dir.id
            );
        }
        Ok(())
    }

    fn last_seq(&self, id: &str) -> anyhow::Result<i64> {
        Ok(self.db.last_seq(id)?)
    }

    fn create_run(
        &self,
        id: &str,
        inventory: &str,
        playbook: &str,
        folder: &Path,
    ) -> anyhow::Result<()> {
        self.db.create_run(id, inventory, playbook, folder)
    }

    fn acquire(
        &self,
        inventory: &str,
        run_id: &str,
        resuming: bool,
        lost: LeaseLost,
    ) -> Result<Held, LockError> {
        lease::acquire(&self.db, inventory, run_id, resuming, lost).map(|lease| {
            Held::new(PgHold {
                db: self.db.clone(),
                lease: HeldLease::Inventory(lease),
            })
        })
    }

    fn acquire_regions(
        &self,
        inventory: &str,
        run_id: &str,
        regions: &[String],
        controller: &str,
        new_run: bool,
        lost: LeaseLost,
    ) -> Result<Held, LockError> {
        regions::acquire(
            &self.db, inventory, run_id, regions, controller, new_run, lost,
        )
        .map(|lease| {
            Held::new(PgHold {
                db: self.db.clone(),
                lease: HeldLease::Regions(lease),
            })
        })
    }

    fn lease_clock(&self, asked: Instant) -> Option<Arc<LeaseClock>> {
        self.db.lease_clock().renewed(asked);
        Some(self.db.lease_clock().clone())
    }

    fn lease(&self) -> Duration {
        self.db.lease
    }

    fn holder(&self, inventory: &str) -> anyhow::Result<Option<(LockInfo, bool)>> {
        Ok(lease::read(&self.db, inventory)?.map(|row| {
            let live = row.live && !row.info.awaiting_approval;
            (row.info, live)
        }))
    }

    fn unlock(&self, inventory: &str, force: bool) -> anyhow::Result<Option<Unlocked>> {
        match fence::break_lease(&self.db, inventory, &unlocker(), force)? {
            Broke::NotLocked => Ok(None),
            // A run took the lease since it was read: it is live now.
            Broke::Refused(info) => Err(LockError::Live(Box::new(info)).into()),
            Broke::Broken(broken) => Ok(Some(Unlocked {
                info: broken.info,
                live: broken.live,
                fenced: Some(broken.fenced),
            })),
        }
    }

    fn wait_stopped(
        &self,
        fenced: &[Fenced],
        within: Duration,
    ) -> anyhow::Result<Vec<(Fenced, Option<String>)>> {
        Ok(fence::wait_stopped(&self.db, fenced, within)?)
    }

    fn controller_parts(&self, id: &str, plan: Option<&crate::plan::Plan>) -> Vec<ControllerPart> {
        let region_of = |label: &str| {
            let plan = plan?;
            let host = label.rsplit_once('@')?.1;
            let spec = plan.inventory.hosts.iter().find(|h| h.name == host)?;
            Some((
                spec.region,
                plan.inventory.regions[spec.region].name.clone(),
            ))
        };
        regions::parts(&self.db, id, region_of).unwrap_or_else(|e| {
            tracing::warn!("cannot read the run's controllers: {e}");
            Vec::new()
        })
    }

    fn region_leases(&self, id: &str) -> Vec<RegionRow> {
        regions::read(&self.db, id).unwrap_or_else(|e| {
            tracing::warn!("cannot read the run's region leases: {e}");
            Vec::new()
        })
    }

    fn follow_split(
        &self,
        run_id: &str,
        after: i64,
        regions: &[String],
    ) -> std::io::Result<SplitFeed> {
        super::split::follow(self.db.clone(), run_id.to_string(), after, regions)
    }

    fn earlier_approvals(&self, run_id: &str) -> anyhow::Result<Vec<String>> {
        Ok(control::earlier_approvals(&self.db, run_id)?)
    }

    fn remote_control(
        &self,
        run_id: &str,
        controller: &str,
        requests: UnboundedSender<ControlRequest>,
        split: bool,
    ) -> RemoteControl {
        let listener = control::Listener::start(
            self.db.clone(),
            run_id.to_string(),
            controller.to_string(),
            requests,
            split,
        )
        .map_err(|e| {
            tracing::warn!("live control through the state database is off for this run: {e}")
        })
        .ok()
        .map(|listener| Box::new(listener) as Box<dyn Send + Sync>);
        // A split run's controllers each ask at their gates; an answer given at one
        // terminal goes to the others through the database.
        let forward = split.then(|| {
            let db = self.db.clone();
            let (run_id, controller) = (run_id.to_string(), controller.to_string());
            Arc::new(move |wave: &str| {
                let command = ControlCommand::Approve {
                    wave: wave.to_string(),
                };
                Ok(control::forward(
                    &db,
                    &run_id,
                    &command,
                    &this_operator(),
                    &controller,
                )?)
            }) as Forward
        });
        RemoteControl { listener, forward }
    }

    fn send_control(&self, id: &str, command: &ControlCommand) -> anyhow::Result<Delivery> {
        Ok(
            match control::send(&self.db, id, command, &this_operator())? {
                control::Sent::NotRunning => Delivery::NotRunning {
                    why: "no controller of it holds a live lease".into(),
                },
                control::Sent::Answered {
                    answers,
                    gone,
                    silent,
                } => Delivery::Answered {
                    answers,
                    gone,
                    silent,
                },
            },
        )
    }
}

/// This process sending a command itself (through the database, or forwarding an
/// answer given at its terminal): what it reports of itself.
fn this_operator() -> Operator {
    Operator {
        user: crate::process::current_user(),
        host: crate::process::hostname(),
        pid: std::process::id(),
    }
}

/// The lease a run holds in the database, and the database for its journal.
struct PgHold {
    db: PgStore,
    lease: HeldLease,
}

enum HeldLease {
    /// The inventory's lease, for a run with one controller.
    Inventory(Lease),
    /// This controller's regions of a run split between controllers (`--regions`).
    Regions(RegionLease),
}

impl Hold for PgHold {
    fn holder(&self) -> Option<&str> {
        Some(match &self.lease {
            HeldLease::Inventory(lease) => &lease.holder,
            HeldLease::Regions(regions) => &regions.holder,
        })
    }

    fn journal(&self, path: &Path, run_id: &str, lost: LeaseLost) -> std::io::Result<Journal> {
        let (inventory, holder, fence) = match &self.lease {
            HeldLease::Inventory(lease) => (&lease.info.inventory, &lease.holder, Fence::Inventory),
            HeldLease::Regions(lease) => (
                &lease.inventory,
                &lease.holder,
                Fence::Regions {
                    count: lease.regions.len(),
                    controller: lease.controller.clone(),
                },
            ),
        };
        let sink = PgSink::new(
            self.db.clone(),
            run_id.to_string(),
            inventory.clone(),
            holder.clone(),
            fence,
            lost,
            unsent(&self.db, run_id, path),
        )?;
        Journal::create_mirrored(path, Some(Box::new(sink) as Box<dyn Mirror>))
    }

    fn keep_for_approval(self: Box<Self>) {
        match self.lease {
            HeldLease::Inventory(lease) => lease.keep_for_approval(),
            // The run's inventory lease lives on with the other controllers' regions;
            // this controller's regions are left to expire, for `resume --regions`.
            HeldLease::Regions(regions) => regions.keep(),
        }
    }

    fn leave_with_work_left(self: Box<Self>) {
        if let HeldLease::Regions(regions) = self.lease {
            regions.abandon();
        }
    }

    fn broken_by(&self) -> Option<anyhow::Result<Option<String>>> {
        let holder = self.holder()?;
        Some(fence::broken_by(&self.db, holder).map_err(Into::into))
    }

    fn confirm_stopped(&self, outcome: &str) -> anyhow::Result<()> {
        match self.holder() {
            Some(holder) => Ok(fence::confirm_stopped(&self.db, holder, outcome)?),
            None => Ok(()),
        }
    }
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
    let local = match crate::state::journal::read_lenient(path) {
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
        Ok::<_, PgError>(
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
