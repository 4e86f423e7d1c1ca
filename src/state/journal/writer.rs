//! The journal's writer: one thread that appends records to the file, batching those
//! that arrive together into one write and one fsync (group commit), commits each batch
//! to the [`Mirror`] (the state database) too, and acknowledges each record once it is
//! durable; per-host output logs go through the same thread, in order, without an fsync.
//! Opening a journal first cuts off a torn last line.

use super::Record;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use tokio::sync::oneshot;

enum Message {
    Append(String, Option<oneshot::Sender<()>>),
    /// Text for a host's output log: appended by the same thread, without an fsync.
    Log(PathBuf, String),
    Close(oneshot::Sender<()>),
}

/// A second place every batch of records goes (the state database): handed over after
/// the file's fsync and before the batch is acknowledged, so "durable" means both while
/// the mirror answers. A mirror never holds the run longer than its own bound: a batch
/// it cannot take in time is kept to send later (an outbox), durable in the file.
pub trait Mirror: Send {
    /// Hands over one batch of records (JSON lines without their newline), committed
    /// atomically; Err when the mirror refuses it for good (the lease is lost).
    fn commit(&mut self, lines: &[String]) -> Result<(), String>;

    /// The journal is closing: sends what is still kept (a bounded wait); Err says what
    /// did not get through.
    fn close(&mut self) -> Result<(), String> {
        Ok(())
    }

    /// Whether the mirror refuses every batch for good: this controller was fenced off
    /// (its lease is gone). Its records are then never acknowledged, so nothing the
    /// run would start after one of them starts.
    fn fenced(&self) -> bool {
        false
    }
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
pub(super) fn cut_torn_tail(file: &mut std::fs::File) -> std::io::Result<u64> {
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
    // Once a write fails, nothing more is written: a later record behind a lost one would
    // make the journal tell a story that did not happen. Records are then never
    // acknowledged, and the run starts nothing it could not record.
    let mut broken = false;
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
        if !buffer.is_empty() && !broken {
            if let Err(e) = file
                .write_all(buffer.as_bytes())
                .and_then(|_| file.sync_data())
            {
                tracing::error!(
                    "the journal cannot be written ({e}): the run starts nothing more and ends halted (exit 3)"
                );
                broken = true;
            }
        }
        buffer.clear();
        if broken {
            batch.clear();
            acks.clear();
        }
        if let (Some(mirror), false) = (mirror.as_mut(), batch.is_empty()) {
            if let Err(e) = mirror.commit(&batch) {
                tracing::error!("journal not written to the state database: {e}");
            }
            batch.clear();
            // A batch the state database refused because another controller may own
            // the run now is not durable: a task whose start it holds never starts.
            // (A database merely out of reach is not this: the run goes on with its
            // local copy, and the batch is sent again later.)
            if mirror.fenced() {
                acks.clear();
            }
        }
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
        if let Some(ack) = closing {
            if let Some(Err(e)) = mirror.as_mut().map(|m| m.close()) {
                tracing::error!("{e}");
            }
            let _ = ack.send(());
            return;
        }
    }
}
