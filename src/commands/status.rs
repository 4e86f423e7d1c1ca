//! `pony status [RUN]`: the state of a run from its journal.

use crate::cli::GlobalOptions;
use crate::exit::Exit;

pub fn run(_global: &GlobalOptions, _run: Option<&str>) -> anyhow::Result<Exit> {
    anyhow::bail!("`pony status` is not built yet")
}
