//! The terminal that log lines, prompts and reporters share: the progress bars on screen
//! (if any), which everything else writes around, and whether a stream gets colour.
//!
//! [`crate::logging`], the approval prompt and the terminal reporter all use this module,
//! and it uses none of them: the reporter hands its bars over here, and logging writes
//! each line with them hidden, without either knowing the other.

use crate::cli::ColorChoice;
use indicatif::MultiProgress;
use std::sync::RwLock;

/// The progress bars on screen, if any.
static PROGRESS: RwLock<Option<MultiProgress>> = RwLock::new(None);

/// Routes log lines and prompts around the given progress bars (`None` when they are gone).
pub fn attach_progress(multi: Option<MultiProgress>) {
    if let Ok(mut slot) = PROGRESS.write() {
        *slot = multi;
    }
}

/// Runs `f` (a prompt, a log line) with the progress bars hidden, so that what it writes
/// stays readable and the bars are redrawn below it.
pub fn with_progress_suspended<R>(f: impl FnOnce() -> R) -> R {
    let multi = PROGRESS.read().ok().and_then(|slot| slot.clone());
    match multi {
        Some(multi) => multi.suspend(f),
        None => f(),
    }
}

/// Whether to colour a stream: `never` and `always` say so; `auto` colours a terminal
/// unless NO_COLOR is set (to anything non-empty, <https://no-color.org>).
pub fn color_enabled(choice: ColorChoice, is_terminal: bool) -> bool {
    match choice {
        ColorChoice::Never => false,
        ColorChoice::Always => true,
        ColorChoice::Auto => {
            is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_follows_the_choice() {
        assert!(!color_enabled(ColorChoice::Never, true));
        assert!(color_enabled(ColorChoice::Always, false));
        assert!(!color_enabled(ColorChoice::Auto, false));
    }
}
