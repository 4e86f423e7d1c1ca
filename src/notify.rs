//! Notifications: the events a person must know about (run started and finished, a gate
//! waiting for approval, a host failed, a region rolled back, a verify check failed, a
//! wave failed, a command from another shell) handed to commands (`--notify CMD`, the
//! playbook's `notify:`), each run with `sh -c` on the controller with the event's JSON
//! (the `--output json` line) on stdin and the run's id in `PONY_RUN_ID`.
//!
//! A notifier never stops or slows the rollout: it is a reporter (fed on the reporters'
//! thread, never the scheduler's), each notifier command has a thread of its own behind a
//! bounded queue (a full queue drops the event and logs it), and each call is killed,
//! with its whole process group, once it outlives its timeout. Every call, failure, kill
//! and drop is logged to `<run folder>/notify.log`.

use crate::events::{Envelope, Event, SCHEMA_VERSION};
pub use crate::playbook::{Notifier, DEFAULT_NOTIFY_TIMEOUT as DEFAULT_TIMEOUT};
use crate::report::Reporter;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

/// Events waiting per notifier; beyond this they are dropped (and logged).
const QUEUE: usize = 64;

/// How often a running notifier is checked for its end.
const POLL: Duration = Duration::from_millis(20);

/// Whether a person must hear about this event.
pub fn notifies(event: &Event) -> bool {
    match event {
        Event::RunStarted { .. }
        | Event::Summary { .. }
        | Event::TaskFailed { .. }
        | Event::WaveFailed { .. }
        | Event::ControllerLost { .. }
        | Event::Control { .. } => true,
        Event::GateWaiting { reason, .. } => reason == "approve",
        Event::VerifyCheck { ok, .. } => !ok,
        // A host's own rollback follows its `task_failed`; a region's or the whole run's
        // is news of its own.
        Event::RollbackFinished { scope, .. } => !scope.starts_with("host "),
        _ => false,
    }
}

/// The reporter that feeds every notifier.
pub struct NotifyReporter {
    queues: Vec<(String, SyncSender<String>)>,
    workers: Vec<std::thread::JoinHandle<()>>,
    log: Log,
}

impl NotifyReporter {
    /// Starts a thread per notifier; `log` is the run folder's `notify.log`, `run_id`
    /// goes to the notifiers as `PONY_RUN_ID` (most events do not carry it).
    pub fn new(notifiers: Vec<Notifier>, log: PathBuf, run_id: &str) -> NotifyReporter {
        let log = Log(log);
        let mut queues = Vec::new();
        let mut workers = Vec::new();
        for notifier in notifiers {
            let (sender, receiver) = sync_channel::<String>(QUEUE);
            queues.push((notifier.command.clone(), sender));
            let log = log.clone();
            let run_id = run_id.to_string();
            let spawned = std::thread::Builder::new()
                .name("pony-notify".into())
                .spawn(move || deliver(&notifier, receiver, &log, &run_id));
            match spawned {
                Ok(worker) => workers.push(worker),
                Err(e) => tracing::warn!("cannot start a notifier thread: {e}"),
            }
        }
        NotifyReporter {
            queues,
            workers,
            log,
        }
    }
}

impl Reporter for NotifyReporter {
    fn event(&mut self, event: &Event) {
        if !notifies(event) {
            return;
        }
        let envelope = Envelope {
            schema: SCHEMA_VERSION,
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            controller: None,
            event,
        };
        let Ok(json) = serde_json::to_string(&envelope) else {
            return;
        };
        let name = event_name(&json);
        for (command, queue) in &self.queues {
            match queue.try_send(json.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    let line = format!(
                        "notifier `{command}`: {name} dropped: {QUEUE} events wait for it already"
                    );
                    tracing::warn!("{line}");
                    self.log.line(&line);
                }
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
    }

    /// Waits for what is queued (each call bounded by its timeout): the run's last
    /// events, `summary` among them, are the ones people wait for.
    fn finish(&mut self) {
        self.queues.clear();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

fn event_name(json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v["event"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The notifier's thread: one call per event, in order.
fn deliver(notifier: &Notifier, events: Receiver<String>, log: &Log, run_id: &str) {
    while let Ok(json) = events.recv() {
        let name = event_name(&json);
        let outcome = call(notifier, &json, log.path(), run_id);
        let line = format!("notifier `{}`: {name} {outcome}", notifier.command);
        if !outcome.starts_with("ok") {
            tracing::warn!("{line}");
        }
        log.line(&line);
    }
}

/// Runs the command once with `json` on stdin; says how it ended.
fn call(notifier: &Notifier, json: &str, log: &Path, run_id: &str) -> String {
    use std::os::unix::process::CommandExt;
    let output = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null())
    };
    let spawned = Command::new("sh")
        .arg("-c")
        .arg(&notifier.command)
        // pony's environment without its secrets and settings (PONY_STATE, …).
        .env_clear()
        .envs(crate::secret::notifier_env())
        .env("PONY_RUN_ID", run_id)
        .stdin(Stdio::piped())
        .stdout(output())
        .stderr(output())
        // Its own process group: a timeout kills what the command started too.
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return format!("could not start: {e}"),
    };
    let pid = child.id();
    // Written from a thread of its own: a notifier that never reads must not hold this
    // one past its timeout.
    if let Some(mut stdin) = child.stdin.take() {
        let json = format!("{json}\n");
        std::thread::spawn(move || {
            let _ = stdin.write_all(json.as_bytes());
        });
    }
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return "ok".into(),
            Ok(Some(status)) => return format!("failed ({status})"),
            Ok(None) if started.elapsed() >= notifier.timeout => {
                // SAFETY: signals the process group of our own child, by its pid.
                unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
                let _ = child.wait();
                return format!(
                    "killed (pid {pid} and its process group) after {}",
                    humantime::format_duration(notifier.timeout)
                );
            }
            Ok(None) => std::thread::sleep(POLL),
            Err(e) => return format!("could not be waited for: {e}"),
        }
    }
}

/// `notify.log` in the run folder: one line per call, with its time.
#[derive(Clone)]
struct Log(PathBuf);

impl Log {
    fn path(&self) -> &Path {
        &self.0
    }

    fn line(&self, text: &str) {
        let time = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.0)
            .and_then(|mut file| writeln!(file, "{time} {text}"));
        if let Err(e) = written {
            tracing::warn!("cannot write {}: {e}", self.0.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_events_a_person_must_know_about_notify() {
        let waiting = |reason: &str| Event::GateWaiting {
            wave: "canary".into(),
            reason: reason.into(),
            seconds: 0,
        };
        assert!(notifies(&waiting("approve")));
        assert!(!notifies(&waiting("pause")));
        let rollback = |scope: &str| Event::RollbackFinished {
            scope: scope.into(),
            ok: true,
        };
        assert!(notifies(&rollback("region eu")));
        assert!(notifies(&rollback("all")));
        assert!(!notifies(&rollback("host mx-1")));
        assert!(!notifies(&Event::Stopped { reason: "x".into() }));
        let check = |ok| Event::VerifyCheck {
            wave: "canary".into(),
            check: "errors".into(),
            host: "mx-1".into(),
            ok,
            detail: String::new(),
        };
        assert!(notifies(&check(false)));
        assert!(!notifies(&check(true)));
    }
}

#[cfg(test)]
mod queue_tests {
    use super::*;

    /// A notifier that cannot keep up loses events beyond its queue, and says so; it
    /// never holds up whoever hands them over.
    #[test]
    fn a_full_queue_drops_events_and_logs_each_drop() {
        let dir = tempfile::tempdir().unwrap();
        let release = dir.path().join("release");
        let calls = dir.path().join("calls");
        let log = dir.path().join("notify.log");
        let notifier = Notifier {
            command: format!(
                "echo call >> {}; until [ -e {} ]; do sleep 0.01; done",
                calls.display(),
                release.display()
            ),
            timeout: Duration::from_secs(60),
        };
        let mut reporter = NotifyReporter::new(vec![notifier], log.clone(), "run-1");
        let failed = Event::WaveFailed {
            wave: "w".into(),
            reason: "r".into(),
            node: 0,
        };
        for _ in 0..QUEUE + 10 {
            reporter.event(&failed);
        }
        std::fs::write(&release, "").unwrap();
        reporter.finish();
        let text = std::fs::read_to_string(&log).unwrap();
        let dropped = text.matches("wave_failed dropped").count();
        // The first call may have been taken off the queue before it filled, or not.
        assert!((9..=10).contains(&dropped), "{text}");
        let called = std::fs::read_to_string(&calls).unwrap().lines().count();
        assert_eq!(called + dropped, QUEUE + 10, "{text}");
        assert_eq!(text.matches("wave_failed ok").count(), called, "{text}");
    }
}
