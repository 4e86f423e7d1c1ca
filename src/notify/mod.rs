//! Notifications: the events a person must know about (run started and finished, a gate
//! waiting for approval, a host failed, a region rolled back, a verify check failed, a
//! wave failed, a command from another shell) handed to commands (`--notify CMD`, the
//! playbook's `notify:`), each run with `sh -c` on the controller with the event's JSON
//! (the `--output json` line) on stdin and the run's id in `PONY_RUN_ID`.
//!
//! A notifier can neither stop, slow nor outlive the rollout:
//! - it is a reporter (fed on the reporters' thread, never the scheduler's); each
//!   notifier command has a thread of its own behind a bounded queue. A full queue sheds
//!   an ordinary event (logged); the run's `summary` is never shed: it takes the place of
//!   the oldest ordinary event instead.
//! - each call runs in a process group of its own, which is killed when the call ends
//!   (whatever it started in the background goes with it) or outlives its timeout.
//! - its output is captured, at most [`CALL_OUTPUT`] bytes per call and [`RUN_OUTPUT`] per
//!   run kept (the rest is counted and noted), and written to `<run folder>/notify.log` in
//!   one piece after the call, so calls never interleave there.
//! - at the run's end the process waits for its notifiers once, and at most
//!   [`GRACE`] plus the longest notifier timeout (the `summary`'s call): calls go on in
//!   order for [`GRACE`]; then, if the `summary` still waits, the call in the way is
//!   killed and the `summary` goes next; whatever is left at the bound is killed or
//!   dropped, each with a log line, and the process
//!   exits (releasing the inventory's lock). Ctrl-C or SIGTERM during that wait (or one
//!   after the run's end the outcome did not take in) ends it at once, the same way.

mod call;

use crate::events::{Envelope, Event, SCHEMA_VERSION};
pub use crate::playbook::{Notifier, DEFAULT_NOTIFY_TIMEOUT as DEFAULT_TIMEOUT};
use crate::report::Reporter;
use call::{call, Output};
use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Events waiting per notifier; beyond this ordinary events are dropped (and logged).
const QUEUE: usize = 64;

/// How often a running notifier is checked for its end.
const POLL: Duration = Duration::from_millis(20);

/// Output of one call kept in `notify.log`.
pub const CALL_OUTPUT: usize = 64 * 1024;

/// Output of all calls of a run kept in `notify.log`.
pub const RUN_OUTPUT: u64 = 2 * 1024 * 1024;

/// What the calls for ordinary events still get, in order, once the run has ended. A
/// run's last events (a rollback, the failed wave) come milliseconds before its end: a
/// few seconds let a webhook on a busy machine tell them before the `summary` jumps the
/// queue (at one second, a loaded controller killed the `wave_failed` call in its way).
pub const GRACE: Duration = Duration::from_secs(5);

/// What the bound at the run's end leaves beyond the grace and the summary's timeout.
pub const SETTLE: Duration = Duration::from_millis(500);

/// The run's interrupt count (Ctrl-C, SIGTERM, a lost lease), kept by its signal watcher.
static INTERRUPTS: AtomicU32 = AtomicU32::new(0);

/// The interrupt count is now `count`: one beyond what the run's outcome took in (its
/// `summary`) ends the wait for notifiers at the run's end, even when it came before
/// the wait began.
pub fn interrupted(count: u32) {
    INTERRUPTS.fetch_max(count, Ordering::SeqCst);
}

/// Whether a person must hear about this event.
pub fn notifies(event: &Event) -> bool {
    match event {
        Event::RunStarted { .. }
        | Event::Summary { .. }
        | Event::TaskFailed { .. }
        | Event::WaveFailed { .. }
        | Event::ControllerLost(_)
        | Event::ControllerGone { .. }
        | Event::Control(_) => true,
        Event::GateWaiting { reason, .. } => *reason == crate::events::GateReason::Approve,
        Event::VerifyCheck(crate::events::VerifyCheck { ok, .. }) => !ok,
        // A host's own rollback follows its `task_failed`; a region's or the whole run's
        // is news of its own.
        Event::RollbackFinished { scope, .. } => !scope.starts_with("host "),
        _ => false,
    }
}

/// An event on its way to one notifier.
struct Queued {
    json: String,
    name: String,
    /// The run's end (`summary`): never shed, sent first once the run ended.
    last: bool,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Queued>,
    /// When the run ended (the reporters' `finish`).
    closing: Option<Instant>,
    /// The wait is over, and why: kill what runs, drop what waits.
    abandon: Option<&'static str>,
}

/// One notifier's queue, shared by the reporter and the notifier's thread.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The reporter that feeds every notifier.
pub struct NotifyReporter {
    notifiers: Vec<(Notifier, Arc<Shared>)>,
    workers: Vec<std::thread::JoinHandle<()>>,
    log: Log,
    /// The interrupt count the run's outcome took in (from its `summary`).
    interrupts_taken: Option<u32>,
    /// Where the count is kept: [`INTERRUPTS`] (a test's own counter in unit tests,
    /// which share a process).
    interrupts: &'static AtomicU32,
}

impl NotifyReporter {
    /// Starts a thread per notifier; `log` is the run folder's `notify.log`, `run_id`
    /// goes to the notifiers as `PONY_RUN_ID` (most events do not carry it).
    pub fn new(notifiers: Vec<Notifier>, log: PathBuf, run_id: &str) -> NotifyReporter {
        let log = Log::new(log);
        let mut shared_all = Vec::new();
        let mut workers = Vec::new();
        for notifier in notifiers {
            let shared = Arc::new(Shared::default());
            shared_all.push((notifier.clone(), shared.clone()));
            let log = log.clone();
            let run_id = run_id.to_string();
            let spawned = std::thread::Builder::new()
                .name("pony-notify".into())
                .spawn(move || deliver(&notifier, &shared, &log, &run_id));
            match spawned {
                Ok(worker) => workers.push(worker),
                Err(e) => tracing::warn!("cannot start a notifier thread: {e}"),
            }
        }
        NotifyReporter {
            notifiers: shared_all,
            workers,
            log,
            interrupts_taken: None,
            interrupts: &INTERRUPTS,
        }
    }

    fn drop_line(&self, command: &str, name: &str, why: &str) {
        let line = format!("notifier `{command}`: {name} dropped: {why}");
        tracing::warn!("{line}");
        self.log.line(&line);
    }
}

impl Reporter for NotifyReporter {
    fn event(&mut self, event: &Event) {
        if let Event::Summary {
            interrupts_taken, ..
        } = event
        {
            self.interrupts_taken = Some(*interrupts_taken);
        }
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
        let last = matches!(event, Event::Summary { .. });
        for (notifier, shared) in &self.notifiers {
            let mut state = shared.lock();
            let mut shed = None;
            if state.queue.len() >= QUEUE {
                if !last {
                    drop(state);
                    self.drop_line(
                        &notifier.command,
                        &name,
                        &format!("{QUEUE} events wait for it already"),
                    );
                    continue;
                }
                // The run's end takes the place of the oldest ordinary event.
                if let Some(i) = state.queue.iter().position(|q| !q.last) {
                    shed = state.queue.remove(i);
                }
            }
            state.queue.push_back(Queued {
                json: json.clone(),
                name: name.clone(),
                last,
            });
            drop(state);
            shared.wake.notify_all();
            if let Some(shed) = shed {
                self.drop_line(
                    &notifier.command,
                    &shed.name,
                    &format!("{QUEUE} events wait for it already, and {name} goes first"),
                );
            }
        }
    }

    /// Waits once, bounded, for what is queued: the `summary` first (see the module's
    /// documentation); then kills and drops what is left, and returns.
    fn finish(&mut self) {
        let now = Instant::now();
        let longest = self
            .notifiers
            .iter()
            .map(|(n, _)| n.timeout)
            .max()
            .unwrap_or_default();
        // The summary starts within [`GRACE`] (and a poll) and its own timeout ends it; the
        // bound leaves that a moment to be logged.
        let deadline = now + GRACE + longest + SETTLE;
        // A signal that came after the run's end and before this wait ends it too.
        let taken = self
            .interrupts_taken
            .unwrap_or_else(|| self.interrupts.load(Ordering::SeqCst));
        for (_, shared) in &self.notifiers {
            shared.lock().closing = Some(now);
            shared.wake.notify_all();
        }
        let mut why = None;
        while self.workers.iter().any(|w| !w.is_finished()) {
            if self.interrupts.load(Ordering::SeqCst) > taken {
                why = Some("interrupted (Ctrl-C or SIGTERM) while waiting for notifiers");
                break;
            }
            if Instant::now() >= deadline {
                why = Some("the run ended and its wait for notifiers is over");
                break;
            }
            std::thread::sleep(POLL);
        }
        if let Some(why) = why {
            for (notifier, shared) in &self.notifiers {
                let dropped: Vec<Queued> = {
                    let mut state = shared.lock();
                    state.abandon = Some(why);
                    state.queue.drain(..).collect()
                };
                shared.wake.notify_all();
                for queued in dropped {
                    self.drop_line(&notifier.command, &queued.name, why);
                }
            }
            // The threads kill their calls at their next poll; wait for that, briefly.
            let bound = Instant::now() + GRACE;
            while self.workers.iter().any(|w| !w.is_finished()) && Instant::now() < bound {
                std::thread::sleep(POLL);
            }
        }
        for worker in self.workers.drain(..) {
            if worker.is_finished() {
                let _ = worker.join();
            }
        }
        self.notifiers.clear();
    }
}

fn event_name(json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v["event"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The notifier's thread: one call per event, in order (the `summary` first once the
/// run ended).
fn deliver(notifier: &Notifier, shared: &Shared, log: &Log, run_id: &str) {
    loop {
        let queued = {
            let mut state = shared.lock();
            loop {
                if state.abandon.is_some() {
                    return;
                }
                // In order; once the run has ended for [`GRACE`], the `summary` first.
                let next = match state.closing {
                    Some(closing) if closing.elapsed() >= GRACE => state
                        .queue
                        .iter()
                        .position(|q| q.last)
                        .or((!state.queue.is_empty()).then_some(0)),
                    _ => (!state.queue.is_empty()).then_some(0),
                };
                if let Some(i) = next {
                    break state.queue.remove(i);
                }
                if state.closing.is_some() {
                    return;
                }
                state = shared.wake.wait(state).unwrap_or_else(|p| p.into_inner());
            }
        };
        let Some(queued) = queued else { continue };
        let (outcome, output) = call(notifier, &queued, shared, run_id);
        let line = format!("notifier `{}`: {} {outcome}", notifier.command, queued.name);
        if !outcome.starts_with("ok") {
            tracing::warn!("{line}");
        }
        log.call(&line, output);
    }
}

/// `notify.log` in the run folder: a line per call (with its time), its output under it,
/// each call written in one piece.
#[derive(Clone)]
struct Log {
    path: PathBuf,
    /// Output bytes kept so far in this run.
    kept: Arc<AtomicU64>,
    write: Arc<Mutex<()>>,
}

impl Log {
    fn new(path: PathBuf) -> Log {
        Log {
            path,
            kept: Arc::default(),
            write: Arc::default(),
        }
    }

    fn line(&self, text: &str) {
        self.call(text, Output::default());
    }

    /// `text` and the call's output under it, indented, bounded by what is left of
    /// [`RUN_OUTPUT`].
    fn call(&self, text: &str, output: Output) {
        let time = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        let mut block = format!("{time} {text}\n").into_bytes();
        let left = RUN_OUTPUT.saturating_sub(self.kept.load(Ordering::SeqCst));
        let keep = (output.kept.len() as u64).min(left) as usize;
        self.kept.fetch_add(keep as u64, Ordering::SeqCst);
        let over_run = (output.kept.len() - keep) as u64;
        for line in String::from_utf8_lossy(&output.kept[..keep]).lines() {
            block.extend_from_slice(b"  | ");
            block.extend_from_slice(line.as_bytes());
            block.push(b'\n');
        }
        if output.beyond > 0 {
            block.extend_from_slice(
                format!(
                    "  (output truncated: {} more bytes beyond {CALL_OUTPUT} per call not kept)\n",
                    output.beyond
                )
                .as_bytes(),
            );
        }
        if over_run > 0 {
            block.extend_from_slice(
                format!("  (output truncated: {over_run} more bytes beyond the run's {RUN_OUTPUT} bytes of notifier output not kept)\n")
                    .as_bytes(),
            );
        }
        let _one_at_a_time = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut file| file.write_all(&block));
        if let Err(e) = written {
            tracing::warn!("cannot write {}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests;
