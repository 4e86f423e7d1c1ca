//! `pony completions SHELL` and `pony man`: generated from the clap definitions.

use crate::cli::Cli;
use crate::exit::Exit;
use clap::CommandFactory;
use std::io::Write;

pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<Exit> {
    let mut text = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "pony", &mut text);
    print(&text)
}

pub fn man() -> anyhow::Result<Exit> {
    let mut text = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut text)?;
    print(&text)
}

/// Writes generated text to stdout. A reader that stops early (`| head`) is not an
/// error ([`crate::term::Stdout`]): generating to stdout directly made clap panic on the
/// closed pipe.
fn print(text: &[u8]) -> anyhow::Result<Exit> {
    let mut out = crate::term::Stdout;
    out.write_all(text).and_then(|()| out.flush())?;
    Ok(Exit::Success)
}
