//! One call of a notifier: its command run under `sh -c` in a process group of its own,
//! the event on stdin, its output captured (bounded), killed at its timeout or when the
//! run's end needs the way clear.

use super::{Queued, Shared, CALL_OUTPUT, GRACE, POLL};
use crate::playbook::Notifier;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a call wrote on stdout and stderr, as kept.
#[derive(Default)]
pub(super) struct Output {
    pub(super) kept: Vec<u8>,
    /// Bytes written beyond [`CALL_OUTPUT`].
    pub(super) beyond: u64,
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
pub(super) fn call(
    notifier: &Notifier,
    queued: &Queued,
    shared: &Shared,
    run_id: &str,
) -> (String, Output) {
    let mut child = match spawn(notifier, run_id) {
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
        if let Some(cut) = cut_reason(notifier, shared, started) {
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

/// The notifier's command under `sh -c`, with pipes for the event and its output, in a
/// process group of its own.
fn spawn(notifier: &Notifier, run_id: &str) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    Command::new("sh")
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
        .spawn()
}

/// Why a call still running must be killed now, if it must: the run's wait for notifiers
/// is over, its timeout has passed, or the run ended and the `summary` waits behind it.
fn cut_reason(notifier: &Notifier, shared: &Shared, started: Instant) -> Option<String> {
    let (closing, abandon, summary_waits) = {
        let state = shared.lock();
        let summary_waits = state.queue.iter().any(|q| q.last);
        (state.closing, state.abandon, summary_waits)
    };
    if let Some(why) = abandon {
        Some(why.to_string())
    } else if started.elapsed() >= notifier.timeout {
        Some(format!(
            "after {}",
            humantime::format_duration(notifier.timeout)
        ))
    } else if summary_waits && closing.is_some_and(|c| c.elapsed() >= GRACE) {
        Some("the run ended and the summary goes next".to_string())
    } else {
        None
    }
}
