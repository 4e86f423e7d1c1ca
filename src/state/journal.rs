//! The journal: an append-only JSON-lines file, fsync'd at every task start and end.
//! One writer thread batches the records that arrive together into one write and one
//! fsync (group commit), and acknowledges each record once it is on disk.
//!
//! The rule readers rely on: every line parses as a [`Record`], except possibly a torn
//! last line (the controller died mid-write). A torn last line is cut off before a
//! resumed run appends to the journal, so the rule still holds afterwards.

// Re-exported so that callers that read a journal and replay it (commands/resume.rs) keep
// one import; the executor takes these from `state::replay`.
use super::replay::TaskReplay;
pub use super::replay::{Replay, TaskState};
use crate::events::RunOutcome;
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use tokio::sync::oneshot;

/// One journal line.
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
    TaskFinished {
        node: usize,
        label: String,
        state: TaskState,
        exit_code: Option<i32>,
        duration_ms: u64,
        captures: Vec<(String, String)>,
        output_tail: String,
        error: Option<String>,
        /// False when the task changed nothing on its host (a guard skipped it, or it
        /// never reached the host): there is nothing to roll back.
        #[serde(default = "yes")]
        changed: bool,
    },
    /// A stopped run was continued (`pony resume`) or rolled back (`pony rollback`).
    RunResumed {
        command: String,
        time: String,
        pid: u32,
        user: String,
        host: String,
    },
    GatePassed {
        node: usize,
        wave: String,
    },
    /// A wave's gate started waiting: for a person's approval (`approve`) or a soak
    /// (`pause`); `pony status` shows it from any machine. (A change window holds a
    /// wave's hosts, not its gate, and is not recorded.)
    GateWaiting {
        wave: String,
        reason: String,
        time: String,
    },
    /// A wave's gate did not pass: a cluster of it went beyond its failure budget.
    WaveStopped {
        node: usize,
        wave: String,
        reason: String,
    },
    /// A result of a wave's `verify:` check.
    VerifyCheck {
        wave: String,
        check: String,
        host: String,
        ok: bool,
        detail: String,
        time: String,
    },
    /// `pony resume --skip-failed-wave`: a person let the rollout past a failed wave.
    WaveSkipped {
        wave: String,
        user: String,
        time: String,
    },
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
    /// A command from another shell (`pony pause|continue|abort|approve`): who, from
    /// where, when, and whether the run took it.
    Control {
        command: String,
        user: String,
        host: String,
        pid: u32,
        accepted: bool,
        message: String,
        time: String,
    },
    /// In a run split by region: another controller of the run was lost (its region
    /// leases expired), as this controller saw it, and what it did about it.
    ControllerLost {
        lost_controller: String,
        machine: String,
        pid: i32,
        regions: Vec<String>,
        /// `wait` or `stop`.
        policy: String,
        time: String,
    },
    RunFinished {
        /// Spelt as in the `summary` event (`failed_rolled_back`); older journals' Debug
        /// spelling (`FailedRolledBack`) is read through [`RunOutcome`]'s aliases.
        outcome: RunOutcome,
        exit_code: i32,
        time: String,
    },
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

fn yes() -> bool {
    true
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
                    captures,
                    changed,
                    ..
                } => {
                    replay.tasks.insert(
                        label.clone(),
                        TaskReplay {
                            state: *state,
                            changed: *changed,
                            captures: captures.clone(),
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
                Record::WaveStopped { wave, .. } => replay.stopped_wave = Some(wave.clone()),
                Record::WaveSkipped { wave, .. } if replay.stopped_wave.as_ref() == Some(wave) => {
                    replay.stopped_wave = None;
                }
                _ => {}
            }
        }
        replay
    }
}

enum Message {
    Append(String, Option<oneshot::Sender<()>>),
    /// Text for a host's output log: appended by the same thread, without an fsync.
    Log(PathBuf, String),
    Close(oneshot::Sender<()>),
}

/// A second place every batch of records goes (the state database): committed after the
/// file's fsync and before the batch is acknowledged, so "durable" means both.
pub trait Mirror: Send {
    /// Commits one batch of records (JSON lines without their newline) atomically.
    fn commit(&mut self, lines: &[String]) -> Result<(), String>;
}

/// A handle to the journal writer; cheap to clone.
#[derive(Clone)]
pub struct Journal {
    sender: mpsc::Sender<Message>,
    path: PathBuf,
}

impl Journal {
    /// Opens the journal for appending (creating it), after cutting off a torn last
    /// line: appending behind a fragment would glue the next record onto it and leave a
    /// line that never parses in the middle of the journal.
    pub fn create(path: &Path) -> std::io::Result<Journal> {
        Journal::create_mirrored(path, None)
    }

    /// [`Journal::create`], every batch also committed to `mirror` before it is
    /// acknowledged.
    pub fn create_mirrored(
        path: &Path,
        mirror: Option<Box<dyn Mirror>>,
    ) -> std::io::Result<Journal> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        let cut = cut_torn_tail(&mut file)?;
        if cut > 0 {
            tracing::warn!(
                "{}: cut off a torn last line ({cut} bytes) left by a controller that died mid-write",
                path.display()
            );
        }
        let (sender, receiver) = mpsc::channel::<Message>();
        std::thread::Builder::new()
            .name("pony-journal".into())
            .spawn(move || writer(file, receiver, mirror))?;
        Ok(Journal {
            sender,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a record and waits until it is on disk.
    pub async fn write(&self, record: &Record) {
        let Some(line) = line(record) else { return };
        let (ack, done) = oneshot::channel();
        if self.sender.send(Message::Append(line, Some(ack))).is_ok() {
            let _ = done.await;
        }
    }

    /// Appends a record; `synced` (if any) is answered once it is on disk.
    pub fn append_then(&self, record: &Record, synced: Option<oneshot::Sender<()>>) {
        let line = serde_json::to_string(record).expect("records serialize");
        let _ = self.sender.send(Message::Append(line, synced));
    }

    /// Appends a record without waiting for the fsync.
    pub fn append(&self, record: &Record) {
        if let Some(line) = line(record) {
            let _ = self.sender.send(Message::Append(line, None));
        }
    }

    /// Appends text to a per-host output log (off the async runtime, in order).
    pub fn log(&self, path: &Path, text: String) {
        let _ = self.sender.send(Message::Log(path.to_path_buf(), text));
    }

    /// Flushes everything and stops the writer.
    pub async fn close(&self) {
        let (ack, done) = oneshot::channel();
        if self.sender.send(Message::Close(ack)).is_ok() {
            let _ = done.await;
        }
    }
}

/// A record as one JSON line; a record that cannot be written (a `run_finished` whose
/// outcome is not one) is reported, never written half.
fn line(record: &Record) -> Option<String> {
    match serde_json::to_string(record) {
        Ok(line) => Some(line),
        Err(e) => {
            tracing::error!("journal record not written: {e}: {record:?}");
            None
        }
    }
}

/// Truncates the file after its last newline when it does not end in one; returns how
/// many bytes were cut. Reads backwards from the end, so a long journal costs one block.
fn cut_torn_tail(file: &mut std::fs::File) -> std::io::Result<u64> {
    const BLOCK: u64 = 64 * 1024;
    let len = file.metadata()?.len();
    let mut end = len;
    let mut buffer = vec![0u8; BLOCK as usize];
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let chunk = &mut buffer[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if end == len && chunk.last() == Some(&b'\n') {
            return Ok(0);
        }
        if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
            end = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    if end < len {
        file.set_len(end)?;
        file.sync_all()?;
    }
    Ok(len - end)
}

fn writer(
    mut file: std::fs::File,
    receiver: mpsc::Receiver<Message>,
    mut mirror: Option<Box<dyn Mirror>>,
) {
    let mut buffer = String::new();
    let mut acks = Vec::new();
    let mut batch: Vec<String> = Vec::new();
    let mirrored = mirror.is_some();
    while let Ok(first) = receiver.recv() {
        let mut closing = None;
        let mut take = |message: Message, closing: &mut Option<oneshot::Sender<()>>| match message {
            Message::Append(line, ack) => {
                buffer.push_str(&line);
                buffer.push('\n');
                if mirrored {
                    batch.push(line);
                }
                acks.extend(ack);
            }
            Message::Close(ack) => *closing = Some(ack),
            Message::Log(path, text) => {
                let appended = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .and_then(|mut file| file.write_all(text.as_bytes()));
                if let Err(e) = appended {
                    tracing::warn!("cannot write {}: {e}", path.display());
                }
            }
        };
        take(first, &mut closing);
        while let Ok(more) = receiver.try_recv() {
            take(more, &mut closing);
        }
        if !buffer.is_empty() {
            if let Err(e) = file
                .write_all(buffer.as_bytes())
                .and_then(|_| file.sync_data())
            {
                tracing::error!("journal write failed: {e}");
            }
            buffer.clear();
        }
        if let (Some(mirror), false) = (mirror.as_mut(), batch.is_empty()) {
            if let Err(e) = mirror.commit(&batch) {
                tracing::error!("journal not written to the state database: {e}");
            }
            batch.clear();
        }
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
        if let Some(ack) = closing {
            let _ = ack.send(());
            return;
        }
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
mod tests {
    use super::*;

    fn started(node: usize) -> Record {
        Record::TaskStarted {
            node,
            label: format!("a@h{node}"),
            time: "t".into(),
        }
    }

    fn append_raw(path: &Path, bytes: &[u8]) {
        let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        file.write_all(bytes).unwrap();
    }

    #[tokio::test]
    async fn writes_and_reads_back_tolerating_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let journal = Journal::create(&path).unwrap();
        journal.write(&started(3)).await;
        journal.append(&Record::GatePassed {
            node: 1,
            wave: "w".into(),
        });
        journal.close().await;
        append_raw(&path, b"{\"type\":\"task_fin");
        let records = read(&path).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0], started(3));
    }

    #[tokio::test]
    async fn reopening_cuts_a_torn_last_line_so_every_line_parses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let journal = Journal::create(&path).unwrap();
        journal.write(&started(1)).await;
        journal.close().await;
        append_raw(&path, b"{\"type\":\"task_finished\",\"node\":1,\"lab");

        let journal = Journal::create(&path).unwrap();
        journal.write(&started(2)).await;
        journal.close().await;
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines() {
            serde_json::from_str::<Record>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        }
        assert_eq!(read(&path).unwrap(), vec![started(1), started(2)]);

        // A journal that is one torn fragment, and one that ends well, are left whole
        // but for the fragment.
        std::fs::write(&path, b"{\"type\":\"ta").unwrap();
        let journal = Journal::create(&path).unwrap();
        journal.close().await;
        assert_eq!(std::fs::read(&path).unwrap(), b"");
        let whole = format!("{}\n", serde_json::to_string(&started(4)).unwrap());
        std::fs::write(&path, &whole).unwrap();
        let journal = Journal::create(&path).unwrap();
        journal.close().await;
        assert_eq!(std::fs::read_to_string(&path).unwrap(), whole);
    }

    #[test]
    fn cutting_finds_the_last_newline_more_than_a_block_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let head = "{}\n".repeat(10);
        let torn = "x".repeat(200 * 1024);
        std::fs::write(&path, format!("{head}{torn}")).unwrap();
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .unwrap();
        assert_eq!(cut_torn_tail(&mut file).unwrap(), torn.len() as u64);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), head);
    }

    #[test]
    fn the_run_outcome_is_written_and_read_in_its_serde_spelling() {
        let record = Record::run_finished(RunOutcome::FailedRolledBack, 1, "t".into());
        let line = serde_json::to_string(&record).unwrap();
        assert_eq!(
            line,
            r#"{"type":"run_finished","outcome":"failed_rolled_back","exit_code":1,"time":"t"}"#
        );
        let back: Record = serde_json::from_str(&line).unwrap();
        assert_eq!(back.outcome(), Some(RunOutcome::FailedRolledBack));

        // Journals written before spelt it as the Rust variant.
        let old = r#"{"type":"run_finished","outcome":"NeedsAttention","exit_code":3,"time":"t"}"#;
        let back: Record = serde_json::from_str(old).unwrap();
        assert_eq!(back.outcome(), Some(RunOutcome::NeedsAttention));

        let unknown = r#"{"type":"run_finished","outcome":"Exploded","exit_code":3,"time":"t"}"#;
        assert!(serde_json::from_str::<Record>(unknown).is_err());
    }

    #[test]
    fn a_record_glued_behind_a_torn_fragment_is_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let glued = format!(
            "{}\n{{\"type\":\"task_finished\",\"node\":3,\"lab{}\n{}\n",
            serde_json::to_string(&started(1)).unwrap(),
            serde_json::to_string(&started(2)).unwrap(),
            serde_json::to_string(&started(3)).unwrap(),
        );
        std::fs::write(&path, glued).unwrap();
        assert_eq!(
            read(&path).unwrap(),
            vec![started(1), started(2), started(3)]
        );

        std::fs::write(&path, "{\"type\":\"nonsense\"}\n{}\n").unwrap();
        match read(&path) {
            Err(JournalError::BadLine { line: 1, .. }) => {}
            other => panic!("expected line 1 to be bad, got {other:?}"),
        }
        assert_eq!(read_lenient(&path).unwrap().bad_lines.len(), 1);
    }
}
