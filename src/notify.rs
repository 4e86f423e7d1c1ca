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
//!   exits (releasing the inventory's lock). Ctrl-C or SIGTERM during that wait ends it at
//!   once, the same way.

use crate::events::{Envelope, Event, SCHEMA_VERSION};
pub use crate::playbook::{Notifier, DEFAULT_NOTIFY_TIMEOUT as DEFAULT_TIMEOUT};
use crate::report::Reporter;
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
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

/// Ctrl-C and SIGTERM received by the process (counted by the run's signal watcher).
static SIGNALS: AtomicU32 = AtomicU32::new(0);

/// Counts a Ctrl-C or SIGTERM: one during the wait for notifiers at the run's end ends it.
pub fn signalled() {
    SIGNALS.fetch_add(1, Ordering::SeqCst);
}

/// Whether a person must hear about this event.
pub fn notifies(event: &Event) -> bool {
    match event {
        Event::RunStarted { .. }
        | Event::Summary { .. }
        | Event::TaskFailed { .. }
        | Event::WaveFailed { .. }
        | Event::ControllerLost { .. }
        | Event::ControllerGone { .. }
        | Event::Control { .. } => true,
        Event::GateWaiting { reason, .. } => *reason == crate::events::GateReason::Approve,
        Event::VerifyCheck { ok, .. } => !ok,
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
    /// The wait is over: kill what runs, drop what waits.
    abandon: bool,
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
        let signals = SIGNALS.load(Ordering::SeqCst);
        for (_, shared) in &self.notifiers {
            shared.lock().closing = Some(now);
            shared.wake.notify_all();
        }
        let mut why = None;
        while self.workers.iter().any(|w| !w.is_finished()) {
            if SIGNALS.load(Ordering::SeqCst) != signals {
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
                    state.abandon = true;
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
                if state.abandon {
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

/// What a call wrote on stdout and stderr, as kept.
#[derive(Default)]
struct Output {
    kept: Vec<u8>,
    /// Bytes written beyond [`CALL_OUTPUT`].
    beyond: u64,
}

/// Reads `from` to its end, keeping at most [`CALL_OUTPUT`] bytes of all readers.
fn capture(mut from: impl Read + Send + 'static, into: Arc<Mutex<Output>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let mut output = into.lock().unwrap_or_else(|p| p.into_inner());
                    let room = CALL_OUTPUT.saturating_sub(output.kept.len()).min(n);
                    output.kept.extend_from_slice(&buf[..room]);
                    output.beyond += (n - room) as u64;
                }
            }
        }
    });
}

/// Runs the command once with the event on stdin; says how it ended, with its output.
fn call(notifier: &Notifier, queued: &Queued, shared: &Shared, run_id: &str) -> (String, Output) {
    use std::os::unix::process::CommandExt;
    let spawned = Command::new("sh")
        .arg("-c")
        .arg(&notifier.command)
        // pony's environment without its secrets and settings (PONY_STATE, …).
        .env_clear()
        .envs(crate::secret::notifier_env())
        .env("PONY_RUN_ID", run_id)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: what the command starts ends with the call.
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return (format!("could not start: {e}"), Output::default()),
    };
    let pid = child.id();
    let output = Arc::new(Mutex::new(Output::default()));
    if let Some(out) = child.stdout.take() {
        capture(out, output.clone());
    }
    if let Some(err) = child.stderr.take() {
        capture(err, output.clone());
    }
    // Written from a thread of its own: a notifier that never reads must not hold this
    // one past its timeout.
    if let Some(mut stdin) = child.stdin.take() {
        let json = format!("{}\n", queued.json);
        std::thread::spawn(move || {
            let _ = stdin.write_all(json.as_bytes());
        });
    }
    let kill_group = || {
        // The process group of our own child, whose leader is not reaped yet (so the
        // group's id is still ours).
        crate::sys::kill_group(pid, libc::SIGKILL);
    };
    let started = Instant::now();
    let outcome = loop {
        // Has the leader exited? Asked without reaping it (WNOWAIT), so that its group is
        // killed while its id cannot have been reused.
        let exited = crate::sys::exited_unreaped(pid);
        if exited {
            // Whatever it left running in the background ends with the call.
            kill_group();
            break match child.wait() {
                Ok(status) if status.success() => "ok".to_string(),
                Ok(status) => format!("failed ({status})"),
                Err(e) => format!("could not be waited for: {e}"),
            };
        }
        let (closing, abandon, summary_waits) = {
            let state = shared.lock();
            let summary_waits = state.queue.iter().any(|q| q.last);
            (state.closing, state.abandon, summary_waits)
        };
        let cut = if abandon {
            Some("the run ended and its wait for notifiers is over".to_string())
        } else if started.elapsed() >= notifier.timeout {
            Some(format!(
                "after {}",
                humantime::format_duration(notifier.timeout)
            ))
        } else if summary_waits && closing.is_some_and(|c| c.elapsed() >= GRACE) {
            Some("the run ended and the summary goes next".to_string())
        } else {
            None
        };
        if let Some(cut) = cut {
            kill_group();
            let _ = child.wait();
            break format!("killed (pid {pid} and its process group) {cut}");
        }
        std::thread::sleep(POLL);
    };
    // The readers end once the group is gone; give them a moment for the last bytes.
    let bound = Instant::now() + Duration::from_millis(200);
    while Arc::strong_count(&output) > 1 && Instant::now() < bound {
        std::thread::sleep(Duration::from_millis(5));
    }
    let output = std::mem::take(&mut *output.lock().unwrap_or_else(|p| p.into_inner()));
    (outcome, output)
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
mod tests {
    use super::*;

    #[test]
    fn only_the_events_a_person_must_know_about_notify() {
        let waiting = |reason: &str| Event::GateWaiting {
            wave: "canary".into(),
            reason: reason.parse().unwrap(),
            seconds: 0,
            until: None,
            zone: None,
        };
        assert!(notifies(&waiting("approve")));
        assert!(!notifies(&waiting("soak")));
        let rollback = |scope: &str| Event::RollbackFinished {
            scope: scope.into(),
            ok: true,
        };
        assert!(notifies(&rollback("region eu")));
        assert!(notifies(&rollback("all")));
        assert!(!notifies(&rollback("host mx-1")));
        assert!(!notifies(&Event::Stopped {
            reason: "x".into(),
            region: None,
            rollback: false,
        }));
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
mod test_calls {
    use super::*;
    use std::path::{Path, PathBuf};

    /// An ordinary event notifiers are called for.
    pub(super) fn wave_failed() -> Event {
        Event::WaveFailed {
            wave: "w".into(),
            reason: "r".into(),
            node: 0,
        }
    }

    /// A reporter with the one notifier `command`, logging to `dir/notify.log`.
    pub(super) fn reporter(
        dir: &Path,
        command: String,
        timeout: Duration,
    ) -> (NotifyReporter, PathBuf) {
        let log = dir.join("notify.log");
        let notifier = Notifier { command, timeout };
        (
            NotifyReporter::new(vec![notifier], log.clone(), "run-1"),
            log,
        )
    }

    /// A notifier command that appends the event's name to `calls`, then runs `then`.
    pub(super) fn recording(calls: &Path, then: &str) -> String {
        format!(
            "sed -n 's/.*\"event\":\"\\([a-z_]*\\)\".*/\\1/p' >> {}; {then}",
            calls.display()
        )
    }
}

#[cfg(test)]
mod queue_tests {
    use super::test_calls::{reporter, wave_failed};
    use super::*;

    /// A notifier that cannot keep up loses events beyond its queue, and says so; it
    /// never holds up whoever hands them over.
    #[test]
    fn a_full_queue_drops_events_and_logs_each_drop() {
        let dir = tempfile::tempdir().unwrap();
        let release = dir.path().join("release");
        let calls = dir.path().join("calls");
        let (mut reporter, log) = reporter(
            dir.path(),
            format!(
                "echo call >> {}; until [ -e {} ]; do sleep 0.01; done",
                calls.display(),
                release.display()
            ),
            Duration::from_secs(60),
        );
        let failed = wave_failed();
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

#[cfg(test)]
mod burst_tests {
    use super::test_calls::{recording, reporter, wave_failed};
    use super::*;
    use crate::events::RunOutcome;

    fn summary() -> Event {
        Event::Summary {
            run_id: "RUN".into(),
            outcome: RunOutcome::FailedRolledBack,
            exit_code: 1,
            hosts: 500,
            ok: 0,
            failed: 500,
            rolled_back: 0,
            cancelled: 0,
            rollback_failed: 0,
            incomplete: Vec::new(),
            stopped_wave: None,
            rollbacks_not_attempted: Vec::new(),
            duration_ms: 1,
            regions: Vec::new(),
            run_dir: "/state/runs/RUN".into(),
        }
    }

    /// 500 events at once for a notifier that takes a fifth of a second a call: ordinary
    /// events are shed, the run's `summary` is delivered, and the wait at the end is
    /// bounded by one call's timeout (plus the grace), not by the backlog.
    #[test]
    fn the_summary_is_delivered_after_a_burst_of_500_events() {
        let dir = tempfile::tempdir().unwrap();
        let calls = dir.path().join("calls");
        let (mut reporter, log) = reporter(
            dir.path(),
            recording(&calls, "sleep 0.2"),
            Duration::from_secs(5),
        );
        let failed = wave_failed();
        for _ in 0..500 {
            reporter.event(&failed);
        }
        reporter.event(&summary());
        reporter.finish();
        let called = std::fs::read_to_string(&calls).unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(called.lines().any(|l| l == "summary"), "{called}\n{text}");
        assert!(text.contains("summary ok"), "{text}");
        assert!(!text.contains("summary dropped"), "{text}");
        assert!(text.contains("wave_failed dropped"), "{text}");
    }

    /// A full queue when the `summary` arrives: the oldest ordinary event makes room.
    #[test]
    fn a_full_queue_sheds_an_ordinary_event_for_the_summary() {
        let dir = tempfile::tempdir().unwrap();
        let release = dir.path().join("release");
        let calls = dir.path().join("calls");
        let (mut reporter, log) = reporter(
            dir.path(),
            recording(
                &calls,
                &format!("until [ -e {} ]; do sleep 0.01; done", release.display()),
            ),
            Duration::from_secs(60),
        );
        let failed = wave_failed();
        for _ in 0..QUEUE + 1 {
            reporter.event(&failed);
        }
        reporter.event(&summary());
        std::fs::write(&release, "").unwrap();
        reporter.finish();
        let called = std::fs::read_to_string(&calls).unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(called.lines().any(|l| l == "summary"), "{called}");
        assert!(text.contains("and summary goes first"), "{text}");
    }

    /// Each call's output is kept under its own line, bounded per call.
    #[test]
    fn a_calls_output_is_kept_apart_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let (mut reporter, log) = reporter(
            dir.path(),
            "echo first; head -c 200000 /dev/zero | tr '\\0' x; echo; echo last >&2".into(),
            Duration::from_secs(30),
        );
        reporter.event(&wave_failed());
        reporter.finish();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.len() < CALL_OUTPUT + 4096, "{}", text.len());
        assert!(
            text.starts_with(|c: char| c.is_ascii_digit()),
            "{}",
            &text[..80]
        );
        assert!(
            text.contains("wave_failed ok\n  | first\n"),
            "{}",
            &text[..200]
        );
        assert!(
            text.contains("output truncated"),
            "{}",
            &text[text.len() - 300..]
        );
    }
}
