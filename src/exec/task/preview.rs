//! Check mode (`pony deploy --check`): what a task would do on its host, asked of the
//! host and changing nothing there. Guards are answered as a run answers them
//! (`creates`: the path exists; `unless`: its command succeeds; both read-only by
//! contract), a file step's content is compared with the file in place (and, with a diff
//! asked for, the file is read for it); a command or a probe is only named; an everyday
//! action (`line`, `service`, `package`) runs its read-only form (`super::ensure`). A
//! handler is answered from what the steps it listens to would do ([`handler_preview`]).

use super::ensure::Checked;
use super::render::with_become;
use super::{run_command, sha256, RenderedAction, TaskRun, TaskSpec, GUARD_TIMEOUT};
use crate::exec::hosts::HostPool;
use crate::playbook::ChangeRule;
use crate::shell::quote as shell_quote;
use crate::transport::TransportError;

/// The largest file in place a diff is shown for.
const DIFF_LIMIT: usize = 1024 * 1024;

/// What a task would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preview {
    /// Its command would run (or its probe be asked).
    WouldRun,
    /// A guard says the task would be skipped, and why.
    Skipped(String),
    /// Its file would be written: `dest`, and the diff when one was asked for.
    WouldChange { dest: String, diff: Option<String> },
    /// Its file is in place with this content already.
    Unchanged { dest: String },
    /// An everyday action (`service`, `package`) would change the host: how.
    WouldDo(String),
    /// An everyday action finds the host as asked already.
    AsAsked(String),
    /// The host could not answer (unreachable, or a guard's command broke).
    Unknown(String),
    /// A handler a step it listens to would notify (which, and why).
    Notified(String),
    /// A handler no step it listens to would notify: it would be skipped.
    NotNotified(String),
    /// A handler whose notifiers' change cannot be told without running them (a
    /// `changed_when` on their output, or a host that could not answer).
    IfNotified(String),
}

/// What a handler would do on a host, from what each step it listens to (its name,
/// answer and `changed_when`) would do there: run if one would change something, be
/// skipped if none would.
pub fn handler_preview(heard: &[(&str, &Preview, &ChangeRule)]) -> Preview {
    let names: Vec<&str> = heard.iter().map(|(name, _, _)| *name).collect();
    let mut maybe = Vec::new();
    for (name, preview, rule) in heard {
        match preview {
            Preview::WouldChange { dest, .. } => {
                return Preview::Notified(format!("notified by `{name}` ({dest} would change)"))
            }
            Preview::WouldDo(what) => {
                return Preview::Notified(format!("notified by `{name}` ({what})"))
            }
            Preview::WouldRun if **rule == ChangeRule::Always => {
                return Preview::Notified(format!("notified by `{name}` (it would run)"))
            }
            Preview::WouldRun if **rule != ChangeRule::Never => {
                maybe.push(format!("`{name}` would run; its output decides"))
            }
            Preview::Unknown(_) => maybe.push(format!("`{name}` could not be asked")),
            _ => {}
        }
    }
    if maybe.is_empty() {
        Preview::NotNotified(format!(
            "no change would notify it (listened: {})",
            names.join(", ")
        ))
    } else {
        Preview::IfNotified(maybe.join("; "))
    }
}

/// Asks `host` what `spec` would do there; `diff` reads the file in place of a file
/// step that would change it.
pub async fn preview(pool: &HostPool, host: usize, spec: &TaskSpec, diff: bool) -> Preview {
    let mut run = TaskRun::new();
    if let Err(e) = pool.connection(host).await {
        return Preview::Unknown(format!("unreachable: {e}"));
    }
    let answer = |result: Result<crate::transport::CommandOutput, TransportError>| {
        result.map(|out| out.success())
    };
    if let Some(path) = &spec.creates {
        let test = format!("test -e {}", shell_quote(path));
        match answer(run_command(pool, host, &test, Some(GUARD_TIMEOUT), &mut run).await) {
            Ok(true) => return Preview::Skipped(format!("creates: {path} exists")),
            Ok(false) => {}
            Err(e) => return Preview::Unknown(format!("guard `creates`: {e}")),
        }
    }
    if let Some(check) = &spec.unless {
        match answer(run_command(pool, host, check, Some(GUARD_TIMEOUT), &mut run).await) {
            Ok(true) => return Preview::Skipped("unless: check succeeded".into()),
            Ok(false) => {}
            Err(e) => return Preview::Unknown(format!("guard `unless`: {e}")),
        }
    }
    match &spec.action {
        RenderedAction::Run(_) | RenderedAction::Probe(_) => Preview::WouldRun,
        RenderedAction::Ensure {
            action,
            become_root,
        } => match super::ensure::preview(pool, host, action, *become_root).await {
            Ok(Checked::File { dest, old, new }) => Preview::WouldChange {
                diff: diff.then(|| unified_diff(&dest, old.as_deref(), &new)),
                dest,
            },
            Ok(Checked::FileAsAsked { dest }) => Preview::Unchanged { dest },
            Ok(Checked::Would(what)) => Preview::WouldDo(what),
            Ok(Checked::AsAsked(what)) => Preview::AsAsked(what),
            Err(why) => Preview::Unknown(why),
        },
        RenderedAction::Put {
            content,
            dest,
            become_root,
            ..
        } => match file_in_place(pool, host, dest, *become_root, &mut run).await {
            Err(e) => Preview::Unknown(format!("reading {dest}: {e}")),
            Ok(Some(old)) if sha256(&old) == sha256(content) => {
                Preview::Unchanged { dest: dest.clone() }
            }
            Ok(old) => Preview::WouldChange {
                dest: dest.clone(),
                diff: diff.then(|| unified_diff(dest, old.as_deref(), content)),
            },
        },
    }
}

/// The file at `dest` (None when there is none); a file too large for a diff is read as
/// its sha256 only, which is enough to tell whether it would change.
async fn file_in_place(
    pool: &HostPool,
    host: usize,
    dest: &str,
    become_root: bool,
    run: &mut TaskRun,
) -> Result<Option<Vec<u8>>, TransportError> {
    let quoted = shell_quote(dest);
    // One round trip: absent, too large (then its digest), or its bytes.
    let read = format!(
        "[ -f {quoted} ] || {{ echo absent; exit 0; }}; \
         if [ \"$(wc -c < {quoted})\" -gt {DIFF_LIMIT} ]; then echo large; sha256sum < {quoted}; \
         else echo file; cat {quoted}; fi"
    );
    let out = run_command(
        pool,
        host,
        &with_become(read, become_root),
        Some(GUARD_TIMEOUT),
        run,
    )
    .await?;
    if !out.success() {
        return Err(TransportError::Other(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    let (head, body) = match out.stdout.iter().position(|&b| b == b'\n') {
        Some(i) => (&out.stdout[..i], out.stdout[i + 1..].to_vec()),
        None => (&out.stdout[..], Vec::new()),
    };
    Ok(match head {
        b"absent" => None,
        b"large" => Some(
            format!(
                "(over {DIFF_LIMIT} bytes) {}",
                String::from_utf8_lossy(&body)
            )
            .into_bytes(),
        ),
        _ => Some(body),
    })
}

/// A unified diff of the file in place against the new content (text; a binary file is
/// only said to differ).
pub fn unified_diff(dest: &str, old: Option<&[u8]>, new: &[u8]) -> String {
    let (Ok(old_text), Ok(new_text)) = (
        std::str::from_utf8(old.unwrap_or_default()),
        std::str::from_utf8(new),
    ) else {
        return format!("Binary files {dest} and {dest} (new) differ\n");
    };
    let before = if old.is_some() {
        dest.to_string()
    } else {
        "/dev/null".into()
    };
    similar::TextDiff::from_lines(old_text, new_text)
        .unified_diff()
        .context_radius(3)
        .header(&before, &format!("{dest} (new)"))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diff_shows_the_lines_that_change_and_a_new_file_comes_from_dev_null() {
        let diff = unified_diff("/etc/x.cf", Some(b"a = 1\nb = 2\n"), b"a = 1\nb = 3\n");
        assert!(
            diff.starts_with("--- /etc/x.cf\n+++ /etc/x.cf (new)\n"),
            "{diff}"
        );
        assert!(diff.contains("-b = 2\n+b = 3\n"), "{diff}");
        let new = unified_diff("/etc/y", None, b"hello\n");
        assert!(new.starts_with("--- /dev/null\n"), "{new}");
        assert!(new.contains("+hello\n"), "{new}");
        let binary = unified_diff("/bin/z", Some(&[0xff, 0xfe]), b"x");
        assert_eq!(binary, "Binary files /bin/z and /bin/z (new) differ\n");
    }
}
