//! tracing setup: `-v`/`-q` and RUST_LOG pick the level; logs go to stderr. While the
//! terminal reporter draws progress bars, each log line is written with the bars hidden
//! (`MultiProgress::suspend`) and redrawn after it, so logs never garble the bars.

use crate::cli::GlobalOptions;
use indicatif::MultiProgress;
use std::io::{IsTerminal, Write};
use std::sync::RwLock;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// The progress bars on screen, if any.
static PROGRESS: RwLock<Option<MultiProgress>> = RwLock::new(None);

pub fn init(options: &GlobalOptions) {
    let level = match (options.quiet, options.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("pony={level}")));
    let ansi = crate::report::color_enabled(options.color, std::io::stderr().is_terminal());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LogWriter)
        .with_ansi(ansi)
        .with_target(false)
        .try_init();
}

/// Routes log lines around the given progress bars (`None` when they are gone).
pub fn attach_progress(multi: Option<MultiProgress>) {
    if let Ok(mut slot) = PROGRESS.write() {
        *slot = multi;
    }
}

/// Runs `f` (a prompt) with the progress bars hidden, so the question stays readable.
pub fn with_progress_suspended<R>(f: impl FnOnce() -> R) -> R {
    let multi = PROGRESS.read().ok().and_then(|slot| slot.clone());
    match multi {
        Some(multi) => multi.suspend(f),
        None => f(),
    }
}

/// Makes a [`LogLine`] per log event.
struct LogWriter;

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine(Vec::new())
    }
}

/// One formatted log event, written to stderr in one piece when dropped.
struct LogLine(Vec<u8>);

impl Write for LogLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let write = || {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(&self.0);
            let _ = err.flush();
        };
        match PROGRESS.read().ok().and_then(|p| p.clone()) {
            Some(multi) => multi.suspend(write),
            None => write(),
        }
    }
}
