//! `pony history`: recent runs from the state directory.

use crate::cli::GlobalOptions;
use crate::exit::Exit;

pub fn run(_global: &GlobalOptions, _limit: usize) -> anyhow::Result<Exit> {
    anyhow::bail!("`pony history` is not built yet")
}
