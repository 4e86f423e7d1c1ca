//! Events: the only output of the executor, the one vocabulary for what happened. The
//! journal is their first consumer (fields marked `serde(skip)` are what only it needs,
//! and a fact it keeps as is, like `VerifyCheck`, is one struct here: the event's payload,
//! and with its time the journal's record); reporters (terminal, plain, JSON, JUnit) and
//! summaries are built from the same stream. The executor never prints and never writes
//! files.

use crate::secret::Redactor;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

/// Version of the JSON event schema (`docs/events.md`).
pub const SCHEMA_VERSION: u32 = 1;

/// Which task an event is about.
#[derive(Debug, Clone, Serialize)]
pub struct TaskRef {
    pub id: usize,
    pub step: String,
    pub host: String,
    pub region: String,
    pub cluster: String,
    pub wave: String,
    /// `step@host`, `step@region` or `step@run`: the task's name in the journal.
    #[serde(skip)]
    pub label: String,
}

/// What the journal keeps of a task that ran, besides its public event: the fields of its
/// `task_finished` record after the node, label, state, exit code and duration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub captures: Vec<(String, String)>,
    pub output_tail: String,
    pub error: Option<String>,
    /// Whether the task may have changed its host (something to roll back). False when
    /// a guard skipped it or it never reached the host: nothing to roll back.
    #[serde(default = "yes")]
    pub changed: bool,
    /// Whether the task reported a change (what a handler listens for): false also when
    /// an upload found its file in place or a `run` step's `changed_when` said so.
    /// Absent in journals written before handlers (then `changed` stands for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_changed: Option<bool>,
    /// The commands and their output, for the host's log (`logs/<host>.log`, not the
    /// journal).
    #[serde(skip)]
    pub log: String,
}

fn yes() -> bool {
    true
}

/// How a host ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostOutcome {
    Ok,
    Failed,
    RolledBack,
    RollbackFailed,
    Cancelled,
    /// Killed mid-way (a second Ctrl-C): some of its tasks ran, not all; `pony resume`
    /// finishes it.
    Incomplete,
    /// `unreachable: skip`: no connection could be made before any command ran; left
    /// alone, outside the failure budget.
    Unreachable,
}

/// The outcome of the whole run. One spelling everywhere: the `summary` event, the
/// journal's `run_finished` and `pony status`/`pony history` all write it snake_case
/// (`failed_rolled_back`). The aliases read journals written before that, which spelt it
/// as the Rust variant (`FailedRolledBack`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    #[serde(alias = "Succeeded")]
    Succeeded,
    #[serde(alias = "FailedRolledBack")]
    FailedRolledBack,
    #[serde(alias = "NeedsAttention")]
    NeedsAttention,
    #[serde(alias = "AwaitingApproval")]
    AwaitingApproval,
    #[serde(alias = "Interrupted")]
    Interrupted,
    /// `pony rollback` finished: every selected host is back on the old release.
    #[serde(alias = "RolledBack")]
    RolledBack,
}

#[derive(Debug, Clone, Serialize)]
pub struct RegionSummary {
    pub region: String,
    pub hosts: usize,
    pub ok: usize,
    pub failed: usize,
    pub rolled_back: usize,
    pub cancelled: usize,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        run_id: String,
        playbook: String,
        inventory: String,
        hosts: usize,
        tasks: usize,
        waves: Vec<String>,
        /// Hosts taking part, per region, in inventory order.
        regions: Vec<(String, usize)>,
    },
    WaveStarted {
        wave: String,
        hosts: usize,
    },
    GateWaiting {
        wave: String,
        /// `soak` (the wave's `pause:`), `verify` (the checks that run right before the approval
        /// question of a gate without a soak), `approve`, or `window <text>`.
        reason: GateReason,
        seconds: u64,
        /// When the wait ends (RFC 3339, UTC): the soak's end, the window's opening.
        #[serde(skip_serializing_if = "Option::is_none")]
        until: Option<String>,
        /// The time zone a change window is read in (`window …` only).
        #[serde(skip_serializing_if = "Option::is_none")]
        zone: Option<String>,
    },
    GatePassed {
        wave: String,
        #[serde(skip)]
        node: usize,
    },
    VerifyCheck(VerifyCheck),
    WaveSkipped(WaveSkipped),
    /// A cluster of the wave went beyond its failure budget: the gate does not pass and
    /// no later wave starts.
    WaveFailed {
        wave: String,
        reason: String,
        #[serde(skip)]
        node: usize,
    },
    TaskStarted {
        task: TaskRef,
    },
    TaskFinished {
        task: TaskRef,
        changed: bool,
        exit_code: Option<i32>,
        duration_ms: u64,
        attempts: u32,
        #[serde(skip)]
        record: TaskRecord,
    },
    TaskSkipped {
        task: TaskRef,
        reason: String,
        /// Present when a guard skipped it on its host (journaled); absent when it never
        /// ran because a dependency failed.
        #[serde(skip)]
        record: Option<TaskRecord>,
    },
    TaskFailed {
        task: TaskRef,
        exit_code: Option<i32>,
        error: String,
        stderr_tail: String,
        duration_ms: u64,
        attempts: u32,
        #[serde(skip)]
        record: TaskRecord,
    },
    /// A second Ctrl-C killed the running task: its host is left half-done.
    TaskInterrupted {
        task: TaskRef,
        /// What became of its command on the host: killed (confirmed), had ended, or
        /// could not be confirmed killed (and why).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        kill: String,
    },
    HostFinished {
        host: String,
        region: String,
        cluster: String,
        outcome: HostOutcome,
    },
    BudgetExceeded {
        cluster: String,
        region: String,
        failed_hosts: usize,
        max_failures: usize,
        action: String,
    },
    /// The run's failed hosts went beyond `max_failures_run`: `on_failure` applies to
    /// the whole run.
    RunBudgetExceeded {
        failed_hosts: usize,
        max_failures_run: usize,
        action: String,
    },
    /// A wave's failed hosts went beyond its `max_failures`: `on_failure` applies to the
    /// whole run.
    WaveBudgetExceeded {
        wave: String,
        failed_hosts: usize,
        max_failures: usize,
        action: String,
    },
    RollbackStarted {
        scope: String,
        hosts: usize,
    },
    RollbackTaskStarted {
        task: TaskRef,
    },
    RollbackTask {
        task: TaskRef,
        ok: bool,
        exit_code: Option<i32>,
        error: Option<String>,
        /// How long the rollback command took (0 when it could not be rendered).
        duration_ms: u64,
        /// The rollback command and its output, for the host's log.
        #[serde(skip)]
        log: String,
    },
    /// A rollback command that is not run because an earlier rollback of the same host
    /// failed: it undoes a task that the failed one's task needed (rollback runs in
    /// reverse dependency order). Its host ends `rollback_failed`.
    RollbackNotAttempted {
        task: TaskRef,
        /// The failed rollback's task, `step@host`.
        blocked_by: String,
        /// `not attempted: rollback of STEP@HOST failed`.
        reason: String,
        /// The line the host's log gets.
        #[serde(skip)]
        log: String,
    },
    RollbackFinished {
        scope: String,
        ok: bool,
    },
    HealthChecked(HealthChecked),
    Stopped {
        reason: String,
        /// The region that stopped; absent when the whole run stops.
        #[serde(skip_serializing_if = "Option::is_none")]
        region: Option<String>,
        /// Whether the hosts the stop concerns roll back (`abort --rollback`,
        /// `rollback-all`, `rollback-region`), rather than only start no more tasks.
        rollback: bool,
    },
    ControllerLost(ControllerLost),
    /// `pony watch`: a run's controller is gone (its pid no longer lives on its machine,
    /// or its database lease expired) while hosts were in flight, and no controller
    /// works on the run now. Sent by the watcher, once per dead controller.
    ControllerGone {
        run_id: String,
        /// The machine and pid of the controller that last ran it.
        machine: String,
        pid: u32,
        /// Hosts with a task started and never finished.
        hosts_in_flight: Vec<String>,
        /// The command that goes on with the run.
        resume: String,
    },
    Control(Control),
    Summary {
        run_id: String,
        outcome: RunOutcome,
        exit_code: i32,
        hosts: usize,
        ok: usize,
        failed: usize,
        rolled_back: usize,
        cancelled: usize,
        rollback_failed: usize,
        /// Hosts left half-done (some tasks ran, not all): `pony resume` finishes them.
        incomplete: Vec<String>,
        /// The wave whose failure stopped the rollout, if one did.
        stopped_wave: Option<String>,
        /// Rollbacks not run because an earlier rollback of their host failed
        /// (`step@host`; each also had its `rollback_not_attempted` event).
        rollbacks_not_attempted: Vec<String>,
        duration_ms: u64,
        regions: Vec<RegionSummary>,
        run_dir: String,
        /// The Ctrl-C/SIGTERM count (a lost lease counts too) this outcome took in; one
        /// beyond it came after the run's end (it ends the wait for notifiers). Not
        /// written: it is the controller's, not the run's.
        #[serde(skip)]
        interrupts_taken: u32,
    },
}

// The facts below are each one event and, with the time it was journaled, one journal
// record of the same name (`state::journal::Record`): one struct, written once.

/// One result of a wave's `verify:` check (one host, or for `compare` the canary hosts'
/// median against the baseline's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyCheck {
    pub wave: String,
    pub check: String,
    pub host: String,
    pub ok: bool,
    pub detail: String,
}

/// `pony resume --skip-failed-wave`: a person let the rollout past a failed wave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaveSkipped {
    pub wave: String,
    pub user: String,
}

/// A host's `health:` checks after its deploy or its rollback: whether they passed
/// within the playbook's `health.wait` (after a rollback the host is then rolled back,
/// else rollback failed), or `checked: false` when no check applies to the host (its
/// rollback is unverified).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthChecked {
    pub host: String,
    /// The host's region and cluster (absent from journals written before they were
    /// journaled).
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub cluster: String,
    /// `deploy` (its tasks all succeeded) or `rollback` (its rollback commands did).
    pub after: HealthAfter,
    pub checked: bool,
    pub ok: bool,
    /// The checks that did not pass, with what they said.
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// In a run split by region (`--regions`): another controller of the run is lost (its
/// region leases expired: it died, was cut off, or stopped with work left). Emitted once
/// per lost controller by each controller that sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControllerLost {
    /// The lost controller's name, machine and pid (not `controller`: that is the
    /// envelope's, the emitting controller's name).
    pub lost_controller: String,
    pub machine: String,
    pub pid: i32,
    /// Its regions, which no controller works on now.
    pub regions: Vec<String>,
    /// `strategy.on_controller_loss` (or `--on-controller-loss`) of this controller:
    /// `wait` for the regions to be taken over, or `stop`.
    pub policy: String,
    /// The command that takes the regions over, from any machine (absent from journals
    /// written before it was journaled).
    #[serde(default)]
    pub resume: String,
}

/// A command from another shell (`pony pause|continue|abort|approve`), as the run took
/// it: who sent it (the kernel's word for the user and pid), and what it did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Control {
    /// As typed: `pause`, `continue`, `abort`, `abort --rollback`, `approve WAVE`.
    pub command: String,
    pub user: String,
    pub host: String,
    pub pid: u32,
    pub accepted: bool,
    pub message: String,
}

/// Why a wave's gate (or, for a change window, its hosts) waits. Written as text, the
/// same in the `gate_waiting` event and the journal: `soak`, `verify`, `approve` or
/// `window <text>`; journals written before the soak was so named say `pause`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateReason {
    /// The wave's `pause:`.
    Soak,
    /// The checks that run right before the approval question of a gate without a soak.
    Verify,
    /// A person's approval.
    Approve,
    /// A change window, as the playbook gives it (`02:00-06:00 Asia/Shanghai`, with the
    /// zone it is read in when that is the controller's).
    Window(String),
}

impl std::fmt::Display for GateReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GateReason::Soak => f.write_str("soak"),
            GateReason::Verify => f.write_str("verify"),
            GateReason::Approve => f.write_str("approve"),
            GateReason::Window(text) => write!(f, "window {text}"),
        }
    }
}

/// A gate reason's text that is none of pony's.
#[derive(Debug, thiserror::Error)]
#[error("unknown gate reason `{0}` (soak, verify, approve or window …)")]
pub struct UnknownGateReason(String);

impl std::str::FromStr for GateReason {
    type Err = UnknownGateReason;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "soak" | "pause" => GateReason::Soak,
            "verify" => GateReason::Verify,
            "approve" => GateReason::Approve,
            _ => match text.strip_prefix("window ") {
                Some(window) => GateReason::Window(window.to_string()),
                None => return Err(UnknownGateReason(text.to_string())),
            },
        })
    }
}

impl Serialize for GateReason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GateReason {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// When a host's `health:` checks ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthAfter {
    Deploy,
    Rollback,
}

/// One line of `--output json`: the event with its schema version and time.
#[derive(Debug, Serialize)]
pub struct Envelope<'a> {
    pub schema: u32,
    pub time: String,
    /// The controller that emitted it, in a run split by region (`--regions`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controller: Option<&'a str>,
    #[serde(flatten)]
    pub event: &'a Event,
}

impl TaskRecord {
    /// Its text that may hold a secret value: the captures' values, the output, the error
    /// and the host's log.
    fn texts_mut(&mut self) -> impl Iterator<Item = &mut String> {
        let captures = self.captures.iter_mut().map(|(_, value)| value);
        captures
            .chain([&mut self.output_tail, &mut self.log])
            .chain(self.error.as_mut())
    }
}

impl Event {
    /// The event with every secret value replaced; the one place the executor redacts.
    /// What reaches the journal is built from this event, so it is redacted too.
    pub fn redacted(mut self, redactor: &Redactor) -> Event {
        for text in self.texts_mut() {
            *text = redactor.redact(text);
        }
        self
    }

    /// The free text a secret value could have reached: command output, errors and
    /// reasons made from them, and what the journal keeps of a task. Names, ids and counts
    /// come from the plan, never from a secret.
    fn texts_mut(&mut self) -> Vec<&mut String> {
        match self {
            Event::TaskFinished { record, .. } => record.texts_mut().collect(),
            Event::TaskSkipped { reason, record, .. } => std::iter::once(reason)
                .chain(record.iter_mut().flat_map(TaskRecord::texts_mut))
                .collect(),
            Event::TaskFailed {
                error,
                stderr_tail,
                record,
                ..
            } => [error, stderr_tail]
                .into_iter()
                .chain(record.texts_mut())
                .collect(),
            Event::RollbackTask { error, log, .. } => error.iter_mut().chain([log]).collect(),
            Event::Stopped { reason, .. } | Event::WaveFailed { reason, .. } => vec![reason],
            Event::VerifyCheck(check) => vec![&mut check.detail],
            _ => Vec::new(),
        }
    }
}

/// An event on its way to the consumers; `durable` is answered once the journal has it on
/// disk.
pub struct Emitted {
    pub event: Event,
    pub durable: Option<oneshot::Sender<()>>,
}

/// Where the executor sends its events: the journal first, then the reporters.
#[derive(Clone)]
pub struct EventSink {
    sender: mpsc::UnboundedSender<Emitted>,
}

impl EventSink {
    pub fn new() -> (EventSink, mpsc::UnboundedReceiver<Emitted>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (EventSink { sender }, receiver)
    }

    /// Progress nobody waits for.
    pub fn emit(&self, event: Event) {
        let _ = self.sender.send(Emitted {
            event,
            durable: None,
        });
    }

    /// A fact the run must not go past before it is on disk: resolves to true once the
    /// journal has synced it, to false when the journal could not write it (its writer
    /// drops the acknowledgement) or nothing consumes events any more.
    pub fn emit_durable(&self, event: Event) -> impl std::future::Future<Output = bool> {
        let (ack, done) = oneshot::channel();
        let _ = self.sender.send(Emitted {
            event,
            durable: Some(ack),
        });
        async move { done.await.is_ok() }
    }
}

#[cfg(test)]
mod tests;
