//! `pony ping`: reachability of every selected host, in parallel.

use crate::cli::GlobalOptions;
use crate::exit::Exit;
use std::path::Path;

pub fn run(
    _global: &GlobalOptions,
    _inventory: &Path,
    _limit: Option<&str>,
    _accept_new_host_keys: bool,
) -> anyhow::Result<Exit> {
    anyhow::bail!("`pony ping` is not built yet")
}
