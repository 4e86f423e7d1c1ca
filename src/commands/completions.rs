//! `pony completions SHELL` and `pony man`: generated from the clap definitions.

use crate::cli::Cli;
use crate::exit::Exit;
use clap::CommandFactory;

pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<Exit> {
    clap_complete::generate(shell, &mut Cli::command(), "pony", &mut std::io::stdout());
    Ok(Exit::Success)
}

pub fn man() -> anyhow::Result<Exit> {
    clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
    Ok(Exit::Success)
}
