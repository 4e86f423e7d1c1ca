//! The journal: an append-only JSON-lines file, fsync'd at every task start and end.
//! One writer thread batches the records that arrive together into one write and one
//! fsync (group commit), and acknowledges each record once it is on disk.

use serde::{Deserialize, Serialize};
use std::io::Write;
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
    /// A wave's gate did not pass: a cluster of it went beyond its failure budget.
    WaveStopped {
        node: usize,
        wave: String,
        reason: String,
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
    },
    RunFinished {
        outcome: String,
        exit_code: i32,
        time: String,
    },
}

fn yes() -> bool {
    true
}

/// What a journal says about each task and gate, for resume and rollback.
#[derive(Debug, Default, Clone)]
pub struct Replay {
    /// Per task label, its last forward outcome.
    pub tasks: std::collections::HashMap<String, TaskReplay>,
    /// Waves whose gate passed.
    pub gates_passed: std::collections::HashSet<String>,
    /// The wave whose failure stopped the run (none once its gate passed or was skipped).
    pub stopped_wave: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TaskReplay {
    pub state: TaskState,
    pub changed: bool,
    pub captures: Vec<(String, String)>,
    /// Its rollback ran and succeeded after it finished.
    pub rolled_back: bool,
}

impl Replay {
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

    /// Whether the task completed forward and still stands (not rolled back).
    pub fn done(&self, label: &str) -> Option<&TaskReplay> {
        self.tasks.get(label).filter(|t| {
            matches!(t.state, TaskState::Succeeded | TaskState::Skipped) && !t.rolled_back
        })
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Succeeded,
    Skipped,
    Failed,
    Interrupted,
}

enum Message {
    Append(String, Option<oneshot::Sender<()>>),
    /// Text for a host's output log: appended by the same thread, without an fsync.
    Log(PathBuf, String),
    Close(oneshot::Sender<()>),
}

/// A handle to the journal writer; cheap to clone.
#[derive(Clone)]
pub struct Journal {
    sender: mpsc::Sender<Message>,
    path: PathBuf,
}

impl Journal {
    pub fn create(path: &Path) -> std::io::Result<Journal> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let (sender, receiver) = mpsc::channel::<Message>();
        std::thread::Builder::new()
            .name("pony-journal".into())
            .spawn(move || writer(file, receiver))?;
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
        let (ack, done) = oneshot::channel();
        let line = serde_json::to_string(record).expect("records serialize");
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
        let line = serde_json::to_string(record).expect("records serialize");
        let _ = self.sender.send(Message::Append(line, None));
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

fn writer(mut file: std::fs::File, receiver: mpsc::Receiver<Message>) {
    let mut buffer = String::new();
    let mut acks = Vec::new();
    while let Ok(first) = receiver.recv() {
        let mut closing = None;
        let mut take = |message: Message, closing: &mut Option<oneshot::Sender<()>>| match message {
            Message::Append(line, ack) => {
                buffer.push_str(&line);
                buffer.push('\n');
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
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
        if let Some(ack) = closing {
            let _ = ack.send(());
            return;
        }
    }
}

/// Reads a journal; a torn last line (crash mid-write) is ignored.
pub fn read(path: &Path) -> std::io::Result<Vec<Record>> {
    let text = std::fs::read_to_string(path)?;
    let lines: Vec<&str> = text.lines().collect();
    let mut records = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str(line) {
            Ok(record) => records.push(record),
            Err(e) if i + 1 == lines.len() => {
                tracing::warn!("ignoring torn last journal line: {e}")
            }
            Err(e) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: line {}: {e}", path.display(), i + 1),
                ))
            }
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_and_reads_back_tolerating_a_torn_line() {
        let dir = std::env::temp_dir().join(format!("pony-journal-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("journal.jsonl");
        let _ = std::fs::remove_file(&path);
        let journal = Journal::create(&path).unwrap();
        journal
            .write(&Record::TaskStarted {
                node: 3,
                label: "a@h".into(),
                time: "t".into(),
            })
            .await;
        journal.append(&Record::GatePassed {
            node: 1,
            wave: "w".into(),
        });
        journal.close().await;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"{\"type\":\"task_fin").unwrap();
        let records = read(&path).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(
            records[0],
            Record::TaskStarted {
                node: 3,
                label: "a@h".into(),
                time: "t".into()
            }
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
