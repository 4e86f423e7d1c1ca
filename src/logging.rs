//! tracing setup: `-v`/`-q` and RUST_LOG pick the level; logs go to stderr. While the
//! terminal reporter draws progress bars, each log line is written with the bars hidden
//! ([`crate::term::with_progress_suspended`]) and redrawn after it, so logs never garble
//! the bars.

use crate::term;
use std::io::{IsTerminal, Write};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// Sets up logging once per process: `quiet` (`-q`) and `verbose` (the count of `-v`)
/// pick the level unless RUST_LOG is set; `color` is `--color`.
pub fn init(quiet: bool, verbose: u8, color: term::ColorChoice) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("pony={level}")));
    let ansi = term::color_enabled(color, std::io::stderr().is_terminal());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LogWriter)
        .with_ansi(ansi)
        .with_target(false)
        .try_init();
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
        term::with_progress_suspended(write);
    }
}
