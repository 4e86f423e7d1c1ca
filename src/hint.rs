//! The pony commands that messages tell a person to type next (`pony resume RUN`,
//! `pony lab down`, …), written by one helper so that each carries the options that
//! chose this command's state: a hint that drops `--state-dir X` or `--state URL` names
//! another state, and the command it prints fails (or acts on the wrong runs).
//!
//! A command on runs ([`pony`]) carries `--state URL` with a state database, else
//! `--state-dir`; a command on this machine's folder ([`pony_here`], `lab down`)
//! carries `--state-dir`. The options are set once, from the command line as parsed
//! ([`set`]); messages made far below it (the scheduler's, a lock's) read them here
//! rather than have every layer pass them down. They go after the command's own words
//! (`pony resume RUN --state-dir X`), where clap takes a global option as well.

use std::path::Path;
use std::sync::OnceLock;

/// What the hints of this process append, set once by [`set`].
#[derive(Debug, Default, PartialEq)]
struct StateOptions {
    /// For a command on runs (`resume`, `status`, `approve`, …): ` --state URL` with a
    /// state database, else ` --state-dir DIR`.
    runs: String,
    /// For a command on this machine's state folder (`lab down`): ` --state-dir DIR`.
    folder: String,
}

static STATE_OPTIONS: OnceLock<StateOptions> = OnceLock::new();

/// The default of `--state-dir`, which a hint leaves out.
const DEFAULT_STATE_DIR: &str = ".pony";

/// What selects this process's state, as the command line and the environment gave it.
#[derive(Debug, Clone, Copy)]
pub struct StateSource<'a> {
    /// `--state-dir` (or `PONY_STATE_DIR`).
    pub state_dir: &'a Path,
    /// `--state` (or `PONY_STATE`), if given.
    pub state: Option<&'a str>,
    /// `PONY_STATE_DIR` as the environment has it.
    pub env_state_dir: Option<&'a std::ffi::OsStr>,
    /// `PONY_STATE` as the environment has it.
    pub env_state: Option<&'a str>,
}

/// Records the options that select the state. `--state-dir` unless it is the default;
/// with a state database (`--state`), runs live there, so a command on runs carries
/// `--state URL` instead (its password taken out: a hint is printed), and works from
/// any machine, whose own state folder is its own. A value that the environment gives
/// (`PONY_STATE_DIR`, `PONY_STATE`) is left out, as the next command in that shell gets
/// it again; that is also how a password stays usable without being printed.
pub fn set(source: StateSource) {
    let _ = STATE_OPTIONS.set(state_options(source));
}

fn state_options(source: StateSource) -> StateOptions {
    let dir = source.state_dir;
    let folder =
        if dir.as_os_str() == DEFAULT_STATE_DIR || source.env_state_dir == Some(dir.as_os_str()) {
            String::new()
        } else {
            format!(
                " --state-dir {}",
                crate::shell::quote(&dir.display().to_string())
            )
        };
    let runs = match source.state.filter(|s| !s.is_empty()) {
        Some(url) if source.env_state == Some(url) => String::new(),
        Some(url) => format!(
            " --state {}",
            crate::shell::quote(&crate::secret::redact_password(url))
        ),
        None => folder.clone(),
    };
    StateOptions { runs, folder }
}

/// `pony WORDS` for a command on runs, then the options that find this process's runs:
/// what a message tells a person to run, e.g. `pony(format_args!("resume {id}"))`.
pub fn pony(words: impl std::fmt::Display) -> String {
    let options = STATE_OPTIONS.get().map(|o| o.runs.as_str());
    format!("pony {words}{}", options.unwrap_or_default())
}

/// `pony WORDS` for a command on this machine's state folder (`lab down`), then
/// `--state-dir` when it is not the default.
pub fn pony_here(words: impl std::fmt::Display) -> String {
    let options = STATE_OPTIONS.get().map(|o| o.folder.as_str());
    format!("pony {words}{}", options.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn options(args: &[&str], env_dir: Option<&str>, env_state: Option<&str>) -> (String, String) {
        let mut argv = vec!["pony"];
        argv.extend_from_slice(args);
        argv.push("history");
        let cli = crate::cli::Cli::try_parse_from(argv).unwrap();
        let options = state_options(StateSource {
            state_dir: &cli.global.state_dir,
            state: cli.global.state.as_deref(),
            env_state_dir: env_dir.map(std::ffi::OsStr::new),
            env_state,
        });
        (options.runs, options.folder)
    }

    fn both(text: &str) -> (String, String) {
        (text.to_string(), text.to_string())
    }

    #[test]
    fn hints_carry_the_options_that_chose_the_state() {
        assert_eq!(options(&[], None, None), both(""));
        assert_eq!(options(&["--state-dir", ".pony"], None, None), both(""));
        assert_eq!(
            options(&["--state-dir", "/srv/pony state"], None, None),
            both(" --state-dir '/srv/pony state'")
        );
        // With a database, runs are found through it (from any machine); the folder
        // still holds this machine's lab.
        assert_eq!(
            options(
                &[
                    "--state-dir",
                    "lab",
                    "--state",
                    "postgres://u:hunter2@db/p?password=x"
                ],
                None,
                None
            ),
            (
                " --state postgres://u@db/p".into(),
                " --state-dir lab".into()
            )
        );
        // What the environment gives, the next command gets from it again.
        assert_eq!(
            options(&["--state-dir", "lab"], Some("lab"), None),
            both("")
        );
        assert_eq!(
            options(
                &["--state", "postgres://u@db/p"],
                None,
                Some("postgres://u@db/p")
            ),
            both("")
        );
    }
}
