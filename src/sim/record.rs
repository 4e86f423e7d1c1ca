//! The recording transport of `pony deploy --dry-run`: connections that write down what
//! the scheduler sends a host and run none of it. Every command answers at once: a
//! task's guards (`creates`, `unless`) say the work is not done yet, so its action is
//! sent too; the action and an upload succeed; a gate's check prints `0` (healthy, and a
//! number for `compare`); a probe passes. No host is resolved, no socket opened, no
//! process started: the opener never looks past the inventory entry it is given.

use super::transport::{is_guard, Calls};
use crate::exec::task::WORK;
use crate::inventory::{Host, HostId};
use crate::plan::Plan;
use crate::transport::connect::Opener;
use crate::transport::{BoxFuture, CommandOutput, Connection, Stream, TransportError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the scheduler sent one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub host: HostId,
    /// The task's node index and whether it was its rollback; none for a gate's check.
    pub task: Option<(usize, bool)>,
    pub call: Call,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// A command for the host's `sh`, as it would go on the wire.
    Run(String),
    /// A file written to this path (its content is not kept).
    Write(String),
    /// A protocol probe.
    Probe,
}

/// The log every connection of one rehearsal writes to.
pub struct Recording {
    plan: Arc<Plan>,
    calls: Calls,
    log: Mutex<Vec<Recorded>>,
}

impl Recording {
    pub fn new(plan: Arc<Plan>) -> Arc<Recording> {
        Arc::new(Recording {
            plan,
            calls: Calls::default(),
            log: Mutex::new(Vec::new()),
        })
    }

    /// Everything recorded so far, in the order it was sent.
    pub fn take(&self) -> Vec<Recorded> {
        std::mem::take(&mut *self.log.lock().expect("not poisoned"))
    }

    /// Writes the call down; says whether it is one of its task's guards.
    fn note(&self, host: HostId, call: Call) -> bool {
        let work = WORK.try_with(|w| *w).ok();
        let guard = work.is_some_and(|w| {
            let n = self.calls.next(&w);
            matches!(call, Call::Run(_)) && is_guard(&self.plan, &w, n)
        });
        self.log.lock().expect("not poisoned").push(Recorded {
            host,
            task: work.map(|w| (w.node, w.rollback)),
            call,
        });
        guard
    }
}

/// Opens recording connections.
pub struct RecordingOpener(pub Arc<Recording>);

impl Opener for RecordingOpener {
    fn open<'a>(
        &'a self,
        host: &'a Host,
        _connect_timeout: Duration,
    ) -> BoxFuture<'a, Result<Arc<dyn Connection>, TransportError>> {
        Box::pin(async move {
            let host = self
                .0
                .plan
                .inventory
                .host_id(&host.name)
                .expect("a host of the plan");
            Ok(Arc::new(RecordingConnection {
                recording: self.0.clone(),
                host,
            }) as Arc<dyn Connection>)
        })
    }
}

struct RecordingConnection {
    recording: Arc<Recording>,
    host: HostId,
}

impl Connection for RecordingConnection {
    fn run<'a>(
        &'a self,
        command: &'a str,
        _timeout: Option<Duration>,
    ) -> BoxFuture<'a, Result<CommandOutput, TransportError>> {
        Box::pin(async move {
            let for_task = WORK.try_with(|_| ()).is_ok();
            let guard = self.recording.note(self.host, Call::Run(command.into()));
            Ok(CommandOutput {
                exit_code: Some(if guard { 1 } else { 0 }),
                // A gate's check: healthy, and a number for `compare`.
                stdout: if for_task {
                    Vec::new()
                } else {
                    b"0\n".to_vec()
                },
                stderr: Vec::new(),
            })
        })
    }

    fn write_file<'a>(
        &'a self,
        path: &'a str,
        _content: &'a [u8],
    ) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(async move {
            self.recording.note(self.host, Call::Write(path.into()));
            Ok(())
        })
    }

    fn connect_port<'a>(
        &'a self,
        address: &'a str,
        port: u16,
    ) -> BoxFuture<'a, Result<Box<dyn Stream>, TransportError>> {
        Box::pin(async move {
            Err(TransportError::Other(format!(
                "a dry run opens no port ({address}:{port})"
            )))
        })
    }

    fn is_simulated(&self) -> bool {
        true
    }

    fn simulated_probe(&self) -> Option<BoxFuture<'_, Result<String, String>>> {
        Some(Box::pin(async move {
            self.recording.note(self.host, Call::Probe);
            Ok("recorded".to_string())
        }))
    }
}
