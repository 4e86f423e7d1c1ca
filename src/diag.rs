//! Validation diagnostics: every problem found in the input files, collected in one pass
//! and reported together, each naming the file, the thing at fault and the fix.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in an input file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    /// The file at fault (inventory, playbook, template).
    pub file: PathBuf,
    /// Line and column (1-based) where the parser knows them; column 0 when only the
    /// line is known.
    pub location: Option<(usize, usize)>,
    /// What the problem is, naming the step, host, key or wave.
    pub message: String,
    /// How to fix it, when there is an obvious fix.
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(file: &Path, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.to_path_buf(),
            location: None,
            message: message.into(),
            hint: None,
        }
    }

    pub fn at(mut self, line: usize, column: usize) -> Self {
        self.location = Some((line, column));
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Adds "did you mean `x`?" when a candidate is close to `word`.
    pub fn suggest<'a>(self, word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Self {
        match closest(word, candidates) {
            Some(best) => self.hint(format!("did you mean `{best}`?")),
            None => self,
        }
    }

    /// A YAML syntax or shape error from serde_yaml, with its location and, for an
    /// unknown key or variant, the closest valid one.
    pub fn from_yaml(file: &Path, error: &serde_yaml::Error) -> Self {
        let message = yaml_message(&error.to_string());
        let mut diagnostic = Diagnostic::new(file, message.clone());
        if let Some(location) = error.location() {
            diagnostic = diagnostic.at(location.line(), location.column());
        }
        if let Some((word, expected)) = unknown_and_expected(&message) {
            diagnostic = diagnostic.suggest(&word, expected.iter().map(String::as_str));
        }
        diagnostic
    }

    /// Replaces the start of the message (e.g. a serde path `steps[1]`) with friendlier
    /// words (`step `switch``).
    pub fn map_message(mut self, f: impl FnOnce(&str) -> String) -> Self {
        self.message = f(&self.message);
        self
    }
}

/// serde_yaml's text, in the words of our docs: the location (already shown as
/// file:line:col) is dropped, the place a construct started is kept, and Rust type
/// names become what the file should contain.
fn yaml_message(text: &str) -> String {
    let strip = |part: &str| -> String {
        match part.find(" at line ") {
            Some(at) => part[..at].to_string(),
            None => part.to_string(),
        }
    };
    let message = match text.split_once(", while ") {
        Some((head, tail)) => {
            let (what, started) = match tail.rsplit_once(" at line ") {
                Some((what, at)) => (what, format!(" (started at line {at})")),
                None => (tail, String::new()),
            };
            format!("{} while {what}{started}", strip(head))
        }
        None => strip(text),
    };
    message
        .replace("unknown field", "unknown key")
        .replace("unknown variant", "unknown value")
        .replace("missing field", "missing key")
        .replace("duplicate field", "duplicate key")
        .replace(
            "expected struct RawInventory",
            "expected a mapping with `name` and `regions` at the top level",
        )
        .replace(
            "expected struct RawPlaybook",
            "expected a mapping with `name` and `steps` at the top level",
        )
        .replace("expected u32", "expected a whole number >= 0")
        .replace("expected u16", "expected a port number")
        .replace("expected usize", "expected a whole number >= 0")
        .replace("expected a boolean", "expected true or false")
        .split("expected struct Raw")
        .enumerate()
        .map(|(i, part)| {
            if i == 0 {
                part.to_string()
            } else {
                format!(
                    "expected a mapping{}",
                    part.trim_start_matches(char::is_alphanumeric)
                )
            }
        })
        .collect()
}

/// From "unknown field `rolse`, expected one of `vars`, `roles`" takes the word and the list.
fn unknown_and_expected(message: &str) -> Option<(String, Vec<String>)> {
    let start = message
        .find("unknown key `")
        .map(|i| i + "unknown key `".len())
        .or_else(|| {
            message
                .find("unknown value `")
                .map(|i| i + "unknown value `".len())
        })?;
    let rest = &message[start..];
    let end = rest.find('`')?;
    let word = rest[..end].to_string();
    let expected = rest[end..]
        .split('`')
        .skip(2)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some((word, expected))
}

/// The candidate closest to `word`, if it is close enough to be a likely typo.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|candidate| (strsim::levenshtein(word, candidate), candidate))
        .filter(|(distance, candidate)| {
            // Close enough to be a typo, and not a rewrite of a short word.
            *distance > 0
                && ((*distance <= 2 && *distance < word.chars().count())
                    || *distance * 3 <= candidate.len().max(word.len()))
        })
        .min()
        .map(|(_, candidate)| candidate)
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        match self.location {
            Some((line, 0)) if line > 0 => write!(f, ":{line}")?,
            Some((line, column)) if line > 0 => write!(f, ":{line}:{column}")?,
            _ => {}
        }
        write!(f, ": {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Every problem found in one validation pass. Never empty when returned as an error.
#[derive(Debug, Default, Clone)]
pub struct Diagnostics(Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.0.push(diagnostic);
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter()
    }

    /// The same diagnostics, sorted by file and place, duplicates removed.
    pub fn sorted(mut self) -> Self {
        self.0.sort();
        self.0.dedup();
        self
    }

    /// `Ok(value)` when nothing was found, the sorted diagnostics otherwise.
    pub fn into_result<T>(self, value: T) -> Result<T, Diagnostics> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self.sorted())
        }
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(diagnostic: Diagnostic) -> Self {
        Diagnostics(vec![diagnostic])
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for diagnostic in &self.0 {
            writeln!(f, "error: {diagnostic}")?;
        }
        let count = self.0.len();
        write!(
            f,
            "{count} error{} found; nothing ran",
            if count == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for Diagnostics {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(closest("rolse", ["roles", "vars", "hosts"]), Some("roles"));
        assert_eq!(closest("swich", ["stage", "switch"]), Some("switch"));
        assert_eq!(closest("zzzzzz", ["roles", "vars"]), None);
    }

    #[test]
    fn parses_unknown_field_message() {
        let (word, expected) =
            unknown_and_expected("unknown key `rolse`, expected one of `vars`, `roles`").unwrap();
        assert_eq!(word, "rolse");
        assert_eq!(expected, vec!["vars", "roles"]);
    }
}
