//! Events: the only output of the executor. Reporters (terminal, plain, JSON, JUnit) and
//! summaries are built from this stream; the executor never prints.

use serde::{Deserialize, Serialize};

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
        reason: String,
        seconds: u64,
    },
    GatePassed {
        wave: String,
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
    },
    TaskSkipped {
        task: TaskRef,
        reason: String,
    },
    TaskFailed {
        task: TaskRef,
        exit_code: Option<i32>,
        error: String,
        stderr_tail: String,
        duration_ms: u64,
        attempts: u32,
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
    RollbackStarted {
        scope: String,
        hosts: usize,
    },
    RollbackTask {
        task: TaskRef,
        ok: bool,
        exit_code: Option<i32>,
        error: Option<String>,
    },
    RollbackFinished {
        scope: String,
        ok: bool,
    },
    Stopped {
        reason: String,
    },
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
        duration_ms: u64,
        regions: Vec<RegionSummary>,
        run_dir: String,
    },
}

/// One line of `--output json`: the event with its schema version and time.
#[derive(Debug, Serialize)]
pub struct Envelope<'a> {
    pub schema: u32,
    pub time: String,
    #[serde(flatten)]
    pub event: &'a Event,
}
