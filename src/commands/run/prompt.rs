//! The approval question at the controller's terminal: asked at each `approve:` gate,
//! withdrawn when the gate is answered from another shell, kept open when the terminal
//! hung up.

use super::Forward;
use crate::exec::ApprovalRequest;
use std::io::Write;

/// Asks at the terminal whenever the run reaches an `approve:` gate.
pub(super) fn prompt_for_approvals(
    forward: Option<Forward>,
) -> tokio::sync::mpsc::UnboundedSender<ApprovalRequest> {
    let (sender, mut requests) = tokio::sync::mpsc::unbounded_channel::<ApprovalRequest>();
    tokio::spawn(async move {
        while let Some(request) = requests.recv().await {
            let ApprovalRequest { wave, soak, answer } = request;
            let done = match soak {
                Some(soak) => format!("Wave {wave} is done; {soak}."),
                None => format!("Wave {wave} is done."),
            };
            let forward = forward.clone();
            let answered = tokio::task::spawn_blocking(move || {
                let approved = crate::term::with_progress_suspended(|| {
                    eprint!("\n{done} Approve it and continue with the next wave? [y/N] ");
                    let _ = std::io::stderr().flush();
                    // The gate may be answered from another shell (`pony approve`) while
                    // this waits: then the question is withdrawn, not left on screen.
                    while crate::term::hung_up() || !stdin_readable() {
                        // Once the terminal hung up nobody is left to answer here: the
                        // question stays open (not a "no") until `pony approve` answers
                        // the gate or the run stops.
                        if crate::term::hung_up() && !answer.is_closed() {
                            std::thread::sleep(std::time::Duration::from_millis(100));
                            continue;
                        }
                        if answer.is_closed() {
                            eprintln!(
                                "(withdrawn: answered from another shell, or the run is stopping)"
                            );
                            return None;
                        }
                    }
                    let mut line = String::new();
                    let read = std::io::stdin().read_line(&mut line);
                    // The end of input or an error may be the terminal hanging up, seen
                    // before its SIGHUP is: give the signal a moment, and if it came,
                    // leave the gate to `pony approve` as above.
                    if matches!(read, Ok(0) | Err(_)) {
                        std::thread::sleep(std::time::Duration::from_millis(300));
                        while crate::term::hung_up() && !answer.is_closed() {
                            std::thread::sleep(std::time::Duration::from_millis(100));
                        }
                        if crate::term::hung_up() {
                            return None;
                        }
                    }
                    let approved = matches!(line.trim(), "y" | "Y" | "yes" | "YES");
                    if let Some(forward) = forward.as_ref().filter(|_| approved) {
                        forward(&wave);
                    }
                    Some(approved)
                });
                (answer, approved)
            })
            .await;
            if let Ok((answer, Some(approved))) = answered {
                let _ = answer.send(approved);
            }
        }
    });
    sender
}

/// Whether stdin has a line (or its end) to read, waiting at most a tenth of a second.
fn stdin_readable() -> bool {
    crate::sys::stdin_readable(100)
}
