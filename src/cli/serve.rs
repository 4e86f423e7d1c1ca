//! The arguments of `pony serve`.

use clap::Args;
use std::path::PathBuf;

/// Live view over HTTP: run pages following their journal, gate buttons for token
/// holders, `/metrics` (docs/serve.md).
#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// Address to listen on (loopback by default).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8470")]
    pub listen: String,
    /// File whose first line is the token that shows the gate buttons; none: read-only.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}
