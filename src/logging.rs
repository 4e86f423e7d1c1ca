//! tracing setup: `-v`/`-q` and RUST_LOG pick the level; logs go to stderr.

use crate::cli::GlobalOptions;
use tracing_subscriber::EnvFilter;

pub fn init(options: &GlobalOptions) {
    let level = match (options.quiet, options.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("pony={level}")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
