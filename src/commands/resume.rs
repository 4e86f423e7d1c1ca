//! `pony resume`, `pony rollback` and `pony unlock`: working on a past run from its
//! snapshot and journal.

use crate::cli::GlobalOptions;
use crate::exit::Exit;

pub fn resume(
    _global: &GlobalOptions,
    _run: &str,
    _approve: &[String],
    _secret_vars: &[(String, String)],
    _accept: bool,
) -> anyhow::Result<Exit> {
    anyhow::bail!("`pony resume` is not built yet")
}

pub fn rollback(
    _global: &GlobalOptions,
    _run: &str,
    _limit: Option<&str>,
    _secret_vars: &[(String, String)],
    _yes: bool,
    _accept: bool,
) -> anyhow::Result<Exit> {
    anyhow::bail!("`pony rollback` is not built yet")
}

pub fn unlock(_global: &GlobalOptions, _inventory: &str) -> anyhow::Result<Exit> {
    anyhow::bail!("`pony unlock` is not built yet")
}
