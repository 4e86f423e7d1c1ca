//! The local state folder as a state backend (the default): `<state dir>/runs` holds the
//! run folders, `<state dir>/locks` one lock file per inventory ([`crate::state::lock`]),
//! and each running run listens on its folder's control socket ([`control`]). One
//! machine, one controller per run: no region split, no fencing, no remote control.

pub mod control;

use super::backend::{Backend, Delivery, Fenced, Held, Hold, OpenedRun, RemoteControl, Unlocked};
use super::deadline::{LeaseClock, LeaseLost};
use super::journal::Journal;
use super::lock::{self, InventoryLock, LockError, LockInfo};
use super::run_dir::RunDir;
use super::runs::{self, ResolveError, RunDetail};
use super::split::{ControllerPart, RegionRow, SplitFeed};
use crate::control::{Answer, ControlCommand, ControlRequest};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// The state folder `dir`.
#[derive(Debug)]
pub struct LocalStore {
    dir: PathBuf,
}

impl LocalStore {
    pub fn new(dir: PathBuf) -> LocalStore {
        LocalStore { dir }
    }
}

impl Backend for LocalStore {
    fn local_dir(&self) -> &Path {
        &self.dir
    }

    fn place(&self) -> PathBuf {
        runs::runs_dir(&self.dir)
    }

    fn empty_note(&self) -> Option<String> {
        None
    }

    fn list(&self) -> anyhow::Result<Vec<String>> {
        Ok(runs::list(&self.dir)?)
    }

    fn resolve(&self, run: &str) -> Result<String, ResolveError> {
        runs::resolve(&self.dir, run)
    }

    fn read_run(&self, id: &str, _snapshot: bool) -> RunDetail {
        runs::read(&self.dir, id)
    }

    fn open_run(&self, id: &str) -> anyhow::Result<Option<OpenedRun>> {
        Ok(RunDir::open(&self.dir, id).map(|dir| OpenedRun {
            dir,
            notes: Vec::new(),
        }))
    }

    fn check_current(&self, _run_dir: &RunDir) -> anyhow::Result<()> {
        Ok(())
    }

    fn last_seq(&self, _id: &str) -> anyhow::Result<i64> {
        Ok(0)
    }

    fn create_run(&self, _: &str, _: &str, _: &str, _: &Path) -> anyhow::Result<()> {
        Ok(())
    }

    fn acquire(
        &self,
        inventory: &str,
        run_id: &str,
        resuming: bool,
        _lost: LeaseLost,
    ) -> Result<Held, LockError> {
        lock::acquire(&self.dir, inventory, run_id, resuming).map(|lock| Held::new(LockFile(lock)))
    }

    fn acquire_regions(
        &self,
        _: &str,
        _: &str,
        _: &[String],
        _: &str,
        _: bool,
        _: LeaseLost,
    ) -> Result<Held, LockError> {
        Err(LockError::Database(
            "--regions needs --state postgres://…: controllers share a run through the database"
                .into(),
        ))
    }

    fn lease_clock(&self, _asked: Instant) -> Option<Arc<LeaseClock>> {
        None
    }

    fn lease(&self) -> Duration {
        Duration::ZERO
    }

    fn holder(&self, inventory: &str) -> anyhow::Result<Option<(LockInfo, bool)>> {
        Ok(lock::holder(&self.dir, inventory).map(|info| {
            let alive = alive(&info);
            (info, alive)
        }))
    }

    fn unlock(&self, inventory: &str, force: bool) -> anyhow::Result<Option<Unlocked>> {
        let live = lock::holder(&self.dir, inventory).is_some_and(|info| alive(&info));
        if let Some(holder) = lock::holder(&self.dir, inventory).filter(|_| live && !force) {
            return Err(LockError::Live(Box::new(holder)).into());
        }
        Ok(lock::unlock(&self.dir, inventory)?.map(|info| Unlocked {
            info,
            live,
            fenced: None,
        }))
    }

    fn wait_stopped(
        &self,
        _fenced: &[Fenced],
        _within: Duration,
    ) -> anyhow::Result<Vec<(Fenced, Option<String>)>> {
        Ok(Vec::new())
    }

    fn controller_parts(&self, _: &str, _: Option<&crate::plan::Plan>) -> Vec<ControllerPart> {
        Vec::new()
    }

    fn region_leases(&self, _id: &str) -> Vec<RegionRow> {
        Vec::new()
    }

    fn follow_split(&self, _: &str, _: i64, _: &[String]) -> std::io::Result<SplitFeed> {
        Err(std::io::Error::other(
            "--regions needs --state postgres://…: controllers share a run through the database",
        ))
    }

    fn earlier_approvals(&self, _run_id: &str) -> anyhow::Result<Vec<String>> {
        Ok(Vec::new())
    }

    fn remote_control(
        &self,
        _: &str,
        _: &str,
        _: UnboundedSender<ControlRequest>,
        _: bool,
    ) -> RemoteControl {
        RemoteControl::default()
    }

    fn send_control(&self, id: &str, command: &ControlCommand) -> anyhow::Result<Delivery> {
        let folder = runs::runs_dir(&self.dir).join(id);
        Ok(match control::send(&folder, command) {
            Ok(reply) => Delivery::Answered {
                answers: vec![Answer {
                    controller: String::new(),
                    reply,
                }],
                gone: Vec::new(),
                silent: Vec::new(),
            },
            Err(control::SendError::NotRunning(error)) => Delivery::NotRunning {
                why: error.to_string(),
            },
            Err(error @ control::SendError::PermissionDenied { .. }) => {
                Delivery::Denied(error.to_string())
            }
            Err(error @ control::SendError::NoAnswer(_)) => Delivery::NoAnswer(error.to_string()),
        })
    }
}

/// Whether the lock's run is alive: its process runs; a holder on another machine
/// counts as alive (this one cannot tell) unless it waits for approval.
fn alive(info: &LockInfo) -> bool {
    if info.host == crate::process::hostname() {
        lock::alive(info.pid, &info.host)
    } else {
        !info.awaiting_approval
    }
}

/// An inventory's lock file, held for a run.
struct LockFile(InventoryLock);

impl Hold for LockFile {
    fn holder(&self) -> Option<&str> {
        None
    }

    fn journal(&self, path: &Path, _run_id: &str, _lost: LeaseLost) -> std::io::Result<Journal> {
        Journal::create_mirrored(path, None)
    }

    fn keep_for_approval(self: Box<Self>) {
        self.0.keep_for_approval()
    }

    fn leave_with_work_left(self: Box<Self>) {}

    fn broken_by(&self) -> Option<anyhow::Result<Option<String>>> {
        None
    }

    fn confirm_stopped(&self, _outcome: &str) -> anyhow::Result<()> {
        Ok(())
    }
}
