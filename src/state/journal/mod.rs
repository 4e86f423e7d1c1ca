//! The journal: an append-only JSON-lines file, fsync'd at every task start and end.
//! One writer thread batches the records that arrive together into one write and one
//! fsync (group commit), and acknowledges each record once it is on disk.
//!
//! The rule readers rely on: every line parses as a [`Record`], except possibly a torn
//! last line (the controller died mid-write). A torn last line is cut off before a
//! resumed run appends to the journal, so the rule still holds afterwards.
//!
//! Here: the records, their replay and reading them back; the writer thread is in
//! `writer`.

// Re-exported so that callers that read a journal and replay it (commands/resume.rs) keep
// one import; the executor takes these from `state::replay`.
use super::replay::TaskReplay;
pub use super::replay::{Replay, TaskState};
use crate::events::{
    Control, ControllerLost, GateReason, HealthChecked, RunOutcome, TaskRecord, VerifyCheck,
    WaveSkipped,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub mod merge;
mod of_event;
mod writer;

pub use writer::{Journal, Mirror};

/// One journal line. A fact that is also an event is the event's own struct (from
/// `events/`) with the time it was journaled ([`Stamped`]): one definition of its fields
/// for both. Which events are journaled, as which record: `of_event.rs`. The names and
/// fields of every record are those journals have always had (fields are only added), so
/// that journals of older runs, and older pony binaries reading newer journals, keep
/// working.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    RunStarted {
        run_id: String,
        playbook: String,
        inventory: String,
        time: String,
        pid: u32,
        user: String,
        host: String,
    },
    TaskStarted {
        node: usize,
        label: String,
        time: String,
    },
    /// A task journaled as started that never ran: its host's chain stopped before its
    /// turn (a failure before it, a halt, a second Ctrl-C). It has no verdict; a resume
    /// runs it, as any task without one.
    TaskNotRun {
        node: usize,
        label: String,
        reason: String,
        time: String,
    },
    TaskFinished {
        node: usize,
        label: String,
        state: TaskState,
        exit_code: Option<i32>,
        duration_ms: u64,
        /// What the task's event carries for the journal: captures, output, error,
        /// whether it changed its host.
        #[serde(flatten)]
        record: TaskRecord,
    },
    /// A stopped run was continued (`pony resume`) or rolled back (`pony rollback`).
    RunResumed {
        command: RunKind,
        time: String,
        pid: u32,
        user: String,
        host: String,
    },
    GatePassed {
        node: usize,
        wave: String,
    },
    /// A wave's gate started waiting: for a person's approval (`approve`), a soak
    /// (`pause`, until its end) or the checks right before the approval question
    /// (`verify`); `pony status` shows it from any machine.
    GateWaiting {
        wave: String,
        /// `approve`, `soak` or `verify` (never a window: that is `window_waiting`).
        reason: GateReason,
        time: String,
        /// When a soak ends (RFC 3339, UTC); absent for the other reasons and in
        /// journals written before it was recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<String>,
    },
    /// A wave's hosts wait for its change window to open (one record per time zone the
    /// window is read in): `pony status` says so until `opens`.
    WindowWaiting {
        wave: String,
        /// The window as the playbook gives it (`02:00-06:00 Asia/Shanghai`).
        window: String,
        zone: String,
        /// When it opens (RFC 3339, UTC).
        opens: String,
        time: String,
    },
    /// The whole run stops starting tasks (an interrupt, `pony abort`, a halt, a failed
    /// wave, a rollback of every touched host): `pony status` says it is stopping, and
    /// why, until the run ends.
    Stopping {
        reason: String,
        /// Every host the run touched rolls back.
        rollback: bool,
        time: String,
    },
    /// A wave's gate did not pass: a cluster of it went beyond its failure budget.
    WaveStopped {
        node: usize,
        wave: String,
        reason: String,
    },
    VerifyCheck(Stamped<VerifyCheck>),
    WaveSkipped(Stamped<WaveSkipped>),
    RollbackStarted {
        node: usize,
        label: String,
    },
    RollbackFinished {
        node: usize,
        label: String,
        ok: bool,
        exit_code: Option<i32>,
        error: Option<String>,
        /// How long the rollback command took (absent in journals written before it was
        /// recorded).
        #[serde(default)]
        duration_ms: u64,
    },
    /// A rollback command not run because an earlier rollback of its host failed
    /// (`blocked_by`, `step@host`): it undoes a task the failed one's task needed.
    RollbackNotAttempted {
        node: usize,
        label: String,
        blocked_by: String,
        reason: String,
    },
    HealthChecked(Stamped<HealthChecked>),
    Control(Stamped<Control>),
    /// As this controller saw it, and what it did about it (`policy`).
    ControllerLost(Stamped<ControllerLost>),
    RunFinished {
        /// Spelt as in the `summary` event (`failed_rolled_back`); older journals' Debug
        /// spelling (`FailedRolledBack`) is read through [`RunOutcome`]'s aliases.
        outcome: RunOutcome,
        exit_code: i32,
        time: String,
    },
}

/// An event's fact with the time it was journaled: its fields, then `time`, on one line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Stamped<T> {
    #[serde(flatten)]
    pub fact: T,
    pub time: String,
}

impl<T: Clone> Stamped<T> {
    pub fn new(fact: &T, time: String) -> Stamped<T> {
        Stamped {
            fact: fact.clone(),
            time,
        }
    }
}

/// The command that started a run or went on with it: `deploy` starts one (its journal
/// begins with `run_started`); the others write `run_resumed` with this `command`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    Deploy,
    /// `pony resume`: the run goes on where it stopped.
    Resume,
    /// `pony rollback`: the run's changed hosts are put back.
    Rollback,
    /// `pony resume --join`: another controller takes regions of a split run.
    Join,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Deploy => "deploy",
            RunKind::Resume => "resume",
            RunKind::Rollback => "rollback",
            RunKind::Join => "join",
        }
    }
}

impl std::fmt::Display for RunKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Record {
    /// The `run_finished` record of a run that ended with `outcome` and `exit_code`.
    pub fn run_finished(outcome: RunOutcome, exit_code: i32, time: String) -> Record {
        Record::RunFinished {
            outcome,
            exit_code,
            time,
        }
    }

    /// The outcome of a `run_finished` record (`None` for any other record).
    pub fn outcome(&self) -> Option<RunOutcome> {
        match self {
            Record::RunFinished { outcome, .. } => Some(*outcome),
            _ => None,
        }
    }
}

impl Replay {
    /// Replays a journal's records: each task's last forward outcome, the gates passed and
    /// the wave that stopped the run.
    pub fn from_records(records: &[Record]) -> Replay {
        let mut replay = Replay::default();
        for record in records {
            match record {
                Record::TaskFinished {
                    label,
                    state,
                    record,
                    ..
                } => {
                    replay.tasks.insert(
                        label.clone(),
                        TaskReplay {
                            state: *state,
                            changed: record.changed,
                            reported_changed: record.reported_changed.unwrap_or(record.changed),
                            captures: record.captures.clone(),
                            rolled_back: false,
                        },
                    );
                }
                Record::RollbackFinished {
                    label, ok: true, ..
                } => {
                    if let Some(task) = replay.tasks.get_mut(label) {
                        task.rolled_back = true;
                    }
                }
                Record::GatePassed { wave, .. } => {
                    replay.gates_passed.insert(wave.clone());
                    if replay.stopped_wave.as_ref() == Some(wave) {
                        replay.stopped_wave = None;
                    }
                }
                Record::GateWaiting {
                    wave,
                    reason: GateReason::Approve,
                    ..
                } => {
                    replay.soaked.insert(wave.clone());
                }
                Record::Control(Stamped { fact: control, .. }) if control.accepted => {
                    if let Some(wave) = control.command.strip_prefix("approve ") {
                        replay.pre_approved.insert(wave.to_string());
                    }
                }
                Record::WaveStopped { wave, .. } => replay.stopped_wave = Some(wave.clone()),
                Record::WaveSkipped(Stamped { fact: skip, .. })
                    if replay.stopped_wave.as_ref() == Some(&skip.wave) =>
                {
                    replay.stopped_wave = None;
                }
                _ => {}
            }
        }
        replay
    }
}

/// Why a journal could not be read.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot read the journal {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: line {line} is not a journal record: {source}", path.display())]
    BadLine {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
}

/// A journal read line by line, damaged lines set aside.
#[derive(Debug, Default)]
pub struct Lenient {
    pub records: Vec<Record>,
    /// Numbers (from 1) of lines other than the last that did not parse.
    pub bad_lines: Vec<(usize, serde_json::Error)>,
}

/// Reads a journal; a torn last line (crash mid-write) is ignored, a damaged line
/// elsewhere is an error.
pub fn read(path: &Path) -> Result<Vec<Record>, JournalError> {
    let lenient = read_lenient(path)?;
    match lenient.bad_lines.into_iter().next() {
        None => Ok(lenient.records),
        Some((line, source)) => Err(JournalError::BadLine {
            path: path.to_path_buf(),
            line,
            source,
        }),
    }
}

/// Reads a journal, skipping the lines that do not parse (for showing a damaged run
/// rather than hiding it).
pub fn read_lenient(path: &Path) -> Result<Lenient, JournalError> {
    let text = std::fs::read_to_string(path).map_err(|source| JournalError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(parse(&text))
}

fn parse(text: &str) -> Lenient {
    let lines: Vec<&str> = text.lines().collect();
    let mut parsed = Lenient::default();
    for (i, line) in lines.iter().enumerate() {
        match parse_line(line) {
            Ok(record) => parsed.records.push(record),
            Err(e) if i + 1 == lines.len() => {
                tracing::warn!("ignoring torn last journal line: {e}")
            }
            Err(e) => parsed.bad_lines.push((i + 1, e)),
        }
    }
    parsed
}

/// One line. Journals written before torn lines were cut on resume may hold a torn
/// fragment with a whole record glued behind it: that record is recovered.
fn parse_line(line: &str) -> Result<Record, serde_json::Error> {
    serde_json::from_str(line).or_else(|error| {
        line.match_indices("{\"type\":")
            .filter(|(at, _)| *at > 0)
            .find_map(|(at, _)| serde_json::from_str(&line[at..]).ok())
            .ok_or(error)
    })
}

#[cfg(test)]
mod tests;
