//! The state seam: what a backend that keeps runs, journals and locks does for the
//! commands and the run. The local state folder (`state/local/`) and PostgreSQL
//! (`state/pg/`) implement [`Backend`]; [`super::store::Store::open`] picks one from the
//! settings. Callers never ask which backend they have: where the backends behave
//! differently, that is a method here, and its doc comment says how.
//!
//! A held inventory ([`Hold`]) is the backend's too: a lock file, or a lease in the
//! database with the journal mirrored under it.

use super::deadline::{LeaseClock, LeaseLost};
use super::journal::Journal;
use super::lock::{LockError, LockInfo};
use super::run_dir::RunDir;
use super::runs::{ResolveError, RunDetail};
use super::split::{ControllerPart, RegionRow, SplitFeed};
use crate::control::{Answer, ControlCommand, ControlRequest};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// What a command does with the state, and so (in a state database) which privileges its
/// role needs (besides `CONNECT` on the database, which PUBLIC has by default). A folder
/// needs none of them: its files' permissions decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `status`, `history`, `watch`: `USAGE` on the schema, `SELECT` on its tables. Never creates
    /// or migrates anything; a schema not created yet reads as no runs.
    Read,
    /// `pause`, `continue`, `abort`, `approve`: [`Access::Read`], plus `INSERT` on
    /// `control` and `USAGE` on its id's sequence.
    Control,
    /// `deploy`, `resume`, `join`, `rollback`, `unlock`: `USAGE` on the schema, `SELECT`,
    /// `INSERT`, `UPDATE`, `DELETE` on its tables (`SELECT` only on
    /// `schema_migrations`), `USAGE` on its sequences. A missing schema is created first
    /// when the role may (`CREATE` on the database; `CREATE` on the schema when it exists
    /// without pony's tables), else refused naming that privilege; an older one is
    /// migrated only by `pony db migrate`.
    Write,
}

/// A state backend. Every method is the backend's whole answer: a caller never looks
/// past it at which backend it has.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// The local state folder (copies of runs, host keys, local hosts' folders): the
    /// whole state of the local backend, this machine's copy with a database.
    fn local_dir(&self) -> &Path;

    /// Where runs are listed from, for messages: the runs folder, or the database as
    /// shown (password redacted).
    fn place(&self) -> PathBuf;

    /// Why the backend lists no runs when that is not only because none was started:
    /// a state database where no pony created the schema yet. None for a folder.
    fn empty_note(&self) -> Option<String>;

    /// Run ids, newest first.
    fn list(&self) -> anyhow::Result<Vec<String>>;

    /// An exact run id or a unique prefix of one.
    fn resolve(&self, run: &str) -> Result<String, ResolveError>;

    /// A run's journal folded into its state. With a database, `snapshot` first copies
    /// the run's snapshot into the local folder (for counting pending tasks), and whether
    /// the run is running is whether a live lease holds it; a folder reads its own files.
    fn read_run(&self, id: &str, snapshot: bool) -> RunDetail;

    /// The folder of an existing run to resume or roll back, or None when it never
    /// started. A database (re)writes the folder from its rows first, and merges into
    /// its journal the records only this machine's copy holds; the notes say what was
    /// merged, or that another machine's local journal may hold more (each a whole
    /// line, `note: …` or `warning: …`). A folder opens what it has, with no notes.
    fn open_run(&self, id: &str) -> anyhow::Result<Option<OpenedRun>>;

    /// Refuses to go on with a run read from a database (its journal copied into
    /// `run_dir`) when the database has records the copy lacks by now: its controller
    /// was still writing when the run was read. A folder is always current.
    fn check_current(&self, run_dir: &RunDir) -> anyhow::Result<()>;

    /// The database's last journal `seq` of a run (0 for a folder, which has none).
    fn last_seq(&self, id: &str) -> anyhow::Result<i64>;

    /// Stores a new run's snapshot (written into `folder` just before); the folder
    /// backend has it there already.
    fn create_run(
        &self,
        id: &str,
        inventory: &str,
        playbook: &str,
        folder: &Path,
    ) -> anyhow::Result<()>;

    /// Takes the inventory for a run: a lock file, or a lease renewed by a heartbeat
    /// (`lost` is told when it is lost). A resume may take over its own run's hold.
    fn acquire(
        &self,
        inventory: &str,
        run_id: &str,
        resuming: bool,
        lost: LeaseLost,
    ) -> Result<Held, LockError>;

    /// Takes `regions` of run `run_id` for `controller` (`--regions`); a new run also
    /// takes the inventory for the run. Only a backend that several controllers share
    /// can: the folder refuses, saying so.
    #[allow(clippy::too_many_arguments)]
    fn acquire_regions(
        &self,
        inventory: &str,
        run_id: &str,
        regions: &[String],
        controller: &str,
        new_run: bool,
        lost: LeaseLost,
    ) -> Result<Held, LockError>;

    /// The controller's own clock of its hold, started at `asked` (when the hold was
    /// asked for: the database counts from later): the run stops once it passes. None
    /// for a lock file, which does not expire.
    fn lease_clock(&self, asked: Instant) -> Option<Arc<LeaseClock>>;

    /// How long a hold lasts without renewal (what `pony unlock --force` waits at most
    /// for fenced controllers to say they stopped).
    fn lease(&self) -> Duration;

    /// Who holds the inventory, and whether that run is alive: its process runs (a lock
    /// file; a holder on another machine counts as alive, since this one cannot tell),
    /// or its lease is renewed in time (the database). A run kept for approval is not.
    fn holder(&self, inventory: &str) -> anyhow::Result<Option<(LockInfo, bool)>>;

    /// Breaks the inventory's hold (a live one only with `force`, else
    /// [`LockError::Live`]); None when nothing held it. A database breaks a lease with
    /// its run's region leases and fences the holders off ([`Unlocked::fenced`]); a lock
    /// file is only removed, its live holder goes on.
    fn unlock(&self, inventory: &str, force: bool) -> anyhow::Result<Option<Unlocked>>;

    /// Waits, at most `within`, until each live holder `unlock` fenced off says it
    /// stopped; returns each live one with what it said (None: no word in time).
    fn wait_stopped(
        &self,
        fenced: &[Fenced],
        within: Duration,
    ) -> anyhow::Result<Vec<(Fenced, Option<String>)>>;

    /// Each controller's part of a run split by region (empty otherwise, and always for
    /// a folder). `plan` names the regions of hosts.
    fn controller_parts(&self, id: &str, plan: Option<&crate::plan::Plan>) -> Vec<ControllerPart>;

    /// The region leases of a run split by region (empty otherwise, and always for a
    /// folder).
    fn region_leases(&self, id: &str) -> Vec<RegionRow>;

    /// Starts following the other controllers of split run `run_id` (results of the
    /// regions other than `regions`, journaled after `seq` `after`, and controllers
    /// lost). Only a shared backend can; [`Backend::acquire_regions`] refused before.
    fn follow_split(
        &self,
        run_id: &str,
        after: i64,
        regions: &[String],
    ) -> std::io::Result<SplitFeed>;

    /// The waves other controllers of a split run approved (a joining controller takes
    /// them as pre-approvals). None with a folder: its runs have one controller.
    fn earlier_approvals(&self, run_id: &str) -> anyhow::Result<Vec<String>>;

    /// Live control beyond the run folder's socket: a database's listener hands the
    /// commands sent to the run from any machine to `requests`, answering as
    /// `controller` (`joining`: a split run's new controller, which takes a pause in
    /// force first); for a split run, also the forwarding of approvals given at this
    /// controller's terminal. Nothing for a folder (its socket is all there is).
    fn remote_control(
        &self,
        run_id: &str,
        controller: &str,
        requests: UnboundedSender<ControlRequest>,
        split: bool,
    ) -> RemoteControl;

    /// Sends one live-control command to run `id` and gathers the answers: through the
    /// run folder's socket to the one process, or through the database to every live
    /// controller of the run.
    fn send_control(&self, id: &str, command: &ControlCommand) -> anyhow::Result<Delivery>;
}

/// The inventory held for a run, as its backend holds it.
pub trait Hold: Send {
    /// This hold's token in the backend's rows (None for a lock file).
    fn holder(&self) -> Option<&str>;

    /// The run's journal: its file at `path` in the run folder, mirrored into the
    /// database under this hold when there is one (`lost` is told when a write finds
    /// the hold gone).
    fn journal(&self, path: &Path, run_id: &str, lost: LeaseLost) -> std::io::Result<Journal>;

    /// The run waits for an approval: the hold stays (a lock file kept, a lease kept
    /// live) for the resume that answers it. A split run's controller leaves its
    /// regions to expire, for `resume --regions`.
    fn keep_for_approval(self: Box<Self>);

    /// The run stopped with work left: a controller of a split run marks its regions
    /// abandoned, so the others see them lost and `pony resume RUN --regions …` takes
    /// them over; a whole run's lock or lease is released as usual.
    fn leave_with_work_left(self: Box<Self>);

    /// For a hold that was fenced off (`pony unlock --force`): who broke it, if that is
    /// how it was lost. None when this kind of hold is never fenced (a lock file).
    fn broken_by(&self) -> Option<anyhow::Result<Option<String>>>;

    /// A fenced holder's last word: it stopped, and what became of its commands.
    fn confirm_stopped(&self, outcome: &str) -> anyhow::Result<()>;
}

/// The inventory held for a run (see [`Hold`]); dropping it releases it.
pub struct Held(Box<dyn Hold>);

impl Held {
    pub fn new(hold: impl Hold + 'static) -> Held {
        Held(Box::new(hold))
    }

    /// See [`Hold::journal`].
    pub fn journal(&self, path: &Path, run_id: &str, lost: LeaseLost) -> std::io::Result<Journal> {
        self.0.journal(path, run_id, lost)
    }

    /// See [`Hold::holder`].
    pub fn holder(&self) -> Option<&str> {
        self.0.holder()
    }

    /// See [`Hold::keep_for_approval`].
    pub fn keep_for_approval(self) {
        self.0.keep_for_approval()
    }

    /// See [`Hold::leave_with_work_left`].
    pub fn leave_with_work_left(self) {
        self.0.leave_with_work_left()
    }

    /// See [`Hold::broken_by`].
    pub fn broken_by(&self) -> Option<anyhow::Result<Option<String>>> {
        self.0.broken_by()
    }

    /// See [`Hold::confirm_stopped`].
    pub fn confirm_stopped(&self, outcome: &str) -> anyhow::Result<()> {
        self.0.confirm_stopped(outcome)
    }
}

/// A run reopened from its folder, and what its reading found worth saying.
pub struct OpenedRun {
    pub dir: RunDir,
    pub notes: Vec<String>,
}

/// A hold `pony unlock` broke: who held it, whether it was live, whom it fenced off.
#[derive(Debug, Clone)]
pub struct Unlocked {
    pub info: LockInfo,
    pub live: bool,
    /// The holders fenced off (a database: nothing they journal is accepted any more,
    /// and they stop); None when the backend cannot fence a holder off (a lock file): a
    /// live holder goes on working its hosts.
    pub fenced: Option<Vec<Fenced>>,
}

/// One holder a broken lease fenced off.
#[derive(Debug, Clone)]
pub struct Fenced {
    /// Its token in the lease rows.
    pub holder: String,
    /// Its `--controller` name in a run split by region.
    pub controller: Option<String>,
    pub machine: String,
    pub pid: i32,
    /// Whether its lease was live (renewed in time) when it was broken: only a live
    /// holder is waited for.
    pub live: bool,
}

impl Fenced {
    /// How messages name it: `controller ctl-a (pid 42 on ctl-1)` or `pid 42 on ctl-1`.
    pub fn describe(&self) -> String {
        match &self.controller {
            Some(name) => format!("controller {name} (pid {} on {})", self.pid, self.machine),
            None => format!("its controller (pid {} on {})", self.pid, self.machine),
        }
    }
}

/// Live control a backend adds to the run folder's socket ([`Backend::remote_control`]).
#[derive(Default)]
pub struct RemoteControl {
    /// Reads the commands sent to the run; dropping it stops the reading.
    pub listener: Option<Box<dyn Send + Sync>>,
    /// Sends an approval given at this controller's terminal to the run's other
    /// controllers.
    pub forward: Option<Forward>,
}

/// Sends an approval (a wave's name) to the run's other controllers.
pub type Forward = Arc<dyn Fn(&str) -> anyhow::Result<()> + Send + Sync>;

/// What became of a live-control command ([`Backend::send_control`]).
#[derive(Debug)]
pub enum Delivery {
    /// No process of the run takes commands; `why` says how that was found.
    NotRunning { why: String },
    /// The run is running, but this user may not talk to it (the text says whose it is).
    Denied(String),
    /// Connected, but no answer came (the text says what happened).
    NoAnswer(String),
    Answered {
        /// One answer per controller that gave one.
        answers: Vec<Answer>,
        /// Controllers live when it was sent that stopped before answering.
        gone: Vec<String>,
        /// Controllers still live that did not answer in time.
        silent: Vec<String>,
    },
}
