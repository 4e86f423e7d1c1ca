//! The terminal that log lines, prompts and reporters share: the progress bars on screen
//! (if any), which everything else writes around, whether a stream gets colour, and
//! standard output itself ([`Stdout`], [`crate::outln!`]), which every command writes
//! through.
//!
//! [`crate::logging`], the approval prompt and the terminal reporter all use this module,
//! and it uses none of them: the reporter hands its bars over here, and logging writes
//! each line with them hidden, without either knowing the other.

use indicatif::MultiProgress;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

/// The progress bars on screen, if any.
static PROGRESS: RwLock<Option<MultiProgress>> = RwLock::new(None);

/// Routes log lines and prompts around the given progress bars (`None` when they are gone).
pub fn attach_progress(multi: Option<MultiProgress>) {
    if let Ok(mut slot) = PROGRESS.write() {
        *slot = multi;
    }
}

/// Runs `f` (a prompt, a log line) with the progress bars hidden, so that what it writes
/// stays readable and the bars are redrawn below it.
pub fn with_progress_suspended<R>(f: impl FnOnce() -> R) -> R {
    let multi = PROGRESS.read().ok().and_then(|slot| slot.clone());
    match multi {
        Some(multi) => multi.suspend(f),
        None => f(),
    }
}

/// Whether human output gets colour (`--color`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColorChoice {
    /// Colour a terminal unless NO_COLOR is set.
    #[default]
    Auto,
    Always,
    Never,
}

/// Whether to colour a stream: `never` and `always` say so; `auto` colours a terminal
/// unless NO_COLOR is set (to anything non-empty, <https://no-color.org>).
pub fn color_enabled(choice: ColorChoice, is_terminal: bool) -> bool {
    match choice {
        ColorChoice::Never => false,
        ColorChoice::Always => true,
        ColorChoice::Auto => {
            is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    }
}

/// Whether stdout's reader is gone (the pipe closed: `pony inventory … | head`).
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// pony's standard output, the one way every command writes to it (`println!` is denied
/// in the library). A reader that stops early is not an error: the first write that
/// finds the pipe closed (EPIPE) marks stdout closed, and that write and all later ones
/// are dropped without a word, so the command ends as it would have, with its own exit
/// code. Rust ignores SIGPIPE, so a closed pipe is an error here, never a signal; with
/// `println!` it was a panic (exit 101). pony does not restore SIGPIPE's default instead,
/// as many small filters do: that would kill it in the middle of a deploy, leaving the
/// journal without the run's end, whenever whoever read its output went away.
/// Other errors (a full disk under a redirection) are returned to the writer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stdout;

impl Stdout {
    /// Runs `write` on locked stdout unless it is closed; a closed pipe is `Ok`.
    fn guarded(
        write: impl FnOnce(&mut std::io::StdoutLock) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        if STDOUT_CLOSED.load(Ordering::Relaxed) {
            return Ok(());
        }
        match write(&mut std::io::stdout().lock()) {
            // A closed pipe, or a terminal that hung up (EIO) before the SIGHUP handler
            // pointed stdout at /dev/null.
            Err(e)
                if e.kind() == std::io::ErrorKind::BrokenPipe
                    || e.raw_os_error() == Some(libc::EIO) =>
            {
                STDOUT_CLOSED.store(true, Ordering::Relaxed);
                Ok(())
            }
            other => other,
        }
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }

    /// All of `buf` under one lock: lines from threads never interleave.
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        Stdout::guarded(|out| out.write_all(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Stdout::guarded(|out| out.flush())
    }
}

/// What [`crate::out!`] and [`crate::outln!`] call: the text written to [`Stdout`] at
/// once. An error other than a closed pipe is reported once on stderr (`println!`
/// panicked on it), and stdout is given up.
pub fn print(args: std::fmt::Arguments) {
    let text = std::fmt::format(args);
    if let Err(e) = Stdout.write_all(text.as_bytes()) {
        if !STDOUT_CLOSED.swap(true, Ordering::Relaxed) {
            eprintln!("warning: cannot write to stdout: {e}; nothing more is written there");
        }
    }
}

/// `print!` through [`Stdout`]: quiet once a reader stops early.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::term::print(format_args!($($arg)*))
    };
}

/// `println!` through [`Stdout`]: quiet once a reader stops early.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::term::print(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::term::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// From here on a SIGHUP does not end the process: a command that runs tasks (deploy,
/// resume, join, rollback) goes on without its terminal, as under `nohup`. The handler
/// points stdin, stdout and stderr at `/dev/null` at once (open and dup2 are safe in a
/// signal handler), so what the run still writes for a person is dropped instead of
/// failing on the dead terminal, and a prompt reads the end of its input; the run's
/// record is the journal, as always. Children keep SIGHUP's default: host commands run
/// in process groups of their own and never saw the terminal's hangup anyway.
pub fn survive_hangup() {
    crate::sys::survive_hangup();
}

/// Whether the terminal hung up (SIGHUP: the window closed, the SSH session dropped)
/// while this process ran tasks ([`survive_hangup`]).
pub fn hung_up() -> bool {
    crate::sys::hung_up()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_follows_the_choice() {
        assert!(!color_enabled(ColorChoice::Never, true));
        assert!(color_enabled(ColorChoice::Always, false));
        assert!(!color_enabled(ColorChoice::Auto, false));
    }
}
