//! `pony exec`: an ad-hoc command on many hosts, identical outputs folded together.

use crate::cli::GlobalOptions;
use crate::exit::Exit;
use std::path::Path;

pub fn run(
    _global: &GlobalOptions,
    _inventory: &Path,
    _limit: Option<&str>,
    _accept_new_host_keys: bool,
    _command: &[String],
) -> anyhow::Result<Exit> {
    anyhow::bail!("`pony exec` is not built yet")
}
